/*
 * coordinator: gastroscreend's engine as a library (PROTOCOL.md, all of it).
 *
 * A gs_coordinator replays the journal (daemon/service/journal, daemon/service/slide_table),
 * recovers unfinished slides (attempt + 1), binds its five endpoints (intake SUB, submit, query,
 * events PUB, work ROUTER; the intake door is daemon/service/intake) and then, one iteration at a
 * time:
 *   - welcomes workers (refusing a different model, an unknown protocol, a blur/infer worker
 *     without tile inbox), keeps their free job slots, heartbeats the quiet ones and declares
 *     lost those it has not heard from for liveness x heartbeat_ms (their jobs are re-sent,
 *     their slides get a crash mark, their tiles are re-requested after loss_grace);
 *   - drives each slide in flight through the state machine: PlanJob -> plan (written to the
 *     slide's spool folder) -> blur-first sample (TileJob{blur}) -> out of focus: report and
 *     UNASSESSABLE without any infer job; else the tiles (TileJob{infer}, a window of
 *     outstanding tiles, the tile ledger with its re-requests) -> top-k -> ScreenTask ->
 *     ReportJob -> REPORTED -> DONE; failures send a FAILED ReportJob once, then FAILED;
 *   - publishes every journalled record on `events` after it is on disk (so DONE is fsynced
 *     before `slide.verdict.<class>.` goes out), and `stats.<stage>.` once a second;
 *   - when the journal folder cannot be written (full, read-only, failing), goes on in
 *     degraded mode (PROTOCOL.md §12): new slides are refused with the reason, slides in
 *     flight wait at their next transition with their state in memory, the folder is probed
 *     each second and everything resumes when it takes writes again;
 *   - answers "events since N" and "state of slide X" on `query`;
 *   - counts and drops malformed, wrong-type, stale and duplicate messages on every socket.
 * No pixel ever passes through it.
 *
 * The same code runs as the daemon (tcp:// or ipc:// endpoints, gastroscreend.c) and inside
 * `gastroscreen screen` (inproc:// endpoints: pass the zmq context the stage threads share).
 *
 * Use:
 *     gs_coordinator_options o; gs_coordinator_options_default(&o); o.config = cfg; ...
 *     gs_coordinator *c = gs_coordinator_new(&o);
 *     gs_coordinator_run(c);            // until gs_coordinator_stop(c) (any thread / signal)
 *     gs_coordinator_destroy(&c);
 * or gs_coordinator_step(c, timeout_ms) from the caller's own loop. Everything but
 * gs_coordinator_stop() and gs_coordinator_stats_get() belongs to the thread running the loop.
 */
#ifndef GS_DAEMON_SERVICE_COORDINATOR_H
#define GS_DAEMON_SERVICE_COORDINATOR_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/service/config.h"
#include "daemon/service/metrics.h"
#include "daemon/service/slide_table.h"
#include "proto/gastroscreen.pb-c.h"
#include "stages/runtime/decision.h"
#include "stages/runtime/keys.h"
#include "stages/runtime/transport.h"

typedef struct gs_coordinator gs_coordinator;

/* Distinct multi-task precisions gs_coordinator_stats counts tiles for. */
#define GS_COORD_PRECISIONS 8

/* Per-stage figures, summed over the stage's live workers' last heartbeats (rates and busy
 * fraction: over the last 10 s as the workers measure them; busy is the mean). */
typedef struct {
    uint32_t workers;
    double tiles_per_second;
    double busy_fraction;
    uint32_t queue_depth;
    uint64_t processed, malformed, wrong_type, errors, stale, duplicates;
    uint64_t rss_bytes, peak_rss_bytes;
} gs_coordinator_stage_stats;

/* Sockets of the coordinator, for per-socket counters. */
typedef enum {
    GS_COORD_SOCKET_INTAKE = 0,
    GS_COORD_SOCKET_SUBMIT,
    GS_COORD_SOCKET_QUERY,
    GS_COORD_SOCKET_WORK,
    GS_COORD_SOCKET_COUNT
} gs_coord_socket;

/* "intake", "submit", "query", "work". */
const char *gs_coord_socket_name(gs_coord_socket s);

/* A snapshot for /metrics and `gastroscreen top` (plain data, copied out). */
typedef struct {
    char coordinator_id[33];
    int64_t started_unix_ms;
    uint64_t last_seq;
    /* Indexed by Stage (1..6 the worker stages, 7 the coordinator itself). */
    gs_coordinator_stage_stats stage[8];
    uint32_t slides_in_flight; /* not terminal, incl. those waiting for a slot */
    uint32_t slides_active;    /* being worked on (at most max_slides_in_flight) */
    uint64_t slides_accepted, intake_duplicates, intake_rejected;
    /* Intakes refused because the journal cannot be written; 1 while it cannot (degraded
     * mode), and how many times that began. */
    uint64_t intake_refused;
    int journal_degraded;
    uint64_t journal_degraded_total;
    uint64_t verdicts[GS_VERDICT_FAILED + 1];  /* by gs_verdict_class */
    uint64_t failed_poison;                    /* FAILED verdicts for poison */
    uint64_t malformed[GS_COORD_SOCKET_COUNT]; /* incl. content checks */
    uint64_t wrong_type[GS_COORD_SOCKET_COUNT];
    uint64_t stale, duplicates; /* results ignored by the fence / ledger */
    /* results refused: from a peer that never said hello, a worker of another stage, or one
     * that was not given the job or tile they answer (PROTOCOL.md §9) */
    uint64_t results_refused;
    uint64_t tiles_recorded, tiles_rerequested; /* ledger outcomes, re-requests sent */
    /* INFERRED tiles recorded, by the precision of the infer worker that inferred them (its
     * hello's ModelProvenance.precision, "fp32" when it names none), first seen first:
     * the first GS_COORD_PRECISIONS - 1 distinct names have a slot each, every later name counts
     * in the last, "other", so no series ever changes its label. */
    struct {
        char precision[16];
        uint64_t tiles;
    } inferred[GS_COORD_PRECISIONS];
    size_t n_inferred;
    uint64_t jobs_sent, jobs_resent;
    uint64_t workers_welcomed, workers_refused, workers_lost, workers_goodbye;
    uint64_t events_published, queries_answered;
    double tiles_per_second; /* tile outcomes recorded per second over the last 10 s */
    /* Seconds from acceptance to the verdict of every verdict published (bucketed over
     * gs_coordinator_slide_bounds()), and from a tile's request to its result (over
     * gs_coordinator_tile_bounds()) for the results that count: [0] blur, [1] infer. */
    gs_metrics_hist slide_seconds;
    gs_metrics_hist tile_seconds[2];
} gs_coordinator_stats;

/* The bucket bounds (seconds) of the histograms in gs_coordinator_stats: returns how many and
 * points *bounds at a static array (not to be freed). */
size_t gs_coordinator_slide_bounds(const double **bounds);
size_t gs_coordinator_tile_bounds(const double **bounds);

/* Called from the loop about once a second (for sd_notify STATUS / WATCHDOG). */
typedef void gs_coordinator_tick(const gs_coordinator_stats *stats, void *ud);

typedef struct {
    const gs_config *config; /* required; borrowed, must outlive the coordinator */
    void *zmq_ctx;           /* NULL = a context of the coordinator's own */
    /* The bundle workers must have loaded (copied into every verdict). A NULL model or an
     * empty sha256 turns the sha256 check off. */
    const Gastroscreen__V1__ModelProvenance *model;
    /* The screener's threshold and top k with their sources (stages/runtime/decision), copied;
     * NULL = the config's values, source "config" when the file set them, else "default". */
    const gs_decision *decision;
    /* Monotonic clock in ms; NULL = CLOCK_MONOTONIC. Tests pass their own to drive deadlines. */
    int64_t (*clock_ms)(void *ud);
    void *clock_ud;
    gs_coordinator_tick *on_tick;
    void *tick_ud;
    volatile sig_atomic_t *stop; /* non-zero: gs_coordinator_run returns; may be NULL */
    int quiet;                   /* no log lines (tests flooding garbage) */
    /* When set: each slide's screener input (the top-k feature matrix, k x 512 float32 in
     * descending patch score, exactly what the ScreenTask carries) is also written to
     * <features_dir>/<slide_id>.npy before it is sent (`gastroscreen features`); a file that
     * cannot be written is logged and the slide goes on. Borrowed. */
    const char *features_dir;
    /* CURVE server keys of the tcp:// sockets (stages/runtime/keys), NULL = plain; copied into
     * the sockets. With curve, zap must be the handler already running in zmq_ctx: the hello
     * of a worker is checked against its key's roles there. Borrowed. */
    const gs_curve_keys *curve;
    gs_zap *zap;
} gs_coordinator_options;

void gs_coordinator_options_default(gs_coordinator_options *o);

/* Opens the journal and spool, loads and recovers the slides, binds every endpoint of the
 * config, publishes the records recovery journalled. Returns the coordinator (caller owns;
 * gs_coordinator_destroy) or NULL with the error set. */
gs_coordinator *gs_coordinator_new(const gs_coordinator_options *o);

/* Closes sockets (1 s linger), journal and everything; sets *c to NULL. Accepts NULL. */
void gs_coordinator_destroy(gs_coordinator **c);

/* One iteration: waits up to timeout_ms for a message, handles whatever arrived, then
 * deadlines, liveness, dispatch and publication. Returns 0, or -1 with the error set on a
 * fatal error (a socket failed, the journal broke; a journal folder that is only full or
 * read-only is degraded mode, not an error). */
int gs_coordinator_step(gs_coordinator *c, int timeout_ms);

/* Steps until stopped (gs_coordinator_stop or *options.stop). Returns 0, or -1 as step. */
int gs_coordinator_run(gs_coordinator *c);

/* Asks gs_coordinator_run to return after the current iteration. Async-signal-safe and
 * thread-safe. */
void gs_coordinator_stop(gs_coordinator *c);

/* Intake of a path from the loop's own thread (embedded mode), as the submit socket would:
 * resolved against the slide roots, journalled, published. Returns 0 (out_id, *duplicate
 * filled; either may be NULL) or -1 with the error set. */
int gs_coordinator_intake(gs_coordinator *c, const char *path, gs_intake_source source,
                          const char *external_id, char out_id[GS_SLIDE_ID_LEN + 1],
                          int *duplicate);

/* The endpoint actually bound for a channel (GS_CHANNEL_INTAKE, _SUBMIT, _QUERY, _EVENTS,
 * _WORK); "" when not bound. Coordinator-owned. */
const char *gs_coordinator_endpoint(const gs_coordinator *c, gs_channel channel);

/* The zmq context (for inproc:// peers in the same process). */
void *gs_coordinator_zmq_ctx(gs_coordinator *c);

/* The slide table (read from the loop's thread only, between steps). */
const gs_slides *gs_coordinator_slides(const gs_coordinator *c);

/* Copies the newest snapshot (refreshed each iteration). Thread-safe. */
void gs_coordinator_stats_get(gs_coordinator *c, gs_coordinator_stats *out);

#endif
