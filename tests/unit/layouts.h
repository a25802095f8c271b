/*
 * layouts: test-side conversions between the layouts the runtime and ops/deform_conv take,
 * written once for the unit tests that feed channels-last tensors and raw offsets.
 *
 *     float *cl = malloc(n * c * hw * sizeof *cl);
 *     test_nchw_nhwc(nchw, n, c, hw, cl, 0);       // NCHW -> NHWC; 1: NHWC -> NCHW
 *     test_split_raw_offsets(raw, n, ohw, off, mask); // 27 raw channels -> 18 offsets + 9 masks
 *
 * Header-only (static functions): the tests link no shared helper library.
 */
#ifndef GS_TESTS_UNIT_LAYOUTS_H
#define GS_TESTS_UNIT_LAYOUTS_H

#include <math.h>
#include <stddef.h>

/* NCHW [n][c][hw] -> NHWC [n][hw][c] into dst (back != 0: NHWC src -> NCHW dst). */
static inline void test_nchw_nhwc(const float *src, int n, int c, size_t hw, float *dst, int back)
{
    for (int b = 0; b < n; b++)
        for (int ch = 0; ch < c; ch++)
            for (size_t p = 0; p < hw; p++) {
                size_t cf = ((size_t)b * c + ch) * hw + p, cl = ((size_t)b * hw + p) * c + ch;
                if (back)
                    dst[cf] = src[cl];
                else
                    dst[cl] = src[cf];
            }
}

/* The raw 27-channel output of DCNv2's conv_offset_mask, NCHW [n][27][ohw], as the reference
 * takes it: off [n][18][ohw] (channels 0..17) and mask [n][9][ohw], the sigmoid of channels
 * 18..26 in double precision. */
static inline void test_split_raw_offsets(const float *raw, int n, size_t ohw, float *off,
                                          float *mask)
{
    for (int b = 0; b < n; b++)
        for (size_t p = 0; p < ohw; p++) {
            for (int ch = 0; ch < 18; ch++)
                off[((size_t)b * 18 + ch) * ohw + p] = raw[((size_t)b * 27 + ch) * ohw + p];
            for (int k = 0; k < 9; k++)
                mask[((size_t)b * 9 + k) * ohw + p] =
                    (float)(1.0 / (1.0 + exp(-(double)raw[((size_t)b * 27 + 18 + k) * ohw + p])));
        }
}

#endif
