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
 *
 * With --json stdout carries only JSON (jansson): one object for one tile, an array of them
 * for a batch, with every judgement a lab may want to check on that tile:
 *  - "multitask": patch score, logit, heatmap mean and share >= 0.5, the heatmap PNG written,
 *    and the network's provenance and untrained flag;
 *  - "blur": "network" (P(blurred) on the central 256x256 crop and sharp/blurry at the
 *    bundle's threshold.blur) when the blur network is present and trained, else null; with
 *    it the crop's tissue fraction and "sparse_tissue": null when the bundle has no
 *    threshold.blur_sparse_tissue, else that rule (stages/handlers/blur.h) on the crop: below,
 *    whether the classical measure judged the crop, its focus and verdict, whether it fired
 *    (made the tile blurry where the network alone says sharp), and "stage_verdict", the blur
 *    stage's verdict on a job that sets no thresholds (gs_blur_network_verdict, the rule the
 *    blur stage and the infer worker apply: blurry when the network or the sparse-tissue rule
 *    says so);
 *    "classical" always (ops/focus gs_focus_judge_tile at GS_FOCUS_THRESHOLD: score, verdict,
 *    the share of pixels it measured; verdict null with the reason when there is no tissue);
 *  - "tissue": "network" (share of pixels with P(foreground) > threshold.foreground, the tile
 *    given to the foreground network as it is) when that network is present and trained, else
 *    null; "classical" always (gs_tissue_mask of stages/slide/tissue at the tile's mpp);
 *  - "networks": for each of the four, present / trained / provenance;
 *  - "source", "mpp", the slide position and the slide's warnings.
 * The text lines are then not printed; --out still writes the .npy files.
 */
#include "daemon/cli/commands.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "model/network.h"
#include "ops/error.h"
#include "ops/focus.h"
#include "stages/handlers/blur.h"
#include "stages/runtime/fileio.h"
#include "stages/runtime/npy.h"
#include "stages/slide/png_io.h"
#include "stages/slide/reader.h"
#include "stages/slide/tissue.h"

enum { SCREENER_ROWS = 64, BLUR_CROP = 256 };

static void usage(FILE *f)
{
    fprintf(f, "usage: gastroscreen infer --model BUNDLE TILE.png [TILE.png ...] [--out DIR] "
               "[--json]\n"
               "       gastroscreen infer --model BUNDLE SLIDE --x X --y Y [--out DIR] [--json]\n"
               "       (either form also takes --precision fp32|bf16|int8; default: the fastest\n"
               "       this CPU runs natively whose accuracy budget the bundle records as met by\n"
               "       `gastroscreen calibrate`, else fp32; bf16 on a CPU without native bf16\n"
               "       runs fp32, int8 from a bundle without `gastroscreen calibrate`'s ranges\n"
               "       or on a CPU without VNNI runs bf16 or fp32, and each says so)\n"
               "\n"
               "Runs the multi-task network on a tile (PNG, H and W multiples of 32; several PNGs\n"
               "of one size make a batch) or on the tile_size tile of SLIDE at the bundle's\n"
               "target_mpp whose top-left corner is level-0 pixel (X, Y). Prints the patch score,\n"
               "the feature and heatmap summaries and the provenance of each network; writes the\n"
               "heatmap PNG into DIR (default: .). With --out DIR, also runs every network in the\n"
               "bundle and writes each raw output as float32 .npy, named as model/pytorch/run.py\n"
               "names them, plus the uint8/float inputs used (tiles_u8.npy, blur_u8.npy,\n"
               "screener_input.npy). With --json, prints instead one JSON object per tile (an\n"
               "array for several) with every network's judgement of it: patch score, blur\n"
               "(network when trained, and the classical focus score), tissue fraction (network\n"
               "when trained, and the classical mask) and each network's provenance.\n");
}

/* Writes DIR/name as .npy (stages/runtime/npy). */
static int write_npy(const char *dir, const char *name, const char *descr, const void *data,
                     size_t elem, int ndim, const long *shape)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return gs_npy_write(path, descr, data, elem, ndim, shape);
}

/* --json: stdout is the JSON alone, so the text lines are dropped. */
static int json_mode;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    if (json_mode)
        return;
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
}

static int ends_with_png(const char *s)
{
    size_t n = strlen(s);
    return n >= 4 && !strcasecmp(s + n - 4, ".png");
}

static void summary(const char *what, const float *v, size_t n, int apply_sigmoid)
{
    double lo = INFINITY, hi = -INFINITY, sum = 0.0, sq = 0.0;
    size_t over = 0;
    for (size_t i = 0; i < n; i++) {
        double x = apply_sigmoid ? gs_sigmoid(v[i]) : v[i];
        lo = x < lo ? x : lo;
        hi = x > hi ? x : hi;
        sum += x;
        sq += x * x;
        over += x >= 0.5;
    }
    if (apply_sigmoid)
        say("  %s: min %.4f mean %.4f max %.4f, fraction >= 0.5: %.4f\n", what, lo, sum / n, hi,
            (double)over / n);
    else
        say("  %s: min %.4f mean %.4f max %.4f L2 %.4f\n", what, lo, sum / n, hi, sqrt(sq));
}

static void print_provenance(const gs_model *m)
{
    for (int id = 0; id < GS_NET_COUNT; id++) {
        const char *name = gs_net_name((gs_net_id)id);
        if (!gs_model_has(m, (gs_net_id)id))
            say("network %s: absent from the bundle (untrained)\n", name);
        else if (gs_model_untrained(m, (gs_net_id)id))
            say("network %s: model: untrained \xe2\x80\x94 not a diagnosis\n", name);
        else
            say("network %s: provenance: %s\n", name, gs_model_provenance(m, (gs_net_id)id));
    }
}

/* Reads the inputs into *rgb ([n][h][w][3], malloc'd). For a slide, info (may be NULL) gets
 * the tile's position and the slide's warnings. */
static int read_inputs(char **paths, int npaths, const char *slide_path, long long x, long long y,
                       const gs_model *m, json_t *info, uint8_t **rgb, int *n, int *h, int *w)
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
        json_t *warnings = info ? json_array() : NULL;
        for (size_t i = 0; i < gs_slide_warning_count(s); i++) {
            say("slide warning: %s\n", gs_slide_warning(s, i));
            if (warnings)
                json_array_append_new(warnings, json_string(gs_slide_warning(s, i)));
        }
        if (info)
            json_object_set_new(info, "slide",
                                json_pack("{s:I, s:I, s:I, s:I, s:i, s:o}", "x", (json_int_t)x, "y",
                                          (json_int_t)y, "target_x", (json_int_t)tx, "target_y",
                                          (json_int_t)ty, "size", tile, "warnings", warnings));
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
        say("tile: %s at level-0 (%lld, %lld) = target (%lld, %lld), %dx%d at %g um/px\n",
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
            frac += gs_sigmoid(a[i]) > t;
        say("foreground: tissue fraction (P > threshold.foreground %.4g) %.4f\n", t,
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
            say("blur: tile %d: P(blurred) %.4f (logit %.6f)%s\n", i, gs_sigmoid(a[i]), a[i],
                gs_sigmoid(a[i]) > gs_model_get_thresholds(m).blur ? ": blurred" : "");
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
            say("screener: tile %d feature x %d rows: score %.4f (logit %.6f)\n", i, SCREENER_ROWS,
                gs_sigmoid(a[i]), a[i]);
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

/* ---- --json ------------------------------------------------------------------------------ */

static int trained(const gs_model *m, gs_net_id id)
{
    return gs_model_has(m, id) && !gs_model_untrained(m, id);
}

static json_t *network_json(const gs_model *m, gs_net_id id)
{
    return json_pack("{s:b, s:b, s:s}", "present", gs_model_has(m, id), "trained", trained(m, id),
                     "provenance", gs_model_provenance(m, id));
}

/* The networks a --json answer may use, one state each for a single tile; NULL when the
 * network is absent or untrained (then only the classical judgement is given). */
typedef struct {
    gs_net_state *fg, *blur;
    float *fg_logit;
    int crop_h, crop_w;
    uint8_t *crop;
} json_nets;

static void json_nets_free(json_nets *j)
{
    gs_net_state_destroy(&j->fg);
    gs_net_state_destroy(&j->blur);
    free(j->fg_logit);
    free(j->crop);
}

static int json_nets_init(json_nets *j, const gs_model *m, int h, int w)
{
    memset(j, 0, sizeof *j);
    j->crop_h = h < BLUR_CROP ? h : BLUR_CROP;
    j->crop_w = w < BLUR_CROP ? w : BLUR_CROP;
    if (trained(m, GS_NET_FOREGROUND)) {
        j->fg_logit = malloc((size_t)h * w * sizeof *j->fg_logit);
        if (!j->fg_logit)
            return gs_error_set("out of memory");
        if (!(j->fg = gs_net_state_new(m, GS_NET_FOREGROUND, 1, h, w)))
            return -1;
    }
    if (trained(m, GS_NET_BLUR)) {
        j->crop = malloc((size_t)j->crop_h * j->crop_w * 3);
        if (!j->crop)
            return gs_error_set("out of memory");
        if (!(j->blur = gs_net_state_new(m, GS_NET_BLUR, 1, j->crop_h, j->crop_w)))
            return -1;
    }
    return 0;
}

static const char *sharpness(int blurry)
{
    return blurry ? "blurry" : "sharp";
}

/* Blur: the network's P(blurred) on the central crop when it is trained, and always the
 * classical focus measure. */
static json_t *blur_json(const gs_model *m, json_nets *j, const uint8_t *tile, int h, int w)
{
    json_t *net = json_null();
    if (j->blur) {
        int y0 = (h - j->crop_h) / 2, x0 = (w - j->crop_w) / 2;
        for (int y = 0; y < j->crop_h; y++)
            memcpy(j->crop + (size_t)y * j->crop_w * 3, tile + ((size_t)(y0 + y) * w + x0) * 3,
                   (size_t)j->crop_w * 3);
        float logit;
        if (gs_net_run_blur(j->blur, j->crop, &logit))
            return NULL;
        double p = gs_sigmoid(logit), t = gs_model_get_thresholds(m).blur;
        /* The bundle's rules, as a worker applies them to a job that sets none (the command
         * has no threshold options). */
        gs_blur_sparse sp;
        if (gs_blur_sparse_check(m, j->crop, j->crop_w, j->crop_h, 0, GS_BLUR_SPARSE_BUNDLE, &sp))
            return NULL;
        double focus;
        int stage_blurry = gs_blur_network_verdict(m, logit, 0, &sp, &focus);
        int network_blurry = gs_blur_network_verdict(m, logit, 0, NULL, &focus);
        int fired = stage_blurry && !network_blurry;
        json_t *rule = json_null();
        if (sp.below > 0)
            rule =
                json_pack("{s:f, s:b, s:o, s:f, s:o, s:b}", "below", sp.below, "checked", sp.ran,
                          "classical_focus", sp.ran ? json_real(sp.score) : json_null(),
                          "classical_threshold", sp.threshold, "classical_verdict",
                          sp.ran ? json_string(sharpness(sp.blurry)) : json_null(), "fired", fired);
        net = json_pack("{s:f, s:f, s:f, s:s, s:i, s:i, s:f, s:o, s:s}", "p_blurred", p, "logit",
                        (double)logit, "threshold", t, "verdict", sharpness(network_blurry),
                        "crop_height", j->crop_h, "crop_width", j->crop_w, "crop_tissue_fraction",
                        sp.tissue_fraction, "sparse_tissue", rule, "stage_verdict",
                        sharpness(stage_blurry));
    }
    gs_focus f;
    int blurry = gs_focus_judge_tile(tile, w, h, (size_t)w * 3, 3, GS_FOCUS_THRESHOLD, &f);
    json_t *classical;
    if (blurry < 0) /* no tissue to measure: the blur stage cannot judge such a tile either */
        classical = json_pack("{s:n, s:f, s:n, s:s}", "focus", "threshold", GS_FOCUS_THRESHOLD,
                              "verdict", "reason", gs_error_get());
    else
        classical = json_pack("{s:f, s:f, s:s, s:f}", "focus", f.score, "threshold",
                              GS_FOCUS_THRESHOLD, "verdict", sharpness(blurry), "measured_fraction",
                              (double)f.pixels / ((double)w * h));
    return json_pack("{s:o, s:o}", "network", net, "classical", classical);
}

/* Tissue: the foreground network's share when it is trained, and always the classical mask's. */
static json_t *tissue_json(const gs_model *m, json_nets *j, const uint8_t *tile, int h, int w,
                           double mpp)
{
    json_t *net = json_null();
    size_t np = (size_t)h * w;
    if (j->fg) {
        if (gs_net_run_foreground(j->fg, tile, j->fg_logit, NULL))
            return NULL;
        double t = gs_model_get_thresholds(m).foreground;
        size_t tissue = 0;
        for (size_t i = 0; i < np; i++)
            tissue += gs_sigmoid(j->fg_logit[i]) > t;
        net = json_pack("{s:f, s:f}", "fraction", (double)tissue / (double)np, "threshold", t);
    }
    uint8_t *mask = malloc(np);
    if (!mask) {
        json_decref(net);
        gs_error_set("out of memory");
        return NULL;
    }
    gs_tissue_options to;
    gs_tissue_options_default(&to);
    gs_tissue_stats st;
    int rc = gs_tissue_mask(tile, w, h, mpp, &to, mask, &st);
    free(mask);
    if (rc) {
        json_decref(net);
        return NULL;
    }
    return json_pack("{s:o, s:{s:f, s:b}}", "network", net, "classical", "fraction",
                     st.tissue_fraction, "brightfield", st.brightfield);
}

int gs_cmd_infer(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, NULL, 'm'}, {"out", required_argument, NULL, 'o'},
        {"x", required_argument, NULL, 'x'},     {"y", required_argument, NULL, 'y'},
        {"json", no_argument, NULL, 'j'},        {"precision", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0}};
    const char *model_path = NULL, *out = NULL;
    long long x = 0, y = 0;
    int have_x = 0, have_y = 0, c;
    gs_precision precision = GS_PRECISION_FP32;
    int have_precision = 0;
    optind = 1;
    json_mode = 0;
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
        case 'j':
            json_mode = 1;
            break;
        case 'p':
            if (gs_precision_parse(optarg, &precision)) {
                fprintf(stderr, "gastroscreen infer: --precision: %s\n", gs_error_get());
                return 2;
            }
            have_precision = 1;
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
    json_t *root = NULL, *info = NULL;
    json_nets jn;
    memset(&jn, 0, sizeof jn);
    /* PNG tiles do not depend on the bundle: check them before the (slower) model load. */
    if (!is_slide && read_inputs(argv + optind, npaths, NULL, 0, 0, NULL, NULL, &rgb, &n, &h, &w))
        goto fail;
    m = gs_model_load(model_path);
    if (!m)
        goto fail;
    if (!have_precision)
        precision = gs_precision_default(gs_model_weights(m));
    char why[160];
    precision = gs_precision_usable(precision, why, sizeof why);
    if (why[0])
        fprintf(stderr, "gastroscreen infer: %s\n", why);
    if (gs_model_set_precision(m, precision))
        goto fail;
    say("model: %s\n", model_path);
    /* What runs: int8 on an uncalibrated bundle falls back in gs_model_set_precision. */
    say("precision: %s\n", gs_precision_name(gs_model_precision(m)));
    print_provenance(m);
    if (!gs_model_has(m, GS_NET_MULTITASK)) {
        gs_error_set("%s: the bundle has no multitask network", model_path);
        goto fail;
    }
    if (json_mode && !(info = json_object())) {
        gs_error_set("out of memory");
        goto fail;
    }
    if (is_slide && read_inputs(NULL, 0, argv[optind], x, y, m, info, &rgb, &n, &h, &w))
        goto fail;
    /* A slide tile is read at the bundle's target_mpp; a PNG tile is taken to be at it. */
    const char *tm = gs_weights_meta(gs_model_weights(m), "target_mpp");
    double mpp = tm ? strtod(tm, NULL) : 0.0;
    if (json_mode) {
        if (!(mpp > 0.0)) {
            gs_error_set("%s: bundle metadata target_mpp \"%s\" unusable", model_path,
                         tm ? tm : "");
            goto fail;
        }
        if (json_nets_init(&jn, m, h, w) || !(root = json_array()))
            goto fail;
    }
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
        say("tile %d (%s): patch score %.4f (logit %.6f)%s\n", i, what, gs_sigmoid(logit[i]),
            logit[i],
            gs_model_untrained(m, GS_NET_MULTITASK)
                ? " [model: untrained \xe2\x80\x94 not a diagnosis]"
                : "");
        summary("feature", feature + (size_t)i * 512, 512, 0);
        const float *sg = seg + (size_t)i * sh * sw;
        summary("heatmap", sg, sh * sw, 1);
        for (size_t k = 0; k < sh * sw; k++)
            heat[k] = (uint8_t)lrint(gs_sigmoid(sg[k]) * 255.0);
        char path[4096];
        if (n == 1)
            snprintf(path, sizeof path, "%s/heatmap.png", dir);
        else
            snprintf(path, sizeof path, "%s/heatmap_%d.png", dir, i);
        if (gs_png_write(path, heat, (int)sw, (int)sh, sw, 1))
            goto fail;
        say("  wrote %s (%zux%zu)\n", path, sw, sh);
        if (json_mode) {
            const uint8_t *tile = rgb + (size_t)i * h * w * 3;
            double hsum = 0;
            size_t over = 0;
            for (size_t k = 0; k < sh * sw; k++) {
                double p = gs_sigmoid(sg[k]);
                hsum += p;
                over += p >= 0.5;
            }
            json_t *blur = NULL, *tissue = NULL, *nets = json_object();
            for (int id = 0; nets && id < GS_NET_COUNT; id++)
                json_object_set_new(nets, gs_net_name((gs_net_id)id),
                                    network_json(m, (gs_net_id)id));
            if (!nets || !(blur = blur_json(m, &jn, tile, h, w)) ||
                !(tissue = tissue_json(m, &jn, tile, h, w, mpp))) {
                json_decref(nets);
                json_decref(blur);
                goto fail; /* the network's error, or out of memory */
            }
            json_t *o = json_pack(
                "{s:s, s:s, s:f, s:b, s:{s:f, s:f, s:f, s:f, s:s, s:b, s:s}, s:o, s:o, s:o}",
                "source", what, "bundle", model_path, "mpp", mpp, "mpp_assumed", !is_slide,
                "multitask", "patch_score", gs_sigmoid(logit[i]), "logit", (double)logit[i],
                "heatmap_mean", hsum / (double)(sh * sw), "heatmap_fraction_over_half",
                (double)over / (double)(sh * sw), "heatmap_png", path, "untrained",
                gs_model_untrained(m, GS_NET_MULTITASK), "provenance",
                gs_model_provenance(m, GS_NET_MULTITASK), "blur", blur, "tissue", tissue,
                "networks", nets);
            if (!o) {
                gs_error_set("out of memory for the JSON of tile %d", i);
                goto fail;
            }
            if (is_slide)
                json_object_set(o, "slide", json_object_get(info, "slide"));
            json_array_append_new(root, o);
        }
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
        say("wrote the raw outputs to %s\n", out);
    }
    if (json_mode) {
        /* One tile: its object; a batch: the array. */
        json_t *answer = n == 1 ? json_array_get(root, 0) : root;
        if (json_dumpf(answer, stdout, JSON_INDENT(2)) != 0 || putchar('\n') == EOF ||
            fflush(stdout) != 0) {
            gs_error_set("cannot write the JSON to stdout");
            goto fail;
        }
    }
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "gastroscreen infer: %s\n", gs_error_get());
done:
    json_decref(root);
    json_decref(info);
    json_nets_free(&jn);
    gs_net_state_destroy(&s);
    gs_model_destroy(&m);
    free(rgb);
    free(logit);
    free(feature);
    free(seg);
    free(heat);
    return rc;
}
