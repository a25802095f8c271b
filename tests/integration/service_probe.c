/*
 * service_probe: the ZeroMQ side of the service integration test (tests/integration/
 * service.py), written against stages/runtime/transport so it speaks the protocol exactly.
 *
 *   service_probe announce INTAKE EVENTS BOUND_S LINGER_S PATH...
 *       Publishes a `slide.arrived.` event for each PATH on a PUB connected to the
 *       coordinator's intake socket, again every second until a `slide.accepted.` event for
 *       that path is seen (PUB/SUB drops what is sent before the connection is up; intake is
 *       idempotent, so a repeat is a duplicate, never a second slide). Subscribes to every
 *       event and waits, at most BOUND_S seconds, until each path has a verdict, then listens
 *       LINGER_S seconds more, so a second verdict for a slide would be seen. Prints
 *           verdict PATH CLASS inferred=N reason=R        (one per verdict event)
 *           states PATH S1,S2,...                         (state events seen for the slide)
 *           worker STAGE INSTANCE processed=N malformed=M (newest stats of each worker)
 *       and exits 0 when every path got a verdict, 1 otherwise, 2 on a usage error.
 *   service_probe garbage KIND ENDPOINT
 *       Sends garbage to one socket: random bytes, an empty frame, too many frames, and a
 *       well-formed envelope of a type that socket must not carry. KIND is intake (connects a
 *       PUB), submit or query (a DEALER speaking REQ framing), work (a DEALER) or tiles (a
 *       PUSH). Exits 0 when everything was handed to ZeroMQ.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "ops/error.h"
#include "proto/gastroscreen.pb-c.h"
#include "stages/runtime/transport.h"

#define MAX_SLIDES 64
#define MAX_WORKERS 32

typedef struct {
    const char *path;
    char id[64];
    int accepted, verdicts;
    char states[512];
} slide_rec;

typedef struct {
    char stage[32], instance[256];
    uint64_t processed, malformed;
} worker_rec;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static slide_rec *by_id(slide_rec *s, int n, const char *id)
{
    for (int i = 0; i < n; i++)
        if (s[i].id[0] && !strcmp(s[i].id, id))
            return &s[i];
    return NULL;
}

static int announce_one(gs_transport *pub, const char *path)
{
    Gastroscreen__V1__SlideArrived a = GASTROSCREEN__V1__SLIDE_ARRIVED__INIT;
    a.path = (char *)path;
    a.announcer = "service_probe";
    Gastroscreen__V1__EventMessage ev = GASTROSCREEN__V1__EVENT_MESSAGE__INIT;
    ev.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    ev.body_case = GASTROSCREEN__V1__EVENT_MESSAGE__BODY_ARRIVED;
    ev.arrived = &a;
    return gs_transport_send(pub, NULL, &ev.base, GS_SEND_DONTWAIT);
}

static void on_event(const Gastroscreen__V1__EventMessage *ev, slide_rec *s, int n, worker_rec *w,
                     int *nw)
{
    switch (ev->body_case) {
    case GASTROSCREEN__V1__EVENT_MESSAGE__BODY_ACCEPTED:
        for (int i = 0; i < n; i++)
            if (!strcmp(s[i].path, ev->accepted->path)) {
                s[i].accepted = 1;
                snprintf(s[i].id, sizeof s[i].id, "%s", ev->accepted->slide_id);
            }
        break;
    case GASTROSCREEN__V1__EVENT_MESSAGE__BODY_STATE_CHANGED: {
        slide_rec *r = by_id(s, n, ev->state_changed->slide_id);
        if (r) {
            const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
                &gastroscreen__v1__slide_state__descriptor, ev->state_changed->to);
            size_t len = strlen(r->states);
            snprintf(r->states + len, sizeof r->states - len, "%s%s", len ? "," : "",
                     v ? v->name : "?");
        }
        break;
    }
    case GASTROSCREEN__V1__EVENT_MESSAGE__BODY_VERDICT: {
        const Gastroscreen__V1__Verdict *v = ev->verdict;
        slide_rec *r = by_id(s, n, v->slide_id);
        const ProtobufCEnumValue *cls = protobuf_c_enum_descriptor_get_value(
            &gastroscreen__v1__verdict_class__descriptor, v->verdict_class);
        printf("verdict %s %s inferred=%u reason=%s\n", r ? r->path : v->path,
               cls ? cls->name : "?", v->tiles ? v->tiles->inferred : 0, v->reason);
        fflush(stdout);
        if (r)
            r->verdicts++;
        break;
    }
    case GASTROSCREEN__V1__EVENT_MESSAGE__BODY_STATS: {
        const Gastroscreen__V1__StageStats *st = ev->stats;
        const char *stage = gs_stage_name(st->stage) ? gs_stage_name(st->stage) : "";
        int k = 0;
        while (k < *nw && strcmp(w[k].instance, st->instance_id))
            k++;
        if (k == *nw) {
            if (*nw == MAX_WORKERS)
                break;
            (*nw)++;
            snprintf(w[k].stage, sizeof w[k].stage, "%s", stage);
            snprintf(w[k].instance, sizeof w[k].instance, "%s", st->instance_id);
        }
        w[k].processed = st->processed;
        w[k].malformed = st->malformed;
        break;
    }
    default:
        break;
    }
}

static int cmd_announce(int argc, char **argv)
{
    if (argc < 7) {
        fprintf(stderr, "usage: service_probe announce INTAKE EVENTS BOUND_S LINGER_S PATH...\n");
        return 2;
    }
    int n = argc - 6;
    if (n > MAX_SLIDES)
        return 2;
    slide_rec s[MAX_SLIDES];
    memset(s, 0, sizeof s);
    for (int i = 0; i < n; i++)
        s[i].path = argv[6 + i];
    worker_rec w[MAX_WORKERS];
    int nw = 0;
    int64_t bound_ms = atoll(argv[4]) * 1000, linger_ms = atoll(argv[5]) * 1000;
    void *ctx = zmq_ctx_new();
    gs_transport *pub =
        gs_transport_new(ctx, GS_CHANNEL_INTAKE, ZMQ_PUB, GS_CONNECT, argv[2], NULL);
    gs_transport *sub =
        gs_transport_new(ctx, GS_CHANNEL_EVENTS, ZMQ_SUB, GS_CONNECT, argv[3], NULL);
    if (!pub || !sub || gs_transport_subscribe(sub, "") != 0) {
        fprintf(stderr, "service_probe: %s\n", gs_error_get());
        return 1;
    }
    int64_t start = mono_ms(), last_announce = 0, all_done_at = 0;
    for (;;) {
        int64_t now = mono_ms();
        if (now - last_announce >= 1000) {
            for (int i = 0; i < n; i++)
                if (!s[i].accepted)
                    (void)announce_one(pub, s[i].path);
            last_announce = now;
        }
        zmq_pollitem_t it = {.socket = gs_transport_socket(sub), .events = ZMQ_POLLIN};
        if (zmq_poll(&it, 1, 200) > 0) {
            gs_inbound in;
            while (gs_transport_recv(sub, &in, GS_RECV_DONTWAIT) != GS_RECV_EMPTY) {
                if (in.msg.event)
                    on_event(in.msg.event, s, n, w, &nw);
                gs_inbound_release(&in);
            }
        }
        int done = 1;
        for (int i = 0; i < n; i++)
            done &= s[i].verdicts > 0;
        now = mono_ms();
        if (done && !all_done_at)
            all_done_at = now;
        if (all_done_at && now - all_done_at >= linger_ms)
            break;
        if (!all_done_at && now - start > bound_ms)
            break;
    }
    int rc = 0;
    for (int i = 0; i < n; i++) {
        printf("states %s %s\n", s[i].path, s[i].states);
        if (!s[i].verdicts) {
            printf("missing %s accepted=%d\n", s[i].path, s[i].accepted);
            rc = 1;
        }
    }
    for (int k = 0; k < nw; k++)
        printf("worker %s %s processed=%llu malformed=%llu\n", w[k].stage, w[k].instance,
               (unsigned long long)w[k].processed, (unsigned long long)w[k].malformed);
    gs_transport_destroy(&pub);
    gs_transport_destroy(&sub);
    zmq_ctx_term(ctx);
    return rc;
}

/* Sends `frames` frames of the given sizes filled with junk (frame i of size[i]). */
static int send_junk(void *sock, const size_t *size, int frames)
{
    for (int i = 0; i < frames; i++) {
        uint8_t buf[512];
        for (size_t b = 0; b < size[i] && b < sizeof buf; b++)
            buf[b] = (uint8_t)(rand() & 0xff);
        if (zmq_send(sock, buf, size[i], i + 1 < frames ? ZMQ_SNDMORE : 0) < 0)
            return -1;
    }
    return 0;
}

static int cmd_garbage(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: service_probe garbage intake|submit|query|work|tiles ENDPOINT\n");
        return 2;
    }
    const char *kind = argv[2], *ep = argv[3];
    int type = !strcmp(kind, "intake") ? ZMQ_PUB : !strcmp(kind, "tiles") ? ZMQ_PUSH : ZMQ_DEALER;
    int req_framing = !strcmp(kind, "submit") || !strcmp(kind, "query");
    void *ctx = zmq_ctx_new();
    void *sock = zmq_socket(ctx, type);
    int linger = 2000;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_connect(sock, ep) != 0) {
        fprintf(stderr, "service_probe: connect %s: %s\n", ep, zmq_strerror(zmq_errno()));
        return 1;
    }
    /* PUB drops until connected and a DEALER picks a peer only once connected: give the
     * connection a moment (the checks after this wait for the counters, not for time). */
    usleep(500 * 1000);
    srand(7);
    /* The envelope of a type this socket must not carry. */
    uint8_t wrong[256];
    size_t wrong_len = 0;
    char topic[64] = "";
    if (type == ZMQ_PUB) {
        Gastroscreen__V1__SlideAccepted acc = GASTROSCREEN__V1__SLIDE_ACCEPTED__INIT;
        acc.slide_id = "0123456789abcdef";
        acc.path = "/nowhere";
        Gastroscreen__V1__EventMessage ev = GASTROSCREEN__V1__EVENT_MESSAGE__INIT;
        ev.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
        ev.body_case = GASTROSCREEN__V1__EVENT_MESSAGE__BODY_ACCEPTED;
        ev.accepted = &acc;
        wrong_len = protobuf_c_message_pack(&ev.base, wrong);
        snprintf(topic, sizeof topic, "slide.arrived.");
    } else if (req_framing && !strcmp(kind, "submit")) {
        Gastroscreen__V1__SubmitReply rep = GASTROSCREEN__V1__SUBMIT_REPLY__INIT;
        Gastroscreen__V1__SubmitMessage m = GASTROSCREEN__V1__SUBMIT_MESSAGE__INIT;
        m.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
        m.body_case = GASTROSCREEN__V1__SUBMIT_MESSAGE__BODY_REPLY;
        m.reply = &rep;
        wrong_len = protobuf_c_message_pack(&m.base, wrong);
    } else if (req_framing) {
        Gastroscreen__V1__QueryError qe = GASTROSCREEN__V1__QUERY_ERROR__INIT;
        Gastroscreen__V1__QueryMessage m = GASTROSCREEN__V1__QUERY_MESSAGE__INIT;
        m.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
        m.body_case = GASTROSCREEN__V1__QUERY_MESSAGE__BODY_ERROR;
        m.error = &qe;
        wrong_len = protobuf_c_message_pack(&m.base, wrong);
    } else if (type == ZMQ_DEALER) {
        Gastroscreen__V1__CoordinatorHeartbeat hb = GASTROSCREEN__V1__COORDINATOR_HEARTBEAT__INIT;
        Gastroscreen__V1__WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
        m.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
        m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_COORDINATOR_HEARTBEAT;
        m.coordinator_heartbeat = &hb;
        wrong_len = protobuf_c_message_pack(&m.base, wrong);
    }
    int rc = 0;
    for (int round = 0; round < 3; round++) {
        const size_t one[] = {97}, three[] = {0, 13, 200}, many[] = {5, 5, 5, 5, 5, 5};
        if (type == ZMQ_PUB) {
            /* Topic frames the coordinator subscribes to, with junk after them. */
            if (zmq_send(sock, "slide.arrived.", 14, ZMQ_SNDMORE) < 0 || send_junk(sock, one, 1))
                rc = 1;
            if (zmq_send(sock, "slide.arrived.", 14, 0) < 0)
                rc = 1;
        } else if (req_framing) {
            /* The empty delimiter a REQ adds, then junk. */
            if (zmq_send(sock, "", 0, ZMQ_SNDMORE) < 0 || send_junk(sock, one, 1))
                rc = 1;
        } else if (send_junk(sock, one, 1)) {
            rc = 1;
        }
        if (send_junk(sock, three, 3) || send_junk(sock, many, 6))
            rc = 1;
        if (wrong_len) {
            if (topic[0] && zmq_send(sock, topic, strlen(topic), ZMQ_SNDMORE) < 0)
                rc = 1;
            if (req_framing && zmq_send(sock, "", 0, ZMQ_SNDMORE) < 0)
                rc = 1;
            if (zmq_send(sock, wrong, wrong_len, 0) < 0)
                rc = 1;
        }
    }
    zmq_close(sock);
    zmq_ctx_term(ctx);
    if (rc)
        fprintf(stderr, "service_probe: a send to %s failed\n", ep);
    return rc;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 2 && !strcmp(argv[1], "announce"))
        return cmd_announce(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "garbage"))
        return cmd_garbage(argc, argv);
    fprintf(stderr, "usage: service_probe announce|garbage ...\n");
    return 2;
}
