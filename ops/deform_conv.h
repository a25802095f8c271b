/*
 * deform_conv: modulated deformable convolution (DCNv2), as torchvision.ops.deform_conv2d with
 * a mask, groups = 1 and offset groups = 1.
 *
 * For output pixel (oy, ox) and kernel tap k = i*kw + j, the sampling point is
 *   y = oy*stride_h - pad_h + i*dil_h + dy_k(oy, ox),  x likewise with dx_k,
 * the sample is bilinear with zeros outside the map (0 if y <= -1, y >= H, x <= -1 or x >= W;
 * otherwise each of the four floor-based corners outside the map contributes 0), and
 *   out[co] = bias[co] + sum_{ci,k} weight[co][ci][i][j] * mask_k * sample(ci, y, x).
 * Offsets are interleaved (dy_0, dx_0, dy_1, dx_1, ...): channel 2k is dy_k, 2k+1 is dx_k.
 *
 * Two implementations:
 *  - gs_deform_conv2d_ref(): plain loops over NCHW buffers, the executable specification.
 *  - gs_deform_conv: the fast path. Built once per shape with gs_deform_conv_new() (weights
 *    are reordered once; oneDNN matmul primitives are created once), immutable afterwards so
 *    any number of threads may share it. Every thread that runs it owns a
 *    gs_deform_conv_scratch (gs_deform_conv_scratch_new()), which holds the per-call buffers
 *    (sampling plan, column tile, GEMM tile, oneDNN scratchpad) for each OpenMP thread.
 *    gs_deform_conv_run() splits the output pixels into tiles, and OpenMP threads each take
 *    whole tiles: build the sampling plan for the tile (four corner addresses and four
 *    bilinear weights with the mask folded in, invalid corners weight 0 at a clamped valid
 *    address), gather the column block [tile pixels, Cin16 * taps * 16] (one bilinear sample
 *    of 16 channels = four 16-float vector loads and FMAs with AVX-512, eight 8-float ones
 *    with AVX2, plain C without either), multiply it by the reordered
 *    weight with a single-threaded oneDNN matmul (bias and optional ReLU fused) into a
 *    [tile pixels, Cout16] buffer, and copy its 16-channel rows into the blocked output.
 *    Tiles are ranges of output pixels (not whole rows) sized so that the column block is
 *    about 384 KB; the scratch of one thread is about twice that plus the plan.
 *    (A batched matmul writing nChw16c directly would save the copy, ~3% of the run time,
 *    but oneDNN 2.6 only has its reference kernel for that broadcast/strided form.)
 *
 * Activation layout of the fast path: nChw16c, the layout oneDNN's AVX-512 fp32 convolutions
 * choose, i.e. float [N][ceil(C/16)][H][W][16] with channels >= C in the last block set to 0.
 * The output is written in the same layout with its padding channels set to 0. Padding
 * channels of the input are ignored (their weights are 0) as long as they are finite.
 * gs_deform_conv_pack_nchw16c() / gs_deform_conv_unpack_nchw16c() convert plain NCHW.
 *
 * Offsets and mask may be given in four ways (gs_deform_offset_format):
 *  - GS_DEFORM_OFFSET_SPLIT: torchvision's arguments, offset float NCHW [N, 2*kh*kw, Ho, Wo]
 *    and mask float NCHW [N, kh*kw, Ho, Wo] already after the sigmoid (mask NULL means 1).
 *  - GS_DEFORM_OFFSET_RAW_NCHW: the raw output of DCNv2's conv_offset_mask, one float NCHW
 *    tensor [N, 3*kh*kw, Ho, Wo]; channels 0 .. 2*kh*kw-1 are the interleaved offsets,
 *    channels 2*kh*kw .. 3*kh*kw-1 are mask logits, to which this module applies the sigmoid.
 *  - GS_DEFORM_OFFSET_RAW_BLOCKED: the same 3*kh*kw channels in nChw16c (channels padded to a
 *    multiple of 16), so a oneDNN conv producing them in its preferred layout needs no reorder.
 *  - GS_DEFORM_OFFSET_RAW_NHWC: the same 3*kh*kw channels channels-last, float
 *    [N][Ho][Wo][3*kh*kw]: the format of a conv built with d->nhwc, and of no other (a
 *    channels-last conv refuses the other three).
 *
 * int8 (gs_deform_conv_new_int8, a bf16 conv): the same gather rounds each sample into a u8 or
 * s8 column with a calibrated input scale and the matmul multiplies int8 columns by int8
 * weights (per output channel scales) into bf16; see that function.
 *
 * Channels-last (d->nhwc = 1, fast path only): input [N][H][W][Cin] and output
 * [N][Ho][Wo][Cout], no channel padding, Cin and Cout multiples of 16. oneDNN's AMX
 * convolutions run only on channels-last activations, so a network that uses them keeps its
 * deformable convs channels-last too; the matmul then writes the output rows in place (no
 * copy), and a 16-channel block of an input pixel is still one vector load.
 */
#ifndef GS_OPS_DEFORM_CONV_H
#define GS_OPS_DEFORM_CONV_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    GS_DEFORM_OFFSET_SPLIT = 0,
    GS_DEFORM_OFFSET_RAW_NCHW = 1,
    GS_DEFORM_OFFSET_RAW_BLOCKED = 2,
    GS_DEFORM_OFFSET_RAW_NHWC = 3,
} gs_deform_offset_format;

/* Shape of one deformable conv. h, w are the input's; the output size follows PyTorch:
 * ho = (h + 2*pad_h - dil_h*(kh-1) - 1) / stride_h + 1, wo likewise. */
typedef struct {
    int n, cin, cout, h, w;
    int kh, kw;
    int stride_h, stride_w;
    int pad_h, pad_w;
    int dil_h, dil_w;
    gs_deform_offset_format offset_format; /* used by the fast path only */
    int bf16; /* fast path only: bf16 input/output, see gs_deform_conv_run_bf16 */
    int nhwc; /* fast path only: channels-last input and output (see above) */
} gs_deform_conv_desc;

/* Fills *d with a 3x3, stride 1, pad 1, dilation 1 conv (the DCN layer of the decoder), split
 * offsets. */
void gs_deform_conv_desc_3x3(gs_deform_conv_desc *d, int n, int cin, int cout, int h, int w);

/* Checks the descriptor and computes the output size; returns 0, or -1 with the error set. */
int gs_deform_conv_out_size(const gs_deform_conv_desc *d, int *ho, int *wo);

/* Reference implementation on NCHW buffers: input [N,Cin,H,W], offset [N,2*kh*kw,Ho,Wo],
 * mask [N,kh*kw,Ho,Wo] after sigmoid (NULL = all ones), weight [Cout,Cin,kh,kw], bias [Cout]
 * or NULL, out [N,Cout,Ho,Wo] (caller-owned, overwritten). d->offset_format is ignored.
 * Returns 0, or -1 with the error set on a bad descriptor. */
int gs_deform_conv2d_ref(const gs_deform_conv_desc *d, const float *input, const float *offset,
                         const float *mask, const float *weight, const float *bias, float *out);

typedef struct gs_deform_conv gs_deform_conv;
typedef struct gs_deform_conv_scratch gs_deform_conv_scratch;

/* Builds the fast path for shape *d with weight [Cout,Cin,kh,kw] and bias [Cout] (NULL = 0),
 * both copied; ReLU is applied to the output when fuse_relu is non-zero. Returns a new object
 * the caller frees with gs_deform_conv_destroy(), or NULL with the error set. */
gs_deform_conv *gs_deform_conv_new(const gs_deform_conv_desc *d, const float *weight,
                                   const float *bias, int fuse_relu);

/* Frees *c (NULL allowed) and sets *c to NULL. Scratches made for it must be freed first. */
void gs_deform_conv_destroy(gs_deform_conv **c);

/* The descriptor the object was built for. */
const gs_deform_conv_desc *gs_deform_conv_get_desc(const gs_deform_conv *c);

/* Per-worker scratch for running c with up to omp_get_max_threads() (at this call) OpenMP
 * threads. Returns a new object (free with gs_deform_conv_scratch_destroy()), or NULL with the
 * error set. One scratch must not be used by two calls at the same time. */
gs_deform_conv_scratch *gs_deform_conv_scratch_new(const gs_deform_conv *c);
void gs_deform_conv_scratch_destroy(gs_deform_conv_scratch **s);

/* Runs the conv: input nChw16c [N][ceil(Cin/16)][H][W][16] (NHWC for a d->nhwc conv); offset
 * and mask as selected by the descriptor's offset_format (mask must be NULL for the RAW
 * formats); out nChw16c [N][ceil(Cout/16)][Ho][Wo][16] (NHWC likewise), caller-owned, fully
 * overwritten (padding channels = 0).
 * Uses min(omp_get_max_threads(), threads of the scratch) threads. Returns 0, or -1 with the
 * error set if oneDNN fails or the arguments do not fit. */
int gs_deform_conv_run(const gs_deform_conv *c, gs_deform_conv_scratch *s, const float *input,
                       const float *offset, const float *mask, float *out);

/* The bf16 fast path, for a conv built with d->bf16 = 1: input and out are nChw16c like
 * gs_deform_conv_run's but of bf16 values (uint16_t, ops/dnnl_reorder.h); offsets and mask
 * stay float32 (a bf16 offset of 30 pixels would be off by up to an eighth of a pixel). Each
 * bilinear sample is computed in float32 from the bf16 corners and rounded once to bf16 into
 * the column block; the matmul multiplies bf16 columns by the bf16 weights (rounded once at
 * gs_deform_conv_new) accumulating in float32, adds the float32 bias, applies the ReLU and
 * rounds the result to bf16. Returns 0, or -1 with the error set (also when c was built
 * without bf16; gs_deform_conv_run likewise refuses a bf16 conv). */
int gs_deform_conv_run_bf16(const gs_deform_conv *c, gs_deform_conv_scratch *s,
                            const uint16_t *input, const float *offset, const float *mask,
                            uint16_t *out);

/* The int8 form of a bf16 conv (d->bf16 = 1; run with gs_deform_conv_run_bf16, same input,
 * offsets and output): each bilinear sample, computed in float32 from the bf16 corners as the
 * bf16 path does, is multiplied by in_scale = 255 / amax (u8 != 0, for an input known to be
 * non-negative) or 127 / amax (else), clamped to 0..255 or -127..127 and rounded to nearest
 * even into a u8 or s8 column; the weight is quantised per output channel (symmetric s8,
 * 127 / max|w| of that channel); the matmul (VNNI where the CPU has it) accumulates in int32,
 * adds the bias (pre-scaled into the accumulator's units), scales each output channel back by
 * 1 / (in_scale * weight scale) in float32, applies the ReLU and rounds to bf16. amax is the
 * calibrated largest |input| (model/FORMAT.md): samples beyond it saturate. Returns a new
 * object as gs_deform_conv_new(), or NULL with the error set (also for a float32 descriptor
 * or an amax that is not a positive finite number). */
gs_deform_conv *gs_deform_conv_new_int8(const gs_deform_conv_desc *d, const float *weight,
                                        const float *bias, int fuse_relu, float amax, int u8);

/* 1 for a conv built by gs_deform_conv_new_int8 with u8 columns, -1 with s8, 0 for the others. */
int gs_deform_conv_int8(const gs_deform_conv *c);

/* The kernels that plan and gather, fastest first; a run uses the fastest the CPU has (float32
 * gathers: AVX-512, AVX2 with FMA, else portable C; bf16 and int8 gathers: AVX-512 or
 * portable). */
typedef enum {
    GS_DEFORM_KERNELS_AVX512 = 0,
    GS_DEFORM_KERNELS_AVX2 = 1,
    GS_DEFORM_KERNELS_PORTABLE = 2,
} gs_deform_kernels;

/* Later runs use no kernels faster than `best` (process-wide; for tests and measurements;
 * GS_DEFORM_KERNELS_AVX512 lifts the cap). Returns the kernels runs will now use: the fastest
 * this CPU has at or below best. Results of all kernels agree to rounding. */
gs_deform_kernels gs_deform_conv_cap_kernels(gs_deform_kernels best);

/* Number of floats of an nChw16c buffer for n x c x h x w. */
size_t gs_deform_conv_blocked_size(int n, int c, int h, int w);

/* NCHW [n,c,h,w] -> nChw16c (padding channels set to 0); dst holds
 * gs_deform_conv_blocked_size() floats. */
void gs_deform_conv_pack_nchw16c(const float *src, int n, int c, int h, int w, float *dst);

/* nChw16c -> NCHW [n,c,h,w] (padding channels dropped). */
void gs_deform_conv_unpack_nchw16c(const float *src, int n, int c, int h, int w, float *dst);

#endif
