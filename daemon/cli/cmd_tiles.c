/*
 * cmd_tiles: `gastroscreen tiles SLIDE [--out DIR]`, the tissue plan of one slide.
 *
 * Prints the slide's facts (vendor, levels, resolution, warnings) and the plan summary, and
 * writes into DIR the tissue mask (mask.png), the plan drawn over the thumbnail (plan.png) and
 * the plan itself (plan.json: every planned tile with its grid position, target-resolution and
 * level-0 coordinates and tissue fraction). Errors go to stderr naming the file and the cause.
 */
#include "daemon/cli/commands.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ops/error.h"
#include "stages/runtime/fileio.h"
#include "stages/slide/png_io.h"
#include "stages/slide/reader.h"
#include "stages/slide/tissue.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: gastroscreen tiles SLIDE [--out DIR] [--target-mpp UM] [--default-mpp UM]\n"
               "                          [--tile-size PX] [--min-tissue FRACTION]\n"
               "\n"
               "Prints the slide's facts and its tissue plan; writes DIR/mask.png, DIR/plan.png\n"
               "and DIR/plan.json (DIR defaults to ./<slide name>.tiles).\n");
}

static int parse_double(const char *opt, const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "gastroscreen tiles: --%s: '%s' is not a number in [%g, %g]\n", opt, s, lo,
                hi);
        return -1;
    }
    *out = v;
    return 0;
}

static json_t *slide_json(gs_slide *s)
{
    json_t *levels = json_array();
    for (int l = 0; l < gs_slide_level_count(s); l++) {
        int64_t w, h;
        gs_slide_level_size(s, l, &w, &h);
        json_array_append_new(levels, json_pack("{s:I, s:I, s:f}", "width", (json_int_t)w, "height",
                                                (json_int_t)h, "downsample",
                                                gs_slide_level_downsample(s, l)));
    }
    return json_pack("{s:s, s:s, s:o, s:f, s:s, s:f, s:s}", "path", gs_slide_path(s), "vendor",
                     gs_slide_vendor(s), "levels", levels, "mpp", gs_slide_mpp(s), "mpp_source",
                     gs_slide_mpp_source(s), "objective", gs_slide_objective(s), "quickhash",
                     gs_slide_quickhash(s));
}

static json_t *plan_json(gs_slide *s, const gs_plan *p, double min_tissue)
{
    const gs_tissue_stats *st = gs_plan_stats(p);
    int32_t cols, rows;
    int64_t tw, th;
    int tile, mw, mh;
    gs_plan_grid(p, &cols, &rows);
    gs_plan_target_size(p, &tw, &th, &tile);
    gs_plan_mask(p, &mw, &mh);
    json_t *warnings = json_array();
    for (size_t i = 0; i < gs_slide_warning_count(s); i++)
        json_array_append_new(warnings, json_string(gs_slide_warning(s, i)));
    json_t *tiles = json_array();
    for (size_t i = 0; i < gs_plan_tile_count(p); i++) {
        const gs_tile *t = gs_plan_tile(p, i);
        json_array_append_new(tiles, json_pack("{s:I, s:i, s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:f}",
                                               "index", (json_int_t)i, "col", t->col, "row", t->row,
                                               "tx", (json_int_t)t->tx, "ty", (json_int_t)t->ty,
                                               "x0", (json_int_t)t->x0, "y0", (json_int_t)t->y0,
                                               "w0", (json_int_t)t->w0, "h0", (json_int_t)t->h0,
                                               "tissue", (double)t->tissue));
    }
    json_t *mask =
        json_pack("{s:i, s:i, s:f, s:f, s:f, s:f, s:f, s:b}", "width", mw, "height", mh, "otsu",
                  (double)st->otsu, "threshold", (double)st->threshold, "tissue_fraction",
                  st->tissue_fraction, "ink_fraction", st->ink_fraction, "median_grey",
                  st->median_grey, "brightfield", st->brightfield);
    return json_pack("{s:o, s:s, s:o, s:f, s:i, s:I, s:I, s:f, s:o, s:{s:i, s:i}, s:I, s:o}",
                     "slide", slide_json(s), "status", gs_tissue_status_name(gs_plan_status(p)),
                     "warnings", warnings, "target_mpp", gs_plan_target_mpp(p), "tile_size", tile,
                     "target_width", (json_int_t)tw, "target_height", (json_int_t)th,
                     "min_tissue_fraction", min_tissue, "mask", mask, "grid", "cols", cols, "rows",
                     rows, "tile_count", (json_int_t)gs_plan_tile_count(p), "tiles", tiles);
}

/* dir/name into buf; -1 if it does not fit. */
static int join_path(char *buf, size_t n, const char *dir, const char *name)
{
    int len = snprintf(buf, n, "%s/%s", dir, name);
    if (len < 0 || (size_t)len >= n)
        return gs_error_set("%s: output path too long", dir);
    return 0;
}

static int write_outputs(const char *dir, gs_slide *s, const gs_plan *p, double min_tissue)
{
    char path[4096];
    int w, h, rc = -1;
    const uint8_t *mask = gs_plan_mask(p, &w, &h);
    uint8_t *grey = malloc((size_t)w * h);
    uint8_t *overlay = gs_plan_overlay(p);
    json_t *doc = plan_json(s, p, min_tissue);
    if (!grey || !overlay || !doc) {
        gs_error_set("out of memory for the outputs");
        goto free_outputs;
    }
    for (size_t i = 0; i < (size_t)w * h; i++)
        grey[i] = mask[i] ? 255 : 0;
    if (join_path(path, sizeof path, dir, "mask.png") < 0 ||
        gs_png_write(path, grey, w, h, (size_t)w, 1) < 0)
        goto free_outputs;
    if (join_path(path, sizeof path, dir, "plan.png") < 0 ||
        gs_png_write(path, overlay, w, h, (size_t)w * 3, 3) < 0)
        goto free_outputs;
    if (join_path(path, sizeof path, dir, "plan.json") < 0)
        goto free_outputs;
    char *text = json_dumps(doc, JSON_INDENT(1) | JSON_SORT_KEYS);
    if (!text) {
        gs_error_set("%s: out of memory", path);
        goto free_outputs;
    }
    int written = gs_write_atomic(path, text, strlen(text), 0644);
    free(text);
    if (written != 0)
        goto free_outputs;
    rc = 0;
free_outputs:
    json_decref(doc);
    free(grey);
    free(overlay);
    return rc;
}

static void print_facts(gs_slide *s)
{
    int64_t w, h;
    gs_slide_level_size(s, 0, &w, &h);
    printf("slide       %s\n", gs_slide_path(s));
    printf("vendor      %s\n", gs_slide_vendor(s));
    printf("size        %lld x %lld px at level 0\n", (long long)w, (long long)h);
    printf("levels      %d:", gs_slide_level_count(s));
    for (int l = 0; l < gs_slide_level_count(s); l++)
        printf(" %.4g", gs_slide_level_downsample(s, l));
    printf(" (downsamples)\n");
    const char *src = gs_slide_mpp_source(s);
    printf("resolution  %.4f um/px (%s)", gs_slide_mpp(s),
           !strcmp(src, "slide")             ? "from the slide"
           : !strcmp(src, "tiff-resolution") ? "from the TIFF resolution tags"
                                             : "default: the slide has none");
    if (gs_slide_objective(s) > 0)
        printf(", objective %gx", gs_slide_objective(s));
    printf("\n");
    for (size_t i = 0; i < gs_slide_warning_count(s); i++)
        printf("warning     %s\n", gs_slide_warning(s, i));
}

static void print_plan(const gs_plan *p, double min_tissue)
{
    const gs_tissue_stats *st = gs_plan_stats(p);
    int32_t cols, rows;
    int64_t tw, th;
    int tile, mw, mh;
    gs_plan_grid(p, &cols, &rows);
    gs_plan_target_size(p, &tw, &th, &tile);
    gs_plan_mask(p, &mw, &mh);
    printf("target      %.3f um/px: %lld x %lld px, grid %d x %d tiles of %d px\n",
           gs_plan_target_mpp(p), (long long)tw, (long long)th, cols, rows, tile);
    printf("mask        %d x %d px, tissue %.1f%%, ink %.1f%%, threshold %.4f (otsu %.4f)\n", mw,
           mh, 100.0 * st->tissue_fraction, 100.0 * st->ink_fraction, (double)st->threshold,
           (double)st->otsu);
    printf("plan        %s: %zu of %lld tiles with >= %.0f%% tissue\n",
           gs_tissue_status_name(gs_plan_status(p)), gs_plan_tile_count(p), (long long)cols * rows,
           100.0 * min_tissue);
    if (gs_plan_status(p) == GS_TISSUE_NOT_BRIGHTFIELD)
        printf("note        not a brightfield slide (median grey %.0f): fluorescence or a failed "
               "scan; no tiles planned\n",
               st->median_grey);
}

int gs_cmd_tiles(int argc, char **argv)
{
    static const struct option opts[] = {{"out", required_argument, NULL, 'o'},
                                         {"target-mpp", required_argument, NULL, 't'},
                                         {"default-mpp", required_argument, NULL, 'd'},
                                         {"tile-size", required_argument, NULL, 's'},
                                         {"min-tissue", required_argument, NULL, 'm'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    gs_slide_options so;
    gs_tissue_options to;
    gs_slide_options_default(&so);
    gs_tissue_options_default(&to);
    const char *out = NULL;
    double tile_size = to.tile_size;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'o':
            out = optarg;
            break;
        case 't':
            if (parse_double("target-mpp", optarg, 0.05, 100, &so.target_mpp) < 0)
                return 2;
            break;
        case 'd':
            if (parse_double("default-mpp", optarg, 0.05, 100, &so.default_mpp) < 0)
                return 2;
            break;
        case 's':
            if (parse_double("tile-size", optarg, 32, 8192, &tile_size) < 0)
                return 2;
            break;
        case 'm':
            if (parse_double("min-tissue", optarg, 0, 1, &to.min_tissue_fraction) < 0)
                return 2;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        return 2;
    }
    to.tile_size = (int)tile_size;
    const char *path = argv[optind];
    char default_out[4096];
    if (!out) {
        char copy[4096];
        snprintf(copy, sizeof copy, "%s", path);
        char *dot, *base = basename(copy);
        if ((dot = strrchr(base, '.')) && dot != base)
            *dot = '\0';
        snprintf(default_out, sizeof default_out, "%s.tiles", base);
        out = default_out;
    }
    int status = 1;
    gs_plan *plan = NULL;
    gs_slide *slide = gs_slide_open(path, &so);
    if (!slide)
        goto report_error;
    print_facts(slide);
    plan = gs_plan_new(slide, &to);
    if (!plan)
        goto report_error;
    print_plan(plan, to.min_tissue_fraction);
    if (gs_mkdir_p(out, 0755) < 0 || write_outputs(out, slide, plan, to.min_tissue_fraction) < 0)
        goto report_error;
    printf("wrote       %s/mask.png, %s/plan.png, %s/plan.json\n", out, out, out);
    status = 0;
    goto close_slide;
report_error:
    fprintf(stderr, "gastroscreen tiles: %s\n", gs_error_get());
close_slide:
    gs_plan_destroy(&plan);
    gs_slide_destroy(&slide);
    return status;
}
