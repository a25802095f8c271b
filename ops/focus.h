/*
 * focus: the classical focus measure, the blur stage's method when the bundle's blur network
 * is untrained (DESIGN.md §2.3).
 *
 * A tile in focus has sharp nuclei and fibre edges, so its second derivative is large; optical
 * defocus is a low-pass filter and flattens it. The measure is the variance of the 4-neighbour
 * Laplacian (4*g(x,y) - g(x-1,y) - g(x+1,y) - g(x,y-1) - g(x,y+1)) of the grey image over the
 * tissue pixels. Grey is PIL's "L" conversion, (19595 R + 38470 G + 7471 B + 32768) >> 16, so
 * the raw figure equals what the data README reports for the FQPath pair (84.0 vs 41.6).
 *
 * Brightness normalisation. Brightfield intensity is illumination times transmittance, so a
 * brighter lamp or a different scanner gain multiplies every grey value, and with it every
 * Laplacian value, by the same factor k, and the raw variance by k^2. Dividing by the squared
 * mean grey of the same pixels cancels k exactly; the result is then rescaled to a mean grey of
 * 128 so the score reads like a raw Laplacian variance of a mid-grey image:
 *     score = var(L) * (128 / mean(g))^2.
 * (Normalising by the standard deviation instead would cancel contrast, which is exactly what
 * defocus removes, so it is not used.)
 *
 * Which pixels count. With a mask, a pixel is used when it and its four neighbours are tissue,
 * so the sharp tissue/glass border (which stays sharp-looking even in a blurred tile) and the
 * flat glass do not dilute the figure. Without a mask every pixel is used. The outermost rows
 * and columns are never used (their Laplacian needs pixels outside the image).
 *
 * Decision. The score depends on resolution, so the threshold is for the blur stage's input:
 * 512 px tiles at 0.5 um/px, masked with gs_focus_tissue_mask. Measured (masked, at 0.5
 * um/px): the FQPath pair, area-downsampled 2x from its native ~0.25 um/px, scores 181 in
 * focus and 17.5 out of focus; 512 px tissue tiles of CMU-1-Small-Region (JPEG, 0.5 um/px)
 * score 1500-4300, about 200-470 after a Gaussian blur of sigma 1 px and 24-51 after sigma 2
 * px (1 um). GS_FOCUS_THRESHOLD = 60 sits near the geometric mean of the real pair (56), about
 * 3x from either side, and puts a 1 um Gaussian blur on the blurry side. A tile is blurry when
 * score < threshold; a slide is out of focus (verdict unassessable) when more than
 * GS_FOCUS_SLIDE_FRACTION (0.5) of its judged blur-sample tiles are blurry, which is the
 * blur_slide_fraction rule of proto/PROTOCOL.md. Both are configuration defaults, to be
 * re-measured on gastric slides from the lab's scanners.
 *
 * gs_focus_measure_ref recomputes everything in double precision in two passes;
 * gs_focus_measure uses exact integer sums over rows (in parallel for large images) and agrees
 * with the reference to rounding. No state, no I/O.
 */
#ifndef GS_OPS_FOCUS_H
#define GS_OPS_FOCUS_H

#include <stddef.h>
#include <stdint.h>

/* Tile score below which a tile is blurry (score units above). */
#define GS_FOCUS_THRESHOLD 60.0
/* A slide is out of focus when more than this fraction of judged sample tiles are blurry. */
#define GS_FOCUS_SLIDE_FRACTION 0.5

/* How a configured focus threshold ([blur] focus_threshold, BlurJob/InferJob.focus_threshold;
 * 0 = not set) is read, in one place for the workers (stages/handlers/blur) and for what the
 * report records (stages/runtime/decision): a value in (0, 1) is on the blur network's scale,
 * P(sharp); one >= 1 is a classical score. */
/* 1 when t is on the network's scale. */
int gs_focus_is_network_threshold(double t);
/* The classical threshold t asks for: t when it is a classical score, else GS_FOCUS_THRESHOLD
 * (what the blur network's sparse-tissue check holds a crop to). */
double gs_focus_classical_threshold(double t);

typedef struct {
    double score;         /* var(L) * (128 / mean_grey)^2; 0 when mean_grey is 0 */
    double laplacian_var; /* raw variance of the Laplacian over the used pixels, grey units^2 */
    double mean_grey;     /* mean grey (0..255) over the used pixels */
    int64_t pixels;       /* number of used pixels */
} gs_focus;

/* Measures the focus of an interleaved image of w x h pixels, `channels` 1 (grey), 3 (RGB) or
 * 4 (RGBA, alpha ignored), rows `stride` bytes apart. mask is NULL (every pixel is tissue) or
 * w*h bytes with rows w apart, nonzero = tissue. Fills *out. Returns 0, or -1 with the message
 * set for NULL pointers, non-positive sizes, a bad channel count or stride, or when no pixel
 * can be used (image smaller than 3x3, or no tissue pixel with four tissue neighbours). The
 * caller owns every buffer. */
int gs_focus_measure(const uint8_t *px, int w, int h, size_t stride, int channels,
                     const uint8_t *mask, gs_focus *out);
int gs_focus_measure_ref(const uint8_t *px, int w, int h, size_t stride, int channels,
                         const uint8_t *mask, gs_focus *out);

/* Grey level (PIL "L", 0..255) at or above which a pixel is glass, not tissue. */
#define GS_FOCUS_GLASS_GREY 215

/* Writes the tissue mask the blur stage measures over: mask[y*w+x] = 1 where the grey value is
 * below glass_grey, else 0 (w*h bytes, caller-owned). Image arguments as gs_focus_measure.
 * Returns the number of tissue pixels, or -1 with the message set. */
int64_t gs_focus_tissue_mask(const uint8_t *px, int w, int h, size_t stride, int channels,
                             int glass_grey, uint8_t *mask);

/* The blur stage's whole judgement of one tile: tissue mask (GS_FOCUS_GLASS_GREY), measure,
 * threshold. Fills *out (may be NULL) and returns 1 if the tile is blurry, 0 if it is sharp, or
 * -1 with the message set (bad arguments, out of memory, or no tissue pixel to measure: the
 * caller cannot judge such a tile). */
int gs_focus_judge_tile(const uint8_t *px, int w, int h, size_t stride, int channels,
                        double threshold, gs_focus *out);

/* Returns 1 if a tile with this measure is blurry under `threshold`, else 0. */
int gs_focus_tile_blurry(const gs_focus *f, double threshold);

/* The per-slide rule: returns 1 if blurry / judged > slide_fraction (judged > 0), else 0. */
int gs_focus_slide_out_of_focus(int blurry, int judged, double slide_fraction);

#endif
