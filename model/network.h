/*
 * network: the four gastroscreen networks (multi-task DLA-34, foreground, blur, screener) on
 * oneDNN, loaded from a bundle and run on uint8 RGB tiles.
 *
 * A gs_model is loaded once from a bundle (model/FORMAT.md): every tensor of every network
 * present is looked up with the shape the architecture dictates (shared/reference/
 * network-architecture.md, the PyTorch mirror model/pytorch/networks.py), checked finite,
 * batch norm folded into the preceding conv (never into a DCN's conv_offset_mask) with eps
 * from the metadata, and reordered once into oneDNN's layouts (model/runtime.h). A network
 * whose tensors are all absent is "absent" (gs_model_has() = 0) and reported as untrained; a
 * network with some but not all of its tensors, a wrong shape, a non-finite value or a tensor
 * the architecture does not use is an error naming the tensor. The model is immutable:
 * threads share it.
 *
 * A process that runs one network (a stage executable) loads only that one with
 * gs_model_load_nets(): the other networks present are then "skipped": their tensors' names
 * and shapes are still checked against the architecture (a missing, misshapen or unexpected
 * tensor fails the load as before), but their values are never read (so neither checked
 * finite nor their BN variances non-negative), nothing is folded or reordered for them, and
 * their pages of the mapped bundle are not touched. A skipped network keeps its gs_model_has()
 * (the bundle holds it), provenance and gs_model_untrained() answers; gs_model_built() is 0
 * for it and gs_net_state_new() refuses it with a message saying it was not loaded.
 *
 * Each worker makes a gs_net_state per (network, batch, height, width) it runs: the oneDNN
 * primitives for exactly those shapes, activations and scratch. Run functions take the
 * state and caller-owned input/output arrays.
 *
 *     gs_model *m = gs_model_load("bundle.safetensors");
 *     gs_net_state *s = gs_net_state_new(m, GS_NET_MULTITASK, 1, 512, 512);
 *     float logit, feature[512], seg[128 * 128];
 *     gs_net_run_multitask(s, rgb, &logit, feature, seg);
 *     gs_net_state_destroy(&s);
 *     gs_model_destroy(&m);
 *
 * Inputs are normalised as the metadata says: x = (pixel / 255 - input_mean[c]) /
 * input_std[c], RGB. Outputs equal model/pytorch/run.py's (same names in the comments below).
 */
#ifndef GS_MODEL_NETWORK_H
#define GS_MODEL_NETWORK_H

#include <stddef.h>
#include <stdint.h>

#include "model/weights.h"

typedef enum {
    GS_NET_MULTITASK = 0,
    GS_NET_FOREGROUND,
    GS_NET_BLUR,
    GS_NET_SCREENER,
    GS_NET_COUNT
} gs_net_id;

typedef struct gs_model gs_model;
typedef struct gs_net_state gs_net_state;

/* "multitask", "foreground", "blur", "screener" (static strings). */
const char *gs_net_name(gs_net_id id);

/* 1 / (1 + e^-logit), in double: the probability every network's logit stands for (patch
 * score, screener score, P(blurred), segmentation map). */
double gs_sigmoid(double logit);

/* Opens the bundle at `path` (gs_weights_open + gs_weights_check_bundle) and builds every
 * network present. Returns a new model (free with gs_model_destroy) or NULL with an error that
 * starts with the file name and names the tensor or metadata key at fault. */
gs_model *gs_model_load(const char *path);

/* Same on an already opened bundle; takes ownership of *w (sets it to NULL) on success and on
 * failure. */
gs_model *gs_model_from_weights(gs_weights **w);

/* As gs_model_load / gs_model_from_weights, but builds only the networks nets[0..n) (repeats
 * allowed; n = 0 builds none); the others present are checked by name and shape only (see
 * above). Asking for a network absent from the bundle is not an error: it stays absent
 * (untrained), as with gs_model_load. Returns a new model or NULL with the error set (also for
 * an id out of range). */
gs_model *gs_model_load_nets(const char *path, const gs_net_id *nets, size_t n);
gs_model *gs_model_from_weights_nets(gs_weights **w, const gs_net_id *nets, size_t n);

void gs_model_destroy(gs_model **m);

/* 1 if the bundle holds the network's tensors, 0 if it is absent (then untrained). Whether
 * the network was built (gs_model_load_nets) does not change this answer. */
int gs_model_has(const gs_model *m, gs_net_id id);

/* 1 if the network was built, so gs_net_state_new() can make states for it: present in the
 * bundle and asked for (gs_model_load builds every present network). */
int gs_model_built(const gs_model *m, gs_net_id id);

/* The metadata provenance of the network ("untrained" or free text; owned by the model).
 * Absent networks always report "untrained". */
const char *gs_model_provenance(const gs_model *m, gs_net_id id);

/* 1 if the network counts as untrained (absent, or provenance exactly "untrained"). */
int gs_model_untrained(const gs_model *m, gs_net_id id);

/* The bundle's decision metadata (model/FORMAT.md "Metadata"), checked when the model loads:
 * topk a whole number in 1..4096 and each threshold a number in [0, 1]. A judgement is
 * positive (blurred, tissue) when the network's probability is strictly greater. */
typedef struct {
    uint32_t topk;    /* patch features the screener takes */
    float screen;     /* slide positive if the screener score > screen */
    float blur;       /* tile blurred if P(blurred) > blur */
    float foreground; /* pixel is tissue if P(foreground) > foreground */
    /* slide unassessable if more than this share of its tissue tiles is blurry; optional key
     * threshold.blur_slide, GS_MODEL_BLUR_SLIDE_DEFAULT in bundles without it */
    float blur_slide;
    /* the sparse-tissue rule of the blur network: a central crop whose tissue share is below
     * this is also judged by the classical focus measure, blurry if either says so (optional
     * key threshold.blur_sparse_tissue; 0 in bundles without it: the rule is off) */
    float blur_sparse_tissue;
} gs_model_thresholds;

/* The slide-level blur share of bundles that do not name one (the service's long-standing
 * [blur] blur_slide_fraction default). */
#define GS_MODEL_BLUR_SLIDE_DEFAULT 0.5f

/* The bundle's decision metadata (a copy). */
gs_model_thresholds gs_model_get_thresholds(const gs_model *m);

/* The underlying bundle (metadata access); owned by the model. */
const gs_weights *gs_model_weights(const gs_model *m);

/* The arithmetic a model runs the multi-task network in. fp32: float32 throughout. bf16:
 * weights rounded once to bf16 when the precision is set (BN folded first), activations
 * stored in bf16, every conv, deformable conv and transposed conv accumulating in float32;
 * the deformable convs' offsets and the outputs (seg logits, features, logit) are float32.
 * The small networks (foreground, blur, screener: under 5% of a tile's time) always run in
 * fp32, so their thresholded decisions are exactly the trained ones.
 * int8: bf16 (fp32 where bf16 is not native) with the encoder's dense convs (all of base.*
 * but the first 3-channel conv: about half of the fp32 time) as oneDNN int8 convs, s8 weights
 * with per-output-channel scales made at load, the source quantised per tensor with the scale
 * the bundle's calibration stores (model/FORMAT.md "int8 calibration"). The encoder then runs
 * channels-last, the layout oneDNN's VNNI kernels need, so each int8 conv writes its output
 * itself: bf16/fp32 where residual sums, pools or several readers need it (a source several
 * int8 convs read is quantised once), int8 for the next conv where that conv alone reads it;
 * the decoder gets nChw16c through one reorder per level it reads. The decoder's
 * deformable convs and their offset convs, the transposed convs, the heads and the first conv
 * stay bf16: the offsets move sampling positions (an error there is not a small error in the
 * output), the transposed convs are depthwise (no int8 dot-product win) and the heads make
 * the outputs the thresholds judge. */
typedef enum {
    GS_PRECISION_FP32 = 0,
    GS_PRECISION_BF16,
    GS_PRECISION_INT8,
    GS_PRECISION_COUNT
} gs_precision;

/* "fp32", "bf16", "int8" (static strings). */
const char *gs_precision_name(gs_precision p);

/* "fp32", "bf16" or "int8" -> *p. Returns 0, or -1 with the error naming the value. */
int gs_precision_parse(const char *s, gs_precision *p);

/* Metadata key prefix of the accuracy budgets a bundle records (model/FORMAT.md "precision
 * budgets"): GS_PRECISION_BUDGET_PREFIX "bf16" and "int8", written by `gastroscreen calibrate`
 * after running that precision against fp32 on real tiles. */
#define GS_PRECISION_BUDGET_PREFIX "precision.budget."

/* The budgets (patch score, feature cosine, segmentation; against fp32, on every tile): bf16
 * |score| <= 0.01, cosine >= 0.999, max |seg sigmoid| <= 0.02; int8 |score| <= 0.03, cosine
 * >= 0.99, Dice of seg > 0.5 >= 0.95. */
#define GS_BF16_BUDGET_SCORE 0.01
#define GS_BF16_BUDGET_COSINE 0.999
#define GS_BF16_BUDGET_SEG 0.02
#define GS_INT8_BUDGET_SCORE 0.03
#define GS_INT8_BUDGET_COSINE 0.99
#define GS_INT8_BUDGET_DICE 0.95

/* 1 when the bundle w records the budget of p as met (its key's value is "met" or starts with
 * "met;"); fp32 always; 0 otherwise (w NULL, no key, "unmet ..."). */
int gs_precision_budget_met(const gs_weights *w, gs_precision p);

/* The precision to run when none is asked for, on bundle w (may be NULL): the fastest this CPU
 * runs natively whose budget w records as met (gs_precision_budget_met): int8 where the CPU
 * has VNNI (oneDNN ISA avx512_core_vnni), else bf16 where bf16 pays (ops/cpu_rate.h
 * gs_bf16_pays), else fp32. A bundle without such keys runs fp32; so do the seeded bundles this
 * project makes, calibrated or not (their random decoders' segmentation moves by tenths in
 * bf16: tests/parity/precision_budget.py; calibrate records the budgets as unmet). */
gs_precision gs_precision_default(const gs_weights *w);

/* What can run when `asked` is asked for: asked itself, or fp32 when asked is bf16 and the
 * CPU lacks native bf16 (emulated bf16 would be slower than fp32). int8 likewise needs VNNI
 * (oneDNN ISA avx512_core_vnni); without it the answer is bf16 where bf16 pays
 * (ops/cpu_rate.h gs_bf16_pays), else fp32. When the answer is not `asked`, or when bf16 is
 * asked for on a CPU where it runs natively but slower than fp32 (it then still runs), a
 * one-line reason is written to why (len bytes, if not NULL) for the caller's log; otherwise
 * why[0] is set to '\0'. */
gs_precision gs_precision_usable(gs_precision asked, char *why, size_t len);

/* Sets the precision of the states made from now on (states made before keep theirs). bf16
 * rounds the built multi-task network's conv weights to bf16 once (the first time). int8
 * quantises the encoder's convs with the bundle's calibration and runs the other layers in
 * bf16 where bf16 pays on this CPU (gs_bf16_pays), else in fp32; the decoder's deformable
 * convs run int8 too when the rest runs bf16 and the bundle has their ranges (without them:
 * one line on stderr, and they run as the rest); a bundle without calibration
 * (not made by `gastroscreen calibrate`) cannot run int8: the model is then set to bf16 where
 * bf16 pays, else fp32, and one line naming the bundle says so on stderr (check
 * gs_model_precision() for what was set). Call it
 * right after loading, before sharing the model between threads. Returns 0, or -1 with the
 * error set (the model stays as it was). */
int gs_model_set_precision(gs_model *m, gs_precision p);

/* The precision set (GS_PRECISION_FP32 after loading). */
gs_precision gs_model_precision(const gs_model *m);

/* Metadata key prefix of the int8 calibration: "int8.amax.multitask.<layer>" holds the max
 * |x| seen at the input of that conv or deformable conv layer (model/FORMAT.md). */
#define GS_INT8_AMAX_PREFIX "int8.amax."

/* 1 if the bundle holds a calibrated range for every encoder conv int8 quantises (the
 * deformable convs' ranges are optional: model/FORMAT.md). */
int gs_model_has_int8(const gs_model *m);

/* A multi-task state (float32, whatever the precision set) that records the range at the
 * input of every conv and deformable conv int8 quantises while it runs
 * (gs_net_run_multitask); for calibration.
 * Free with gs_net_state_destroy. Returns NULL with the error set. */
gs_net_state *gs_net_state_new_calibrating(const gs_model *m, int n, int h, int w);

/* Calls fn(ctx, key, amax) for each layer int8 quantises, in network order, with its metadata
 * key (GS_INT8_AMAX_PREFIX "multitask.<layer>") and the max |x| over the runs of the
 * calibrating state s so far. Returns the number of layers, or -1 with the error set (s is not
 * calibrating, or has not run). */
int gs_net_state_calibration(const gs_net_state *s,
                             void (*fn)(void *ctx, const char *key, float amax), void *ctx);

/* A per-worker state for network `id` at batch n and input h x w:
 *  multitask: h, w multiples of 32 (512 normally); foreground: multiples of 8 (512);
 *  blur: multiples of 4 (256); screener: n = k rows of features, h = w = 1.
 * Returns a new state (free with gs_net_state_destroy before the model) or NULL with the
 * error set (absent network, network not built by gs_model_load_nets, bad size, oneDNN
 * failure). Not for two threads at once. */
gs_net_state *gs_net_state_new(const gs_model *m, gs_net_id id, int n, int h, int w);
void gs_net_state_destroy(gs_net_state **s);

/* Weights re-reordered for this state because oneDNN chose another layout than at load. */
int gs_net_state_weight_reorders(const gs_net_state *s);

/* Convs of this state that run as Winograd F(4x4, 3x3) (model/runtime.h says which): float32
 * states on AVX-512 CPUs only; 0 otherwise. */
int gs_net_state_winograd_convs(const gs_net_state *s);

/* Activation reorders one forward of this state runs (model/runtime.h gs_rt_plan_reorders):
 * in int8, one quantisation per source some int8 conv reads as float (once however many int8
 * convs read it; none where the writing conv wrote it int8 for its lone reader) plus the
 * encoder's four hand-overs to the decoder. 0 in fp32 and bf16. */
int gs_net_state_reorders(const gs_net_state *s);

/* Where a forward pass spends its time, for `gastroscreen bench` (the buckets of
 * gs_net_state_profile). Every step of every network falls in exactly one. */
typedef enum {
    GS_NET_PART_INPUT = 0,  /* uint8 RGB -> normalised network input */
    GS_NET_PART_ENCODER,    /* the backbone's convs and pools (all of a small network) */
    GS_NET_PART_DCN_OFFSET, /* the decoder's conv_offset_mask convs */
    GS_NET_PART_DCN,        /* the decoder's deformable convs */
    GS_NET_PART_TRANSPOSED, /* the decoder's depthwise transposed convs (skip add fused) */
    GS_NET_PART_HEADS,      /* segmentation head convs, pooling, fc, output extraction */
    GS_NET_PART_REORDERS,   /* memory moves: residual copies, adds, layout conversions */
    GS_NET_PART_COUNT
} gs_net_part;

/* "input", "encoder", "decoder_offsets", "decoder_dcn", "transposed_convs", "heads",
 * "reorders" (static strings). */
const char *gs_net_part_name(gs_net_part part);

/* Profiling of later runs of s: on != 0 clears the per-part totals and starts adding each
 * run's time per part (waiting for every step, so a profiled run is slightly slower); 0 stops
 * (the default: no clock is read, no step waits). */
void gs_net_state_profile(gs_net_state *s, int on);

/* The per-part totals in seconds since profiling was switched on (seconds: caller-owned,
 * GS_NET_PART_COUNT doubles); returns the number of runs they cover. */
int gs_net_state_profile_get(const gs_net_state *s, double *seconds);

/* Multi-task forward on n uint8 RGB tiles rgb[n][h][w][3]. Writes (caller-owned):
 * logit[n] (multitask_logit), feature[n][512] (multitask_feature), seg[n][h/4][w/4]
 * (multitask_seg, logits). Returns 0 or -1 with the error set. */
int gs_net_run_multitask(gs_net_state *s, const uint8_t *rgb, float *logit, float *feature,
                         float *seg);

/* Foreground forward on n thumbnails rgb[n][h][w][3]: logit[n][h][w] (bilinear x8 of the
 * low-resolution logits, align_corners=False; foreground_logit) and, if not NULL,
 * lowres[n][h/8][w/8] (foreground_logit_lowres). Returns 0 or -1. */
int gs_net_run_foreground(gs_net_state *s, const uint8_t *rgb, float *logit, float *lowres);

/* Blur forward on n crops rgb[n][h][w][3] (256x256 normally): logit[n] (blur_logit). The
 * global pool after conv2 is the bundle's pool.blur (model/FORMAT.md): the plain mean, or with
 * "tissue" the mean over the positions whose 4x4 input block holds tissue, so a crop that is
 * mostly glass is judged by its tissue (the same rule as networks.py blur_tissue_mask). */
int gs_net_run_blur(gs_net_state *s, const uint8_t *rgb, float *logit);

/* Screener forward on features[k][512] (k = the state's n; not normalised): *logit
 * (screener_logit). */
int gs_net_run_screener(gs_net_state *s, const float *features, float *logit);

#endif
