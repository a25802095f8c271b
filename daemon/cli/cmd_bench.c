/*
 * cmd_bench: `gastroscreen bench [--json] [--threads N] [--repeat N] [--quick]
 * [--model BUNDLE] [--slide FILE]`, the performance figures of DESIGN.md §8 for this machine,
 * in one run.
 *
 * Prints the machine (CPU, threads used, oneDNN version and ISA, and the measured bf16/fp32
 * multiply-add rate that decides whether bf16 pays here: ops/cpu_rate.h), then:
 *  - for each decoder deformable-conv shape (network-architecture.md §3.3), our primitive vs
 *    a dense oneDNN 3x3 conv of the same shape: median times, their ratio (target <= 1.5) and
 *    both GFLOP/s;
 *  - the dense-conv FLOP rate reference: the median over the distinct stride-1 3x3 conv shapes
 *    of the multi-task network (7 decoder + 3 encoder/head shapes, batch 1) of the GFLOP/s
 *    oneDNN reaches running them as dense convs;
 *  - the bundle of --model, else the default bundle (daemon/cli/default_bundle.h; skipped
 *    with --no-network): the multi-task network's tiles/s and GFLOP/s at batch 1 and 4 on
 *    512x512 tiles (FLOPs counted from the bundle's layer shapes), their fraction of that
 *    reference (target >= 0.70), also against the same reference convs re-timed interleaved
 *    with the network (so a change of machine load between sections does not skew the
 *    fraction), for fp32 and, where the CPU runs it natively, bf16 (or the --precision
 *    asked for), all interleaved in the same rounds; each precision also against the same
 *    dense convs run in that precision (bf16, or u8/s8 int8), with the time a tile would take
 *    at that rate, the floor a precision's target is to be read against on this CPU (the
 *    fp32 network beats its floor only through Winograd); where a tile's time goes (separate
 *    profiled runs, gs_net_state_profile: per part medians, whose sum is a little above the
 *    unprofiled time because every step is waited for); and the small networks' times.
 * Medians over --repeat timed rounds after warm-up rounds; the variants being compared run
 * interleaved (A B A B ...) so machine noise hits them alike. --json prints one JSON object
 * with every figure instead (tests/bench/torch_side.py reads it). --quick runs one decoder
 * shape only (and batch 1 only for the network), for smoke tests.
 *
 * --slide FILE adds the whole-slide figure: for each precision of the network section, FILE
 * screened --repeat times by the embedded service (daemon/cli/embedded, what `screen` runs:
 * no sockets), each time in a fresh service (a new journal, so the slide is never a
 * duplicate; loading the bundle and starting the workers is not timed), from submission to
 * DONE. It gives the median wall time as slides/hour, the tiles inferred, the share of that
 * time the slide spent in the infer stage (the coordinator's stage timings, report.json's
 * "timings": the network, with the tiler reading the next tiles alongside) and the share
 * outside it (plan, blur check, screener, report: reading, planning, thumbnails, writing),
 * and the process's peak-RSS growth over the precision's runs (a high-water mark: only what
 * it reaches beyond the earlier precisions shows; tests/bench/pipeline.sh measures each
 * process's peak apart).
 */
#include "daemon/cli/commands.h"

#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <omp.h>

#include "daemon/cli/bench.h"
#include "daemon/cli/default_bundle.h"
#include "daemon/cli/embedded.h"
#include "daemon/service/config.h"
#include "model/network.h"
#include "ops/cpu_rate.h"
#include "ops/dnnl_reorder.h"
#include "ops/error.h"
#include "stages/runtime/fileio.h"

/* Decoder DCN shapes of network-architecture.md §3.3 (cin -> cout @ side), batch 1. */
typedef struct {
    int cin, cout, res;
} conv_shape;

static const conv_shape DECODER_SHAPES[] = {
    {512, 256, 16}, {256, 256, 32}, {256, 128, 32}, {128, 128, 64},
    {128, 64, 64},  {64, 64, 128},  {256, 64, 32},
};
enum { N_DECODER = sizeof DECODER_SHAPES / sizeof DECODER_SHAPES[0] };
/* The shape --quick runs: the cheapest decoder shape, enough to exercise both paths. */
enum { QUICK_SHAPE = 6 };

/* The other distinct stride-1 3x3 conv shapes of the multi-task network (encoder stem and
 * level0, level5's blocks, the seg head); the ones shared with the decoder are not repeated. */
static const conv_shape OTHER_SHAPES[] = {{16, 16, 512}, {512, 512, 16}, {64, 256, 128}};
enum { N_OTHER = sizeof OTHER_SHAPES / sizeof OTHER_SHAPES[0] };

typedef struct {
    int json;
    int threads;
    int repeat;
    int quick;
    int no_network;
    int have_precision;
    gs_precision precision;
    const char *model;
    char model_buf[4096]; /* the default bundle found when --model is not given */
    const char *slide;    /* --slide: the whole-slide figure of this file; NULL = none */
} bench_opts;

enum { N_REF = N_DECODER + N_OTHER };

/* The shapes of the dense reference (only the quick shape with --quick); returns how many. */
static int reference_shapes(const bench_opts *o, conv_shape *out)
{
    if (o->quick) {
        out[0] = DECODER_SHAPES[QUICK_SHAPE];
        return 1;
    }
    for (int k = 0; k < N_DECODER; k++)
        out[k] = DECODER_SHAPES[k];
    for (int k = 0; k < N_OTHER; k++)
        out[N_DECODER + k] = OTHER_SHAPES[k];
    return N_REF;
}

#define DENSE_REFERENCE_DEFINITION                                                                 \
    "median over the distinct stride-1 3x3 conv shapes of the multi-task network at 512x512 "      \
    "(the 7 decoder shapes + 16->16@512, 512->512@16, 64->256@128), batch 1, of the GFLOP/s "      \
    "of a dense oneDNN conv (bias + fused ReLU, format_tag_any) of that shape"

static const char *const USAGE =
    "usage: gastroscreen bench [--json] [--threads N] [--repeat N] [--quick]\n"
    "                          [--model BUNDLE | --no-network] [--precision fp32|bf16|int8]\n"
    "                          [--slide FILE]\n"
    "\n"
    "Measures on this machine, in one run: each decoder deformable-conv shape with our\n"
    "primitive vs a dense oneDNN 3x3 conv of the same shape (target: ratio <= 1.5); the\n"
    "dense-conv FLOP rate reference (median GFLOP/s of oneDNN dense convs over the network's\n"
    "own 3x3 shapes); the multi-task network's tiles/s and GFLOP/s at batch 1 and 4 on\n"
    "512x512 tiles and their fraction of that reference (target >= 0.70) and of the same\n"
    "dense convs run in each precision measured (with the time a tile would take at that\n"
    "rate), where its time goes (per part: input, encoder, decoder offsets, decoder DCN,\n"
    "transposed convs, heads, reorders), and the small networks' times.\n"
    "\n"
    "  --json         print one JSON object with every figure instead of the table\n"
    "  --threads N    OpenMP threads for everything (default: all, as OMP_NUM_THREADS)\n"
    "  --repeat N     timed rounds; figures are medians (default 10); warm-up rounds first\n"
    "  --quick        one decoder shape and batch 1 only (smoke tests)\n"
    "  --model B      the model bundle to measure (default: the built or installed default\n"
    "                 bundle, found as `gastroscreen screen` finds it). A seeded bundle\n"
    "                 (random weights, same cost) is made with\n"
    "                   /usr/bin/python3 model/pytorch/make_bundle.py --seed 1 --out B\n"
    "  --no-network   skip the network section (the conv figures only)\n"
    "  --precision P  the multi-task network in P only (default: fp32, and bf16 too when\n"
    "                 this CPU runs it natively, interleaved in the same rounds)\n"
    "  --slide FILE   also the whole-slide figure: FILE screened --repeat times per\n"
    "                 precision by the embedded service (as `gastroscreen screen`, no\n"
    "                 sockets; each run in a fresh service, submission to verdict timed):\n"
    "                 slides/hour (median), tiles inferred, the share of the wall time in\n"
    "                 the infer stage (the network) and outside it (plan, blur check,\n"
    "                 screener, report), and the peak-RSS growth of this process per\n"
    "                 precision (per-process peaks: tests/bench/pipeline.sh)\n"
    "\n"
    "Side by side with PyTorch (torchvision deform_conv2d, the mirror with dense convs):\n"
    "  /usr/bin/python3 tests/bench/torch_side.py --gastroscreen PATH [--model B]\n"
    "Side by side with the service as separate processes (gastroscreend and the six stage\n"
    "workers on loopback; rounds alternate with this command's network section; target:\n"
    "pipeline tiles/s >= 0.95 of the bare network; also each process's CPU and peak memory):\n"
    "  tests/bench/pipeline.sh [BUILD_DIR] [--mosaic N] [--rounds N]\n";

static int parse_int(const char *opt, const char *s, int lo, int hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "gastroscreen bench: --%s: '%s' is not an integer in [%d, %d]\n", opt, s,
                lo, hi);
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* Returns 0 to run, 1 after --help, 2 on a usage error. */
static int parse_args(int argc, char **argv, bench_opts *o)
{
    static const struct option longopts[] = {{"json", no_argument, NULL, 'j'},
                                             {"threads", required_argument, NULL, 't'},
                                             {"repeat", required_argument, NULL, 'r'},
                                             {"quick", no_argument, NULL, 'q'},
                                             {"model", required_argument, NULL, 'm'},
                                             {"no-network", no_argument, NULL, 'n'},
                                             {"precision", required_argument, NULL, 'p'},
                                             {"slide", required_argument, NULL, 's'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    memset(o, 0, sizeof *o);
    o->repeat = 10;
    optind = 1;
    opterr = 0;
    for (;;) {
        int c = getopt_long(argc, argv, "", longopts, NULL);
        if (c == -1)
            break;
        switch (c) {
        case 'j':
            o->json = 1;
            break;
        case 't':
            if (parse_int("threads", optarg, 1, 4096, &o->threads) < 0)
                return 2;
            break;
        case 'r':
            if (parse_int("repeat", optarg, 1, 100000, &o->repeat) < 0)
                return 2;
            break;
        case 'q':
            o->quick = 1;
            break;
        case 'm':
            o->model = optarg;
            break;
        case 'n':
            o->no_network = 1;
            break;
        case 'p':
            if (gs_precision_parse(optarg, &o->precision) < 0) {
                fprintf(stderr, "gastroscreen bench: --precision: %s\n", gs_error_get());
                return 2;
            }
            o->have_precision = 1;
            break;
        case 's':
            o->slide = optarg;
            break;
        case 'h':
            fputs(USAGE, stdout);
            return 1;
        default:
            fprintf(stderr, "gastroscreen bench: bad option '%s'\n", argv[optind - 1]);
            fputs(USAGE, stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "gastroscreen bench: unexpected argument '%s'\n", argv[optind]);
        fputs(USAGE, stderr);
        return 2;
    }
    if (o->model && o->no_network) {
        fprintf(stderr, "gastroscreen bench: --model and --no-network exclude each other\n");
        return 2;
    }
    if (o->slide && o->no_network) {
        fprintf(stderr, "gastroscreen bench: --slide and --no-network exclude each other\n");
        return 2;
    }
    return 0;
}

static void shape_name(const conv_shape *s, char *buf, size_t cap)
{
    snprintf(buf, cap, "%d->%d@%d", s->cin, s->cout, s->res);
}

/* Times our deformable conv against the dense conv on one shape (interleaved). Appends an
 * object to `rows`. Returns 0 or -1 with the error set. */
static int bench_deform_shape(const conv_shape *s, const bench_opts *o, json_t *rows)
{
    int rc = -1;
    gs_bench_deform *f = gs_bench_deform_new(1, s->cin, s->cout, s->res, s->res);
    gs_bench_dense *d =
        f ? gs_bench_dense_new(1, s->cin, s->cout, s->res, s->res, GS_PRECISION_FP32) : NULL;
    if (!d)
        goto free_objects;
    gs_bench_fn fns[2] = {gs_bench_deform_run, gs_bench_dense_run};
    void *ctx[2] = {f, d};
    double med[2];
    if (gs_bench_interleaved(2, fns, ctx, 2, o->repeat, med) < 0)
        goto free_objects;
    double gflop = gs_bench_conv_gflop(1, s->cin, s->cout, s->res, s->res, 3);
    char name[48];
    shape_name(s, name, sizeof name);
    json_array_append_new(
        rows, json_pack("{s:s, s:i, s:i, s:i, s:i, s:f, s:f, s:f, s:f, s:f, s:f, s:s}", "shape",
                        name, "cin", s->cin, "cout", s->cout, "res", s->res, "batch", 1, "gflop",
                        gflop, "deform_ms", med[0] * 1e3, "dense_ms", med[1] * 1e3, "ratio",
                        med[0] / med[1], "deform_gflops", gflop / med[0], "dense_gflops",
                        gflop / med[1], "dense_impl", gs_bench_dense_impl(d)));
    rc = 0;
free_objects:
    gs_bench_dense_destroy(&d);
    gs_bench_deform_destroy(&f);
    return rc;
}

/* Times a dense conv alone (the reference shapes not in the decoder table). */
static int bench_dense_shape(const conv_shape *s, const bench_opts *o, double *gflops)
{
    gs_bench_dense *d = gs_bench_dense_new(1, s->cin, s->cout, s->res, s->res, GS_PRECISION_FP32);
    if (!d)
        return -1;
    gs_bench_fn fn = gs_bench_dense_run;
    void *ctx = d;
    double med;
    int rc = gs_bench_interleaved(1, &fn, &ctx, 2, o->repeat, &med);
    if (rc == 0)
        *gflops = gs_bench_conv_gflop(1, s->cin, s->cout, s->res, s->res, 3) / med;
    gs_bench_dense_destroy(&d);
    return rc;
}

/* The dense reference from the decoder rows plus the other shapes. Returns the object (its
 * "median_gflops" is the reference) or NULL with the error set. */
static json_t *dense_reference(const bench_opts *o, json_t *deform_rows, double *median)
{
    double rates[N_DECODER + N_OTHER], flop_sum = 0, time_sum = 0;
    int n = 0;
    json_t *shapes = json_array();
    size_t i;
    json_t *row;
    json_array_foreach(deform_rows, i, row)
    {
        double g = json_real_value(json_object_get(row, "dense_gflops"));
        double gf = json_real_value(json_object_get(row, "gflop"));
        rates[n++] = g;
        flop_sum += gf;
        time_sum += gf / g;
        json_array_append_new(shapes, json_pack("{s:O, s:f}", "shape",
                                                json_object_get(row, "shape"), "dense_gflops", g));
    }
    for (int k = 0; k < N_OTHER && !o->quick; k++) {
        double g = 0;
        if (bench_dense_shape(&OTHER_SHAPES[k], o, &g) < 0) {
            json_decref(shapes);
            return NULL;
        }
        const conv_shape *s = &OTHER_SHAPES[k];
        double gf = gs_bench_conv_gflop(1, s->cin, s->cout, s->res, s->res, 3);
        rates[n++] = g;
        flop_sum += gf;
        time_sum += gf / g;
        char name[48];
        shape_name(s, name, sizeof name);
        json_array_append_new(shapes, json_pack("{s:s, s:f}", "shape", name, "dense_gflops", g));
    }
    GS_ASSERT(n >= 1);
    *median = gs_bench_median(rates, n);
    return json_pack("{s:s, s:o, s:f, s:f}", "definition",
                     o->quick ? "quick run: the dense GFLOP/s of the one decoder shape measured"
                              : DENSE_REFERENCE_DEFINITION,
                     "shapes", shapes, "median_gflops", *median, "aggregate_gflops",
                     flop_sum / time_sum);
}

/* One network run, for gs_bench_interleaved. */
typedef struct {
    gs_net_id id;
    gs_net_state *st;
    int n, h, w;
    uint8_t *rgb;
    float *in_f; /* screener features */
    float *o1, *o2, *o3;
} net_run;

static int net_run_once(void *ctx)
{
    net_run *r = ctx;
    switch (r->id) {
    case GS_NET_MULTITASK:
        return gs_net_run_multitask(r->st, r->rgb, r->o1, r->o2, r->o3);
    case GS_NET_FOREGROUND:
        return gs_net_run_foreground(r->st, r->rgb, r->o1, NULL);
    case GS_NET_BLUR:
        return gs_net_run_blur(r->st, r->rgb, r->o1);
    case GS_NET_SCREENER:
        return gs_net_run_screener(r->st, r->in_f, r->o1);
    default:
        GS_ASSERT(0);
    }
    return -1;
}

static void net_run_free(net_run *r)
{
    gs_net_state_destroy(&r->st);
    free(r->rgb);
    free(r->in_f);
    free(r->o1);
    free(r->o2);
    free(r->o3);
    memset(r, 0, sizeof *r);
}

static float lcg_unit(unsigned *seed)
{
    *seed = *seed * 1664525u + 1013904223u;
    return (float)(*seed >> 8) / 16777216.0f;
}

/* n interleaved RGB h x w images like a tile, as model/pytorch/make_bundle.py scales the seeded
 * bundles' deformable convs on: a random 16x coarser grid upsampled bilinearly, 0.8 of it plus
 * 0.2 of pixel noise. On white noise those bundles' offsets averaged ~30 px (on slide tiles
 * ~4.5 px): the deformable convs then sample all over the map, a cost real tiles never pay. */
static int tile_like_input(uint8_t *rgb, int n, int h, int w, unsigned *seed)
{
    const int gh = h / 16 > 2 ? h / 16 : 2, gw = w / 16 > 2 ? w / 16 : 2;
    float *grid = malloc(sizeof(float) * (size_t)gh * gw * 3);
    if (!grid)
        return -1;
    for (int k = 0; k < n; k++) {
        for (int i = 0; i < gh * gw * 3; i++)
            grid[i] = lcg_unit(seed);
        for (int y = 0; y < h; y++) {
            /* align_corners=False: source coordinate (y + 0.5) * gh / h - 0.5, clamped. */
            float sy = fminf(fmaxf(((float)y + 0.5f) * (float)gh / (float)h - 0.5f, 0.0f),
                             (float)(gh - 1));
            int y0 = (int)sy, y1 = y0 + 1 < gh ? y0 + 1 : y0;
            float fy = sy - (float)y0;
            for (int x = 0; x < w; x++) {
                float sx = fminf(fmaxf(((float)x + 0.5f) * (float)gw / (float)w - 0.5f, 0.0f),
                                 (float)(gw - 1));
                int x0 = (int)sx, x1 = x0 + 1 < gw ? x0 + 1 : x0;
                float fx = sx - (float)x0;
                for (int c = 0; c < 3; c++) {
                    float v = (1 - fy) * ((1 - fx) * grid[(y0 * gw + x0) * 3 + c] +
                                          fx * grid[(y0 * gw + x1) * 3 + c]) +
                              fy * ((1 - fx) * grid[(y1 * gw + x0) * 3 + c] +
                                    fx * grid[(y1 * gw + x1) * 3 + c]);
                    v = 0.8f * v + 0.2f * lcg_unit(seed);
                    rgb[(((size_t)k * h + y) * w + x) * 3 + c] = (uint8_t)lrintf(v * 255.0f);
                }
            }
        }
    }
    free(grid);
    return 0;
}

/* Sets up a run of network id at batch n on h x w tile-like inputs. Returns 0 or -1. */
static int net_run_init(net_run *r, const gs_model *m, gs_net_id id, int n, int h, int w)
{
    memset(r, 0, sizeof *r);
    r->id = id;
    r->n = n;
    r->h = h;
    r->w = w;
    r->st = gs_net_state_new(m, id, n, h, w);
    if (!r->st)
        goto fail;
    size_t px = (size_t)n * (size_t)h * (size_t)w;
    unsigned seed = 5;
    if (id == GS_NET_SCREENER) {
        r->in_f = malloc(sizeof(float) * (size_t)n * 512);
        r->o1 = malloc(sizeof(float));
        if (!r->in_f || !r->o1)
            goto oom;
        for (size_t i = 0; i < (size_t)n * 512; i++)
            r->in_f[i] = lcg_unit(&seed);
        return 0;
    }
    r->rgb = malloc(px * 3);
    if (!r->rgb)
        goto oom;
    if (tile_like_input(r->rgb, n, h, w, &seed) < 0)
        goto oom;
    if (id == GS_NET_MULTITASK) {
        r->o1 = malloc(sizeof(float) * (size_t)n);
        r->o2 = malloc(sizeof(float) * (size_t)n * 512);
        r->o3 = malloc(sizeof(float) * px / 16);
        if (!r->o1 || !r->o2 || !r->o3)
            goto oom;
    } else {
        r->o1 = malloc(sizeof(float) * (id == GS_NET_FOREGROUND ? px : (size_t)n));
        if (!r->o1)
            goto oom;
    }
    return 0;
oom:
    gs_error_set("out of memory");
fail:
    gs_error_prefix("%s batch %d at %dx%d", gs_net_name(id), n, h, w);
    net_run_free(r);
    return -1;
}

/* Where the time of one forward of r goes: `repeat` profiled runs after one warm-up, the
 * median of each part. Returns {"batch", "profiled_ms", "parts": [{"part", "ms", "share"}]}
 * or NULL with the error set. */
static json_t *profile_parts(net_run *r, int repeat)
{
    double *t = malloc(sizeof(double) * (size_t)repeat * GS_NET_PART_COUNT);
    double *one = malloc(sizeof(double) * (size_t)repeat);
    json_t *parts = NULL;
    if (!t || !one) {
        gs_error_set("out of memory");
        goto free_buffers;
    }
    if (net_run_once(r) < 0)
        goto free_buffers;
    for (int k = 0; k < repeat; k++) {
        gs_net_state_profile(r->st, 1);
        if (net_run_once(r) < 0)
            goto stop_profiling;
        gs_net_state_profile_get(r->st, t + (size_t)k * GS_NET_PART_COUNT);
    }
    gs_net_state_profile(r->st, 0);
    double med[GS_NET_PART_COUNT], total = 0;
    for (int p = 0; p < GS_NET_PART_COUNT; p++) {
        for (int k = 0; k < repeat; k++)
            one[k] = t[(size_t)k * GS_NET_PART_COUNT + p];
        med[p] = gs_bench_median(one, repeat);
        total += med[p];
    }
    parts = json_array();
    for (int p = 0; p < GS_NET_PART_COUNT; p++)
        json_array_append_new(parts, json_pack("{s:s, s:f, s:f}", "part",
                                               gs_net_part_name((gs_net_part)p), "ms", med[p] * 1e3,
                                               "share", total > 0 ? med[p] / total : 0.0));
    free(t);
    free(one);
    return json_pack("{s:i, s:f, s:o}", "batch", r->n, "profiled_ms", total * 1e3, "parts", parts);
stop_profiling:
    gs_net_state_profile(r->st, 0);
free_buffers:
    free(t);
    free(one);
    return NULL;
}

/* The network section. Returns the object or NULL with the error set. */
static json_t *bench_networks(const bench_opts *o, double dense_ref)
{
    json_t *out = NULL;
    gs_model *m = gs_model_load(o->model);
    if (!m)
        return NULL;
    /* runs[precision][batch]; runs[0][0] also serves the small networks. */
    net_run runs[GS_PRECISION_COUNT][2];
    memset(runs, 0, sizeof runs);
    gs_bench_dense *refs[GS_PRECISION_COUNT][N_REF] = {{NULL}};
    json_t *mt = json_null(), *small = json_array();
    if (gs_model_has(m, GS_NET_MULTITASK)) {
        const int tile = 512;
        double gflop = gs_bench_multitask_gflop(gs_model_weights(m), tile, tile);
        if (gflop < 0)
            goto fail;
        const int batches[2] = {1, 4};
        const int nb = o->quick ? 1 : 2;
        /* Every precision this CPU runs natively (or the one asked for), fp32 first: a state
         * takes the model's precision when it is made. */
        gs_precision precs[GS_PRECISION_COUNT];
        int np = 0;
        if (o->have_precision) {
            char why[160];
            precs[np++] = gs_precision_usable(o->precision, why, sizeof why);
            if (why[0])
                fprintf(stderr, "gastroscreen bench: %s\n", why);
        } else {
            precs[np++] = GS_PRECISION_FP32;
            if (gs_bf16_native())
                precs[np++] = GS_PRECISION_BF16;
            /* int8 only from a calibrated bundle (gastroscreen calibrate) on a VNNI CPU. */
            if (gs_model_has_int8(m) &&
                gs_precision_usable(GS_PRECISION_INT8, NULL, 0) == GS_PRECISION_INT8)
                precs[np++] = GS_PRECISION_INT8;
        }
        for (int q = 0; q < np; q++) {
            if (gs_model_set_precision(m, precs[q]) < 0)
                goto fail;
            /* int8 on an uncalibrated bundle falls back (with a line on stderr). */
            precs[q] = gs_model_precision(m);
            for (int b = 0; b < nb; b++)
                if (net_run_init(&runs[q][b], m, GS_NET_MULTITASK, batches[b], tile, tile) < 0)
                    goto fail;
        }
        /* The reference dense convs run again here, interleaved with the network, so that the
         * fraction is not skewed by the load changing between the two sections: in fp32 (the
         * reference of the fraction targets), and in each other precision measured, as the
         * network runs its convs there, so that every precision is also compared with what
         * dense convs reach in it on this CPU (the network at that rate: its FLOPs over it). */
        conv_shape shapes[N_REF];
        const int nref = reference_shapes(o, shapes);
        const int nrun = np * nb;
        gs_precision ref_precs[GS_PRECISION_COUNT];
        int nrp = 0;
        ref_precs[nrp++] = GS_PRECISION_FP32;
        for (int q = 0; q < np; q++)
            if (precs[q] != GS_PRECISION_FP32)
                ref_precs[nrp++] = precs[q];
        gs_bench_fn fns[GS_PRECISION_COUNT * 2 + GS_PRECISION_COUNT * N_REF];
        void *ctx[GS_PRECISION_COUNT * 2 + GS_PRECISION_COUNT * N_REF];
        double med[GS_PRECISION_COUNT * 2 + GS_PRECISION_COUNT * N_REF];
        for (int q = 0; q < np; q++)
            for (int b = 0; b < nb; b++) {
                fns[q * nb + b] = net_run_once;
                ctx[q * nb + b] = &runs[q][b];
            }
        for (int r = 0; r < nrp; r++)
            for (int k = 0; k < nref; k++) {
                refs[r][k] = gs_bench_dense_new(1, shapes[k].cin, shapes[k].cout, shapes[k].res,
                                                shapes[k].res, ref_precs[r]);
                if (!refs[r][k])
                    goto fail;
                fns[nrun + r * nref + k] = gs_bench_dense_run;
                ctx[nrun + r * nref + k] = refs[r][k];
            }
        if (gs_bench_interleaved(nrun + nrp * nref, fns, ctx, 1, o->repeat, med) < 0)
            goto fail;
        double ref_rate[GS_PRECISION_COUNT];
        for (int r = 0; r < nrp; r++) {
            double rates[N_REF];
            for (int k = 0; k < nref; k++)
                rates[k] = gs_bench_conv_gflop(1, shapes[k].cin, shapes[k].cout, shapes[k].res,
                                               shapes[k].res, 3) /
                           med[nrun + r * nref + k];
            ref_rate[r] = gs_bench_median(rates, nref);
        }
        const double inter_ref = ref_rate[0];
        json_t *per = json_array();
        for (int q = 0; q < np; q++) {
            json_t *rows = json_array(), *prof = json_array();
            int own = 0;
            for (int r = 0; r < nrp; r++)
                if (ref_precs[r] == precs[q])
                    own = r;
            const double own_ref = ref_rate[own];
            json_array_append_new(
                per, json_pack("{s:s, s:f, s:s, s:f, s:o, s:o}", "precision",
                               gs_precision_name(precs[q]), "dense_reference_gflops", own_ref,
                               "dense_reference_src_type", gs_bench_dense_src_type(refs[own][0]),
                               "ms_per_tile_at_dense_reference", gflop / own_ref * 1e3, "batches",
                               rows, "layers", prof));
            for (int b = 0; b < nb; b++) {
                json_t *pr = profile_parts(&runs[q][b], o->repeat);
                if (!pr) {
                    json_decref(per);
                    goto fail;
                }
                json_array_append_new(prof, pr);
                double t = med[q * nb + b], rate = batches[b] * gflop / t;
                json_array_append_new(
                    rows, json_pack("{s:i, s:f, s:f, s:f, s:f, s:f, s:f, s:i}", "batch", batches[b],
                                    "ms", t * 1e3, "tiles_per_s", batches[b] / t, "gflops", rate,
                                    "fraction_of_dense_reference", rate / dense_ref,
                                    "fraction_of_interleaved_dense_reference", rate / inter_ref,
                                    "fraction_of_same_precision_dense_reference", rate / own_ref,
                                    "winograd_convs", gs_net_state_winograd_convs(runs[q][b].st)));
                net_run_free(&runs[q][b]);
            }
        }
        /* "batches" and "layers" of the first precision stay at the top for older readers. */
        json_t *first = json_array_get(per, 0);
        json_decref(mt);
        mt = json_pack("{s:i, s:f, s:f, s:s, s:O, s:O, s:o, s:s}", "tile", tile, "gflop_per_tile",
                       gflop, "interleaved_dense_reference_gflops", inter_ref, "precision",
                       gs_precision_name(precs[0]), "batches", json_object_get(first, "batches"),
                       "layers", json_object_get(first, "layers"), "precisions", per, "provenance",
                       gs_model_provenance(m, GS_NET_MULTITASK));
    }
    /* Small networks at the sizes the pipeline runs them: one 512x512 thumbnail, one 256x256
     * crop per tile (batch 4, like the tiles), one slide's top-64 features. */
    static const struct {
        gs_net_id id;
        int n, h, w;
    } SMALL[] = {
        {GS_NET_FOREGROUND, 1, 512, 512}, {GS_NET_BLUR, 4, 256, 256}, {GS_NET_SCREENER, 64, 1, 1}};
    for (size_t k = 0; k < sizeof SMALL / sizeof SMALL[0]; k++) {
        if (!gs_model_has(m, SMALL[k].id))
            continue;
        if (net_run_init(&runs[0][0], m, SMALL[k].id, SMALL[k].n, SMALL[k].h, SMALL[k].w) < 0)
            goto fail;
        gs_bench_fn fn = net_run_once;
        void *ctx = &runs[0][0];
        double med;
        if (gs_bench_interleaved(1, &fn, &ctx, 2, o->repeat, &med) < 0)
            goto fail;
        net_run_free(&runs[0][0]);
        json_array_append_new(small, json_pack("{s:s, s:i, s:i, s:i, s:f}", "name",
                                               gs_net_name(SMALL[k].id), "batch", SMALL[k].n, "h",
                                               SMALL[k].h, "w", SMALL[k].w, "ms", med * 1e3));
    }
    out = json_pack("{s:s, s:o, s:o}", "bundle", o->model, "multitask", mt, "small", small);
    mt = small = NULL;
fail:
    for (int q = 0; q < GS_PRECISION_COUNT; q++)
        for (int b = 0; b < 2; b++)
            net_run_free(&runs[q][b]);
    for (int q = 0; q < GS_PRECISION_COUNT; q++)
        for (int k = 0; k < N_REF; k++)
            gs_bench_dense_destroy(&refs[q][k]);
    json_decref(mt);
    json_decref(small);
    gs_model_destroy(&m);
    if (!out)
        gs_error_prefix("%s", o->model);
    return out;
}

/* ---- --slide: the whole-slide figure ------------------------------------------------------ */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

/* The process's peak resident set so far, in MiB (getrusage: a high-water mark). */
static double peak_rss_mib(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (double)ru.ru_maxrss / 1024.0; /* kilobytes on Linux */
}

/* One screening of the slide: its wall time from submission to DONE, the tiles inferred and
 * report.json's "timings" (seconds per stage). */
typedef struct {
    double wall;
    uint32_t inferred;
    json_t *timings; /* owned */
} slide_run;

/* The service's folders and the slide's root in cfg (fresh for every run). */
static int slide_config(gs_config *cfg, const char *tmp, const char *slide_real,
                        const bench_opts *o)
{
    char journal[PATH_MAX + 16], spool[PATH_MAX + 16], reports[PATH_MAX + 16];
    char dir[PATH_MAX];
    snprintf(journal, sizeof journal, "%s/journal", tmp);
    snprintf(spool, sizeof spool, "%s/spool", tmp);
    snprintf(reports, sizeof reports, "%s/reports", tmp);
    snprintf(dir, sizeof dir, "%s", slide_real);
    if (gs_config_set_string(&cfg->journal_dir, journal) ||
        gs_config_set_string(&cfg->spool_dir, spool) ||
        gs_config_set_string(&cfg->report_dir, reports) ||
        gs_config_set_string(&cfg->watch_dir, "") || gs_mkdir_p(reports, 0755) != 0)
        return -1;
    for (size_t i = 0; i < cfg->n_slide_roots; i++)
        free(cfg->slide_roots[i]);
    free(cfg->slide_roots);
    cfg->n_slide_roots = 0;
    if (!(cfg->slide_roots = calloc(1, sizeof *cfg->slide_roots)) ||
        !(cfg->slide_roots[0] = strdup(dirname(dir))))
        return gs_error_set("out of memory");
    cfg->n_slide_roots = 1;
    /* The network's threads as the network section runs it. */
    if (o->threads > 0)
        cfg->infer_threads = (uint32_t)o->threads;
    return 0;
}

/* Screens slide_real once in a fresh embedded service running the multi-task network in p.
 * Returns 0 with *run filled (a slide whose verdict is FAILED is an error: its figure would
 * not be a screening), or -1 with the error set. */
static int screen_slide_once(const bench_opts *o, const char *slide_real, gs_precision p,
                             slide_run *run)
{
    int rc = -1;
    memset(run, 0, sizeof *run);
    const char *tmpdir = getenv("TMPDIR");
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s/gastroscreen-bench-XXXXXX",
             tmpdir && tmpdir[0] ? tmpdir : "/tmp");
    if (!mkdtemp(tmp))
        return gs_error_set("%s: %s", tmp, strerror(errno));
    gs_embedded *e = NULL;
    gs_config *cfg = gs_config_new();
    if (!cfg || slide_config(cfg, tmp, slide_real, o) != 0)
        goto remove_folder;
    gs_embedded_options eo = {.config = cfg, .model_path = o->model, .quiet = 1, .precision = p};
    if (!(e = gs_embedded_new(&eo)))
        goto remove_folder;
    char id[GS_SLIDE_ID_LEN + 1];
    double t0 = gs_bench_now();
    if (gs_embedded_submit(e, slide_real, id, NULL) != 0)
        goto stop_service;
    gs_slide_info info;
    for (;;) {
        if (gs_embedded_step(e, 100) != 0)
            goto stop_service;
        if (gs_slides_get(gs_embedded_slides(e), id, &info) == 0 &&
            (info.state == GS_SLIDE_DONE || info.state == GS_SLIDE_FAILED))
            break;
    }
    run->wall = gs_bench_now() - t0;
    if (info.state == GS_SLIDE_FAILED || info.verdict == GS_VERDICT_FAILED) {
        gs_error_set("%s: the slide failed: %s", slide_real, info.reason);
        goto stop_service;
    }
    run->inferred = info.tiles.inferred;
    json_error_t jerr;
    json_t *rep = json_load_file(info.report_json, 0, &jerr);
    json_t *t = rep ? json_object_get(rep, "timings") : NULL;
    if (!json_is_object(t)) {
        json_decref(rep);
        gs_error_set("%s: no timings in the report", info.report_json);
        goto stop_service;
    }
    run->timings = json_incref(t);
    json_decref(rep);
    rc = 0;
stop_service:
    gs_embedded_destroy(&e);
remove_folder:
    gs_config_destroy(&cfg);
    nftw(tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return rc;
}

/* The figure of one precision over o->repeat screenings (medians). Returns the object or NULL
 * with the error set. */
static json_t *slide_figure(const bench_opts *o, const char *slide_real, gs_precision p)
{
    const int n = o->repeat;
    double *wall = calloc((size_t)n, sizeof *wall), *infer = calloc((size_t)n, sizeof *infer);
    json_t *stages = json_object(), *out = NULL;
    uint32_t inferred = 0;
    double rss0 = peak_rss_mib();
    if (!wall || !infer || !stages) {
        gs_error_set("out of memory");
        goto free_figures;
    }
    for (int k = 0; k < n; k++) {
        slide_run run;
        if (screen_slide_once(o, slide_real, p, &run) != 0)
            goto free_figures;
        wall[k] = run.wall;
        inferred = run.inferred;
        const char *stage;
        json_t *sec;
        json_object_foreach(run.timings, stage, sec)
        {
            if (!strcmp(stage, "infer"))
                infer[k] = json_number_value(sec);
            /* Every stage's seconds per run, for their medians below. */
            json_t *list = json_object_get(stages, stage);
            if (!list)
                json_object_set_new(stages, stage, list = json_array());
            json_array_append_new(list, json_real(json_number_value(sec)));
        }
        json_decref(run.timings);
    }
    /* The infer stage's share of each run, then its median: a share is per slide. */
    for (int k = 0; k < n; k++)
        infer[k] = wall[k] > 0 ? infer[k] / wall[k] : 0;
    double med_wall = gs_bench_median(wall, n); /* sorts wall: shares taken first */
    double network_share = gs_bench_median(infer, n);
    if (network_share > 1)
        network_share = 1; /* the stage clock and this one tick apart */
    json_t *stage_med = json_object();
    const char *stage;
    json_t *list;
    json_object_foreach(stages, stage, list)
    {
        /* A stage that did not run every time has fewer values: its median over those. */
        size_t i;
        json_t *x;
        json_array_foreach(list, i, x) wall[i] = json_real_value(x);
        json_object_set_new(stage_med, stage,
                            json_real(gs_bench_median(wall, (int)json_array_size(list))));
    }
    double rss1 = peak_rss_mib();
    out = json_pack("{s:s, s:i, s:f, s:f, s:I, s:f, s:f, s:o, s:f, s:f}", "precision",
                    gs_precision_name(p), "runs", n, "wall_s", med_wall, "slides_per_hour",
                    med_wall > 0 ? 3600.0 / med_wall : 0.0, "tiles_inferred", (json_int_t)inferred,
                    "network_share", network_share, "outside_network_share", 1.0 - network_share,
                    "stage_seconds", stage_med, "peak_rss_mib", rss1, "peak_rss_growth_mib",
                    rss1 > rss0 ? rss1 - rss0 : 0.0);
free_figures:
    json_decref(stages);
    free(wall);
    free(infer);
    return out;
}

/* The "slide" object: the figure of every precision the network section timed, in its order.
 * Returns it or NULL with the error set. */
static json_t *bench_slide(const bench_opts *o, json_t *network)
{
    char slide_real[PATH_MAX];
    if (!realpath(o->slide, slide_real)) {
        gs_error_set("%s: %s", o->slide, strerror(errno));
        return NULL;
    }
    json_t *per = json_array();
    size_t q;
    json_t *entry;
    json_array_foreach(json_object_get(json_object_get(network, "multitask"), "precisions"), q,
                       entry)
    {
        gs_precision p;
        json_t *fig;
        if (gs_precision_parse(json_string_value(json_object_get(entry, "precision")), &p) != 0 ||
            !(fig = slide_figure(o, slide_real, p))) {
            json_decref(per);
            return NULL;
        }
        json_array_append_new(per, fig);
    }
    if (json_array_size(per) == 0) {
        json_decref(per);
        gs_error_set("--slide: the bundle has no multi-task network");
        return NULL;
    }
    return json_pack(
        "{s:s, s:s, s:s, s:o}", "file", slide_real, "timed",
        "submission to DONE in a fresh embedded service per run (bundle load and worker start "
        "not timed); medians over the runs",
        "shares",
        "network_share: the infer stage's seconds (report.json timings; the tiler reads the next "
        "tiles alongside) over the wall time; outside_network_share: the rest (plan, blur check, "
        "screener, report: reading, planning, thumbnails, writing). peak_rss_growth_mib: this "
        "process's high-water mark over the precision's runs, so only what it reaches beyond "
        "the earlier precisions shows; tests/bench/pipeline.sh measures each process's peak",
        "precisions", per);
}

static double num(json_t *obj, const char *key)
{
    return json_number_value(json_object_get(obj, key));
}

/* The whole-slide table (--slide). */
static void print_slide(json_t *sl)
{
    printf("\nwhole slide %s, embedded (%s)\n", json_string_value(json_object_get(sl, "file")),
           json_string_value(json_object_get(sl, "timed")));
    printf("%9s %8s %12s %7s %9s %9s %12s  %s\n", "precision", "wall s", "slides/hour", "tiles",
           "network", "outside", "RSS growth", "stage seconds");
    size_t q;
    json_t *p;
    json_array_foreach(json_object_get(sl, "precisions"), q, p)
    {
        printf("%9s %8.2f %12.1f %7d %8.1f%% %8.1f%% %8.0f MiB ",
               json_string_value(json_object_get(p, "precision")), num(p, "wall_s"),
               num(p, "slides_per_hour"),
               (int)json_integer_value(json_object_get(p, "tiles_inferred")),
               100.0 * num(p, "network_share"), 100.0 * num(p, "outside_network_share"),
               num(p, "peak_rss_growth_mib"));
        const char *stage;
        json_t *sec;
        json_object_foreach(json_object_get(p, "stage_seconds"), stage, sec)
            printf(" %s %.2f", stage, json_number_value(sec));
        printf("\n");
    }
    printf("  %s\n", json_string_value(json_object_get(sl, "shares")));
}

static void print_text(json_t *r)
{
    json_t *mach = json_object_get(r, "machine");
    printf("machine: %s, %d CPUs, %d threads used, oneDNN %s (%s)\n",
           json_string_value(json_object_get(mach, "cpu")),
           (int)json_integer_value(json_object_get(mach, "cpus")),
           (int)json_integer_value(json_object_get(mach, "threads")),
           json_string_value(json_object_get(mach, "onednn")),
           json_string_value(json_object_get(mach, "isa")));
    /* What decides where int8's unquantised layers run (model/network.h). */
    int pays = json_is_true(json_object_get(mach, "bf16_pays"));
    printf("bf16 multiply-adds at %.2fx the fp32 rate: bf16 %s here (int8 runs its other "
           "layers in %s)\n",
           json_number_value(json_object_get(mach, "bf16_rate")), pays ? "pays" : "does not pay",
           pays ? "bf16" : "fp32");
    printf("medians over %d rounds after warm-up, variants interleaved\n\n",
           (int)json_integer_value(json_object_get(r, "repeat")));
    printf("deformable conv (ours) vs dense oneDNN 3x3 conv, batch 1 (target: ratio <= 1.5)\n");
    printf("%-14s %10s %10s %7s %10s %10s  %s\n", "shape", "ours ms", "dense ms", "ratio",
           "ours GF/s", "dense GF/s", "dense impl");
    size_t i;
    json_t *row;
    json_array_foreach(json_object_get(r, "deform_vs_dense"), i, row)
    {
        printf("%-14s %10.3f %10.3f %7.2f %10.1f %10.1f  %s\n",
               json_string_value(json_object_get(row, "shape")), num(row, "deform_ms"),
               num(row, "dense_ms"), num(row, "ratio"), num(row, "deform_gflops"),
               num(row, "dense_gflops"), json_string_value(json_object_get(row, "dense_impl")));
    }
    json_t *ref = json_object_get(r, "dense_reference");
    printf("\ndense-conv FLOP rate reference: %.1f GFLOP/s (FLOP-weighted over the same shapes: "
           "%.1f)\n  = %s\n",
           num(ref, "median_gflops"), num(ref, "aggregate_gflops"),
           json_string_value(json_object_get(ref, "definition")));
    json_t *net = json_object_get(r, "network");
    if (!json_is_object(net)) {
        printf("\nnetworks: skipped (%s)\n",
               json_string_value(json_object_get(r, "network_skipped")));
        return;
    }
    printf("\nnetworks (bundle %s)\n", json_string_value(json_object_get(net, "bundle")));
    json_t *mt = json_object_get(net, "multitask");
    if (json_is_object(mt)) {
        printf("multi-task, %dx%d tiles, %.2f GFLOP per tile (counted from the layer shapes); "
               "target: >= 0.70 of the dense reference\n",
               (int)json_integer_value(json_object_get(mt, "tile")),
               (int)json_integer_value(json_object_get(mt, "tile")), num(mt, "gflop_per_tile"));
        printf("dense reference re-measured interleaved with the network, in each precision "
               "measured:\n");
        size_t q;
        json_t *per;
        json_array_foreach(json_object_get(mt, "precisions"), q, per)
        {
            printf("  in %s: %.1f GFLOP/s, so the network at that rate would take %.1f ms per "
                   "tile\n",
                   json_string_value(json_object_get(per, "precision")),
                   num(per, "dense_reference_gflops"), num(per, "ms_per_tile_at_dense_reference"));
        }
        printf("%9s %6s %10s %10s %10s %13s %13s %13s %9s\n", "precision", "batch", "ms", "tiles/s",
               "GFLOP/s", "of dense ref", "of interleaved", "of same prec.", "winograd");
        json_array_foreach(json_object_get(mt, "precisions"), q, per)
        {
            json_array_foreach(json_object_get(per, "batches"), i, row)
            {
                printf("%9s %6d %10.1f %10.3f %10.1f %12.1f%% %12.1f%% %12.1f%% %9d\n",
                       json_string_value(json_object_get(per, "precision")),
                       (int)json_integer_value(json_object_get(row, "batch")), num(row, "ms"),
                       num(row, "tiles_per_s"), num(row, "gflops"),
                       100.0 * num(row, "fraction_of_dense_reference"),
                       100.0 * num(row, "fraction_of_interleaved_dense_reference"),
                       100.0 * num(row, "fraction_of_same_precision_dense_reference"),
                       (int)json_integer_value(json_object_get(row, "winograd_convs")));
            }
        }
        json_array_foreach(json_object_get(mt, "precisions"), q, per)
        {
            json_array_foreach(json_object_get(per, "layers"), i, row)
            {
                printf("%s, where a tile's time goes, batch %d (profiled runs, %.1f ms):",
                       json_string_value(json_object_get(per, "precision")),
                       (int)json_integer_value(json_object_get(row, "batch")),
                       num(row, "profiled_ms"));
                size_t j;
                json_t *part;
                json_array_foreach(json_object_get(row, "parts"), j, part)
                {
                    printf("%s %s %.1f ms (%.0f%%)", j ? "," : "",
                           json_string_value(json_object_get(part, "part")), num(part, "ms"),
                           100.0 * num(part, "share"));
                }
                printf("\n");
            }
        }
    } else {
        printf("multi-task: absent from the bundle\n");
    }
    json_array_foreach(json_object_get(net, "small"), i, row)
    {
        printf("%-10s batch %2d at %3dx%-3d %10.3f ms\n",
               json_string_value(json_object_get(row, "name")),
               (int)json_integer_value(json_object_get(row, "batch")),
               (int)json_integer_value(json_object_get(row, "h")),
               (int)json_integer_value(json_object_get(row, "w")), num(row, "ms"));
    }
}

int gs_cmd_bench(int argc, char **argv)
{
    bench_opts o;
    int prc = parse_args(argc, argv, &o);
    if (prc)
        return prc == 1 ? 0 : 2;
    if (o.threads > 0)
        omp_set_num_threads(o.threads);
    gs_bench_machine mach;
    gs_bench_machine_get(&mach);
    json_t *rows = json_array();
    json_t *r =
        json_pack("{s:{s:s, s:i, s:i, s:s, s:s, s:f, s:b}, s:i, s:i, s:i}", "machine", "cpu",
                  mach.cpu, "cpus", mach.cpus, "threads", omp_get_max_threads(), "onednn",
                  mach.onednn, "isa", mach.isa, "bf16_rate", gs_cpu_bf16_rate(), "bf16_pays",
                  gs_bf16_pays(), "repeat", o.repeat, "warmup", 2, "quick", o.quick);
    int rc = 1;
    /* Found before the conv section so that a missing bundle fails at once. */
    if (!o.no_network && !o.model) {
        if (gs_default_bundle_find(o.model_buf, sizeof o.model_buf) != 0)
            goto report_error;
        o.model = o.model_buf;
    }
    if (o.slide && access(o.slide, R_OK) != 0) {
        gs_error_set("--slide %s: %s", o.slide, strerror(errno));
        goto report_error;
    }
    for (int k = 0; k < N_DECODER; k++) {
        if (o.quick && k != QUICK_SHAPE)
            continue;
        if (bench_deform_shape(&DECODER_SHAPES[k], &o, rows) < 0)
            goto report_error;
    }
    json_object_set_new(r, "deform_vs_dense", rows);
    rows = NULL;
    double dense_ref = 0;
    json_t *ref = dense_reference(&o, json_object_get(r, "deform_vs_dense"), &dense_ref);
    if (!ref)
        goto report_error;
    json_object_set_new(r, "dense_reference", ref);
    if (o.model) {
        json_t *net = bench_networks(&o, dense_ref);
        if (!net)
            goto report_error;
        json_object_set_new(r, "network", net);
    } else {
        json_object_set_new(r, "network", json_null());
        json_object_set_new(r, "network_skipped", json_string("--no-network"));
    }
    if (o.slide) {
        json_t *sl = bench_slide(&o, json_object_get(r, "network"));
        if (!sl)
            goto report_error;
        json_object_set_new(r, "slide", sl);
    }
    if (o.json) {
        char *s = json_dumps(r, JSON_INDENT(1) | JSON_REAL_PRECISION(6));
        if (!s) {
            gs_error_set("cannot format the JSON output");
            goto report_error;
        }
        printf("%s\n", s);
        free(s);
    } else {
        print_text(r);
        if (json_is_object(json_object_get(r, "slide")))
            print_slide(json_object_get(r, "slide"));
    }
    rc = 0;
    goto free_result;
report_error:
    fprintf(stderr, "gastroscreen bench: %s\n", gs_error_get());
free_result:
    json_decref(rows);
    json_decref(r);
    return rc;
}
