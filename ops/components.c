#include "ops/components.h"

#include <stdlib.h>
#include <string.h>

#include "ops/error.h"

static int check_args(const uint8_t *mask, int w, int h, const void *labels)
{
    if (!mask)
        return gs_error_set("components: mask is NULL");
    if (!labels)
        return gs_error_set("components: label buffer is NULL");
    if (w <= 0 || h <= 0)
        return gs_error_set("components: mask size %dx%d is not positive", w, h);
    if ((int64_t)w * h > INT32_MAX)
        return gs_error_set("components: %dx%d mask has more than %d pixels", w, h, INT32_MAX);
    return 0;
}

/* Counts pixels per label into a fresh n+1 array; NULL if out of memory. */
static int64_t *count_areas(const int32_t *labels, size_t npx, int32_t n)
{
    int64_t *a = calloc((size_t)n + 1, sizeof *a);
    if (!a)
        return NULL;
    for (size_t i = 0; i < npx; i++)
        a[labels[i]]++;
    return a;
}

/* The foreground test differs only in polarity for holes; `want` is 1 for foreground
 * components, 0 for background ones. */
static int is_on(const uint8_t *mask, size_t i, int want)
{
    return (mask[i] != 0) == want;
}

/* Reference: scan in raster order and flood every unlabelled pixel's component from an explicit
 * stack (a pixel is labelled when pushed, so the stack never exceeds w*h). `conn` is 4 or 8. */
static int label_ref(const uint8_t *mask, int w, int h, int conn, int want, int32_t *labels,
                     int64_t **areas)
{
    if (areas)
        *areas = NULL;
    if (check_args(mask, w, h, labels))
        return -1;
    const size_t npx = (size_t)w * (size_t)h;
    int32_t *stack = malloc(sizeof *stack * npx);
    if (!stack)
        return gs_error_set("components: out of memory for a %dx%d mask", w, h);
    memset(labels, 0, sizeof *labels * npx);
    static const int dx8[8] = {-1, 0, 1, -1, 1, -1, 0, 1};
    static const int dy8[8] = {-1, -1, -1, 0, 0, 1, 1, 1};
    static const int dx4[4] = {0, -1, 1, 0};
    static const int dy4[4] = {-1, 0, 0, 1};
    const int *dx = conn == 8 ? dx8 : dx4, *dy = conn == 8 ? dy8 : dy4;
    int32_t n = 0;
    for (size_t start = 0; start < npx; start++) {
        if (!is_on(mask, start, want) || labels[start])
            continue;
        n++;
        size_t top = 0;
        labels[start] = n;
        stack[top++] = (int32_t)start;
        while (top > 0) {
            int32_t p = stack[--top];
            int x = p % w, y = p / w;
            for (int k = 0; k < conn; k++) {
                int xx = x + dx[k], yy = y + dy[k];
                if (xx < 0 || xx >= w || yy < 0 || yy >= h)
                    continue;
                size_t q = (size_t)yy * w + xx;
                if (is_on(mask, q, want) && !labels[q]) {
                    labels[q] = n;
                    stack[top++] = (int32_t)q;
                }
            }
        }
    }
    free(stack);
    if (areas) {
        *areas = count_areas(labels, npx, n);
        if (!*areas)
            return gs_error_set("components: out of memory for %d areas", n);
    }
    return n;
}

/* Union-find over provisional labels; parents always point to smaller labels, so the root of a
 * set is its smallest label. */
static int32_t uf_find(int32_t *parent, int32_t a)
{
    while (parent[a] != a) {
        parent[a] = parent[parent[a]]; /* path halving */
        a = parent[a];
    }
    return a;
}

static int32_t uf_union(int32_t *parent, int32_t a, int32_t b)
{
    a = uf_find(parent, a);
    b = uf_find(parent, b);
    if (a < b) {
        parent[b] = a;
        return a;
    }
    parent[a] = b;
    return b;
}

/*
 * Fast: one raster pass gives each pixel a provisional label from its already-visited
 * neighbours (W, NW, N, NE for 8-connectivity; W, N for 4), recording equivalences in a
 * union-find; a second pass replaces provisional labels by final ones, numbered when a set is
 * first met in raster order, which is the order the flood fill numbers components in.
 * A new provisional label needs a background (or border) pixel to its west, so there are at
 * most ceil(w/2) per row.
 */
static int label_fast(const uint8_t *mask, int w, int h, int conn, int want, int32_t *labels,
                      int64_t **areas)
{
    if (areas)
        *areas = NULL;
    if (check_args(mask, w, h, labels))
        return -1;
    const size_t npx = (size_t)w * (size_t)h;
    const size_t maxlab = ((size_t)w + 1) / 2 * (size_t)h + 1;
    int32_t *parent = malloc(sizeof *parent * maxlab);
    int32_t *final = calloc(maxlab, sizeof *final);
    if (!parent || !final) {
        free(parent);
        free(final);
        return gs_error_set("components: out of memory for a %dx%d mask", w, h);
    }
    int32_t next = 1;
    parent[0] = 0;
    for (int y = 0; y < h; y++) {
        const uint8_t *m = mask + (size_t)y * w;
        int32_t *l = labels + (size_t)y * w;
        const int32_t *up = y > 0 ? l - w : NULL;
        for (int x = 0; x < w; x++) {
            if ((m[x] != 0) != want) {
                l[x] = 0;
                continue;
            }
            int32_t lab = 0;
            /* Neighbour labels are already roots or chains; union merges them. */
            if (x > 0 && l[x - 1])
                lab = l[x - 1];
            if (up) {
                int32_t cand[3] = {up[x], conn == 8 && x > 0 ? up[x - 1] : 0,
                                   conn == 8 && x + 1 < w ? up[x + 1] : 0};
                for (int k = 0; k < 3; k++)
                    if (cand[k])
                        lab = lab ? uf_union(parent, lab, cand[k]) : cand[k];
            }
            if (!lab) {
                GS_ASSERT((size_t)next < maxlab);
                lab = next;
                parent[next] = next;
                next++;
            }
            l[x] = lab;
        }
    }
    int32_t n = 0;
    for (size_t i = 0; i < npx; i++) {
        if (!labels[i])
            continue;
        int32_t root = uf_find(parent, labels[i]);
        if (!final[root])
            final[root] = ++n;
        labels[i] = final[root];
    }
    free(final);
    free(parent);
    if (areas) {
        *areas = count_areas(labels, npx, n);
        if (!*areas)
            return gs_error_set("components: out of memory for %d areas", n);
    }
    return n;
}

int gs_components_label(const uint8_t *mask, int w, int h, int32_t *labels, int64_t **areas)
{
    return label_fast(mask, w, h, 8, 1, labels, areas);
}

int gs_components_label_ref(const uint8_t *mask, int w, int h, int32_t *labels, int64_t **areas)
{
    return label_ref(mask, w, h, 8, 1, labels, areas);
}

int gs_remove_small_components(uint8_t *mask, int w, int h, int64_t min_area)
{
    if (w <= 0 || h <= 0)
        return gs_error_set("components: mask size %dx%d is not positive", w, h);
    int32_t *labels = malloc(sizeof *labels * (size_t)w * (size_t)h);
    if (!labels)
        return gs_error_set("components: out of memory for a %dx%d mask", w, h);
    int64_t *areas = NULL;
    int n = gs_components_label(mask, w, h, labels, &areas);
    if (n < 0)
        goto free_labels;
    int kept = 0;
    for (int i = 1; i <= n; i++)
        kept += areas[i] >= min_area;
    for (size_t i = 0; i < (size_t)w * (size_t)h; i++)
        mask[i] = (uint8_t)(labels[i] && areas[labels[i]] >= min_area);
    n = kept;

free_labels:
    free(areas);
    free(labels);
    return n;
}

int gs_fill_small_holes(uint8_t *mask, int w, int h, int64_t max_hole)
{
    if (w <= 0 || h <= 0)
        return gs_error_set("components: mask size %dx%d is not positive", w, h);
    int ret = -1;
    const size_t npx = (size_t)w * (size_t)h;
    int32_t *labels = malloc(sizeof *labels * npx);
    int64_t *areas = NULL;
    uint8_t *border = NULL;
    if (!labels) {
        gs_error_set("components: out of memory for a %dx%d mask", w, h);
        goto free_all;
    }
    int n = label_fast(mask, w, h, 4, 0, labels, &areas);
    if (n < 0)
        goto free_all;
    border = calloc((size_t)n + 1, 1);
    if (!border) {
        gs_error_set("components: out of memory for %d holes", n);
        goto free_all;
    }
    for (int x = 0; x < w; x++) {
        border[labels[x]] = 1;
        border[labels[(size_t)(h - 1) * w + x]] = 1;
    }
    for (int y = 0; y < h; y++) {
        border[labels[(size_t)y * w]] = 1;
        border[labels[(size_t)y * w + w - 1]] = 1;
    }
    int filled = 0;
    for (int i = 1; i <= n; i++)
        filled += !border[i] && areas[i] < max_hole;
    for (size_t i = 0; i < npx; i++) {
        int32_t l = labels[i];
        mask[i] = (uint8_t)(!l || (!border[l] && areas[l] < max_hole));
    }
    ret = filled;

free_all:
    free(border);
    free(areas);
    free(labels);
    return ret;
}
