/*
 * deepzoom: a slide as a Deep Zoom image (.dzi XML and JPEG tiles) for a browser viewer.
 *
 * The geometry is openslide-python's DeepZoomGenerator with limit_bounds=True, tile 254 and
 * overlap 1 by default: when the slide has openslide.bounds-x/-y/-width/-height, only that
 * rectangle is shown and Deep Zoom pixel (0, 0) of the full-resolution level is level-0 pixel
 * (bounds-x, bounds-y), which is how QuPath shows such a slide and the coordinates of the
 * report's GeoJSON (stages/slide/report_files.h: level 0 less gs_report_origin()). Level n
 * is ceil(level n+1 / 2) on each side down to 1 x 1; each level is cut into tiles of tile_size
 * plus overlap pixels on every interior edge; a tile is read from the slide level
 * OpenSlide's get_best_level_for_downsample() picks and shrunk to size by area averaging.
 *
 * Differences from openslide-python, all within JPEG noise: pixels outside the scanned area
 * are white (stages/slide/reader composites over white, not openslide.background-color); a
 * tile always has the size the geometry says (PIL's thumbnail() may give one pixel less to
 * keep the aspect ratio); the resampler is an area mean, not Lanczos.
 *
 * Use: dz = gs_deepzoom_open(path, NULL); gs_deepzoom_dzi(dz) for the XML;
 * gs_deepzoom_tile_jpeg(dz, level, col, row, &jpeg, &len) per tile (free(jpeg));
 * gs_deepzoom_destroy(&dz). Tiles go through a cache of encoded JPEGs bounded in bytes (least
 * recently used evicted first). Every function may be called from any thread at once: slide
 * reads are serialised on the slide (stages/slide/reader is not thread-safe), the cache has
 * its own lock, so cached tiles are served while another tile is read. Two threads asking for
 * the same missing tile may both render it; the second copy replaces the first.
 */
#ifndef GS_STAGES_SLIDE_DEEPZOOM_H
#define GS_STAGES_SLIDE_DEEPZOOM_H

#include <stddef.h>
#include <stdint.h>

typedef struct gs_deepzoom gs_deepzoom;

typedef struct {
    int tile_size;      /* tile side without overlap; 254 */
    int overlap;        /* extra pixels on each interior edge; 1 */
    int jpeg_quality;   /* 1..100; 75 (openslide-python's deepzoom server) */
    size_t cache_bytes; /* most JPEG bytes the cache keeps; 0 = no cache. 32 MiB */
    /* Seconds one tile's slide read may take before it fails (a slow disk or a zoomed-out tile
     * of a slide without coarse levels must not hold a server thread for minutes); 0 = no
     * limit. 30 s */
    double read_budget_s;
    /* openslide.quickhash-1 the slide must have (the one its report was made from), so a file
     * replaced at the same path is refused rather than shown under another slide's report;
     * NULL or "" = not checked. Not copied: only read by gs_deepzoom_open(). */
    const char *quickhash;
} gs_deepzoom_options;

/* Fills o with the defaults above. */
void gs_deepzoom_options_default(gs_deepzoom_options *o);

/* The slide facts the geometry uses, for gs_deepzoom_new_layout(): what OpenSlide reports. */
typedef struct {
    int levels;           /* >= 1, at most GS_DEEPZOOM_MAX_SLIDE_LEVELS */
    const int64_t *width; /* levels entries: each level's size */
    const int64_t *height;
    const double *downsample; /* levels entries: each level's downsample (1 for level 0) */
    const char *bounds_x;     /* openslide.bounds-x etc., NULL when absent */
    const char *bounds_y;
    const char *bounds_width;
    const char *bounds_height;
} gs_deepzoom_layout;

#define GS_DEEPZOOM_MAX_SLIDE_LEVELS 64

/* gs_deepzoom_tile_*() answer for a level, column or row outside the image. */
#define GS_DEEPZOOM_NO_TILE 1

/* Opens the slide with gs_slide_open_checked() (path must be canonical and a regular file; no
 * identity check) and builds its geometry; opt NULL = defaults. Returns the image, or NULL with
 * the error: the reader's, "<path>: openslide.bounds-width \"x\" is not a pixel size", bad
 * options. */
gs_deepzoom *gs_deepzoom_open(const char *path, const gs_deepzoom_options *opt);

/* The geometry alone, for tests and tools: a gs_deepzoom without a slide, whose tile reads
 * fail ("no slide"). Returns NULL with the error as gs_deepzoom_open(). */
gs_deepzoom *gs_deepzoom_new_layout(const gs_deepzoom_layout *layout,
                                    const gs_deepzoom_options *opt);

/* Frees everything and closes the slide; sets *dz to NULL. Accepts NULL and *dz == NULL. */
void gs_deepzoom_destroy(gs_deepzoom **dz);

/* Checks that the slide's path still names the file that was opened (gs_slide_recheck).
 * Returns 0, or -1 with the error (the file was replaced, moved or removed). Any thread. */
int gs_deepzoom_recheck(gs_deepzoom *dz);

/* Number of Deep Zoom levels (level count - 1 is the full resolution). */
int gs_deepzoom_level_count(const gs_deepzoom *dz);

/* Pixel size and tile grid of a level; any pointer may be NULL. Returns 0, or
 * GS_DEEPZOOM_NO_TILE for a level out of range (nothing written). */
int gs_deepzoom_level_size(const gs_deepzoom *dz, int level, int64_t *w, int64_t *h);
int gs_deepzoom_level_tiles(const gs_deepzoom *dz, int level, int64_t *cols, int64_t *rows);

/* The shown rectangle in level-0 pixels: origin (bounds-x, bounds-y, or 0, 0) and size (the
 * full-resolution Deep Zoom level's). Any pointer may be NULL. */
void gs_deepzoom_bounds(const gs_deepzoom *dz, int64_t *x, int64_t *y, int64_t *w, int64_t *h);

/* Where a tile comes from: the OpenSlide read (level-0 corner, slide level, size in that
 * level's pixels) and the tile's own size. */
typedef struct {
    int64_t l0_x, l0_y;
    int slide_level;
    int64_t read_w, read_h;
    int w, h;
} gs_deepzoom_tile_info;

/* Fills *info for tile (col, row) of level. Returns 0, or GS_DEEPZOOM_NO_TILE with the message
 * "no tile <level>/<col>_<row>" when any of them is out of range. */
int gs_deepzoom_tile(const gs_deepzoom *dz, int level, int64_t col, int64_t row,
                     gs_deepzoom_tile_info *info);

/* The .dzi XML (Format "jpeg"), malloc'd and NUL-terminated; NULL when out of memory. */
char *gs_deepzoom_dzi(const gs_deepzoom *dz);

/* The tile's RGB pixels (rows *w * 3 bytes apart), malloc'd; not cached. Returns 0,
 * GS_DEEPZOOM_NO_TILE (nothing allocated), or -1 with the reader's error. */
int gs_deepzoom_tile_rgb(gs_deepzoom *dz, int level, int64_t col, int64_t row, uint8_t **rgb,
                         int *w, int *h);

/* The tile as a JPEG, from the cache or rendered and then cached; *jpeg is a malloc'd copy the
 * caller frees. Returns 0, GS_DEEPZOOM_NO_TILE, or -1 with the error (a read error or the
 * encoder's). */
int gs_deepzoom_tile_jpeg(gs_deepzoom *dz, int level, int64_t col, int64_t row, uint8_t **jpeg,
                          size_t *len);

/* What the cache holds and how it was used; any pointer may be NULL. */
void gs_deepzoom_cache_stats(gs_deepzoom *dz, size_t *bytes, size_t *entries, uint64_t *hits,
                             uint64_t *misses);

#endif
