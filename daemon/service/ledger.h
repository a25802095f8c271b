/*
 * ledger: the tile ledger of one slide attempt (PROTOCOL.md §8).
 *
 * One slot per planned tile holds its outcome (pending, inferred, background, blurry, error),
 * how many times it was requested and when last. Every planned tile ends in exactly one
 * outcome: the first valid result of the current attempt records it, any later one is a
 * duplicate (counted, ignored), and a result of another attempt is stale (counted, ignored).
 * A failed request makes the tile due again at once; a tile with no result for the stall
 * timeout (counted from its last request or the slide's last result, whichever is later), or
 * requested before a worker was lost and still pending after the loss grace, is due again;
 * a due tile that has had tile_max_requests requests becomes an ERROR instead. The slide is
 * complete when every tile has an outcome.
 *
 * The ledger also keeps the top-k INFERRED tiles by score (ties: lower index first) with
 * their features, in a heap of k slots, so memory is bounded by the tile count and k, never
 * by pixels or by the number of results.
 *
 * It has two phases. In the blur phase (the start) only blur judgements and failed requests
 * are taken, for the blur-first sample: a tile judged blurry gets the outcome BLURRY, a sharp
 * one stays pending, and a sample tile out of requests is left unjudged (not an error).
 * gs_ledger_begin_inference() starts the inference phase with fresh request counts.
 *
 * Outcomes can be saved to a ledger file (PROTOCOL.md §8: CRC-framed records, appended, not
 * fsynced one by one; a record file of kind "LEDG", stages/runtime/recfile) so that after a
 * coordinator restart the new attempt's ledger adopts the outcomes whose records are intact
 * instead of inferring the slide again. A ledger file of the release before the record files
 * (no header, a "GSL1" magic per record) is converted when it is adopted.
 *
 * The clock is passed in (milliseconds, any monotonic origin), so tests control time. Use:
 * l = gs_ledger_new(n, attempt, &opts); gs_ledger_set_background() for the plan's background
 * tiles; gs_ledger_requested() whenever a tile is sent; feed results with gs_ledger_record(),
 * gs_ledger_failed_request(), gs_ledger_judge_blur(); poll gs_ledger_due() for re-requests;
 * when gs_ledger_complete(), read gs_ledger_top(); gs_ledger_destroy(&l).
 */
#ifndef GS_DAEMON_SERVICE_LEDGER_H
#define GS_DAEMON_SERVICE_LEDGER_H

#include <stddef.h>
#include <stdint.h>

#include "proto/vocab.h"

/* Outcomes (TileOutcome, whose UNSPECIFIED is "pending"). */
typedef enum {
    GS_TILE_PENDING = 0,
    GS_TILE_INFERRED = 1,
    GS_TILE_BACKGROUND = 2,
    GS_TILE_BLURRY = 3,
    GS_TILE_ERROR = 4,
} gs_tile_outcome;
GS_VOCAB_PIN(GS_TILE_PENDING, GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_UNSPECIFIED);
GS_VOCAB_PIN(GS_TILE_INFERRED, GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_INFERRED);
GS_VOCAB_PIN(GS_TILE_BACKGROUND, GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_BACKGROUND);
GS_VOCAB_PIN(GS_TILE_BLURRY, GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_BLURRY);
GS_VOCAB_PIN(GS_TILE_ERROR, GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_ERROR);

/* What became of one result (the non-negative returns of the recording functions). */
typedef enum {
    GS_LEDGER_RECORDED = 0,  /* the tile's outcome (or judgement) is now recorded */
    GS_LEDGER_DUPLICATE = 1, /* the tile already had one: ignored, counted */
    GS_LEDGER_STALE = 2,     /* another attempt's result: ignored, counted */
    GS_LEDGER_RETRY = 3,     /* a failed request: the tile is due again */
    GS_LEDGER_GAVE_UP = 4,   /* a failed last request: ERROR (inference) or unjudged (blur) */
} gs_ledger_result;

typedef struct {
    uint32_t tile_max_requests; /* requests per tile before ERROR (3) */
    int64_t stall_timeout_ms;   /* no result for this long: outstanding tiles due (120 s) */
    int64_t loss_grace_ms;      /* after a worker loss, pending tiles due after this (15 s) */
    uint32_t top_k;             /* tiles kept for the screener (64; 1..4096) */
    uint32_t feature_dim;       /* floats per feature (512) */
} gs_ledger_options;

/* Fills *o with the PROTOCOL.md §15 defaults. */
void gs_ledger_options_default(gs_ledger_options *o);

typedef struct {
    uint32_t planned, inferred, background, blurry, error, pending;
    uint32_t rerequested;       /* requests beyond the first, over all tiles */
    uint64_t duplicates, stale; /* results ignored */
    uint32_t blur_judged;       /* sample tiles judged in the blur phase */
    uint32_t blur_blurry;       /* of which blurry */
    uint32_t blur_outstanding;  /* requested in the blur phase, not judged, not given up */
    uint32_t file_errors;       /* failed appends to the ledger file */
    /* Requested in this phase and awaiting a result (not failed, not settled): what counts
     * against the slide's window of outstanding tiles (PROTOCOL.md §10). */
    uint32_t in_flight;
} gs_ledger_counts;

typedef struct gs_ledger gs_ledger;

/* A ledger for n_tiles planned tiles of one slide attempt (attempt >= 1), in the blur phase.
 * Returns it (caller owns; gs_ledger_destroy) or NULL with the error set (bad options, out of
 * memory). */
gs_ledger *gs_ledger_new(uint32_t n_tiles, uint32_t attempt, const gs_ledger_options *o);

/* Frees the ledger and sets *l to NULL; NULL and *l == NULL are accepted. */
void gs_ledger_destroy(gs_ledger **l);

uint32_t gs_ledger_attempt(const gs_ledger *l);
uint32_t gs_ledger_tile_count(const gs_ledger *l);

/* Records BACKGROUND for a tile the plan says has too little tissue. Returns 0, or -1 if the
 * index is out of range or the tile already has an outcome. */
int gs_ledger_set_background(gs_ledger *l, uint32_t index);

/* Ends the blur phase: every pending tile starts inference with no requests counted. */
void gs_ledger_begin_inference(gs_ledger *l);

/* 1 in the inference phase, 0 in the blur phase. */
int gs_ledger_inferring(const gs_ledger *l);

/* Notes that the tile was sent at now_ms. Returns 0, or -1 (error set) if the index is out of
 * range, the tile has an outcome, or it has had all its requests. */
int gs_ledger_requested(gs_ledger *l, uint32_t index, int64_t now_ms);

/* A result of the inference phase: outcome INFERRED (score finite in 0..1, feature of
 * feature_dim floats, copied if the tile enters the top-k) or BACKGROUND (the tile's own
 * pixels hold no tissue; score and feature ignored). Returns a gs_ledger_result, or -1 with
 * the error set for a malformed result (index out of range, bad outcome, score or feature,
 * or a tile result in the blur phase). */
int gs_ledger_record(gs_ledger *l, uint32_t attempt, uint32_t index, gs_tile_outcome outcome,
                     float score, const float *feature, int64_t now_ms);

/* A failed request (a tiler's read error, an infer or blur error; error is copied). Returns
 * GS_LEDGER_RETRY, GS_LEDGER_GAVE_UP, GS_LEDGER_DUPLICATE (the tile already has an outcome or
 * judgement), GS_LEDGER_STALE, or -1 for an index out of range. */
int gs_ledger_failed_request(gs_ledger *l, uint32_t attempt, uint32_t index, const char *error,
                             int64_t now_ms);

/* A blur judgement of a sample tile (blur phase only). Blurry: outcome BLURRY. Sharp: the
 * tile stays pending for inference. Returns a gs_ledger_result, or -1 (error set) for an
 * index out of range or a judgement in the inference phase. */
int gs_ledger_judge_blur(gs_ledger *l, uint32_t attempt, uint32_t index, int blurry,
                         int64_t now_ms);

/* A worker that may have held tiles of this slide was lost (or said goodbye) at lost_at_ms:
 * every tile pending and last requested before then is due at lost_at_ms + loss_grace. */
void gs_ledger_worker_lost(gs_ledger *l, int64_t lost_at_ms);

/* Fills out[0..max) with the indices of tiles due for a re-request at now_ms, lowest first,
 * and returns how many. Due tiles that have had all their requests are not returned: they
 * become ERROR (inference) or unjudged (blur) here. A returned tile stays due until
 * gs_ledger_requested() is called for it. */
size_t gs_ledger_due(gs_ledger *l, int64_t now_ms, uint32_t *out, size_t max);

/* Fills out[0..max) with pending tiles never requested in this phase, in plan order, and
 * returns how many. In the blur phase a judged-sharp tile counts as requested. */
size_t gs_ledger_unrequested(const gs_ledger *l, uint32_t *out, size_t max);

/* The outcome of a tile (GS_TILE_PENDING for an index out of range). */
gs_tile_outcome gs_ledger_outcome(const gs_ledger *l, uint32_t index);

/* The score of an INFERRED tile (0 otherwise). */
float gs_ledger_score(const gs_ledger *l, uint32_t index);

/* The last error of a tile (ledger-owned, or NULL). */
const char *gs_ledger_error(const gs_ledger *l, uint32_t index);

/* 1 when every planned tile has an outcome. */
int gs_ledger_complete(const gs_ledger *l);

void gs_ledger_counts_get(const gs_ledger *l, gs_ledger_counts *c);

/* The k = min(top_k, inferred) INFERRED tiles with the highest scores (ties: lower index
 * first), best first: indices into index[], scores into score[], features row-major into
 * features[] (k x feature_dim). Any output may be NULL; the caller sizes them for top_k.
 * Returns k. */
uint32_t gs_ledger_top(const gs_ledger *l, uint32_t *index, float *score, float *features);

/* Adopts the outcomes saved in the ledger file at path by an earlier ledger of the same plan
 * (any attempt): each intact record of a pending tile sets its outcome (and, for INFERRED,
 * its score and top-k entry). Records that do not fit (index out of range, wrong feature
 * size, tile already settled) are skipped; a torn or corrupt tail is cut off the file. A
 * missing file adopts nothing. *adopted and *dropped (may be NULL) get the counts. Returns 0,
 * or -1 with the error set when the file cannot be read or is not a ledger file (another
 * kind, a newer format, a damaged header: it is left in place, never read as empty). */
int gs_ledger_adopt_file(gs_ledger *l, const char *path, uint32_t *adopted, uint32_t *dropped);

/* From now on, appends every outcome this ledger records to path (created if missing). A
 * failed append is counted in file_errors and ends the saving (the ledger itself goes on);
 * its partial record is cut off, so the outcomes saved before it are still adopted. Returns
 * 0, or -1 with the error set (a file that is not a ledger file is refused as by adopt). */
int gs_ledger_attach_file(gs_ledger *l, const char *path);

/* fsyncs the ledger file (e.g. when the slide leaves INFERRING). Returns 0 or -1. */
int gs_ledger_sync(gs_ledger *l);

#endif
