/*
 * cmd_features: `gastroscreen features LABELS.csv --out DIR [--model BUNDLE] [--config FILE]`,
 * the screener's training set: each labelled slide's top-k feature matrix exactly as the C
 * engine hands it to the screener (paper §4.3: the screener is trained multi-instance on the
 * features of the top-k patches), so training and deployment see the same features.
 *
 * Every slide of LABELS.csv (daemon/cli/labels) is screened with `gastroscreen screen
 * --features-dir` (same engine, threads and bundle lookup); the coordinator writes each slide's
 * ScreenTask matrix, k x 512 float32 rows in descending patch score (k = min(top k, tiles
 * inferred)). DIR/features/<slide id>.npy are those matrices; DIR/features.csv has one row per
 * slide that reached the screener: features (path relative to DIR), label, patient, slide, k.
 * Slides that never reached the screener (unassessable, failed, missing) are named on stderr
 * with their verdict and reason and left out of the CSV. `model/pytorch/train.py screener
 * --features DIR/features.csv` learns from it. The reports and verdict lines of the run stay in
 * DIR/reports and DIR/screen.log.
 *
 * Exit status: 0 when every slide has its features; 1 when some have none (the CSV holds the
 * others) or the run failed; 2 on a usage error.
 */
#include "daemon/cli/commands.h"

#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/cli/labelled.h"
#include "daemon/cli/labels.h"
#include "ops/error.h"
#include "stages/runtime/fileio.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: gastroscreen features LABELS.csv --out DIR [--model BUNDLE]\n"
            "                             [--config FILE]\n"
            "\n"
            "Screens every labelled slide (columns slide, label, patient) and keeps the\n"
            "screener's input of each: DIR/features/<slide id>.npy (k x 512 float32, highest\n"
            "patch score first) listed in DIR/features.csv (features, label, patient, slide, k),\n"
            "the training set of `model/pytorch/train.py screener`.\n"
            "\n"
            "Exit status: 0 every slide has features; 1 some have none or the run failed;\n"
            "2 usage error.\n");
}

/* The row count of a k x 512 float32 .npy written by the coordinator, from its size. */
static long npy_rows(const char *path)
{
    /* The 10-byte preamble and the file's size say it; the matrix itself is not read. */
    uint8_t b[10];
    struct stat st;
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    int ok = fread(b, 1, sizeof b, f) == sizeof b && fstat(fileno(f), &st) == 0;
    fclose(f);
    if (!ok || memcmp(b, "\x93NUMPY", 6))
        return -1;
    size_t head = 10 + (size_t)(b[8] | b[9] << 8), len = (size_t)st.st_size;
    if (head > len || (len - head) % (512 * sizeof(float)) != 0)
        return -1;
    return (long)((len - head) / (512 * sizeof(float)));
}

/* A CSV field (daemon/cli/labels' quoting) written to f. */
static int csv_field(FILE *f, const char *v)
{
    char q[2 * PATH_MAX + 3];
    if (gs_csv_field(v, q, sizeof q) != 0)
        return -1;
    fputs(q, f);
    return 0;
}

int gs_cmd_features(int argc, char **argv)
{
    const char *out = NULL, *model = NULL, *config = NULL;
    static const struct option opts[] = {{"out", required_argument, NULL, 'o'},
                                         {"model", required_argument, NULL, 'm'},
                                         {"config", required_argument, NULL, 'c'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    optind = 1;
    int ch;
    while ((ch = getopt_long(argc, argv, "o:m:c:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'o':
            out = optarg;
            break;
        case 'm':
            model = optarg;
            break;
        case 'c':
            config = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (argc - optind != 1 || !out) {
        fprintf(stderr, "gastroscreen features: %s\n",
                !out ? "--out DIR is required" : "give exactly one LABELS.csv");
        usage(stderr);
        return 2;
    }
    gs_labelled l;
    if (gs_labelled_read(argv[optind], NULL, &l) != 0) {
        fprintf(stderr, "gastroscreen features: %s\n", gs_error_get());
        return 1;
    }
    int rc = 1;
    char fdir[PATH_MAX], reports[PATH_MAX + 16], csv[PATH_MAX + 16];
    snprintf(fdir, sizeof fdir, "%s/features", out);
    snprintf(reports, sizeof reports, "%s/reports", out);
    snprintf(csv, sizeof csv, "%s/features.csv", out);
    char *text = NULL;
    size_t text_len = 0;
    FILE *mem = NULL;
    if (gs_mkdir_p(fdir, 0755) != 0 || gs_labelled_screen(&l, out, model, config, fdir) != 0 ||
        gs_labelled_read_reports(&l, reports) != 0)
        goto fail;
    if (!(mem = open_memstream(&text, &text_len))) {
        gs_error_set("out of memory");
        goto fail;
    }
    fputs("features,label,patient,slide,k\n", mem);
    size_t kept = 0;
    for (size_t i = 0; i < l.n; i++) {
        const gs_labelled_slide *r = &l.rows[i];
        char npy[PATH_MAX + 64];
        snprintf(npy, sizeof npy, "%s/%s.npy", fdir, r->slide_id);
        long k = r->slide_id[0] ? npy_rows(npy) : -1;
        if (k <= 0) {
            fprintf(stderr, "gastroscreen features: %s: no features (%s%s%s)\n", r->slide,
                    r->verdict[0] ? r->verdict : "no report", r->reason && r->reason[0] ? ": " : "",
                    r->reason ? r->reason : "");
            continue;
        }
        fprintf(mem, "features/%s.npy,%s,", r->slide_id, r->positive ? "positive" : "negative");
        csv_field(mem, r->patient);
        fputc(',', mem);
        csv_field(mem, r->slide);
        fprintf(mem, ",%ld\n", k);
        kept++;
    }
    if (fclose(mem) != 0) {
        mem = NULL;
        gs_error_set("out of memory");
        goto fail;
    }
    mem = NULL;
    if (gs_write_atomic(csv, text, text_len, 0644) != 0)
        goto fail;
    printf("%zu of %zu slides have features; %s\n", kept, l.n, csv);
    rc = kept == l.n ? 0 : 1;
    gs_labelled_free(&l);
    free(text);
    return rc;
fail:
    if (mem)
        fclose(mem);
    free(text);
    fprintf(stderr, "gastroscreen features: %s\n", gs_error_get());
    gs_labelled_free(&l);
    return 1;
}
