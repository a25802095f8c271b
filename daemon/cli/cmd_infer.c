/*
 * cmd_infer: `gastroscreen infer --model BUNDLE (TILE.png ... | SLIDE --x X --y Y) [--out DIR]`,
 * the networks of a bundle run on one tile (or a batch of PNG tiles).
 *
 * The multi-task network runs on the tile(s): the command prints the patch score (sigmoid of
 * the logit), a summary of the 512-d feature (min, mean, max, L2 norm) and of the segmentation
 * heatmap (sigmoid of the seg logits), and writes the heatmap as a grey PNG (heatmap.png, or
 * heatmap_<i>.png for a batch) into DIR (default: the current folder). A slide tile is read at
 * the bundle's target_mpp with its top-left corner at level-0 pixel (X, Y), tile_size square.
 *
 * With --out DIR every network present in the bundle also runs, and every raw output is
 * written as float32 .npy named as model/pytorch/run.py names them, on inputs prepared the
 * way run.py expects (which are written too, so a script can feed run.py the same bytes):
 *  - multitask on the tile(s):            input tiles_u8.npy [N,H,W,3] uint8
 *  - foreground on the tile(s) as they are (a 512 tile is already the 512x512 thumbnail size)
 *  - blur on the central 256x256 crop (the whole tile if smaller): blur_u8.npy [N,h,w,3]
 *  - screener on each tile's multitask feature repeated to 64 rows: screener_input.npy
 *    [N,64,512] float32 (run.py's --screener accepts it as is)
 * Provenance of every network is printed; an untrained one reads "model: untrained — not a
 * diagnosis". Errors name the file and go to stderr with a non-zero exit status.
 */
#include "daemon/cli/commands.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model/network.h"
#include "ops/error.h"
#include "stages/runtime/fileio.h"
#include "stages/slide/png_io.h"
#include "stages/slide/reader.h"

enum { SCREENER_ROWS = 64, BLUR_CROP = 256 };

static void usage(FILE *f)
{
    fprintf(f, "usage: gastroscreen infer --model BUNDLE TILE.png [TILE.png ...] [--out DIR]\n"
               "       gastroscreen infer --model BUNDLE SLIDE --x X --y Y [--out DIR]\n"
               "\n"
               "Runs the multi-task network on a tile (PNG, H and W multiples of 32; several PNGs\n"
               "of one size make a batch) or on the tile_size tile of SLIDE at the bundle's\n"
               "target_mpp whose top-left corner is level-0 pixel (X, Y). Prints the patch score,\n"
               "the feature and heatmap summaries and the provenance of each network; writes the\n"
               "heatmap PNG into DIR (default: .). With --out DIR, also runs every network in the\n"
               "bundle and writes each raw output as float32 .npy, named as model/pytorch/run.py\n"
               "names them, plus the uint8/float inputs used (tiles_u8.npy, blur_u8.npy,\n"
               "screener_input.npy).\n");
}

/* Writes a C-order little-endian .npy (descr "<f4" or "|u1") of the given shape. */
static int write_npy(const char *dir, const char *name, const char *descr, const void *data,
                     size_t elem, int ndim, const long *shape)
{
    char path[4096], dict[256], shp[128] = "";
    size_t count = 1;
    int off = 0;
    for (int i = 0; i < ndim; i++) {
        off += snprintf(shp + off, sizeof shp - (size_t)off, "%ld,%s", shape[i],
                        i + 1 < ndim ? " " : "");
        count *= (size_t)shape[i];
    }
    if (ndim > 1)
        shp[off - 1] = '\0'; /* "(a, b)" but "(a,)" */
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int len = snprintf(dict, sizeof dict,
                       "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr, shp);
    int total = 10 + len + 1, pad = (64 - total % 64) % 64;
    FILE *f = fopen(path, "wb");
    if (!f)
        return gs_error_set("%s: cannot create: %s", path, strerror(errno));
    uint16_t hlen = (uint16_t)(len + pad + 1);
    unsigned char magic[10] = {0x93,
                               'N',
                               'U',
                               'M',
                               'P',
                               'Y',
                               1,
                               0,
                               (unsigned char)(hlen & 0xff),
                               (unsigned char)(hlen >> 8)};
    int ok = fwrite(magic, 1, 10, f) == 10 && fwrite(dict, 1, (size_t)len, f) == (size_t)len;
    for (int i = 0; ok && i < pad; i++)
        ok = fputc(' ', f) != EOF;
    ok = ok && fputc('\n', f) != EOF && fwrite(data, elem, count, f) == count;
    if (fclose(f) != 0)
        ok = 0;
    if (!ok)
        return gs_error_set("%s: write failed: %s", path, strerror(errno));
    return 0;
}

static int ends_with_png(const char *s)
{
    size_t n = strlen(s);
    return n >= 4 && !strcasecmp(s + n - 4, ".png");
}

static float sigmoidf(float x)
{
    return 1.0f / (1.0f + expf(-x));
}

static void summary(const char *what, const float *v, size_t n, int apply_sigmoid)
{
    double lo = INFINITY, hi = -INFINITY, sum = 0.0, sq = 0.0;
    size_t over = 0;
    for (size_t i = 0; i < n; i++) {
        double x = apply_sigmoid ? sigmoidf(v[i]) : v[i];
        lo = x < lo ? x : lo;
        hi = x > hi ? x : hi;
        sum += x;
        sq += x * x;
        over += x >= 0.5;
    }
    if (apply_sigmoid)
        printf("  %s: min %.4f mean %.4f max %.4f, fraction >= 0.5: %.4f\n", what, lo, sum / n, hi,
               (double)over / n);
    else
        printf("  %s: min %.4f mean %.4f max %.4f L2 %.4f\n", what, lo, sum / n, hi, sqrt(sq));
}

static void print_provenance(const gs_model *m)
{
    for (int id = 0; id < GS_NET_COUNT; id++) {
        const char *name = gs_net_name((gs_net_id)id);
        if (!gs_model_has(m, (gs_net_id)id))
            printf("network %s: absent from the bundle (untrained)\n", name);
        else if (gs_model_untrained(m, (gs_net_id)id))
            printf("network %s: model: untrained \xe2\x80\x94 not a diagnosis\n", name);
        else
            printf("network %s: provenance: %s\n", name, gs_model_provenance(m, (gs_net_id)id));
    }
}

/* Reads the inputs into *rgb ([n][h][w][3], malloc'd). */
static int read_inputs(char **paths, int npaths, const char *slide_path, long long x, long long y,
                       const gs_model *m, uint8_t **rgb, int *n, int *h, int *w)
{
    *rgb = NULL;
    if (slide_path) {
        const gs_weights *wt = gs_model_weights(m);
        const char *ts = gs_weights_meta(wt, "tile_size"), *tm = gs_weights_meta(wt, "target_mpp");
        int tile = ts ? atoi(ts) : 0;
        double target = tm ? strtod(tm, NULL) : 0.0;
        if (tile <= 0 || tile % 32 || !(target > 0.0))
            return gs_error_set("bundle metadata tile_size \"%s\" / target_mpp \"%s\" unusable",
                                ts ? ts : "", tm ? tm : "");
        gs_slide_options o;
        gs_slide_options_default(&o);
        o.target_mpp = target;
        gs_slide *s = gs_slide_open(slide_path, &o);
        if (!s)
            return -1;
        /* Level-0 pixel -> target-grid pixel. */
        double scale = gs_slide_mpp(s) / target;
        int64_t tx = llround((double)x * scale), ty = llround((double)y * scale);
        for (size_t i = 0; i < gs_slide_warning_count(s); i++)
            printf("slide warning: %s\n", gs_slide_warning(s, i));
        *rgb = malloc((size_t)tile * tile * 3);
        if (!*rgb) {
            gs_slide_destroy(&s);
            return gs_error_set("out of memory");
        }
        int rc = gs_slide_read_target(s, tx, ty, tile, tile, *rgb);
        gs_slide_destroy(&s);
        if (rc) {
            free(*rgb);
            *rgb = NULL;
            return -1;
        }
        printf("tile: %s at level-0 (%lld, %lld) = target (%lld, %lld), %dx%d at %g um/px\n",
               slide_path, x, y, (long long)tx, (long long)ty, tile, tile, target);
        *n = 1;
        *h = *w = tile;
        return 0;
    }
    for (int i = 0; i < npaths; i++) {
        uint8_t *px = NULL;
        int pw, ph;
        if (gs_png_read(paths[i], 3, &px, &pw, &ph))
            goto fail;
        if (i == 0) {
            *w = pw;
            *h = ph;
            *rgb = malloc((size_t)npaths * pw * ph * 3);
            if (!*rgb) {
                free(px);
                gs_error_set("out of memory");
                goto fail;
            }
        } else if (pw != *w || ph != *h) {
            free(px);
            gs_error_set("%s: %dx%d differs from the first tile's %dx%d", paths[i], pw, ph, *w, *h);
            goto fail;
        }
        memcpy(*rgb + (size_t)i * pw * ph * 3, px, (size_t)pw * ph * 3);
        free(px);
    }
    if (*w % 32 || *h % 32) {
        gs_error_set("%s: tile is %dx%d; width and height must be multiples of 32", paths[0], *w,
                     *h);
        goto fail;
    }
    *n = npaths;
    return 0;
fail:
    free(*rgb);
    *rgb = NULL;
    return -1;
}

/* Runs the small networks on inputs derived from the tile(s) and writes their outputs. */
static int run_others(const gs_model *m, const uint8_t *rgb, int n, int h, int w,
                      const float *feature, const char *dir)
{
    int rc = -1;
    gs_net_state *s = NULL;
    float *a = NULL, *b = NULL;
    uint8_t *crop = NULL;
    if (gs_model_has(m, GS_NET_FOREGROUND)) {
        a = malloc((size_t)n * h * w * sizeof(float));
        b = malloc((size_t)n * (h / 8) * (w / 8) * sizeof(float));
        if (!a || !b) {
            gs_error_set("out of memory");
            goto done;
        }
        s = gs_net_state_new(m, GS_NET_FOREGROUND, n, h, w);
        if (!s || gs_net_run_foreground(s, rgb, a, b))
            goto done;
        long sa[4] = {n, 1, h, w}, sb[4] = {n, 1, h / 8, w / 8};
        if (write_npy(dir, "foreground_logit.npy", "<f4", a, 4, 4, sa) ||
            write_npy(dir, "foreground_logit_lowres.npy", "<f4", b, 4, 4, sb))
            goto done;
        /* Tissue where P(foreground) > the bundle's threshold.foreground (model/FORMAT.md). */
        double t = gs_model_get_thresholds(m).foreground, frac = 0.0;
        for (size_t i = 0; i < (size_t)n * h * w; i++)
            frac += sigmoidf(a[i]) > t;
        printf("foreground: tissue fraction (P > threshold.foreground %.4g) %.4f\n", t,
               frac / ((double)n * h * w));
        gs_net_state_destroy(&s);
        free(a);
        free(b);
        a = b = NULL;
    }
    if (gs_model_has(m, GS_NET_BLUR)) {
        int ch = h < BLUR_CROP ? h : BLUR_CROP, cw = w < BLUR_CROP ? w : BLUR_CROP;
        int y0 = (h - ch) / 2, x0 = (w - cw) / 2;
        crop = malloc((size_t)n * ch * cw * 3);
        a = malloc((size_t)n * sizeof(float));
        if (!crop || !a) {
            gs_error_set("out of memory");
            goto done;
        }
        for (int i = 0; i < n; i++)
            for (int y = 0; y < ch; y++)
                memcpy(crop + (((size_t)i * ch + y) * cw) * 3,
                       rgb + (((size_t)i * h + y0 + y) * w + x0) * 3, (size_t)cw * 3);
        s = gs_net_state_new(m, GS_NET_BLUR, n, ch, cw);
        if (!s || gs_net_run_blur(s, crop, a))
            goto done;
        long sc[4] = {n, ch, cw, 3}, sl[2] = {n, 1};
        if (write_npy(dir, "blur_u8.npy", "|u1", crop, 1, 4, sc) ||
            write_npy(dir, "blur_logit.npy", "<f4", a, 4, 2, sl))
            goto done;
        for (int i = 0; i < n; i++)
            printf("blur: tile %d: P(blurred) %.4f (logit %.6f)%s\n", i, sigmoidf(a[i]), a[i],
                   sigmoidf(a[i]) > gs_model_get_thresholds(m).blur ? ": blurred" : "");
        gs_net_state_destroy(&s);
        free(a);
        a = NULL;
    }
    if (gs_model_has(m, GS_NET_SCREENER)) {
        b = malloc((size_t)n * SCREENER_ROWS * 512 * sizeof(float));
        a = malloc((size_t)n * sizeof(float));
        if (!a || !b) {
            gs_error_set("out of memory");
            goto done;
        }
        s = gs_net_state_new(m, GS_NET_SCREENER, SCREENER_ROWS, 1, 1);
        if (!s)
            goto done;
        for (int i = 0; i < n; i++) {
            float *rows = b + (size_t)i * SCREENER_ROWS * 512;
            for (int r = 0; r < SCREENER_ROWS; r++)
                memcpy(rows + (size_t)r * 512, feature + (size_t)i * 512, 512 * sizeof(float));
            if (gs_net_run_screener(s, rows, &a[i]))
                goto done;
            printf("screener: tile %d feature x %d rows: score %.4f (logit %.6f)\n", i,
                   SCREENER_ROWS, sigmoidf(a[i]), a[i]);
        }
        long si[3] = {n, SCREENER_ROWS, 512}, sl[2] = {n, 1};
        if (write_npy(dir, "screener_input.npy", "<f4", b, 4, 3, si) ||
            write_npy(dir, "screener_logit.npy", "<f4", a, 4, 2, sl))
            goto done;
    }
    rc = 0;
done:
    gs_net_state_destroy(&s);
    free(a);
    free(b);
    free(crop);
    return rc;
}

int gs_cmd_infer(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, NULL, 'm'}, {"out", required_argument, NULL, 'o'},
        {"x", required_argument, NULL, 'x'},     {"y", required_argument, NULL, 'y'},
        {"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0}};
    const char *model_path = NULL, *out = NULL;
    long long x = 0, y = 0;
    int have_x = 0, have_y = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:o:h", opts, NULL)) != -1) {
        char *end = NULL;
        switch (c) {
        case 'm':
            model_path = optarg;
            break;
        case 'o':
            out = optarg;
            break;
        case 'x':
        case 'y':
            errno = 0;
            *(c == 'x' ? &x : &y) = strtoll(optarg, &end, 10);
            if (errno || end == optarg || *end) {
                fprintf(stderr, "gastroscreen infer: --%c: '%s' is not an integer\n", c, optarg);
                return 2;
            }
            *(c == 'x' ? &have_x : &have_y) = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    int npaths = argc - optind;
    if (!model_path || npaths < 1) {
        fprintf(stderr, "gastroscreen infer: need --model BUNDLE and a tile or slide\n");
        usage(stderr);
        return 2;
    }
    int is_slide = !ends_with_png(argv[optind]);
    if (is_slide && (npaths != 1 || !have_x || !have_y)) {
        fprintf(stderr, "gastroscreen infer: a slide needs exactly one path and --x X --y Y\n");
        return 2;
    }
    if (!is_slide && (have_x || have_y)) {
        fprintf(stderr, "gastroscreen infer: --x/--y apply to slides, not PNG tiles\n");
        return 2;
    }
    for (int i = optind; !is_slide && i < argc; i++)
        if (!ends_with_png(argv[i])) {
            fprintf(stderr, "gastroscreen infer: %s: a batch is made of PNG tiles only\n", argv[i]);
            return 2;
        }

    int rc = 1, n = 0, h = 0, w = 0;
    uint8_t *rgb = NULL;
    float *logit = NULL, *feature = NULL, *seg = NULL;
    uint8_t *heat = NULL;
    gs_net_state *s = NULL;
    const char *dir = out ? out : ".";
    gs_model *m = NULL;
    /* PNG tiles do not depend on the bundle: check them before the (slower) model load. */
    if (!is_slide && read_inputs(argv + optind, npaths, NULL, 0, 0, NULL, &rgb, &n, &h, &w))
        goto fail;
    m = gs_model_load(model_path);
    if (!m)
        goto fail;
    printf("model: %s\n", model_path);
    print_provenance(m);
    if (!gs_model_has(m, GS_NET_MULTITASK)) {
        gs_error_set("%s: the bundle has no multitask network", model_path);
        goto fail;
    }
    if (is_slide && read_inputs(NULL, 0, argv[optind], x, y, m, &rgb, &n, &h, &w))
        goto fail;
    if (out && gs_mkdir_p(out, 0755))
        goto fail;
    size_t sh = (size_t)h / 4, sw = (size_t)w / 4;
    logit = malloc((size_t)n * sizeof(float));
    feature = malloc((size_t)n * 512 * sizeof(float));
    seg = malloc((size_t)n * sh * sw * sizeof(float));
    heat = malloc(sh * sw);
    if (!logit || !feature || !seg || !heat) {
        gs_error_set("out of memory");
        goto fail;
    }
    s = gs_net_state_new(m, GS_NET_MULTITASK, n, h, w);
    if (!s || gs_net_run_multitask(s, rgb, logit, feature, seg))
        goto fail;
    for (int i = 0; i < n; i++) {
        const char *what = is_slide ? argv[optind] : argv[optind + i];
        printf("tile %d (%s): patch score %.4f (logit %.6f)%s\n", i, what, sigmoidf(logit[i]),
               logit[i],
               gs_model_untrained(m, GS_NET_MULTITASK)
                   ? " [model: untrained \xe2\x80\x94 not a diagnosis]"
                   : "");
        summary("feature", feature + (size_t)i * 512, 512, 0);
        const float *sg = seg + (size_t)i * sh * sw;
        summary("heatmap", sg, sh * sw, 1);
        for (size_t k = 0; k < sh * sw; k++)
            heat[k] = (uint8_t)lrintf(sigmoidf(sg[k]) * 255.0f);
        char path[4096];
        if (n == 1)
            snprintf(path, sizeof path, "%s/heatmap.png", dir);
        else
            snprintf(path, sizeof path, "%s/heatmap_%d.png", dir, i);
        if (gs_png_write(path, heat, (int)sw, (int)sh, sw, 1))
            goto fail;
        printf("  wrote %s (%zux%zu)\n", path, sw, sh);
    }
    if (out) {
        long st[4] = {n, h, w, 3}, sl[2] = {n, 1}, sf[2] = {n, 512},
             ss[4] = {n, 1, (long)sh, (long)sw};
        if (write_npy(out, "tiles_u8.npy", "|u1", rgb, 1, 4, st) ||
            write_npy(out, "multitask_logit.npy", "<f4", logit, 4, 2, sl) ||
            write_npy(out, "multitask_feature.npy", "<f4", feature, 4, 2, sf) ||
            write_npy(out, "multitask_seg.npy", "<f4", seg, 4, 4, ss))
            goto fail;
        gs_net_state_destroy(&s);
        if (run_others(m, rgb, n, h, w, feature, out))
            goto fail;
        printf("wrote the raw outputs to %s\n", out);
    }
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "gastroscreen infer: %s\n", gs_error_get());
done:
    gs_net_state_destroy(&s);
    gs_model_destroy(&m);
    free(rgb);
    free(logit);
    free(feature);
    free(seg);
    free(heat);
    return rc;
}
