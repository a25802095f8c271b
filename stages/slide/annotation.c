#include "stages/slide/annotation.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/contours.h"
#include "ops/error.h"
#include "stages/runtime/fileio.h"
#include "stages/slide/report_files.h"

#define MAX_FILE (256u << 20)

typedef struct {
    double *xy; /* n points (x, y) */
    size_t n;
} ring;

typedef struct {
    ring *rings; /* [0] the outline, then holes */
    size_t n;
} polygon;

typedef struct {
    json_t *feature; /* the input Feature (own reference) */
    polygon *polys;
    size_t n_polys;
    size_t file_index;
    char cls[256];
    double x0, y0, x1, y1;
} feature;

struct gs_annotations {
    feature *f;
    size_t n, cap;
    char **msg;
    size_t n_msg;
};

static void free_polys(polygon *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t r = 0; r < p[i].n; r++)
            free(p[i].rings[r].xy);
        free(p[i].rings);
    }
    free(p);
}

void gs_annotations_destroy(gs_annotations **ap)
{
    if (!ap || !*ap)
        return;
    gs_annotations *a = *ap;
    for (size_t i = 0; i < a->n; i++) {
        json_decref(a->f[i].feature);
        free_polys(a->f[i].polys, a->f[i].n_polys);
    }
    for (size_t i = 0; i < a->n_msg; i++)
        free(a->msg[i]);
    free(a->msg);
    free(a->f);
    free(a);
    *ap = NULL;
}

static int add_message(gs_annotations *a, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    char **grown = realloc(a->msg, (a->n_msg + 1) * sizeof *grown);
    if (!grown)
        return gs_error_set("out of memory");
    a->msg = grown;
    if (!(a->msg[a->n_msg] = strdup(buf)))
        return gs_error_set("out of memory");
    a->n_msg++;
    return 0;
}

/* Parses a ring (array of [x, y, ...] positions) into r; a closing point equal to the first is
 * dropped. Returns 0, or 1 with why in `why`. */
static int parse_ring(json_t *j, ring *r, char *why, size_t cap)
{
    if (!json_is_array(j)) {
        snprintf(why, cap, "a ring is not an array of positions");
        return 1;
    }
    size_t n = json_array_size(j);
    if (!(r->xy = malloc((n ? n : 1) * 2 * sizeof *r->xy))) {
        snprintf(why, cap, "out of memory");
        return 1;
    }
    r->n = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *p = json_array_get(j, i);
        json_t *x = json_array_get(p, 0), *y = json_array_get(p, 1);
        if (!json_is_array(p) || !json_is_number(x) || !json_is_number(y) ||
            !(fabs(json_number_value(x)) <= GS_ANNOTATION_MAX_COORD) ||
            !(fabs(json_number_value(y)) <= GS_ANNOTATION_MAX_COORD)) {
            snprintf(why, cap, "position %zu of a ring is not [x, y] with numbers within +-%g", i,
                     GS_ANNOTATION_MAX_COORD);
            return 1;
        }
        r->xy[2 * r->n] = json_number_value(x);
        r->xy[2 * r->n + 1] = json_number_value(y);
        r->n++;
    }
    if (r->n > 1 && r->xy[0] == r->xy[2 * (r->n - 1)] && r->xy[1] == r->xy[2 * (r->n - 1) + 1])
        r->n--;
    if (r->n < 3) {
        snprintf(why, cap, "a ring has fewer than 3 distinct points");
        return 1;
    }
    return 0;
}

/* Parses a Polygon's coordinates (array of rings). Returns 0 or 1 with why. */
static int parse_polygon(json_t *j, polygon *p, char *why, size_t cap)
{
    p->n = 0;
    if (!json_is_array(j) || json_array_size(j) == 0) {
        snprintf(why, cap, "a polygon has no rings");
        p->rings = NULL;
        return 1;
    }
    size_t n = json_array_size(j);
    if (!(p->rings = calloc(n, sizeof *p->rings))) {
        snprintf(why, cap, "out of memory");
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        p->n++;
        if (parse_ring(json_array_get(j, i), &p->rings[i], why, cap))
            return 1;
    }
    return 0;
}

/* Reads one Feature into f. Returns 0, or 1 with why it cannot be used. */
static int parse_feature(json_t *j, feature *f, char *why, size_t cap)
{
    memset(f, 0, sizeof *f);
    if (!json_is_object(j) ||
        strcmp(json_string_value(json_object_get(j, "type")) ?: "", "Feature")) {
        snprintf(why, cap, "not a GeoJSON Feature");
        return 1;
    }
    json_t *g = json_object_get(j, "geometry");
    const char *type = json_string_value(json_object_get(g, "type"));
    json_t *coords = json_object_get(g, "coordinates");
    if (!type) {
        snprintf(why, cap, "no geometry");
        return 1;
    }
    int multi = !strcmp(type, "MultiPolygon");
    if (!multi && strcmp(type, "Polygon")) {
        snprintf(why, cap, "%.64s is not a Polygon or MultiPolygon", type);
        return 1;
    }
    size_t n = multi ? json_array_size(coords) : 1;
    if (n == 0 || (multi && !json_is_array(coords))) {
        snprintf(why, cap, "a MultiPolygon without polygons");
        return 1;
    }
    if (!(f->polys = calloc(n, sizeof *f->polys))) {
        snprintf(why, cap, "out of memory");
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        f->n_polys++;
        if (parse_polygon(multi ? json_array_get(coords, i) : coords, &f->polys[i], why, cap))
            return 1;
    }
    f->x0 = f->y0 = INFINITY;
    f->x1 = f->y1 = -INFINITY;
    for (size_t i = 0; i < f->n_polys; i++) {
        const ring *r = &f->polys[i].rings[0];
        for (size_t k = 0; k < r->n; k++) {
            f->x0 = fmin(f->x0, r->xy[2 * k]);
            f->x1 = fmax(f->x1, r->xy[2 * k]);
            f->y0 = fmin(f->y0, r->xy[2 * k + 1]);
            f->y1 = fmax(f->y1, r->xy[2 * k + 1]);
        }
    }
    json_t *props = json_object_get(j, "properties");
    const char *cls =
        json_string_value(json_object_get(json_object_get(props, "classification"), "name"));
    snprintf(f->cls, sizeof f->cls, "%s", cls ? cls : "");
    f->feature = json_incref(j);
    return 0;
}

static int take(gs_annotations *a, json_t *j, size_t index, const char *path)
{
    feature f;
    char why[256];
    if (parse_feature(j, &f, why, sizeof why)) {
        free_polys(f.polys, f.n_polys);
        return add_message(a, "%s: feature %zu: %s", path, index, why);
    }
    f.file_index = index;
    if (a->n == a->cap) {
        size_t cap = a->cap ? 2 * a->cap : 16;
        feature *grown = realloc(a->f, cap * sizeof *grown);
        if (!grown) {
            json_decref(f.feature);
            free_polys(f.polys, f.n_polys);
            return gs_error_set("out of memory");
        }
        a->f = grown;
        a->cap = cap;
    }
    a->f[a->n++] = f;
    return 0;
}

gs_annotations *gs_annotations_read(const char *path)
{
    size_t len;
    char *text = (char *)gs_read_file(path, MAX_FILE, &len);
    if (!text)
        return NULL;
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    free(text);
    if (!root) {
        gs_error_set("%s: not valid JSON: %s (line %d, column %d)", path, je.text, je.line,
                     je.column);
        return NULL;
    }
    gs_annotations *a = calloc(1, sizeof *a);
    if (!a) {
        json_decref(root);
        gs_error_set("out of memory");
        return NULL;
    }
    const char *type = json_string_value(json_object_get(root, "type"));
    json_t *list = NULL;
    if (json_is_array(root))
        list = root;
    else if (type && !strcmp(type, "FeatureCollection"))
        list = json_object_get(root, "features");
    int rc = 0;
    if (list) {
        if (!json_is_array(list)) {
            gs_error_set("%s: \"features\" is not an array", path);
            rc = -1;
        }
        for (size_t i = 0; rc == 0 && i < json_array_size(list); i++)
            rc = take(a, json_array_get(list, i), i, path);
    } else if (type && !strcmp(type, "Feature"))
        rc = take(a, root, 0, path);
    else {
        gs_error_set("%s: not a GeoJSON Feature, FeatureCollection or array of Features", path);
        rc = -1;
    }
    json_decref(root);
    if (rc != 0)
        gs_annotations_destroy(&a);
    return a;
}

gs_annotations *gs_annotations_read_on(const char *path, gs_slide *slide)
{
    int64_t ox, oy;
    if (gs_report_slide_origin(slide, &ox, &oy) < 0)
        return NULL;
    gs_annotations *a = gs_annotations_read(path);
    if (!a || (ox == 0 && oy == 0))
        return a;
    const double dx = (double)ox, dy = (double)oy;
    for (size_t i = 0; i < a->n; i++) {
        feature *f = &a->f[i];
        for (size_t p = 0; p < f->n_polys; p++)
            for (size_t r = 0; r < f->polys[p].n; r++)
                for (size_t k = 0; k < f->polys[p].rings[r].n; k++) {
                    f->polys[p].rings[r].xy[2 * k] += dx;
                    f->polys[p].rings[r].xy[2 * k + 1] += dy;
                }
        f->x0 += dx;
        f->x1 += dx;
        f->y0 += dy;
        f->y1 += dy;
    }
    return a;
}

size_t gs_annotations_count(const gs_annotations *a)
{
    return a->n;
}

const char *gs_annotations_class(const gs_annotations *a, size_t i)
{
    GS_ASSERT(i < a->n);
    return a->f[i].cls;
}

size_t gs_annotations_file_index(const gs_annotations *a, size_t i)
{
    GS_ASSERT(i < a->n);
    return a->f[i].file_index;
}

void gs_annotations_bounds(const gs_annotations *a, size_t i, double *x0, double *y0, double *x1,
                           double *y1)
{
    GS_ASSERT(i < a->n);
    *x0 = a->f[i].x0;
    *y0 = a->f[i].y0;
    *x1 = a->f[i].x1;
    *y1 = a->f[i].y1;
}

static double ring_area(const ring *r)
{
    double s = 0;
    for (size_t k = 0; k < r->n; k++) {
        size_t m = (k + 1) % r->n;
        s += r->xy[2 * k] * r->xy[2 * m + 1] - r->xy[2 * m] * r->xy[2 * k + 1];
    }
    return fabs(s) / 2;
}

double gs_annotations_area(const gs_annotations *a, size_t i)
{
    GS_ASSERT(i < a->n);
    double area = 0;
    for (size_t p = 0; p < a->f[i].n_polys; p++)
        for (size_t r = 0; r < a->f[i].polys[p].n; r++)
            area += (r == 0 ? 1 : -1) * ring_area(&a->f[i].polys[p].rings[r]);
    return area;
}

size_t gs_annotations_message_count(const gs_annotations *a)
{
    return a->n_msg;
}

const char *gs_annotations_message(const gs_annotations *a, size_t i)
{
    GS_ASSERT(i < a->n_msg);
    return a->msg[i];
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y ? 1 : 0;
}

int gs_annotations_fill(const gs_annotations *a, size_t k, double x0, double y0, double cell,
                        uint8_t *mask, int w, int h)
{
    if (k >= a->n || !mask || w <= 0 || h <= 0 || !(cell > 0))
        return gs_error_set("annotation fill: bad arguments");
    const feature *f = &a->f[k];
    size_t edges = 0;
    for (size_t p = 0; p < f->n_polys; p++)
        for (size_t r = 0; r < f->polys[p].n; r++)
            edges += f->polys[p].rings[r].n;
    double *xs = malloc((edges ? edges : 1) * sizeof *xs);
    if (!xs)
        return gs_error_set("out of memory");
    /* Scanlines through cell centres; even-odd within each polygon (outline and holes), so a
     * ring's orientation does not matter; polygons of a MultiPolygon are OR-ed. */
    for (int j = 0; j < h; j++) {
        double yc = y0 + (j + 0.5) * cell;
        for (size_t p = 0; p < f->n_polys; p++) {
            size_t nx = 0;
            for (size_t r = 0; r < f->polys[p].n; r++) {
                const ring *rg = &f->polys[p].rings[r];
                for (size_t e = 0; e < rg->n; e++) {
                    size_t m = (e + 1) % rg->n;
                    double ya = rg->xy[2 * e + 1], yb = rg->xy[2 * m + 1];
                    if ((ya <= yc) == (yb <= yc))
                        continue;
                    double xa = rg->xy[2 * e], xb = rg->xy[2 * m];
                    xs[nx++] = xa + (yc - ya) * (xb - xa) / (yb - ya);
                }
            }
            qsort(xs, nx, sizeof *xs, cmp_double);
            for (size_t q = 0; q + 1 < nx; q += 2) {
                /* Cells whose centre x0 + (i + 0.5) * cell lies in [xs[q], xs[q + 1]). */
                double lo = ceil((xs[q] - x0) / cell - 0.5),
                       hi = ceil((xs[q + 1] - x0) / cell - 0.5);
                int i0 = lo < 0 ? 0 : lo > w ? w : (int)lo;
                int i1 = hi < 0 ? 0 : hi > w ? w : (int)hi;
                if (i1 > i0)
                    memset(mask + (size_t)j * w + i0, 1, (size_t)(i1 - i0));
            }
        }
    }
    free(xs);
    return 0;
}

int64_t gs_annotations_slide_mask(const gs_annotations *a, const char *only_class, int64_t slide_w,
                                  int64_t slide_h, const uint8_t *tissue, int tw, int th,
                                  double cell, uint8_t *mask, int w, int h)
{
    if (slide_w <= 0 || slide_h <= 0 || (tissue && (tw <= 0 || th <= 0)))
        return gs_error_set("annotation mask: bad slide or tissue size");
    memset(mask, 0, (size_t)w * h);
    for (size_t k = 0; k < a->n; k++)
        if ((!only_class || !strcmp(a->f[k].cls, only_class)) &&
            gs_annotations_fill(a, k, 0, 0, cell, mask, w, h) != 0)
            return -1;
    int64_t n = 0;
    double mx = (double)tw / (double)slide_w, my = (double)th / (double)slide_h;
    for (int j = 0; j < h; j++)
        for (int i = 0; i < w; i++) {
            uint8_t *v = &mask[(size_t)j * w + i];
            if (*v && tissue) {
                int tx = (int)floor((i + 0.5) * cell * mx), ty = (int)floor((j + 0.5) * cell * my);
                *v = tx >= 0 && ty >= 0 && tx < tw && ty < th && tissue[(size_t)ty * tw + tx];
            }
            n += *v;
        }
    return n;
}

/* ---- refinement ----------------------------------------------------------------------------- */

/* The refined geometry of feature k from its grid mask: a Polygon for one region, else a
 * MultiPolygon; coordinates x0 + i * cell, y0 + j * cell for grid point (i, j). NULL with the error
 * when out of memory; *area gets the refined area (level-0 px^2). An empty mask gives a NULL
 * geometry and no error. */
static json_t *traced_geometry(const uint8_t *mask, int w, int h, double x0, double y0, double cell,
                               double *area)
{
    *area = 0;
    gs_contours *c = gs_contours_new(mask, w, h);
    if (!c)
        return NULL;
    size_t n = gs_contours_count(c);
    json_t *polys = json_array();
    for (size_t i = 0; polys && i < n; i++) {
        const gs_polygon *p = gs_contours_polygon(c, i);
        *area += gs_polygon_area(p) * cell * cell;
        json_t *rings = json_array();
        for (size_t r = 0; rings && r <= p->n_holes; r++) {
            const gs_ring *g = r == 0 ? &p->outer : &p->holes[r - 1];
            json_t *pts = json_array();
            for (size_t k = 0; pts && k <= g->n; k++) {
                const gs_point *q = &g->pts[k % g->n]; /* GeoJSON rings repeat the first point */
                json_array_append_new(pts, json_pack("[f, f]", x0 + q->x * cell, y0 + q->y * cell));
            }
            json_array_append_new(rings, pts);
        }
        json_array_append_new(polys, rings);
    }
    gs_contours_destroy(&c);
    if (!polys || n == 0) {
        json_decref(polys);
        if (n)
            gs_error_set("out of memory");
        return NULL;
    }
    if (n == 1) {
        json_t *one = json_incref(json_array_get(polys, 0));
        json_decref(polys);
        return json_pack("{s:s, s:o}", "type", "Polygon", "coordinates", one);
    }
    return json_pack("{s:s, s:o}", "type", "MultiPolygon", "coordinates", polys);
}

int gs_refine_file(gs_slide *slide, const char *in_path, const char *out_path,
                   const gs_tissue_options *o, gs_refine_stats *st)
{
    gs_refine_stats s = {0};
    gs_tissue_options defaults;
    if (!o) {
        gs_tissue_options_default(&defaults);
        o = &defaults;
    }
    int64_t ox, oy;
    gs_annotations *a = gs_annotations_read_on(in_path, slide);
    if (!a || gs_report_slide_origin(slide, &ox, &oy) < 0) {
        gs_annotations_destroy(&a);
        return -1;
    }
    for (size_t i = 0; i < a->n_msg; i++)
        fprintf(stderr, "%s\n", a->msg[i]);
    s.read = a->n;
    s.skipped = a->n_msg;
    int rc = -1;
    json_t *out = json_pack("{s:s, s:[]}", "type", "FeatureCollection", "features");
    uint8_t *grid = NULL;
    gs_plan *plan = gs_plan_new(slide, o);
    if (!plan || !out) {
        gs_error_prefix("%s: tissue mask", gs_slide_path(slide));
        goto free_all;
    }
    int mw, mh;
    const uint8_t *tissue = gs_plan_mask(plan, &mw, &mh);
    int64_t w0, h0;
    gs_slide_level_size(slide, 0, &w0, &h0);
    double mx = (double)mw / (double)w0, my = (double)mh / (double)h0; /* mask px per level-0 */
    double mpp = gs_slide_mpp_known(slide) ? gs_slide_mpp(slide) : 0;
    /* At most 1 um per cell keeps the outline where it crosses tissue (the tissue edge itself
     * is only as fine as the mask's 4 um). Without an mpp, 2 level-0 pixels. */
    double fine = mpp > 0 ? fmax(1.0 / mpp, 1.0) : 2.0;
    for (size_t k = 0; k < a->n; k++) {
        feature *f = &a->f[k];
        double bw = f->x1 - f->x0, bh = f->y1 - f->y0;
        double cell = fmax(fine, fmax(bw, bh) / GS_ANNOTATION_MAX_GRID);
        int gw = (int)ceil(bw / cell), gh = (int)ceil(bh / cell);
        gw = gw < 1 ? 1 : gw;
        gh = gh < 1 ? 1 : gh;
        uint8_t *g = calloc((size_t)gw * gh, 1);
        if (!g) {
            gs_error_set("out of memory for a %dx%d grid", gw, gh);
            goto free_all;
        }
        free(grid);
        grid = g;
        if (gs_annotations_fill(a, k, f->x0, f->y0, cell, grid, gw, gh) != 0)
            goto free_all;
        for (int j = 0; j < gh; j++) {
            int ty = (int)floor((f->y0 + (j + 0.5) * cell) * my);
            for (int i = 0; i < gw; i++) {
                int tx = (int)floor((f->x0 + (i + 0.5) * cell) * mx);
                uint8_t *v = &grid[(size_t)j * gw + i];
                if (*v &&
                    (tx < 0 || ty < 0 || tx >= mw || ty >= mh || !tissue[(size_t)ty * mw + tx]))
                    *v = 0;
            }
        }
        double before = gs_annotations_area(a, k), after;
        gs_error_clear();
        json_t *geom =
            traced_geometry(grid, gw, gh, f->x0 - (double)ox, f->y0 - (double)oy, cell, &after);
        if (!geom) {
            if (gs_error_get()[0])
                goto free_all;
            fprintf(stderr, "%s: feature %zu: no tissue inside it on %s: dropped\n", in_path,
                    f->file_index, gs_slide_path(slide));
            s.emptied++;
            continue;
        }
        json_t *feat = json_deep_copy(f->feature);
        json_t *props = json_object_get(feat, "properties");
        if (!json_is_object(props)) {
            props = json_object();
            json_object_set_new(feat, "properties", props);
        }
        json_t *meas = json_object_get(props, "measurements");
        if (!json_is_object(meas)) {
            meas = json_object();
            json_object_set_new(props, "measurements", meas);
        }
        json_object_set_new(meas, "area_before_px2", json_real(round(before)));
        json_object_set_new(meas, "area_after_px2", json_real(round(after)));
        if (mpp > 0) {
            json_object_set_new(meas, "area_before_um2", json_real(round(before * mpp * mpp)));
            json_object_set_new(meas, "area_after_um2", json_real(round(after * mpp * mpp)));
        }
        json_object_set_new(feat, "geometry", geom);
        if (json_array_append_new(json_object_get(out, "features"), feat) != 0) {
            gs_error_set("out of memory");
            goto free_all;
        }
        s.written++;
        s.area_before += before;
        s.area_after += after;
    }
    char *text = json_dumps(out, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!text) {
        gs_error_set("out of memory");
        goto free_all;
    }
    rc = gs_write_atomic(out_path, text, strlen(text), 0644);
    free(text);
free_all:
    free(grid);
    json_decref(out);
    gs_plan_destroy(&plan);
    gs_annotations_destroy(&a);
    if (rc == 0 && st)
        *st = s;
    return rc;
}
