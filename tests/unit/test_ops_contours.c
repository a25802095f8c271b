#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops/components.h"
#include "ops/contours.h"
#include "ops/error.h"

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint8_t *draw(const char *const *rows, int w, int h)
{
    uint8_t *m = malloc((size_t)w * h);
    assert_non_null(m);
    for (int y = 0; y < h; y++) {
        assert_int_equal((int)strlen(rows[y]), w);
        for (int x = 0; x < w; x++)
            m[y * w + x] = rows[y][x] == '#';
    }
    return m;
}

/* Proper intersection or touching of segments ab and cd (exact for these coordinates). */
static int segments_meet(gs_point a, gs_point b, gs_point c, gs_point d)
{
    double d1 = (b.x - a.x) * (c.y - a.y) - (b.y - a.y) * (c.x - a.x);
    double d2 = (b.x - a.x) * (d.y - a.y) - (b.y - a.y) * (d.x - a.x);
    double d3 = (d.x - c.x) * (a.y - c.y) - (d.y - c.y) * (a.x - c.x);
    double d4 = (d.x - c.x) * (b.y - c.y) - (d.y - c.y) * (b.x - c.x);
    if (((d1 > 0 && d2 < 0) || (d1 < 0 && d2 > 0)) && ((d3 > 0 && d4 < 0) || (d3 < 0 && d4 > 0)))
        return 1;
#define ON(p, q, r, dd)                                                                            \
    ((dd) == 0 && fmin(p.x, q.x) <= r.x && r.x <= fmax(p.x, q.x) && fmin(p.y, q.y) <= r.y &&       \
     r.y <= fmax(p.y, q.y))
    return ON(a, b, c, d1) || ON(a, b, d, d2) || ON(c, d, a, d3) || ON(c, d, b, d4);
#undef ON
}

typedef struct {
    const gs_ring *ring;
    size_t i;
} seg_ref;

/* Every ring of every polygon: at least 4 corners, no collinear consecutive edges, and no two
 * edges meeting except consecutive ones at their shared vertex (simple, disjoint rings). */
static void assert_simple_and_disjoint(const gs_contours *c)
{
    size_t nseg = 0;
    for (size_t i = 0; i < gs_contours_count(c); i++) {
        const gs_polygon *p = gs_contours_polygon(c, i);
        nseg += p->outer.n;
        for (size_t k = 0; k < p->n_holes; k++)
            nseg += p->holes[k].n;
    }
    seg_ref *segs = malloc(sizeof *segs * (nseg ? nseg : 1));
    assert_non_null(segs);
    size_t s = 0;
    for (size_t i = 0; i < gs_contours_count(c); i++) {
        const gs_polygon *p = gs_contours_polygon(c, i);
        for (size_t k = 0; k <= p->n_holes; k++) {
            const gs_ring *r = k == 0 ? &p->outer : &p->holes[k - 1];
            assert_true(r->n >= 4);
            for (size_t j = 0; j < r->n; j++) {
                gs_point a = r->pts[j], b = r->pts[(j + 1) % r->n], q = r->pts[(j + 2) % r->n];
                double cross = (b.x - a.x) * (q.y - b.y) - (b.y - a.y) * (q.x - b.x);
                assert_true(cross != 0);
                segs[s].ring = r;
                segs[s].i = j;
                s++;
            }
        }
    }
    for (size_t i = 0; i < nseg; i++)
        for (size_t j = i + 1; j < nseg; j++) {
            const gs_ring *ri = segs[i].ring, *rj = segs[j].ring;
            gs_point a = ri->pts[segs[i].i], b = ri->pts[(segs[i].i + 1) % ri->n];
            gs_point p = rj->pts[segs[j].i], q = rj->pts[(segs[j].i + 1) % rj->n];
            if (ri == rj) {
                size_t n = ri->n, d = segs[j].i - segs[i].i;
                if (d == 1 || d == n - 1)
                    continue; /* neighbours share exactly one vertex */
            }
            if (segments_meet(a, b, p, q))
                fail_msg("edges (%g,%g)-(%g,%g) and (%g,%g)-(%g,%g) meet", a.x, a.y, b.x, b.y, p.x,
                         p.y, q.x, q.y);
        }
    free(segs);
}

/* The checks every mask must pass: one polygon per 8-connected component with its pixel count,
 * outer rings positive, holes negative and as many as gs_fill_small_holes finds, area = pixels
 * + saddles / 256, the rasterised polygons give back the mask, rings simple and disjoint. */
static gs_contours *check_mask(const uint8_t *mask, int w, int h)
{
    gs_contours *c = gs_contours_new(mask, w, h);
    assert_non_null(c);
    int32_t *lab = malloc(sizeof(int32_t) * (size_t)w * h);
    uint8_t *back = malloc((size_t)w * h), *filled = malloc((size_t)w * h);
    assert_non_null(lab);
    assert_non_null(back);
    assert_non_null(filled);
    int64_t *areas = NULL;
    int n = gs_components_label(mask, w, h, lab, &areas);
    assert_int_equal((int)gs_contours_count(c), n);
    memcpy(filled, mask, (size_t)w * h);
    int holes = gs_fill_small_holes(filled, w, h, INT64_MAX);
    size_t ring_holes = 0;
    for (int i = 0; i < n; i++) {
        const gs_polygon *p = gs_contours_polygon(c, (size_t)i);
        assert_int_equal(p->label, i + 1);
        assert_int_equal(p->pixels, areas[i + 1]);
        assert_true(gs_ring_area(&p->outer) > 0);
        for (size_t k = 0; k < p->n_holes; k++)
            assert_true(gs_ring_area(&p->holes[k]) < 0);
        ring_holes += p->n_holes;
        double want =
            (double)p->pixels + p->saddles * GS_CONTOUR_SADDLE_OFFSET * GS_CONTOUR_SADDLE_OFFSET;
        if (fabs(gs_polygon_area(p) - want) > 1e-9)
            fail_msg("polygon %d: area %.6f, want %.6f", i + 1, gs_polygon_area(p), want);
    }
    assert_int_equal((int)ring_holes, holes);
    assert_int_equal(gs_contours_rasterize(c, w, h, back), 0);
    for (int i = 0; i < w * h; i++)
        if (back[i] != (mask[i] != 0))
            fail_msg("pixel (%d,%d): rasterised %u, mask %u", i % w, i / w, back[i], mask[i]);
    assert_simple_and_disjoint(c);
    free(areas);
    free(lab);
    free(back);
    free(filled);
    return c;
}

static void square(void **state)
{
    (void)state;
    const char *rows[] = {".....", ".###.", ".###.", ".###.", "....."};
    uint8_t *m = draw(rows, 5, 5);
    gs_contours *c = check_mask(m, 5, 5);
    assert_int_equal(gs_contours_count(c), 1);
    const gs_polygon *p = gs_contours_polygon(c, 0);
    assert_int_equal(p->outer.n, 4);
    assert_int_equal(p->n_holes, 0);
    assert_true(gs_ring_area(&p->outer) == 9.0);
    /* Corners in tracing order from the top-left: right, down, left (positive sum). */
    const double want[4][2] = {{4, 1}, {4, 4}, {1, 4}, {1, 1}};
    for (int i = 0; i < 4; i++) {
        assert_true(p->outer.pts[i].x == want[i][0]);
        assert_true(p->outer.pts[i].y == want[i][1]);
    }
    gs_contours_destroy(&c);
    assert_null(c);
    gs_contours_destroy(&c);
    free(m);
}

static void l_shape_and_border(void **state)
{
    (void)state;
    const char *rows[] = {"#...", "#...", "####"};
    uint8_t *m = draw(rows, 4, 3);
    gs_contours *c = check_mask(m, 4, 3);
    const gs_polygon *p = gs_contours_polygon(c, 0);
    assert_int_equal(p->outer.n, 6);
    assert_true(gs_polygon_area(p) == 6.0);
    for (size_t i = 0; i < p->outer.n; i++) { /* it lies on the image border */
        assert_true(p->outer.pts[i].x >= 0 && p->outer.pts[i].x <= 4);
        assert_true(p->outer.pts[i].y >= 0 && p->outer.pts[i].y <= 3);
    }
    gs_contours_destroy(&c);
    free(m);
    /* A full mask is the image rectangle. */
    uint8_t full[6 * 4];
    memset(full, 1, sizeof full);
    c = check_mask(full, 6, 4);
    p = gs_contours_polygon(c, 0);
    assert_int_equal(p->outer.n, 4);
    assert_true(gs_ring_area(&p->outer) == 24.0);
    gs_contours_destroy(&c);
    /* 1x1 masks. */
    uint8_t one = 1, zero = 0;
    c = check_mask(&one, 1, 1);
    assert_true(gs_ring_area(&gs_contours_polygon(c, 0)->outer) == 1.0);
    gs_contours_destroy(&c);
    c = check_mask(&zero, 1, 1);
    assert_int_equal(gs_contours_count(c), 0);
    gs_contours_destroy(&c);
}

static void ring_with_hole(void **state)
{
    (void)state;
    const char *rows[] = {"......", ".####.", ".#..#.", ".#..#.", ".####.", "......"};
    uint8_t *m = draw(rows, 6, 6);
    gs_contours *c = check_mask(m, 6, 6);
    const gs_polygon *p = gs_contours_polygon(c, 0);
    assert_int_equal(p->n_holes, 1);
    assert_true(gs_ring_area(&p->outer) == 16.0);
    assert_true(gs_ring_area(&p->holes[0]) == -4.0);
    assert_int_equal(p->pixels, 12);
    assert_int_equal(p->saddles, 0);
    gs_contours_destroy(&c);
    free(m);
    /* A diagonal gap in the wall does not let the hole out (8-connected region). */
    const char *leak[] = {"###.", "#..#", "#..#", "####"};
    m = draw(leak, 4, 4);
    c = check_mask(m, 4, 4);
    assert_int_equal(gs_contours_count(c), 1);
    p = gs_contours_polygon(c, 0);
    assert_int_equal(p->n_holes, 1); /* the diagonal gap does not open the hole */
    assert_int_equal(p->saddles, 1);
    gs_contours_destroy(&c);
    free(m);
}

static void touching_diagonals(void **state)
{
    (void)state;
    /* Two pixels meeting at a corner are one region; both passes cut the corner. */
    const char *pair[] = {"#.", ".#"};
    uint8_t *m = draw(pair, 2, 2);
    gs_contours *c = check_mask(m, 2, 2);
    assert_int_equal(gs_contours_count(c), 1);
    const gs_polygon *p = gs_contours_polygon(c, 0);
    assert_int_equal(p->saddles, 1);
    assert_int_equal(p->outer.n, 10);
    assert_true(gs_polygon_area(p) == 2.0 + 1.0 / 256);
    gs_contours_destroy(&c);
    free(m);
    /* The other diagonal, and a hole split in two by a diagonal of the region. */
    const char *anti[] = {".#", "#."};
    m = draw(anti, 2, 2);
    c = check_mask(m, 2, 2);
    assert_int_equal(gs_contours_polygon(c, 0)->saddles, 1);
    gs_contours_destroy(&c);
    free(m);
    const char *split[] = {"####", "#.##", "##.#", "####"};
    m = draw(split, 4, 4);
    c = check_mask(m, 4, 4);
    p = gs_contours_polygon(c, 0);
    assert_int_equal(p->n_holes, 2);
    assert_int_equal(p->saddles, 1);
    gs_contours_destroy(&c);
    free(m);
    /* A checkerboard: one region, every inner corner a saddle. */
    uint8_t board[7 * 5];
    for (int i = 0; i < 35; i++)
        board[i] = ((i % 7) + (i / 7)) % 2 == 0;
    c = check_mask(board, 7, 5);
    assert_int_equal(gs_contours_count(c), 1);
    assert_int_equal(gs_contours_polygon(c, 0)->saddles, 6 * 4);
    gs_contours_destroy(&c);
}

static void many_small_blobs(void **state)
{
    (void)state;
    uint64_t seed = 1234;
    const int sizes[][2] = {{16, 16}, {33, 20}, {64, 48}, {9, 70}};
    const int density[] = {10, 30, 50, 70};
    for (int si = 0; si < 4; si++)
        for (int di = 0; di < 4; di++) {
            int w = sizes[si][0], h = sizes[si][1];
            uint8_t *m = malloc((size_t)w * h);
            assert_non_null(m);
            for (int i = 0; i < w * h; i++)
                m[i] = (int)(rng_next(&seed) % 100) < density[di];
            gs_contours *c = check_mask(m, w, h);
            gs_contours_destroy(&c);
            free(m);
        }
}

static void bad_arguments(void **state)
{
    (void)state;
    uint8_t m[4] = {0};
    assert_null(gs_contours_new(NULL, 2, 2));
    assert_null(gs_contours_new(m, 0, 2));
    assert_non_null(strstr(gs_error_get(), "contours"));
    gs_contours *c = gs_contours_new(m, 2, 2);
    assert_non_null(c);
    assert_int_equal(gs_contours_rasterize(c, 0, 2, m), -1);
    assert_int_equal(gs_contours_rasterize(NULL, 2, 2, m), -1);
    gs_contours_destroy(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(square),           cmocka_unit_test(l_shape_and_border),
        cmocka_unit_test(ring_with_hole),   cmocka_unit_test(touching_diagonals),
        cmocka_unit_test(many_small_blobs), cmocka_unit_test(bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
