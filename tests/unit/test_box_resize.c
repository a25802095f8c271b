/* box_resize: PIL's BOX resize, on hand-computed cases (PIL's rule: a source pixel counts,
 * with weight 1 before normalising, when its centre falls in the destination pixel's
 * footprint; rows then columns, each rounded half up) and bit for bit against PIL itself
 * (/usr/bin/python3, Debian's python3-pil) on the thumbnail of a real slide. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ops/error.h"
#include "stages/slide/box_resize.h"
#include "stages/slide/png_io.h"
#include "stages/slide/reader.h"

static void resize_row(const uint8_t *in, int sw, int dw, const uint8_t *want)
{
    uint8_t out[16];
    assert_int_equal(gs_box_resize_u8(in, sw, 1, 1, out, dw, 1), 0);
    assert_memory_equal(out, want, (size_t)dw);
}

static void hand_computed(void **state)
{
    (void)state;
    /* 5 -> 2: footprints [0, 2.5) and [2.5, 5); centres 0.5, 1.5, 2.5 | 3.5, 4.5. PIL's edge is
     * (c - 1.25, c + 1.25] around c = 1.25, so pixel 2 (centre 2.5) goes left:
     * (0 + 100 + 200) / 3 = 100 and (40 + 80) / 2 = 60 (a coverage mean would give 80, 88). */
    resize_row((const uint8_t[]){0, 100, 200, 40, 80}, 5, 2, (const uint8_t[]){100, 60});
    /* 3 -> 2: footprints [0, 1.5), [1.5, 3): centres 0.5, 1.5 | 2.5 -> (0 + 90) / 2 = 45, 30. */
    resize_row((const uint8_t[]){0, 90, 30}, 3, 2, (const uint8_t[]){45, 30});
    /* 4 -> 2: an integer factor, the plain mean of pairs; 0.5 and 1.5 round up. */
    resize_row((const uint8_t[]){10, 20, 0, 1}, 4, 2, (const uint8_t[]){15, 1});
    resize_row((const uint8_t[]){1, 2, 7, 7}, 4, 2, (const uint8_t[]){2, 7});
    /* 3 -> 5, enlarging: each output takes the source pixel under its centre (x + 0.5) * 0.6:
     * 0.3, 0.9, 1.5 (the edge (1, 2] holds it: pixel 1), 2.1, 2.7. */
    resize_row((const uint8_t[]){0, 100, 200}, 3, 5, (const uint8_t[]){0, 0, 100, 200, 200});
    /* Same size: a copy. */
    resize_row((const uint8_t[]){3, 1, 4, 1, 5}, 5, 5, (const uint8_t[]){3, 1, 4, 1, 5});

    /* 2-D, RGB, 4x4 -> 2x2: rows then columns, each rounded. The top-left block of red is
     * 0 1 / 1 1: rows give 1 (0.5 up) and 1, so 1, where a one-pass mean (0.75) is 1 too; the
     * top-right block 0 1 / 0 0 gives rows 1 and 0, columns 0.5 -> 1 (one pass: 0.25 -> 0). */
    uint8_t img[4 * 4 * 3] = {0};
    static const uint8_t red[16] = {0, 1, 0, 1, 1, 1, 0, 0, 9, 9, 3, 5, 9, 9, 5, 5};
    for (int i = 0; i < 16; i++) {
        img[3 * i] = red[i];
        img[3 * i + 1] = (uint8_t)(10 * i); /* green: a ramp, block means below */
        img[3 * i + 2] = 255;
    }
    uint8_t out[2 * 2 * 3];
    assert_int_equal(gs_box_resize_u8(img, 4, 4, 3, out, 2, 2), 0);
    static const uint8_t want[12] = {
        1, 25, 255, 1, 45, 255, 9, 105, 255, 5, 125, 255,
    };
    assert_memory_equal(out, want, sizeof want);

    assert_int_equal(gs_box_resize_u8(img, 0, 4, 3, out, 2, 2), -1);
    assert_non_null(strstr(gs_error_get(), "bad sizes"));
    assert_int_equal(gs_box_resize_u8(img, 4, 4, 5, out, 2, 2), -1);
}

/* The slide's thumbnail resized by PIL and by us to the network's 512x512, to a non-integer
 * shrink and to an enlargement of one axis: the same bytes. */
static void matches_pil_on_a_slide(void **state)
{
    (void)state;
    const char *data = getenv("GS_TEST_DATA");
    assert_non_null(data);
    char path[4096], dir[] = "/tmp/gs_test_box_resize_XXXXXX";
    snprintf(path, sizeof path, "%s/CMU-1-Small-Region.svs", data);
    gs_slide_options so;
    gs_slide_options_default(&so);
    gs_slide *s = gs_slide_open(path, &so);
    assert_non_null(s);
    uint8_t *thumb = NULL;
    int tw, th;
    assert_int_equal(gs_slide_thumbnail(s, 700, &thumb, &tw, &th), 0);
    gs_slide_destroy(&s);
    assert_non_null(mkdtemp(dir));
    char src[4200];
    snprintf(src, sizeof src, "%s/thumb.png", dir);
    assert_int_equal(gs_png_write(src, thumb, tw, th, (size_t)tw * 3, 3), 0);

    static const int sizes[][2] = {{512, 512}, {333, 217}, {100, 900}};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        int dw = sizes[k][0], dh = sizes[k][1];
        char pil[4200], cmd[9000];
        snprintf(pil, sizeof pil, "%s/pil-%d.png", dir, dw);
        snprintf(cmd, sizeof cmd,
                 "/usr/bin/python3 -c 'import sys; from PIL import Image; "
                 "Image.open(sys.argv[1]).convert(\"RGB\").resize((%d, %d), Image.BOX)"
                 ".save(sys.argv[2])' '%s' '%s'",
                 dw, dh, src, pil);
        assert_int_equal(system(cmd), 0);
        uint8_t *want = NULL;
        int ww, wh;
        assert_int_equal(gs_png_read(pil, 3, &want, &ww, &wh), 0);
        assert_int_equal(ww, dw);
        assert_int_equal(wh, dh);
        uint8_t *got = malloc((size_t)dw * dh * 3);
        assert_non_null(got);
        assert_int_equal(gs_box_resize_u8(thumb, tw, th, 3, got, dw, dh), 0);
        size_t diff = 0;
        for (size_t i = 0; i < (size_t)dw * dh * 3; i++)
            diff += got[i] != want[i];
        printf("%dx%d -> %dx%d: %zu bytes differ from PIL\n", tw, th, dw, dh, diff);
        assert_int_equal(diff, 0);
        free(got);
        free(want);
        unlink(pil);
    }
    unlink(src);
    rmdir(dir);
    free(thumb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hand_computed),
        cmocka_unit_test(matches_pil_on_a_slide),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
