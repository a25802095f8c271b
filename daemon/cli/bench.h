/*
 * bench: the measurement library behind `gastroscreen bench` (DESIGN.md §8).
 *
 * Timing figures are never asserted by tests (machines are noisy); this module only measures
 * and describes what it measured, so the performance targets can be checked by a person or a
 * script reading the JSON. It provides:
 *  - a monotonic clock and medians;
 *  - gs_bench_interleaved(): runs several variants A B C A B C ... after warm-up rounds, so
 *    that load from elsewhere on the machine hits every variant alike, and returns the median
 *    time of each;
 *  - gs_bench_dense: a dense oneDNN 3x3 convolution (bias + fused ReLU, format_tag_any for
 *    src, weights and dst, so oneDNN picks its preferred blocked layouts) on random data, the
 *    reference our deformable conv is compared with;
 *  - gs_bench_deform: ops/deform_conv on the same shape with random data (nChw16c in and out
 *    and the raw 27-channel offset/mask tensor in NCHW; below AVX-512 all channels-last, as
 *    the network runs there; offsets within +-3 pixels, bias + fused ReLU);
 *  - gs_bench_machine_get(): CPU model, cores, oneDNN version and ISA;
 *  - gs_bench_multitask_gflop(): the multi-task network's FLOPs per tile, counted from the
 *    layer shapes found in a bundle.
 *
 *     gs_bench_dense *d = gs_bench_dense_new(1, 64, 64, 128, 128, GS_PRECISION_FP32);
 *     gs_bench_deform *f = gs_bench_deform_new(1, 64, 64, 128, 128);
 *     gs_bench_fn fns[2] = {gs_bench_deform_run, gs_bench_dense_run};
 *     void *ctx[2] = {f, d};
 *     double med[2];
 *     gs_bench_interleaved(2, fns, ctx, 2, 10, med);
 *
 * All objects are single-threaded from the caller's point of view (they run with the current
 * omp_get_max_threads() OpenMP threads) and must not be run by two threads at once.
 */
#ifndef GS_DAEMON_CLI_BENCH_H
#define GS_DAEMON_CLI_BENCH_H

#include <stddef.h>

#include "model/network.h"
#include "model/weights.h"

/* Seconds on a monotonic clock (arbitrary origin). */
double gs_bench_now(void);

/* The median of t[0..n-1] (n >= 1); sorts t in place. */
double gs_bench_median(double *t, int n);

/* One variant to time: runs the work once on ctx; returns 0, or -1 with the error set. */
typedef int (*gs_bench_fn)(void *ctx);

/* Runs `warmup` untimed rounds then `repeat` timed rounds (repeat >= 1); each round runs
 * fns[0](ctx[0]), fns[1](ctx[1]), ... once. medians[i] (caller-owned, nvar doubles) receives
 * the median time in seconds of variant i. Returns 0, or -1 with the error of the first
 * failing variant (prefixed with its index). */
int gs_bench_interleaved(int nvar, const gs_bench_fn *fns, void *const *ctx, int warmup, int repeat,
                         double *medians);

/* FLOPs (multiply and add counted apart) of a k x k convolution producing n x cout x ho x wo
 * from cin channels: 2 * n * cout * ho * wo * cin * k * k, in GFLOP. */
double gs_bench_conv_gflop(int n, int cin, int cout, int ho, int wo, int k);

typedef struct gs_bench_dense gs_bench_dense;

/* A dense 3x3, stride 1, pad 1 conv n x cin x h x w -> n x cout x h x w with bias and ReLU, on
 * random data, in precision p as the network runs its convs in p: fp32 throughout; bf16
 * source, weights and output (f32 bias); int8 u8 source and output, s8 weights, f32 bias and
 * per-channel output scales. Returns a new object (free with gs_bench_dense_destroy) or NULL
 * with the error set (oneDNN failure, no implementation for p on this CPU, out of memory). */
gs_bench_dense *gs_bench_dense_new(int n, int cin, int cout, int h, int w, gs_precision p);
void gs_bench_dense_destroy(gs_bench_dense **d);

/* Runs the conv once (waits for the stream); ctx is a gs_bench_dense. Returns 0 or -1. */
int gs_bench_dense_run(void *ctx);

/* The oneDNN implementation oneDNN chose (e.g. "brg:avx512_core"); owned by d. */
const char *gs_bench_dense_impl(const gs_bench_dense *d);

/* The data type of the conv's source as oneDNN built it ("f32", "bf16", "u8"); static. */
const char *gs_bench_dense_src_type(const gs_bench_dense *d);

typedef struct gs_bench_deform gs_bench_deform;

/* Our deformable 3x3 conv with the same geometry as gs_bench_dense_new(), on random data.
 * Returns a new object (free with gs_bench_deform_destroy) or NULL with the error set. Its
 * scratch is sized for the omp_get_max_threads() of this call. */
gs_bench_deform *gs_bench_deform_new(int n, int cin, int cout, int h, int w);
void gs_bench_deform_destroy(gs_bench_deform **f);

/* Runs the deformable conv once; ctx is a gs_bench_deform. Returns 0 or -1. */
int gs_bench_deform_run(void *ctx);

/* What the machine is; strings are NUL-terminated and truncated to fit. */
typedef struct {
    char cpu[128];   /* "model name" of /proc/cpuinfo, or "unknown" */
    int cpus;        /* online logical CPUs */
    char onednn[32]; /* "2.6.3" */
    char isa[64];    /* oneDNN's effective ISA, e.g. "cpu_isa_avx512_core_bf16" */
} gs_bench_machine;

/* Fills *m. Never fails (unknown fields say "unknown"). */
void gs_bench_machine_get(gs_bench_machine *m);

/* FLOPs of one forward pass of the multi-task network on one h x w tile (h, w multiples of
 * 32), counted from the shapes of the "multitask." conv, DCN, transposed-conv and fc weights
 * in the bundle and the resolution each runs at (network-architecture.md §2-§5): 2 FLOPs per
 * multiply-add, DCN = main GEMM + conv_offset_mask, bilinear gathering, pooling, batch norm
 * and activations not counted (BN is folded). The discarded projections of base.level3 and
 * base.level4 (§2.2) are not counted because the runtime skips them. Returns the GFLOP count,
 * or -1 with the error set when a multitask tensor has a name this counter does not know (so
 * an architecture change cannot silently go uncounted) or the bundle has no multitask. */
double gs_bench_multitask_gflop(const gs_weights *w, int h, int wd);

#endif
