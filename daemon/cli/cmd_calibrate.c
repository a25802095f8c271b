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
 * Exit status: 0 written, 1 failure (message names the file), 2 usage.
 */
#include "daemon/cli/commands.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "model/network.h"
#include "model/weights.h"
#include "ops/error.h"
#include "stages/slide/png_io.h"

enum { MAX_SIZES = 8 };

static void usage(FILE *f)
{
    fprintf(f, "usage: gastroscreen calibrate --model BUNDLE --tiles DIR [--max N] --out BUNDLE8\n"
               "  runs the multi-task network on DIR's PNG tiles (at most N, default 64) and\n"
               "  writes BUNDLE8: BUNDLE plus the int8 activation ranges (precision = int8)\n");
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

/* The PNG files of dir, sorted, at most max. Returns the count (0 allowed) or -1. */
static int list_tiles(const char *dir, int max, char ***out)
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
    return n < max ? n : max;
oom:
    closedir(d);
    for (int i = 0; i < n; i++)
        free(v[i]);
    free(v);
    return gs_error_set("out of memory listing %s", dir);
}

int gs_cmd_calibrate(int argc, char **argv)
{
    const char *model_path = NULL, *dir = NULL, *out = NULL;
    int max = 64;
    static const struct option opts[] = {
        {"model", required_argument, NULL, 'm'}, {"tiles", required_argument, NULL, 't'},
        {"max", required_argument, NULL, 'n'},   {"out", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0}};
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

    int rc = 1, ntiles = 0, used = 0;
    char **tiles = NULL;
    gs_model *m = NULL;
    gs_net_state *states[MAX_SIZES] = {0};
    int sizes[MAX_SIZES][2];
    int nstates = 0;
    ranges r = {0};
    char **vals = NULL;
    float logit, feature[512], *seg = NULL;

    ntiles = list_tiles(dir, max, &tiles);
    if (ntiles < 0)
        goto fail;
    if (ntiles == 0) {
        gs_error_set("%s: no PNG tiles to calibrate on", dir);
        goto fail;
    }
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
        int w, h;
        if (gs_png_read(tiles[i], 3, &px, &w, &h))
            goto fail;
        if (w % 32 || h % 32) {
            fprintf(stderr, "gastroscreen calibrate: %s: %dx%d is not a multiple of 32; skipped\n",
                    tiles[i], w, h);
            free(px);
            continue;
        }
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
    printf("calibrated %zu convs on %d tiles of %s: wrote %s\n", r.n, used, dir, out);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "gastroscreen calibrate: %s\n", gs_error_get());
done:
    for (int k = 0; k < nstates; k++)
        gs_net_state_destroy(&states[k]);
    gs_model_destroy(&m);
    for (int i = 0; i < ntiles; i++)
        free(tiles[i]);
    free(tiles);
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
