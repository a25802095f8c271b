/*
 * worker_internal: what stages/runtime/worker.c (the worker: sockets, the main loop, stats,
 * goodbye) and stages/runtime/worker_job.c (the job object handlers see, and the handler
 * threads that run jobs) share. Private to those two files; everything else uses worker.h.
 */
#ifndef GS_STAGES_RUNTIME_WORKER_INTERNAL_H
#define GS_STAGES_RUNTIME_WORKER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "proto/vocab.h"
#include "stages/runtime/worker.h"

/* Stats windows: rates and busy fraction are over the last 10 s (StageStats). */
#define STATS_WINDOW_US (10LL * 1000 * 1000)
#define SAMPLES 64

enum job_state { JOB_QUEUED, JOB_RUNNING, JOB_DONE };

typedef struct result_buf {
    struct result_buf *next;
    uint8_t *data;
    size_t len;
    uint64_t generation;
} result_buf;

struct gs_worker_job {
    gs_worker *w; /* NULL for a local job */
    Gastroscreen__V1__WorkMessage *msg;
    char slide_id[GS_SLIDE_ID_LEN + 1];
    uint32_t attempt;
    uint64_t job_id;
    Gastroscreen__V1__JobKind kind;
    uint64_t generation;
    enum job_state state;
    int thread;
    atomic_int stopping;
    atomic_uint_fast64_t items;
    int rc;
    int64_t started_us;
    int handed_back;
    uint32_t *unsent;
    size_t n_unsent;
    struct gs_worker_job *next;
    /* tile stages: the batch, validated, pixels in place */
    gs_inbound *tiles;
    size_t n_tiles;
    /* local jobs: results unpacked */
    Gastroscreen__V1__WorkMessage **results;
    size_t n_results;
};

typedef struct {
    int64_t t_us;
    uint64_t progress;
    uint64_t busy_us;
} sample;

struct gs_worker {
    gs_worker_config cfg;
    char endpoint[1024], instance[64], version[64], tile_inbox[1024], host[256], id[512];
    char inbox_key[41]; /* the tile inbox's CURVE public key (Z85); "" when plain */
    Gastroscreen__V1__ModelProvenance *model; /* unpacked copy, or NULL */
    void *ctx;
    int own_ctx;
    gs_transport *dealer;
    gs_transport *inbox; /* tile stages */
    int efd;
    pthread_t *threads;
    int nthreads;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* Under mu: */
    gs_worker_job *jobs; /* every job in hand: queued, running, finished but not reaped */
    result_buf *res_head, *res_tail;
    int shutdown;
    uint64_t busy_us_done;
    /* Main thread only: */
    uint64_t generation;
    gs_worker_job *handed; /* jobs to list in the goodbye */
    uint64_t progress, errors, malformed, wrong_type, dropped_jobs;
    int64_t started_unix_ms;
    sample samples[SAMPLES];
    int nsamples;
    char coordinator_id[128];
    int welcomed;
    int heartbeat_ms, liveness;
};

typedef struct {
    gs_worker *w;
    int index;
} thread_arg;

/* A job owning a copy of m (packed and unpacked again: protobuf-c has no deep copy), or NULL
 * when out of memory. Free with worker_job_free. */
gs_worker_job *worker_job_new(const Gastroscreen__V1__WorkMessage *m);
void worker_job_free(gs_worker_job *j);

/* Takes the fence and kind out of a job envelope into j; -1 with the error when it is not a
 * job or its fence is malformed (PROTOCOL.md §14 step 6). */
int worker_job_identity(const Gastroscreen__V1__WorkMessage *m, gs_worker_job *j);

/* A handler thread's body (p: a malloc'd thread_arg it frees): runs queued jobs until the
 * worker shuts down. */
void *worker_handler_thread(void *p);

/* A log line about one slide (carries SLIDE_ID under journald). */
void worker_log_slide(const gs_worker *w, const char *slide, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
