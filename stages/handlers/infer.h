/*
 * infer: the infer stage's work, tiles in and TileResults out (PROTOCOL.md §6 "Inference"),
 * with no sockets, so tests and the embedded mode call it directly.
 *
 * A gs_infer is one worker thread's state: the multi-task network's oneDNN state for a batch
 * of `batch` tiles of one size (rebuilt when a tile of another size arrives), the input
 * buffer and the result slots. gs_infer_run() takes n tiles (TileHeader + pixels, from any
 * slides), checks each one (an InferJob header, the bundle's sha256 when the header names one,
 * a pixel frame that agrees with the header, a side that is a multiple of 32, a heatmap size
 * from 1 to the segmentation map's side; 0 means 16), runs the valid ones through the network
 * in batches and fills one TileResult per tile, in input order:
 *   - INFERRED: score = sigmoid(logit), the 512-float feature, and the heatmap: the seg
 *     sigmoid averaged over heatmap_size x heatmap_size cells and quantised to 0..255; with
 *     InferJob.context C the frame is the window plus C pixels on each side, it runs whole,
 *     and the heatmap covers only the window's part of the map;
 *   - BACKGROUND: the tile's pixels hold no tissue (no pixel darker than glass,
 *     GS_FOCUS_GLASS_GREY): never run through the network;
 *   - BLURRY: the header's InferJob asks for judge_focus and the tile is out of focus
 *     (stages/handlers/blur's gs_blur_judge_pixels: the bundle's trained blur network on the
 *     central crop, else the classical measure): never run through the network. With
 *     judge_focus, INFERRED tiles carry their focus and focus_method too; a tile whose focus
 *     cannot be judged is inferred without them;
 *   - ERROR with `error`: a tile that failed a check or gave a non-finite output (a failed
 *     request; the coordinator asks again).
 * Every result carries the fence of its header, the request, the worker id and timings
 * (wait_us as given, read_us from the tiler, compute_us and batch_size of the network call
 * that ran it).
 *
 * A full batch runs in one network call; a partial one (the end of a slide, or fewer tiles
 * waiting) runs tile by tile in a second, one-tile state made on first use, so no compute goes
 * to padding.
 *
 * For a gs_worker, gs_infer_stage holds one gs_infer per handler thread (made on first use)
 * and gs_infer_handle is the handler over tile batches (gs_worker_job_tile).
 */
#ifndef GS_STAGES_HANDLERS_INFER_H
#define GS_STAGES_HANDLERS_INFER_H

#include <stddef.h>
#include <stdint.h>

#include "model/network.h"
#include "proto/gastroscreen.pb-c.h"
#include "stages/runtime/worker.h"

/* Heatmap side when a header says 0 (PROTOCOL.md §15). */
#define GS_INFER_HEATMAP_SIZE 16

typedef struct gs_infer gs_infer;

/* A state for `batch` tiles at a time (1..256) on model m (borrowed: it must outlive the
 * state) which must hold the multi-task network (and, for the network focus judgement, a
 * built blur network when the bundle's is trained). model_sha256 (copied; NULL or "" = accept
 * any) is the bundle's hash checked against each header's InferJob.model_sha256. Returns the
 * state (caller destroys) or NULL with the error. */
gs_infer *gs_infer_new(const gs_model *m, int batch, const char *model_sha256);

void gs_infer_destroy(gs_infer **s);

/* Runs n tiles: headers[i] with pixels[i] (lens[i] bytes), each read in place. worker_id
 * (copied into the results; may be NULL) and wait_us (per tile, may be NULL) go into the
 * results. Returns 0 with n results (gs_infer_result), or -1 with the error when the run as a
 * whole failed (out of memory, the network failed to build or run), then no result is valid. */
int gs_infer_run(gs_infer *s, size_t n, const Gastroscreen__V1__TileHeader *const *headers,
                 const uint8_t *const *pixels, const size_t *lens, const char *worker_id,
                 const uint64_t *wait_us);

/* Result i of the last run (i < n); owned by the state, valid until the next run. */
const Gastroscreen__V1__TileResult *gs_infer_result(const gs_infer *s, size_t i);

/* ---- the infer stage on a gs_worker ----------------------------------------------------- */

typedef struct gs_infer_stage gs_infer_stage;

/* threads = the worker's handler threads; batch and model_sha256 as gs_infer_new. The model
 * is borrowed. Returns the stage (caller destroys after the worker) or NULL with the error. */
gs_infer_stage *gs_infer_stage_new(const gs_model *m, int threads, int batch,
                                   const char *model_sha256);
void gs_infer_stage_destroy(gs_infer_stage **s);

/* The infer stage's gs_worker_handler (ud: the gs_infer_stage): runs the job's tile batch and
 * emits one TileResult per tile. Returns 0, or -1 when the batch could not run (error set;
 * the tiles' requests then go missing and the coordinator asks again). */
int gs_infer_handle(gs_worker_job *job, void *ud);

#endif
