#include "stages/slide/deepzoom.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

#include "ops/error.h"
#include "ops/resample.h"
#include "stages/runtime/fileio.h"
#include "stages/slide/reader.h"
#include "stages/slide/report_files.h"

/* A cached tile: chained in its hash bucket and in the recency list (head = newest). */
typedef struct tile_entry {
    int level;
    int64_t col, row;
    uint8_t *jpeg;
    size_t len;
    struct tile_entry *next_in_bucket;
    struct tile_entry *newer, *older;
} tile_entry;

#define CACHE_BUCKETS 1024

/* One Deep Zoom level's geometry. */
typedef struct {
    int64_t w, h;       /* pixels */
    int64_t cols, rows; /* tiles */
    int slide_level;    /* where its tiles are read */
    double l_z_ds;      /* slide-level pixels per Deep Zoom pixel */
} dz_level;

struct gs_deepzoom {
    gs_deepzoom_options opt;
    /* Slide levels as shown: sizes within the bounds, and OpenSlide's downsamples. */
    int nslide;
    int64_t l_w[GS_DEEPZOOM_MAX_SLIDE_LEVELS], l_h[GS_DEEPZOOM_MAX_SLIDE_LEVELS];
    double l_ds[GS_DEEPZOOM_MAX_SLIDE_LEVELS];
    int64_t off_x, off_y; /* level-0 corner of the bounds */
    int nlevels;
    dz_level *levels;

    gs_slide *slide; /* NULL for a layout without a slide */
    pthread_mutex_t slide_lock;

    pthread_mutex_t cache_lock;
    tile_entry *buckets[CACHE_BUCKETS];
    tile_entry *newest, *oldest;
    size_t cache_bytes, cache_entries;
    uint64_t hits, misses;
};

void gs_deepzoom_options_default(gs_deepzoom_options *o)
{
    o->tile_size = 254;
    o->overlap = 1;
    o->jpeg_quality = 75;
    o->cache_bytes = (size_t)32 << 20;
    o->read_budget_s = 30;
    o->quickhash = NULL;
}

/* OpenSlide 3.4's openslide_get_best_level_for_downsample(): the last level whose downsample
 * is not above d (level 0 when d is below level 0's). */
static int best_level_for_downsample(const gs_deepzoom *dz, double d)
{
    if (d < dz->l_ds[0])
        return 0;
    for (int i = 1; i < dz->nslide; i++)
        if (d < dz->l_ds[i])
            return i - 1;
    return dz->nslide - 1;
}

/* A bounds size: a decimal integer >= 1, or the level-0 size when absent. */
static int parse_size(const char *name, const char *text, int64_t dflt, int64_t *out)
{
    *out = dflt;
    if (!text)
        return 0;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (!*text || *end || errno || v < 1 || text[0] == '+' || text[0] == ' ')
        return gs_error_set("%s \"%s\" is not a pixel size", name, text);
    *out = v;
    return 0;
}

/* The geometry of DeepZoomGenerator(limit_bounds=True), with Python's float arithmetic in the
 * same order so the numbers agree exactly. */
static int build_geometry(gs_deepzoom *dz, const gs_deepzoom_layout *ly)
{
    if (ly->levels < 1 || ly->levels > GS_DEEPZOOM_MAX_SLIDE_LEVELS)
        return gs_error_set("deep zoom: %d slide levels", ly->levels);
    if (ly->width[0] < 1 || ly->height[0] < 1)
        return gs_error_set("deep zoom: empty slide");
    if (gs_report_origin(ly->bounds_x, ly->bounds_y, &dz->off_x, &dz->off_y) < 0)
        return -1;
    int64_t bw, bh;
    if (parse_size("openslide.bounds-width", ly->bounds_width, ly->width[0], &bw) < 0 ||
        parse_size("openslide.bounds-height", ly->bounds_height, ly->height[0], &bh) < 0)
        return -1;
    /* OpenSlide's bounds lie inside level 0; anything else is a damaged file, and would make the
     * level sizes below overflow their conversion back to integers. */
    if (bw > ly->width[0] || bh > ly->height[0] || dz->off_x >= ly->width[0] ||
        dz->off_y >= ly->height[0])
        return gs_error_set("deep zoom: bounds %" PRId64 ",%" PRId64 " %" PRId64 "x%" PRId64
                            " do not fit the %" PRId64 "x%" PRId64 " slide",
                            dz->off_x, dz->off_y, bw, bh, ly->width[0], ly->height[0]);
    const double sx = (double)bw / (double)ly->width[0];
    const double sy = (double)bh / (double)ly->height[0];
    dz->nslide = ly->levels;
    for (int i = 0; i < ly->levels; i++) {
        dz->l_w[i] = (int64_t)ceil((double)ly->width[i] * sx);
        dz->l_h[i] = (int64_t)ceil((double)ly->height[i] * sy);
        dz->l_ds[i] = ly->downsample[i];
    }
    /* Levels from the full size down to 1 x 1, halving with ceil. */
    int n = 1;
    for (int64_t w = dz->l_w[0], h = dz->l_h[0]; w > 1 || h > 1; n++) {
        w = w > 1 ? (w + 1) / 2 : 1;
        h = h > 1 ? (h + 1) / 2 : 1;
    }
    dz->levels = calloc((size_t)n, sizeof *dz->levels);
    if (!dz->levels)
        return gs_error_set("deep zoom: out of memory");
    dz->nlevels = n;
    int64_t w = dz->l_w[0], h = dz->l_h[0];
    const int64_t t = dz->opt.tile_size;
    for (int k = n - 1; k >= 0; k--) {
        dz_level *L = &dz->levels[k];
        L->w = w;
        L->h = h;
        L->cols = (w + t - 1) / t;
        L->rows = (h + t - 1) / t;
        double l0_z_ds = ldexp(1.0, n - k - 1);
        L->slide_level = best_level_for_downsample(dz, l0_z_ds);
        L->l_z_ds = l0_z_ds / dz->l_ds[L->slide_level];
        w = w > 1 ? (w + 1) / 2 : 1;
        h = h > 1 ? (h + 1) / 2 : 1;
    }
    return 0;
}

static int check_options(const gs_deepzoom_options *o)
{
    if (o->tile_size < 1 || o->tile_size > 4096 || o->overlap < 0 || o->overlap > 64 ||
        o->jpeg_quality < 1 || o->jpeg_quality > 100)
        return gs_error_set("deep zoom: bad options (tile %d, overlap %d, quality %d)",
                            o->tile_size, o->overlap, o->jpeg_quality);
    return 0;
}

static gs_deepzoom *alloc_dz(const gs_deepzoom_options *opt)
{
    gs_deepzoom_options d;
    gs_deepzoom_options_default(&d);
    if (!opt)
        opt = &d;
    if (check_options(opt) < 0)
        return NULL;
    gs_deepzoom *dz = calloc(1, sizeof *dz);
    if (!dz) {
        gs_error_set("deep zoom: out of memory");
        return NULL;
    }
    dz->opt = *opt;
    pthread_mutex_init(&dz->slide_lock, NULL);
    pthread_mutex_init(&dz->cache_lock, NULL);
    return dz;
}

gs_deepzoom *gs_deepzoom_new_layout(const gs_deepzoom_layout *layout,
                                    const gs_deepzoom_options *opt)
{
    gs_deepzoom *dz = alloc_dz(opt);
    if (dz && build_geometry(dz, layout) < 0)
        gs_deepzoom_destroy(&dz);
    return dz;
}

gs_deepzoom *gs_deepzoom_open(const char *path, const gs_deepzoom_options *opt)
{
    gs_deepzoom *dz = alloc_dz(opt);
    if (!dz)
        return NULL;
    const gs_slide_expect expect = {.quickhash = opt ? opt->quickhash : NULL};
    dz->slide = gs_slide_open_checked(path, NULL, &expect);
    if (!dz->slide)
        goto fail_destroy;
    int n = gs_slide_level_count(dz->slide);
    if (n > GS_DEEPZOOM_MAX_SLIDE_LEVELS) {
        gs_error_set("%s: %d pyramid levels", path, n);
        goto fail_destroy;
    }
    int64_t w[GS_DEEPZOOM_MAX_SLIDE_LEVELS], h[GS_DEEPZOOM_MAX_SLIDE_LEVELS];
    double ds[GS_DEEPZOOM_MAX_SLIDE_LEVELS];
    for (int i = 0; i < n; i++) {
        gs_slide_level_size(dz->slide, i, &w[i], &h[i]);
        ds[i] = gs_slide_level_downsample(dz->slide, i);
    }
    const gs_slide *s = dz->slide;
    gs_deepzoom_layout ly = {
        .levels = n,
        .width = w,
        .height = h,
        .downsample = ds,
        .bounds_x = gs_slide_property(s, "openslide.bounds-x"),
        .bounds_y = gs_slide_property(s, "openslide.bounds-y"),
        .bounds_width = gs_slide_property(s, "openslide.bounds-width"),
        .bounds_height = gs_slide_property(s, "openslide.bounds-height"),
    };
    if (build_geometry(dz, &ly) < 0) {
        gs_error_prefix("%s", path);
        goto fail_destroy;
    }
    return dz;

fail_destroy:
    gs_deepzoom_destroy(&dz);
    return NULL;
}

void gs_deepzoom_destroy(gs_deepzoom **pdz)
{
    if (!pdz || !*pdz)
        return;
    gs_deepzoom *dz = *pdz;
    for (tile_entry *e = dz->newest, *next; e; e = next) {
        next = e->older;
        free(e->jpeg);
        free(e);
    }
    gs_slide_destroy(&dz->slide);
    pthread_mutex_destroy(&dz->slide_lock);
    pthread_mutex_destroy(&dz->cache_lock);
    free(dz->levels);
    free(dz);
    *pdz = NULL;
}

int gs_deepzoom_recheck(gs_deepzoom *dz)
{
    GS_ASSERT(dz);
    if (!dz->slide)
        return gs_error_set("deepzoom: a layout has no slide file");
    pthread_mutex_lock(&dz->slide_lock);
    int rc = gs_slide_recheck(dz->slide);
    pthread_mutex_unlock(&dz->slide_lock);
    return rc;
}

int gs_deepzoom_level_count(const gs_deepzoom *dz)
{
    return dz->nlevels;
}

int gs_deepzoom_level_size(const gs_deepzoom *dz, int level, int64_t *w, int64_t *h)
{
    if (level < 0 || level >= dz->nlevels)
        return GS_DEEPZOOM_NO_TILE;
    if (w)
        *w = dz->levels[level].w;
    if (h)
        *h = dz->levels[level].h;
    return 0;
}

int gs_deepzoom_level_tiles(const gs_deepzoom *dz, int level, int64_t *cols, int64_t *rows)
{
    if (level < 0 || level >= dz->nlevels)
        return GS_DEEPZOOM_NO_TILE;
    if (cols)
        *cols = dz->levels[level].cols;
    if (rows)
        *rows = dz->levels[level].rows;
    return 0;
}

void gs_deepzoom_bounds(const gs_deepzoom *dz, int64_t *x, int64_t *y, int64_t *w, int64_t *h)
{
    if (x)
        *x = dz->off_x;
    if (y)
        *y = dz->off_y;
    if (w)
        *w = dz->l_w[0];
    if (h)
        *h = dz->l_h[0];
}

/* One axis of DeepZoomGenerator._get_tile_info(). */
static void tile_axis(const gs_deepzoom *dz, const dz_level *L, int64_t t, int64_t t_lim,
                      int64_t z_lim, int64_t l_lim, int64_t off, int64_t *l0, int64_t *read,
                      int *size)
{
    const int64_t ts = dz->opt.tile_size, ov = dz->opt.overlap;
    int64_t z_tl = t != 0 ? ov : 0, z_br = t != t_lim - 1 ? ov : 0;
    int64_t rest = z_lim - ts * t;
    int64_t z_size = (ts < rest ? ts : rest) + z_tl + z_br;
    double l = L->l_z_ds * (double)(ts * t - z_tl);
    *l0 = (int64_t)(dz->l_ds[L->slide_level] * l + (double)off);
    double a = ceil(L->l_z_ds * (double)z_size), b = (double)l_lim - ceil(l);
    int64_t r = (int64_t)(a < b ? a : b);
    *read = r < 1 ? 1 : r;
    *size = (int)z_size;
}

int gs_deepzoom_tile(const gs_deepzoom *dz, int level, int64_t col, int64_t row,
                     gs_deepzoom_tile_info *info)
{
    if (level < 0 || level >= dz->nlevels || col < 0 || row < 0 || col >= dz->levels[level].cols ||
        row >= dz->levels[level].rows) {
        gs_error_set("no tile %d/%" PRId64 "_%" PRId64, level, col, row);
        return GS_DEEPZOOM_NO_TILE;
    }
    const dz_level *L = &dz->levels[level];
    info->slide_level = L->slide_level;
    tile_axis(dz, L, col, L->cols, L->w, dz->l_w[L->slide_level], dz->off_x, &info->l0_x,
              &info->read_w, &info->w);
    tile_axis(dz, L, row, L->rows, L->h, dz->l_h[L->slide_level], dz->off_y, &info->l0_y,
              &info->read_h, &info->h);
    return 0;
}

char *gs_deepzoom_dzi(const gs_deepzoom *dz)
{
    char *xml = NULL;
    if (asprintf(&xml,
                 "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                 "<Image xmlns=\"http://schemas.microsoft.com/deepzoom/2008\" Format=\"jpeg\" "
                 "Overlap=\"%d\" TileSize=\"%d\"><Size Height=\"%" PRId64 "\" Width=\"%" PRId64
                 "\"/></Image>\n",
                 dz->opt.overlap, dz->opt.tile_size, dz->l_h[0], dz->l_w[0]) < 0)
        return NULL;
    return xml;
}

int gs_deepzoom_tile_rgb(gs_deepzoom *dz, int level, int64_t col, int64_t row, uint8_t **rgb,
                         int *w, int *h)
{
    *rgb = NULL;
    gs_deepzoom_tile_info ti;
    int rc = gs_deepzoom_tile(dz, level, col, row, &ti);
    if (rc != 0)
        return rc;
    if (!dz->slide)
        return gs_error_set("deep zoom: no slide");
    /* A tile reads at most (tile + 2 overlap) x the level step; a read beyond this cannot come
     * from a sane pyramid and would take minutes (its memory is bounded either way). */
    if (ti.read_w > 16384 || ti.read_h > 16384)
        return gs_error_set("%s: tile %d/%" PRId64 "_%" PRId64 " would read %" PRId64 "x%" PRId64
                            " pixels",
                            gs_slide_path(dz->slide), level, col, row, ti.read_w, ti.read_h);
    const int sw = (int)ti.read_w, sh = (int)ti.read_h;
    /* Shrinking tiles (every level coarser than its slide level) are read strip by strip
     * (gs_slide_read_region_shrunk): memory stays at a strip whatever the level step. Only
     * tiles read 1:1 or stretched (an edge clipped below its size) hold their read whole. */
    const int same = sw == ti.w && sh == ti.h;
    const int shrink = !same && sw >= ti.w && sh >= ti.h;
    uint8_t *src = same || shrink ? NULL : malloc((size_t)sw * (size_t)sh * 3);
    uint8_t *dst = malloc((size_t)ti.w * (size_t)ti.h * 3);
    if ((!same && !shrink && !src) || !dst) {
        gs_error_set("deep zoom: out of memory");
        goto fail_free;
    }
    pthread_mutex_lock(&dz->slide_lock);
    if (dz->opt.read_budget_s > 0)
        gs_slide_set_deadline(dz->slide, gs_mono_us() + (int64_t)(dz->opt.read_budget_s * 1e6),
                              dz->opt.read_budget_s);
    if (shrink)
        rc = gs_slide_read_region_shrunk(dz->slide, ti.slide_level, ti.l0_x, ti.l0_y, sw, sh, ti.w,
                                         ti.h, dst);
    else
        rc = gs_slide_read_region(dz->slide, ti.slide_level, ti.l0_x, ti.l0_y, sw, sh,
                                  same ? dst : src);
    gs_slide_set_deadline(dz->slide, 0, 0);
    pthread_mutex_unlock(&dz->slide_lock);
    if (rc < 0)
        goto fail_free;
    if (src) /* an edge tile whose read was clipped below its size: stretch the last pixels */
        rc = gs_resize_bilinear_u8(src, sw, sh, (size_t)sw * 3, 3, dst, ti.w, ti.h,
                                   (size_t)ti.w * 3);
    if (rc < 0)
        goto fail_free;
    free(src);
    *rgb = dst;
    *w = ti.w;
    *h = ti.h;
    return 0;

fail_free:
    free(src);
    free(dst);
    return -1;
}

static size_t bucket_of(int level, int64_t col, int64_t row)
{
    uint64_t k = (uint64_t)level * 0x9E3779B97F4A7C15u ^ (uint64_t)col * 0xC2B2AE3D27D4EB4Fu ^
                 (uint64_t)row * 0x165667B19E3779F9u;
    return (size_t)((k ^ (k >> 29)) % CACHE_BUCKETS);
}

/* Under cache_lock: unlinks e from the recency list. */
static void lru_unlink(gs_deepzoom *dz, tile_entry *e)
{
    if (e->newer)
        e->newer->older = e->older;
    else
        dz->newest = e->older;
    if (e->older)
        e->older->newer = e->newer;
    else
        dz->oldest = e->newer;
    e->newer = e->older = NULL;
}

static void lru_push(gs_deepzoom *dz, tile_entry *e)
{
    e->older = dz->newest;
    e->newer = NULL;
    if (dz->newest)
        dz->newest->newer = e;
    dz->newest = e;
    if (!dz->oldest)
        dz->oldest = e;
}

/* Under cache_lock: removes e from its bucket and the list and frees it. */
static void cache_drop(gs_deepzoom *dz, tile_entry *e)
{
    tile_entry **p = &dz->buckets[bucket_of(e->level, e->col, e->row)];
    while (*p != e)
        p = &(*p)->next_in_bucket;
    *p = e->next_in_bucket;
    lru_unlink(dz, e);
    dz->cache_bytes -= e->len;
    dz->cache_entries--;
    free(e->jpeg);
    free(e);
}

static tile_entry *cache_find(gs_deepzoom *dz, int level, int64_t col, int64_t row)
{
    for (tile_entry *e = dz->buckets[bucket_of(level, col, row)]; e; e = e->next_in_bucket)
        if (e->level == level && e->col == col && e->row == row)
            return e;
    return NULL;
}

/* Copies jpeg into the cache, evicting the least recently used tiles to stay within the byte
 * bound. A tile larger than the whole bound is not kept. Out of memory only skips caching. */
static void cache_put(gs_deepzoom *dz, int level, int64_t col, int64_t row, const uint8_t *jpeg,
                      size_t len)
{
    if (len > dz->opt.cache_bytes)
        return;
    tile_entry *e = calloc(1, sizeof *e);
    uint8_t *copy = malloc(len);
    if (!e || !copy) {
        free(e);
        free(copy);
        return;
    }
    memcpy(copy, jpeg, len);
    e->level = level;
    e->col = col;
    e->row = row;
    e->jpeg = copy;
    e->len = len;
    pthread_mutex_lock(&dz->cache_lock);
    tile_entry *old = cache_find(dz, level, col, row);
    if (old)
        cache_drop(dz, old);
    while (dz->oldest && dz->cache_bytes + len > dz->opt.cache_bytes)
        cache_drop(dz, dz->oldest);
    size_t b = bucket_of(level, col, row);
    e->next_in_bucket = dz->buckets[b];
    dz->buckets[b] = e;
    lru_push(dz, e);
    dz->cache_bytes += len;
    dz->cache_entries++;
    pthread_mutex_unlock(&dz->cache_lock);
}

/* A malloc'd copy of the cached tile, or NULL (not cached, or out of memory). */
static uint8_t *cache_get(gs_deepzoom *dz, int level, int64_t col, int64_t row, size_t *len)
{
    uint8_t *copy = NULL;
    pthread_mutex_lock(&dz->cache_lock);
    tile_entry *e = cache_find(dz, level, col, row);
    if (e && (copy = malloc(e->len))) {
        memcpy(copy, e->jpeg, e->len);
        *len = e->len;
        lru_unlink(dz, e);
        lru_push(dz, e);
        dz->hits++;
    } else {
        dz->misses++;
    }
    pthread_mutex_unlock(&dz->cache_lock);
    return copy;
}

static int encode_jpeg(const uint8_t *rgb, int w, int h, int quality, uint8_t **out, size_t *len)
{
    tjhandle tj = tjInitCompress();
    if (!tj)
        return gs_error_set("deep zoom: cannot start the JPEG encoder: %s", tjGetErrorStr());
    unsigned char *buf = NULL;
    unsigned long n = 0;
    int rc = tjCompress2(tj, rgb, w, (int)((size_t)w * 3), h, TJPF_RGB, &buf, &n, TJSAMP_420,
                         quality, 0);
    if (rc != 0) {
        gs_error_set("deep zoom: JPEG encoding of %dx%d failed: %s", w, h, tjGetErrorStr2(tj));
        goto fail_free;
    }
    *out = malloc(n);
    if (!*out) {
        gs_error_set("deep zoom: out of memory");
        goto fail_free;
    }
    memcpy(*out, buf, n);
    *len = n;
    tjFree(buf);
    tjDestroy(tj);
    return 0;

fail_free:
    tjFree(buf);
    tjDestroy(tj);
    return -1;
}

int gs_deepzoom_tile_jpeg(gs_deepzoom *dz, int level, int64_t col, int64_t row, uint8_t **jpeg,
                          size_t *len)
{
    *jpeg = NULL;
    *len = 0;
    gs_deepzoom_tile_info ti;
    int rc = gs_deepzoom_tile(dz, level, col, row, &ti);
    if (rc != 0)
        return rc;
    if ((*jpeg = cache_get(dz, level, col, row, len)))
        return 0;
    uint8_t *rgb = NULL;
    int w, h;
    rc = gs_deepzoom_tile_rgb(dz, level, col, row, &rgb, &w, &h);
    if (rc != 0)
        return rc;
    rc = encode_jpeg(rgb, w, h, dz->opt.jpeg_quality, jpeg, len);
    free(rgb);
    if (rc < 0)
        return -1;
    cache_put(dz, level, col, row, *jpeg, *len);
    return 0;
}

void gs_deepzoom_cache_stats(gs_deepzoom *dz, size_t *bytes, size_t *entries, uint64_t *hits,
                             uint64_t *misses)
{
    pthread_mutex_lock(&dz->cache_lock);
    if (bytes)
        *bytes = dz->cache_bytes;
    if (entries)
        *entries = dz->cache_entries;
    if (hits)
        *hits = dz->hits;
    if (misses)
        *misses = dz->misses;
    pthread_mutex_unlock(&dz->cache_lock);
}
