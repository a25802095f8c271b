/*
 * labelled: a lab's labelled slides (daemon/cli/labels) and what gastroscreen said of each, for
 * the commands that measure or learn from them (`eval`, `features`).
 *
 * gs_labelled_screen() screens every slide with this executable's own `screen` (the same
 * engine, threads and bundle lookup as a user's run) into OUT/reports, its verdict lines into
 * OUT/screen.log; gs_labelled_read_reports() then fills each slide's verdict, score, threshold,
 * reason, report path and slide id from the report.json files under a folder, matching a report
 * to its slide by the report's slide path (both resolved), the newest report winning.
 *
 *     gs_labelled l;
 *     gs_labelled_read("labels.csv", NULL, &l);
 *     gs_labelled_screen(&l, out, model, config, NULL);
 *     gs_labelled_read_reports(&l, reports);
 *     ... l.rows[i].verdict ...
 *     gs_labelled_free(&l);
 */
#ifndef GS_DAEMON_CLI_LABELLED_H
#define GS_DAEMON_CLI_LABELLED_H

#include <stddef.h>
#include <stdint.h>

#include "daemon/cli/labels.h"

/* A labelled slide (borrowed from the gs_labels) and what its report says. */
typedef struct {
    const char *slide, *patient, *annotation;
    int positive;
    /* from the report */
    char verdict[16]; /* "" = no report */
    char slide_id[17];
    double score, threshold;
    char *reason, *report;
    int64_t decided;
} gs_labelled_slide;

typedef struct {
    gs_labels in;
    gs_labelled_slide *rows;
    size_t n; /* = in.n; in.annotations says whether any slide has an annotation */
} gs_labelled;

/* Reads the CSV (daemon/cli/labels) and makes one row per slide, without verdicts. Returns 0,
 * or -1 with the error. */
int gs_labelled_read(const char *path, const char *ann_dir, gs_labelled *out);
void gs_labelled_free(gs_labelled *l);

/* Screens every slide into out/reports (model, config, features_dir: `screen`'s --model,
 * --config and --features-dir, each NULL for none). Returns 0 (slides may have failed: their
 * reports say so), or -1 with the error (screen could not run or stopped). */
int gs_labelled_screen(const gs_labelled *l, const char *out, const char *model, const char *config,
                       const char *features_dir);

/* Reads every <dir>/<folder>/report.json into the rows of the slides they are about. Returns
 * 0, or -1 with the error when the folder cannot be read; unreadable reports are skipped with
 * a line on stderr. */
int gs_labelled_read_reports(gs_labelled *l, const char *dir);

#endif
