/*
 * heatmap: the slide heatmap stitched from per-tile segmentation maps, and its overlay on the
 * thumbnail for heatmap.png.
 *
 * Each inferred tile sends a small map (heatmap_size x heatmap_size bytes, probability x 255,
 * PROTOCOL.md TileResult.heatmap) covering its read window, a square of `window` level-0
 * pixels at (x0, y0). The slide heatmap is a grid of cells over the whole level-0 image, each
 * cell `cell` level-0 pixels wide (the chosen stride; window / heatmap_size gives one cell per
 * map value on the tile grid). A cell takes, from every tile whose window contains the cell's
 * centre, the tile's map value at that point (nearest map value), and averages them where
 * windows overlap. Cells no tile covers have no data (NaN): tiles not planned, background,
 * blurry or failed tiles are not evidence of anything and are drawn as the bare thumbnail.
 *
 * The overlay is the thumbnail with every cell that has data blended with a colour from blue
 * (0) through cyan, green and yellow to red (1) at a fixed opacity, so tissue stays visible
 * under the colour. gs_heatmap_threshold() gives the mask of suspicious cells that
 * ops/contours turns into regions; a cell (i, j) is the level-0 square
 * [i * cell, (i + 1) * cell) x [j * cell, (j + 1) * cell), so polygon coordinates scale to
 * level 0 by multiplying by `cell`.
 *
 * Use: h = gs_heatmap_new(w0, h0, cell); gs_heatmap_add_tile(h, ...) per inferred tile;
 * read with gs_heatmap_value / gs_heatmap_threshold / gs_heatmap_render; gs_heatmap_destroy(&h).
 * Not thread-safe for concurrent adds; reads may run in parallel.
 */
#ifndef GS_STAGES_SLIDE_HEATMAP_H
#define GS_STAGES_SLIDE_HEATMAP_H

#include <stddef.h>
#include <stdint.h>

/* Default opacity of the colour over the thumbnail. */
#define GS_HEATMAP_ALPHA 0.45

typedef struct gs_heatmap gs_heatmap;

/* A heatmap over a level-0 image of w0 x h0 pixels with cells `cell` level-0 pixels wide:
 * ceil(w0 / cell) x ceil(h0 / cell) cells, all without data. Returns a heatmap the caller frees
 * with gs_heatmap_destroy(), or NULL with the message set (non-positive sizes, a cell under 1
 * pixel, more than 2^26 cells, out of memory). */
gs_heatmap *gs_heatmap_new(int64_t w0, int64_t h0, double cell);

/* Frees the heatmap; sets *h to NULL. Accepts NULL and *h == NULL. */
void gs_heatmap_destroy(gs_heatmap **h);

/* Grid size in cells, and the cell side in level-0 pixels. */
void gs_heatmap_size(const gs_heatmap *h, int *cols, int *rows);
double gs_heatmap_cell(const gs_heatmap *h);

/* Adds one tile's map (map_size x map_size bytes, rows map_size apart, value / 255 =
 * probability; caller-owned) covering the level-0 square [x0, x0 + window) x [y0, y0 + window),
 * which may extend past the slide. Returns the number of cells it contributed to (0 if the
 * window misses the slide), or -1 with the message set (NULL map, map_size < 1, window < 1). */
int gs_heatmap_add_tile(gs_heatmap *h, int64_t x0, int64_t y0, int64_t window, const uint8_t *map,
                        int map_size);

/* Value of cell (col, row) in 0..1, or NaN when no tile covered it (or the cell is outside
 * the grid). */
float gs_heatmap_value(const gs_heatmap *h, int col, int row);

/* Number of cells with data. */
int64_t gs_heatmap_cells_with_data(const gs_heatmap *h);

/* Writes mask (cols * rows bytes, rows `cols` apart, caller-owned): 1 where a cell has data
 * and its value >= threshold, else 0. Returns the number of 1 cells. */
int64_t gs_heatmap_threshold(const gs_heatmap *h, float threshold, uint8_t *mask);

/* Colour of value v (clamped to 0..1): blue (0,0,255) at 0, cyan at 0.25, green at 0.5,
 * yellow at 0.75, red (255,0,0) at 1, linear in between, rounded. */
void gs_heatmap_colour(float v, uint8_t rgb[3]);

/* Draws the heatmap over a thumbnail of the whole slide (RGB, tw x th, rows tw*3 apart):
 * each thumbnail pixel whose centre falls in a cell with data becomes
 * (1 - alpha) * pixel + alpha * colour, rounded; others are copied. Returns a malloc'd RGB
 * image of tw x th that the caller frees, or NULL with the message set (bad arguments, alpha
 * outside 0..1, out of memory). */
uint8_t *gs_heatmap_render(const gs_heatmap *h, const uint8_t *thumb, int tw, int th, double alpha);

#endif
