/*
 * colour: Ruifrok & Johnston colour deconvolution of brightfield H&E(-DAB) images.
 *
 * The classical tissue detector (and the source of the foreground network's training labels)
 * separates a thumbnail into haematoxylin, eosin and DAB optical-density maps and thresholds
 * one of them with Otsu. To make those labels reproducible from Python, the numbers follow
 * scikit-image 0.19's skimage.color.rgb2hed exactly: intensities scaled to [0,1], floored at
 * 1e-6, optical density log(I) / log(1e-6) (so black is 1 and white is 0), multiplied by
 * skimage's hed_from_rgb matrix (the inverse of Ruifrok & Johnston's H, E, DAB stain vectors),
 * and negative stain amounts clipped to 0.
 *
 * gs_rgb_to_hed_ref computes each pixel in double precision with the formula above;
 * gs_rgb_to_hed looks every (channel, stain) contribution up in a 256-entry float table and
 * runs rows in parallel, and agrees with the reference within 2e-6. No state, no I/O.
 */
#ifndef GS_OPS_COLOUR_H
#define GS_OPS_COLOUR_H

#include <stddef.h>
#include <stdint.h>

/* Deconvolves an interleaved RGB (channels 3) or RGBA (channels 4, alpha ignored) uint8 image of
 * w x h pixels, rows `stride` bytes apart, into planar w*h float maps (row length w) owned by the
 * caller; any of hema, eosin, dab may be NULL to skip it. Returns 0, or -1 with the message set
 * for NULL input, non-positive sizes, channels other than 3 or 4, or a stride shorter than a
 * row. */
int gs_rgb_to_hed(const uint8_t *rgb, int w, int h, size_t stride, int channels, float *hema,
                  float *eosin, float *dab);
int gs_rgb_to_hed_ref(const uint8_t *rgb, int w, int h, size_t stride, int channels, float *hema,
                      float *eosin, float *dab);

/* The optical density the deconvolution uses for one 8-bit intensity: log(max(v/255, 1e-6)) /
 * log(1e-6), in [0, 1]. */
double gs_colour_od(uint8_t v);

#endif
