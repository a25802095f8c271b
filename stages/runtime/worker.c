#include "stages/runtime/worker.h"
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

#ifndef GS_VERSION
#define GS_VERSION ""
#endif

/* A hello that could not be sent (no connection yet: ZMQ_IMMEDIATE) is retried this often. */
#define HELLO_RETRY_US (100 * 1000)
/* The loop wakes at least this often to notice the stop flag between signals. */
#define MAX_POLL_MS 100

/* One log line of the worker (stages/runtime/log: under journald with STAGE and, when slide is not
 * NULL, SLIDE_ID). */
static void vlog_w(const gs_worker *w, const char *slide, const char *fmt, va_list ap)
{
    if (w->cfg.quiet)
        return;
    char ident[64], msg[GS_LOG_MESSAGE_MAX + 1];
    snprintf(ident, sizeof ident, "gastroscreen-%s", gs_stage_name(w->cfg.stage));
    vsnprintf(msg, sizeof msg, fmt, ap);
    gs_log_line(ident, gs_stage_name(w->cfg.stage), slide, GS_LOG_INFO, msg);
}

static void logf_w(const gs_worker *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_w(const gs_worker *w, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog_w(w, NULL, fmt, ap);
    va_end(ap);
}

/* A line about one slide (carries SLIDE_ID under journald). */
void worker_log_slide(const gs_worker *w, const char *slide, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog_w(w, slide, fmt, ap);
    va_end(ap);
}

void gs_worker_config_default(gs_worker_config *c)
{
    memset(c, 0, sizeof *c);
    c->instance = "1";
    c->threads = 1;
    c->batch_size = 1;
    c->heartbeat_ms = 1000;
    c->liveness = 5;
    c->stop_grace_ms = 5000;
}

int gs_worker_omp_threads(Gastroscreen__V1__Stage stage, int threads)
{
    if (stage != GASTROSCREEN__V1__STAGE__STAGE_INFER)
        return 1;
    if (threads <= 1)
        return 0;
    int all = omp_get_max_threads();
    return all / threads > 1 ? all / threads : 1;
}

/* The job body a stage takes on `work`, or NOT_SET for stages that take none. */
static Gastroscreen__V1__WorkMessage__BodyCase stage_job_body(Gastroscreen__V1__Stage s)
{
    switch (s) {
    case GASTROSCREEN__V1__STAGE__STAGE_FOREGROUND:
        return GASTROSCREEN__V1__WORK_MESSAGE__BODY_PLAN_JOB;
    case GASTROSCREEN__V1__STAGE__STAGE_TILER:
        return GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_JOB;
    case GASTROSCREEN__V1__STAGE__STAGE_SCREENER:
        return GASTROSCREEN__V1__WORK_MESSAGE__BODY_SCREEN_TASK;
    case GASTROSCREEN__V1__STAGE__STAGE_REPORTER:
        return GASTROSCREEN__V1__WORK_MESSAGE__BODY_REPORT_JOB;
    default:
        return GASTROSCREEN__V1__WORK_MESSAGE__BODY__NOT_SET;
    }
}

/* ---- the worker -------------------------------------------------------------------------- */

static int copy_str(char *dst, size_t n, const char *src, const char *what)
{
    if (!src)
        src = "";
    if (strlen(src) >= n)
        return gs_error_set("worker: %s too long", what);
    memcpy(dst, src, strlen(src) + 1);
    return 0;
}

/* Binds the tile inbox and works out the address tilers must connect to. */
static int bind_inbox(gs_worker *w, const gs_worker_config *c)
{
    gs_transport_options o = {c->tile_hwm > 0 ? c->tile_hwm : 8, "tile inbox", c->quiet};
    if (c->inbox_curve && !c->curve)
        return gs_error_set("worker: a CURVE tile inbox without keys");
    w->inbox = gs_transport_new_curve(w->ctx, GS_CHANNEL_TILES, ZMQ_PULL, GS_BIND,
                                      c->tile_inbox_bind, &o, c->inbox_curve ? c->curve : NULL);
    if (!w->inbox)
        return -1;
    if (gs_transport_is_curve(w->inbox) &&
        copy_str(w->inbox_key, sizeof w->inbox_key, c->curve->public_key, "inbox key") < 0)
        return -1;
    if (w->tile_inbox[0])
        return 0;
    const char *bound = gs_transport_endpoint(w->inbox);
    const char *any = strstr(bound, "://0.0.0.0:");
    if (any) {
        int n = snprintf(w->tile_inbox, sizeof w->tile_inbox, "%.*s://%s:%s", (int)(any - bound),
                         bound, c->advertise_host ? c->advertise_host : w->host, any + 11);
        if (n < 0 || (size_t)n >= sizeof w->tile_inbox)
            return gs_error_set("worker: tile inbox address too long");
        return 0;
    }
    return copy_str(w->tile_inbox, sizeof w->tile_inbox, bound, "tile inbox");
}

const char *gs_worker_tile_inbox(const gs_worker *w)
{
    return w->tile_inbox;
}

gs_worker *gs_worker_new(const gs_worker_config *c)
{
    if (!c->work_endpoint || !c->work_endpoint[0]) {
        gs_error_set("worker: no work endpoint");
        return NULL;
    }
    if (!gs_stage_name(c->stage) || c->stage == GASTROSCREEN__V1__STAGE__STAGE_COORDINATOR) {
        gs_error_set("worker: stage %d is not a worker stage", (int)c->stage);
        return NULL;
    }
    int takes_jobs = stage_job_body(c->stage) != GASTROSCREEN__V1__WORK_MESSAGE__BODY__NOT_SET;
    if (!takes_jobs && (!c->tile_inbox_bind || !c->tile_inbox_bind[0])) {
        gs_error_set("worker: the %s stage needs a tile inbox to bind", gs_stage_name(c->stage));
        return NULL;
    }
    if (!c->handler) {
        gs_error_set("worker: the %s stage needs a job handler", gs_stage_name(c->stage));
        return NULL;
    }
    if (c->threads < 1 || c->threads > 256 || c->heartbeat_ms < 10 || c->liveness < 1 ||
        c->stop_grace_ms < 0 || c->omp_threads < 0 || c->omp_threads > 1024) {
        gs_error_set("worker: threads %d (1..256), OpenMP threads %d (0..1024), heartbeat %d ms "
                     "(>= 10), liveness %d (>= 1)",
                     c->threads, c->omp_threads, c->heartbeat_ms, c->liveness);
        return NULL;
    }
    gs_worker *w = calloc(1, sizeof *w);
    if (!w) {
        gs_error_set("out of memory for a worker");
        return NULL;
    }
    w->cfg = *c;
    w->efd = -1;
    if (copy_str(w->endpoint, sizeof w->endpoint, c->work_endpoint, "endpoint") < 0 ||
        copy_str(w->instance, sizeof w->instance, c->instance ? c->instance : "1", "instance") <
            0 ||
        copy_str(w->version, sizeof w->version, c->version ? c->version : GS_VERSION, "version") <
            0 ||
        copy_str(w->tile_inbox, sizeof w->tile_inbox, c->tile_inbox, "tile inbox") < 0)
        goto free_worker;
    w->cfg.work_endpoint = w->endpoint;
    w->cfg.instance = w->instance;
    w->cfg.version = w->version;
    w->cfg.tile_inbox = w->tile_inbox;
    if (gethostname(w->host, sizeof w->host) < 0)
        snprintf(w->host, sizeof w->host, "localhost");
    w->host[sizeof w->host - 1] = '\0';
    snprintf(w->id, sizeof w->id, "%s.%s@%s:%ld", gs_stage_name(c->stage), w->instance, w->host,
             (long)getpid());
    if (c->model) {
        size_t len = protobuf_c_message_get_packed_size(&c->model->base);
        uint8_t *buf = malloc(len ? len : 1);
        if (buf) {
            protobuf_c_message_pack(&c->model->base, buf);
            w->model = gastroscreen__v1__model_provenance__unpack(NULL, len, buf);
            free(buf);
        }
        if (!w->model) {
            gs_error_set("out of memory copying the model provenance");
            goto free_worker;
        }
    }
    w->cfg.model = NULL;
    w->heartbeat_ms = c->heartbeat_ms;
    w->liveness = c->liveness;
    w->started_unix_ms = gs_unix_ms();

    w->ctx = c->zmq_ctx;
    if (!w->ctx) {
        w->ctx = zmq_ctx_new();
        w->own_ctx = 1;
        if (!w->ctx) {
            gs_error_set("zmq_ctx_new: %s", zmq_strerror(errno));
            goto free_worker;
        }
    }
    gs_transport_options to = {0, "work", c->quiet};
    w->dealer = gs_transport_new_curve(w->ctx, GS_CHANNEL_WORK, ZMQ_DEALER, GS_CONNECT, w->endpoint,
                                       &to, c->curve);
    if (!w->dealer)
        goto free_worker;
    if (!takes_jobs && bind_inbox(w, c) < 0)
        goto free_worker;
    w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->efd < 0) {
        gs_error_set("eventfd: %s", strerror(errno));
        goto free_worker;
    }
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    {
        w->threads = calloc((size_t)c->threads, sizeof *w->threads);
        if (!w->threads) {
            gs_error_set("out of memory for threads");
            goto destroy_sync;
        }
        for (int i = 0; i < c->threads; i++) {
            thread_arg *a = malloc(sizeof *a);
            if (!a || (a->w = w, a->index = i,
                       pthread_create(&w->threads[i], NULL, worker_handler_thread, a) != 0)) {
                free(a);
                gs_error_set("cannot start handler thread %d", i);
                goto stop_threads;
            }
            w->nthreads++;
        }
    }
    return w;

stop_threads:
    pthread_mutex_lock(&w->mu);
    w->shutdown = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    for (int i = 0; i < w->nthreads; i++)
        pthread_join(w->threads[i], NULL);
    free(w->threads);
destroy_sync:
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
free_worker:
    if (w->efd >= 0)
        close(w->efd);
    gs_transport_destroy(&w->inbox);
    gs_transport_destroy(&w->dealer);
    if (w->own_ctx)
        zmq_ctx_term(w->ctx);
    if (w->model)
        gastroscreen__v1__model_provenance__free_unpacked(w->model, NULL);
    free(w);
    return NULL;
}

const char *gs_worker_id(const gs_worker *w)
{
    return w->id;
}

void gs_worker_destroy(gs_worker **wp)
{
    if (!wp || !*wp)
        return;
    gs_worker *w = *wp;
    pthread_mutex_lock(&w->mu);
    w->shutdown = 1;
    for (gs_worker_job *j = w->jobs; j; j = j->next)
        atomic_store(&j->stopping, 1);
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    for (int i = 0; i < w->nthreads; i++)
        pthread_join(w->threads[i], NULL);
    free(w->threads);
    while (w->jobs) {
        gs_worker_job *n = w->jobs->next;
        worker_job_free(w->jobs);
        w->jobs = n;
    }
    while (w->handed) {
        gs_worker_job *n = w->handed->next;
        worker_job_free(w->handed);
        w->handed = n;
    }
    while (w->res_head) {
        result_buf *n = w->res_head->next;
        free(w->res_head->data);
        free(w->res_head);
        w->res_head = n;
    }
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    close(w->efd);
    gs_transport_destroy(&w->inbox);
    gs_transport_destroy(&w->dealer);
    if (w->own_ctx)
        zmq_ctx_term(w->ctx);
    if (w->model)
        gastroscreen__v1__model_provenance__free_unpacked(w->model, NULL);
    free(w);
    *wp = NULL;
}

/* ---- sending ----------------------------------------------------------------------------- */

static int send_work(gs_worker *w, Gastroscreen__V1__WorkMessage *m)
{
    m->protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    return gs_transport_send(w->dealer, NULL, &m->base, GS_SEND_DONTWAIT);
}

static int send_hello(gs_worker *w)
{
    Gastroscreen__V1__WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    Gastroscreen__V1__WorkerHello h = GASTROSCREEN__V1__WORKER_HELLO__INIT;
    h.worker_id = w->id;
    h.stage = w->cfg.stage;
    h.host = w->host;
    h.pid = (uint32_t)getpid();
    h.version = w->version;
    h.tile_inbox = w->tile_inbox;
    h.tile_inbox_key = w->inbox_key;
    h.threads = (uint32_t)w->cfg.threads;
    h.batch_size = (uint32_t)w->cfg.batch_size;
    h.model = w->model;
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_HELLO;
    m.hello = &h;
    return send_work(w, &m);
}

/* Jobs of the current generation in hand (queued, running, or finished and not reaped). */
static int jobs_in_hand(gs_worker *w)
{
    int n = 0;
    pthread_mutex_lock(&w->mu);
    for (gs_worker_job *j = w->jobs; j; j = j->next)
        n += j->generation == w->generation;
    pthread_mutex_unlock(&w->mu);
    return n;
}

static int send_ready(gs_worker *w, int stopping)
{
    if (stage_job_body(w->cfg.stage) == GASTROSCREEN__V1__WORK_MESSAGE__BODY__NOT_SET)
        return 0;
    Gastroscreen__V1__WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    Gastroscreen__V1__WorkerReady r = GASTROSCREEN__V1__WORKER_READY__INIT;
    int free_slots = stopping ? 0 : w->cfg.threads - jobs_in_hand(w);
    r.worker_id = w->id;
    r.free_slots = (uint32_t)(free_slots > 0 ? free_slots : 0);
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_READY;
    m.ready = &r;
    return send_work(w, &m);
}

/* Resident and peak resident memory from /proc (0 when unavailable). */
static void memory_use(uint64_t *rss, uint64_t *peak)
{
    *rss = *peak = 0;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return;
    char line[256];
    unsigned long long kb;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "VmRSS: %llu kB", &kb) == 1)
            *rss = kb * 1024;
        else if (sscanf(line, "VmHWM: %llu kB", &kb) == 1)
            *peak = kb * 1024;
    }
    fclose(f);
}

static void fill_stats(gs_worker *w, Gastroscreen__V1__StageStats *s, int64_t now)
{
    uint64_t busy = 0;
    int depth = 0;
    /* Progress includes the items of jobs still running: it must advance while busy. */
    uint64_t progress = w->progress;
    pthread_mutex_lock(&w->mu);
    busy = w->busy_us_done;
    for (gs_worker_job *j = w->jobs; j; j = j->next) {
        depth++;
        if (j->state == JOB_RUNNING)
            busy += (uint64_t)(now - j->started_us);
        progress += atomic_load(&j->items); /* reaping moves them into w->progress */
    }
    pthread_mutex_unlock(&w->mu);
    /* Keep the samples of the last window; the oldest one within it is the reference. */
    if (w->nsamples == SAMPLES) {
        memmove(w->samples, w->samples + 1, (SAMPLES - 1) * sizeof *w->samples);
        w->nsamples--;
    }
    w->samples[w->nsamples++] = (sample){now, progress, busy};
    int first = 0;
    while (first < w->nsamples - 1 && now - w->samples[first].t_us > STATS_WINDOW_US)
        first++;
    const sample *ref = &w->samples[first];
    double dt = (double)(now - ref->t_us) / 1e6;

    const gs_transport_counters *tc = gs_transport_counters_get(w->dealer);
    s->stage = w->cfg.stage;
    s->instance_id = w->id;
    s->host = w->host;
    s->started_unix_ms = w->started_unix_ms;
    if (dt > 0) {
        s->tiles_per_second = (double)(progress - ref->progress) / dt;
        double slots = w->nthreads > 0 ? w->nthreads : 1;
        double bf = (double)(busy - ref->busy_us) / 1e6 / dt / slots;
        s->busy_fraction = bf < 0 ? 0 : bf > 1 ? 1 : bf;
    }
    s->queue_depth = (uint32_t)depth;
    s->processed = progress;
    s->malformed = tc->malformed + w->malformed;
    s->wrong_type = tc->wrong_type + w->wrong_type;
    if (w->inbox) {
        const gs_transport_counters *ic = gs_transport_counters_get(w->inbox);
        s->malformed += ic->malformed;
        s->wrong_type += ic->wrong_type;
    }
    s->errors = w->errors + w->dropped_jobs;
    memory_use(&s->rss_bytes, &s->peak_rss_bytes);
}

/* The first tile of batch j with the same slide attempt as tile t. */
static size_t first_of_slide(const gs_worker_job *j, size_t t)
{
    const Gastroscreen__V1__TileHeader *h = j->tiles[t].msg.tile->tile;
    for (size_t i = 0; i < t; i++) {
        const Gastroscreen__V1__TileHeader *o = j->tiles[i].msg.tile->tile;
        if (o->attempt == h->attempt && !strcmp(o->slide_id, h->slide_id))
            return i;
    }
    return t;
}

/* JobRefs of the current generation's jobs in hand; *refs and *ptrs are malloc'd. */
static size_t in_hand_refs(gs_worker *w, Gastroscreen__V1__JobRef **refs,
                           Gastroscreen__V1__JobRef ***ptrs)
{
    pthread_mutex_lock(&w->mu);
    size_t n = 0;
    for (gs_worker_job *j = w->jobs; j; j = j->next)
        n += j->generation == w->generation ? (j->n_tiles ? j->n_tiles : 1) : 0;
    *refs = calloc(n ? n : 1, sizeof **refs);
    *ptrs = calloc(n ? n : 1, sizeof **ptrs);
    size_t k = 0;
    if (*refs && *ptrs) {
        for (gs_worker_job *j = w->jobs; j; j = j->next) {
            if (j->generation != w->generation)
                continue;
            size_t parts = j->n_tiles ? j->n_tiles : 1;
            for (size_t t = 0; t < parts; t++) {
                const char *sid = j->slide_id;
                uint32_t attempt = j->attempt;
                if (j->n_tiles) {
                    const Gastroscreen__V1__TileHeader *h = j->tiles[t].msg.tile->tile;
                    if (first_of_slide(j, t) != t)
                        continue;
                    sid = h->slide_id;
                    attempt = h->attempt;
                }
                Gastroscreen__V1__JobRef *r = &(*refs)[k];
                gastroscreen__v1__job_ref__init(r);
                r->slide_id = (char *)sid;
                r->attempt = attempt;
                r->job_id = j->job_id;
                r->kind = j->kind;
                (*ptrs)[k++] = r;
            }
        }
    }
    pthread_mutex_unlock(&w->mu);
    return k;
}

static void send_heartbeat(gs_worker *w, int64_t now)
{
    Gastroscreen__V1__WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    Gastroscreen__V1__WorkerHeartbeat hb = GASTROSCREEN__V1__WORKER_HEARTBEAT__INIT;
    Gastroscreen__V1__StageStats st = GASTROSCREEN__V1__STAGE_STATS__INIT;
    fill_stats(w, &st, now);
    Gastroscreen__V1__JobRef *refs = NULL, **ptrs = NULL;
    hb.n_in_hand = in_hand_refs(w, &refs, &ptrs);
    hb.in_hand = ptrs;
    hb.worker_id = w->id;
    hb.progress = st.processed;
    hb.stats = &st;
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_WORKER_HEARTBEAT;
    m.worker_heartbeat = &hb;
    if (w->welcomed)
        send_work(w, &m); /* at the HWM a heartbeat is skipped, not queued */
    free(refs);
    free(ptrs);
    if (w->cfg.on_tick)
        w->cfg.on_tick(&st, w->cfg.tick_ud);
}

/* Sends queued results of the current generation; drops those of abandoned generations. */
static void flush_results(gs_worker *w)
{
    for (;;) {
        pthread_mutex_lock(&w->mu);
        result_buf *r = w->res_head;
        pthread_mutex_unlock(&w->mu);
        if (!r)
            return;
        if (r->generation == w->generation &&
            gs_transport_send_packed(w->dealer, NULL, r->data, r->len, GS_SEND_DONTWAIT) < 0 &&
            errno == EAGAIN)
            return; /* at the HWM: try again on the next turn of the loop */
        pthread_mutex_lock(&w->mu);
        w->res_head = r->next;
        if (!w->res_head)
            w->res_tail = NULL;
        pthread_mutex_unlock(&w->mu);
        free(r->data);
        free(r);
    }
}

/* Removes finished jobs: counts them, keeps hand-backs for the goodbye. Returns how many
 * jobs of the current generation finished. */
static int reap_jobs(gs_worker *w)
{
    int finished = 0;
    pthread_mutex_lock(&w->mu);
    gs_worker_job **pp = &w->jobs;
    while (*pp) {
        gs_worker_job *j = *pp;
        if (j->state != JOB_DONE) {
            pp = &j->next;
            continue;
        }
        *pp = j->next;
        int current = j->generation == w->generation;
        if (j->rc < 0)
            w->errors++;
        uint64_t items = atomic_load(&j->items);
        if (!j->handed_back)
            w->progress += items ? items : (j->rc == 0 ? (j->n_tiles ? j->n_tiles : 1) : 0);
        else
            w->progress += items;
        if (current && j->handed_back) {
            j->next = w->handed;
            w->handed = j;
        } else {
            worker_job_free(j);
        }
        finished += current;
    }
    pthread_mutex_unlock(&w->mu);
    return finished;
}

/* Drops every job (the coordinator is gone or new): queued ones go, running ones are told to
 * stop and their results will be discarded. */
static void abandon_jobs(gs_worker *w)
{
    pthread_mutex_lock(&w->mu);
    gs_worker_job **pp = &w->jobs;
    while (*pp) {
        gs_worker_job *j = *pp;
        if (j->state == JOB_QUEUED) {
            *pp = j->next;
            worker_job_free(j);
            continue;
        }
        atomic_store(&j->stopping, 1);
        pp = &j->next;
    }
    w->generation++;
    pthread_mutex_unlock(&w->mu);
}

static void take_job(gs_worker *w, const Gastroscreen__V1__WorkMessage *m, int stopping)
{
    if (m->body_case != stage_job_body(w->cfg.stage)) {
        w->wrong_type++;
        logf_w(w, "dropped a job of the wrong stage (body %d)", (int)m->body_case);
        return;
    }
    gs_worker_job *j = worker_job_new(m);
    if (!j) {
        w->dropped_jobs++;
        logf_w(w, "out of memory: dropped a job");
        return;
    }
    if (worker_job_identity(j->msg, j) < 0) {
        w->malformed++;
        logf_w(w, "dropped a malformed job: %s", gs_error_get());
        worker_job_free(j);
        return;
    }
    j->w = w;
    j->generation = w->generation;
    if (stopping) {
        /* Crossed our WorkerReady{0}: hand it straight back. */
        j->handed_back = 1;
        j->next = w->handed;
        w->handed = j;
        return;
    }
    /* A handler emits its result before it returns, so the coordinator may free the slot and
     * send the next job before this loop has reaped the previous one: queue up to one job
     * per thread beyond the slots. More than that is a coordinator ignoring the credit. */
    if (jobs_in_hand(w) >= 2 * w->cfg.threads) {
        w->dropped_jobs++;
        worker_log_slide(w, j->slide_id,
                         "dropped job %" PRIu64 " of slide %s: no free slot (the coordinator's "
                         "deadline re-sends it)",
                         j->job_id, j->slide_id);
        worker_job_free(j);
        return;
    }
    pthread_mutex_lock(&w->mu);
    j->state = JOB_QUEUED;
    j->next = w->jobs;
    w->jobs = j;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static int queued_jobs(gs_worker *w)
{
    int n = 0;
    pthread_mutex_lock(&w->mu);
    for (gs_worker_job *j = w->jobs; j; j = j->next)
        n += j->state == JOB_QUEUED;
    pthread_mutex_unlock(&w->mu);
    return n;
}

/* Tile stages: reads the tiles waiting in the inbox, up to batch_size, into one job. Called
 * only when no batch is queued, so the worker holds at most one batch beyond those running
 * and a slow worker pushes back on the tilers. */
static void take_tiles(gs_worker *w)
{
    int infer = w->cfg.stage == GASTROSCREEN__V1__STAGE__STAGE_INFER;
    size_t cap = w->cfg.batch_size > 0 ? (size_t)w->cfg.batch_size : 1;
    gs_worker_job *j = calloc(1, sizeof *j);
    if (j)
        j->tiles = calloc(cap, sizeof *j->tiles);
    if (!j || !j->tiles) {
        free(j);
        w->dropped_jobs++;
        logf_w(w, "out of memory for a batch of %zu tiles", cap);
        return;
    }
    while (j->n_tiles < cap) {
        gs_inbound *in = &j->tiles[j->n_tiles];
        gs_recv_status st = gs_transport_recv(w->inbox, in, GS_RECV_DONTWAIT);
        if (st != GS_RECV_MESSAGE) {
            gs_inbound_release(in);
            if (st == GS_RECV_DROPPED)
                continue; /* counted by the transport */
            break;
        }
        const Gastroscreen__V1__TileHeader *h = in->msg.tile->tile;
        gs_fence f;
        if (gs_fence_of(&in->msg.tile->base, &f) < 0 || !gs_fence_ok(&f)) {
            w->malformed++;
            logf_w(w, "dropped a tile with a malformed fence");
            gs_inbound_release(in);
            continue;
        }
        if (h->job_case != (infer ? GASTROSCREEN__V1__TILE_HEADER__JOB_INFER
                                  : GASTROSCREEN__V1__TILE_HEADER__JOB_BLUR)) {
            w->wrong_type++;
            logf_w(w, "dropped a tile meant for another stage");
            gs_inbound_release(in);
            continue;
        }
        j->n_tiles++;
    }
    if (j->n_tiles == 0) {
        worker_job_free(j);
        return;
    }
    const Gastroscreen__V1__TileHeader *first = j->tiles[0].msg.tile->tile;
    snprintf(j->slide_id, sizeof j->slide_id, "%s", first->slide_id);
    j->attempt = first->attempt;
    j->kind = infer ? GASTROSCREEN__V1__JOB_KIND__JOB_KIND_INFER_TILES
                    : GASTROSCREEN__V1__JOB_KIND__JOB_KIND_BLUR_TILES;
    atomic_init(&j->stopping, 0);
    atomic_init(&j->items, 0);
    j->w = w;
    j->generation = w->generation;
    pthread_mutex_lock(&w->mu);
    j->state = JOB_QUEUED;
    j->next = w->jobs;
    w->jobs = j;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void send_goodbye(gs_worker *w)
{
    /* Jobs still running past the grace period are handed back whole. */
    pthread_mutex_lock(&w->mu);
    for (gs_worker_job *j = w->jobs; j; j = j->next)
        if (j->generation == w->generation && j->state != JOB_DONE)
            j->handed_back = 1;
    /* One entry per job, or per slide attempt of a tile batch (with its tile indices). */
    size_t n = 0, tiles = 0;
    for (int pass = 0; pass < 2; pass++)
        for (gs_worker_job *j = pass ? w->jobs : w->handed; j; j = j->next)
            if (!pass || (j->generation == w->generation && j->handed_back)) {
                n += j->n_tiles ? j->n_tiles : 1;
                tiles += j->n_tiles;
            }
    Gastroscreen__V1__HandedBack *hb = calloc(n ? n : 1, sizeof *hb);
    Gastroscreen__V1__HandedBack **hbp = calloc(n ? n : 1, sizeof *hbp);
    Gastroscreen__V1__JobRef *refs = calloc(n ? n : 1, sizeof *refs);
    uint32_t *pool = calloc(tiles ? tiles : 1, sizeof *pool);
    size_t k = 0, used = 0;
    if (hb && hbp && refs && pool) {
        for (int pass = 0; pass < 2; pass++) {
            for (gs_worker_job *j = pass ? w->jobs : w->handed; j; j = j->next) {
                if (pass && !(j->generation == w->generation && j->handed_back))
                    continue;
                size_t parts = j->n_tiles ? j->n_tiles : 1;
                for (size_t t = 0; t < parts; t++) {
                    if (j->n_tiles && first_of_slide(j, t) != t)
                        continue;
                    gastroscreen__v1__handed_back__init(&hb[k]);
                    gastroscreen__v1__job_ref__init(&refs[k]);
                    refs[k].slide_id = j->slide_id;
                    refs[k].attempt = j->attempt;
                    refs[k].job_id = j->job_id;
                    refs[k].kind = j->kind;
                    hb[k].unsent_tiles = j->unsent;
                    hb[k].n_unsent_tiles = j->n_unsent;
                    if (j->n_tiles) {
                        const Gastroscreen__V1__TileHeader *h = j->tiles[t].msg.tile->tile;
                        refs[k].slide_id = h->slide_id;
                        refs[k].attempt = h->attempt;
                        hb[k].unsent_tiles = pool + used;
                        hb[k].n_unsent_tiles = 0;
                        for (size_t i = t; i < j->n_tiles; i++) {
                            if (first_of_slide(j, i) != t)
                                continue;
                            pool[used++] = j->tiles[i].msg.tile->tile->tile_index;
                            hb[k].n_unsent_tiles++;
                        }
                    }
                    hb[k].job = &refs[k];
                    hbp[k] = &hb[k];
                    k++;
                }
            }
        }
    }
    Gastroscreen__V1__WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    Gastroscreen__V1__WorkerGoodbye g = GASTROSCREEN__V1__WORKER_GOODBYE__INIT;
    g.worker_id = w->id;
    g.reason = "stopping (SIGTERM)";
    g.n_handed_back = k;
    g.handed_back = hbp;
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_GOODBYE;
    m.goodbye = &g;
    if (send_work(w, &m) < 0)
        logf_w(w, "could not say goodbye: %s", gs_error_get());
    pthread_mutex_unlock(&w->mu);
    free(hb);
    free(hbp);
    free(refs);
    free(pool);
}

static int running_jobs(gs_worker *w)
{
    int n = 0;
    pthread_mutex_lock(&w->mu);
    for (gs_worker_job *j = w->jobs; j; j = j->next)
        n += j->generation == w->generation && j->state != JOB_DONE;
    pthread_mutex_unlock(&w->mu);
    return n;
}

static void begin_stop(gs_worker *w)
{
    pthread_mutex_lock(&w->mu);
    gs_worker_job **pp = &w->jobs;
    while (*pp) {
        gs_worker_job *j = *pp;
        if (j->state == JOB_QUEUED && j->generation == w->generation) {
            *pp = j->next;
            j->handed_back = 1;
            j->next = w->handed;
            w->handed = j;
            continue;
        }
        atomic_store(&j->stopping, 1);
        pp = &j->next;
    }
    pthread_mutex_unlock(&w->mu);
    send_ready(w, 1);
}

int gs_worker_run(gs_worker *w)
{
    int64_t now = gs_mono_us();
    int64_t next_hb = now + (int64_t)w->heartbeat_ms * 1000;
    int64_t hello_due = now, last_heard = now, stop_deadline = 0;
    int stopping = 0, rc = 0;
    logf_w(w, "%s connecting to %s", w->id, w->endpoint);
    for (;;) {
        now = gs_mono_us();
        /* An atomic load: the flag may be set by a signal handler on another thread. */
        if (!stopping && w->cfg.stop && __atomic_load_n(w->cfg.stop, __ATOMIC_RELAXED)) {
            stopping = 1;
            stop_deadline = now + (int64_t)w->cfg.stop_grace_ms * 1000;
            logf_w(w, "stopping: finishing or handing back %d job(s)", running_jobs(w));
            begin_stop(w);
        }
        if (!w->welcomed && !stopping && now >= hello_due) {
            hello_due = now + (send_hello(w) == 0 ? (int64_t)w->liveness * w->heartbeat_ms * 1000
                                                  : HELLO_RETRY_US);
        }
        int64_t wake = next_hb < hello_due || w->welcomed ? next_hb : hello_due;
        long timeout = (long)((wake - now) / 1000);
        if (timeout < 0)
            timeout = 0;
        if (timeout > MAX_POLL_MS)
            timeout = MAX_POLL_MS;
        int want_tiles = w->inbox && !stopping && queued_jobs(w) == 0;
        zmq_pollitem_t items[3] = {
            {gs_transport_socket(w->dealer), 0, ZMQ_POLLIN, 0},
            {NULL, w->efd, ZMQ_POLLIN, 0},
            {w->inbox ? gs_transport_socket(w->inbox) : NULL, 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(items, want_tiles ? 3 : 2, timeout) < 0) {
            if (errno == EINTR)
                continue;
            rc = gs_error_set("worker: poll: %s", zmq_strerror(errno));
            break;
        }
        /* Coordinator messages first. */
        for (;;) {
            gs_inbound in;
            gs_recv_status st = gs_transport_recv(w->dealer, &in, GS_RECV_DONTWAIT);
            if (st == GS_RECV_EMPTY || st == GS_RECV_ERROR) {
                gs_inbound_release(&in);
                if (st == GS_RECV_ERROR && errno != EINTR && errno != EAGAIN) {
                    rc = -1;
                    goto out;
                }
                break;
            }
            if (st == GS_RECV_MESSAGE) {
                last_heard = gs_mono_us();
                const Gastroscreen__V1__WorkMessage *m = in.msg.work;
                if (m->body_case == GASTROSCREEN__V1__WORK_MESSAGE__BODY_WELCOME && m->welcome) {
                    const Gastroscreen__V1__WorkerWelcome *wl = m->welcome;
                    if (!wl->accepted) {
                        rc = gs_error_set("refused by the coordinator: %s", wl->reason);
                        logf_w(w, "%s", gs_error_get());
                        gs_inbound_release(&in);
                        goto out;
                    }
                    if (wl->heartbeat_ms >= 10)
                        w->heartbeat_ms = (int)wl->heartbeat_ms;
                    if (wl->liveness >= 1)
                        w->liveness = (int)wl->liveness;
                    snprintf(w->coordinator_id, sizeof w->coordinator_id, "%s", wl->coordinator_id);
                    if (!w->welcomed)
                        logf_w(w, "welcomed by coordinator %s", w->coordinator_id);
                    w->welcomed = 1;
                    next_hb = gs_mono_us() + (int64_t)w->heartbeat_ms * 1000;
                    send_ready(w, stopping);
                } else if (m->body_case ==
                               GASTROSCREEN__V1__WORK_MESSAGE__BODY_COORDINATOR_HEARTBEAT &&
                           m->coordinator_heartbeat) {
                    const Gastroscreen__V1__CoordinatorHeartbeat *ch = m->coordinator_heartbeat;
                    int other = strcmp(ch->coordinator_id, w->coordinator_id) != 0;
                    if (w->welcomed && (other || ch->say_hello)) {
                        /* A new coordinator, or one that no longer knows us (it declared us
                         * lost while we were stalled): our jobs went elsewhere. */
                        if (other)
                            logf_w(w, "new coordinator %s: saying hello again", ch->coordinator_id);
                        else
                            logf_w(w, "the coordinator lost us: saying hello again");
                        abandon_jobs(w);
                        w->welcomed = 0;
                        hello_due = gs_mono_us();
                    }
                } else if (w->welcomed) {
                    take_job(w, m, stopping);
                } else {
                    w->wrong_type++; /* a job before any welcome: not ours to take */
                }
            }
            gs_inbound_release(&in);
        }
        if (want_tiles && (items[2].revents & ZMQ_POLLIN))
            take_tiles(w);
        if (items[1].revents & ZMQ_POLLIN) {
            uint64_t v;
            ssize_t r = read(w->efd, &v, sizeof v);
            (void)r;
        }
        flush_results(w);
        if (reap_jobs(w) > 0) {
            flush_results(w);
            if (w->welcomed)
                send_ready(w, stopping);
        }
        now = gs_mono_us();
        if (now >= next_hb) {
            send_heartbeat(w, now);
            next_hb += (int64_t)w->heartbeat_ms * 1000;
            if (next_hb <= now)
                next_hb = now + (int64_t)w->heartbeat_ms * 1000;
        }
        if (w->welcomed && !stopping &&
            now - last_heard > (int64_t)w->liveness * w->heartbeat_ms * 1000) {
            logf_w(w, "nothing from the coordinator for %d ms: saying hello again",
                   w->liveness * w->heartbeat_ms);
            abandon_jobs(w);
            w->welcomed = 0;
            hello_due = now;
            last_heard = now;
        }
        if (stopping && (running_jobs(w) == 0 || now >= stop_deadline)) {
            reap_jobs(w);
            flush_results(w);
            send_goodbye(w);
            logf_w(w, "stopped");
            break;
        }
    }
out:
    return rc;
}
