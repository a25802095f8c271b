/* worker: a fake coordinator (a ROUTER in the test thread, over inproc:// or tcp loopback)
 * drives a real gs_worker running in a thread: hello / welcome / ready, jobs answered,
 * heartbeats with stats, garbage and wrong jobs counted and survived, a new coordinator or a
 * silent one means hello again, a refusal ends the loop, a stop flag or SIGTERM ends it with a
 * goodbye that hands back the running job. Timing is never asserted tightly: every wait is a
 * generous upper bound against hangs. */
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

static void jobs_heartbeats_garbage_and_stop(const char *bind_ep, int shared_ctx)
{
    coord c;
    coord_open(&c, bind_ep);
    runner r;
    pthread_t th;
    gs_worker *w = start_worker(gs_transport_endpoint(c.router), shared_ctx ? c.ctx : NULL,
                                echo_handler, 2, &r, &th);
    assert_int_equal(coord_handshake(&c, "c1", 100, 50), 2);

    /* Jobs, one at a time (each frees its slot again). */
    gs_inbound in;
    for (uint64_t id = 1; id <= 6; id++) {
        coord_plan_job(&c, "00000000000000c1", id);
        const Gastroscreen__V1__WorkMessage *m =
            coord_expect(&c, GASTROSCREEN__V1__WORK_MESSAGE__BODY_PLAN_RESULT, &in);
        assert_int_equal(m->plan_result->job_id, id);
        assert_string_equal(m->plan_result->slide_id, "00000000000000c1");
        assert_string_equal(m->plan_result->worker_id, gs_worker_id(w));
        gs_inbound_release(&in);
        m = coord_expect(&c, GASTROSCREEN__V1__WORK_MESSAGE__BODY_READY, &in);
        assert_int_equal(m->ready->free_slots, 2);
        gs_inbound_release(&in);
    }
    /* Heartbeats come from the main loop with the progress. */
    int64_t end = ms_now() + WAIT_MS;
    while ((c.heartbeats < 2 || c.last_progress < 6) && ms_now() < end) {
        coord_expect(&c, GASTROSCREEN__V1__WORK_MESSAGE__BODY_WORKER_HEARTBEAT, &in);
        gs_inbound_release(&in);
    }
    assert_true(c.heartbeats >= 2);
    assert_int_equal(c.last_progress, 6);
    assert_int_equal(c.last_processed, 6);

    /* Garbage, a job for another stage, a job with a malformed fence: counted and dropped. */
    void *sock = gs_transport_socket(c.router);
    assert_true(zmq_send(sock, c.peer.id, c.peer.len, ZMQ_SNDMORE) >= 0);
    assert_true(zmq_send(sock, "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 11, 0) >= 0);
    Gastroscreen__V1__WorkMessage tm = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    Gastroscreen__V1__TileJob tj = GASTROSCREEN__V1__TILE_JOB__INIT;
    tj.slide_id = "00000000000000c1";
    tj.attempt = 1;
    tm.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_JOB;
    tm.tile_job = &tj;
    coord_send(&c, &tm);
    coord_plan_job(&c, "not-a-slide-id", 50);
    /* And the worker still serves a good job. */
    coord_plan_job(&c, "00000000000000c2", 7);
    const Gastroscreen__V1__WorkMessage *m =
        coord_expect(&c, GASTROSCREEN__V1__WORK_MESSAGE__BODY_PLAN_RESULT, &in);
    assert_int_equal(m->plan_result->job_id, 7);
    gs_inbound_release(&in);
    end = ms_now() + WAIT_MS;
    while ((c.last_malformed < 2 || c.last_wrong_type < 1) && ms_now() < end) {
        coord_expect(&c, GASTROSCREEN__V1__WORK_MESSAGE__BODY_WORKER_HEARTBEAT, &in);
        gs_inbound_release(&in);
    }
    assert_int_equal(c.last_malformed, 2);
    assert_int_equal(c.last_wrong_type, 1);

    /* Stop: ready 0, then goodbye with nothing to hand back. */
    __atomic_store_n(&stop_flag, 1, __ATOMIC_RELAXED);
    m = coord_expect(&c, GASTROSCREEN__V1__WORK_MESSAGE__BODY_READY, &in);
    assert_int_equal(m->ready->free_slots, 0);
    gs_inbound_release(&in);
    m = coord_expect(&c, GASTROSCREEN__V1__WORK_MESSAGE__BODY_GOODBYE, &in);
    assert_int_equal(m->goodbye->n_handed_back, 0);
    assert_string_equal(m->goodbye->worker_id, gs_worker_id(w));
    gs_inbound_release(&in);
    pthread_join(th, NULL);
    assert_int_equal(r.rc, 0);
    gs_worker_destroy(&w);
    assert_null(w);
    coord_close(&c);
}

static void inproc_worker(void **state)
{
    (void)state;
    jobs_heartbeats_garbage_and_stop("inproc://test-worker", 1);
}

static void tcp_worker(void **state)
{
    (void)state;
    jobs_heartbeats_garbage_and_stop("tcp://127.0.0.1:*", 0);
}

static void on_sigterm(int sig)
{
    (void)sig;
    __atomic_store_n(&stop_flag, 1, __ATOMIC_RELAXED);
}

static void sigterm_hands_back_the_running_job(void **state)
{
    (void)state;
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigterm;
    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(SIGTERM, &sa, &old), 0);

    coord c;
    coord_open(&c, "inproc://test-worker-sigterm");
    runner r;
    pthread_t th;
    gs_worker *w = start_worker("inproc://test-worker-sigterm", c.ctx, slow_handler, 1, &r, &th);
    assert_int_equal(coord_handshake(&c, "c1", 100, 50), 1);
    coord_plan_job(&c, "00000000000000d4", 42);
    gs_inbound in;
    /* Wait until a heartbeat shows the job in hand. */
    int64_t end = ms_now() + WAIT_MS;
    while (c.last_in_hand_job != 42 && ms_now() < end) {
        coord_expect(&c, GASTROSCREEN__V1__WORK_MESSAGE__BODY_WORKER_HEARTBEAT, &in);
        gs_inbound_release(&in);
    }
    assert_int_equal(c.last_in_hand_job, 42);
    raise(SIGTERM);
    const Gastroscreen__V1__WorkMessage *m =
        coord_expect(&c, GASTROSCREEN__V1__WORK_MESSAGE__BODY_GOODBYE, &in);
    assert_int_equal(m->goodbye->n_handed_back, 1);
    const Gastroscreen__V1__HandedBack *hb = m->goodbye->handed_back[0];
    assert_int_equal(hb->job->job_id, 42);
    assert_string_equal(hb->job->slide_id, "00000000000000d4");
    assert_int_equal(hb->job->kind, GASTROSCREEN__V1__JOB_KIND__JOB_KIND_PLAN);
    assert_int_equal(hb->n_unsent_tiles, 3);
    assert_int_equal(hb->unsent_tiles[2], 3);
    gs_inbound_release(&in);
    pthread_join(th, NULL);
    assert_int_equal(r.rc, 0);
    gs_worker_destroy(&w);
    coord_close(&c);
    sigaction(SIGTERM, &old, NULL);
}

static void refused_worker_ends(void **state)
{
    (void)state;
    coord c;
    coord_open(&c, "inproc://test-worker-refused");
    runner r;
    pthread_t th;
    gs_worker *w = start_worker("inproc://test-worker-refused", c.ctx, echo_handler, 1, &r, &th);
    gs_inbound in;
    coord_expect(&c, GASTROSCREEN__V1__WORK_MESSAGE__BODY_HELLO, &in);
    gs_inbound_release(&in);
    coord_welcome(&c, 0, "model sha256 differs from the coordinator's", "c1", 100, 5);
    pthread_join(th, NULL);
    assert_int_equal(r.rc, -1);
    assert_non_null(strstr(r.error, "refused by the coordinator: model sha256 differs"));
    gs_worker_destroy(&w);
    coord_close(&c);
}

static void new_or_silent_coordinator_means_hello_again(void **state)
{
    (void)state;
    coord c;
    coord_open(&c, "inproc://test-worker-hello");
    runner r;
    pthread_t th;
    gs_worker *w = start_worker("inproc://test-worker-hello", c.ctx, echo_handler, 1, &r, &th);
    coord_handshake(&c, "c1", 100, 50);
    /* A coordinator heartbeat from another coordinator_id: a restarted coordinator. */
    Gastroscreen__V1__WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    Gastroscreen__V1__CoordinatorHeartbeat ch = GASTROSCREEN__V1__COORDINATOR_HEARTBEAT__INIT;
    ch.coordinator_id = "c2";
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_COORDINATOR_HEARTBEAT;
    m.coordinator_heartbeat = &ch;
    coord_send(&c, &m);
    coord_handshake(&c, "c2", 100, 50);
    /* The same coordinator no longer knows us (it declared us lost while we were stalled). */
    ch.say_hello = 1;
    coord_send(&c, &m);
    ch.say_hello = 0;
    coord_handshake(&c, "c2", 100, 50); /* while heartbeats keep coming */
    /* Hello again; this time a short liveness, then silence: hello once more. */
    c.silent = 1;
    coord_handshake(&c, "c2", 50, 2);
    gs_inbound in;
    coord_expect(&c, GASTROSCREEN__V1__WORK_MESSAGE__BODY_HELLO, &in);
    gs_inbound_release(&in);
    __atomic_store_n(&stop_flag, 1, __ATOMIC_RELAXED);
    pthread_join(th, NULL);
    assert_int_equal(r.rc, 0);
    gs_worker_destroy(&w);
    coord_close(&c);
}

static void handler_omp_threads(void **state)
{
    (void)state;
    int dflt = -1;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, read_omp_default, &dflt), 0);
    pthread_join(t, NULL);
    const int want[2] = {dflt == 3 ? 5 : 3, 0};
    for (int k = 0; k < 2; k++) {
        coord c;
        coord_open(&c, "inproc://test-worker-omp");
        gs_worker_config cfg;
        gs_worker_config_default(&cfg);
        cfg.stage = GASTROSCREEN__V1__STAGE__STAGE_FOREGROUND;
        cfg.work_endpoint = gs_transport_endpoint(c.router);
        cfg.handler = omp_handler;
        cfg.omp_threads = want[k];
        cfg.instance = "7";
        cfg.stop = &stop_flag;
        cfg.zmq_ctx = c.ctx;
        cfg.quiet = 1;
        cfg.heartbeat_ms = 100;
        stop_flag = 0;
        runner r = {.w = gs_worker_new(&cfg), .rc = 99};
        assert_non_null(r.w);
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, run_worker, &r), 0);
        assert_int_equal(coord_handshake(&c, "c1", 100, 50), 1);
        __atomic_store_n(&omp_seen, -1, __ATOMIC_RELAXED);
        coord_plan_job(&c, "00000000000000c1", 1);
        gs_inbound in;
        coord_expect(&c, GASTROSCREEN__V1__WORK_MESSAGE__BODY_PLAN_RESULT, &in);
        gs_inbound_release(&in);
        printf("omp_threads %d: the handler saw %d (a new thread's default: %d)\n", want[k],
               __atomic_load_n(&omp_seen, __ATOMIC_RELAXED), dflt);
        assert_int_equal(__atomic_load_n(&omp_seen, __ATOMIC_RELAXED), want[k] ? want[k] : dflt);
        __atomic_store_n(&stop_flag, 1, __ATOMIC_RELAXED);
        pthread_join(th, NULL);
        assert_int_equal(r.rc, 0);
        gs_worker_destroy(&r.w);
        coord_close(&c);
    }
    /* What the stages ask for: 1 for all but infer; infer splits the process's threads. */
    int all = omp_get_max_threads();
    assert_int_equal(gs_worker_omp_threads(GASTROSCREEN__V1__STAGE__STAGE_TILER, 4), 1);
    assert_int_equal(gs_worker_omp_threads(GASTROSCREEN__V1__STAGE__STAGE_REPORTER, 1), 1);
    assert_int_equal(gs_worker_omp_threads(GASTROSCREEN__V1__STAGE__STAGE_INFER, 1), 0);
    assert_int_equal(gs_worker_omp_threads(GASTROSCREEN__V1__STAGE__STAGE_INFER, 2),
                     all / 2 > 1 ? all / 2 : 1);
    assert_int_equal(gs_worker_omp_threads(GASTROSCREEN__V1__STAGE__STAGE_INFER, 4 * all), 1);
}

static void bad_configs(void **state)
{
    (void)state;
    gs_worker_config cfg;
    gs_worker_config_default(&cfg);
    cfg.stage = GASTROSCREEN__V1__STAGE__STAGE_FOREGROUND;
    assert_null(gs_worker_new(&cfg));
    assert_non_null(strstr(gs_error_get(), "no work endpoint"));
    cfg.work_endpoint = "inproc://nowhere";
    assert_null(gs_worker_new(&cfg));
    assert_non_null(strstr(gs_error_get(), "needs a job handler"));
    cfg.stage = GASTROSCREEN__V1__STAGE__STAGE_INFER;
    assert_null(gs_worker_new(&cfg));
    assert_non_null(strstr(gs_error_get(), "needs a tile inbox"));
    cfg.tile_inbox_bind = "inproc://inbox";
    assert_null(gs_worker_new(&cfg));
    assert_non_null(strstr(gs_error_get(), "needs a job handler"));
    cfg.tile_inbox_bind = NULL;
    cfg.stage = GASTROSCREEN__V1__STAGE__STAGE_COORDINATOR;
    assert_null(gs_worker_new(&cfg));
    cfg.stage = GASTROSCREEN__V1__STAGE__STAGE_FOREGROUND;
    cfg.handler = echo_handler;
    cfg.threads = 0;
    assert_null(gs_worker_new(&cfg));
    cfg.threads = 1;
    cfg.omp_threads = -1;
    assert_null(gs_worker_new(&cfg));
    assert_non_null(strstr(gs_error_get(), "OpenMP threads -1"));
    cfg.omp_threads = 0;
    cfg.work_endpoint = "bogus://x";
    assert_null(gs_worker_new(&cfg));
    assert_non_null(strstr(gs_error_get(), "bogus://x"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(inproc_worker),
        cmocka_unit_test(tcp_worker),
        cmocka_unit_test(handler_omp_threads),
        cmocka_unit_test(sigterm_hands_back_the_running_job),
        cmocka_unit_test(refused_worker_ends),
        cmocka_unit_test(new_or_silent_coordinator_means_hello_again),
        cmocka_unit_test(bad_configs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
