/*
 * blur: the blur stage's work, one blur-first sample tile in and a BlurResult out
 * (PROTOCOL.md §6 "Blur first"), with no sockets, so tests and the embedded mode call it
 * directly.
 *
 * A gs_blur is one worker thread's state. gs_blur_judge() checks the tile (a BlurJob header,
 * the bundle's sha256 when the header names one, a pixel frame that agrees with the header)
 * and judges it with one of two methods (DESIGN.md §2.3):
 *   - METHOD_NETWORK when the bundle holds a trained blur network: the central 256x256 crop
 *     (reference §7.2: no downsampling, which would remove the evidence), P(blurred) =
 *     sigmoid(logit); focus = 1 - P(blurred), the probability of sharp; blurry when focus <
 *     threshold: the job's focus_threshold when it is in (0, 1), else 1 - the bundle's
 *     threshold.blur (blurry when P(blurred) > threshold.blur). The network's global mean pool
 *     averages over the whole crop, so on a crop that is mostly glass its evidence is diluted
 *     and it misses defocus there; when the job's sparse_tissue (else the bundle's
 *     threshold.blur_sparse_tissue: the sparse-tissue rule, model/FORMAT.md) is on and the
 *     crop's tissue share (grey below GS_FOCUS_GLASS_GREY, ops/focus's tissue mask) is under
 *     it, the classical measure below also judges the crop, and the tile is blurry if either
 *     says so (gs_blur_network_verdict); if the classical measure cannot judge it (too little
 *     tissue), the network's verdict stands. focus stays P(sharp); the classical threshold is
 *     the job's focus_threshold when >= 1 (a classical score), else GS_FOCUS_THRESHOLD;
 *   - METHOD_CLASSICAL otherwise (an untrained or absent network, or no model at all):
 *     gs_focus_judge_tile of ops/focus, the brightness-normalised Laplacian variance over the
 *     tissue pixels; focus = that score, blurry when focus < threshold (the job's
 *     focus_threshold when > 0, else GS_FOCUS_THRESHOLD); tissue_fraction = the share of
 *     pixels the measure used.
 * A tile that cannot be judged (bad frame, another model, no tissue to measure) gets `error`:
 * a failed request, which the coordinator asks again or gives up on.
 *
 * For a gs_worker, gs_blur_stage holds one gs_blur per handler thread and gs_blur_handle is
 * the handler over tile batches (gs_worker_job_tile), one BlurResult per tile.
 */
#ifndef GS_STAGES_HANDLERS_BLUR_H
#define GS_STAGES_HANDLERS_BLUR_H

#include <stddef.h>
#include <stdint.h>

#include "model/network.h"
#include "proto/gastroscreen.pb-c.h"
#include "proto/vocab.h"
#include "stages/runtime/worker.h"

/* Side of the central crop the blur network sees. */
#define GS_BLUR_CROP 256

typedef struct gs_blur gs_blur;

/* One judgement: the BlurResult and the storage its pointers use. */
typedef struct {
    Gastroscreen__V1__BlurResult r;
    Gastroscreen__V1__StageTiming timing;
    char error[512];
    char worker_id[512];
} gs_blur_result;

/* A state on model m (borrowed; NULL = no bundle: always classical). The network is used when
 * m holds a blur network that is not marked untrained. model_sha256 (copied; NULL or "" =
 * accept any) is checked against each header's BlurJob.model_sha256. Returns the state
 * (caller destroys) or NULL with the error. */
gs_blur *gs_blur_new(const gs_model *m, const char *model_sha256);
void gs_blur_destroy(gs_blur **b);

/* The method this state uses (METHOD_NETWORK or METHOD_CLASSICAL). */
Gastroscreen__V1__Method gs_blur_method(const gs_blur *b);

/* The sparse-tissue rule a job asks for: BlurJob/InferJob.sparse_tissue, GS_BLUR_SPARSE_BUNDLE,
 * GS_BLUR_SPARSE_OFF or a share (proto/vocab.h). */

/* The sparse-tissue check of the network method on one crop. */
typedef struct {
    double tissue_fraction; /* share of the crop's pixels with grey < GS_FOCUS_GLASS_GREY */
    double below;           /* the tissue share in effect (the job's or the bundle's); 0 = off */
    int ran;                /* 1: the crop was under `below` and the classical measure judged it */
    int blurry;             /* when ran: the classical verdict (blurry makes the tile blurry) */
    double score;           /* when ran: the classical focus score */
    double threshold;       /* the classical threshold the score is held to */
} gs_blur_sparse;

/* The sparse-tissue check of the w x h RGB crop rgb (rows w*3 bytes apart) for model m;
 * focus_threshold is the job's (the classical threshold is gs_focus_classical_threshold of
 * it, ops/focus), sparse_tissue the job's (GS_BLUR_SPARSE_BUNDLE: m's key, where NULL m or a
 * bundle without the key means off; GS_BLUR_SPARSE_OFF: off; a share in (0, 1]: that share;
 * proto/vocab.h). With the rule off only the tissue share is
 * measured. Fills *out; returns 0, or -1 with the error (bad arguments, out of memory).
 * gastroscreen infer --json reports it. */
int gs_blur_sparse_check(const gs_model *m, const uint8_t *rgb, int w, int h,
                         double focus_threshold, double sparse_tissue, gs_blur_sparse *out);

/* The network method's verdict on a crop, the one rule the blur stage, the infer worker and
 * gastroscreen infer share: from the blur network's logit on the crop, *focus = P(sharp) =
 * 1 - sigmoid(logit); blurry when focus < the network threshold (the job's focus_threshold
 * when in (0, 1), else 1 - m's threshold.blur) or when the sparse-tissue check sp ran and
 * judged the crop blurry. Returns 1 (blurry) or 0; a non-finite logit gives 0 with *focus NaN
 * (the caller reports it as unjudged). */
int gs_blur_network_verdict(const gs_model *m, float logit, double focus_threshold,
                            const gs_blur_sparse *sp, double *focus);

/* One tile's focus: blurry (0/1), focus (higher = sharper: the network's P(sharp) or the
 * classical score), the share of pixels measured, or `error` when it cannot be judged. */
typedef struct {
    int blurry;
    double focus;
    double tissue_fraction;
    gs_blur_sparse sparse; /* the network method's sparse-tissue check (zero for classical) */
    char error[256];
} gs_focus_judgement;

/* Judges the focus of a w x h tile of ch (1, 3 or 4) interleaved channels with this state's
 * method; focus_threshold is the job's (BlurJob/InferJob.focus_threshold, 0 = the default:
 * the bundle's threshold.blur for the network, GS_FOCUS_THRESHOLD for the classical measure),
 * sparse_tissue the job's sparse-tissue rule (GS_BLUR_SPARSE_BUNDLE, GS_BLUR_SPARSE_OFF or a
 * share; the network method only).
 * Returns 0 with *out filled (out->error set for a tile that cannot be judged: too small for
 * the crop, no tissue to measure, a non-finite output), or -1 with the error when the network
 * could not run. The infer worker uses it to judge every tile. */
int gs_blur_judge_pixels(gs_blur *b, const uint8_t *px, int w, int h, int ch,
                         double focus_threshold, double sparse_tissue, gs_focus_judgement *out);

/* Judges one tile (header h, pixels px of len bytes, read in place) into *out; worker_id may
 * be NULL. Returns 0 with out->r filled (a tile that cannot be judged has out->r.error set),
 * or -1 with the error when the network could not run (out of memory, oneDNN). */
int gs_blur_judge(gs_blur *b, const Gastroscreen__V1__TileHeader *h, const uint8_t *px, size_t len,
                  const char *worker_id, gs_blur_result *out);

/* ---- the blur stage on a gs_worker ------------------------------------------------------ */

typedef struct gs_blur_stage gs_blur_stage;

/* threads = the worker's handler threads; m and model_sha256 as gs_blur_new. Returns the stage
 * (caller destroys after the worker) or NULL with the error. */
gs_blur_stage *gs_blur_stage_new(const gs_model *m, int threads, const char *model_sha256);
void gs_blur_stage_destroy(gs_blur_stage **s);

/* The blur stage's gs_worker_handler (ud: the gs_blur_stage): judges every tile of the job's
 * batch and emits one BlurResult each. Returns 0, or -1 when the network failed (error set). */
int gs_blur_handle(gs_worker_job *job, void *ud);

#endif
