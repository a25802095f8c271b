/*
 * annotation: a pathologist's region annotations as QuPath exports them (GeoJSON in level-0
 * pixels), read, rasterised, and refined against the slide's tissue (paper §3.1, Fig. 2: a
 * loose outline drawn around a lesion also encloses glass, which must not be taught as
 * cancer).
 *
 * Coordinates: QuPath's frame of the slide, as QuPath exports annotations and as our own
 * regions.geojson is written (stages/slide/report_files): level-0 pixels less the origin
 * QuPath gives a slide with OpenSlide bounds (openslide.bounds-x/-y; 0, 0 for a slide without
 * them, which is most formats). gs_annotations_read() keeps them as written;
 * gs_annotations_read_on() adds the slide's origin, so that every position the set gives
 * afterwards (bounds, fill, masks) is a level-0 pixel of that slide, and gs_refine_file() writes
 * its output back in QuPath's frame.
 *
 * Input: a FeatureCollection, a JSON array of Features, or a single Feature, each with a
 * Polygon or MultiPolygon geometry (first ring the outline, then holes; rings closed or not,
 * either orientation) and any properties (QuPath's `classification.name` is kept as is). A
 * feature that cannot be used (no geometry, another geometry type, a ring of fewer than three
 * points, a coordinate that is not a finite number within +-GS_ANNOTATION_MAX_COORD) is left
 * out with a message naming the file and the feature's index; the others are still read.
 *
 * Refinement: each feature's region is intersected with the slide's tissue mask (the classical
 * mask of stages/slide/tissue: Ruifrok H&E deconvolution + Otsu with marker ink removed) on a
 * grid over the feature's bounding box, fine enough to keep the outline (at most 1 um per cell,
 * coarser only to keep a box within GS_ANNOTATION_MAX_GRID cells a side), and traced back into
 * polygons with holes (ops/contours). The refined feature keeps its properties; its geometry
 * becomes the refined Polygon or MultiPolygon, and properties.measurements (an object of
 * numbers, as QuPath reads it) gains "area_before_px2", "area_after_px2" (level-0 pixels) and,
 * when the slide's mpp is known, "area_before_um2", "area_after_um2". A feature with no tissue
 * left is dropped with a message.
 *
 * Use: a = gs_annotations_read(path); for i < gs_annotations_count(a) ...;
 * gs_annotations_messages(a) lists what was left out; gs_refine_file() does the whole refine
 * command; gs_annotations_destroy(&a).
 */
#ifndef GS_STAGES_SLIDE_ANNOTATION_H
#define GS_STAGES_SLIDE_ANNOTATION_H

#include <stddef.h>
#include <stdint.h>

#include "stages/slide/reader.h"
#include "stages/slide/tissue.h"

/* The refinement grid's longest side, cells (bounds memory on any annotation). */
#define GS_ANNOTATION_MAX_GRID 4096

/* The largest coordinate read, level-0 pixels: 1e9 is thousands of times any slide's side, and
 * keeps every bounding box, area and grid step finite (1e308 is finite, but its differences and
 * shoelace products are not, and NaN then reaches the float-to-int conversions of the
 * rasteriser). */
#define GS_ANNOTATION_MAX_COORD 1e9

typedef struct gs_annotations gs_annotations;

/* Reads the GeoJSON file at path (at most 256 MiB). Returns the usable features (possibly none)
 * or NULL with the error (the file cannot be read, is not JSON, or is neither a Feature, an
 * array of Features nor a FeatureCollection). */
gs_annotations *gs_annotations_read(const char *path);
void gs_annotations_destroy(gs_annotations **a);

/* Reads the file at path as gs_annotations_read() does and moves every coordinate from the
 * slide's QuPath frame to level 0 (adds its origin, see above). Returns the set (caller frees)
 * or NULL with the error (also when the slide's bounds properties are present but not pixel
 * offsets: then neither frame is known). */
gs_annotations *gs_annotations_read_on(const char *path, gs_slide *slide);

/* Usable features, in file order. */
size_t gs_annotations_count(const gs_annotations *a);
/* The classification name of feature i ("" when it has none); owned by the set. */
const char *gs_annotations_class(const gs_annotations *a, size_t i);
/* The index of feature i in the file (0-based), for messages. */
size_t gs_annotations_file_index(const gs_annotations *a, size_t i);
/* Level-0 bounding box of feature i: [x0, x1) x [y0, y1). */
void gs_annotations_bounds(const gs_annotations *a, size_t i, double *x0, double *y0, double *x1,
                           double *y1);
/* Area of feature i in level-0 pixels (outlines minus holes, shoelace). */
double gs_annotations_area(const gs_annotations *a, size_t i);

/* Messages about features left out ("FILE: feature 3: MultiLineString is not a Polygon or
 * MultiPolygon"), n of them; owned by the set. */
size_t gs_annotations_message_count(const gs_annotations *a);
const char *gs_annotations_message(const gs_annotations *a, size_t i);

/* Fills mask (w*h bytes, rows w apart, caller-owned) with 1 where the centre of cell (i, j),
 * the level-0 point (x0 + (i + 0.5) * cell, y0 + (j + 0.5) * cell), lies inside feature k
 * (even-odd over each polygon's rings, union over a MultiPolygon's polygons), else leaves the
 * byte as it was. Returns 0, or -1 with the error for bad arguments. */
int gs_annotations_fill(const gs_annotations *a, size_t k, double x0, double y0, double cell,
                        uint8_t *mask, int w, int h);

/* Fills mask (w*h bytes over the whole slide, cells `cell` level-0 pixels wide, caller-owned)
 * with 1 where a cell centre lies in any feature whose classification is only_class (NULL: every
 * feature) and on tissue (tissue: the plan's mask, tw x th over the whole slide; NULL: no
 * tissue condition), else 0. slide_w, slide_h: the level-0 size. Used for pixel Dice between a
 * prediction's regions and a refined annotation. Returns the number of 1 cells, or -1 with the
 * error. */
int64_t gs_annotations_slide_mask(const gs_annotations *a, const char *only_class, int64_t slide_w,
                                  int64_t slide_h, const uint8_t *tissue, int tw, int th,
                                  double cell, uint8_t *mask, int w, int h);

/* What gs_refine_file did. */
typedef struct {
    size_t read;                    /* usable features in the input */
    size_t written;                 /* features in the output (with tissue left) */
    size_t skipped;                 /* features of the input left out as unusable */
    size_t emptied;                 /* features with no tissue left (dropped) */
    double area_before, area_after; /* level-0 px^2, over the written features */
} gs_refine_stats;

/* The refine command: reads the annotation at in_path, computes the tissue mask of slide (the
 * plan's mask with options o, or the defaults when NULL), refines every feature and writes a
 * FeatureCollection to out_path (atomically). Messages about features left out go to stderr
 * as they are met. Returns 0 with *st filled (st may be NULL), or -1 with the error (the
 * annotation cannot be read, the slide's mask cannot be computed, the output cannot be
 * written). */
int gs_refine_file(gs_slide *slide, const char *in_path, const char *out_path,
                   const gs_tissue_options *o, gs_refine_stats *st);

#endif
