/*
 * cmd_calibrate: `gastroscreen calibrate --model B --tiles DIR [--max N] --out B8`, the
 * calibration that int8 inference needs (model/FORMAT.md "int8 calibration").
 *
 * Runs the multi-task network in float32 on the PNG tiles of DIR (sorted by name, at most N,
 * 64 by default; any size that is a multiple of 32, as `infer` reads them) and records, at the
 * input of every conv that int8 quantises, the largest |x| over all tiles. It then writes B8:
 * B's tensors byte for byte and B's metadata (earlier int8 keys dropped) plus one key per conv,
 * "int8.amax.multitask.<layer>". The maximum is used, not a percentile: these convs read ReLU
 * outputs summed over residual paths, and clipping the few large values (which carry the
 * strongest responses) moves the patch score more than the coarser step of a max-based scale
 * does; it is also what oneDNN's and OpenVINO's default min/max calibration do. Tiles should
 * look like what the lab scans (tissue tiles of real slides): the scales fit what was seen.
 *
 * It then measures the accuracy budgets (model/network.h GS_BF16_BUDGET_*, GS_INT8_BUDGET_*)
 * of each reduced precision this CPU runs natively, from B8 against fp32, on the tiles of
 * --check DIR (held-out tiles; without it, the calibration tiles, which flatters int8) and
 * records each as "precision.budget.<p>" = "met; ..." or "unmet; ..." with the worst figures
 * (model/FORMAT.md "precision budgets"): gs_precision_default runs a bundle in the fastest
 * precision whose budget it records as met. A precision this CPU cannot run is not measured
 * and gets no key (a key of B is dropped: the ranges it was measured with are gone).
 *
 * Exit status: 0 written, 1 failure (message names the file; B8 is not left behind), 2 usage.
 */
#include "daemon/cli/commands.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "model/network.h"
#include "model/weights.h"
#include "ops/error.h"
#include "stages/slide/png_io.h"

enum { MAX_SIZES = 8 };

static void usage(FILE *f)
{
    fprintf(f, "usage: gastroscreen calibrate --model BUNDLE --tiles DIR [--max N] [--check DIR2]\n"
               "                              --out BUNDLE8\n"
               "  runs the multi-task network on DIR's PNG tiles (at most N, default 64) and\n"
               "  writes BUNDLE8: BUNDLE plus the int8 activation ranges (precision = int8)\n"
               "  and, for bf16 and int8 where this CPU runs them natively, whether their\n"
               "  accuracy budget against fp32 holds on DIR2's tiles (at most N; default: the\n"
               "  calibration tiles); the default precision is the fastest whose budget holds\n");
}

typedef struct {
    char **keys;
    float *amax;
    size_t n, cap;
} ranges;

typedef struct {
    ranges *r;
    int failed;
} collect_ctx;

static void collect(void *vctx, const char *key, float amax)
{
    collect_ctx *ctx = vctx;
    ranges *r = ctx->r;
    for (size_t i = 0; i < r->n; i++)
        if (!strcmp(r->keys[i], key)) {
            if (amax > r->amax[i])
                r->amax[i] = amax;
            return;
        }
    if (r->n == r->cap) {
        size_t nc = r->cap ? r->cap * 2 : 64;
        char **k = realloc(r->keys, nc * sizeof *k);
        if (k)
            r->keys = k;
        float *a = k ? realloc(r->amax, nc * sizeof *a) : NULL;
        if (!a) {
            ctx->failed = 1;
            return;
        }
        r->amax = a;
        r->cap = nc;
    }
    r->keys[r->n] = strdup(key);
    if (!r->keys[r->n]) {
        ctx->failed = 1;
        return;
    }
    r->amax[r->n++] = amax;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The PNG files of dir, sorted, at most max. Returns the count, or -1 with the error set (none
 * there: "no PNG tiles to <purpose>"). */
static int list_tiles(const char *dir, int max, const char *purpose, char ***out)
{
    DIR *d = opendir(dir);
    char **v = NULL;
    int n = 0, cap = 0;
    *out = NULL;
    if (!d)
        return gs_error_set("%s: cannot open the tiles folder: %s", dir, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcasecmp(e->d_name + len - 4, ".png"))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **nv = realloc(v, (size_t)cap * sizeof *nv);
            if (!nv)
                goto oom;
            v = nv;
        }
        v[n] = malloc(strlen(dir) + len + 2);
        if (!v[n])
            goto oom;
        sprintf(v[n++], "%s/%s", dir, e->d_name);
    }
    closedir(d);
    if (n > 1)
        qsort(v, (size_t)n, sizeof *v, by_name);
    for (int i = max; i < n; i++)
        free(v[i]);
    *out = v;
    if (n == 0)
        return gs_error_set("%s: no PNG tiles to %s", dir, purpose);
    return n < max ? n : max;
oom:
    closedir(d);
    for (int i = 0; i < n; i++)
        free(v[i]);
    free(v);
    return gs_error_set("out of memory listing %s", dir);
}

/* Reads the PNG tile at path into *px (caller frees), *w x *h. Returns 1, 0 for a tile whose
 * size is not a multiple of 32 (said on stderr, when say_skips, and skipped), or -1 with the
 * error set. */
static int read_tile(const char *path, int say_skips, uint8_t **px, int *w, int *h)
{
    if (gs_png_read(path, 3, px, w, h))
        return -1;
    if (*w % 32 == 0 && *h % 32 == 0)
        return 1;
    if (say_skips)
        fprintf(stderr, "gastroscreen calibrate: %s: %dx%d is not a multiple of 32; skipped\n",
                path, *w, *h);
    free(*px);
    *px = NULL;
    return 0;
}

/* One forward of a tile: score = sigmoid(logit), feature, seg logits (caller-sized). */
typedef struct {
    float score, feature[512], *seg;
} tile_out;

/* The worst figures of one precision against fp32 over the check tiles. */
typedef struct {
    double score;  /* max |score - score_fp32| */
    double cosine; /* min feature cosine */
    double seg;    /* bf16: max |sigmoid(seg) - sigmoid(seg_fp32)|; int8: min Dice at 0.5 */
} budget_figs;

static double cosine(const float *a, const float *b, int n)
{
    double ab = 0, aa = 0, bb = 0;
    for (int i = 0; i < n; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    /* Two zero features are the same feature. */
    return aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : (aa == bb ? 1.0 : 0.0);
}

/* fmax / fmin that let a NaN through as the worst value, so it never passes a budget. */
static double worst_max(double a, double b)
{
    return isnan(b) ? INFINITY : fmax(a, b);
}

static double worst_min(double a, double b)
{
    return isnan(b) ? -INFINITY : fmin(a, b);
}

static void compare(gs_precision p, const tile_out *ref, const tile_out *o, size_t nseg,
                    budget_figs *f)
{
    f->score = worst_max(f->score, fabs((double)o->score - ref->score));
    f->cosine = worst_min(f->cosine, cosine(ref->feature, o->feature, 512));
    if (p == GS_PRECISION_BF16) {
        for (size_t i = 0; i < nseg; i++)
            f->seg = worst_max(f->seg, fabs(gs_sigmoid(o->seg[i]) - gs_sigmoid(ref->seg[i])));
        return;
    }
    /* logit > 0 is sigmoid > 0.5. Two empty masks agree. */
    size_t both = 0, a = 0, b = 0;
    for (size_t i = 0; i < nseg; i++) {
        a += ref->seg[i] > 0.0f;
        b += o->seg[i] > 0.0f;
        both += ref->seg[i] > 0.0f && o->seg[i] > 0.0f;
    }
    f->seg = worst_min(f->seg, a + b ? 2.0 * (double)both / (double)(a + b) : 1.0);
}

static int figs_met(gs_precision p, const budget_figs *f)
{
    if (p == GS_PRECISION_BF16)
        return f->score <= GS_BF16_BUDGET_SCORE && f->cosine >= GS_BF16_BUDGET_COSINE &&
               f->seg <= GS_BF16_BUDGET_SEG;
    return f->score <= GS_INT8_BUDGET_SCORE && f->cosine >= GS_INT8_BUDGET_COSINE &&
           f->seg >= GS_INT8_BUDGET_DICE;
}

/* Runs the calibrated bundle at path in fp32 and in each reduced precision this CPU runs
 * natively on the tiles (which names them; say_skips: say which are skipped, they were not
 * said yet), and rewrites it with one precision.budget key per precision run. Prints the
 * figures. Returns 0 or -1 with the error set. */
static int check_budgets(const char *path, char **tiles, int ntiles, const char *which,
                         int say_skips)
{
    gs_precision precs[3] = {GS_PRECISION_FP32};
    int np = 1;
    for (gs_precision p = GS_PRECISION_BF16; p <= GS_PRECISION_INT8; p++)
        if (gs_precision_usable(p, NULL, 0) == p)
            precs[np++] = p;
    const gs_net_id mt = GS_NET_MULTITASK;
    gs_model *m = gs_model_load_nets(path, &mt, 1);
    gs_net_state *st[3] = {0};
    tile_out out[3] = {0};
    budget_figs figs[3];
    char *keys[2] = {0}, *vals[2] = {0};
    int rc = -1, used = 0, sw = 0, sh = 0;
    for (int q = 0; q < 3; q++)
        figs[q] = (budget_figs){0.0, 1.0, q && precs[q] == GS_PRECISION_INT8 ? 1.0 : 0.0};
    if (!m)
        goto done;
    for (int i = 0; i < ntiles; i++) {
        uint8_t *px = NULL;
        int w, h, got = read_tile(tiles[i], say_skips, &px, &w, &h);
        if (got < 0)
            goto done;
        if (got == 0)
            continue;
        size_t nseg = (size_t)(h / 4) * (w / 4);
        if (w != sw || h != sh) {
            for (int q = 0; q < np; q++) {
                gs_net_state_destroy(&st[q]);
                float *seg = realloc(out[q].seg, nseg * sizeof *seg);
                if (!seg) {
                    free(px);
                    gs_error_set("out of memory");
                    goto done;
                }
                out[q].seg = seg;
                /* A state keeps the precision set when it was made. */
                if (gs_model_set_precision(m, precs[q]) ||
                    !(st[q] = gs_net_state_new(m, mt, 1, h, w))) {
                    free(px);
                    goto done;
                }
            }
            sw = w;
            sh = h;
        }
        for (int q = 0; q < np; q++) {
            float logit;
            if (gs_net_run_multitask(st[q], px, &logit, out[q].feature, out[q].seg)) {
                free(px);
                goto done;
            }
            out[q].score = gs_sigmoid(logit);
            if (q)
                compare(precs[q], &out[0], &out[q], nseg, &figs[q]);
        }
        free(px);
        used++;
    }
    if (used == 0) {
        gs_error_set("no check tile with a size that is a multiple of 32");
        goto done;
    }
    for (int q = 1; q < np; q++) {
        const char *name = gs_precision_name(precs[q]);
        int met = figs_met(precs[q], &figs[q]);
        keys[q - 1] = malloc(64);
        vals[q - 1] = malloc(256);
        if (!keys[q - 1] || !vals[q - 1]) {
            gs_error_set("out of memory");
            goto done;
        }
        snprintf(keys[q - 1], 64, GS_PRECISION_BUDGET_PREFIX "%s", name);
        snprintf(vals[q - 1], 256,
                 "%s; worst of %d tiles (%s) against fp32: score %.3g, feature cosine %.6f, "
                 "segmentation %s %.4g",
                 met ? "met" : "unmet", used, which, figs[q].score, figs[q].cosine,
                 precs[q] == GS_PRECISION_BF16 ? "max |sigmoid|" : "Dice", figs[q].seg);
        printf("%s budget %s\n", name, vals[q - 1]);
    }
    if (np == 1)
        printf("no bf16 or int8 budget measured: this CPU runs neither natively\n");
    rc = gs_weights_write_with_meta(gs_model_weights(m), path, GS_PRECISION_BUDGET_PREFIX,
                                    (const char *const *)keys, (const char *const *)vals,
                                    (size_t)np - 1);
done:
    for (int q = 0; q < 3; q++) {
        gs_net_state_destroy(&st[q]);
        free(out[q].seg);
    }
    for (int q = 0; q < 2; q++) {
        free(keys[q]);
        free(vals[q]);
    }
    gs_model_destroy(&m);
    return rc;
}

int gs_cmd_calibrate(int argc, char **argv)
{
    const char *model_path = NULL, *dir = NULL, *out = NULL, *check_dir = NULL;
    int max = 64;
    static const struct option opts[] = {{"model", required_argument, NULL, 'm'},
                                         {"tiles", required_argument, NULL, 't'},
                                         {"max", required_argument, NULL, 'n'},
                                         {"out", required_argument, NULL, 'o'},
                                         {"check", required_argument, NULL, 'c'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            model_path = optarg;
            break;
        case 't':
            dir = optarg;
            break;
        case 'n': {
            char *end = NULL;
            long v = strtol(optarg, &end, 10);
            if (!*optarg || *end || v < 1 || v > 100000) {
                fprintf(stderr,
                        "gastroscreen calibrate: --max %s: expected a whole number "
                        "1..100000\n",
                        optarg);
                return 2;
            }
            max = (int)v;
            break;
        }
        case 'o':
            out = optarg;
            break;
        case 'c':
            check_dir = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!model_path || !dir || !out || optind != argc) {
        usage(stderr);
        return 2;
    }

    int rc = 1, ntiles = 0, used = 0, nchecks = 0, written = 0;
    char **tiles = NULL, **checks = NULL;
    gs_model *m = NULL;
    gs_net_state *states[MAX_SIZES] = {0};
    int sizes[MAX_SIZES][2];
    int nstates = 0;
    ranges r = {0};
    char **vals = NULL;
    float logit, feature[512], *seg = NULL;

    if ((ntiles = list_tiles(dir, max, "calibrate on", &tiles)) < 0 ||
        (check_dir && (nchecks = list_tiles(check_dir, max, "check the budgets on", &checks)) < 0))
        goto fail;
    const gs_net_id mt = GS_NET_MULTITASK;
    m = gs_model_load_nets(model_path, &mt, 1);
    if (!m)
        goto fail;
    if (!gs_model_has(m, GS_NET_MULTITASK)) {
        gs_error_set("%s: the bundle has no multi-task network to calibrate", model_path);
        goto fail;
    }
    for (int i = 0; i < ntiles; i++) {
        uint8_t *px = NULL;
        int w, h, got = read_tile(tiles[i], 1, &px, &w, &h);
        if (got < 0)
            goto fail;
        if (got == 0)
            continue;
        int k = 0;
        while (k < nstates && (sizes[k][0] != w || sizes[k][1] != h))
            k++;
        if (k == nstates) {
            if (nstates == MAX_SIZES) {
                fprintf(stderr, "gastroscreen calibrate: %s: more than %d tile sizes; skipped\n",
                        tiles[i], MAX_SIZES);
                free(px);
                continue;
            }
            states[k] = gs_net_state_new_calibrating(m, 1, h, w);
            if (!states[k]) {
                free(px);
                goto fail;
            }
            sizes[k][0] = w;
            sizes[k][1] = h;
            nstates++;
        }
        float *nseg = realloc(seg, (size_t)(h / 4) * (w / 4) * sizeof *seg);
        if (!nseg) {
            free(px);
            gs_error_set("out of memory");
            goto fail;
        }
        seg = nseg;
        int run = gs_net_run_multitask(states[k], px, &logit, feature, seg);
        free(px);
        if (run)
            goto fail;
        used++;
    }
    if (used == 0) {
        gs_error_set("%s: no tile with a size that is a multiple of 32", dir);
        goto fail;
    }
    collect_ctx ctx = {&r, 0};
    for (int k = 0; k < nstates; k++)
        if (gs_net_state_calibration(states[k], collect, &ctx) < 0)
            goto fail;
    if (ctx.failed) {
        gs_error_set("out of memory");
        goto fail;
    }
    vals = calloc(r.n ? r.n : 1, sizeof *vals);
    if (!vals) {
        gs_error_set("out of memory");
        goto fail;
    }
    for (size_t i = 0; i < r.n; i++) {
        /* A conv whose input was all zeros on every tile still needs a usable scale; say so,
         * since any real input will then saturate it. */
        float a = r.amax[i] > 0.0f ? r.amax[i] : 1e-6f;
        if (!(r.amax[i] > 0.0f))
            fprintf(stderr,
                    "gastroscreen calibrate: %s: its input was zero on every tile; range set "
                    "to 1e-6 (calibrate on tiles with tissue)\n",
                    r.keys[i]);
        vals[i] = malloc(32);
        if (!vals[i]) {
            gs_error_set("out of memory");
            goto fail;
        }
        snprintf(vals[i], 32, "%.9g", (double)a);
    }
    if (gs_weights_write_with_meta(gs_model_weights(m), out, GS_INT8_AMAX_PREFIX,
                                   (const char *const *)r.keys, (const char *const *)vals, r.n))
        goto fail;
    written = 1;
    printf("calibrated %zu convs on %d tiles of %s: wrote %s\n", r.n, used, dir, out);
    if (check_budgets(out, check_dir ? checks : tiles, check_dir ? nchecks : ntiles,
                      check_dir ? check_dir : "the calibration tiles", check_dir != NULL))
        goto fail;
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "gastroscreen calibrate: %s\n", gs_error_get());
    /* Half a result (ranges without their budgets, or a budget of the input bundle kept with
     * other ranges) must not pass for a calibrated bundle. */
    if (written)
        unlink(out);
done:
    for (int k = 0; k < nstates; k++)
        gs_net_state_destroy(&states[k]);
    gs_model_destroy(&m);
    for (int i = 0; i < ntiles; i++)
        free(tiles[i]);
    free(tiles);
    for (int i = 0; i < nchecks; i++)
        free(checks[i]);
    free(checks);
    for (size_t i = 0; i < r.n; i++) {
        free(r.keys[i]);
        if (vals)
            free(vals[i]);
    }
    free(r.keys);
    free(r.amax);
    free(vals);
    free(seg);
    return rc;
}
