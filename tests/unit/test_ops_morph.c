#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "ops/error.h"
#include "ops/morph.h"
#include "ops/rng.h"

/* Masks drawn as text: '#' foreground, '.' background, one string per row. */
static void draw(uint8_t *m, const char *const *rows, int w, int h)
{
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            m[y * w + x] = rows[y][x] == '#' ? 1 : 0;
}

static void assert_drawn(const uint8_t *m, const char *const *rows, int w, int h)
{
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            if (m[y * w + x] != (rows[y][x] == '#'))
                fail_msg("pixel (%d,%d) is %u, drawing says '%c'", x, y, m[y * w + x], rows[y][x]);
}

typedef int (*morph_fn)(uint8_t *, int, int, int);

static void hand_drawn(void **state)
{
    uint8_t m[7 * 7];
    static const char *const speck[] = {".......", ".......", ".......", "...#...",
                                        ".......", ".......", "......."};
    static const char *const empty[] = {".......", ".......", ".......", ".......",
                                        ".......", ".......", "......."};
    static const char *const hole[] = {"#######", "#######", "#######", "###.###",
                                       "#######", "#######", "#######"};
    static const char *const full[] = {"#######", "#######", "#######", "#######",
                                       "#######", "#######", "#######"};
    /* A 1-pixel speck is removed by opening with r = 1. */
    draw(m, speck, 7, 7);
    assert_int_equal(gs_morph_open(m, 7, 7, 1), 0);
    assert_drawn(m, empty, 7, 7);
    /* A 1-pixel hole is filled by closing with r = 1. */
    draw(m, hole, 7, 7);
    assert_int_equal(gs_morph_close(m, 7, 7, 1), 0);
    assert_drawn(m, full, 7, 7);

    /* Border convention: a 2-pixel strip on the image edge survives an opening with r = 1
     * (outside counts as foreground for erosion), the same strip inside the image does not. */
    static const char *const strips[] = {"##..##.", "##..##.", "##..##.", "##..##.",
                                         "##..##.", "##..##.", "##..##."};
    static const char *const opened[] = {"##.....", "##.....", "##.....", "##.....",
                                         "##.....", "##.....", "##....."};
    draw(m, strips, 7, 7);
    assert_int_equal(gs_morph_open(m, 7, 7, 1), 0);
    assert_drawn(m, opened, 7, 7);

    /* Erosion keeps the edge row of a full image; dilation of a corner pixel does not wrap. */
    draw(m, full, 7, 7);
    assert_int_equal(gs_morph_erode(m, 7, 7, 3), 0);
    assert_drawn(m, full, 7, 7);
    static const char *const corner[] = {"......#", ".......", ".......", ".......",
                                         ".......", ".......", "......."};
    static const char *const corner_d[] = {".....##", ".....##", ".......", ".......",
                                           ".......", ".......", "......."};
    draw(m, corner, 7, 7);
    assert_int_equal(gs_morph_dilate(m, 7, 7, 1), 0);
    assert_drawn(m, corner_d, 7, 7);

    /* An L shape eroded by r = 1: only pixels whose whole 3x3 neighbourhood is set remain. */
    static const char *const ell[] = {"###....", "###....", "###....", "#######",
                                      "#######", "#######", "......."};
    static const char *const ell_e[] = {"##.....", "##.....", "##.....", "##.....",
                                        "#######", ".......", "......."};
    for (int fast = 0; fast < 2; fast++) {
        draw(m, ell, 7, 7);
        assert_int_equal((fast ? gs_morph_erode : gs_morph_erode_ref)(m, 7, 7, 1), 0);
        assert_drawn(m, ell_e, 7, 7);
    }

    /* r = 0 only binarises. */
    uint8_t b[4] = {0, 7, 255, 1};
    assert_int_equal(gs_morph_dilate(b, 4, 1, 0), 0);
    const uint8_t want[4] = {0, 1, 1, 1};
    assert_memory_equal(b, want, 4);
}

static void fast_matches_ref(void **state)
{
    static const int sizes[][2] = {{1, 1},   {1, 17},  {17, 1},   {2, 3},
                                   {31, 33}, {513, 7}, {300, 301}};
    static const int radii[] = {0, 1, 2, 3, 7, 40, 100000};
    uint64_t s = 31;
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        int w = sizes[si][0], h = sizes[si][1];
        size_t n = (size_t)w * h;
        uint8_t *orig = malloc(n), *a = malloc(n), *b = malloc(n);
        assert_non_null(orig);
        assert_non_null(a);
        assert_non_null(b);
        for (int fill = 0; fill < 5; fill++) {
            /* densities 10%, 50%, 95%, all zero, all 255 */
            for (size_t k = 0; k < n; k++) {
                uint64_t r = gs_rng_next(&s) % 100;
                orig[k] = fill == 0   ? (uint8_t)(r < 10) * 200
                          : fill == 1 ? (uint8_t)(r < 50)
                          : fill == 2 ? (uint8_t)(r < 95) * 3
                          : fill == 3 ? 0
                                      : 255;
            }
            for (size_t ri = 0; ri < sizeof radii / sizeof radii[0]; ri++) {
                int r = radii[ri];
                if (r > 3 && n > 20000)
                    continue; /* the reference is O(r^2) per pixel */
                for (int op = 0; op < 2; op++) {
                    morph_fn fast = op ? gs_morph_erode : gs_morph_dilate;
                    morph_fn ref = op ? gs_morph_erode_ref : gs_morph_dilate_ref;
                    memcpy(a, orig, n);
                    memcpy(b, orig, n);
                    assert_int_equal(fast(a, w, h, r), 0);
                    assert_int_equal(ref(b, w, h, r), 0);
                    for (size_t k = 0; k < n; k++)
                        if (a[k] != b[k])
                            fail_msg("%s %dx%d r %d fill %d: pixel %zu fast %u ref %u",
                                     op ? "erode" : "dilate", w, h, r, fill, k, a[k], b[k]);
                }
                /* Opening shrinks, closing grows, both are idempotent. */
                memcpy(a, orig, n);
                assert_int_equal(gs_morph_open(a, w, h, r), 0);
                memcpy(b, a, n);
                assert_int_equal(gs_morph_open(b, w, h, r), 0);
                assert_memory_equal(a, b, n);
                for (size_t k = 0; k < n; k++)
                    assert_true(a[k] <= (orig[k] != 0));
                memcpy(a, orig, n);
                assert_int_equal(gs_morph_close(a, w, h, r), 0);
                memcpy(b, a, n);
                assert_int_equal(gs_morph_close(b, w, h, r), 0);
                assert_memory_equal(a, b, n);
                for (size_t k = 0; k < n; k++)
                    assert_true(a[k] >= (orig[k] != 0));
            }
        }
        free(orig);
        free(a);
        free(b);
    }
}

static void bad_arguments(void **state)
{
    uint8_t m[4] = {1, 0, 1, 0};
    gs_error_clear();
    assert_int_equal(gs_morph_erode(NULL, 2, 2, 1), -1);
    assert_string_equal(gs_error_get(), "morph: mask is NULL");
    assert_int_equal(gs_morph_dilate(m, 0, 2, 1), -1);
    assert_int_equal(gs_morph_open(m, 2, -2, 1), -1);
    assert_int_equal(gs_morph_close(m, 2, 2, -1), -1);
    assert_int_equal(gs_morph_erode_ref(m, 2, 2, -1), -1);
    assert_int_equal(gs_morph_dilate_ref(NULL, 2, 2, 1), -1);
    const uint8_t same[4] = {1, 0, 1, 0};
    assert_memory_equal(m, same, 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hand_drawn),
        cmocka_unit_test(fast_matches_ref),
        cmocka_unit_test(bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
