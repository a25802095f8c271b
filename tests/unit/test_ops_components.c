#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "ops/components.h"
#include "ops/error.h"
#include "ops/rng.h"

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

static const char *const drawing[] = {
    "##..#...", /* a 2x2 block (label 1), a vertical pair (label 2) */
    "##..#..#", /* the start of a diagonal chain (label 3) */
    "......#.", /* ... which joins only through corners */
    ".....#..", /* */
    "#.......", /* a single pixel (label 4) */
    "........", /* */
    "...###..", /* a cup (label 5) */
    "...#.#..", /* */
};

static void known_counts_and_areas(void **state)
{
    uint8_t m[64];
    int32_t lab[64];
    draw(m, drawing, 8, 8);
    for (int fast = 0; fast < 2; fast++) {
        int64_t *areas = NULL;
        int n = (fast ? gs_components_label : gs_components_label_ref)(m, 8, 8, lab, &areas);
        assert_int_equal(n, 5);
        assert_non_null(areas);
        const int64_t want[6] = {49, 4, 2, 3, 1, 5};
        for (int i = 0; i <= 5; i++)
            assert_int_equal(areas[i], want[i]);
        free(areas);
        /* Raster-order numbering and the diagonal chain as one component. */
        assert_int_equal(lab[0], 1);
        assert_int_equal(lab[9], 1);
        assert_int_equal(lab[4], 2);
        assert_int_equal(lab[1 * 8 + 7], 3);
        assert_int_equal(lab[2 * 8 + 6], 3);
        assert_int_equal(lab[3 * 8 + 5], 3);
        assert_int_equal(lab[4 * 8 + 0], 4);
        assert_int_equal(lab[7 * 8 + 3], 5);
        assert_int_equal(lab[7 * 8 + 5], 5);
        assert_int_equal(lab[7 * 8 + 4], 0);
        /* Areas are optional. */
        assert_int_equal((fast ? gs_components_label : gs_components_label_ref)(m, 8, 8, lab, NULL),
                         5);
    }
    /* A checkerboard is one 8-connected component; an empty mask has none. */
    uint8_t c[35];
    for (int i = 0; i < 35; i++)
        c[i] = (uint8_t)((i % 7 + i / 7) % 2 == 0);
    int32_t l2[35];
    assert_int_equal(gs_components_label(c, 7, 5, l2, NULL), 1);
    memset(c, 0, sizeof c);
    int64_t *a = NULL;
    assert_int_equal(gs_components_label(c, 7, 5, l2, &a), 0);
    assert_int_equal(a[0], 35);
    free(a);
    /* A U shape whose arms meet only on the last row: one label, not two. */
    static const char *const u[] = {"#...#", "#...#", "#...#", "#####"};
    uint8_t um[20];
    int32_t ul[20];
    draw(um, u, 5, 4);
    assert_int_equal(gs_components_label(um, 5, 4, ul, NULL), 1);
    assert_int_equal(ul[4], 1);
}

static void remove_small(void **state)
{
    uint8_t m[64];
    draw(m, drawing, 8, 8);
    m[0] = 77; /* any nonzero is foreground; output is 0/1 */
    assert_int_equal(gs_remove_small_components(m, 8, 8, 3), 3);
    static const char *const want[] = {"##......", "##.....#", "......#.", ".....#..",
                                       "........", "........", "...###..", "...#.#.."};
    assert_drawn(m, want, 8, 8);
    assert_int_equal(gs_remove_small_components(m, 8, 8, 6), 0);
    for (int i = 0; i < 64; i++)
        assert_int_equal(m[i], 0);
    draw(m, drawing, 8, 8);
    assert_int_equal(gs_remove_small_components(m, 8, 8, 0), 5);
    assert_drawn(m, drawing, 8, 8);
}

static void fill_holes(void **state)
{
    static const char *const ring[] = {".....", ".###.", ".#.#.", ".###.", "....."};
    static const char *const filled[] = {".....", ".###.", ".###.", ".###.", "....."};
    uint8_t m[25];
    draw(m, ring, 5, 5);
    assert_int_equal(gs_fill_small_holes(m, 5, 5, 1), 0); /* area 1 is not < 1 */
    assert_drawn(m, ring, 5, 5);
    assert_int_equal(gs_fill_small_holes(m, 5, 5, 2), 1);
    assert_drawn(m, filled, 5, 5);

    /* Background touching the border is never a hole. */
    static const char *const bay[] = {"#.###", "#...#", "#####"};
    uint8_t b[15];
    draw(b, bay, 5, 3);
    assert_int_equal(gs_fill_small_holes(b, 5, 3, 100), 0);
    assert_drawn(b, bay, 5, 3);

    /* Holes are 4-connected: the hole at (1,1) touches the open pixel (2,2) only at a corner,
     * so it stays enclosed (an 8-connected ring is closed) and is filled. */
    static const char *const diag[] = {"###.", "#.#.", "##.#", "...."};
    static const char *const diag_f[] = {"###.", "###.", "##.#", "...."};
    uint8_t d[16];
    draw(d, diag, 4, 4);
    assert_int_equal(gs_fill_small_holes(d, 4, 4, 10), 1);
    assert_drawn(d, diag_f, 4, 4);

    /* Two holes of areas 1 and 3, only the small one filled. */
    static const char *const two[] = {"#######", "#.#...#", "#######"};
    static const char *const two_f[] = {"#######", "###...#", "#######"};
    uint8_t t[21];
    draw(t, two, 7, 3);
    assert_int_equal(gs_fill_small_holes(t, 7, 3, 3), 1);
    assert_drawn(t, two_f, 7, 3);
}

/* Independent oracle for hole filling: mark background reachable from the border through
 * 4-neighbours (repeated sweeps until nothing changes); the rest of the background is holes. */
static void border_reachable(const uint8_t *m, int w, int h, uint8_t *reach)
{
    memset(reach, 0, (size_t)w * h);
    int changed = 1;
    while (changed) {
        changed = 0;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                size_t i = (size_t)y * w + x;
                if (m[i] || reach[i])
                    continue;
                if (x == 0 || y == 0 || x == w - 1 || y == h - 1 || reach[i - 1] || reach[i + 1] ||
                    reach[i - w] || reach[i + w]) {
                    reach[i] = 1;
                    changed = 1;
                }
            }
    }
}

static void fast_matches_ref(void **state)
{
    static const int sizes[][2] = {{1, 1},   {1, 17},  {17, 1},  {2, 2},
                                   {31, 33}, {513, 7}, {7, 513}, {200, 150}};
    static const int density[] = {0, 10, 45, 60, 90, 100};
    uint64_t s = 41;
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        int w = sizes[si][0], h = sizes[si][1];
        size_t n = (size_t)w * h;
        uint8_t *m = malloc(n), *c = malloc(n), *reach = malloc(n);
        int32_t *a = malloc(sizeof *a * n), *b = malloc(sizeof *b * n);
        assert_non_null(m);
        assert_non_null(c);
        assert_non_null(reach);
        assert_non_null(a);
        assert_non_null(b);
        for (size_t di = 0; di < sizeof density / sizeof density[0]; di++) {
            for (size_t k = 0; k < n; k++)
                m[k] = (uint8_t)(gs_rng_next(&s) % 100 < (uint64_t)density[di]) * 255;
            int64_t *aa = NULL, *ab = NULL;
            int na = gs_components_label(m, w, h, a, &aa);
            int nb = gs_components_label_ref(m, w, h, b, &ab);
            assert_true(na >= 0);
            assert_int_equal(na, nb);
            assert_memory_equal(a, b, sizeof *a * n);
            assert_memory_equal(aa, ab, sizeof *aa * ((size_t)na + 1));
            for (size_t k = 0; k < n; k++)
                assert_int_equal(a[k] != 0, m[k] != 0);

            /* Small-component removal against the reference labels. */
            int64_t min_area = 1 + (int64_t)(gs_rng_next(&s) % 6);
            memcpy(c, m, n);
            int kept = gs_remove_small_components(c, w, h, min_area);
            int want_kept = 0;
            for (int i = 1; i <= nb; i++)
                want_kept += ab[i] >= min_area;
            assert_int_equal(kept, want_kept);
            for (size_t k = 0; k < n; k++)
                assert_int_equal(c[k], b[k] != 0 && ab[b[k]] >= min_area);
            free(aa);
            free(ab);

            /* Filling every hole leaves only border-reachable background. */
            memcpy(c, m, n);
            border_reachable(m, w, h, reach);
            assert_true(gs_fill_small_holes(c, w, h, INT64_MAX) >= 0);
            for (size_t k = 0; k < n; k++)
                assert_int_equal(c[k], m[k] != 0 || !reach[k]);
            /* max_hole 0 and 1 fill nothing (no hole has fewer than 1 pixel). */
            memcpy(c, m, n);
            assert_int_equal(gs_fill_small_holes(c, w, h, 1), 0);
            for (size_t k = 0; k < n; k++)
                assert_int_equal(c[k], m[k] != 0);
        }
        free(m);
        free(c);
        free(reach);
        free(a);
        free(b);
    }
}

static void bad_arguments(void **state)
{
    uint8_t m[4] = {1, 0, 0, 1};
    int32_t l[4];
    int64_t *areas = (int64_t *)(uintptr_t)1; /* must be reset to NULL on failure */
    gs_error_clear();
    assert_int_equal(gs_components_label(NULL, 2, 2, l, &areas), -1);
    assert_null(areas);
    assert_string_equal(gs_error_get(), "components: mask is NULL");
    assert_int_equal(gs_components_label(m, 2, 2, NULL, NULL), -1);
    assert_int_equal(gs_components_label_ref(m, 0, 2, l, NULL), -1);
    assert_int_equal(gs_components_label(m, 65536, 65536, l, NULL), -1);
    assert_int_equal(gs_remove_small_components(m, 2, -1, 2), -1);
    assert_int_equal(gs_remove_small_components(NULL, 2, 2, 2), -1);
    assert_int_equal(gs_fill_small_holes(NULL, 2, 2, 2), -1);
    assert_int_equal(gs_fill_small_holes(m, 0, 0, 2), -1);
    const uint8_t same[4] = {1, 0, 0, 1};
    assert_memory_equal(m, same, 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(known_counts_and_areas),
        cmocka_unit_test(remove_small),
        cmocka_unit_test(fill_holes),
        cmocka_unit_test(fast_matches_ref),
        cmocka_unit_test(bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
