/* gastroscreen submit / status / watch / top against a fake coordinator: a thread of this test
 * that binds the submit and query ROUTERs and the events PUB on loopback (stages/runtime/transport,
 * as PROTOCOL.md §2-3 say) and answers from a small scripted journal. The commands run in this
 * process with stdout and stderr redirected to files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "daemon/cli/client.h"
#include "daemon/cli/commands.h"
#include "ops/error.h"

#define ID_A "00000000000000a1"
#define ID_B "00000000000000b2"
#define ID_C "00000000000000c3"
#define ID_D "00000000000000d4"
#define ID_E "00000000000000e5"

typedef enum {
    PUB_NOTHING = 0,
    PUB_PHASE1, /* verdict B (seq 3) over and over, last_seq 3, plus garbage */
    PUB_PHASE2, /* verdict C (seq 6), last_seq 6: 4 and 5 are missing */
    PUB_PHASE3, /* stats.coordinator. with last_seq 8: 7 and 8 never published */
    PUB_STATS,  /* worker and coordinator stats for top */
} pub_mode;

typedef struct {
    pthread_t thread;
    void *ctx;
    gs_transport *submit, *query, *events;
    char submit_ep[128], query_ep[128], events_ep[128];
    atomic_int stop;
    atomic_int mode;
    atomic_int queries, submits;
    char last_submit_path[4096];
} fake;

static Gastroscreen__V1__Verdict *verdict_of(Gastroscreen__V1__Verdict *v, const char *id,
                                             Gastroscreen__V1__VerdictClass c, float score,
                                             Gastroscreen__V1__ModelProvenance *model)
{
    Gastroscreen__V1__Verdict init = GASTROSCREEN__V1__VERDICT__INIT;
    *v = init;
    v->slide_id = (char *)id;
    v->attempt = 1;
    v->path = (char *)"/srv/slides/x.svs";
    v->verdict_class = c;
    v->score = score;
    v->threshold = 0.74f;
    v->reason = (char *)"because";
    v->model = model;
    v->state = c == GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_FAILED
                   ? GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_FAILED
                   : GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_DONE;
    return v;
}

/* The scripted journal: event seq (1..8), filled into storage owned by the caller. */
typedef struct {
    Gastroscreen__V1__EventMessage e;
    Gastroscreen__V1__Verdict v;
    Gastroscreen__V1__SlideAccepted a;
    Gastroscreen__V1__SlideStateChanged s;
    Gastroscreen__V1__ModelProvenance m;
} event_storage;

static Gastroscreen__V1__EventMessage *journal_event(event_storage *st, uint64_t seq,
                                                     uint64_t last_seq)
{
    Gastroscreen__V1__EventMessage e = GASTROSCREEN__V1__EVENT_MESSAGE__INIT;
    Gastroscreen__V1__SlideAccepted a = GASTROSCREEN__V1__SLIDE_ACCEPTED__INIT;
    Gastroscreen__V1__SlideStateChanged s = GASTROSCREEN__V1__SLIDE_STATE_CHANGED__INIT;
    Gastroscreen__V1__ModelProvenance m = GASTROSCREEN__V1__MODEL_PROVENANCE__INIT;
    st->e = e;
    st->a = a;
    st->s = s;
    st->m = m;
    st->m.untrained = 1;
    st->e.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    st->e.seq = seq;
    st->e.last_seq = last_seq;
    const char *accepted = NULL, *vid = NULL;
    Gastroscreen__V1__VerdictClass vc = 0;
    float score = 0;
    switch (seq) {
    case 1:
        accepted = ID_A;
        break;
    case 2:
        vid = ID_A;
        vc = GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_POSITIVE;
        score = 0.9f;
        break;
    case 3:
        vid = ID_B;
        vc = GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_NEGATIVE;
        score = 0.1f;
        break;
    case 4:
        accepted = ID_D;
        break;
    case 5:
        vid = ID_D;
        vc = GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_UNASSESSABLE;
        break;
    case 6:
        vid = ID_C;
        vc = GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_FAILED;
        break;
    case 7:
        break;
    case 8:
        vid = ID_E;
        vc = GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_POSITIVE;
        score = 0.8f;
        break;
    default:
        fail();
    }
    if (accepted) {
        st->a.slide_id = (char *)accepted;
        st->a.path = (char *)"/srv/slides/x.svs";
        st->e.body_case = GASTROSCREEN__V1__EVENT_MESSAGE__BODY_ACCEPTED;
        st->e.accepted = &st->a;
    } else if (vid) {
        st->e.body_case = GASTROSCREEN__V1__EVENT_MESSAGE__BODY_VERDICT;
        st->e.verdict = verdict_of(&st->v, vid, vc, score, seq == 8 ? &st->m : NULL);
    } else {
        st->s.slide_id = (char *)ID_E;
        st->s.attempt = 1;
        st->s.from = GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_ACCEPTED;
        st->s.to = GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_PLANNED;
        st->e.body_case = GASTROSCREEN__V1__EVENT_MESSAGE__BODY_STATE_CHANGED;
        st->e.state_changed = &st->s;
    }
    return &st->e;
}

static uint64_t published_last_seq(int mode)
{
    return mode == PUB_PHASE1 ? 3 : mode == PUB_PHASE2 ? 6 : 8;
}

static void send_raw(gs_transport *t, const gs_peer *to, const void *bytes, size_t len)
{
    void *s = gs_transport_socket(t);
    zmq_send(s, to->id, to->len, ZMQ_SNDMORE);
    zmq_send(s, "", 0, ZMQ_SNDMORE);
    zmq_send(s, bytes, len, 0);
}

static void answer_submit(fake *f, gs_inbound *in)
{
    const Gastroscreen__V1__SubmitRequest *rq = in->msg.submit->request;
    atomic_fetch_add(&f->submits, 1);
    snprintf(f->last_submit_path, sizeof f->last_submit_path, "%s", rq->path);
    if (strstr(rq->path, "garbage")) {
        send_raw(f->submit, &in->from, "\x08\x01\xff\xff\xff", 5);
        return;
    }
    Gastroscreen__V1__SubmitReply r = GASTROSCREEN__V1__SUBMIT_REPLY__INIT;
    r.request_id = strstr(rq->path, "wrongid") ? (char *)"not-yours" : rq->request_id;
    if (strstr(rq->path, "refuse")) {
        r.status = GASTROSCREEN__V1__SUBMIT_STATUS__SUBMIT_STATUS_REJECTED;
        r.error = (char *)"outside the slide roots";
    } else {
        r.status = strstr(rq->path, "dup")
                       ? GASTROSCREEN__V1__SUBMIT_STATUS__SUBMIT_STATUS_DUPLICATE
                       : GASTROSCREEN__V1__SUBMIT_STATUS__SUBMIT_STATUS_ACCEPTED;
        r.slide_id = strstr(rq->path, "badid") ? (char *)"XYZ" : (char *)ID_A;
        r.seq = 1;
    }
    Gastroscreen__V1__SubmitMessage m = GASTROSCREEN__V1__SUBMIT_MESSAGE__INIT;
    m.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    m.body_case = GASTROSCREEN__V1__SUBMIT_MESSAGE__BODY_REPLY;
    m.reply = &r;
    assert_int_equal(gs_transport_send(f->submit, &in->from, &m.base, 0), 0);
}

static void answer_query(fake *f, gs_inbound *in)
{
    const Gastroscreen__V1__QueryMessage *q = in->msg.query;
    atomic_fetch_add(&f->queries, 1);
    Gastroscreen__V1__QueryMessage m = GASTROSCREEN__V1__QUERY_MESSAGE__INIT;
    m.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    if (q->body_case == GASTROSCREEN__V1__QUERY_MESSAGE__BODY_EVENTS_SINCE) {
        /* At most two events per reply, so the client has to repeat. */
        uint64_t last = published_last_seq(atomic_load(&f->mode));
        event_storage st[2];
        Gastroscreen__V1__EventMessage *evs[2];
        Gastroscreen__V1__EventsSinceReply r = GASTROSCREEN__V1__EVENTS_SINCE_REPLY__INIT;
        for (uint64_t s = q->events_since->after_seq + 1; s <= last && r.n_events < 2; s++) {
            evs[r.n_events] = journal_event(&st[r.n_events], s, last);
            r.n_events++;
        }
        r.events = evs;
        r.last_seq = last;
        r.oldest_retained_seq = 1;
        m.body_case = GASTROSCREEN__V1__QUERY_MESSAGE__BODY_EVENTS;
        m.events = &r;
        assert_int_equal(gs_transport_send(f->query, &in->from, &m.base, 0), 0);
        return;
    }
    const Gastroscreen__V1__SlideStateRequest *rq = q->slide_state;
    if (!strcmp(rq->path, "/garbage")) {
        send_raw(f->query, &in->from, "garbage!", 8);
        return;
    }
    Gastroscreen__V1__QueryError err = GASTROSCREEN__V1__QUERY_ERROR__INIT;
    if (!strcmp(rq->path, "/error")) {
        err.error = (char *)"journal unreadable";
        m.body_case = GASTROSCREEN__V1__QUERY_MESSAGE__BODY_ERROR;
        m.error = &err;
        assert_int_equal(gs_transport_send(f->query, &in->from, &m.base, 0), 0);
        return;
    }
    Gastroscreen__V1__TileCounts tiles = GASTROSCREEN__V1__TILE_COUNTS__INIT;
    tiles.planned = 300;
    tiles.inferred = 120;
    tiles.background = 30;
    Gastroscreen__V1__SlideStatus s1 = GASTROSCREEN__V1__SLIDE_STATUS__INIT, s2 = s1;
    Gastroscreen__V1__SlideStatus *list[2] = {&s1, &s2};
    Gastroscreen__V1__Verdict v;
    Gastroscreen__V1__ModelProvenance model = GASTROSCREEN__V1__MODEL_PROVENANCE__INIT;
    model.untrained = 1;
    model.notice = (char *)"model: untrained — not a diagnosis";
    model.precision = (char *)"bf16+fp32";
    char *warnings[] = {(char *)"no mpp: used default 0.25"};
    Gastroscreen__V1__SlideStateReply r = GASTROSCREEN__V1__SLIDE_STATE_REPLY__INIT;
    r.slides = list;
    s1.slide_id = (char *)ID_B;
    s1.attempt = 2;
    s1.path = (char *)"/srv/slides/b.svs";
    s1.state = GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_INFERRING;
    s1.tiles = &tiles;
    s2.slide_id = (char *)ID_C;
    s2.attempt = 1;
    s2.path = (char *)"/srv/slides/c.svs";
    s2.state = GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_ACCEPTED;
    if (rq->in_flight) {
        r.n_slides = 2;
    } else if (!strcmp(rq->slide_id, ID_A)) {
        s1.slide_id = (char *)ID_A;
        s1.state = GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_DONE;
        s1.verdict = verdict_of(&v, ID_A, GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_POSITIVE,
                                0.91f, &model);
        v.n_warnings = 1;
        v.warnings = warnings;
        r.n_slides = 1;
    } else if (!strcmp(rq->slide_id, ID_D)) {
        s1.slide_id = (char *)"not-an-id"; /* malformed */
        r.n_slides = 1;
    } else {
        r.n_slides = 0; /* unknown */
    }
    m.body_case = GASTROSCREEN__V1__QUERY_MESSAGE__BODY_STATE;
    m.state = &r;
    assert_int_equal(gs_transport_send(f->query, &in->from, &m.base, 0), 0);
}

static void publish_stats(fake *f, Gastroscreen__V1__Stage stage, const char *id, double tps,
                          double busy, uint32_t queue, uint32_t in_flight, uint64_t last_seq)
{
    Gastroscreen__V1__StageStats s = GASTROSCREEN__V1__STAGE_STATS__INIT;
    s.stage = stage;
    s.instance_id = (char *)id;
    s.tiles_per_second = tps;
    s.busy_fraction = busy;
    s.queue_depth = queue;
    s.processed = 100;
    s.errors = 1;
    s.rss_bytes = 1048576;
    s.slides_in_flight = in_flight;
    Gastroscreen__V1__EventMessage e = GASTROSCREEN__V1__EVENT_MESSAGE__INIT;
    e.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    e.last_seq = last_seq;
    e.body_case = GASTROSCREEN__V1__EVENT_MESSAGE__BODY_STATS;
    e.stats = &s;
    assert_int_equal(gs_transport_send(f->events, NULL, &e.base, GS_SEND_DONTWAIT), 0);
}

static void publish_garbage(fake *f, const char *topic)
{
    void *s = gs_transport_socket(f->events);
    zmq_send(s, topic, strlen(topic), ZMQ_SNDMORE);
    zmq_send(s, "\xde\xad\xbe\xef", 4, 0);
}

static void publish(fake *f)
{
    int mode = atomic_load(&f->mode);
    event_storage st;
    switch (mode) {
    case PUB_PHASE1:
        publish_garbage(f, "slide.verdict.positive.");
        assert_int_equal(gs_transport_send(f->events, NULL, &journal_event(&st, 3, 3)->base, 0), 0);
        break;
    case PUB_PHASE2:
        assert_int_equal(gs_transport_send(f->events, NULL, &journal_event(&st, 6, 6)->base, 0), 0);
        break;
    case PUB_PHASE3:
        publish_stats(f, GASTROSCREEN__V1__STAGE__STAGE_COORDINATOR, "coord-1", 0, 0.1, 0, 1, 8);
        break;
    case PUB_STATS:
        publish_garbage(f, "stats.infer.");
        publish_stats(f, GASTROSCREEN__V1__STAGE__STAGE_INFER, "infer.1@h:1", 10, 0.5, 3, 0, 0);
        publish_stats(f, GASTROSCREEN__V1__STAGE__STAGE_INFER, "infer.2@h:2", 20, 1.0, 5, 0, 0);
        publish_stats(f, GASTROSCREEN__V1__STAGE__STAGE_TILER, "tiler.1@h:3", 30, 0.25, 8, 0, 0);
        /* busy 1.5 is impossible: dropped by top */
        publish_stats(f, GASTROSCREEN__V1__STAGE__STAGE_BLUR, "blur.1@h:4", 5, 1.5, 1, 0, 0);
        publish_stats(f, GASTROSCREEN__V1__STAGE__STAGE_COORDINATOR, "coord-1", 0, 0.1, 0, 2, 9);
        break;
    default:
        break;
    }
}

static void *fake_main(void *arg)
{
    fake *f = arg;
    while (!atomic_load(&f->stop)) {
        zmq_pollitem_t items[2] = {
            {.socket = gs_transport_socket(f->submit), .events = ZMQ_POLLIN},
            {.socket = gs_transport_socket(f->query), .events = ZMQ_POLLIN},
        };
        int n = zmq_poll(items, 2, 10);
        if (n > 0 && (items[0].revents & ZMQ_POLLIN)) {
            gs_inbound in = {0};
            if (gs_transport_recv(f->submit, &in, GS_RECV_DONTWAIT) == GS_RECV_MESSAGE)
                answer_submit(f, &in);
            gs_inbound_release(&in);
        }
        if (n > 0 && (items[1].revents & ZMQ_POLLIN)) {
            gs_inbound in = {0};
            if (gs_transport_recv(f->query, &in, GS_RECV_DONTWAIT) == GS_RECV_MESSAGE)
                answer_query(f, &in);
            gs_inbound_release(&in);
        }
        publish(f);
    }
    return NULL;
}

static int fake_start(void **state)
{
    fake *f = calloc(1, sizeof *f);
    f->ctx = zmq_ctx_new();
    gs_transport_options quiet = {.quiet = 1};
    f->submit = gs_transport_new(f->ctx, GS_CHANNEL_SUBMIT, ZMQ_ROUTER, GS_BIND,
                                 "tcp://127.0.0.1:*", &quiet);
    f->query = gs_transport_new(f->ctx, GS_CHANNEL_QUERY, ZMQ_ROUTER, GS_BIND, "tcp://127.0.0.1:*",
                                &quiet);
    f->events =
        gs_transport_new(f->ctx, GS_CHANNEL_EVENTS, ZMQ_PUB, GS_BIND, "tcp://127.0.0.1:*", &quiet);
    assert_true(f->submit && f->query && f->events);
    snprintf(f->submit_ep, sizeof f->submit_ep, "submit=%s", gs_transport_endpoint(f->submit));
    snprintf(f->query_ep, sizeof f->query_ep, "query=%s", gs_transport_endpoint(f->query));
    snprintf(f->events_ep, sizeof f->events_ep, "events=%s", gs_transport_endpoint(f->events));
    assert_int_equal(pthread_create(&f->thread, NULL, fake_main, f), 0);
    *state = f;
    return 0;
}

static int fake_stop(void **state)
{
    fake *f = *state;
    atomic_store(&f->stop, 1);
    pthread_join(f->thread, NULL);
    gs_transport_destroy(&f->submit);
    gs_transport_destroy(&f->query);
    gs_transport_destroy(&f->events);
    zmq_ctx_term(f->ctx);
    free(f);
    return 0;
}

/* Output capture: stdout and stderr of a command go to temporary files. */
typedef struct {
    char out_path[64], err_path[64];
    int saved_out, saved_err;
} capture;

static void capture_begin(capture *c)
{
    strcpy(c->out_path, "/tmp/gs-cli-out-XXXXXX");
    strcpy(c->err_path, "/tmp/gs-cli-err-XXXXXX");
    int o = mkstemp(c->out_path), e = mkstemp(c->err_path);
    assert_true(o >= 0 && e >= 0);
    fflush(stdout);
    fflush(stderr);
    c->saved_out = dup(1);
    c->saved_err = dup(2);
    dup2(o, 1);
    dup2(e, 2);
    close(o);
    close(e);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char *buf = calloc(1, 1 << 20);
    size_t n = fread(buf, 1, (1 << 20) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void capture_end(capture *c, char **out, char **err)
{
    fflush(stdout);
    fflush(stderr);
    dup2(c->saved_out, 1);
    dup2(c->saved_err, 2);
    close(c->saved_out);
    close(c->saved_err);
    *out = slurp(c->out_path);
    *err = slurp(c->err_path);
    unlink(c->out_path);
    unlink(c->err_path);
}

typedef int command_fn(int, char **);

static int run(command_fn *fn, char **out, char **err, int argc, const char **argv)
{
    capture c;
    capture_begin(&c);
    int rc = fn(argc, (char **)argv);
    capture_end(&c, out, err);
    return rc;
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static void submit_prints_ids_and_refusals(void **state)
{
    fake *f = *state;
    char *out, *err;
    const char *argv[] = {"submit",
                          "--endpoint",
                          f->submit_ep,
                          "/srv/slides/a.svs",
                          "/srv/slides/dup.svs",
                          "/srv/slides/refuse.svs"};
    int rc = run(gs_cmd_submit, &out, &err, 6, argv);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, ID_A " accepted /srv/slides/a.svs\n"));
    assert_non_null(strstr(out, ID_A " duplicate /srv/slides/dup.svs\n"));
    assert_int_equal(count_lines(out), 2);
    assert_non_null(strstr(err, "/srv/slides/refuse.svs: refused: outside the slide roots"));
    free(out);
    free(err);

    /* All accepted: exit 0; a relative path goes out absolute. */
    const char *argv2[] = {"submit", "--endpoint", f->submit_ep, "relative.svs"};
    rc = run(gs_cmd_submit, &out, &err, 4, argv2);
    assert_int_equal(rc, 0);
    assert_int_equal(count_lines(out), 1);
    assert_true(f->last_submit_path[0] == '/');
    assert_non_null(strstr(f->last_submit_path, "/relative.svs"));
    free(out);
    free(err);
}

static void submit_survives_malformed_replies(void **state)
{
    fake *f = *state;
    char *out, *err;
    const char *argv[] = {"submit",       "--endpoint",     f->submit_ep, "/s/garbage.svs",
                          "/s/badid.svs", "/s/wrongid.svs", "/s/fine.svs"};
    int rc = run(gs_cmd_submit, &out, &err, 7, argv);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(err, "/s/garbage.svs: malformed reply"));
    assert_non_null(strstr(err, "/s/badid.svs: malformed reply: slide id"));
    assert_non_null(strstr(err, "/s/wrongid.svs: malformed reply: request id"));
    /* The path after the garbage still went through, on a fresh socket. */
    assert_string_equal(out, ID_A " accepted /s/fine.svs\n");
    free(out);
    free(err);
}

static void commands_without_a_coordinator_fail_clearly(void **state)
{
    (void)state;
    char dead[128];
    snprintf(dead, sizeof dead, "ipc:///tmp/gs-test-no-coordinator-%ld", (long)getpid());
    char submit_ep[160], query_ep[160], events_ep[160];
    snprintf(submit_ep, sizeof submit_ep, "submit=%s", dead);
    snprintf(query_ep, sizeof query_ep, "query=%s", dead);
    snprintf(events_ep, sizeof events_ep, "events=%s", dead);
    char *out, *err;
    const char *submit_argv[] = {"submit",  "--timeout", "0.3",     "--endpoint",
                                 submit_ep, "/s/a.svs",  "/s/b.svs"};
    assert_int_equal(run(gs_cmd_submit, &out, &err, 7, submit_argv), 1);
    assert_non_null(strstr(err, "is gastroscreend running?"));
    assert_non_null(strstr(err, "/s/b.svs: not submitted"));
    assert_string_equal(out, "");
    free(out);
    free(err);
    const char *status_argv[] = {"status", "--timeout", "0.3", "--endpoint", query_ep};
    assert_int_equal(run(gs_cmd_status, &out, &err, 5, status_argv), 1);
    assert_non_null(strstr(err, "is gastroscreend running?"));
    free(out);
    free(err);
    const char *watch_argv[] = {"watch",   "--timeout",  "0.3",   "--endpoint",
                                events_ep, "--endpoint", query_ep};
    assert_int_equal(run(gs_cmd_watch, &out, &err, 7, watch_argv), 1);
    assert_non_null(strstr(err, "is gastroscreend running?"));
    free(out);
    free(err);
    const char *top_argv[] = {"top", "--once", "--timeout", "0.3", "--endpoint", events_ep};
    assert_int_equal(run(gs_cmd_top, &out, &err, 6, top_argv), 1);
    assert_non_null(strstr(err, "is gastroscreend running?"));
    free(out);
    free(err);

    /* Usage errors are 2, and an in-process endpoint is refused. */
    const char *bad1[] = {"status", "--endpoint", "query=inproc://gs-query"};
    assert_int_equal(run(gs_cmd_status, &out, &err, 3, bad1), 2);
    assert_non_null(strstr(err, "in-process"));
    free(out);
    free(err);
    const char *bad2[] = {"submit"};
    assert_int_equal(run(gs_cmd_submit, &out, &err, 1, bad2), 2);
    free(out);
    free(err);
    const char *bad3[] = {"top", "--json"};
    assert_int_equal(run(gs_cmd_top, &out, &err, 2, bad3), 2);
    free(out);
    free(err);
    const char *bad4[] = {"watch", "--endpoint", "nonsense"};
    assert_int_equal(run(gs_cmd_watch, &out, &err, 3, bad4), 2);
    free(out);
    free(err);
}

static void connect_addresses(void **state)
{
    (void)state;
    char buf[64];
    assert_int_equal(gs_cli_connect_address("tcp://*:5551", buf, sizeof buf), 0);
    assert_string_equal(buf, "tcp://127.0.0.1:5551");
    assert_int_equal(gs_cli_connect_address("tcp://0.0.0.0:5552", buf, sizeof buf), 0);
    assert_string_equal(buf, "tcp://127.0.0.1:5552");
    assert_int_equal(gs_cli_connect_address("tcp://[::]:5553", buf, sizeof buf), 0);
    assert_string_equal(buf, "tcp://[::1]:5553");
    assert_int_equal(gs_cli_connect_address("tcp://coord:5553", buf, sizeof buf), 0);
    assert_string_equal(buf, "tcp://coord:5553");
    assert_int_equal(gs_cli_connect_address("inproc://gs-events", buf, sizeof buf), -1);
    assert_int_equal(gs_cli_connect_address("", buf, sizeof buf), -1);
    assert_int_equal(
        gs_cli_connect_address("tcp://a-very-long-host-name-indeed.example:5553", buf, 16), -1);

    /* The config's bind addresses become connect addresses; --endpoint wins. */
    const char *src = getenv("GS_SOURCE_DIR");
    assert_non_null(src);
    char conf[4096];
    snprintf(conf, sizeof conf, "%s/systemd/gastroscreen.conf", src);
    gs_cli_options o;
    gs_cli_options_init(&o);
    const char *argv[] = {"x",         "--config", conf, "--endpoint", "events=ipc:///run/x.sock",
                          "--timeout", "2.5"};
    for (int i = 1; i < 7; i++)
        assert_int_equal(gs_cli_option(&o, 7, (char **)argv, &i), 1);
    assert_int_equal(gs_cli_options_finish(&o), 0);
    assert_string_equal(o.submit, "tcp://127.0.0.1:5551");
    assert_string_equal(o.query, "tcp://127.0.0.1:5552");
    assert_string_equal(o.events, "ipc:///run/x.sock");
    assert_int_equal(o.timeout_ms, 2500);
    const char *bad[] = {"x", "--timeout", "-1"};
    int i = 1;
    gs_cli_options_init(&o);
    assert_int_equal(gs_cli_option(&o, 3, (char **)bad, &i), -1);
    gs_cli_options_init(&o);
    o.config_path = "/nonexistent/gastroscreen.conf";
    assert_int_equal(gs_cli_options_finish(&o), -1);
}

static void status_lists_and_details(void **state)
{
    fake *f = *state;
    char *out, *err;
    const char *all[] = {"status", "--endpoint", f->query_ep};
    assert_int_equal(run(gs_cmd_status, &out, &err, 3, all), 0);
    assert_int_equal(count_lines(out), 3); /* header + 2 slides */
    assert_non_null(strstr(out, ID_B "  inferring"));
    assert_non_null(strstr(out, "150/300"));
    assert_non_null(strstr(out, ID_C "  accepted"));
    free(out);
    free(err);

    const char *one[] = {"status", ID_A, "--endpoint", f->query_ep};
    assert_int_equal(run(gs_cmd_status, &out, &err, 4, one), 0);
    assert_non_null(strstr(out, ID_A "  done"));
    assert_non_null(strstr(out, "positive 0.910"));
    assert_non_null(strstr(out, "reason: because\n"));
    assert_non_null(strstr(out, "warning: no mpp: used default 0.25\n"));
    assert_non_null(strstr(out, "\nmodel: untrained — not a diagnosis\n"));
    assert_null(strstr(out, "model: model:"));
    assert_non_null(strstr(out, "\nprecision: bf16+fp32\n"));
    free(out);
    free(err);

    const char *json[] = {"status", ID_A, "--json", "--endpoint", f->query_ep};
    assert_int_equal(run(gs_cmd_status, &out, &err, 5, json), 0);
    json_error_t jerr;
    json_t *j = json_loads(out, 0, &jerr);
    assert_non_null(j);
    assert_int_equal(json_array_size(j), 1);
    json_t *s0 = json_array_get(j, 0);
    assert_string_equal(json_string_value(json_object_get(s0, "slide_id")), ID_A);
    json_t *v = json_object_get(s0, "verdict");
    assert_string_equal(json_string_value(json_object_get(v, "class")), "positive");
    assert_true(json_is_true(json_object_get(v, "untrained")));
    assert_string_equal(json_string_value(json_object_get(v, "precision")), "bf16+fp32");
    json_decref(j);
    free(out);
    free(err);

    const char *unknown[] = {"status", ID_E, "--endpoint", f->query_ep};
    assert_int_equal(run(gs_cmd_status, &out, &err, 4, unknown), 1);
    assert_non_null(strstr(err, "unknown slide"));
    free(out);
    free(err);
    const char *malformed[] = {"status", ID_D, "--endpoint", f->query_ep};
    assert_int_equal(run(gs_cmd_status, &out, &err, 4, malformed), 1);
    assert_non_null(strstr(err, "malformed reply: slide id"));
    free(out);
    free(err);
    const char *garbage[] = {"status", "/garbage", "--endpoint", f->query_ep};
    assert_int_equal(run(gs_cmd_status, &out, &err, 4, garbage), 1);
    assert_non_null(strstr(err, "malformed reply"));
    free(out);
    free(err);
    const char *error[] = {"status", "/error", "--endpoint", f->query_ep};
    assert_int_equal(run(gs_cmd_status, &out, &err, 4, error), 1);
    assert_non_null(strstr(err, "journal unreadable"));
    free(out);
    free(err);
}

typedef struct {
    fake *f;
    int rc;
    const char **argv;
    int argc;
} watch_run;

static void *watch_thread(void *arg)
{
    watch_run *w = arg;
    w->rc = gs_cmd_watch(w->argc, (char **)w->argv);
    fflush(stdout);
    return NULL;
}

/* Waits (bounded, for a hung command never to hang the suite) until the file holds text. */
static int wait_for_text(const char *path, const char *text)
{
    for (int i = 0; i < 6000; i++) {
        fflush(stdout);
        char *s = slurp(path);
        int found = strstr(s, text) != NULL;
        free(s);
        if (found)
            return 1;
        nanosleep(&(struct timespec){.tv_nsec = 10 * 1000 * 1000}, NULL);
    }
    return 0;
}

static void watch_prints_each_verdict_once_across_gaps(void **state)
{
    fake *f = *state;
    atomic_store(&f->mode, PUB_PHASE1);
    const char *argv[] = {"watch",      "--count",    "4",        "--endpoint",
                          f->events_ep, "--endpoint", f->query_ep};
    watch_run w = {.f = f, .argv = argv, .argc = 7};
    capture c;
    capture_begin(&c);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, watch_thread, &w), 0);
    /* B is published over and over: printed once. Then C arrives with 4 and 5 missing. */
    int saw_b = wait_for_text(c.out_path, ID_B);
    atomic_store(&f->mode, PUB_PHASE2);
    int saw_c = saw_b && wait_for_text(c.out_path, ID_C);
    /* Then only the coordinator's stats tell that 7 and 8 exist. */
    atomic_store(&f->mode, PUB_PHASE3);
    pthread_join(t, NULL);
    char *out, *err;
    capture_end(&c, &out, &err);
    atomic_store(&f->mode, PUB_NOTHING);
    assert_true(saw_b && saw_c);
    assert_int_equal(w.rc, 0);
    const char *expected = ID_B " negative 0.100 /srv/slides/x.svs (because)\n" ID_D
                                " unassessable 0.000 /srv/slides/x.svs (because)\n" ID_C
                                " failed 0.000 /srv/slides/x.svs (because)\n" ID_E
                                " positive 0.800 /srv/slides/x.svs (because) [model: untrained "
                                "— not a diagnosis]\n";
    assert_string_equal(out, expected);
    assert_true(atomic_load(&f->queries) >= 3); /* 4-5, 6, then 7-8 */
    free(out);
    free(err);

    /* --since 0: everything from the journal first, in order. */
    atomic_store(&f->mode, PUB_PHASE3);
    const char *argv2[] = {"watch",      "--since",    "0",          "--count",  "3",
                           "--endpoint", f->events_ep, "--endpoint", f->query_ep};
    int rc = run(gs_cmd_watch, &out, &err, 9, argv2);
    atomic_store(&f->mode, PUB_NOTHING);
    assert_int_equal(rc, 0);
    assert_int_equal(count_lines(out), 3);
    assert_true(!strncmp(out, ID_A " positive", 25));
    char *second = strchr(out, '\n') + 1;
    assert_true(!strncmp(second, ID_B " negative", 25));
    char *third = strchr(second, '\n') + 1;
    assert_true(!strncmp(third, ID_D " unassessable", 29));
    free(out);
    free(err);
}

static void top_once_json_aggregates_stages(void **state)
{
    fake *f = *state;
    atomic_store(&f->mode, PUB_STATS);
    char *out, *err;
    const char *argv[] = {"top", "--once", "--json", "--endpoint", f->events_ep};
    int rc = run(gs_cmd_top, &out, &err, 5, argv);
    assert_int_equal(rc, 0);
    json_error_t jerr;
    json_t *j = json_loads(out, 0, &jerr);
    if (!j)
        fprintf(stderr, "top output: %s\nerror: %s\n", out, jerr.text);
    assert_non_null(j);
    assert_int_equal(json_integer_value(json_object_get(j, "slides_in_flight")), 2);
    assert_int_equal(json_integer_value(json_object_get(j, "last_seq")), 9);
    json_t *stages = json_object_get(j, "stages");
    assert_int_equal(json_array_size(stages), 6);
    int seen = 0;
    for (size_t i = 0; i < json_array_size(stages); i++) {
        json_t *s = json_array_get(stages, i);
        const char *name = json_string_value(json_object_get(s, "stage"));
        int inst = (int)json_integer_value(json_object_get(s, "instances"));
        double tps = json_real_value(json_object_get(s, "tiles_per_second"));
        double busy = json_real_value(json_object_get(s, "busy_percent"));
        int queue = (int)json_integer_value(json_object_get(s, "queue_depth"));
        if (!strcmp(name, "infer")) {
            assert_int_equal(inst, 2);
            assert_true(tps == 30.0 && busy == 75.0 && queue == 8);
            assert_int_equal(json_integer_value(json_object_get(s, "processed")), 200);
            seen++;
        } else if (!strcmp(name, "tiler")) {
            assert_int_equal(inst, 1);
            assert_true(tps == 30.0 && busy == 25.0 && queue == 8);
            seen++;
        } else if (!strcmp(name, "blur")) {
            assert_int_equal(inst, 0); /* its only stats were malformed */
            seen++;
        } else {
            assert_int_equal(inst, 0);
        }
    }
    assert_int_equal(seen, 3);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(j, "coordinator"), "instances")), 1);
    json_decref(j);
    free(out);
    free(err);

    const char *argv2[] = {"top", "--once", "--endpoint", f->events_ep};
    rc = run(gs_cmd_top, &out, &err, 4, argv2);
    atomic_store(&f->mode, PUB_NOTHING);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "slides in flight: 2"));
    assert_non_null(strstr(out, "infer"));
    free(out);
    free(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(connect_addresses),
        cmocka_unit_test(commands_without_a_coordinator_fail_clearly),
        cmocka_unit_test_setup_teardown(submit_prints_ids_and_refusals, fake_start, fake_stop),
        cmocka_unit_test_setup_teardown(submit_survives_malformed_replies, fake_start, fake_stop),
        cmocka_unit_test_setup_teardown(status_lists_and_details, fake_start, fake_stop),
        cmocka_unit_test_setup_teardown(watch_prints_each_verdict_once_across_gaps, fake_start,
                                        fake_stop),
        cmocka_unit_test_setup_teardown(top_once_json_aggregates_stages, fake_start, fake_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
