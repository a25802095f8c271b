/* The coordinator with CURVE on tcp://127.0.0.1 (daemon/service/coordinator with the ZAP
 * handler of stages/runtime/keys), attacked and used as gastroscreend runs it: an unlisted key
 * gets no welcome, no query answer and no event; an announcer or client key cannot open the
 * work socket; a worker key listed for blur is refused as infer; listed workers and clients
 * work; a reload lets a new key in without a restart; and what crosses the wire (recorded by a
 * relay) shows neither the worker id nor the slide path. The coordinator is stepped from the
 * test; the waits are hang guards only. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "daemon/service/config.h"
#include "daemon/service/coordinator.h"
#include "ops/error.h"
#include "stages/runtime/keys.h"
#include "stages/runtime/transport.h"
#include "tests/unit/key_folder.h"
#include "tests/unit/tcp_relay.h"

#define WAIT_MS 20000

static const gs_transport_options quiet = {0, NULL, 1};

typedef struct {
    keys_folder k;
    char conf[1024], slide[1024];
    gs_config *cfg;
    void *ctx;
    gs_zap *zap;
    gs_curve_keys server;
    gs_coordinator *c;
} world;

static int setup(void **state)
{
    world *w = calloc(1, sizeof *w);
    make_folder(&w->k);
    char slides[512];
    sub_dir(w->k.dir, "slides", slides, sizeof slides);
    snprintf(w->slide, sizeof w->slide, "%s/patient-4711-gastric.svs", slides);
    write_text(w->slide, "not really a slide", 0644);
    snprintf(w->conf, sizeof w->conf, "%s/gs.conf", w->k.dir);
    FILE *f = fopen(w->conf, "w");
    assert_non_null(f);
    fprintf(f, "[coordinator]\n");
    const char *names[] = {"intake", "submit", "query", "events", "work"};
    for (int i = 0; i < 5; i++)
        fprintf(f, "%s = tcp://127.0.0.1:*\n", names[i]);
    fprintf(f, "journal_dir = %s/journal\nspool_dir = %s/spool\nmetrics =\n", w->k.dir, w->k.dir);
    fprintf(f, "[intake]\nslide_roots = %s\n", slides);
    fprintf(f, "[security]\nkeys_dir = %s\n", w->k.dir);
    fclose(f);
    w->cfg = gs_config_new();
    if (gs_config_load(w->cfg, w->conf) != 0)
        fail_msg("config: %s", gs_error_get());
    w->ctx = zmq_ctx_new();
    w->zap = gs_zap_new(w->ctx, w->cfg->keys_dir, "test");
    assert_non_null(w->zap);
    w->server = (gs_curve_keys){w->k.coord_sec, NULL, NULL};
    gs_coordinator_options o;
    gs_coordinator_options_default(&o);
    o.config = w->cfg;
    o.zmq_ctx = w->ctx;
    o.quiet = 1;
    o.curve = &w->server;
    o.zap = w->zap;
    w->c = gs_coordinator_new(&o);
    if (!w->c)
        fail_msg("coordinator: %s", gs_error_get());
    *state = w;
    return 0;
}

static int teardown(void **state)
{
    world *w = *state;
    gs_coordinator_destroy(&w->c);
    gs_zap_destroy(&w->zap);
    zmq_ctx_term(w->ctx);
    gs_config_destroy(&w->cfg);
    free_folder(&w->k);
    free(w);
    return 0;
}

/* Steps the coordinator until t has a message (returns 1, the message in *in) or, when the
 * key is not `listed`, until the handler has refused one more connection on `domain` than
 * `before` (returns 0 after more steps in which nothing may come). A listed key's connection
 * ignores the count, which a refused client of an earlier call may still be raising. `resend`
 * (may be NULL) is sent again until a send succeeds: a DEALER with IMMEDIATE refuses to queue
 * before its handshake is done. */
static int step_until(world *w, gs_transport *t, const char *domain, uint64_t before, int listed,
                      const ProtobufCMessage *resend, gs_inbound *in)
{
    int sent = resend == NULL;
    int after_refusal = -1;
    for (int i = 0; i < WAIT_MS / 5; i++) {
        if (!sent)
            sent = gs_transport_send(t, NULL, resend, GS_SEND_DONTWAIT) == 0;
        if (gs_coordinator_step(w->c, 5) != 0)
            fail_msg("step: %s", gs_error_get());
        gs_recv_status st = gs_transport_recv(t, in, GS_RECV_DONTWAIT);
        if (st == GS_RECV_MESSAGE)
            return 1;
        gs_inbound_release(in);
        if (!listed && after_refusal < 0 && gs_zap_refused(w->zap, domain) > before)
            after_refusal = 0;
        if (after_refusal >= 0 && ++after_refusal > 50)
            return 0;
    }
    fail_msg("neither an answer nor a refusal on %s", domain);
    return -1;
}

/* A worker with key DIR/NAME says hello as `stage` on the work socket (through `via` when not
 * NULL). Returns -1 when the connection was refused, else the welcome's accepted (0 or 1) with
 * its reason copied. */
static int hello(world *w, const char *dir, const char *name, int listed, int stage,
                 const char *via, char *reason, size_t n)
{
    /* Read before connecting: the refusal may come before step_until would read it. */
    uint64_t before = gs_zap_refused(w->zap, "work");
    client_keys ck;
    load_client(&ck, dir, name, w->k.coord_pub);
    gs_transport *d = gs_transport_new_curve(
        w->ctx, GS_CHANNEL_WORK, ZMQ_DEALER, GS_CONNECT,
        via ? via : gs_coordinator_endpoint(w->c, GS_CHANNEL_WORK), &quiet, &ck.keys);
    assert_non_null(d);
    Gastroscreen__V1__WorkMessage env = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    Gastroscreen__V1__WorkerHello h = GASTROSCREEN__V1__WORKER_HELLO__INIT;
    env.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    env.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_HELLO;
    env.hello = &h;
    /* One id per key: an id in use by a live worker on another connection is refused. */
    char id[128];
    const char *base = strrchr(name, '/') ? strrchr(name, '/') + 1 : name;
    snprintf(id, sizeof id, "%s.%s@wardhost-secret:4242", gs_stage_name(stage), base);
    h.worker_id = id;
    h.stage = (Gastroscreen__V1__Stage)stage;
    h.host = "wardhost-secret";
    h.pid = 4242;
    h.threads = 1;
    h.batch_size = 1;
    if (stage == GASTROSCREEN__V1__STAGE__STAGE_BLUR ||
        stage == GASTROSCREEN__V1__STAGE__STAGE_INFER)
        h.tile_inbox = "tcp://127.0.0.1:9";
    gs_inbound in;
    int rc = step_until(w, d, "work", before, listed, &env.base, &in);
    if (rc == 1) {
        assert_int_equal(in.msg.work->body_case, GASTROSCREEN__V1__WORK_MESSAGE__BODY_WELCOME);
        rc = in.msg.work->welcome->accepted ? 1 : 0;
        snprintf(reason, n, "%s", in.msg.work->welcome->reason);
        gs_inbound_release(&in);
    } else {
        rc = -1;
    }
    gs_transport_destroy(&d);
    return rc;
}

static void test_worker_keys_and_roles(void **state)
{
    world *w = *state;
    char reason[256];
    /* Unlisted, announcer and client keys never reach the coordinator's work loop. */
    assert_int_equal(hello(w, w->k.dir, "spare/mallory", 0, GASTROSCREEN__V1__STAGE__STAGE_TILER,
                           NULL, reason, sizeof reason),
                     -1);
    assert_int_equal(hello(w, w->k.announcers, "scanner", 0, GASTROSCREEN__V1__STAGE__STAGE_TILER,
                           NULL, reason, sizeof reason),
                     -1);
    assert_int_equal(hello(w, w->k.clients, "alice", 0, GASTROSCREEN__V1__STAGE__STAGE_TILER, NULL,
                           reason, sizeof reason),
                     -1);
    /* A key listed for blur is refused as infer, and as tiler. */
    assert_int_equal(hello(w, w->k.workers, "blur1", 1, GASTROSCREEN__V1__STAGE__STAGE_INFER, NULL,
                           reason, sizeof reason),
                     0);
    assert_non_null(strstr(reason, "not listed for this stage"));
    assert_int_equal(hello(w, w->k.workers, "blur1", 1, GASTROSCREEN__V1__STAGE__STAGE_TILER, NULL,
                           reason, sizeof reason),
                     0);
    /* The tiler key as tiler is welcomed. */
    assert_int_equal(hello(w, w->k.workers, "tiler1", 1, GASTROSCREEN__V1__STAGE__STAGE_TILER, NULL,
                           reason, sizeof reason),
                     1);
    assert_true(gs_zap_refused(w->zap, "work") >= 3);
    gs_coordinator_stats s;
    gs_coordinator_stats_get(w->c, &s);
    assert_int_equal(s.workers_refused, 2);

    /* A reload lists mallory as a tiler: welcomed without a restart. */
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "cp '%s/spare/mallory.pub' '%s/' && echo 'roles = tiler' >> '%s/mallory.pub'",
             w->k.dir, w->k.workers, w->k.workers);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(gs_zap_reload(w->zap), 0);
    assert_int_equal(hello(w, w->k.dir, "spare/mallory", 1, GASTROSCREEN__V1__STAGE__STAGE_TILER,
                           NULL, reason, sizeof reason),
                     1);
}

/* A client REQ with key DIR/NAME asks for the events since 0. Returns -1 when refused, else
 * the number of events in the answer. */
static int query(world *w, const char *dir, const char *name, int listed, const char *via)
{
    uint64_t before = gs_zap_refused(w->zap, "query");
    client_keys ck;
    load_client(&ck, dir, name, w->k.coord_pub);
    gs_transport *r = gs_transport_new_curve(
        w->ctx, GS_CHANNEL_QUERY, ZMQ_REQ, GS_CONNECT,
        via ? via : gs_coordinator_endpoint(w->c, GS_CHANNEL_QUERY), &quiet, &ck.keys);
    assert_non_null(r);
    Gastroscreen__V1__QueryMessage q = GASTROSCREEN__V1__QUERY_MESSAGE__INIT;
    Gastroscreen__V1__EventsSinceRequest es = GASTROSCREEN__V1__EVENTS_SINCE_REQUEST__INIT;
    q.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    q.body_case = GASTROSCREEN__V1__QUERY_MESSAGE__BODY_EVENTS_SINCE;
    q.events_since = &es;
    assert_int_equal(gs_transport_send(r, NULL, &q.base, 0), 0);
    gs_inbound in;
    int rc = step_until(w, r, "query", before, listed, NULL, &in);
    if (rc == 1) {
        assert_int_equal(in.msg.query->body_case, GASTROSCREEN__V1__QUERY_MESSAGE__BODY_EVENTS);
        rc = (int)in.msg.query->events->n_events;
        gs_inbound_release(&in);
    } else {
        rc = -1;
    }
    zmq_setsockopt(gs_transport_socket(r), ZMQ_LINGER, &(int){0}, sizeof(int));
    gs_transport_destroy(&r);
    return rc;
}

/* A client REQ with key DIR/NAME submits the test slide: 1 accepted, -1 refused. */
static int submit(world *w, const char *dir, const char *name, int listed, const char *via)
{
    uint64_t before = gs_zap_refused(w->zap, "submit");
    client_keys ck;
    load_client(&ck, dir, name, w->k.coord_pub);
    gs_transport *r = gs_transport_new_curve(
        w->ctx, GS_CHANNEL_SUBMIT, ZMQ_REQ, GS_CONNECT,
        via ? via : gs_coordinator_endpoint(w->c, GS_CHANNEL_SUBMIT), &quiet, &ck.keys);
    assert_non_null(r);
    Gastroscreen__V1__SubmitMessage m = GASTROSCREEN__V1__SUBMIT_MESSAGE__INIT;
    Gastroscreen__V1__SubmitRequest req = GASTROSCREEN__V1__SUBMIT_REQUEST__INIT;
    m.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    m.body_case = GASTROSCREEN__V1__SUBMIT_MESSAGE__BODY_REQUEST;
    m.request = &req;
    req.path = w->slide;
    req.request_id = "r1";
    assert_int_equal(gs_transport_send(r, NULL, &m.base, 0), 0);
    gs_inbound in;
    int rc = step_until(w, r, "submit", before, listed, NULL, &in);
    if (rc == 1) {
        assert_int_equal(in.msg.submit->body_case, GASTROSCREEN__V1__SUBMIT_MESSAGE__BODY_REPLY);
        gs_inbound_release(&in);
    } else {
        rc = -1;
    }
    zmq_setsockopt(gs_transport_socket(r), ZMQ_LINGER, &(int){0}, sizeof(int));
    gs_transport_destroy(&r);
    return rc;
}

static void test_clients(void **state)
{
    world *w = *state;
    /* Unlisted and worker keys cannot submit or query. */
    assert_int_equal(submit(w, w->k.dir, "spare/mallory", 0, NULL), -1);
    assert_int_equal(submit(w, w->k.workers, "tiler1", 0, NULL), -1);
    assert_int_equal(query(w, w->k.dir, "spare/mallory", 0, NULL), -1);
    assert_int_equal(query(w, w->k.announcers, "scanner", 0, NULL), -1);
    /* The listed client submits, and its query sees the slide's events. */
    assert_int_equal(submit(w, w->k.clients, "alice", 1, NULL), 1);
    assert_true(query(w, w->k.clients, "alice", 1, NULL) >= 1);

    /* Events: an unlisted SUB is refused; the listed client's SUB hears the coordinator. */
    client_keys ck;
    load_client(&ck, w->k.dir, "spare/mallory", w->k.coord_pub);
    gs_transport *sub =
        gs_transport_new_curve(w->ctx, GS_CHANNEL_EVENTS, ZMQ_SUB, GS_CONNECT,
                               gs_coordinator_endpoint(w->c, GS_CHANNEL_EVENTS), &quiet, &ck.keys);
    assert_int_equal(gs_transport_subscribe(sub, ""), 0);
    gs_inbound in;
    assert_int_equal(step_until(w, sub, "events", 0, 0, NULL, &in), 0);
    gs_transport_destroy(&sub);

    /* Reload: mallory listed as a client now gets answers, without a restart. */
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cp '%s/spare/mallory.pub' '%s/'", w->k.dir, w->k.clients);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(gs_zap_reload(w->zap), 0);
    assert_true(query(w, w->k.dir, "spare/mallory", 1, NULL) >= 1);
}

/* Through a relay that records the bytes: a welcomed hello, a submit and a query answer (the
 * slide path goes both ways) show neither the worker id, the host name nor the slide path. */
static void test_wire_not_plaintext(void **state)
{
    world *w = *state;
    char reason[256], ep[128];
    relay r;
    relay_start(&r, gs_coordinator_endpoint(w->c, GS_CHANNEL_WORK), ep, sizeof ep);
    assert_int_equal(hello(w, w->k.workers, "tiler1", 1, GASTROSCREEN__V1__STAGE__STAGE_TILER, ep,
                           reason, sizeof reason),
                     1);
    relay_stop(&r);
    assert_true(r.n_seen > 0);
    assert_false(relay_contains(&r, "wardhost-secret", 15));
    assert_false(relay_contains(&r, "tiler.1@", 8));
    free(r.seen);

    relay_start(&r, gs_coordinator_endpoint(w->c, GS_CHANNEL_SUBMIT), ep, sizeof ep);
    assert_int_equal(submit(w, w->k.clients, "alice", 1, ep), 1);
    relay_stop(&r);
    assert_true(r.n_seen > 0);
    assert_false(relay_contains(&r, "patient-4711", 12));
    free(r.seen);

    relay_start(&r, gs_coordinator_endpoint(w->c, GS_CHANNEL_QUERY), ep, sizeof ep);
    assert_true(query(w, w->k.clients, "alice", 1, ep) >= 1);
    relay_stop(&r);
    assert_true(r.n_seen > 200); /* the answer, with the slide's path, went through */
    assert_false(relay_contains(&r, "patient-4711", 12));
    free(r.seen);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_worker_keys_and_roles, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clients, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wire_not_plaintext, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
