/*
 * screener: the screener stage's work, a ScreenTask in and a ScreenResult out (PROTOCOL.md §6
 * "Screening"), with no sockets, so tests and the embedded mode call it directly.
 *
 * The screener network (reference §7.3) takes a k x 512 matrix of the top-k tiles' features
 * (k = 64), applies a shared Linear 512->512 + ReLU to each row, max-pools over the rows and
 * ends in FC 512->1 + sigmoid. A task with fewer rows than the state's k is filled by
 * repeating its rows in order (row i of the matrix is row i mod n of the task): duplicates do
 * not change a max, while zero rows would inject ReLU(bias). A task with more rows than k
 * rebuilds the state for that many. A task with no rows is answered with the error
 * "insufficient tissue: no inferred tile"; a task whose sizes disagree (feature_dim other than
 * 512, features other than k x 512, non-finite values), whose model_sha256 names another
 * bundle, or whose fence is missing is answered with `error` as well. The class is the
 * coordinator's decision (score > threshold), not the screener's.
 *
 * A gs_screener is one thread's state (the gs_worker runs one per handler thread through
 * gs_screener_stage).
 */
#ifndef GS_STAGES_HANDLERS_SCREENER_H
#define GS_STAGES_HANDLERS_SCREENER_H

#include <stddef.h>
#include <stdint.h>

#include "model/network.h"
#include "proto/gastroscreen.pb-c.h"
#include "stages/runtime/worker.h"

/* Rows of the screener matrix (reference §7.3, PROTOCOL.md top_k). */
#define GS_SCREENER_K 64

typedef struct gs_screener gs_screener;

/* One answer: the ScreenResult and the storage its pointers use. */
typedef struct {
    Gastroscreen__V1__ScreenResult r;
    Gastroscreen__V1__StageTiming timing;
    Gastroscreen__V1__ModelProvenance model;
    char error[512];
    char worker_id[512];
} gs_screen_result;

/* A state with a k-row matrix (1..4096; 0 = GS_SCREENER_K) on model m (borrowed), which must
 * hold the screener network. prov (may be NULL) is copied by pointer into every result: it
 * must outlive the state. Returns the state (caller destroys) or NULL with the error. */
gs_screener *gs_screener_new(const gs_model *m, int k,
                             const Gastroscreen__V1__ModelProvenance *prov);
void gs_screener_destroy(gs_screener **s);

/* Scores one task into *out (worker_id may be NULL). Returns 0 with out->r filled (a task that
 * cannot be scored has out->r.error set), or -1 with the error when the network could not run.
 * out->r points into *out and into the task (slide_id): keep both while using it. */
int gs_screener_score(gs_screener *s, const Gastroscreen__V1__ScreenTask *t, const char *worker_id,
                      gs_screen_result *out);

/* ---- the screener stage on a gs_worker -------------------------------------------------- */

typedef struct gs_screener_stage gs_screener_stage;

/* threads = the worker's threads; m, k and prov as gs_screener_new. Returns the stage (caller
 * destroys after the worker) or NULL with the error. */
gs_screener_stage *gs_screener_stage_new(const gs_model *m, int threads, int k,
                                         const Gastroscreen__V1__ModelProvenance *prov);
void gs_screener_stage_destroy(gs_screener_stage **s);

/* The screener's gs_worker_handler (ud: the gs_screener_stage): answers the job's ScreenTask
 * with one ScreenResult. Returns 0, or -1 when the network failed (error set). */
int gs_screener_handle(gs_worker_job *job, void *ud);

#endif
