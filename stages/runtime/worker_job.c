/*
 * worker_job: the job object a handler sees (stages/runtime/worker.h, "gs_worker_job") and the
 * handler threads that run queued jobs; the worker's loop (worker.c) queues, reaps and reports
 * them. See worker_internal.h.
 */
#include "stages/runtime/worker_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <omp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "ops/error.h"
#include "proto/vocab.h"
#include "stages/runtime/fileio.h"
#include "stages/runtime/log.h"

/* ---- jobs ------------------------------------------------------------------------------- */

/* The JobKind of a job body (JobRef.kind in heartbeats and hand-backs), or UNSPECIFIED for a
 * body that is not a job. */
static Gastroscreen__V1__JobKind job_kind(Gastroscreen__V1__WorkMessage__BodyCase body)
{
    switch (body) {
    case GASTROSCREEN__V1__WORK_MESSAGE__BODY_PLAN_JOB:
        return GASTROSCREEN__V1__JOB_KIND__JOB_KIND_PLAN;
    case GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_JOB:
        return GASTROSCREEN__V1__JOB_KIND__JOB_KIND_TILES;
    case GASTROSCREEN__V1__WORK_MESSAGE__BODY_SCREEN_TASK:
        return GASTROSCREEN__V1__JOB_KIND__JOB_KIND_SCREEN;
    case GASTROSCREEN__V1__WORK_MESSAGE__BODY_REPORT_JOB:
        return GASTROSCREEN__V1__JOB_KIND__JOB_KIND_REPORT;
    default:
        return GASTROSCREEN__V1__JOB_KIND__JOB_KIND_UNSPECIFIED;
    }
}

/* Takes the fence and kind out of a job envelope; -1 with the error when it is not a job or
 * its fence is malformed (PROTOCOL.md §14 step 6). */
int worker_job_identity(const Gastroscreen__V1__WorkMessage *m, gs_worker_job *j)
{
    Gastroscreen__V1__JobKind kind = job_kind(m->body_case);
    if (kind == GASTROSCREEN__V1__JOB_KIND__JOB_KIND_UNSPECIFIED)
        return gs_error_set("not a job (body %d)", (int)m->body_case);
    j->kind = kind;
    gs_fence f;
    if (gs_fence_of(&m->base, &f) != 0 || !gs_fence_ok(&f))
        return gs_error_set("job without a well-formed slide_id and attempt");
    snprintf(j->slide_id, sizeof j->slide_id, "%s", f.slide_id);
    j->attempt = f.attempt;
    j->job_id = f.job_id;
    return 0;
}

/* A job owning a copy of `m` (packed and unpacked again: protobuf-c has no deep copy). */
gs_worker_job *worker_job_new(const Gastroscreen__V1__WorkMessage *m)
{
    gs_worker_job *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    size_t len = protobuf_c_message_get_packed_size(&m->base);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) {
        free(j);
        return NULL;
    }
    protobuf_c_message_pack(&m->base, buf);
    j->msg = gastroscreen__v1__work_message__unpack(NULL, len, buf);
    free(buf);
    if (!j->msg) {
        free(j);
        return NULL;
    }
    atomic_init(&j->stopping, 0);
    atomic_init(&j->items, 0);
    return j;
}

void worker_job_free(gs_worker_job *j)
{
    if (!j)
        return;
    for (size_t i = 0; i < j->n_tiles; i++)
        gs_inbound_release(&j->tiles[i]);
    free(j->tiles);
    if (j->msg)
        gastroscreen__v1__work_message__free_unpacked(j->msg, NULL);
    for (size_t i = 0; i < j->n_results; i++)
        gastroscreen__v1__work_message__free_unpacked(j->results[i], NULL);
    free(j->results);
    free(j->unsent);
    free(j);
}

const Gastroscreen__V1__WorkMessage *gs_worker_job_message(const gs_worker_job *j)
{
    return j->msg;
}

size_t gs_worker_job_tile_count(const gs_worker_job *j)
{
    return j->n_tiles;
}

const Gastroscreen__V1__TileHeader *gs_worker_job_tile(const gs_worker_job *j, size_t i,
                                                       const uint8_t **pixels, size_t *len)
{
    GS_ASSERT(i < j->n_tiles);
    if (pixels)
        *pixels = j->tiles[i].pixels;
    if (len)
        *len = j->tiles[i].pixels_len;
    return j->tiles[i].msg.tile->tile;
}

const char *gs_worker_job_worker_id(const gs_worker_job *j)
{
    return j->w ? j->w->id : "";
}

int gs_worker_job_thread(const gs_worker_job *j)
{
    return j->thread;
}

int gs_worker_job_stopping(const gs_worker_job *j)
{
    return atomic_load(&((gs_worker_job *)j)->stopping);
}

void gs_worker_job_progress(gs_worker_job *j, uint64_t items)
{
    atomic_fetch_add(&j->items, items);
}

int gs_worker_job_hand_back(gs_worker_job *j, const uint32_t *unsent, size_t n)
{
    uint32_t *copy = NULL;
    if (n) {
        copy = malloc(n * sizeof *copy);
        if (!copy)
            return gs_error_set("out of memory handing back %zu tiles", n);
        memcpy(copy, unsent, n * sizeof *copy);
    }
    /* The main loop may be reading the list for a goodbye at the end of the grace period. */
    if (j->w)
        pthread_mutex_lock(&j->w->mu);
    free(j->unsent);
    j->unsent = copy;
    j->n_unsent = n;
    j->handed_back = 1;
    if (j->w)
        pthread_mutex_unlock(&j->w->mu);
    return 0;
}

static void notify(gs_worker *w)
{
    uint64_t one = 1;
    ssize_t r = write(w->efd, &one, sizeof one);
    (void)r; /* the counter saturating still leaves the fd readable */
}

int gs_worker_job_emit(gs_worker_job *j, const Gastroscreen__V1__WorkMessage *result)
{
    size_t len = protobuf_c_message_get_packed_size(&result->base);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return gs_error_set("out of memory for a %zu-byte result", len);
    protobuf_c_message_pack(&result->base, buf);
    if (!j->w) {
        Gastroscreen__V1__WorkMessage *copy =
            gastroscreen__v1__work_message__unpack(NULL, len, buf);
        free(buf);
        Gastroscreen__V1__WorkMessage **grown =
            copy ? realloc(j->results, (j->n_results + 1) * sizeof *grown) : NULL;
        if (!grown) {
            if (copy)
                gastroscreen__v1__work_message__free_unpacked(copy, NULL);
            return gs_error_set("out of memory for a result");
        }
        j->results = grown;
        j->results[j->n_results++] = copy;
        return 0;
    }
    result_buf *r = malloc(sizeof *r);
    if (!r) {
        free(buf);
        return gs_error_set("out of memory for a result");
    }
    *r = (result_buf){NULL, buf, len, j->generation};
    gs_worker *w = j->w;
    pthread_mutex_lock(&w->mu);
    if (w->res_tail)
        w->res_tail->next = r;
    else
        w->res_head = r;
    w->res_tail = r;
    pthread_mutex_unlock(&w->mu);
    notify(w);
    return 0;
}

gs_worker_job *gs_worker_job_run_local(gs_worker_handler *handler, void *ud,
                                       const Gastroscreen__V1__WorkMessage *message,
                                       const char *worker_id, int *rc)
{
    (void)worker_id;
    gs_worker_job *j = worker_job_new(message);
    if (!j) {
        gs_error_set("out of memory for a job");
        return NULL;
    }
    worker_job_identity(j->msg, j); /* fence fields for the handler's convenience; not enforced */
    j->state = JOB_RUNNING;
    *rc = handler(j, ud);
    j->state = JOB_DONE;
    return j;
}

size_t gs_worker_job_result_count(const gs_worker_job *j)
{
    return j->n_results;
}

const Gastroscreen__V1__WorkMessage *gs_worker_job_result(const gs_worker_job *j, size_t i)
{
    GS_ASSERT(i < j->n_results);
    return j->results[i];
}

int gs_worker_job_handed_back(const gs_worker_job *j, const uint32_t **unsent, size_t *n)
{
    *unsent = j->unsent;
    *n = j->n_unsent;
    return j->handed_back;
}

void gs_worker_job_destroy_local(gs_worker_job **j)
{
    if (!j || !*j)
        return;
    worker_job_free(*j);
    *j = NULL;
}

/* ---- handler threads --------------------------------------------------------------------- */

void *worker_handler_thread(void *p)
{
    thread_arg *a = p;
    gs_worker *w = a->w;
    int index = a->index;
    free(a);
    if (w->cfg.omp_threads > 0)
        omp_set_num_threads(w->cfg.omp_threads); /* this thread's setting only */
    pthread_mutex_lock(&w->mu);
    for (;;) {
        gs_worker_job *j = NULL;
        for (gs_worker_job *k = w->jobs; k; k = k->next)
            if (k->state == JOB_QUEUED)
                j = k; /* the list is newest first: take the oldest */
        if (!j) {
            if (w->shutdown)
                break;
            pthread_cond_wait(&w->cv, &w->mu);
            continue;
        }
        j->state = JOB_RUNNING;
        j->thread = index;
        j->started_us = gs_mono_us();
        pthread_mutex_unlock(&w->mu);
        gs_error_clear();
        int rc = w->cfg.handler(j, w->cfg.handler_ud);
        if (rc < 0)
            worker_log_slide(w, j->slide_id, "job %" PRIu64 " of slide %s failed: %s", j->job_id,
                             j->slide_id, gs_error_get());
        pthread_mutex_lock(&w->mu);
        j->rc = rc;
        j->state = JOB_DONE;
        w->busy_us_done += (uint64_t)(gs_mono_us() - j->started_us);
        notify(w);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}
