/* fake_coordinator: see fake_coordinator.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <omp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tests/unit/fake_coordinator.h"
#include "ops/error.h"
#include "stages/handlers/foreground.h"
#include "stages/handlers/tiler.h"
#include "stages/runtime/transport.h"
#include "stages/runtime/worker.h"

const gs_transport_options fake_quiet = {0, NULL, 1};

int64_t ms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void coord_open(coord *c, const char *ep)
{
    memset(c, 0, sizeof *c);
    c->ctx = zmq_ctx_new();
    c->router = gs_transport_new(c->ctx, GS_CHANNEL_WORK, ZMQ_ROUTER, GS_BIND, ep, &fake_quiet);
    assert_non_null(c->router);
}

void coord_close(coord *c)
{
    gs_transport_destroy(&c->router);
    zmq_ctx_term(c->ctx);
}

/* Receives until a message with `body` arrives (heartbeats are noted on the way); the caller
 * releases *in. Fails the test after WAIT_MS. */
const Gastroscreen__V1__WorkMessage *coord_expect(coord *c, int body, gs_inbound *in)
{
    int64_t end = ms_now() + WAIT_MS;
    while (ms_now() < end) {
        if (c->id[0] && !c->silent && c->peer.len && ms_now() >= c->next_beat_ms) {
            Gastroscreen__V1__WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
            Gastroscreen__V1__CoordinatorHeartbeat ch =
                GASTROSCREEN__V1__COORDINATOR_HEARTBEAT__INIT;
            ch.coordinator_id = c->id;
            m.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
            m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_COORDINATOR_HEARTBEAT;
            m.coordinator_heartbeat = &ch;
            gs_transport_send(c->router, &c->peer, &m.base, GS_SEND_DONTWAIT);
            c->next_beat_ms = ms_now() + 200;
        }
        zmq_pollitem_t it = {gs_transport_socket(c->router), 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 100) != 1)
            continue;
        if (gs_transport_recv(c->router, in, GS_RECV_DONTWAIT) != GS_RECV_MESSAGE) {
            gs_inbound_release(in);
            continue;
        }
        c->peer = in->from;
        const Gastroscreen__V1__WorkMessage *m = in->msg.work;
        if (m->body_case == GASTROSCREEN__V1__WORK_MESSAGE__BODY_WORKER_HEARTBEAT) {
            c->heartbeats++;
            c->last_progress = m->worker_heartbeat->progress;
            c->last_in_hand = m->worker_heartbeat->n_in_hand;
            c->last_in_hand_job = c->last_in_hand ? m->worker_heartbeat->in_hand[0]->job_id : 0;
            assert_non_null(m->worker_heartbeat->stats);
            c->last_malformed = m->worker_heartbeat->stats->malformed;
            c->last_wrong_type = m->worker_heartbeat->stats->wrong_type;
            c->last_processed = m->worker_heartbeat->stats->processed;
            assert_true(m->worker_heartbeat->stats->busy_fraction >= 0 &&
                        m->worker_heartbeat->stats->busy_fraction <= 1);
        }
        if ((int)m->body_case == body)
            return m;
        gs_inbound_release(in);
    }
    fail_msg("no message with body %d within %d ms", body, WAIT_MS);
    return NULL;
}

void coord_send(coord *c, Gastroscreen__V1__WorkMessage *m)
{
    m->protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    assert_int_equal(gs_transport_send(c->router, &c->peer, &m->base, 0), 0);
}

void coord_welcome(coord *c, int accepted, const char *reason, const char *id, int hb_ms,
                   int liveness)
{
    Gastroscreen__V1__WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    Gastroscreen__V1__WorkerWelcome w = GASTROSCREEN__V1__WORKER_WELCOME__INIT;
    w.accepted = accepted;
    w.reason = (char *)reason;
    w.coordinator_id = (char *)id;
    w.heartbeat_ms = (uint32_t)hb_ms;
    w.liveness = (uint32_t)liveness;
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_WELCOME;
    m.welcome = &w;
    coord_send(c, &m);
    snprintf(c->id, sizeof c->id, "%s", id);
}

void coord_plan_job(coord *c, const char *slide_id, uint64_t job_id)
{
    Gastroscreen__V1__WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    Gastroscreen__V1__PlanJob j = GASTROSCREEN__V1__PLAN_JOB__INIT;
    j.slide_id = (char *)slide_id;
    j.attempt = 1;
    j.job_id = job_id;
    j.path = "/slides/x.svs";
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_PLAN_JOB;
    m.plan_job = &j;
    coord_send(c, &m);
}

/* Hello -> welcome -> ready; returns the free slots announced. */
uint32_t coord_handshake_stage(coord *c, const char *id, int hb_ms, int liveness,
                               Gastroscreen__V1__Stage stage)
{
    gs_inbound in;
    const Gastroscreen__V1__WorkMessage *m =
        coord_expect(c, GASTROSCREEN__V1__WORK_MESSAGE__BODY_HELLO, &in);
    assert_int_equal(m->hello->stage, stage);
    char prefix[64];
    snprintf(prefix, sizeof prefix, "%s.7@", gs_stage_name(stage));
    assert_non_null(strstr(m->hello->worker_id, prefix));
    assert_int_equal(m->hello->pid, (uint32_t)getpid());
    gs_inbound_release(&in);
    coord_welcome(c, 1, "", id, hb_ms, liveness);
    m = coord_expect(c, GASTROSCREEN__V1__WORK_MESSAGE__BODY_READY, &in);
    uint32_t slots = m->ready->free_slots;
    gs_inbound_release(&in);
    return slots;
}

uint32_t coord_handshake(coord *c, const char *id, int hb_ms, int liveness)
{
    return coord_handshake_stage(c, id, hb_ms, liveness, GASTROSCREEN__V1__STAGE__STAGE_FOREGROUND);
}

/* ---- the worker side ------------------------------------------------------------------- */

int echo_handler(gs_worker_job *job, void *ud)
{
    (void)ud;
    const Gastroscreen__V1__PlanJob *pj = gs_worker_job_message(job)->plan_job;
    Gastroscreen__V1__WorkMessage out = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    Gastroscreen__V1__PlanResult r = GASTROSCREEN__V1__PLAN_RESULT__INIT;
    r.slide_id = pj->slide_id;
    r.attempt = pj->attempt;
    r.job_id = pj->job_id;
    r.worker_id = (char *)gs_worker_job_worker_id(job);
    r.error = "echo";
    out.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    out.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_PLAN_RESULT;
    out.plan_result = &r;
    gs_worker_job_progress(job, 1);
    return gs_worker_job_emit(job, &out);
}

/* Echoes, noting the OpenMP thread count its kernels would get. */
int omp_seen = -1;
int omp_handler(gs_worker_job *job, void *ud)
{
    __atomic_store_n(&omp_seen, omp_get_max_threads(), __ATOMIC_RELAXED);
    return echo_handler(job, ud);
}

void *read_omp_default(void *p)
{
    *(int *)p = omp_get_max_threads();
    return NULL;
}

/* Works until told to stop, then hands back three "tiles". */
int slow_handler(gs_worker_job *job, void *ud)
{
    (void)ud;
    int64_t end = ms_now() + 60000;
    while (!gs_worker_job_stopping(job) && ms_now() < end)
        usleep(1000);
    static const uint32_t unsent[] = {1, 2, 3};
    return gs_worker_job_hand_back(job, unsent, 3);
}

void *run_worker(void *p)
{
    runner *r = p;
    r->rc = gs_worker_run(r->w);
    snprintf(r->error, sizeof r->error, "%s", gs_error_get());
    return NULL;
}

volatile sig_atomic_t stop_flag;

gs_worker *start_stage_worker(const char *ep, void *ctx, Gastroscreen__V1__Stage stage,
                              gs_worker_handler *h, void *ud, int threads, runner *r, pthread_t *th)
{
    gs_worker_config cfg;
    gs_worker_config_default(&cfg);
    cfg.stage = stage;
    cfg.handler_ud = ud;
    cfg.work_endpoint = ep;
    cfg.instance = "7";
    cfg.threads = threads;
    cfg.handler = h;
    cfg.stop = &stop_flag;
    cfg.zmq_ctx = ctx;
    cfg.quiet = 1;
    cfg.heartbeat_ms = 100;
    stop_flag = 0;
    gs_worker *w = gs_worker_new(&cfg);
    assert_non_null(w);
    r->w = w;
    r->rc = 99;
    assert_int_equal(pthread_create(th, NULL, run_worker, r), 0);
    return w;
}

gs_worker *start_worker(const char *ep, void *ctx, gs_worker_handler *h, int threads, runner *r,
                        pthread_t *th)
{
    return start_stage_worker(ep, ctx, GASTROSCREEN__V1__STAGE__STAGE_FOREGROUND, h, NULL, threads,
                              r, th);
}
