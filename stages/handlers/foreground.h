/*
 * foreground: the foreground stage's work, a PlanJob in, a PlanResult out (PROTOCOL.md §6
 * "Plan"), with no sockets, so tests and the embedded mode call it directly.
 *
 * gs_foreground_plan() opens the slide with its own OpenSlide handle, finds the tissue with a
 * foreground method and answers the plan: the slide facts (vendor, level-0 size, mpp and
 * whether it was defaulted, quickhash, objective), the grid the tilers will read (level,
 * window and stride in level-0 pixels) and every window holding any tissue with its tissue
 * fraction, in row-major order, plus the slide's warnings ("no mpp ..."). Bad slides never
 * fail the process: an unreadable or unsupported file gives a result with `error` (the
 * OpenSlide message); a fluorescence scan or a slide where no window reaches the job's
 * min_tissue_fraction gives `unassessable_reason` ("not brightfield: ...", "no tissue: ...").
 * Facts are filled whenever the slide opened, so the coordinator can still fold duplicates.
 *
 * The foreground method is a function boundary: gs_foreground_method_fn computes the tissue
 * plan of an open slide. The classical method (stages/slide/tissue: Ruifrok H&E deconvolution +
 * Otsu) is gs_foreground_classical and is the default. The network method,
 * gs_foreground_network, runs the bundle's foreground network on the thumbnail the classical
 * method reads (gs_plan_read_thumbnail: the whole slide at mask_mpp, capped), resized to
 * PlanJob.thumbnail_size squared (512) with PIL's BOX filter (stages/slide/box_resize), the
 * input the network is trained on; a pixel is tissue when sigmoid(logit) > the bundle's
 * threshold.foreground, and gs_plan_from_mask turns that mask into the same plan (grid,
 * fractions, brightfield refusal, overlay). gs_foreground_options_for_model() picks it when the
 * bundle holds a foreground network not marked untrained, the classical method otherwise:
 *
 *     gs_foreground_net *net = NULL;
 *     gs_foreground_options fg;
 *     gs_foreground_options_for_model(&fg, model, &net);  // model may be NULL
 *     ... serve jobs with &fg ...
 *     gs_foreground_net_destroy(&net);                     // before the model
 */
#ifndef GS_STAGES_HANDLERS_FOREGROUND_H
#define GS_STAGES_HANDLERS_FOREGROUND_H

#include "model/network.h"
#include "proto/gastroscreen.pb-c.h"
#include "stages/slide/reader.h"
#include "stages/slide/tissue.h"
#include "stages/runtime/worker.h"

/* Computes the tissue plan of `slide` with tile side o->tile_size (target pixels) keeping
 * every window with tissue > o->min_tissue_fraction (the caller passes 0: every window with
 * any tissue). Returns a plan the caller destroys, or NULL with the error. */
typedef gs_plan *gs_foreground_method_fn(gs_slide *slide, const gs_tissue_options *o, void *ud);

/* The classical method: gs_plan_new() of stages/slide/tissue. */
gs_plan *gs_foreground_classical(gs_slide *slide, const gs_tissue_options *o, void *ud);

typedef struct {
    gs_tissue_options tissue;           /* mask settings; tile size and fraction come from
                                           the job */
    gs_foreground_method_fn *method_fn; /* gs_foreground_classical by default */
    void *method_ud;
    Gastroscreen__V1__Method method; /* reported in PlanResult.method */
    double plan_budget_s;            /* a plan still reading the slide after this long fails
                                        ("time budget ... exceeded"); 0 = none */
} gs_foreground_options;

/* Fills *o with the defaults: stages/slide/tissue's mask settings (and its work caps), the
 * classical method, a 120 s plan budget. */
void gs_foreground_options_default(gs_foreground_options *o);

/* ---- the network method ----------------------------------------------------------------- */

typedef struct gs_foreground_net gs_foreground_net;

/* The foreground network of model m (borrowed: it must outlive the result), which must have
 * built it (gs_model_built; gs_model_load_nets with GS_NET_FOREGROUND is enough). Threads may
 * share the result: runs take turns on one network state, since a plan runs the network once
 * on a small image while the slide read around it is what takes the time. Returns it (caller
 * destroys with gs_foreground_net_destroy) or NULL with the error. */
gs_foreground_net *gs_foreground_net_new(const gs_model *m);
void gs_foreground_net_destroy(gs_foreground_net **n);

/* Runs the network on rgb (side x side RGB, side a multiple of 8 in 8..4096) and writes
 * mask[side * side]: 1 where sigmoid(logit) > the bundle's threshold.foreground, else 0.
 * logit (side * side floats) may be NULL. Returns 0, or -1 with the error. */
int gs_foreground_net_mask(gs_foreground_net *n, const uint8_t *rgb, int side, uint8_t *mask,
                           float *logit);

/* The network method (ud: a gs_foreground_net *): the plan from the network's mask of the
 * thumbnail resized to o->net_input_size squared. Returns a plan or NULL with the error. */
gs_plan *gs_foreground_network(gs_slide *slide, const gs_tissue_options *o, void *ud);

/* Fills *o with the defaults and, when m (may be NULL: no bundle) holds a foreground network
 * that is not untrained (gs_model_has && !gs_model_untrained), the network method with a new
 * *net (the caller destroys it after the last plan, before the model); else the classical
 * method and *net = NULL. Returns 0, or -1 with the error (the network could not be set up). */
int gs_foreground_options_for_model(gs_foreground_options *o, const gs_model *m,
                                    gs_foreground_net **net);

/* Serves one PlanJob. `worker_id` is copied into the result (may be NULL). Zero fields of the
 * job take the protocol defaults (target 0.5 um/px, tile 512, stride = tile, default mpp
 * 0.25, thumbnail 512); a job that cannot be served as asked (a stride other than the tile size:
 * the plan has no overlapping windows; a tile side outside 16..2048; a path over 4096 bytes; a
 * non-finite resolution) is answered with `error` too. A job with `identity` (the coordinator's)
 * opens the slide with gs_slide_open_for_job's checks and re-checks the file after the plan is
 * made; a changed file is an `error` naming the change. Returns the result, owned by the caller
 * (gs_foreground_result_free), or NULL only when out of memory (error set). */
Gastroscreen__V1__PlanResult *gs_foreground_plan(const Gastroscreen__V1__PlanJob *job,
                                                 const gs_foreground_options *o,
                                                 const char *worker_id);

/* The foreground stage's gs_worker_handler: serves the job's PlanJob with gs_foreground_plan
 * (ud: a const gs_foreground_options *, or NULL for the defaults) and emits the PlanResult.
 * Returns 0 (bad slides are answered with `error`, not failed), or -1 when out of memory. */
int gs_foreground_handle(gs_worker_job *job, void *ud);

/* Frees a result made by gs_foreground_plan and sets *r to NULL. Accepts NULL. */
void gs_foreground_result_free(Gastroscreen__V1__PlanResult **r);

#endif
