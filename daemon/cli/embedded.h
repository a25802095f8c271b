/*
 * embedded: the whole service inside one process, for `gastroscreen screen`, which screens slides
 * with no gastroscreend or stage workers running.
 *
 * A gs_embedded runs the coordinator (daemon/service/coordinator) in the caller's thread and one
 * worker of each stage (tiler, foreground, blur, infer, screener, reporter: stages/runtime/worker
 * with the stages' own handlers, the code the stage executables run) in threads of its own, all
 * joined over inproc:// endpoints of one zmq context. The model bundle is loaded once and shared by
 * the workers (each keeps its own per-thread network state). The blur worker uses its
 * classical method whenever the bundle has no trained blur network (stages/handlers/blur decides),
 * and the foreground worker always uses the classical method, as gastroscreen-foreground does (no
 * network plan function is wired in yet); the default bundle holds only the multi-task
 * network and the screener.
 *
 * Use:
 *     gs_config *cfg = gs_config_new();  ... set journal_dir, spool_dir, report_dir, roots ...
 *     gs_embedded_options o = {.config = cfg, .model_path = path};
 *     gs_embedded *e = gs_embedded_new(&o);
 *     gs_embedded_submit(e, slide, id);           // each slide
 *     while (not all done) gs_embedded_step(e, 100); gs_embedded_slides(e) to read states
 *     gs_embedded_destroy(&e);                    // graceful stop of the workers, then the rest
 * Everything runs from one thread (the coordinator's loop); the workers' threads are private.
 */
#ifndef GS_DAEMON_CLI_EMBEDDED_H
#define GS_DAEMON_CLI_EMBEDDED_H

#include "daemon/service/config.h"
#include "daemon/service/coordinator.h"
#include "daemon/service/slide_table.h"
#include "stages/runtime/decision.h"
#include "stages/runtime/provenance.h"

typedef struct gs_embedded gs_embedded;

typedef struct {
    /* Borrowed, must outlive the gs_embedded. Its five coordinator endpoints are replaced here
     * with inproc:// ones (intake and submit: none); everything else (journal, spool, report
     * folder, slide roots, threads, batches, thresholds, timeouts) is used as it is. */
    gs_config *config;
    const char *model_path;   /* the bundle (required) */
    int quiet;                /* no log lines from the coordinator and the workers */
    const char *features_dir; /* gs_coordinator_options.features_dir; NULL = none */
    gs_precision precision;   /* the multi-task network's, as given (the caller resolves it) */
} gs_embedded_options;

/* Loads the bundle, starts the coordinator and the six workers, and waits until every worker
 * has been welcomed (stepping the coordinator meanwhile). Returns the service (caller owns;
 * gs_embedded_destroy) or NULL with the error set (the bundle does not load, a socket, a
 * worker that was refused). */
gs_embedded *gs_embedded_new(const gs_embedded_options *o);

/* Stops the workers gracefully and joins them, then closes the coordinator and the context
 * and frees the model; sets *e to NULL. Accepts NULL. */
void gs_embedded_destroy(gs_embedded **e);

/* Takes a slide as the submit socket would (resolved against the config's slide roots and
 * journalled). Writes its id into out_id; *duplicate (may be NULL) says it is a slide already
 * taken. Returns 0, or -1 with the error set (a path outside the roots, missing, not a file). */
int gs_embedded_submit(gs_embedded *e, const char *path, char out_id[GS_SLIDE_ID_LEN + 1],
                       int *duplicate);

/* One coordinator iteration (up to timeout_ms of waiting). Returns 0, or -1 with the error set
 * when the coordinator failed or a worker thread ended on its own (its error is given). */
int gs_embedded_step(gs_embedded *e, int timeout_ms);

/* The slide table (read between steps). */
const gs_slides *gs_embedded_slides(const gs_embedded *e);

/* The coordinator (for stats and endpoints). Owned by the gs_embedded. */
gs_coordinator *gs_embedded_coordinator(gs_embedded *e);

/* What the verdicts come from: the bundle's provenance for the multi-task network and the
 * screener (notice is GS_REPORT_UNTRAINED_NOTICE when either is untrained). Owned by e. */
const gs_provenance *gs_embedded_provenance(const gs_embedded *e);

/* The screener's threshold and top k that judge the slides, with their sources
 * (stages/runtime/decision: the bundle's unless the config set them). Owned by e. */
const gs_decision *gs_embedded_decision(const gs_embedded *e);

#endif
