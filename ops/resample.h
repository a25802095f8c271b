/*
 * resample: resizing of interleaved uint8 images and float planes.
 *
 * Two kernels. Area averaging is the downsampler for thumbnails and for reading a 40X slide at
 * 20X: every destination pixel is the exact area-weighted mean of the source pixels it covers,
 * computed in integers (a source pixel that straddles two destination pixels contributes to both
 * in proportion), so the result does not depend on the order of summation and the fast path
 * agrees with the reference bit for bit. Bilinear resampling follows PyTorch's
 * F.interpolate(mode="bilinear", align_corners=False) so that masks and logit maps line up with
 * what the PyTorch mirror of the networks produces.
 *
 * Every kernel comes as a plain reference (`_ref`, per-pixel loops written for clarity) and a
 * fast version (tables, row caches, OpenMP over destination rows); tests compare the two.
 * The caller owns all buffers; strides are in bytes and may include padding. Nothing here
 * keeps state between calls, so any function may be called from any thread.
 */
#ifndef GS_OPS_RESAMPLE_H
#define GS_OPS_RESAMPLE_H

#include <stddef.h>
#include <stdint.h>

/* Area-average downsampling of an interleaved uint8 image (channels 1..4) to a smaller or equal
 * size; each destination pixel is the exact area-weighted mean of the source pixels it covers,
 * rounded to nearest (halves up). Returns 0, or -1 with the message set if sizes are invalid
 * (zero or negative, destination larger than the source, stride smaller than a row, NULL
 * buffers). src and dst must not overlap. */
int gs_resize_area_u8(const uint8_t *src, int sw, int sh, size_t sstride, int channels,
                      uint8_t *dst, int dw, int dh, size_t dstride);
int gs_resize_area_u8_ref(const uint8_t *src, int sw, int sh, size_t sstride, int channels,
                          uint8_t *dst, int dw, int dh, size_t dstride);

/* Bilinear resampling with half-pixel centres (source x = (x + 0.5) * sw / dw - 0.5, clamped to
 * >= 0, neighbour index clamped to the last column), any size up or down, rounded to nearest.
 * No antialiasing when shrinking (as PyTorch with antialias=False). Returns 0, or -1 with the
 * message set on invalid sizes or NULL buffers. The fast and reference versions give identical
 * bytes. */
int gs_resize_bilinear_u8(const uint8_t *src, int sw, int sh, size_t sstride, int channels,
                          uint8_t *dst, int dw, int dh, size_t dstride);
int gs_resize_bilinear_u8_ref(const uint8_t *src, int sw, int sh, size_t sstride, int channels,
                              uint8_t *dst, int dw, int dh, size_t dstride);

/* The same bilinear resampling for one contiguous float plane (row length = width), e.g. a
 * logit map. Returns 0 or -1 as above. */
int gs_resize_bilinear_f32(const float *src, int sw, int sh, float *dst, int dw, int dh);
int gs_resize_bilinear_f32_ref(const float *src, int sw, int sh, float *dst, int dw, int dh);

#endif
