/*
 * cmd_eval: `gastroscreen eval LABELS.csv --out DIR [--model BUNDLE] [--config FILE]
 * [--reports DIR] [--annotations DIR] [--bootstrap N] [--seed S]`, how well gastroscreen screens a
 * lab's own labelled slides, in the paper's terms (Yu et al. 2019: sensitivity and specificity at
 * the threshold, ROC AUC and precision-recall AUC).
 *
 * LABELS.csv (RFC 4180: a header row, commas, fields in double quotes where needed) has the
 * columns `slide` (the slide file; a relative path is relative to the CSV's folder), `label`
 * (`positive` or `negative`) and `patient` (an id, kept in the per-slide rows for splits), and
 * optionally `annotation`; other columns are ignored. Without --reports every slide is screened
 * with `gastroscreen screen` (the same engine, threads and bundle lookup; its verdict lines go
 * to DIR/screen.log, its reports to DIR/reports); with --reports, the report.json files of an
 * earlier run under that folder are read instead. A slide is matched to its report by the
 * report's slide path (both resolved), the newest report winning.
 *
 * DIR/eval.json holds: "threshold" (the reports' decision threshold), "n_positive",
 * "n_negative" (labelled slides), "unassessable" and "failed" (counts in total and by label),
 * "policy" (how those two enter the figures), "confusion" (tp, fn, tn, fp over slides with a
 * negative or positive verdict), "sensitivity", "specificity" and their exact Clopper-Pearson
 * "sensitivity_ci95", "specificity_ci95", "referral" (the same with unassessable and failed
 * slides counted as sent to a pathologist), "roc_auc", "pr_auc" with percentile bootstrap
 * "roc_auc_ci95", "pr_auc_ci95" (stratified, "bootstrap": rounds and seed), "sweep" (sensitivity
 * and specificity at thresholds 0.05 .. 0.95 and at the reports' threshold), and "slides" (one
 * row per labelled slide: slide, label, patient, verdict, score, reason, report). A figure
 * without the slides to compute it is null. DIR/roc.png and DIR/pr.png draw the curves.
 *
 * Slides with an annotation (the `annotation` column, else --annotations DIR/<slide
 * stem>.geojson; QuPath GeoJSON, stages/slide/annotation) and a negative or positive verdict
 * get pixel Dice (paper eq. 3) of the report's suspicious regions (regions.geojson) against the
 * annotation, both cut to the slide's tissue mask as `refine` cuts it, on cells of 4 um: per
 * slide in its row ("dice"), and in eval.json "dice": {"pooled" (over every cell of every such
 * slide), "mean", "slides", "cell_um"}; DIR/dice.png is their histogram. The regions are as fine
 * as the report's heat map cells (4 um at 512-pixel tiles and the default heatmap_size 64).
 *
 * Exit status: 0 when eval.json was written; 1 when the labels, the reports or the screening
 * could not be processed (the message names the file and line); 2 on a usage error.
 */
#include "daemon/cli/commands.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/cli/evaluation.h"
#include "daemon/cli/labelled.h"
#include "daemon/cli/plot.h"
#include "ops/error.h"
#include "proto/vocab.h"
#include "stages/runtime/fileio.h"
#include "stages/slide/annotation.h"
#include "stages/slide/report_files.h"

#define BOOTSTRAP_DEFAULT 1000

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: gastroscreen eval LABELS.csv --out DIR [--model BUNDLE] [--config FILE]\n"
        "                         [--reports DIR] [--annotations DIR] [--bootstrap N]\n"
        "                         [--seed S]\n"
        "\n"
        "Screens every slide of LABELS.csv (columns slide, label = positive|negative,\n"
        "patient, optional annotation; relative paths from the CSV's folder) as `screen`\n"
        "does, or reads the reports of an earlier run with --reports DIR, and writes\n"
        "DIR/eval.json (sensitivity and specificity at the threshold with exact 95%%\n"
        "intervals, ROC and precision-recall AUC with bootstrap intervals, the confusion\n"
        "matrix, a threshold sweep, unassessable and failed slides counted apart, one row\n"
        "per slide) and DIR/roc.png, DIR/pr.png.\n"
        "\n"
        "  --annotations DIR  a slide without an annotation column entry takes\n"
        "                 DIR/<slide stem>.geojson when it exists; with annotations, pixel\n"
        "                 Dice of the reports' suspicious regions (eval.json \"dice\", dice.png)\n"
        "  --bootstrap N  resamples for the AUC intervals (default %d, at least 10)\n"
        "  --seed S       the bootstrap's seed (default 1): the same seed, the same interval\n"
        "\n"
        "Exit status: 0 eval.json written; 1 labels, reports or screening failed; 2 usage.\n",
        BOOTSTRAP_DEFAULT);
}

/* A labelled slide with its report, and its pixel Dice cells (prediction, annotation, both). */
typedef gs_labelled_slide row;
typedef struct {
    int64_t pred, truth, both;
    int done;
} dice_cells;

/* Thresholds and scores travel as floats: six decimals is all they hold. */
static double round6(double v)
{
    return round(v * 1e6) / 1e6;
}

/* Pixel Dice of row r: its report's suspicious regions (regions.geojson beside report.json)
 * against its annotation, both cut to the slide's tissue, on cells of DICE_CELL_UM (coarser
 * only to keep the slide within GS_ANNOTATION_MAX_GRID cells a side), into *dc (dc->done
 * set); a slide that cannot be measured gets a message on stderr and no Dice. */
#define DICE_CELL_UM 4.0
static void dice_of(const row *r, dice_cells *dc)
{
    char regions[PATH_MAX];
    snprintf(regions, sizeof regions, "%s", r->report);
    char *slash = strrchr(regions, '/');
    if (!slash)
        return;
    snprintf(slash + 1, sizeof regions - (size_t)(slash + 1 - regions), "regions.geojson");
    gs_slide *slide = gs_slide_open(r->slide, NULL);
    /* Both files are in QuPath's frame of the slide (ours is written so); the masks need
     * level-0 pixels. */
    gs_annotations *truth = slide ? gs_annotations_read_on(r->annotation, slide) : NULL;
    gs_annotations *pred = truth ? gs_annotations_read_on(regions, slide) : NULL;
    gs_plan *plan = NULL;
    uint8_t *a = NULL, *b = NULL;
    if (!pred)
        goto report_error;
    for (size_t i = 0; i < gs_annotations_message_count(truth); i++)
        fprintf(stderr, "gastroscreen eval: %s\n", gs_annotations_message(truth, i));
    gs_tissue_options o;
    gs_tissue_options_default(&o);
    if (!(plan = gs_plan_new(slide, &o)))
        goto report_error;
    int64_t w0, h0;
    gs_slide_level_size(slide, 0, &w0, &h0);
    double mpp = gs_slide_mpp(slide);
    double cell = fmax(DICE_CELL_UM / mpp, (double)(w0 > h0 ? w0 : h0) / GS_ANNOTATION_MAX_GRID);
    int gw = (int)ceil((double)w0 / cell), gh = (int)ceil((double)h0 / cell);
    a = malloc((size_t)gw * gh);
    b = malloc((size_t)gw * gh);
    int tw, th;
    const uint8_t *tissue = gs_plan_mask(plan, &tw, &th);
    if (!a || !b) {
        gs_error_set("out of memory for %dx%d cells", gw, gh);
        goto report_error;
    }
    if ((dc->pred = gs_annotations_slide_mask(pred, GS_REPORT_REGION_CLASS, w0, h0, tissue, tw, th,
                                              cell, a, gw, gh)) < 0 ||
        (dc->truth =
             gs_annotations_slide_mask(truth, NULL, w0, h0, tissue, tw, th, cell, b, gw, gh)) < 0)
        goto report_error;
    dc->both = 0;
    for (size_t i = 0; i < (size_t)gw * gh; i++)
        dc->both += a[i] && b[i];
    dc->done = 1;
    goto free_all;
report_error:
    fprintf(stderr, "gastroscreen eval: no Dice for %s: %s\n", r->slide, gs_error_get());
free_all:
    free(a);
    free(b);
    gs_plan_destroy(&plan);
    gs_annotations_destroy(&pred);
    gs_annotations_destroy(&truth);
    gs_slide_destroy(&slide);
}

static double dice_value(int64_t both, int64_t pred, int64_t truth)
{
    /* Neither has a cell: they agree perfectly. */
    return pred + truth ? 2.0 * (double)both / (double)(pred + truth) : 1.0;
}

static json_t *num_or_null(double v)
{
    return isfinite(v) ? json_real(round6(v)) : json_null();
}

static json_t *interval(int ok, double lo, double hi)
{
    return ok ? json_pack("[f, f]", lo, hi) : json_null();
}

/* The confusion counts {tp, fn, tn, fp} of the assessable rows when a slide is called positive
 * above threshold t, or (t NaN) as its verdict called it. */
static void rates_at(const gs_labelled *l, double t, uint32_t c[4])
{
    memset(c, 0, 4 * sizeof *c); /* tp, fn, tn, fp */
    for (size_t i = 0; i < l->n; i++) {
        const row *r = &l->rows[i];
        if (strcmp(r->verdict, "negative") && strcmp(r->verdict, "positive"))
            continue;
        int called = isnan(t) ? !strcmp(r->verdict, "positive") : r->score > t;
        c[r->positive ? (called ? 0 : 1) : (called ? 3 : 2)]++;
    }
}

static json_t *ratio(uint32_t k, uint32_t n)
{
    return n ? json_real((double)k / n) : json_null();
}

/* Writes eval.json, roc.png and pr.png into out. */
static int evaluate(const gs_labelled *l, const dice_cells *dice, const char *out, uint32_t rounds,
                    uint64_t seed)
{
    uint32_t n_pos = 0, n_neg = 0, un[2] = {0, 0}, fa[2] = {0, 0};
    double threshold = NAN;
    size_t n_scored = 0;
    double *score = malloc((l->n ? l->n : 1) * sizeof *score);
    int *label = malloc((l->n ? l->n : 1) * sizeof *label);
    double *cx = malloc((l->n + 1) * sizeof *cx), *cy = malloc((l->n + 1) * sizeof *cy);
    json_t *root = NULL;
    int rc = -1;
    if (!score || !label || !cx || !cy) {
        gs_error_set("out of memory");
        goto free_arrays;
    }
    for (size_t i = 0; i < l->n; i++) {
        const row *r = &l->rows[i];
        n_pos += r->positive;
        n_neg += !r->positive;
        if (!strcmp(r->verdict, "negative") || !strcmp(r->verdict, "positive")) {
            score[n_scored] = r->score;
            label[n_scored++] = r->positive;
            if (isnan(threshold))
                threshold = round6(r->threshold);
            else if (round6(r->threshold) != threshold)
                fprintf(stderr,
                        "gastroscreen eval: %s was judged at threshold %g, not %g: the "
                        "figures use %g\n",
                        r->slide, r->threshold, threshold, threshold);
        } else if (!strcmp(r->verdict, "unassessable"))
            un[r->positive]++;
        else
            fa[r->positive]++; /* failed, or no report at all */
    }
    /* At the reports' threshold the verdicts themselves count (the score was compared in
     * single precision). */
    uint32_t c[4];
    rates_at(l, NAN, c);
    uint32_t tp = c[0], fn = c[1], tn = c[2], fp = c[3];
    double slo = 0, shi = 0, plo = 0, phi = 0, rlo = 0, rhi = 0, alo = 0, ahi = 0;
    int sens_ok = tp + fn > 0 && gs_eval_clopper_pearson(tp, tp + fn, 0.05, &slo, &shi) == 0;
    int spec_ok = tn + fp > 0 && gs_eval_clopper_pearson(tn, tn + fp, 0.05, &plo, &phi) == 0;
    double roc = gs_eval_roc_auc(score, label, n_scored);
    int both = isfinite(roc);
    /* Without negatives every precision is 1: no figure to report. */
    double pr = both ? gs_eval_pr_auc(score, label, n_scored) : NAN;
    int roc_ci = both && gs_eval_bootstrap(score, label, n_scored, GS_EVAL_ROC_AUC, rounds, seed,
                                           0.05, &rlo, &rhi) == 0;
    int pr_ci = both && gs_eval_bootstrap(score, label, n_scored, GS_EVAL_PR_AUC, rounds, seed,
                                          0.05, &alo, &ahi) == 0;
    gs_error_clear();

    json_t *sweep = json_array();
    for (int k = 1; k <= 20 && sweep; k++) {
        double t = k < 20 ? round6(k * 0.05) : threshold;
        if (k == 20 && isnan(t))
            break;
        uint32_t s[4];
        rates_at(l, k < 20 ? t : NAN, s);
        json_array_append_new(
            sweep, json_pack("{s:f, s:o, s:o, s:i, s:i, s:i, s:i}", "threshold", t, "sensitivity",
                             ratio(s[0], s[0] + s[1]), "specificity", ratio(s[2], s[2] + s[3]),
                             "tp", (int)s[0], "fn", (int)s[1], "tn", (int)s[2], "fp", (int)s[3]));
    }
    json_t *slides = json_array();
    for (size_t i = 0; i < l->n && slides; i++) {
        const row *r = &l->rows[i];
        const dice_cells *dc = &dice[i];
        int scored = !strcmp(r->verdict, "negative") || !strcmp(r->verdict, "positive");
        json_array_append_new(
            slides,
            json_pack("{s:s, s:s, s:s, s:s, s:o, s:s, s:o, s:o}", "slide", r->slide, "label",
                      r->positive ? "positive" : "negative", "patient", r->patient, "verdict",
                      r->verdict[0] ? r->verdict : "failed", "score",
                      scored ? json_real(round6(r->score)) : json_null(), "reason",
                      r->verdict[0] ? (r->reason ? r->reason : "") : "no report found", "report",
                      r->report ? json_string(r->report) : json_null(), "dice",
                      dc->done ? json_real(round6(dice_value(dc->both, dc->pred, dc->truth)))
                               : json_null()));
    }
    /* Referral: a slide the system does not clear goes to a pathologist, so unassessable and
     * failed positives still count as caught and such negatives as not cleared. */
    uint32_t ref_tp = tp + un[1] + fa[1];
    root = json_pack(
        "{s:o, s:i, s:i, s:{s:i, s:i, s:i}, s:{s:i, s:i, s:i}, s:s, s:{s:i, s:i, s:i, s:i}, "
        "s:o, s:o, s:o, s:o, s:{s:o, s:o}, s:o, s:o, s:o, s:o, s:{s:i, s:I}, s:o, s:o}",
        "threshold", num_or_null(threshold), "n_positive", (int)n_pos, "n_negative", (int)n_neg,
        "unassessable", "total", (int)(un[0] + un[1]), "positive", (int)un[1], "negative",
        (int)un[0], "failed", "total", (int)(fa[0] + fa[1]), "positive", (int)fa[1], "negative",
        (int)fa[0], "policy",
        "sensitivity, specificity and the AUCs are over slides with a negative or positive "
        "verdict; unassessable and failed slides (no report counts as failed) are counted apart "
        "by label and never dropped: 'referral' counts them as sent to a pathologist",
        "confusion", "tp", (int)tp, "fn", (int)fn, "tn", (int)tn, "fp", (int)fp, "sensitivity",
        ratio(tp, tp + fn), "specificity", ratio(tn, tn + fp), "sensitivity_ci95",
        interval(sens_ok, slo, shi), "specificity_ci95", interval(spec_ok, plo, phi), "referral",
        "sensitivity", ratio(ref_tp, n_pos), "specificity", ratio(tn, n_neg), "roc_auc",
        num_or_null(roc), "roc_auc_ci95", interval(roc_ci, rlo, rhi), "pr_auc", num_or_null(pr),
        "pr_auc_ci95", interval(pr_ci, alo, ahi), "bootstrap", "rounds", (int)rounds, "seed",
        (json_int_t)seed, "sweep", sweep ? sweep : json_null(), "slides",
        slides ? slides : json_null());
    if (!root) {
        gs_error_set("out of memory for eval.json");
        goto free_arrays;
    }
    double hist_x[22], hist_y[22];
    size_t n_dice = 0;
    if (l->in.annotations) {
        /* Pooled: every cell of every measured slide counts once (paper eq. 3 over the set). */
        int64_t cells_both = 0, pred = 0, truth = 0;
        double sum = 0;
        uint32_t bins[10] = {0};
        for (size_t i = 0; i < l->n; i++) {
            const dice_cells *r = &dice[i];
            if (!r->done)
                continue;
            double d = dice_value(r->both, r->pred, r->truth);
            cells_both += r->both;
            pred += r->pred;
            truth += r->truth;
            sum += d;
            bins[d >= 1.0 ? 9 : (int)(d * 10)]++;
            n_dice++;
        }
        json_object_set_new(
            root, "dice",
            n_dice ? json_pack("{s:f, s:f, s:i, s:f, s:s}", "pooled",
                               round6(dice_value(cells_both, pred, truth)), "mean",
                               round6(sum / (double)n_dice), "slides", (int)n_dice, "cell_um",
                               DICE_CELL_UM, "regions",
                               "the report's suspicious regions (heat map >= the region "
                               "threshold) and the annotation, both cut to the tissue mask")
                   : json_null());
        /* The histogram as steps over ten bins of 0.1, heights as shares of the slides. */
        for (int k = 0; k < 10 && n_dice; k++) {
            hist_x[2 * k] = k / 10.0;
            hist_x[2 * k + 1] = (k + 1) / 10.0;
            hist_y[2 * k] = hist_y[2 * k + 1] = (double)bins[k] / (double)n_dice;
        }
    }
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/eval.json", out);
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (!text) {
        gs_error_set("out of memory for eval.json");
        goto free_arrays;
    }
    size_t len = strlen(text);
    text[len] = '\n';
    int w = gs_write_atomic(path, text, len + 1, 0644);
    free(text);
    if (w != 0)
        goto free_arrays;
    char title[64];
    size_t k = gs_eval_roc_curve(score, label, n_scored, cx, cy);
    snprintf(title, sizeof title, both ? "ROC AUC %.3f" : "ROC: NEEDS BOTH CLASSES", roc);
    snprintf(path, sizeof path, "%s/roc.png", out);
    gs_plot_series s = {.x = cx, .y = cy, .n = k, .rgb = {200, 30, 30}, .steps = 1};
    double dx[2] = {0, 1};
    gs_plot_series diag = {.x = dx, .y = dx, .n = 2, .rgb = {150, 150, 150}};
    gs_plot_series roc_lines[2] = {diag, s};
    if (gs_plot_write_png(path, title, "1 - SPECIFICITY", "SENSITIVITY", roc_lines, 2) != 0)
        goto free_arrays;
    k = gs_eval_pr_curve(score, label, n_scored, cx, cy);
    snprintf(title, sizeof title, isfinite(pr) ? "PR AUC %.3f" : "PR: NEEDS POSITIVES", pr);
    snprintf(path, sizeof path, "%s/pr.png", out);
    s = (gs_plot_series){.x = cx, .y = cy, .n = k, .rgb = {30, 60, 200}, .steps = 1};
    if (gs_plot_write_png(path, title, "RECALL", "PRECISION", &s, 1) != 0)
        goto free_arrays;
    if (n_dice) {
        snprintf(path, sizeof path, "%s/dice.png", out);
        s = (gs_plot_series){.x = hist_x, .y = hist_y, .n = 20, .rgb = {20, 140, 60}};
        if (gs_plot_write_png(path, "PIXEL DICE, SHARE OF SLIDES", "DICE", "SHARE", &s, 1) != 0)
            goto free_arrays;
    }
    printf("%zu slides (%u positive, %u negative): %u unassessable, %u failed\n", l->n, n_pos,
           n_neg, un[0] + un[1], fa[0] + fa[1]);
    if (sens_ok)
        printf("sensitivity %.3f (95%% CI %.3f-%.3f), %u of %u\n", (double)tp / (tp + fn), slo, shi,
               tp, tp + fn);
    if (spec_ok)
        printf("specificity %.3f (95%% CI %.3f-%.3f), %u of %u\n", (double)tn / (tn + fp), plo, phi,
               tn, tn + fp);
    if (both)
        printf("ROC AUC %.3f, PR AUC %.3f\n", roc, pr);
    printf("eval.json, roc.png, pr.png in %s\n", out);
    rc = 0;
free_arrays:
    json_decref(root);
    free(score);
    free(label);
    free(cx);
    free(cy);
    return rc;
}

int gs_cmd_eval(int argc, char **argv)
{
    const char *out = NULL, *model = NULL, *config = NULL, *reports = NULL, *ann_dir = NULL;
    long rounds = BOOTSTRAP_DEFAULT;
    unsigned long long seed = 1;
    static const struct option opts[] = {{"out", required_argument, NULL, 'o'},
                                         {"model", required_argument, NULL, 'm'},
                                         {"config", required_argument, NULL, 'c'},
                                         {"reports", required_argument, NULL, 'r'},
                                         {"bootstrap", required_argument, NULL, 'b'},
                                         {"seed", required_argument, NULL, 's'},
                                         {"annotations", required_argument, NULL, 'a'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    optind = 1;
    int ch;
    char *end;
    while ((ch = getopt_long(argc, argv, "o:m:c:r:b:s:a:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'a':
            ann_dir = optarg;
            break;
        case 'o':
            out = optarg;
            break;
        case 'm':
            model = optarg;
            break;
        case 'c':
            config = optarg;
            break;
        case 'r':
            reports = optarg;
            break;
        case 'b':
            rounds = strtol(optarg, &end, 10);
            if (*end || rounds < 10 || rounds > 1000000) {
                fprintf(stderr, "gastroscreen eval: --bootstrap %s: a number 10..1000000\n",
                        optarg);
                return 2;
            }
            break;
        case 's':
            seed = strtoull(optarg, &end, 10);
            if (*end || !optarg[0]) {
                fprintf(stderr, "gastroscreen eval: --seed %s: a whole number\n", optarg);
                return 2;
            }
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc - 1 || !out) {
        fprintf(stderr, "gastroscreen eval: %s\n",
                !out ? "--out DIR is required" : "give exactly one LABELS.csv");
        usage(stderr);
        return 2;
    }
    gs_labelled l;
    dice_cells *dice = NULL;
    if (gs_labelled_read(argv[optind], ann_dir, &l) != 0) {
        fprintf(stderr, "gastroscreen eval: %s\n", gs_error_get());
        return 1;
    }
    int rc = 1;
    char reports_dir[PATH_MAX];
    if (gs_mkdir_p(out, 0755) != 0)
        goto fail;
    if (!reports) {
        if (gs_labelled_screen(&l, out, model, config, NULL) != 0)
            goto fail;
        snprintf(reports_dir, sizeof reports_dir, "%s/reports", out);
    } else
        snprintf(reports_dir, sizeof reports_dir, "%s", reports);
    if (gs_labelled_read_reports(&l, reports_dir) != 0)
        goto fail;
    if (!(dice = calloc(l.n, sizeof *dice))) {
        gs_error_set("out of memory");
        goto fail;
    }
    for (size_t i = 0; i < l.n; i++)
        if (l.rows[i].annotation && l.rows[i].report &&
            (!strcmp(l.rows[i].verdict, "negative") || !strcmp(l.rows[i].verdict, "positive")))
            dice_of(&l.rows[i], &dice[i]);
    if (evaluate(&l, dice, out, (uint32_t)rounds, seed) != 0)
        goto fail;
    rc = 0;
fail:
    if (rc)
        fprintf(stderr, "gastroscreen eval: %s\n", gs_error_get());
    free(dice);
    gs_labelled_free(&l);
    return rc;
}
