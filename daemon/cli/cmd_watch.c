/*
 * cmd_watch: `gastroscreen watch [--since SEQ] [--count N] [--config FILE]
 * [--endpoint events=URL] [--endpoint query=URL] [--timeout SECONDS]`, one line per verdict
 * as the coordinator publishes them.
 *
 * watch is the gap-recovering subscriber of PROTOCOL.md §11: it subscribes to `slide.` and
 * `stats.coordinator.` on the events socket, keeps the last sequence number it applied, and
 * when an event skips numbers (PUB dropped some, or the coordinator crashed between DONE and
 * the publication) or the coordinator's once-a-second stats event shows a newer last_seq, it
 * asks the query socket for the events since then (EventsSinceRequest, repeated while the
 * replies are full) and applies them in order. So every verdict is printed exactly once, in
 * journal order. Without --since it starts from the first event it hears; with --since SEQ
 * it first prints the verdicts journalled after SEQ.
 *
 * Line format: "<slide_id> <class> <score> <path> (<reason>)", plus
 * " [model: untrained — not a diagnosis]" when the verdict's model is untrained.
 */
#include "daemon/cli/commands.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/cli/client.h"
#include "ops/error.h"
#include "proto/vocab.h"

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: gastroscreen watch [--since SEQ] [--count N] [--config FILE]\n"
               "                          [--endpoint events=URL] [--endpoint query=URL]\n"
               "                          [--timeout SECONDS]\n"
               "                          [--key FILE] [--coordinator-key FILE]\n"
               "\n"
               "Prints one line per verdict published by gastroscreend, each exactly once\n"
               "(missed events are fetched from the query socket). --since SEQ first prints\n"
               "the verdicts journalled after sequence number SEQ; --count N exits after N.\n");
}

typedef struct {
    gs_cli_options o;
    void *ctx;
    gs_transport *req;
    uint64_t last;
    int have_last;
    long printed, count; /* count 0 = no limit */
} watcher;

/* Checks an event's content beyond what the transport checked. Returns 0 or -1 with the
 * error set. */
static int check_event(const Gastroscreen__V1__EventMessage *e)
{
    if (e->body_case == GASTROSCREEN__V1__EVENT_MESSAGE__BODY_VERDICT) {
        const Gastroscreen__V1__Verdict *v = e->verdict;
        if (e->seq == 0)
            return gs_error_set("verdict event without a sequence number");
        if (!gs_slide_id_ok(v->slide_id))
            return gs_error_set("verdict with slide id '%.64s'", v->slide_id);
        if (v->verdict_class < GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_NEGATIVE ||
            v->verdict_class > GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_FAILED)
            return gs_error_set("verdict class %d", (int)v->verdict_class);
    }
    return 0;
}

static void print_verdict(watcher *w, const Gastroscreen__V1__Verdict *v)
{
    /* check_event() let only known classes through. */
    const char *cls = gs_verdict_class_name(v->verdict_class);
    printf("%s %s %.3f %s (%s)%s\n", v->slide_id, cls ? cls : "?", (double)v->score, v->path,
           *v->reason ? v->reason : "no reason given",
           v->model && v->model->untrained ? " [model: untrained — not a diagnosis]" : "");
    fflush(stdout);
    w->printed++;
}

/* Applies one journalled event in order. */
static void apply(watcher *w, const Gastroscreen__V1__EventMessage *e)
{
    w->last = e->seq;
    if (e->body_case == GASTROSCREEN__V1__EVENT_MESSAGE__BODY_VERDICT)
        print_verdict(w, e->verdict);
}

static int done(const watcher *w)
{
    return w->count > 0 && w->printed >= w->count;
}

/* Fetches and applies the events after w->last (PROTOCOL.md §11). Returns 0, or -1 with the
 * error set when the query socket does not answer properly. */
static int catch_up(watcher *w)
{
    for (int round = 0; !done(w); round++) {
        Gastroscreen__V1__EventsSinceRequest rq = GASTROSCREEN__V1__EVENTS_SINCE_REQUEST__INIT;
        rq.after_seq = w->last;
        Gastroscreen__V1__QueryMessage msg = GASTROSCREEN__V1__QUERY_MESSAGE__INIT;
        msg.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
        msg.body_case = GASTROSCREEN__V1__QUERY_MESSAGE__BODY_EVENTS_SINCE;
        msg.events_since = &rq;
        gs_inbound in = {0};
        if (gs_cli_request(w->ctx, GS_CHANNEL_QUERY, w->o.query, gs_security_curve(&w->o.sec),
                           &w->req, &msg.base, &in, w->o.timeout_ms) < 0)
            return -1;
        const Gastroscreen__V1__QueryMessage *q = in.msg.query;
        if (q->body_case == GASTROSCREEN__V1__QUERY_MESSAGE__BODY_ERROR) {
            gs_error_set("the coordinator says: %.200s", q->error->error);
            gs_inbound_release(&in);
            return -1;
        }
        if (q->body_case != GASTROSCREEN__V1__QUERY_MESSAGE__BODY_EVENTS) {
            gs_error_set("malformed reply to EventsSinceRequest (body %d)", (int)q->body_case);
            gs_inbound_release(&in);
            return -1;
        }
        const Gastroscreen__V1__EventsSinceReply *r = q->events;
        if (r->truncated)
            fprintf(stderr,
                    "gastroscreen watch: events %llu..%llu were compacted away; verdicts "
                    "among them are not shown (gastroscreen status lists slides)\n",
                    (unsigned long long)w->last + 1,
                    (unsigned long long)(r->oldest_retained_seq ? r->oldest_retained_seq - 1 : 0));
        uint64_t before = w->last;
        for (size_t i = 0; i < r->n_events && !done(w); i++) {
            const Gastroscreen__V1__EventMessage *e = r->events[i];
            if (e->seq <= w->last)
                continue; /* already applied, or not journalled (stats) */
            if (check_event(e) < 0) {
                fprintf(stderr, "gastroscreen watch: skipping malformed event %llu: %s\n",
                        (unsigned long long)e->seq, gs_error_get());
                w->last = e->seq;
                continue;
            }
            apply(w, e);
        }
        uint64_t newest = r->last_seq;
        gs_inbound_release(&in);
        /* Stop when up to date, or when a reply brought nothing new (a coordinator that
         * announces a last_seq it cannot deliver must not make us spin). */
        if (w->last >= newest || w->last == before)
            break;
        (void)round;
    }
    return 0;
}

/* Handles one event from the SUB socket. */
static void on_event(watcher *w, const Gastroscreen__V1__EventMessage *e)
{
    if (check_event(e) < 0) {
        fprintf(stderr, "gastroscreen watch: dropping malformed event: %s\n", gs_error_get());
        return;
    }
    if (!w->have_last) {
        w->last = e->seq ? e->seq - 1 : e->last_seq;
        w->have_last = 1;
    }
    if (e->seq == 0) {
        /* stats.coordinator.: a newer last_seq means events we never heard of. */
        if (e->last_seq > w->last && catch_up(w) < 0)
            fprintf(stderr, "gastroscreen watch: catching up: %s\n", gs_error_get());
        return;
    }
    if (e->seq <= w->last)
        return;
    if (e->seq > w->last + 1) {
        if (catch_up(w) < 0)
            fprintf(stderr, "gastroscreen watch: catching up: %s\n", gs_error_get());
        if (e->seq != w->last + 1)
            return; /* applied by the catch-up, or still missing: the next event retries */
    }
    apply(w, e);
}

int gs_cmd_watch(int argc, char **argv)
{
    watcher w = {0};
    gs_cli_options_init(&w.o);
    for (int i = 1; i < argc; i++) {
        int r = gs_cli_option(&w.o, argc, argv, &i);
        if (r < 0) {
            fprintf(stderr, "gastroscreen watch: %s\n", gs_error_get());
            return 2;
        }
        if (r > 0)
            continue;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
        int is_since = !strcmp(argv[i], "--since"), is_count = !strcmp(argv[i], "--count");
        if ((is_since || is_count) && i + 1 < argc) {
            char *end = NULL;
            errno = 0;
            unsigned long long v = strtoull(argv[++i], &end, 10);
            if (errno || end == argv[i] || *end || argv[i][0] == '-') {
                fprintf(stderr, "gastroscreen watch: %s: '%s' is not a number\n", argv[i - 1],
                        argv[i]);
                return 2;
            }
            if (is_since) {
                w.last = v;
                w.have_last = 1;
            } else {
                w.count = (long)v;
            }
            continue;
        }
        fprintf(stderr, "gastroscreen watch: unexpected argument '%s'\n", argv[i]);
        usage(stderr);
        return 2;
    }
    if (gs_cli_options_finish(&w.o) < 0) {
        fprintf(stderr, "gastroscreen watch: %s\n", gs_error_get());
        return 2;
    }

    int status = 1;
    w.ctx = zmq_ctx_new();
    gs_transport *sub = gs_transport_new_curve(
        w.ctx, GS_CHANNEL_EVENTS, ZMQ_SUB, GS_CONNECT, w.o.events,
        &(gs_transport_options){.name = "events"}, gs_security_curve(&w.o.sec));
    if (!sub || gs_transport_subscribe(sub, "slide.") < 0 ||
        gs_transport_subscribe(sub, "stats.coordinator.") < 0) {
        fprintf(stderr, "gastroscreen watch: %s\n", gs_error_get());
        goto close_sockets;
    }
    if (w.have_last && catch_up(&w) < 0) {
        fprintf(stderr, "gastroscreen watch: %s\n", gs_error_get());
        goto close_sockets;
    }

    struct sigaction sa = {.sa_handler = on_signal}, old_int, old_term;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    stop_requested = 0;
    int heard = 0, warned = 0;
    status = 0;
    while (!done(&w) && !stop_requested) {
        zmq_pollitem_t item = {.socket = gs_transport_socket(sub), .events = ZMQ_POLLIN};
        int n = zmq_poll(&item, 1, w.o.timeout_ms);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fprintf(stderr, "gastroscreen watch: %s\n", zmq_strerror(errno));
            status = 1;
            break;
        }
        if (n == 0) {
            if (!heard) {
                fprintf(stderr,
                        "gastroscreen watch: no events from the coordinator at %s within %.3g s "
                        "(is gastroscreend running?)\n",
                        w.o.events, w.o.timeout_ms / 1000.0);
                status = 1;
                break;
            }
            if (!warned)
                fprintf(stderr,
                        "gastroscreen watch: the coordinator at %s has been silent for "
                        "%.3g s; still waiting\n",
                        w.o.events, w.o.timeout_ms / 1000.0);
            warned = 1;
            continue;
        }
        gs_inbound in = {0};
        gs_recv_status st = gs_transport_recv(sub, &in, GS_RECV_DONTWAIT);
        if (st == GS_RECV_MESSAGE) {
            heard = 1;
            warned = 0;
            on_event(&w, in.msg.event);
        } else if (st == GS_RECV_ERROR && errno != EINTR && errno != EAGAIN) {
            fprintf(stderr, "gastroscreen watch: %s\n", gs_error_get());
            status = 1;
            gs_inbound_release(&in);
            break;
        }
        gs_inbound_release(&in);
    }
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
close_sockets:
    gs_transport_destroy(&sub);
    gs_transport_destroy(&w.req);
    zmq_ctx_term(w.ctx);
    return status;
}
