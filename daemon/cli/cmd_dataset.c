/*
 * cmd_dataset: `gastroscreen dataset LABELS.csv --out DIR [--annotations DIR] [--seed S]
 * [--positives N] [--negatives N] [--min-lesion F] [--model BUNDLE]`, a training set built from
 * a lab's labelled slides the way the paper built its own (Yu et al. 2019, §3-4).
 *
 * LABELS.csv as daemon/cli/labels reads it (slide, label, patient, optional annotation; else
 * --annotations DIR/<slide stem>.geojson). For each slide, in CSV order:
 *   - positive slides: the analysis tiles (tile_size square at target_mpp, the pipeline's
 *     grid) whose lesion share is at least --min-lesion (0.1) become patches; the lesion is the
 *     slide's annotation cut to its tissue (as `refine` cuts it), rasterised at the patch's own
 *     pixels into the patch's mask. At most --positives (256) per slide, drawn at random;
 *   - negative slides: at most --negatives (64) patches drawn at random from the tiles with at
 *     least 25% tissue, with all-zero masks;
 *   - every slide: its thumbnail resized to 512 x 512 (PIL's BOX filter, the foreground
 *     network's input, stages/slide/box_resize) with the classical tissue mask resized to
 *     match (nearest): the foreground network's training pair.
 * tile_size and target_mpp are the bundle's (--model BUNDLE, else 512 and 0.5 um/px).
 *
 * Files: DIR/patches/<slide>/x<X>_y<Y>.png and DIR/masks/<slide>/x<X>_y<Y>.png (0 or 255),
 * DIR/foreground/<slide>.png and <slide>_mask.png, where <slide> is the row number and the
 * slide's file stem ("0003-case17"); DIR/manifest.csv: patch, mask, slide, patient, x, y
 * (target pixels), x0, y0, w0, h0 (the level-0 box), label, tissue_fraction, lesion_fraction;
 * DIR/foreground.csv: image, mask, slide, patient, label. Paths in the CSVs are relative to DIR.
 *
 * The draws are deterministic for a seed (each slide's generator is seeded by the seed and the
 * slide's row). A run can be stopped and started again: a slide whose files are all written
 * leaves DIR/.parts/<row>.csv, and such slides are not read again; the CSVs are rebuilt from the
 * parts at the end. Each tile is read once, one at a time (memory is one tile and the slide's
 * tissue plan, whatever the slide's size). A progress line goes to stderr.
 *
 * A slide that cannot be used (unreadable, a positive without an annotation, no tissue) is
 * named on stderr and left out; the others are still built. Exit status: 0 every slide
 * built; 1 some left out or the output could not be written; 2 usage error.
 */
#include "daemon/cli/commands.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/cli/labels.h"
#include "model/weights.h"
#include "ops/error.h"
#include "ops/rng.h"
#include "stages/runtime/fileio.h"
#include "stages/slide/annotation.h"
#include "stages/slide/box_resize.h"
#include "stages/slide/png_io.h"
#include "stages/slide/reader.h"
#include "stages/slide/tissue.h"

#define FOREGROUND_SIDE 512

typedef struct {
    const char *out;
    uint64_t seed;
    uint32_t positives, negatives;
    double min_lesion;
    int tile;
    double target_mpp;
    int tty; /* stderr is a terminal: the progress line is redrawn in place */
} options;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: gastroscreen dataset LABELS.csv --out DIR [--annotations DIR] [--seed S]\n"
            "                            [--positives N] [--negatives N] [--min-lesion F]\n"
            "                            [--model BUNDLE]\n"
            "\n"
            "Builds a training set from labelled slides (columns slide, label, patient, optional\n"
            "annotation): lesion patches of positive slides with their masks (annotation cut to\n"
            "the tissue), random tissue patches of negative slides with empty masks, and each\n"
            "slide's 512x512 thumbnail with its tissue mask; DIR/manifest.csv and\n"
            "DIR/foreground.csv list them. Deterministic for a seed; a stopped run resumes.\n"
            "\n"
            "  --positives N   at most N patches per positive slide (default 256)\n"
            "  --negatives N   at most N patches per negative slide (default 64)\n"
            "  --min-lesion F  a positive patch is at least this share lesion (default 0.1)\n"
            "  --model BUNDLE  take tile_size and target_mpp from the bundle (default 512, 0.5)\n"
            "\n"
            "Exit status: 0 every slide built; 1 some slide left out or DIR not writable;\n"
            "2 usage error.\n");
}

/* Keeps k of the n indices in idx, drawn without replacement, in ascending order. */
static size_t draw(size_t *idx, size_t n, size_t k, uint64_t *rng)
{
    if (n <= k)
        return n;
    for (size_t i = 0; i < k; i++) {
        size_t j = i + (size_t)(gs_rng_next(rng) % (n - i));
        size_t t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
    for (size_t i = 1; i < k; i++) /* insertion sort: k is small */
        for (size_t j = i; j > 0 && idx[j - 1] > idx[j]; j--) {
            size_t t = idx[j];
            idx[j] = idx[j - 1];
            idx[j - 1] = t;
        }
    return k;
}

/* A growing text buffer for one slide's manifest rows. */
typedef struct {
    char *s;
    size_t len, cap;
} text;

static int text_add(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int text_add(text *t, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int n = vsnprintf(t->s ? t->s + t->len : NULL, t->s ? t->cap - t->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0)
            return gs_error_set("format error");
        if (t->s && t->len + (size_t)n < t->cap) {
            t->len += (size_t)n;
            return 0;
        }
        size_t cap = (t->cap + (size_t)n + 1) * 2;
        char *g = realloc(t->s, cap);
        if (!g)
            return gs_error_set("out of memory");
        t->s = g;
        t->cap = cap;
    }
}

/* A CSV field (daemon/cli/labels' quoting) appended to t. */
static int csv_field(text *t, const char *v)
{
    char q[2 * PATH_MAX + 3];
    if (gs_csv_field(v, q, sizeof q) != 0)
        return -1;
    return text_add(t, "%s", q);
}

/* "0003-case17": the row and the file stem, a name unique within the dataset. */
static void slide_name(char *out, size_t cap, size_t row, const char *path)
{
    const char *base = strrchr(path, '/');
    char stem[256];
    snprintf(stem, sizeof stem, "%s", base ? base + 1 : path);
    char *dot = strrchr(stem, '.');
    if (dot && dot != stem)
        *dot = '\0';
    for (char *p = stem; *p; p++)
        if (*p == ',' || *p == '"' || *p == ' ')
            *p = '_';
    snprintf(out, cap, "%04zu-%s", row + 1, stem);
}

/* The lesion mask of one tile (tile x tile at the tile's own pixels): the annotation's features
 * on tissue. Returns the lesion cell count. */
static int64_t lesion_mask(const gs_annotations *a, const gs_tile *t, int tile,
                           const uint8_t *tissue, int tw, int th, int64_t w0, int64_t h0,
                           uint8_t *mask)
{
    double cell = (double)t->w0 / tile;
    memset(mask, 0, (size_t)tile * tile);
    for (size_t k = 0; k < gs_annotations_count(a); k++)
        gs_annotations_fill(a, k, (double)t->x0, (double)t->y0, cell, mask, tile, tile);
    int64_t n = 0;
    double mx = (double)tw / (double)w0, my = (double)th / (double)h0;
    for (int j = 0; j < tile; j++) {
        int ty = (int)floor(((double)t->y0 + (j + 0.5) * cell) * my);
        for (int i = 0; i < tile; i++) {
            uint8_t *v = &mask[(size_t)j * tile + i];
            if (!*v)
                continue;
            int tx = (int)floor(((double)t->x0 + (i + 0.5) * cell) * mx);
            *v = tx >= 0 && ty >= 0 && tx < tw && ty < th && tissue[(size_t)ty * tw + tx] ? 255 : 0;
            n += *v != 0;
        }
    }
    return n;
}

/* Builds one slide's files and its manifest rows (*rows, *fg_rows). Returns 0, or 1 with the
 * error when the slide cannot be used, or -1 when the output cannot be written. */
static int build_slide(const options *o, const gs_label *lab, size_t row, text *rows, text *fg_rows)
{
    char name[300], dir_p[PATH_MAX], dir_m[PATH_MAX], path[2 * PATH_MAX], rel[PATH_MAX];
    slide_name(name, sizeof name, row, lab->slide);
    gs_slide_options so;
    gs_slide_options_default(&so);
    so.target_mpp = o->target_mpp;
    gs_slide *s = gs_slide_open(lab->slide, &so);
    gs_annotations *ann = NULL;
    gs_plan *plan = NULL;
    uint8_t *rgb = NULL, *mask = NULL, *fg = NULL, *fgm = NULL;
    size_t *idx = NULL;
    int rc = 1;
    if (!s)
        goto done;
    if (lab->positive) {
        if (!lab->annotation) {
            gs_error_set("%s: a positive slide without an annotation", lab->slide);
            goto done;
        }
        if (!(ann = gs_annotations_read_on(lab->annotation, s)))
            goto done;
        for (size_t i = 0; i < gs_annotations_message_count(ann); i++)
            fprintf(stderr, "%sgastroscreen dataset: %s\n", o->tty ? "\n" : "",
                    gs_annotations_message(ann, i));
    }
    gs_tissue_options to;
    gs_tissue_options_default(&to);
    to.tile_size = o->tile;
    to.min_tissue_fraction = 0.0;
    if (!(plan = gs_plan_new(s, &to)))
        goto done;
    if (gs_plan_status(plan) == GS_TISSUE_NOT_BRIGHTFIELD) {
        gs_error_set("%s: not brightfield (no tissue mask)", lab->slide);
        goto done;
    }
    int tw, th;
    const uint8_t *tissue = gs_plan_mask(plan, &tw, &th);
    int64_t w0, h0;
    gs_slide_level_size(s, 0, &w0, &h0);
    size_t n = gs_plan_tile_count(plan);
    size_t px = (size_t)o->tile * o->tile;
    rgb = malloc(px * 3);
    mask = malloc(px);
    idx = malloc((n ? n : 1) * sizeof *idx);
    fg = malloc(FOREGROUND_SIDE * FOREGROUND_SIDE * 3);
    fgm = malloc(FOREGROUND_SIDE * FOREGROUND_SIDE);
    if (!rgb || !mask || !idx || !fg || !fgm) {
        gs_error_set("out of memory");
        rc = -1;
        goto done;
    }
    /* Candidates. */
    size_t nc = 0;
    for (size_t i = 0; i < n; i++) {
        const gs_tile *t = gs_plan_tile(plan, i);
        if (lab->positive) {
            int64_t les = lesion_mask(ann, t, o->tile, tissue, tw, th, w0, h0, mask);
            if ((double)les / (double)px >= o->min_lesion)
                idx[nc++] = i;
        } else if (t->tissue >= 0.25)
            idx[nc++] = i;
    }
    uint64_t rng = o->seed * 0x100000001b3ULL + row;
    size_t k = draw(idx, nc, lab->positive ? o->positives : o->negatives, &rng);
    snprintf(dir_p, sizeof dir_p, "%s/patches/%s", o->out, name);
    snprintf(dir_m, sizeof dir_m, "%s/masks/%s", o->out, name);
    if (k && (gs_mkdir_p(dir_p, 0755) != 0 || gs_mkdir_p(dir_m, 0755) != 0)) {
        rc = -1;
        goto done;
    }
    for (size_t c = 0; c < k; c++) {
        const gs_tile *t = gs_plan_tile(plan, idx[c]);
        int64_t les = 0;
        if (lab->positive)
            les = lesion_mask(ann, t, o->tile, tissue, tw, th, w0, h0, mask);
        else
            memset(mask, 0, px);
        if (gs_slide_read_target(s, t->tx, t->ty, o->tile, o->tile, rgb) != 0)
            goto done;
        char file[64];
        snprintf(file, sizeof file, "x%lld_y%lld.png", (long long)t->tx, (long long)t->ty);
        snprintf(path, sizeof path, "%s/%s", dir_p, file);
        if (gs_png_write(path, rgb, o->tile, o->tile, (size_t)o->tile * 3, 3) != 0) {
            rc = -1;
            goto done;
        }
        snprintf(path, sizeof path, "%s/%s", dir_m, file);
        if (gs_png_write(path, mask, o->tile, o->tile, (size_t)o->tile, 1) != 0) {
            rc = -1;
            goto done;
        }
        snprintf(rel, sizeof rel, "patches/%s/%s,masks/%s/%s,", name, file, name, file);
        if (text_add(rows, "%s", rel) || csv_field(rows, lab->slide) || text_add(rows, ",") ||
            csv_field(rows, lab->patient) ||
            text_add(rows, ",%lld,%lld,%lld,%lld,%lld,%lld,%s,%.4f,%.4f\n", (long long)t->tx,
                     (long long)t->ty, (long long)t->x0, (long long)t->y0, (long long)t->w0,
                     (long long)t->h0, lab->positive ? "positive" : "negative", t->tissue,
                     (double)les / (double)px)) {
            rc = -1;
            goto done;
        }
    }
    /* The foreground network's pair: thumbnail and tissue mask at its input size. */
    int thw, thh;
    const uint8_t *thumb = gs_plan_thumbnail(plan, &thw, &thh);
    if (gs_box_resize_u8(thumb, thw, thh, 3, fg, FOREGROUND_SIDE, FOREGROUND_SIDE) != 0)
        goto done;
    for (int j = 0; j < FOREGROUND_SIDE; j++)
        for (int i = 0; i < FOREGROUND_SIDE; i++) {
            int sx = (int)((i + 0.5) * tw / FOREGROUND_SIDE),
                sy = (int)((j + 0.5) * th / FOREGROUND_SIDE);
            fgm[(size_t)j * FOREGROUND_SIDE + i] = tissue[(size_t)sy * tw + sx] ? 255 : 0;
        }
    snprintf(path, sizeof path, "%s/foreground", o->out);
    if (gs_mkdir_p(path, 0755) != 0) {
        rc = -1;
        goto done;
    }
    snprintf(path, sizeof path, "%s/foreground/%s.png", o->out, name);
    if (gs_png_write(path, fg, FOREGROUND_SIDE, FOREGROUND_SIDE, FOREGROUND_SIDE * 3, 3) != 0) {
        rc = -1;
        goto done;
    }
    snprintf(path, sizeof path, "%s/foreground/%s_mask.png", o->out, name);
    if (gs_png_write(path, fgm, FOREGROUND_SIDE, FOREGROUND_SIDE, FOREGROUND_SIDE, 1) != 0) {
        rc = -1;
        goto done;
    }
    if (text_add(fg_rows, "foreground/%s.png,foreground/%s_mask.png,", name, name) ||
        csv_field(fg_rows, lab->slide) || text_add(fg_rows, ",") ||
        csv_field(fg_rows, lab->patient) ||
        text_add(fg_rows, ",%s\n", lab->positive ? "positive" : "negative")) {
        rc = -1;
        goto done;
    }
    if (k == 0)
        fprintf(stderr, "%sgastroscreen dataset: %s: no %s\n", o->tty ? "\n" : "", lab->slide,
                lab->positive ? "tile reaches the lesion share (--min-lesion)"
                              : "tile with 25% tissue");
    rc = 0;
done:
    free(rgb);
    free(mask);
    free(idx);
    free(fg);
    free(fgm);
    gs_plan_destroy(&plan);
    gs_annotations_destroy(&ann);
    gs_slide_destroy(&s);
    return rc;
}

/* Joins the parts of every built slide into DIR/manifest.csv and DIR/foreground.csv. */
static int join_parts(const options *o, size_t n)
{
    text m = {0}, f = {0};
    int rc = -1;
    if (text_add(&m, "patch,mask,slide,patient,x,y,x0,y0,w0,h0,label,tissue_fraction,"
                     "lesion_fraction\n") ||
        text_add(&f, "image,mask,slide,patient,label\n"))
        goto free_texts;
    for (size_t i = 0; i < n; i++) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/.parts/%zu.csv", o->out, i + 1);
        size_t len;
        char *part = (char *)gs_read_file(path, 1u << 30, &len);
        if (!part) {
            gs_error_clear();
            continue;
        }
        /* A part: the patch rows, a line "--", the foreground row. */
        char *sep = strstr(part, "--\n");
        if (sep) {
            *sep = '\0';
            if (text_add(&m, "%s", part) || text_add(&f, "%s", sep + 3)) {
                free(part);
                goto free_texts;
            }
        }
        free(part);
    }
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/manifest.csv", o->out);
    if (gs_write_atomic(path, m.s, m.len, 0644) != 0)
        goto free_texts;
    snprintf(path, sizeof path, "%s/foreground.csv", o->out);
    rc = gs_write_atomic(path, f.s, f.len, 0644);
free_texts:
    free(m.s);
    free(f.s);
    return rc;
}

int gs_cmd_dataset(int argc, char **argv)
{
    options o = {.seed = 1,
                 .positives = 256,
                 .negatives = 64,
                 .min_lesion = 0.1,
                 .tile = 512,
                 .target_mpp = 0.5};
    const char *ann_dir = NULL, *model = NULL;
    static const struct option opts[] = {{"out", required_argument, NULL, 'o'},
                                         {"annotations", required_argument, NULL, 'a'},
                                         {"seed", required_argument, NULL, 's'},
                                         {"positives", required_argument, NULL, 'p'},
                                         {"negatives", required_argument, NULL, 'n'},
                                         {"min-lesion", required_argument, NULL, 'l'},
                                         {"model", required_argument, NULL, 'm'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    optind = 1;
    int ch;
    char *end;
    while ((ch = getopt_long(argc, argv, "o:a:s:p:n:l:m:h", opts, NULL)) != -1) {
        errno = 0;
        switch (ch) {
        case 'o':
            o.out = optarg;
            break;
        case 'a':
            ann_dir = optarg;
            break;
        case 'm':
            model = optarg;
            break;
        case 's':
            o.seed = strtoull(optarg, &end, 10);
            if (*end || !optarg[0] || errno)
                goto bad_value;
            break;
        case 'p':
        case 'n': {
            unsigned long v = strtoul(optarg, &end, 10);
            if (*end || !optarg[0] || v > 1000000 || errno)
                goto bad_value;
            *(ch == 'p' ? &o.positives : &o.negatives) = (uint32_t)v;
            break;
        }
        case 'l':
            o.min_lesion = strtod(optarg, &end);
            if (*end || !(o.min_lesion > 0 && o.min_lesion <= 1))
                goto bad_value;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
        continue;
    bad_value:
        fprintf(stderr, "gastroscreen dataset: bad value \"%s\" for --%s\n", optarg,
                ch == 's'   ? "seed"
                : ch == 'l' ? "min-lesion"
                : ch == 'p' ? "positives"
                            : "negatives");
        return 2;
    }
    if (o.out && strlen(o.out) > 2048) {
        fprintf(stderr, "gastroscreen dataset: --out path longer than 2048 bytes\n");
        return 2;
    }
    if (argc - optind != 1 || !o.out) {
        fprintf(stderr, "gastroscreen dataset: %s\n",
                !o.out ? "--out DIR is required" : "give exactly one LABELS.csv");
        usage(stderr);
        return 2;
    }
    if (model) {
        /* The bundle's analysis tiles: what the multi-task network will be trained for. */
        gs_weights *w = gs_weights_open(model);
        if (!w || gs_weights_check_bundle(w) != 0) {
            fprintf(stderr, "gastroscreen dataset: %s\n", gs_error_get());
            gs_weights_destroy(&w);
            return 1;
        }
        o.tile = atoi(gs_weights_meta(w, "tile_size"));
        o.target_mpp = atof(gs_weights_meta(w, "target_mpp"));
        gs_weights_destroy(&w);
        if (o.tile < 32 || o.tile > 4096 || o.tile % 32 || !(o.target_mpp > 0)) {
            fprintf(stderr, "gastroscreen dataset: %s: tile_size or target_mpp out of range\n",
                    model);
            return 1;
        }
    }
    gs_labels l;
    if (gs_labels_read(argv[optind], ann_dir, &l) != 0) {
        fprintf(stderr, "gastroscreen dataset: %s\n", gs_error_get());
        return 1;
    }
    int rc = 0;
    char parts[PATH_MAX];
    snprintf(parts, sizeof parts, "%s/.parts", o.out);
    if (gs_mkdir_p(parts, 0755) != 0) {
        fprintf(stderr, "gastroscreen dataset: %s\n", gs_error_get());
        gs_labels_free(&l);
        return 1;
    }
    size_t built = 0, resumed = 0;
    int tty = o.tty = isatty(STDERR_FILENO);
    for (size_t i = 0; i < l.n; i++) {
        char part[PATH_MAX + 32];
        snprintf(part, sizeof part, "%s/%zu.csv", parts, i + 1);
        /* On a terminal one line redrawn in place, else a line per slide for the log. */
        fprintf(stderr, tty ? "\r\033[K[%zu/%zu] %s" : "[%zu/%zu] %s\n", i + 1, l.n,
                l.rows[i].slide);
        if (access(part, R_OK) == 0) {
            resumed++;
            continue;
        }
        text rows = {0}, fg = {0};
        int r = build_slide(&o, &l.rows[i], i, &rows, &fg);
        /* The part: the patch rows, a line "--", the foreground row; written last, so its
         * presence means every file of the slide is there. */
        if (r == 0 && (text_add(&rows, "--\n%s", fg.s ? fg.s : "") ||
                       gs_write_atomic(part, rows.s, rows.len, 0644)))
            r = -1;
        free(rows.s);
        free(fg.s);
        if (r != 0) {
            fprintf(stderr, "%sgastroscreen dataset: %s%s\n", tty ? "\n" : "", gs_error_get(),
                    r < 0 ? "" : " (slide left out)");
            rc = 1;
            if (r < 0)
                break;
            continue;
        }
        built++;
    }
    if (tty)
        fprintf(stderr, "\r\033[K");
    if (join_parts(&o, l.n) != 0) {
        fprintf(stderr, "gastroscreen dataset: %s\n", gs_error_get());
        rc = 1;
    } else
        printf("%zu of %zu slides built (%zu from an earlier run); manifest.csv and "
               "foreground.csv in %s\n",
               built + resumed, l.n, resumed, o.out);
    gs_labels_free(&l);
    return rc;
}
