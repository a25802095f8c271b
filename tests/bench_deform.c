/*
 * bench_deform: times ops/deform_conv against a dense oneDNN 3x3 convolution of the same shape
 * for each decoder DCN shape of the reference (network-architecture.md §3.3), single-threaded
 * and with all OpenMP threads. Both get bias and a fused ReLU; the dense conv uses
 * format_tag_any everywhere (so it picks its preferred blocked layouts), the deformable conv
 * reads and writes nChw16c and takes the raw 27-channel offset/mask tensor in NCHW, as the
 * network will call it. Prints medians over --reps runs (default 10) after two warm-up runs.
 *
 * Usage: bench_deform [--reps R] [--shape I] [--threads T]   (I: 0-based row of the table)
 * Not a test: timings depend on the machine and its load.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <omp.h>
#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>

#include "ops/deform_conv.h"
#include "ops/error.h"

typedef struct {
    int cin, cout, res;
} bench_shape;

static const bench_shape SHAPES[] = {
    {512, 256, 16}, {256, 256, 32}, {256, 128, 32}, {128, 128, 64},
    {128, 64, 64},  {64, 64, 128},  {256, 64, 32},
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *t, int n)
{
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

static float *rand_floats(size_t n, float lo, float hi, unsigned *seed)
{
    float *b = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
    if (!b) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++) {
        *seed = *seed * 1664525u + 1013904223u;
        b[i] = lo + (hi - lo) * (float)(*seed >> 8) / 16777216.0f;
    }
    return b;
}

#define CHECK(call)                                                                                \
    do {                                                                                           \
        dnnl_status_t st_ = (call);                                                                \
        if (st_ != dnnl_success) {                                                                 \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, dnnl_status2str(st_));   \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

typedef struct {
    dnnl_engine_t eng;
    dnnl_stream_t stream;
    dnnl_primitive_t conv;
    dnnl_exec_arg_t args[4];
    float *bufs[4];
    char impl[64];
} dense_bench;

/* A dense oneDNN 3x3 conv (bias, ReLU) cin->cout at res x res with random data. */
static void dense_setup(const bench_shape *s, dense_bench *b)
{
    CHECK(dnnl_engine_create(&b->eng, dnnl_cpu, 0));
    CHECK(dnnl_stream_create(&b->stream, b->eng, dnnl_stream_default_flags));
    dnnl_memory_desc_t src, wei, bias, dst;
    dnnl_dims_t sd = {1, s->cin, s->res, s->res}, wd = {s->cout, s->cin, 3, 3}, bd = {s->cout},
                dd = {1, s->cout, s->res, s->res};
    dnnl_dims_t strides = {1, 1}, pad = {1, 1};
    CHECK(dnnl_memory_desc_init_by_tag(&src, 4, sd, dnnl_f32, dnnl_format_tag_any));
    CHECK(dnnl_memory_desc_init_by_tag(&wei, 4, wd, dnnl_f32, dnnl_format_tag_any));
    CHECK(dnnl_memory_desc_init_by_tag(&bias, 1, bd, dnnl_f32, dnnl_x));
    CHECK(dnnl_memory_desc_init_by_tag(&dst, 4, dd, dnnl_f32, dnnl_format_tag_any));
    dnnl_convolution_desc_t cd;
    CHECK(dnnl_convolution_forward_desc_init(&cd, dnnl_forward_inference, dnnl_convolution_direct,
                                             &src, &wei, &bias, &dst, strides, pad, pad));
    dnnl_primitive_attr_t attr;
    dnnl_post_ops_t ops;
    CHECK(dnnl_primitive_attr_create(&attr));
    CHECK(dnnl_post_ops_create(&ops));
    CHECK(dnnl_post_ops_append_eltwise(ops, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f));
    CHECK(dnnl_primitive_attr_set_post_ops(attr, ops));
    dnnl_primitive_desc_t pd;
    CHECK(dnnl_primitive_desc_create(&pd, &cd, attr, b->eng, NULL));
    const char *impl = "";
    CHECK(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl));
    snprintf(b->impl, sizeof b->impl, "%s", impl);
    CHECK(dnnl_primitive_create(&b->conv, pd));
    const dnnl_memory_desc_t *mds[4] = {dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0),
                                        dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0),
                                        dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 1),
                                        dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0)};
    int arg_ids[4] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_BIAS, DNNL_ARG_DST};
    unsigned seed = 7;
    for (int i = 0; i < 4; i++) {
        size_t n = dnnl_memory_desc_get_size(mds[i]) / sizeof(float);
        b->bufs[i] = rand_floats(n, -1, 1, &seed);
        b->args[i].arg = arg_ids[i];
        CHECK(dnnl_memory_create(&b->args[i].memory, mds[i], b->eng, b->bufs[i]));
    }
    dnnl_primitive_desc_destroy(pd);
    dnnl_post_ops_destroy(ops);
    dnnl_primitive_attr_destroy(attr);
}

static void dense_run(dense_bench *b)
{
    CHECK(dnnl_primitive_execute(b->conv, b->stream, 4, b->args));
    CHECK(dnnl_stream_wait(b->stream));
}

static void dense_free(dense_bench *b)
{
    for (int i = 0; i < 4; i++) {
        dnnl_memory_destroy(b->args[i].memory);
        free(b->bufs[i]);
    }
    dnnl_primitive_destroy(b->conv);
    dnnl_stream_destroy(b->stream);
    dnnl_engine_destroy(b->eng);
}

typedef struct {
    gs_deform_conv *c;
    gs_deform_conv_scratch *sc;
    float *w, *b, *in, *om, *out;
} deform_bench;

/* Our deformable conv, same shape, bias + ReLU, raw NCHW offsets within +-3 pixels. */
static void deform_setup(const bench_shape *s, deform_bench *b)
{
    gs_deform_conv_desc d;
    gs_deform_conv_desc_3x3(&d, 1, s->cin, s->cout, s->res, s->res);
    d.offset_format = GS_DEFORM_OFFSET_RAW_NCHW;
    unsigned seed = 11;
    size_t hw = (size_t)s->res * s->res;
    b->w = rand_floats((size_t)s->cout * s->cin * 9, -0.1f, 0.1f, &seed);
    b->b = rand_floats((size_t)s->cout, -1, 1, &seed);
    b->in = rand_floats(gs_deform_conv_blocked_size(1, s->cin, s->res, s->res), -1, 1, &seed);
    b->om = rand_floats(27 * hw, -3, 3, &seed);
    b->out = rand_floats(gs_deform_conv_blocked_size(1, s->cout, s->res, s->res), 0, 0, &seed);
    b->c = gs_deform_conv_new(&d, b->w, b->b, 1);
    b->sc = b->c ? gs_deform_conv_scratch_new(b->c) : NULL;
    if (!b->sc) {
        fprintf(stderr, "deform_conv: %s\n", gs_error_get());
        exit(1);
    }
}

static void deform_run(deform_bench *b)
{
    if (gs_deform_conv_run(b->c, b->sc, b->in, b->om, NULL, b->out) < 0) {
        fprintf(stderr, "deform_conv: %s\n", gs_error_get());
        exit(1);
    }
}

static void deform_free(deform_bench *b)
{
    gs_deform_conv_scratch_destroy(&b->sc);
    gs_deform_conv_destroy(&b->c);
    free(b->w);
    free(b->b);
    free(b->in);
    free(b->om);
    free(b->out);
}

int main(int argc, char **argv)
{
    int reps = 10, only = -1, only_threads = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--reps") == 0)
            reps = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--shape") == 0)
            only = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--threads") == 0)
            only_threads = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "usage: %s [--reps R] [--shape I] [--threads T]\n", argv[0]);
            return 2;
        }
    }
    if (reps < 1)
        reps = 1;
    const int nshapes = (int)(sizeof SHAPES / sizeof SHAPES[0]);
    const int all = omp_get_max_threads();
    int thread_counts[2] = {1, all}, nt = all > 1 ? 2 : 1;
    if (only_threads > 0) {
        thread_counts[0] = only_threads;
        nt = 1;
    }
    double *td = malloc(sizeof(double) * (size_t)reps), *tc = malloc(sizeof(double) * (size_t)reps);
    printf("%-16s %4s %12s %12s %7s %9s %9s  %s\n", "shape", "thr", "deform ms", "dense ms",
           "ratio", "dcn GF/s", "conv GF/s", "dense impl");
    for (int ti = 0; ti < nt; ti++) {
        omp_set_num_threads(thread_counts[ti]);
        for (int i = 0; i < nshapes; i++) {
            if (only >= 0 && i != only)
                continue;
            const bench_shape *s = &SHAPES[i];
            deform_bench db;
            dense_bench cb;
            deform_setup(s, &db);
            dense_setup(s, &cb);
            /* Alternate the two so that load from elsewhere hits both alike. */
            for (int r = -2; r < reps; r++) {
                double t0 = now_s();
                deform_run(&db);
                double t1 = now_s();
                dense_run(&cb);
                double t2 = now_s();
                if (r >= 0) {
                    td[r] = t1 - t0;
                    tc[r] = t2 - t1;
                }
            }
            double md = median(td, reps), mc = median(tc, reps);
            double gflop = 2.0 * s->cin * s->cout * 9.0 * s->res * s->res * 1e-9;
            char name[32];
            snprintf(name, sizeof name, "%d->%d@%d", s->cin, s->cout, s->res);
            printf("%-16s %4d %12.3f %12.3f %7.2f %9.1f %9.1f  %s\n", name, thread_counts[ti],
                   md * 1e3, mc * 1e3, md / mc, gflop / md, gflop / mc, cb.impl);
            fflush(stdout);
            deform_free(&db);
            dense_free(&cb);
        }
    }
    free(td);
    free(tc);
    return 0;
}
