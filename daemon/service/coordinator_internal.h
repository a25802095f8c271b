/*
 * coordinator_internal: what the coordinator's own source files share. Private to
 * coordinator.c and the coordinator_*.c files: nothing else includes it, and nothing here is
 * an API (the API is daemon/service/coordinator.h).
 *
 * The coordinator is one object whose code is split by job:
 *   coordinator.c           construction, destruction, the poll loop (drain, tick), the public
 *                           functions, and the small helpers every file uses (clock, log, checks);
 *   coordinator_workers.c   the worker registry (hello/refuse, welcome, heartbeats, goodbye,
 *                           liveness, a lost worker) and the table of jobs sent to workers;
 *   coordinator_flow.c      each slide in flight: activation, phases, settling the blur sample
 *                           and the tiles, failure, and publication of what was journalled;
 *   coordinator_dispatch.c  building and sending the jobs (tiles, plan, screen, report);
 *   coordinator_results.c   checking and fencing workers' results and recording them;
 *   coordinator_query.c     the query socket (events since N, state of slides);
 *   coordinator_stats.c     the stats snapshot, its histograms and the stats publication.
 * The spool folder of each slide is daemon/service/spool, a module of its own.
 *
 * Functions one file calls in another are declared here, prefixed coord_; everything else
 * stays static in its file. All of it runs on the thread that runs the loop, except
 * gs_coordinator_stop and the snapshot behind snap_lock (coordinator.h says which).
 */
#ifndef GS_DAEMON_SERVICE_COORDINATOR_INTERNAL_H
#define GS_DAEMON_SERVICE_COORDINATOR_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/service/coordinator.h"
#include "daemon/service/intake.h"
#include "daemon/service/journal.h"
#include "daemon/service/ledger.h"
#include "daemon/service/spool.h"
#include "proto/vocab.h"
#include "stages/runtime/fileio.h"

#define MAX_HAND 32
/* Peers remembered by the rate limit of coord_peer_logf: more than a service has workers and
 * clients misbehaving at once; an older slot is reused (that peer may log once more). */
#define PEER_LOG_SLOTS 32
#define PEER_LOG_MS 10000

typedef Gastroscreen__V1__WorkMessage WorkMessage;

enum { STAGE_N = 8 };

/* A worker that said hello; a slot of c->workers, free again when used is 0. */
typedef struct {
    int used;
    gs_peer peer;
    char id[256];
    int stage;
    char inbox[512];
    char inbox_key[41]; /* the inbox's CURVE public key (WorkerHello.tile_inbox_key); "" plain */
    uint32_t batch;
    /* An infer worker's multi-task precision (hello's model.precision; "fp32" when absent) */
    char precision[16];
    uint32_t free_slots;
    int64_t last_heard, last_sent, last_used;
    int64_t welcomed_at; /* clock_ms of its welcome: tiles requested before it never reached it */
    gs_coordinator_stage_stats st;
    struct {
        char slide[GS_SLIDE_ID_LEN + 1];
        uint32_t attempt;
    } hand[MAX_HAND];
    size_t n_hand;
} worker;

/* A job sent and not yet answered: which worker holds it, for when that worker goes. */
typedef struct {
    uint64_t id;
    int kind; /* JobKind */
    char slide[GS_SLIDE_ID_LEN + 1];
    uint32_t attempt;
    int worker;
} job;

enum { PH_PLAN = 1, PH_BLUR, PH_INFER, PH_SCREEN, PH_REPORT, PH_FAIL_REPORT };

/* A slide being worked on (at most max_slides_in_flight of them, in c->active). */
typedef struct {
    char id[GS_SLIDE_ID_LEN + 1];
    uint32_t attempt;
    int phase;
    Gastroscreen__V1__PlanResult *plan;
    gs_ledger *ledger;
    uint8_t *is_sample;
    int64_t *sent_ms; /* per tile: when it was last requested (clock_ms), -1 = never */
    uint32_t n_sample;
    gs_slide_method blur_method; /* of the sample's judged tiles (UNKNOWN until one is) */
    int blur_mixed;              /* warned once: the sample was judged by two methods */
    /* The precisions of the infer workers behind the INFERRED tiles recorded, "+"-joined */
    char precision[GS_SLIDE_PRECISION_MAX + 1];
    uint8_t *heat;            /* n_tiles x hs^2 */
    gs_spool_heat *heat_file; /* the heatmaps survive a restart like outcomes */
    uint32_t hs;
    uint64_t job_id; /* the outstanding plan/screen/report job, 0 = none */
    int64_t job_deadline;
    uint32_t sends;
    int need_send;
    gs_verdict_class report_class;
    float score;
    char reason[1024];
    char **warn;
    size_t n_warn;
    int64_t phase_start;
    double stage_sec[STAGE_N];
} slide_rt;

struct gs_coordinator {
    gs_coordinator_options o;
    const gs_config *cfg;
    void *zctx;
    int own_ctx;
    gs_zap *zap; /* the ZAP handler when the sockets run CURVE (roles of worker keys) */
    gs_journal *journal;
    gs_slides *slides;
    gs_spool *spool;
    gs_intake *intake;
    gs_transport *work, *query, *events;
    Gastroscreen__V1__ModelProvenance model;
    gs_decision decision; /* the threshold and top k that judge, with their sources */
    char *model_strings[6];
    /* model.networks: deep copies, so the caller's provenance need not outlive the coordinator */
    Gastroscreen__V1__NetworkProvenance model_nets[GS_NET_COUNT];
    Gastroscreen__V1__NetworkProvenance *model_net_ptr[GS_NET_COUNT];
    char *model_net_strings[GS_NET_COUNT][2];
    char coordinator_id[33];
    int64_t started_unix_ms;
    uint64_t published;
    atomic_int stop_flag;
    uint64_t next_job_id;
    worker *workers;
    size_t n_workers;
    job *jobs;
    size_t n_jobs, cap_jobs;
    slide_rt **active;
    size_t n_active;
    int64_t next_tick, next_retain;
    uint64_t rate_hist[11];
    int64_t rate_time[11];
    /* Degraded mode: the journal folder cannot be written (full, read-only, failing). New
     * slides are refused; slides in flight keep their state in memory and wait at their next
     * transition; the folder is probed each second (PROTOCOL.md §12). */
    int degraded;
    int degraded_errno;
    int64_t next_probe;
    gs_coordinator_stats st; /* loop-owned counters */
    /* Log lines about one peer's bad messages: at most one per peer every PEER_LOG_MS, the
     * rest counted and reported with the next line (a hostile peer cannot flood the log). */
    struct {
        gs_peer peer;
        int64_t next_ms;
        uint64_t suppressed;
    } peer_log[PEER_LOG_SLOTS];
    pthread_mutex_t snap_lock;
    gs_coordinator_stats snap;
};

/* ------------------------------------------------------------------------------------------ */
/* coordinator.c: helpers */

/* The coordinator's monotonic clock in ms (options.clock_ms; tests drive it). */
int64_t coord_now_ms(const gs_coordinator *c);

/* Logs one line unless quiet; a line starting "slide <id>" is tagged with the slide. */
void coord_logf(const gs_coordinator *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Logs one line about a peer's bad message unless that peer logged within PEER_LOG_MS (then
 * the line is counted and its number told with the next). p NULL: the lines share one slot. */
void coord_peer_logf(gs_coordinator *c, const gs_peer *p, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Counts a malformed message on the work socket and logs what was dropped (rate-limited per
 * peer, p may be NULL). */
void coord_count_malformed(gs_coordinator *c, const char *what, const gs_peer *p);

/* Counts a result refused because its sender was not given the job it answers, and logs why
 * (rate-limited per peer, PROTOCOL.md §9). w is the sender when it said hello, else NULL. */
void coord_refuse_result(gs_coordinator *c, const gs_peer *p, const worker *w, const char *what,
                         const char *why);

/* Called where a step of the loop failed (err: errno then): when the journal folder cannot
 * be written, puts the coordinator in degraded mode (or keeps it there) and returns 0, so the
 * loop goes on; otherwise returns -1, the failure is fatal. */
int coord_survive_journal_failure(gs_coordinator *c, int err);

/* Copies the coordinator's model provenance into *mp (strings borrowed, not copied). */
void coord_fill_provenance(const gs_coordinator *c, Gastroscreen__V1__ModelProvenance *mp);

/* ------------------------------------------------------------------------------------------ */
/* coordinator_workers.c: the worker registry and the job table */

/* The live worker behind a peer id, or NULL. Points into c->workers (moves on realloc). */
worker *coord_worker_by_peer(gs_coordinator *c, const gs_peer *p);

/* 1 if a live worker of the stage is registered, else 0. */
int coord_any_worker(const gs_coordinator *c, int stage);

/* The worker of the stage with a free slot, least recently used first; NULL if none. */
worker *coord_pick_worker(gs_coordinator *c, int stage);

/* Sends m to w without blocking. Returns 0, or -1 (not sent: gone or full). */
int coord_send_work(gs_coordinator *c, worker *w, WorkMessage *m);

/* Books a job just sent to w for the slide: takes a slot, counts it, adds it to the job
 * table. Returns 0, or -1 with the error set (out of memory). */
int coord_job_sent(gs_coordinator *c, worker *w, int kind, slide_rt *rt, uint64_t id);

/* Forgets the job (answered, handed back, past its deadline); an unknown id is a no-op. */
void coord_remove_job(gs_coordinator *c, uint64_t id);

/* The open job of that id, or NULL. Points into c->jobs (moves when jobs are added/removed). */
job *coord_job_find(gs_coordinator *c, uint64_t id);

/* Puts up to max tile inboxes of the stage's workers in eps (pointers into c->workers) and
 * their summed batch sizes in *batch_sum (may be NULL). Returns how many. */
size_t coord_inboxes(gs_coordinator *c, int stage, char **eps, char **keys, size_t max,
                     uint32_t *batch_sum);

/* Sends a coordinator heartbeat to a peer: a quiet worker, or (say_hello = 1) a peer not known
 * as a worker, which then says hello again. */
void coord_send_heartbeat(gs_coordinator *c, const gs_peer *to, int say_hello);

/* WorkerHello: welcomes or refuses the worker; a worker saying hello again gives up its jobs. */
void coord_on_hello(gs_coordinator *c, const gs_peer *from, const Gastroscreen__V1__WorkerHello *h);

/* WorkerHeartbeat: the worker's jobs in hand and stats (republished as its stats event). */
void coord_on_heartbeat(gs_coordinator *c, worker *w, const Gastroscreen__V1__WorkerHeartbeat *h);

/* WorkerGoodbye: takes back what it handed back, then forgets the worker. Returns 0, or -1
 * with the error set (the journal cannot be written). */
int coord_on_goodbye(gs_coordinator *c, worker *w, const Gastroscreen__V1__WorkerGoodbye *g);

/* Declares lost the workers not heard from for liveness x heartbeat_ms, heartbeats the quiet
 * ones. Returns 0, or -1 with the error set (the journal cannot be written). */
int coord_check_liveness(gs_coordinator *c);

/* ------------------------------------------------------------------------------------------ */
/* coordinator_flow.c: slides in flight, failure, publication */

/* Publishes one event on `events` (never blocks). Returns 0, or -1 if it was not sent. */
int coord_send_event(gs_coordinator *c, Gastroscreen__V1__EventMessage *ev);

/* Publishes every journalled record not yet published, oldest first, retiring the spool of
 * each slide whose verdict goes out. */
void coord_publish_pending(gs_coordinator *c);

/* Removes a terminal slide's spool folder, or moves it to poison/ (poison = 1); logs a
 * failure to keep a poisoned one. */
void coord_spool_retire(const gs_coordinator *c, const char *slide, int poison);

/* The active slide of that id, or NULL. */
slide_rt *coord_rt_find(gs_coordinator *c, const char *id);

/* Removes the slide from the active ones with its jobs and frees it (rt is gone after). */
void coord_rt_drop(gs_coordinator *c, slide_rt *rt);

/* Adds a warning for the slide's verdict (dropped if out of memory). */
void coord_rt_warn(slide_rt *rt, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The Stage that does a phase's work. */
int coord_stage_of_phase(int phase);

/* Moves the slide to a phase, adding the time spent to the phase it leaves. */
void coord_rt_phase(gs_coordinator *c, slide_rt *rt, int phase);

/* The slide's tile counts from its ledger (all 0 without one). */
void coord_tile_counts(const slide_rt *rt, gs_slide_tiles *t);

/* Copies tile counts into their message (TileCounts of a Verdict or a SlideStatus). */
void coord_tile_counts_msg(const gs_slide_tiles *t, Gastroscreen__V1__TileCounts *tc);

/* Sets v's threshold and threshold_source to those that judged the slide (journalled at
 * SCREENED, so a restart with another config reports them unchanged), or the coordinator's
 * own for a slide never screened; and the focus rules, always the coordinator's. Strings
 * borrowed from info or the coordinator. */
void coord_verdict_threshold(const gs_coordinator *c, const gs_slide_info *info,
                             Gastroscreen__V1__Verdict *v);

/* Journals FAILED with the report files given (any may be NULL), publishes it and drops the
 * slide. Returns 0, or -1 with the error set. */
int coord_finalize_fail(gs_coordinator *c, slide_rt *rt, const char *json, const char *png,
                        const char *geo);

/* Fails the slide for the reason formatted: a FAILED report first when a reporter is there,
 * else FAILED at once. Returns 0, or -1 with the error set. */
int coord_fail_slide(gs_coordinator *c, slide_rt *rt, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Saves the tile's heatmap (rt->heat) to heat.bin; stops saving after a failed write. */
void coord_heat_file_append(slide_rt *rt, uint32_t idx);

/* Makes the slide's ledger, sample and heatmaps for its plan (adopt = take back the spooled
 * outcomes and heatmaps after a restart). Returns 0, or -1 with the error set. */
int coord_make_ledger(gs_coordinator *c, slide_rt *rt, int adopt);

/* Copies the plan's warnings into the slide's. */
void coord_plan_warnings(slide_rt *rt);

/* Activates waiting slides and moves every active one on. Returns 0, or -1 with the error
 * set on a fatal error. */
int coord_drive(gs_coordinator *c);

/* ------------------------------------------------------------------------------------------ */
/* coordinator_dispatch.c: jobs */

/* Sends TileJobs for the slide's due and unrequested tiles. Returns 0, or -1 with the error
 * set. */
int coord_dispatch_tiles(gs_coordinator *c, slide_rt *rt);

/* Sends (or re-sends) the slide's plan / screen / report job when one is needed, failing the
 * slide when it has been sent too often. Returns 0, or -1 with the error set. */
int coord_dispatch_job(gs_coordinator *c, slide_rt *rt);

/* ------------------------------------------------------------------------------------------ */
/* coordinator_results.c: results. Those returning int return 0, or -1 with the error set on
 * a fatal error (the journal or the spool cannot be written); a bad result is counted and
 * dropped, never an error. */

/* The method a plan names (UNKNOWN for a value this build does not know). */
gs_slide_method coord_plan_method(const Gastroscreen__V1__PlanResult *p);

/* Counts what became of a tile result (recorded, duplicate, stale). */
void coord_note_tile(gs_coordinator *c, int r);

/* The coord_on_*_result handlers are called only by the work loop, which has checked the
 * message's fence (gs_fence_ok) already and that w, the sender, said hello as a worker of a
 * stage that sends such results. Each then checks that w was given the job (or the tile) the
 * result answers (PROTOCOL.md §9). */
int coord_on_plan_result(gs_coordinator *c, worker *w, const Gastroscreen__V1__PlanResult *p);
void coord_on_tile_job_done(gs_coordinator *c, worker *w, const Gastroscreen__V1__TileJobDone *d);
void coord_on_tile_result(gs_coordinator *c, worker *w, const Gastroscreen__V1__TileResult *t);
void coord_on_blur_result(gs_coordinator *c, worker *w, const Gastroscreen__V1__BlurResult *b);
int coord_on_screen_result(gs_coordinator *c, worker *w, const Gastroscreen__V1__ScreenResult *s);
int coord_on_report_result(gs_coordinator *c, worker *w, const Gastroscreen__V1__ReportResult *r);

/* ------------------------------------------------------------------------------------------ */
/* coordinator_query.c */

/* Answers one message of the query socket (st: what gs_transport_recv said of it). */
void coord_on_query(gs_coordinator *c, gs_inbound *in, gs_recv_status st);

/* ------------------------------------------------------------------------------------------ */
/* coordinator_stats.c */

/* Counts a published verdict in the slide-seconds histogram. */
void coord_observe_slide(gs_coordinator *c, const Gastroscreen__V1__Verdict *v);

/* Counts a recorded tile's round trip (which: 0 blur, 1 infer; r: the ledger's answer). */
void coord_observe_tile(gs_coordinator *c, const slide_rt *rt, uint32_t index, int which, int r,
                        int64_t now);

/* Updates the tile outcomes per second over the last 10 s (once a second). */
void coord_stats_rate(gs_coordinator *c, int64_t now);

/* Rebuilds the snapshot gs_coordinator_stats_get copies (under snap_lock). */
void coord_stats_refresh(gs_coordinator *c);

/* Refreshes the snapshot, publishes stats.coordinator and calls options.on_tick with it. */
void coord_stats_publish(gs_coordinator *c);

#endif
