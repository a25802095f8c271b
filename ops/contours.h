/*
 * contours: polygons of the connected regions of a binary mask (outer boundary and holes).
 *
 * The reporter turns the thresholded heatmap into suspicious regions for QuPath, so each
 * region must come out as one polygon with its holes, in coordinates that scale exactly to
 * level-0 pixels. Boundaries run along pixel edges (crack following): vertices sit on pixel
 * corners, pixel (x, y) is the square [x, x+1] x [y, y+1], so a polygon's shoelace area equals
 * its pixel count, and coordinates scale by a single factor (pixel size) to any other grid.
 *
 * Connectivity matches ops/components: regions are 8-connected (each polygon is one label of
 * gs_components_label, same numbering) and holes are the 4-connected background components
 * inside them. Where two pixels of a region meet only at a corner (a "saddle"), an exact
 * pixel-edge ring would pass twice through that corner, which JTS (QuPath's geometry library)
 * rejects as a self-touching ring. Each pass therefore cuts that corner: it stops
 * GS_CONTOUR_SADDLE_OFFSET (e = 1/16 px) short of the corner and resumes e after it, the cut
 * running through the background pixel it turns around. The two pixels stay joined by a neck
 * and every ring is simple; each saddle adds two triangles of e^2 / 2, exactly 1/256 px, to
 * the area of its polygon. Without saddles the area equals the pixel count exactly.
 *
 * Orientation: with the raw (x, y) numbers (x right, y down, as in the image), outer rings
 * have a positive shoelace sum and holes a negative one: RFC 7946's right-hand rule applied
 * to the numbers as they are (on screen, with y pointing down, outer rings look clockwise).
 * QuPath and JTS accept either orientation. Rings hold only corner vertices (no two
 * consecutive collinear edges), without repeating the first point at the end.
 *
 * Use: c = gs_contours_new(mask, w, h); for i < gs_contours_count(c): p =
 * gs_contours_polygon(c, i); ... gs_contours_destroy(&c). gs_contours_rasterize() is the
 * reference checker: it fills the polygons back (nonzero winding at pixel centres) and must
 * give back the mask. No simplification is applied: at heatmap resolution the rings are
 * short, and an exact boundary keeps the areas honest.
 */
#ifndef GS_OPS_CONTOURS_H
#define GS_OPS_CONTOURS_H

#include <stddef.h>
#include <stdint.h>

#define GS_CONTOUR_SADDLE_OFFSET 0.0625

typedef struct {
    double x, y; /* pixel-corner coordinates of the mask grid */
} gs_point;

typedef struct {
    gs_point *pts; /* n vertices, implicitly closed (pts[n-1] joins pts[0]) */
    size_t n;
} gs_ring;

typedef struct {
    int32_t label;  /* the component's label in gs_components_label numbering (1..count) */
    int64_t pixels; /* pixels of the region (its holes excluded) */
    gs_ring outer;  /* positive shoelace sum */
    gs_ring *holes; /* n_holes rings, negative shoelace sum, in tracing (raster) order */
    size_t n_holes;
    int saddles; /* corner-only joins in this polygon (each adds e^2 = 1/256 px of area) */
} gs_polygon;

typedef struct gs_contours gs_contours;

/* Traces every region of mask (w*h bytes, rows w apart, nonzero = foreground). Returns a new
 * set the caller frees with gs_contours_destroy(), ordered by label, or NULL with the message
 * set (NULL mask, non-positive sizes, more than INT32_MAX pixels, out of memory). An empty
 * mask gives an empty set. */
gs_contours *gs_contours_new(const uint8_t *mask, int w, int h);

/* Frees the set and every ring in it; sets *c to NULL. Accepts NULL and *c == NULL. */
void gs_contours_destroy(gs_contours **c);

/* Number of polygons (= connected regions). */
size_t gs_contours_count(const gs_contours *c);

/* The i-th polygon (i < count); owned by the set, valid until it is destroyed. */
const gs_polygon *gs_contours_polygon(const gs_contours *c, size_t i);

/* Signed shoelace area of a ring (positive for outer rings, negative for holes). */
double gs_ring_area(const gs_ring *r);

/* Area of a polygon: outer area minus the holes' areas. */
double gs_polygon_area(const gs_polygon *p);

/* Fills a w*h mask (caller-owned) with 1 where a pixel centre has a nonzero winding number
 * over all rings of all polygons, else 0: a mask-independent check that the polygons describe
 * the region. Plain scanline code written for clarity, not speed. Returns 0, or -1 with the
 * message set for bad arguments. */
int gs_contours_rasterize(const gs_contours *c, int w, int h, uint8_t *mask);

#endif
