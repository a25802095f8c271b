/*
 * reporter: the reporter stage's work, a ReportJob in and a ReportResult out (PROTOCOL.md §6
 * "Report" and "Failure"), with no sockets, so tests and the embedded mode call it directly.
 *
 * gs_reporter_write() turns the self-contained job into a gs_report (stages/slide/report_files):
 * the verdict (class, score, threshold, reason, warnings, tile counts, blurred fraction, the model
 * provenance the coordinator copied into it), the slide facts, seconds per stage, and for a verdict
 * other than FAILED the slide heatmap (stages/slide/heatmap: one cell per heatmap value,
 * window_level0 / heatmap_size level-0 pixels wide, from every INFERRED tile's map) over a
 * thumbnail read from the slide (stages/slide/reader). It writes report.json, heatmap.png,
 * regions.geojson and tiles.geojson.gz (QuPath objects offset by the slide's
 * openslide.bounds-x/-y, read when the thumbnail is) into the job's out_dir (or
 * <report_dir>/<slide_id> when the job gives none) and answers the paths and the number of regions.
 * For a FAILED verdict the slide is never opened (it may be poison) and only report.json is
 * written. A thumbnail that cannot be read is a warning in the report, not a failure; a folder or
 * file that cannot be written is answered with `error`.
 *
 * Models: report.json lists every method that judged the slide, in pipeline order:
 *   - "foreground" and "blur" as Verdict.foreground_method / blur_method name them: a
 *     classical entry (what it computes, GS_REPORT_CLASSICAL_*, and the gastroscreen version;
 *     no bundle), or a network entry with the bundle's provenance (untrained false: workers run
 *     these networks only when the bundle marks them trained), or "unknown" when the stage ran
 *     (the job has a plan grid; the blur check judged tiles) but the verdict does not name
 *     its method; no entry for a stage that did not run;
 *   - "multitask" when the tile counts have an inferred tile, and "screener" when the verdict is
 *     negative or positive, both with the verdict's ModelProvenance (the bundle).
 * So a slide that ended at the blur check lists only the plan and the blur check. The verdict's
 * untrained bundle still puts "model: untrained — not a diagnosis" into every report.json
 * (gs_report.untrained_bundle), as it is on every verdict line.
 * The blur_sample_judged count is not part of ReportJob; it is derived from the tile counts
 * as blurry / blurred_fraction when both are positive, otherwise the report leaves
 * blurred_fraction null.
 */
#ifndef GS_STAGES_HANDLERS_REPORTER_H
#define GS_STAGES_HANDLERS_REPORTER_H

#include <stddef.h>

#include "proto/gastroscreen.pb-c.h"
#include "stages/runtime/worker.h"

typedef struct {
    const char *report_dir;  /* folder for jobs without out_dir; NULL = such jobs fail */
    int thumbnail_size;      /* longer side of the thumbnail read for heatmap.png (1024) */
    double region_threshold; /* heatmap value at or above which a cell is suspicious (0.5) */
} gs_reporter_options;

void gs_reporter_options_default(gs_reporter_options *o);

/* One answer: the ReportResult and the storage its pointers use. */
typedef struct {
    Gastroscreen__V1__ReportResult r;
    Gastroscreen__V1__ReportPaths paths;
    Gastroscreen__V1__StageTiming timing;
    char json[4096], png[4096], geojson[4096];
    char error[1024];
    char worker_id[512];
} gs_report_result;

/* Serves one job into *out (o may be NULL for the defaults, worker_id may be NULL). Returns 0
 * with out->r filled (`error` set when the report could not be written), or -1 only when out
 * of memory. out->r points into *out and the job. */
int gs_reporter_write(const Gastroscreen__V1__ReportJob *job, const gs_reporter_options *o,
                      const char *worker_id, gs_report_result *out);

/* The reporter's gs_worker_handler (ud: a const gs_reporter_options *, or NULL): answers the
 * job's ReportJob with one ReportResult. Returns 0, or -1 when out of memory. */
int gs_reporter_handle(gs_worker_job *job, void *ud);

#endif
