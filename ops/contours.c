#include "ops/contours.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops/components.h"
#include "ops/error.h"

struct gs_contours {
    gs_polygon *polys;
    size_t n;
};

/* Edge directions on the corner grid: right, down, left, up. The region lies on side
 * (d + 1) & 3 of every edge (e.g. below a rightward edge). Only a saddle corner has two
 * leaving edges: bits 0 and 2 (region pixels top-left and bottom-right) or 1 and 3. */
static const int DX[4] = {1, 0, -1, 0};
static const int DY[4] = {0, 1, 0, -1};

typedef struct {
    gs_point *pts;
    size_t n, cap;
} point_buf;

static int push(point_buf *b, double x, double y)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 16;
        gs_point *p = realloc(b->pts, cap * sizeof *p);
        if (!p)
            return gs_error_set("contours: out of memory for a ring of %zu points", b->n);
        b->pts = p;
        b->cap = cap;
    }
    b->pts[b->n].x = x;
    b->pts[b->n].y = y;
    b->n++;
    return 0;
}

double gs_ring_area(const gs_ring *r)
{
    double s = 0;
    for (size_t i = 0; i < r->n; i++) {
        const gs_point *a = &r->pts[i], *b = &r->pts[(i + 1) % r->n];
        s += a->x * b->y - b->x * a->y;
    }
    return s / 2;
}

double gs_polygon_area(const gs_polygon *p)
{
    double a = gs_ring_area(&p->outer);
    for (size_t i = 0; i < p->n_holes; i++)
        a += gs_ring_area(&p->holes[i]); /* negative */
    return a;
}

static void free_polys(gs_polygon *polys, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(polys[i].outer.pts);
        for (size_t j = 0; j < polys[i].n_holes; j++)
            free(polys[i].holes[j].pts);
        free(polys[i].holes);
    }
    free(polys);
}

void gs_contours_destroy(gs_contours **c)
{
    if (!c || !*c)
        return;
    free_polys((*c)->polys, (*c)->n);
    free(*c);
    *c = NULL;
}

size_t gs_contours_count(const gs_contours *c)
{
    GS_ASSERT(c);
    return c->n;
}

const gs_polygon *gs_contours_polygon(const gs_contours *c, size_t i)
{
    GS_ASSERT(c && i < c->n);
    return &c->polys[i];
}

static int add_hole(gs_polygon *p, gs_ring r)
{
    gs_ring *h = realloc(p->holes, (p->n_holes + 1) * sizeof *h);
    if (!h)
        return gs_error_set("contours: out of memory for holes");
    p->holes = h;
    p->holes[p->n_holes++] = r;
    return 0;
}

gs_contours *gs_contours_new(const uint8_t *mask, int w, int h)
{
    if (!mask || w <= 0 || h <= 0) {
        gs_error_set("contours: bad mask %p of %dx%d", (const void *)mask, w, h);
        return NULL;
    }
    if ((int64_t)(w + 1) * (h + 1) > INT32_MAX) {
        gs_error_set("contours: mask of %dx%d pixels is too large", w, h);
        return NULL;
    }
    gs_contours *c = calloc(1, sizeof *c);
    int32_t *labels = malloc(sizeof(int32_t) * (size_t)w * h);
    const size_t vw = (size_t)w + 1, nv = vw * ((size_t)h + 1);
    uint8_t *out = calloc(nv, 1), *used = calloc(nv, 1);
    int64_t *areas = NULL;
    point_buf buf = {0};
    if (!c || !labels || !out || !used) {
        gs_error_set("contours: out of memory for a %dx%d mask", w, h);
        goto fail_free_buffers;
    }
    int n = gs_components_label(mask, w, h, labels, &areas);
    if (n < 0)
        goto fail_free_buffers;
    c->polys = calloc(n > 0 ? (size_t)n : 1, sizeof *c->polys);
    if (!c->polys) {
        gs_error_set("contours: out of memory for %d polygons", n);
        goto fail_free_buffers;
    }
    c->n = (size_t)n;
    for (int i = 0; i < n; i++) {
        c->polys[i].label = i + 1;
        c->polys[i].pixels = areas[i + 1];
    }

    /* Directed boundary edges, each stored as a bit at its start corner, oriented so that the
     * region is on side (d + 1) & 3: outer rings come out with a positive shoelace sum. */
#define FG(xx, yy) ((xx) >= 0 && (yy) >= 0 && (xx) < w && (yy) < h && mask[(size_t)(yy)*w + (xx)])
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            if (!mask[(size_t)y * w + x])
                continue;
            if (!FG(x, y - 1))
                out[(size_t)y * vw + x] |= 1u << 0;
            if (!FG(x + 1, y))
                out[(size_t)y * vw + x + 1] |= 1u << 1;
            if (!FG(x, y + 1))
                out[(size_t)(y + 1) * vw + x + 1] |= 1u << 2;
            if (!FG(x - 1, y))
                out[(size_t)(y + 1) * vw + x] |= 1u << 3;
        }
#undef FG

    for (size_t sv = 0; sv < nv; sv++) {
        while (out[sv] & ~used[sv]) {
            const unsigned free_bits = out[sv] & ~used[sv];
            const int sd = __builtin_ctz(free_bits);
            const int sx = (int)(sv % vw), sy = (int)(sv / vw);
            /* The region pixel on the inner side of the first edge names the ring's owner. */
            int px = sx - (sd == 1 || sd == 2), py = sy - (sd == 2 || sd == 3);
            GS_ASSERT(px >= 0 && py >= 0 && px < w && py < h);
            const int32_t label = labels[(size_t)py * w + px];
            GS_ASSERT(label >= 1 && label <= n);
            gs_polygon *poly = &c->polys[label - 1];

            buf.n = 0;
            int x = sx, y = sy, d = sd, saddles = 0;
            used[sv] |= (uint8_t)(1u << sd);
            for (;;) {
                x += DX[d];
                y += DY[d];
                const size_t v = (size_t)y * vw + (size_t)x;
                const unsigned bits = out[v];
                int nd, saddle = 0;
                if (bits == 5u || bits == 10u) {
                    /* Two edges leave this corner: a saddle. Turning away from the region
                     * side continues onto the diagonal pixel: 8-connected regions. */
                    nd = (d + 3) & 3;
                    saddle = 1;
                } else {
                    nd = __builtin_ctz(bits);
                }
                GS_ASSERT(bits & (1u << nd));
                if (saddle) {
                    /* Cut the corner: stop e short of it and resume e after it, so this pass
                     * stays clear of the other pass through the same corner. */
                    const double e = GS_CONTOUR_SADDLE_OFFSET;
                    if (push(&buf, x - e * DX[d], y - e * DY[d]) < 0 ||
                        push(&buf, x + e * DX[nd], y + e * DY[nd]) < 0)
                        goto fail_free_buffers;
                    saddles++;
                } else if (nd != d && push(&buf, x, y) < 0) {
                    goto fail_free_buffers;
                }
                if (v == sv && nd == sd)
                    break;
                GS_ASSERT(!(used[v] & (1u << nd)));
                used[v] |= (uint8_t)(1u << nd);
                d = nd;
            }
            GS_ASSERT(buf.n >= 4);
            gs_ring r = {.pts = malloc(buf.n * sizeof(gs_point)), .n = buf.n};
            if (!r.pts) {
                gs_error_set("contours: out of memory for a ring of %zu points", buf.n);
                goto fail_free_buffers;
            }
            memcpy(r.pts, buf.pts, buf.n * sizeof(gs_point));
            /* Each saddle is passed twice, by one or two rings of the same region; the sum
             * is halved once every ring is traced. */
            poly->saddles += saddles;
            if (gs_ring_area(&r) > 0) {
                GS_ASSERT(poly->outer.pts == NULL);
                poly->outer = r;
            } else if (add_hole(poly, r) < 0) {
                free(r.pts);
                goto fail_free_buffers;
            }
        }
    }
    for (size_t i = 0; i < c->n; i++) {
        GS_ASSERT(c->polys[i].outer.pts != NULL);
        GS_ASSERT(c->polys[i].saddles % 2 == 0);
        c->polys[i].saddles /= 2;
    }
    free(buf.pts);
    free(areas);
    free(used);
    free(out);
    free(labels);
    return c;

fail_free_buffers:
    free(buf.pts);
    free(areas);
    free(used);
    free(out);
    free(labels);
    if (c)
        free_polys(c->polys, c->n);
    free(c);
    return NULL;
}

int gs_contours_rasterize(const gs_contours *c, int w, int h, uint8_t *mask)
{
    if (!c || !mask || w <= 0 || h <= 0)
        return gs_error_set("contours: bad rasterize arguments (%dx%d)", w, h);
    memset(mask, 0, (size_t)w * h);
    int *wind = malloc(sizeof(int) * ((size_t)w + 1));
    if (!wind)
        return gs_error_set("contours: out of memory");
    for (int y = 0; y < h; y++) {
        const double cy = y + 0.5;
        /* wind[x] accumulates the winding change at the first pixel centre right of a
         * crossing; a prefix sum then gives each centre's winding number. */
        memset(wind, 0, sizeof(int) * ((size_t)w + 1));
        for (size_t i = 0; i < c->n; i++) {
            const gs_polygon *p = &c->polys[i];
            for (size_t k = 0; k <= p->n_holes; k++) {
                const gs_ring *r = k == 0 ? &p->outer : &p->holes[k - 1];
                for (size_t j = 0; j < r->n; j++) {
                    const gs_point *a = &r->pts[j], *b = &r->pts[(j + 1) % r->n];
                    if ((a->y <= cy) == (b->y <= cy))
                        continue;
                    double xc = a->x + (cy - a->y) * (b->x - a->x) / (b->y - a->y);
                    /* Centres are at k + 0.5 and crossings never fall on them (vertices
                     * are on corners or 1/16 px from them). */
                    int first = (int)floor(xc - 0.5) + 1;
                    if (first < 0)
                        first = 0;
                    if (first > w)
                        first = w;
                    wind[first] += b->y > a->y ? 1 : -1;
                }
            }
        }
        int acc = 0;
        for (int x = 0; x < w; x++) {
            acc += wind[x];
            mask[(size_t)y * w + x] = acc != 0;
        }
    }
    free(wind);
    return 0;
}
