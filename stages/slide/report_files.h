/*
 * report_files: a slide's report folder: report.json, heatmap.png, regions.geojson,
 * tiles.geojson.gz and the viewer's overlays (heatmap_overlay.png, background_overlay.png).
 *
 * The reporter stage (and the embedded `gastroscreen screen`) fills a gs_report with
 * everything known about a finished slide and calls gs_report_write(). Every file goes
 * through a temporary file in the same folder, fsync and rename, so a reader never sees half a
 * file and a failed write leaves the previous file in place; report.json is written last, so
 * its presence means the folder is complete. For a FAILED verdict only report.json is written
 * and no image is touched (the slide may be poison, PROTOCOL.md "Failure").
 *
 * report.json (UTF-8, one object; absent optional values are JSON null):
 *   "format": "gastroscreen-report", "format_version": 1,
 *   "slide": {"id", "path", "attempt", "external_id", "vendor", "width", "height", "mpp",
 *             "mpp_defaulted", "quickhash" (openslide.quickhash-1 of the file screened, from the
 *             plan; null when unknown: the viewer refuses a file at path that no longer has it)},
 *   "verdict": "negative" | "positive" | "unassessable" | "failed",
 *   "score", "threshold", "threshold_source" (where the threshold came from: "bundle", "config"
 *   or "default", stages/runtime/decision; null when the verdict does not say), "reason",
 *   "untrained": true when any network used is untrained or the bundle in use is
 * (untrained_bundle), and then "notice": "model: untrained — not a diagnosis" (null for a fully
 * trained model), "tiles": {"planned", "inferred", "background", "blurry", "error", "rerequested"},
 *   "blurred_fraction": blurry / judged of the blur-first sample (null if no sample judged),
 *   "blur_sample_judged",
 *   "focus": {"every_tile" (every tissue tile judged, not only the sample), "tile_threshold"
 *             (a tile is blurry when its focus is below it), "tile_threshold_source",
 *             "slide_fraction" (unassessable above this blurry share of tissue tiles),
 *             "slide_fraction_source", "sparse_tissue" (the blur network's sparse-tissue rule:
 *             a crop under this tissue share is also judged by the classical measure; null
 *             when the rule is off), "sparse_tissue_source", "sparse_classical_threshold"
 *             (the classical threshold such a crop is held to; null when the rule is off),
 *             "blurry_tiles", "tissue_tiles" (planned - background), "blurry_share" (null
 *             without tissue tiles)},
 *   "timings": {"<stage>": seconds, ...} in the order given (stage names must differ),
 *   "models": [{"network", "method", "algorithm", "version", "bundle", "sha256",
 *               "format_version", "trained_on", "untrained", "precision"}, ...]: every method
 *             that judged
 *             the slide, in the order given: a network with its bundle's provenance (and for
 *             the multi-task network the precision that inferred the tiles, else null), a
 *             classical method with what it computes and the gastroscreen version that
 *             implements it (no bundle), or "method": "unknown" with nulls,
 *   "warnings": ["no mpp: used default 0.25", ...],
 *   "heatmap": {"file": "heatmap.png", "cell_level0" (null without a heatmap),
 *               "cells_with_data", "tiles_file": "tiles.geojson.gz" or null} or null when no
 *               image was written,
 *   "regions": {"file": "regions.geojson", "count", "threshold", "origin_level0": [x, y]} or
 *              null,
 *   "overlays": {"cell_level0", "size": [cols, rows], "origin_level0": [x, y], "heatmap":
 *               "heatmap_overlay.png", "background": "background_overlay.png" or null} with a
 *               heatmap, else null: the viewer's layers (below),
 *   "versions": {"gastroscreen", "openslide", "jansson", "zeromq", "libpng"},
 *   "decided_unix_ms".
 *
 * The GeoJSON files follow QuPath's conventions (QuPath 0.4 and later read them with File >
 * Import objects or by drag and drop; it reads "id", "geometry" and, of the properties, only
 * "objectType", "classification", "name", "isLocked" and "measurements", an object of
 * numbers). Coordinates are level-0 pixels (x right, y down) less the origin QuPath gives the
 * slide: OpenSlide's openslide.bounds-x / bounds-y when the slide has them (QuPath shows only
 * the bounds rectangle, with its corner at 0, 0), else 0, 0 (gs_report.origin_x / origin_y,
 * gs_report_origin()). Every feature has an "id": a version-5 UUID (stages/slide/uuid5) of
 * "<slide id>/region/<n>", "<slide id>/focus/<x0>,<y0>" or "<slide id>/tile/<col>,<row>", so
 * writing the same report again gives the same ids and an import of the newer file can be
 * matched with the older one; another screening of the file (a new slide id) gets new ids.
 *
 * regions.geojson: a FeatureCollection with one Feature per suspicious region: the 8-connected
 * groups of heatmap cells with value >= region_threshold (ops/contours), as a Polygon: first
 * ring the outline, then one ring per hole, every ring closed (last point = first).
 * Orientation follows RFC 7946's right-hand rule on the numbers as written (outline
 * counter-clockwise, holes clockwise in a y-up reading; on the slide, with y down, the outline
 * appears clockwise). QuPath ignores ring orientation. Properties: "objectType":
 * "annotation", "isLocked": true (a pathologist moves the model's outline only on purpose),
 * "classification": {"name": "Suspicious", "color": [r, g, b]}, "name": "Suspicious region
 * <n>", "measurements": {GS_REPORT_M_MAX (highest cell value in the region), GS_REPORT_M_MEAN,
 * GS_REPORT_M_AREA_PX (level-0 pixels²), GS_REPORT_M_AREA_UM (µm², only when the mpp is
 * known)}. Cells are squares of cell_level0 pixels, so the outermost cells of the grid may
 * reach past the slide's edge by less than one cell.
 *
 * Out-of-focus tiles (r->blurry) are Features too, after the regions: a locked annotation
 * Polygon per tile window, "classification": {"name": "Out of focus", "color":
 * GS_REPORT_BLURRY_RGB}, "name": "Out of focus tile <n>"; they are not counted as regions.
 *
 * The collection's "metadata" (QuPath does not read it; kept for people and programs):
 * "generator" ("gastroscreen <version>"), "slide_id", "verdict", "score", "threshold",
 * "region_threshold", "untrained", "notice" (GS_REPORT_UNTRAINED_NOTICE or null), "models" (as
 * in report.json), "origin_level0": [x, y], "cell_level0" (null without a heatmap).
 *
 * tiles.geojson.gz (gzip): the heat map as QuPath "tile" objects, so Measure > Show
 * measurement maps colours the slide by score: a FeatureCollection with one Feature per block
 * of k x k heatmap cells that has data (cells of an inferred tile, zeros included: a blue
 * block was judged and found clean, a missing one was never judged), in row-major order, a
 * square Polygon of k * cell_level0 pixels in the same coordinates, "properties":
 * {"objectType": "tile", "measurements": {GS_REPORT_M_SCORE (mean of the block's cells with
 * data), GS_REPORT_M_MAX (their highest)}}, and the same "metadata" plus "tile_level0" (the
 * block side). k is 1 (one tile per cell) unless that gives more than GS_REPORT_TILES_MAX
 * tiles (gs_report_tile_cells). About 330 bytes per tile before compression, 40 after: the
 * sample slide's 50 752 cells of 8 level-0 pixels give 2 MB. Written only with a heatmap.
 *
 * heatmap_overlay.png and background_overlay.png (written with a heatmap): the slide viewer's
 * raster layers (daemon/service/viewer), RGBA PNGs of one pixel per heatmap cell (cell (i, j)
 * is pixel (i, j), covering level-0 [i * cell, (i + 1) * cell) x [j * cell, (j + 1) * cell), so
 * in the GeoJSON coordinates the image spans -origin to cols * cell - origin). The heatmap
 * overlay has each cell with data in its heatmap colour (gs_heatmap_colour), opaque, and is
 * transparent where there is no data; a browser scales it with nearest-neighbour sampling and
 * sets its opacity. The background overlay, written when r->tissue lists tiles, is grey
 * (GS_REPORT_BACKGROUND_RGB) over every cell whose centre lies in no tissue tile's window (the
 * glass, and what the plan judged background: where nothing was analysed for want of tissue),
 * transparent over the tissue tiles.
 *
 * heatmap.png: the thumbnail with the heatmap blended over it (stages/slide/heatmap), the bare
 * thumbnail when there is no heatmap (an unassessable slide), or, without a thumbnail, the
 * colours alone over white at one pixel per cell. Out-of-focus tiles are hatched over the
 * thumbnail in GS_REPORT_BLURRY_RGB (diagonal stripes, so the tissue stays visible), as a
 * layer of their own: the heatmap never covers them (they were not inferred).
 */
#ifndef GS_STAGES_SLIDE_REPORT_FILES_H
#define GS_STAGES_SLIDE_REPORT_FILES_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/vocab.h"
#include "stages/slide/heatmap.h"
#include "stages/slide/reader.h"

/* The plain statement every output carries when any network used is untrained. */
#define GS_REPORT_UNTRAINED_NOTICE "model: untrained — not a diagnosis"

/* What the classical methods compute, as report.json names them (DESIGN.md §2). */
#define GS_REPORT_CLASSICAL_FOREGROUND                                                             \
    "tissue mask: Ruifrok-Johnston H&E colour deconvolution + Otsu threshold on a low-resolution " \
    "view (stages/slide/tissue)"
#define GS_REPORT_CLASSICAL_BLUR                                                                   \
    "focus: brightness-normalised variance of the Laplacian over tissue pixels (ops/focus)"

/* One network or classical method that took part in the verdict. */
typedef struct {
    const char *network;        /* "foreground", "blur", "multitask", "screener" */
    const char *method;         /* "network", "classical" (the fallback ran instead), or
                                   "unknown" (the stage ran; which method is not recorded) */
    const char *algorithm;      /* classical: what it computes; NULL = none */
    const char *version;        /* classical: gastroscreen version implementing it; NULL = none */
    const char *bundle;         /* bundle file name; NULL = none */
    const char *sha256;         /* lower-case hex SHA-256 of the bundle; NULL = none */
    const char *format_version; /* bundle format version (model/FORMAT.md); NULL = none */
    const char *trained_on;     /* what the weights were trained on, or "untrained" */
    int untrained;              /* nonzero: this network's weights are seeded random ones */
    /* The arithmetic it ran in (ModelProvenance.precision: "fp32", "bf16", "bf16+fp32" for a
     * mixed pool); NULL = not recorded (networks without a precision setting, no tile) */
    const char *precision;
} gs_report_model;

/* Seconds a slide spent in one stage. */
typedef struct {
    const char *stage; /* "plan", "blur", "infer", "screen", "report", ... */
    double seconds;
} gs_report_timing;

/* A level-0 square: a tile's read window. */
typedef struct {
    int64_t x0, y0, side;
} gs_report_box;

/* The classification of the suspicious regions in regions.geojson. */
#define GS_REPORT_REGION_CLASS "Suspicious"

/* Measurement names in the GeoJSON files; the prefix keeps them apart from QuPath's own
 * ("Area µm^2" and the like) in its measurement tables. */
#define GS_REPORT_M_MAX "gastroscreen: max score"
#define GS_REPORT_M_MEAN "gastroscreen: mean score"
#define GS_REPORT_M_AREA_PX "gastroscreen: area px^2"
#define GS_REPORT_M_AREA_UM "gastroscreen: area \xc2\xb5m^2"
#define GS_REPORT_M_SCORE "gastroscreen: score"

/* Colour of the out-of-focus layer (heatmap.png hatching, regions.geojson classification). */
#define GS_REPORT_BLURRY_RGB                                                                       \
    {                                                                                              \
        160, 32, 240                                                                               \
    }

/* Colour of the background (non-tissue) layer of the viewer (background_overlay.png). */
#define GS_REPORT_BACKGROUND_RGB                                                                   \
    {                                                                                              \
        96, 96, 96                                                                                 \
    }

/* Most "tile" objects in tiles.geojson.gz: 200 000 keeps the file near 8 MB and within what
 * QuPath draws and maps smoothly, while 1-4 cm^2 of tissue still gets tiles of 22-45 um. */
#define GS_REPORT_TILES_MAX 200000

/* Tile counts by ledger outcome (TileCounts). */
typedef struct {
    uint32_t planned, inferred, background, blurry, error, rerequested;
} gs_report_tiles;

/* What a report says. Plain data filled by the caller, who keeps ownership of every pointer;
 * strings are UTF-8, NULL = absent (JSON null) unless marked required. */
typedef struct {
    const char *slide_id;    /* required: the coordinator's slide id */
    uint32_t attempt;        /* the slide attempt the verdict belongs to */
    const char *path;        /* slide file path */
    const char *external_id; /* lab accession number, or NULL */
    const char *vendor;      /* OpenSlide vendor, or NULL */
    int64_t width, height;   /* level-0 size in pixels (0 = unknown) */
    double mpp;              /* level-0 microns per pixel used (0 = unknown) */
    int mpp_defaulted;       /* nonzero: the slide had no mpp and a default was used */
    const char *quickhash;   /* openslide.quickhash-1 of the file screened, or NULL */

    gs_verdict_class verdict;     /* required */
    double score;                 /* screener output 0..1; 0 when there is none */
    double threshold;             /* decision threshold: positive if score > threshold */
    const char *threshold_source; /* "bundle", "config", "default"; NULL or "": not known */
    const char *reason;           /* required: one line, e.g. "score 0.91 > 0.74" */

    gs_report_tiles tiles;
    int blur_sample_judged;  /* sample tiles judged by the blur check; 0 = none judged */
    double blurred_fraction; /* blurry / judged; reported only when blur_sample_judged > 0 */
    /* The focus rules that applied (Verdict.focus_*, blur_slide_*); sources NULL = unknown. */
    int focus_every_tile;
    double focus_threshold, blur_slide_fraction;
    const char *focus_threshold_source, *blur_slide_source;
    /* The blur network's sparse-tissue rule (Verdict.sparse_*): the tissue share under which
     * a crop is also judged classically, at sparse_classical_threshold; 0 = off. */
    double sparse_tissue, sparse_classical_threshold;
    const char *sparse_tissue_source;
    /* Tissue tiles judged out of focus: a hatched layer on heatmap.png, "Out of focus"
     * features in regions.geojson. */
    const gs_report_box *blurry;
    size_t n_blurry;
    /* The plan's tissue tiles (every planned tile not judged background, whatever became of
     * it): the viewer's background layer greys everything outside them. */
    const gs_report_box *tissue;
    size_t n_tissue;

    const gs_report_timing *timings; /* n_timings entries (may be NULL when 0) */
    size_t n_timings;
    const gs_report_model *models; /* n_models entries (may be NULL when 0) */
    size_t n_models;
    int untrained_bundle;        /* nonzero: the bundle in use is untrained, so the notice is shown
                                    even when only classical methods judged this slide */
    const char *const *warnings; /* n_warnings strings (may be NULL when 0) */
    size_t n_warnings;
    int64_t decided_unix_ms; /* when the verdict was decided; 0 = now */

    /* Heatmap and regions; ignored for GS_VERDICT_FAILED. */
    const gs_heatmap *heatmap; /* slide heatmap over the level-0 image, or NULL */
    const uint8_t *thumbnail;  /* RGB thumbnail of the whole slide, rows thumb_w*3 apart, or NULL */
    int thumb_w, thumb_h;
    double region_threshold;    /* heatmap value (0..1) at or above which a cell is suspicious */
    uint8_t region_colour[3];   /* QuPath classification colour; {0,0,0} = default red */
    int64_t origin_x, origin_y; /* level-0 point QuPath shows at (0, 0): gs_report_origin() */
} gs_report;

/* Where gs_report_write put the files ("" = not written) and how many regions it wrote. */
typedef struct {
    char report_json[PATH_MAX];
    char heatmap_png[PATH_MAX];
    char regions_geojson[PATH_MAX];
    char tiles_geojson[PATH_MAX];
    char overlay_png[PATH_MAX];    /* heatmap_overlay.png */
    char background_png[PATH_MAX]; /* background_overlay.png */
    int regions;
    int64_t tiles; /* features in tiles.geojson.gz */
} gs_report_paths;

/* The level-0 point QuPath shows at (0, 0) for a slide with these OpenSlide properties
 * (openslide.bounds-x and openslide.bounds-y, either NULL when absent): both when both are
 * decimal integers >= 0, else (0, 0). Returns 0, or -1 with the message naming the property
 * when one is present but not such an integer (*x and *y are then 0). */
int gs_report_origin(const char *bounds_x, const char *bounds_y, int64_t *x, int64_t *y);

/* gs_report_origin() of an open slide's properties; the error names the slide's path. */
int gs_report_slide_origin(const gs_slide *s, int64_t *x, int64_t *y);

/* The side, in heatmap cells, of the blocks tiles.geojson.gz gives one tile each: the smallest
 * k >= 1 whose k x k blocks (from cell 0, 0) with data number at most max_tiles (1 when
 * max_tiles < 1). */
int gs_report_tile_cells(const gs_heatmap *h, int64_t max_tiles);

/* Writes the report of r into the folder out_dir (created with its parents if missing, mode
 * 0755): heatmap.png, regions.geojson and, with a heatmap, tiles.geojson.gz and the overlays
 * (none of them for FAILED), then report.json. paths may be NULL.
 * Returns 0, or -1 with the message set: missing required fields, a bad verdict, thumbnail
 * size without pixels, or a file that cannot be written (files already renamed into place stay;
 * report.json is then not written). */
int gs_report_write(const gs_report *r, const char *out_dir, gs_report_paths *paths);

#endif
