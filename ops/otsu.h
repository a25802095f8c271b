/*
 * otsu: Otsu's threshold, as scikit-image computes it.
 *
 * The classical tissue detector thresholds the haematoxylin (or grey) map with Otsu; the
 * foreground network's labels came from skimage.filters.threshold_otsu, so this module follows
 * it to the bin: float values are histogrammed into nbins equal bins spanning [min, max] of the
 * selected values (bin edges rounded to float as numpy does, the maximum falling in the last
 * bin), the between-class variance is evaluated for every split between adjacent bins, the first
 * maximum wins, and the threshold returned is the centre of the last bin of the lower class.
 * So "v > thr" selects the upper class (up to values that share the threshold's bin and lie
 * above its centre, exactly as with skimage). uint8 values get one bin per integer value from
 * the minimum to the maximum present, like skimage does for integer images.
 *
 * Differences from skimage, all for inputs skimage mishandles: non-finite values are ignored
 * (skimage would return NaN), a single distinct value is an error (skimage returns that value),
 * and a bin centre that would overflow to infinity is computed without overflowing.
 *
 * `_ref` versions use the obvious loops (linear bin search, class statistics recomputed for
 * every split); the fast versions bin by arithmetic with per-thread histograms and use running
 * sums. Both give identical thresholds. No state, no I/O.
 */
#ifndef GS_OPS_OTSU_H
#define GS_OPS_OTSU_H

#include <stddef.h>
#include <stdint.h>

/* Otsu threshold of the n values v[i] whose mask[i] != 0 (mask may be NULL: all values), with
 * nbins bins (2 .. 1<<20; 256 matches skimage's default). Writes *thr and returns 0; returns -1
 * with the message set if there are no (finite, selected) values, if they are all equal, or on
 * bad arguments. */
int gs_otsu_f32(const float *v, const uint8_t *mask, size_t n, int nbins, float *thr);
int gs_otsu_f32_ref(const float *v, const uint8_t *mask, size_t n, int nbins, float *thr);

/* The histogram gs_otsu_f32 chooses from: fills counts[nbins] and centers[nbins] (caller-owned)
 * with the number of selected values per bin and the bin centres. Returns 0, or -1 as above. */
int gs_otsu_histogram_f32(const float *v, const uint8_t *mask, size_t n, int nbins,
                          uint64_t *counts, float *centers);
int gs_otsu_histogram_f32_ref(const float *v, const uint8_t *mask, size_t n, int nbins,
                              uint64_t *counts, float *centers);

/* The same for 8-bit values, one bin per value between the smallest and largest present. */
int gs_otsu_u8(const uint8_t *v, const uint8_t *mask, size_t n, uint8_t *thr);
int gs_otsu_u8_ref(const uint8_t *v, const uint8_t *mask, size_t n, uint8_t *thr);

#endif
