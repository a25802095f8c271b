#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops/error.h"
#include "stages/slide/heatmap.h"

static void fill(uint8_t *m, int n, uint8_t v)
{
    memset(m, v, (size_t)n * n);
}

static void grid_of_constant_tiles(void **state)
{
    (void)state;
    /* 3x2 tiles of 64 level-0 px on a 160x128 slide, 4x4 maps, cells of 16 px: 10x8 cells.
     * Tile (c, r) is constant (40 * (c + 3r)); tile (2, 1) is missing (no data). */
    gs_heatmap *h = gs_heatmap_new(160, 128, 16);
    assert_non_null(h);
    int cols, rows;
    gs_heatmap_size(h, &cols, &rows);
    assert_int_equal(cols, 10);
    assert_int_equal(rows, 8);
    assert_true(gs_heatmap_cell(h) == 16.0);
    uint8_t map[16];
    for (int r = 0; r < 2; r++)
        for (int c = 0; c < 3; c++) {
            if (c == 2 && r == 1)
                continue;
            fill(map, 4, (uint8_t)(40 * (c + 3 * r)));
            /* The last column of tiles runs past the slide (128..192 > 160): clipped. */
            int n = gs_heatmap_add_tile(h, c * 64, r * 64, 64, map, 4);
            assert_int_equal(n, c == 2 ? 2 * 4 : 16);
        }
    assert_int_equal(gs_heatmap_cells_with_data(h), 4 * 16 + 8);
    for (int j = 0; j < rows; j++)
        for (int i = 0; i < cols; i++) {
            int c = i / 4, r = j / 4;
            float v = gs_heatmap_value(h, i, j);
            if (c == 2 && r == 1)
                assert_true(isnan(v));
            else
                assert_true(fabsf(v - 40.0f * (c + 3 * r) / 255.0f) < 1e-6f);
        }
    assert_true(isnan(gs_heatmap_value(h, -1, 0)));
    assert_true(isnan(gs_heatmap_value(h, 10, 0)));
    /* A window off the slide contributes nothing. */
    assert_int_equal(gs_heatmap_add_tile(h, 1000, 0, 64, map, 4), 0);
    gs_heatmap_destroy(&h);
    assert_null(h);
    gs_heatmap_destroy(&h);
}

static void one_cell_per_map_value(void **state)
{
    (void)state;
    /* cell = window / map_size: the slide heatmap reproduces each map value in place. */
    enum { S = 8 };
    uint8_t a[S * S], b[S * S];
    for (int i = 0; i < S * S; i++) {
        a[i] = (uint8_t)(i * 3);
        b[i] = (uint8_t)(255 - i);
    }
    gs_heatmap *h = gs_heatmap_new(2 * 512, 512, 512.0 / S);
    assert_non_null(h);
    assert_int_equal(gs_heatmap_add_tile(h, 0, 0, 512, a, S), S * S);
    assert_int_equal(gs_heatmap_add_tile(h, 512, 0, 512, b, S), S * S);
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            assert_true(gs_heatmap_value(h, x, y) == a[y * S + x] / 255.0f);
            assert_true(gs_heatmap_value(h, S + x, y) == b[y * S + x] / 255.0f);
        }
    gs_heatmap_destroy(&h);
    /* A finer grid (cell = window / (2 * map_size)) repeats each value over 2x2 cells. */
    h = gs_heatmap_new(512, 512, 512.0 / (2 * S));
    assert_int_equal(gs_heatmap_add_tile(h, 0, 0, 512, a, S), 4 * S * S);
    for (int y = 0; y < 2 * S; y++)
        for (int x = 0; x < 2 * S; x++)
            assert_true(gs_heatmap_value(h, x, y) == a[(y / 2) * S + x / 2] / 255.0f);
    gs_heatmap_destroy(&h);
}

static void overlapping_windows_average(void **state)
{
    (void)state;
    /* Windows of 64 at stride 32: the middle band is covered by both tiles. */
    gs_heatmap *h = gs_heatmap_new(96, 32, 32);
    uint8_t zero[4], full[4];
    fill(zero, 2, 0);
    fill(full, 2, 255);
    assert_int_equal(gs_heatmap_add_tile(h, 0, 0, 64, zero, 2), 2);
    assert_int_equal(gs_heatmap_add_tile(h, 32, 0, 64, full, 2), 2);
    assert_true(gs_heatmap_value(h, 0, 0) == 0.0f);
    assert_true(gs_heatmap_value(h, 1, 0) == 0.5f);
    assert_true(gs_heatmap_value(h, 2, 0) == 1.0f);
    uint8_t mask[3];
    assert_int_equal(gs_heatmap_threshold(h, 0.5f, mask), 2);
    assert_int_equal(mask[0], 0);
    assert_int_equal(mask[1], 1);
    assert_int_equal(mask[2], 1);
    assert_int_equal(gs_heatmap_threshold(h, 0.75f, mask), 1);
    gs_heatmap_destroy(&h);
}

static void colours(void **state)
{
    (void)state;
    const struct {
        float v;
        uint8_t rgb[3];
    } want[] = {{0, {0, 0, 255}},       {0.25f, {0, 255, 255}}, {0.5f, {0, 255, 0}},
                {0.75f, {255, 255, 0}}, {1, {255, 0, 0}},       {0.125f, {0, 128, 255}},
                {-1, {0, 0, 255}},      {2, {255, 0, 0}},       {NAN, {0, 0, 255}}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        uint8_t c[3];
        gs_heatmap_colour(want[i].v, c);
        for (int k = 0; k < 3; k++)
            if (c[k] != want[i].rgb[k])
                fail_msg("v %g channel %d: %u, want %u", want[i].v, k, c[k], want[i].rgb[k]);
    }
}

static void overlay_on_thumbnail(void **state)
{
    (void)state;
    /* A 200x100 slide, 20x10 thumbnail (10 level-0 px per thumbnail px), 50 px cells: 4x2.
     * Left half red (1.0), the top-right cell blue (0), bottom-right no data. */
    gs_heatmap *h = gs_heatmap_new(200, 100, 50);
    uint8_t one[1] = {255}, zero[1] = {0};
    assert_int_equal(gs_heatmap_add_tile(h, 0, 0, 100, one, 1), 4);
    assert_int_equal(gs_heatmap_add_tile(h, 100, 0, 50, zero, 1), 1);
    enum { TW = 20, TH = 10 };
    uint8_t thumb[TW * TH * 3];
    for (int i = 0; i < TW * TH; i++) {
        thumb[3 * i] = 200;
        thumb[3 * i + 1] = 100;
        thumb[3 * i + 2] = (uint8_t)i;
    }
    uint8_t *o = gs_heatmap_render(h, thumb, TW, TH, 0.5);
    assert_non_null(o);
    for (int y = 0; y < TH; y++)
        for (int x = 0; x < TW; x++) {
            const uint8_t *p = thumb + (y * TW + x) * 3, *q = o + (y * TW + x) * 3;
            int col = (x * 10 + 5) / 50, row = (y * 10 + 5) / 50;
            if (col < 2) { /* red at half opacity: tissue still shows */
                assert_int_equal(q[0], lround(0.5 * p[0] + 127.5));
                assert_int_equal(q[1], lround(0.5 * p[1]));
                assert_int_equal(q[2], lround(0.5 * p[2]));
            } else if (col == 2 && row == 0) {
                assert_int_equal(q[0], lround(0.5 * p[0]));
                assert_int_equal(q[2], lround(0.5 * p[2] + 127.5));
            } else {
                assert_memory_equal(q, p, 3);
            }
        }
    free(o);
    assert_null(gs_heatmap_render(h, thumb, TW, TH, 1.5));
    assert_null(gs_heatmap_render(h, NULL, TW, TH, 0.5));
    gs_heatmap_destroy(&h);
}

static void bad_arguments(void **state)
{
    (void)state;
    assert_null(gs_heatmap_new(0, 10, 1));
    assert_null(gs_heatmap_new(10, 10, 0.5));
    assert_null(gs_heatmap_new(10, 10, NAN));
    assert_null(gs_heatmap_new(1000000, 1000000, 1));
    assert_non_null(strstr(gs_error_get(), "too many"));
    gs_heatmap *h = gs_heatmap_new(10, 10, 1);
    uint8_t m[1] = {0};
    assert_int_equal(gs_heatmap_add_tile(h, 0, 0, 4, NULL, 1), -1);
    assert_int_equal(gs_heatmap_add_tile(h, 0, 0, 4, m, 0), -1);
    assert_int_equal(gs_heatmap_add_tile(h, 0, 0, 0, m, 1), -1);
    assert_int_equal(gs_heatmap_cells_with_data(h), 0);
    gs_heatmap_destroy(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(grid_of_constant_tiles),      cmocka_unit_test(one_cell_per_map_value),
        cmocka_unit_test(overlapping_windows_average), cmocka_unit_test(colours),
        cmocka_unit_test(overlay_on_thumbnail),        cmocka_unit_test(bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
