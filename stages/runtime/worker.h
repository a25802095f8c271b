/*
 * worker: the loop every stage worker runs against the coordinator (PROTOCOL.md §5).
 *
 * A gs_worker connects a DEALER to the coordinator's `work` endpoint, says WorkerHello, waits
 * for WorkerWelcome (a refusal ends gs_worker_run with -1 and the reason), announces its free
 * job slots with WorkerReady, and then, from its main loop:
 *   - takes the jobs of its stage (PlanJob for foreground, TileJob for tiler, ScreenTask for
 *     screener, ReportJob for reporter) and runs the stage's handler on them in `threads`
 *     handler threads (one job per thread: threads = job slots), sending back whatever results
 *     the handler emits and a fresh WorkerReady after each finished job;
 *   - sends WorkerHeartbeat every heartbeat_ms with its progress, the jobs in hand and its
 *     StageStats (items/s and busy fraction over the last 10 s, queue depth, counters, memory),
 *     and calls the config's on_tick hook there (a stage main sends WATCHDOG=1 / STATUS from it);
 *   - counts and drops what is malformed or of the wrong type (gs_transport does the framing,
 *     the worker checks the job's fence and that the job is for its stage);
 *   - says hello again when it hears nothing from the coordinator for liveness x heartbeat_ms or
 *     sees a new coordinator_id, abandoning its jobs (their later results are discarded: they
 *     would be stale by the fence anyway);
 *   - stops gracefully when *config.stop becomes non-zero (a SIGTERM handler sets it): it sends
 *     WorkerReady{0}, hands back the jobs not started, tells running handlers to stop
 *     (gs_worker_job_stopping), waits for them up to stop_grace_ms, sends their results and a
 *     WorkerGoodbye listing what it hands back (jobs, and the unsent tiles a handler reported),
 *     and returns 0.
 *
 * Handlers are plain library functions of the stage (stages/handlers/foreground:
 * gs_foreground_handle) and see a gs_worker_job: the job message, a way to emit results, a stop
 * flag, progress and hand-back. gs_worker_job_run_local() runs a handler without any socket, for
 * tests and for callers that want one result synchronously.
 *
 * Blur and infer workers take tiles instead of jobs: the worker binds their tile inbox (a PULL
 * at tile_inbox_bind, announced in the hello), and the main loop reads at most one batch ahead
 * (up to batch_size tiles that are waiting, from any slides) only while no batch is queued, so
 * backpressure reaches the tilers. Each tile is checked (fence, a header for this stage:
 * InferJob for infer, BlurJob for blur) and a batch becomes a job whose handler reads the tiles
 * with gs_worker_job_tile (pixels in place, no copy) and emits one TileResult / BlurResult per
 * tile. On a graceful stop a batch not started (or handed back) is listed in the goodbye, one
 * HandedBack per slide attempt with its tile indices.
 */
#ifndef GS_STAGES_RUNTIME_WORKER_H
#define GS_STAGES_RUNTIME_WORKER_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/gastroscreen.pb-c.h"
#include "stages/runtime/transport.h"

typedef struct gs_worker gs_worker;
typedef struct gs_worker_job gs_worker_job;

/* Serves one job, in a handler thread. Emits results with gs_worker_job_emit (a job may emit
 * several: a tiler's failed tiles and its TileJobDone). Returns 0 when done, -1 with the error
 * when the job failed in a way its results could not say (counted in StageStats.errors). */
typedef int gs_worker_handler(gs_worker_job *job, void *ud);

/* Called from the main loop once per heartbeat with the stats just sent (for sd_notify). */
typedef void gs_worker_tick(const Gastroscreen__V1__StageStats *stats, void *ud);

typedef struct {
    Gastroscreen__V1__Stage stage;
    const char *work_endpoint;   /* the coordinator's `work` endpoint, e.g. "tcp://coord:5554" */
    const char *instance;        /* systemd instance name, "1" by default */
    const char *version;         /* reported in hello; NULL = GS_VERSION or "" */
    const char *tile_inbox_bind; /* blur / infer: where to bind the tile inbox, e.g.
                                    "tcp://0.0.0.0:*" (any port), "ipc:///run/..." or
                                    "inproc://gs-tiles-infer-1" */
    const char *tile_inbox;      /* the address announced to tilers; NULL = the bound endpoint,
                                    with a wildcard address replaced by advertise_host */
    const char *advertise_host;  /* NULL = this host's name */
    int tile_hwm;                /* tile inbox RCVHWM; 0 = 8 */
    const Gastroscreen__V1__ModelProvenance *model; /* model-using stages: the loaded bundle */
    int threads;                                    /* handler threads = job slots, >= 1 */
    int omp_threads;   /* OpenMP threads a handler's kernels may use (omp_set_num_threads in each
                          handler thread); 0 = the process default (OMP_NUM_THREADS, else every
                          core). See gs_worker_omp_threads(). */
    int batch_size;    /* reported in hello; the handler decides what it means */
    int heartbeat_ms;  /* until the welcome says otherwise; 1000 by default */
    int liveness;      /* missed heartbeats before the coordinator counts as lost; 5 */
    int stop_grace_ms; /* time running handlers get after a stop; 5000 by default */
    gs_worker_handler *handler;
    void *handler_ud;
    gs_worker_tick *on_tick; /* may be NULL */
    void *tick_ud;
    volatile sig_atomic_t *stop; /* non-zero: stop gracefully; may be NULL */
    void *zmq_ctx;               /* the context to use (inproc:// needs the coordinator's); NULL =
                                    a context of the worker's own */
    int quiet;                   /* no log lines (tests that send floods of garbage) */
    /* CURVE client keys of the work socket (own pair and the coordinator's public key;
     * stages/runtime/keys); NULL = plain. Used on tcp:// only; copied into the socket. */
    const gs_curve_keys *curve;
    /* 1: a tcp:// tile inbox is a CURVE server with curve's key pair (curve required, and a ZAP
     * handler running in zmq_ctx: stages/runtime/keys admits tiler keys only); its public key
     * goes to the coordinator in WorkerHello.tile_inbox_key for the tilers (PROTOCOL.md §2). */
    int inbox_curve;
} gs_worker_config;

/* The omp_threads a stage's worker with `threads` handler threads should use. Infer, whose
 * network is the service's work, shares the process's OpenMP threads (OMP_NUM_THREADS, else
 * every core) among its handler threads: 0 (all of them) for one handler thread, else
 * max(1, all / threads), so two handlers never run two full teams on the same cores. Every
 * other stage gets 1: its kernels (resampling a tile or thumbnail, the focus measure, the small
 * networks) are short, and a team costs more than it saves there: libgomp's idle threads
 * keep spinning after each parallel region, CPU taken from the infer stage on shared cores
 * (perf showed the reporter spending more time in libgomp than in its resize). */
int gs_worker_omp_threads(Gastroscreen__V1__Stage stage, int threads);

/* Fills *c with the defaults above (stage and endpoint unset, one thread). */
void gs_worker_config_default(gs_worker_config *c);

/* Creates the worker: its DEALER (connected), its handler threads. The config's strings and
 * model are copied. Returns the worker (caller destroys), or NULL with the error (bad config,
 * a stage that takes no jobs and has no tile_inbox, socket errors). */
gs_worker *gs_worker_new(const gs_worker_config *c);

/* Runs the loop until a graceful stop (returns 0), a refusal by the coordinator (-1, error
 * "refused by the coordinator: <reason>") or a fatal socket error (-1). Call once. */
int gs_worker_run(gs_worker *w);

/* Stops and joins the handler threads (a handler still running is waited for: handlers must
 * watch gs_worker_job_stopping), closes the socket and frees everything; sets *w to NULL. */
void gs_worker_destroy(gs_worker **w);

/* "<stage>.<instance>@<host>:<pid>". Owned by the worker. */
const char *gs_worker_id(const gs_worker *w);

/* The job message (a WorkMessage with one of the job bodies; NULL for a tile batch). Owned by
 * the job. */
const Gastroscreen__V1__WorkMessage *gs_worker_job_message(const gs_worker_job *j);

/* The worker's id, for results' worker_id. Owned by the worker. */
const char *gs_worker_job_worker_id(const gs_worker_job *j);

/* Tile stages: the number of tiles in the job's batch (0 for other jobs), and tile i's header
 * with its pixels (read in place; owned by the job). */
size_t gs_worker_job_tile_count(const gs_worker_job *j);
const Gastroscreen__V1__TileHeader *gs_worker_job_tile(const gs_worker_job *j, size_t i,
                                                       const uint8_t **pixels, size_t *len);

/* The tile inbox address announced in the hello (tile stages; "" otherwise). */
const char *gs_worker_tile_inbox(const gs_worker *w);

/* Index of the handler thread running the job (0..threads-1), for per-thread state. */
int gs_worker_job_thread(const gs_worker_job *j);

/* Queues a result (a WorkMessage envelope, packed at once: the caller keeps ownership) to be
 * sent to the coordinator. Thread-safe. Returns 0, or -1 when out of memory. */
int gs_worker_job_emit(gs_worker_job *j, const Gastroscreen__V1__WorkMessage *result);

/* 1 once the worker is stopping (or abandoned the job): the handler should finish quickly or
 * stop and report what it did not do with gs_worker_job_hand_back. */
int gs_worker_job_stopping(const gs_worker_job *j);

/* Adds items finished (tiles, slides) to the worker's progress; a job whose handler never
 * calls this counts as one item. */
void gs_worker_job_progress(gs_worker_job *j, uint64_t items);

/* Hands the job back instead of finishing it: it goes into WorkerGoodbye with `unsent` (a
 * tiler's tiles not sent; may be NULL/0; for a tile batch the whole batch is handed back and
 * the list is ignored). Copies the list. 0, or -1 when out of memory. */
int gs_worker_job_hand_back(gs_worker_job *j, const uint32_t *unsent, size_t n);

/* A job outside any worker: runs `handler` on `message` (a WorkMessage job envelope, copied)
 * in the calling thread. Returns the job (caller destroys with gs_worker_job_destroy_local) or
 * NULL when out of memory; *rc receives the handler's return value. worker_id may be NULL. */
gs_worker_job *gs_worker_job_run_local(gs_worker_handler *handler, void *ud,
                                       const Gastroscreen__V1__WorkMessage *message,
                                       const char *worker_id, int *rc);

/* Results emitted by a local job, unpacked (owned by the job); i < count. */
size_t gs_worker_job_result_count(const gs_worker_job *j);
const Gastroscreen__V1__WorkMessage *gs_worker_job_result(const gs_worker_job *j, size_t i);

/* 1 if the handler handed the local job back; the unsent list is returned in *unsent / *n. */
int gs_worker_job_handed_back(const gs_worker_job *j, const uint32_t **unsent, size_t *n);

void gs_worker_job_destroy_local(gs_worker_job **j);

#endif
