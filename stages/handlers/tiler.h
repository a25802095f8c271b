/*
 * tiler: the tiler stage's work on one TileJob, tile by tile, with no sockets (PROTOCOL.md §6
 * "Blur first" and "Inference").
 *
 * A gs_tiler_job opens the job's slide once (one OpenSlide handle per job, DESIGN.md §2) and
 * hands out one item per requested tile, in the job's order: either a tile (a TileMessage
 * header with the fence, index, coordinates, size, format, request and the job's InferJob /
 * BlurJob parameters, plus the RGB pixels read at the grid's target resolution with
 * gs_slide_read_target) or a failed request (a WorkMessage holding a TileResult with outcome
 * ERROR and the message). After an OpenSlide error the handle is closed and every remaining
 * tile fails with that same message; the process never does. The caller (the tiler's main
 * loop) sends each item when its socket can take it, so it can keep heartbeating, and on a
 * graceful stop hands back the tiles it has not taken yet (gs_tiler_job_unsent).
 *
 * Use:
 *     gs_tiler_job *j = gs_tiler_job_new(msg->tile_job, worker_id);   NULL: malformed job
 *     gs_tiler_item it;
 *     while (gs_tiler_job_next(j, &it) == 1) {
 *         if (it.failed) send it.result on work; else send it.message + it.pixels on tiles;
 *         gs_tiler_item_release(&it);
 *     }
 *     gs_tiler_job_done(j, &done_msg); send it; gs_tiler_job_destroy(&j);
 *
 * The TileJob must stay alive (unfreed) while its gs_tiler_job lives: items point into it.
 */
#ifndef GS_STAGES_HANDLERS_TILER_H
#define GS_STAGES_HANDLERS_TILER_H

#include <stddef.h>
#include <stdint.h>

#include "proto/gastroscreen.pb-c.h"
#include "stages/runtime/worker.h"

typedef struct gs_tiler_job gs_tiler_job;

/* One tile of a job: a tile to send, or a failed request to report. */
typedef struct {
    int failed; /* 0: message + pixels; 1: result */
    /* failed == 0: the tile socket's envelope and its pixel frame (tile_size^2 * 3 bytes, RGB8,
     * malloc'd; the caller owns them and frees them with free(), or hands them to
     * gs_transport_send_tile with a free function that calls free()). */
    Gastroscreen__V1__TileMessage message;
    Gastroscreen__V1__TileHeader header;
    uint8_t *pixels;
    size_t pixels_len;
    /* failed == 1: the work socket's envelope holding a TileResult{ERROR}. */
    Gastroscreen__V1__WorkMessage result;
    Gastroscreen__V1__TileResult tile_result;
    char error[1024];
} gs_tiler_item;

/* Checks the job (PROTOCOL.md §14 step 6: a fence of 16 hex digits and attempt >= 1, a path
 * under 4096 bytes, a grid with tile_size 16..1672 so a frame fits the 8 MiB tile cap, a
 * positive finite target_mpp and window, infer or blur set, tile indices unique) and opens the
 * slide (with the job's `identity` when it has one: gs_slide_open_for_job; the file is checked
 * again after each tile read, and a changed file fails the remaining tiles with the change
 * named). A slide that cannot be opened is not an error here: every tile then fails with the
 * open error. Returns the job (caller destroys), or NULL with the error for a malformed job,
 * which the caller counts and drops. `tiler_id` is copied into every item. */
gs_tiler_job *gs_tiler_job_new(const Gastroscreen__V1__TileJob *job, const char *tiler_id);

/* Closes the slide and frees the job; sets *j to NULL. Accepts NULL. */
void gs_tiler_job_destroy(gs_tiler_job **j);

/* Produces the next item into *it (which must be released with gs_tiler_item_release before
 * the next call). Returns 1 with an item, 0 when every tile has been handed out, -1 when out of
 * memory (error set; the tile stays unsent). */
int gs_tiler_job_next(gs_tiler_job *j, gs_tiler_item *it);

/* Frees an item's pixels unless the caller took them (set it->pixels to NULL to take them). */
void gs_tiler_item_release(gs_tiler_item *it);

/* Indices of the tiles not yet handed out, in job order (for WorkerGoodbye.HandedBack);
 * owned by the job and valid until the next call, *n receives the count (0: all handed out).
 * Cannot fail: the array is allocated with the job. */
const uint32_t *gs_tiler_job_unsent(gs_tiler_job *j, size_t *n);

/* Tiles handed out as tiles and as failures so far. */
void gs_tiler_job_counts(const gs_tiler_job *j, uint32_t *sent, uint32_t *failed);

/* Fills *done (a caller-owned TileJobDone, initialised here) with the fence, job id, tiler id
 * and counts; its strings point into the job. */
void gs_tiler_job_done(const gs_tiler_job *j, Gastroscreen__V1__TileJobDone *done);

/* ---- the tiler stage on a gs_worker ----------------------------------------------------- */

/* The sockets of a tiler worker: per handler thread, one tile PUSH for infer jobs and one for
 * blur jobs, each connected to exactly the sink_endpoints of the last job of its kind (new ones
 * connected, missing ones disconnected). Two sockets, because a disconnect discards the tiles
 * still queued for that peer: alternating one socket between the two stages' inboxes lost
 * tiles. */
typedef struct gs_tiler_stage gs_tiler_stage;

/* zctx must be the context the tile inboxes live in (the same as the worker's for inproc://);
 * threads = the worker's threads; tile_hwm = the tile sockets' high-water mark (0: 8).
 * Returns the stage (caller destroys after the worker), or NULL with the error. */
gs_tiler_stage *gs_tiler_stage_new(void *zctx, int threads, int tile_hwm);

/* The longest a handler waits for any of a job's sinks to take a tile (GS_TILER_SINK_WAIT_MS by
 * default). A busy infer worker holds tiles back for seconds (backpressure), but a job whose
 * sinks all died (their workers were killed; the job names the inboxes known when it was sent)
 * would otherwise wait forever and keep the handler thread from every later job. After the
 * wait, that tile and the rest of the job fail as TileResults with an error ("no tile sink
 * took a tile for N s"): the coordinator asks again, with the sinks it knows then. */
#define GS_TILER_SINK_WAIT_MS 60000
void gs_tiler_stage_set_sink_wait(gs_tiler_stage *s, int ms);

/* CURVE client keys (own pair; the server key is each inbox's, from TileJob.sink_keys) for the
 * tile PUSH connections to inboxes that announced a key; NULL (the default) = plain. Borrowed:
 * must outlive the stage. Call before the first job. */
void gs_tiler_stage_set_curve(gs_tiler_stage *s, const gs_curve_keys *keys);

/* Closes the PUSH sockets; call after gs_worker_destroy (handler threads joined). */
void gs_tiler_stage_destroy(gs_tiler_stage **s);

/* The tiler's gs_worker_handler (ud: the gs_tiler_stage). Serves the job's TileJob: each tile
 * is pushed to the sinks (waiting for room with ZMQ_POLLOUT, never past a stop request), each
 * failed tile is emitted as a TileResult{ERROR}, and a TileJobDone ends the job. When the
 * worker stops mid-job the tiles not pushed are handed back. A malformed job returns -1
 * (counted; the coordinator's deadline re-sends). */
int gs_tiler_handle(gs_worker_job *job, void *ud);

#endif
