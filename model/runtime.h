/*
 * runtime: the oneDNN layer machinery the networks are built from.
 *
 * Two kinds of objects, matching the split between an immutable model and a per-worker state:
 *  - gs_rt_conv: one convolution or depthwise transposed convolution with its weights, batch
 *    norm already folded in (gs_rt_fold_bn) and reordered ONCE into the layout oneDNN prefers
 *    for it. It is built when the bundle is loaded and then only read, so threads share it.
 *  - gs_rt_plan: a straight-line program for one (batch, height, width): the activation
 *    buffers, the oneDNN primitives made for exactly those shapes, the deformable convs of
 *    ops/deform_conv with their scratch, and a stream. Building it records steps; running it
 *    executes them in order. A plan belongs to one worker at a time.
 *
 * Activations live in oneDNN's nChw16c layout (aBcd16b, channels padded to 16 with zeros)
 * from layer to layer: it is the layout oneDNN's AVX-512 fp32 convolutions pick for
 * format_tag_any, ops/deform_conv works in it without reorders, and channel blocks of 16 let
 * Root's split-K convs and the residual copies stay plain memcpy/sum. Only the network input
 * (3 channels, NCHW) is plain. A plan can instead keep them channels-last
 * (gs_rt_plan_set_channels_last): oneDNN 2.6's int8 VNNI and its AMX (bf16, int8) convs run
 * only on that layout, and every step here accepts it. Below AVX-512 (gs_rt_blocked_native()
 * == 0) channels-last is every plan's default and the layout weights are chosen for: there
 * oneDNN's fast fp32 convs (jit:avx2) take nChw8c or channels-last, and an nChw16c conv falls
 * to its reference kernel (a 512 x 512 tile did not finish in 10 minutes on an AVX2 CPU;
 * channels-last took 0.94 s). Weights are created with format_tag_any and reordered to what
 * the primitive asks for.
 *
 * Winograd: a float32 3 x 3 stride-1 conv with at least 64 input channels on maps of at least
 * 32 x 32 (nChw16c) runs oneDNN's Winograd F(4x4, 3x3) where oneDNN offers it (AVX-512), which
 * does 2.25x fewer multiplications than the direct conv: measured at 0.42-0.66 of the direct
 * conv's time on those shapes (2 threads), with errors of ~1e-6 of the output scale. Such a
 * conv is made for one image and run once per image (runtime.c gs_rt_plan_conv: batching must
 * not change a tile's bits), with a scratchpad the plan owns. Its weights are transformed once
 * per conv and shared by every plan of every batch size (gs_rt_conv relaid; four times the
 * direct weights: ~94 MB per multi-task model). Smaller maps or fewer channels stay
 * direct (16 channels at 512 px was 3-4x slower as Winograd; 16 x 16 maps gained too little
 * for their large weights). bf16 and int8 have no Winograd in oneDNN 2.6.
 *
 * A plan can be "dry": it only tracks shapes, makes no buffers and no primitives. The network
 * builders walk the architecture once dry while loading the model (to create the gs_rt_conv
 * objects in order) and again for real for each state, so the architecture is written once.
 *
 * Fusion: conv + folded BN + activation is one primitive with an eltwise post-op; a residual
 * add is a sum post-op into a destination pre-filled with the other operand (a copy step
 * when that operand must survive); Root's 1x1 conv over a concat is split by input channel
 * ranges, each part accumulating into the same destination through sum post-ops. The
 * decoder's depthwise transposed convs run in our own kernel with the skip add fused
 * (gs_rt_plan_dwdeconv says why); oneDNN's deconvolution remains available through
 * gs_rt_plan_conv and is what the unit test checks that kernel against.
 *
 * int8 (gs_rt_conv_make_int8, gs_rt_plan_set_int8): a conv with int8 weights becomes a
 * quantising reorder of its source and a oneDNN int8 conv. oneDNN 2.6 runs its VNNI int8
 * kernels only on channels-last (acdb) source and destination, so the int8 part of a network
 * keeps its activations channels-last (gs_rt_plan_set_channels_last): each int8 conv then
 * writes its destination directly (sums and activations as post-ops) and only the quantising
 * reorder remains; pools, copies and adds work on either layout, and gs_rt_plan_to_blocked
 * hands a tensor to the nChw16c part of the network. A source is quantised once however many
 * int8 convs read it (the copy lives until a step writes the source or it is released), and
 * an output only the next int8 conv reads is written int8 by its conv
 * (gs_rt_plan_conv_feeding), so that edge has no reorder at all. An int8 conv into an nChw16c
 * destination still works, through a channels-last float buffer and a reorder back (one to
 * three reorders per conv: the quantisation may be shared). Buffers come from the plan's pool:
 * the channels-last float buffer is free again after its conv, a quantised copy once its source
 * is written again or released (so the copies of the encoder levels the decoder reads stay
 * until the hand-over: about 1.75 MB per 512 x 512 tile in all); an int8 state needs little
 * more memory than a bf16 one.
 */
#ifndef GS_MODEL_RUNTIME_H
#define GS_MODEL_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#include <oneapi/dnnl/dnnl.h>

#include "ops/deform_conv.h"

/* Activation at one site. */
typedef enum { GS_ACT_NONE = 0, GS_ACT_RELU, GS_ACT_LEAKY } gs_act_kind;
typedef struct {
    gs_act_kind kind;
    float slope; /* leaky only */
} gs_act;

/* Parses the bundle's "activation" metadata: "relu" or "leaky:<slope>" with 0 <= slope < 1.
 * Returns 0, or -1 with the error naming the value. */
int gs_act_parse(const char *spec, gs_act *act);

/* Folds inference batch norm into a conv: s = gamma / sqrt(var + eps) per output channel,
 * w[o][*] *= s (per_out weights per output channel), b[o] = (b[o] - mean) * s + beta.
 * w and b (cout floats; its input is the conv bias or zeros) are modified in place. */
void gs_rt_fold_bn(float *w, float *b, int cout, size_t per_out, const float *gamma,
                   const float *beta, const float *mean, const float *var, float eps);

typedef struct gs_rt_relaid gs_rt_relaid;

/* One convolution (or depthwise deconvolution) with its weights in oneDNN's layout. Owned by
 * whoever embeds it (not to be copied by value); free with gs_rt_conv_free. */
typedef struct {
    int cin, cout, kh, kw, stride, pad;
    int deconv;               /* depthwise transposed conv: groups = cin = cout, no bias */
    int has_bias;             /* bias used (folded BN or conv bias) */
    dnnl_memory_desc_t wmd;   /* layout chosen at load */
    float *wr;                /* weights in wmd (64-byte aligned, owned) */
    float *bias;              /* [cout] or NULL (owned) */
    float *dwk;               /* deconv only: [ceil(c/16)][kh][kw][16] for gs_rt_plan_dwdeconv */
    dnnl_memory_desc_t wmd16; /* bf16 weights' layout (gs_rt_conv_make_bf16) */
    void *wr16;               /* bf16 weights in wmd16, or NULL (owned) */
    float *dwk16;             /* deconv only: dwk rounded to bf16 values, or NULL (owned) */
    int8_t *w8;               /* int8 weights, plain OIHW, or NULL (gs_rt_conv_make_int8; owned) */
    float *oscale;            /* int8: [cout] 1 / (in_scale * weight scale[o]) (owned) */
    float *bias8;             /* int8: [cout] bias in accumulator units, or NULL (owned) */
    float in_scale;           /* int8: source quantised as round(x * in_scale) */
    int in_u8;                /* int8: source is u8 (after ReLU), else s8 */
    /* Weights in the other layouts plans asked for (Winograd's above all), made by the first
     * plan that asks and shared by every later one, of any batch size, from any thread. */
    gs_rt_relaid *relaid;
} gs_rt_conv;

/* Fills c from plain weights: conv OIHW [cout][cin][kh][kw], deconv [c][1][kh][kw] (the
 * PyTorch depthwise ConvTranspose2d layout); bias [cout] or NULL; both copied. The layout is
 * the one oneDNN picks for this geometry on a nominal 64x64 input. Returns 0, or -1 with the
 * error set (c is then empty). */
int gs_rt_conv_init(gs_rt_conv *c, dnnl_engine_t engine, int cin, int cout, int k, int stride,
                    int pad, int deconv, const float *w, const float *bias);
void gs_rt_conv_free(gs_rt_conv *c);

/* Number of other weight layouts c holds for plans (see relaid above). */
int gs_rt_conv_relaid(const gs_rt_conv *c);

/* Adds bf16 weights to c: the float32 weights (BN already folded) rounded to nearest even
 * into the layout oneDNN picks for a bf16 conv of this geometry between nChw16c activations
 * (cl != 0: channels-last ones, as the plans that will run it have), the transposed conv's
 * kernel likewise; the bias stays float32. Plans then run c on bf16 sources. Once only: a
 * second call is a no-op whatever cl says, and a plan wanting the other layout reorders the
 * weights for itself (gs_rt_plan_weight_reorders). Returns 0, or -1 with the error set (c
 * keeps its float32 weights). */
int gs_rt_conv_make_bf16(gs_rt_conv *c, dnnl_engine_t engine, int cl);

/* Adds int8 weights to c (again replaces them) for oneDNN int8 convolutions on VNNI:
 * per-output-channel symmetric weight scales from the folded float32 weights, ws[o] =
 * 127 / max|w[o][*]|, weights round(w * ws[o]) in [-127, 127]; the source is quantised per
 * tensor with in_scale = 255 / amax (u8 != 0: the conv reads the output of a ReLU, so it is
 * never negative) or 127 / amax (s8), amax the calibrated max |x| of the conv's input. The
 * conv then computes dst = (sum q_x q_w + bias8) * oscale, i.e. conv(x, w) + bias to within
 * the two roundings: per product |x| <= amax, error <= |w| amax / (2 * 255 or 127) from the
 * source plus |x| max|w[o]| / 254 from the weights. Only dense convs (not the transposed
 * convs) can be made int8. Returns 0, or -1 with the error set (c is unchanged). */
int gs_rt_conv_make_int8(gs_rt_conv *c, dnnl_engine_t engine, float amax, int u8);

/* 1 when oneDNN runs its fast fp32 convs on nChw16c here (ISA avx512_core or above), 0 when
 * plans default to channels-last (see the top). */
int gs_rt_blocked_native(void);

/* One activation tensor of a plan: n x c x h x w, nChw16c unless plain or cl, float32 or
 * bf16 (uint16_t, ops/dnnl_reorder.h). Owned by the plan. */
typedef struct {
    int n, c, h, w;
    int plain; /* NCHW */
    int cl;    /* channels-last NHWC (acdb), no channel padding */
    int bf16;  /* elements are bf16 */
    int q;     /* elements are int8 (1: u8, -1: s8) quantised as round(x * qscale) for
                  the int8 conv that reads them; 0: float */
    float qscale;
    void *data;    /* NULL in a dry plan */
    size_t nelems; /* elements of the buffer (with channel padding) */
    dnnl_memory_desc_t md;
    dnnl_memory_t mem;
    int buf; /* index of the pooled buffer */
} gs_rt_tensor;

typedef struct gs_rt_plan gs_rt_plan;

/* A new plan for batch n on `engine` (borrowed; must outlive the plan). dry != 0 makes a
 * shape-only plan. Returns NULL with the error set. Free with gs_rt_plan_destroy. */
gs_rt_plan *gs_rt_plan_new(dnnl_engine_t engine, int n, int dry);
void gs_rt_plan_destroy(gs_rt_plan **p);
int gs_rt_plan_is_dry(const gs_rt_plan *p);

/* A new tensor (plain NCHW if plain != 0). Its buffer may be one released earlier in the plan
 * (gs_rt_plan_release); its contents are unspecified (possibly another tensor's bytes of another
 * type) until a step writes them. Returns NULL with the error set. */
gs_rt_tensor *gs_rt_plan_tensor(gs_rt_plan *p, int c, int h, int w, int plain);

/* Tensors created later (also those steps create) are bf16 when on != 0, float32 otherwise
 * (the default). A bf16 plan runs convs, pools, deformable and transposed convs in bf16 with
 * float32 accumulation; steps whose input is bf16 make bf16 outputs. */
void gs_rt_plan_set_bf16(gs_rt_plan *p, int on);

/* on != 0: convs added later whose gs_rt_conv has int8 weights run as oneDNN int8 convs: a
 * reorder quantises the (float32 or bf16) source into a u8/s8 buffer of the plan with the
 * conv's in_scale, the int8 conv writes the float32/bf16 destination with its output scales,
 * bias, sum and activation post-ops, so the rest of the plan does not change. Other convs run
 * as the plan's float type says. */
void gs_rt_plan_set_int8(gs_rt_plan *p, int on);

/* on != 0: tensors created later (gs_rt_plan_tensor, gs_rt_plan_tensor_f32 and conv outputs;
 * not plain ones) are channels-last; pools, copies, the deformable and transposed convs
 * follow their source's layout whatever this says (channels-last ones need channel counts
 * that are multiples of 16), gs_rt_gap and gs_rt_extract_channel read either, and
 * gs_rt_plan_to_blocked hands a tensor to an nChw16c part. The default is
 * !gs_rt_blocked_native(). */
void gs_rt_plan_set_channels_last(gs_rt_plan *p, int on);
int gs_rt_plan_channels_last(const gs_rt_plan *p);

/* Step: dst (created, nChw16c) = src (channels-last), one oneDNN reorder. */
int gs_rt_plan_to_blocked(gs_rt_plan *p, gs_rt_tensor *src, gs_rt_tensor **dst);

/* Number of the plan's steps that are oneDNN reorders of activations (quantising sources,
 * layout conversions); weights reordered while planning are not steps and not counted. */
int gs_rt_plan_reorders(const gs_rt_plan *p);

/* on != 0: every conv and deformable conv added later first records max |x| of its source
 * (over all runs, padding channels included: they are zeros) for calibration;
 * gs_rt_plan_observed reads it. */
void gs_rt_plan_set_observe(gs_rt_plan *p, int on);

/* The largest |x| seen over the runs so far at the input of the layer `key` stands for (a
 * conv: its gs_rt_conv; a deformable conv: the weight pointer it was planned with), or -1 if no
 * observed step reads it. */
float gs_rt_plan_observed(const gs_rt_plan *p, const void *key);

/* As gs_rt_plan_tensor, but float32 whatever the plan: a conv from a bf16 source may write
 * it (oneDNN accumulates in float32 and skips the final rounding), e.g. the deformable convs'
 * offsets and the network outputs. */
gs_rt_tensor *gs_rt_plan_tensor_f32(gs_rt_plan *p, int c, int h, int w, int plain);

/* Declares that no step added later reads t: its buffer may back later tensors. */
void gs_rt_plan_release(gs_rt_plan *p, gs_rt_tensor *t);

/* Step: dst = act(conv(src) + bias [+ dst if sum]). dst is created when *dst is NULL (with the
 * conv's output shape), else must have that shape. Returns 0 or -1 with the error set. */
int gs_rt_plan_conv(gs_rt_plan *p, const gs_rt_conv *c, gs_rt_tensor *src, gs_rt_tensor **dst,
                    int sum, gs_act act);

/* Step: *dst (created) = act(conv(src) + bias), a tensor that conv `next` alone reads (the
 * caller's promise: next is the only step reading it, and nothing writes it). When c and next
 * both run int8 in a channels-last plan, *dst is made int8 already quantised for next (u8/s8,
 * qscale = next's in_scale, folded into c's output scales: one rounding instead of bf16 then
 * int8), so next reads it without a reorder. Otherwise it is gs_rt_plan_conv. */
int gs_rt_plan_conv_feeding(gs_rt_plan *p, const gs_rt_conv *c, gs_rt_tensor *src,
                            gs_rt_tensor **dst, gs_act act, const gs_rt_conv *next);

/* Step: dst = maxpool 2x2 stride 2 (floor) of src; creates *dst. */
int gs_rt_plan_maxpool2(gs_rt_plan *p, gs_rt_tensor *src, gs_rt_tensor **dst);

/* Step: dst (created) = copy of src. */
int gs_rt_plan_copy(gs_rt_plan *p, gs_rt_tensor *src, gs_rt_tensor **dst);

/* Step: dst += src elementwise (same shape and layout). */
int gs_rt_plan_add(gs_rt_plan *p, gs_rt_tensor *dst, gs_rt_tensor *src);

/* Step: dst (created) = skip + depthwise transposed conv c of src, in one pass over src's
 * layout (nChw16c, or channels-last with a multiple of 16 channels; skip and dst in the same)
 * (our own kernel; PyTorch's index relation out = in*stride - pad + k, no flip). oneDNN 2.6's
 * depthwise deconvolution (jit_dw, built on backward-data) was measured at ~1 GFLOP/s here (15-18
 * ms for 64 channels 64x64 -> 128x128, about a quarter of the whole multi-task forward for 0.2% of
 * its FLOPs), so the network uses this; gs_rt_plan_conv still runs c through oneDNN and the unit
 * test checks the two against each other. */
int gs_rt_plan_dwdeconv(gs_rt_plan *p, const gs_rt_conv *c, gs_rt_tensor *src, gs_rt_tensor *skip,
                        gs_rt_tensor **dst);

/* Step: t = act(t) in place (nothing for GS_ACT_NONE). */
int gs_rt_plan_act(gs_rt_plan *p, gs_rt_tensor *t, gs_act act);

/* Step: dst (created) = act(modulated deformable 3x3 conv of src) with offsets and mask taken
 * from the 27-channel float32 raw tensor `offset` (output of the conv_offset_mask conv; a bf16
 * src makes a bf16 conv and output, ops/deform_conv gs_deform_conv_run_bf16), weights
 * [cout][cin][3][3] and bias [cout] (borrowed from the model; copied into the ops object).
 * src, offset and dst share one layout, nChw16c or channels-last; channels-last needs cin and
 * cout multiples of 16. In an int8 plan (gs_rt_plan_set_int8) with a bf16 src and
 * int8_amax > 0 it is the int8 form (gs_deform_conv_new_int8: columns u8 when int8_u8, else
 * s8, for inputs within +-int8_amax); otherwise int8_amax and int8_u8 are ignored. */
int gs_rt_plan_dcn(gs_rt_plan *p, const float *weight, const float *bias, int cout,
                   gs_rt_tensor *src, gs_rt_tensor *offset, gs_act act, float int8_amax,
                   int int8_u8, gs_rt_tensor **dst);

/* Profiling buckets the runtime itself assigns: residual copies and adds always go to
 * GS_RT_PART_MOVES; every other step goes to the bucket last set with gs_rt_plan_set_part
 * (0 until then). The network (model/network.h gs_net_part) names the buckets. */
enum { GS_RT_PART_MOVES = 6 };

/* Steps added from now on are timed into bucket `part` when profiling. */
void gs_rt_plan_set_part(gs_rt_plan *p, int part);

/* seconds != NULL: later runs wait for every step and add its wall time to
 * seconds[its bucket] (buckets >= nparts are not counted); the array is borrowed and must
 * outlive the profiling. NULL switches profiling off (the default: no waits, no clock). */
void gs_rt_plan_profile(gs_rt_plan *p, double *seconds, int nparts);

/* Seconds on a monotonic clock (arbitrary origin). */
double gs_rt_now(void);

/* Runs every step in order. Returns 0 or -1 with the error set. */
int gs_rt_plan_run(gs_rt_plan *p);

/* Number of weight layouts that had to be re-reordered for this plan's shapes because oneDNN
 * chose a different one than at load (0 expected on one machine; for diagnostics). */
int gs_rt_plan_weight_reorders(const gs_rt_plan *p);

/* Convs of this plan that run oneDNN's Winograd F(4x4, 3x3) algorithm (see the top). */
int gs_rt_plan_winograd_convs(const gs_rt_plan *p);

/* Global average over h*w of a blocked or channels-last tensor: out[n][c] (n x t->c floats,
 * caller-owned). */
void gs_rt_gap(const gs_rt_tensor *t, float *out);

/* As gs_rt_gap, but the mean of image n is over the positions i with mask[n * h * w + i] != 0
 * (mask: n x h x w bytes, borrowed; every image must have at least one; NULL: all). */
void gs_rt_masked_mean(const gs_rt_tensor *t, const uint8_t *mask, float *out);

/* Copies channel `ch` of (plain, blocked or channels-last; float32 or bf16) tensor t into
 * out[n][h][w] as float32
 * (caller-owned). */
void gs_rt_extract_channel(const gs_rt_tensor *t, int ch, float *out);

#endif
