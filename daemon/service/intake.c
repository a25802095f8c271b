#include "daemon/service/intake.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ops/error.h"
#include "proto/vocab.h"

typedef struct {
    char *name;
    int64_t size, mtime_ms;
    int64_t stable_since_ms;
    int taken;
    int seen; /* in the last scan */
} watch_entry;

struct gs_intake {
    gs_intake_options o;
    gs_transport *sub, *submit;
    char *watch_dir;
    watch_entry *watch;
    size_t n_watch, cap_watch;
    int64_t next_scan_ms;
    gs_intake_counters n;
};

static int take_path(gs_intake *in, const char *path, gs_intake_source source,
                     const char *external_id, char out_id[GS_SLIDE_ID_LEN + 1], int *duplicate,
                     uint64_t *seq, int *rejected)
{
    char canon[PATH_MAX];
    int64_t size = 0, mtime = 0;
    *rejected = 0;
    if (gs_slides_resolve_path(in->o.roots, in->o.n_roots, path, canon, sizeof canon, &size,
                               &mtime) != 0) {
        *rejected = 1;
        in->n.rejected++;
        return -1;
    }
    if (in->o.accept(in->o.accept_ud, canon, size, mtime, source, external_id ? external_id : "",
                     out_id, duplicate, seq) != 0)
        return -1; /* refused: the callback counted it and said why */
    return 0;
}

int gs_intake_path(gs_intake *in, const char *path, gs_intake_source source,
                   const char *external_id, char out_id[GS_SLIDE_ID_LEN + 1], int *duplicate,
                   uint64_t *seq)
{
    int rejected;
    int dup = 0;
    uint64_t s = 0;
    if (take_path(in, path, source, external_id, out_id, &dup, &s, &rejected) != 0)
        return -1;
    if (duplicate)
        *duplicate = dup;
    if (seq)
        *seq = s;
    return 0;
}

gs_intake *gs_intake_new(const gs_intake_options *o)
{
    GS_ASSERT(o && o->zmq_ctx && o->accept);
    gs_intake *in = calloc(1, sizeof *in);
    if (!in) {
        gs_error_set("intake: out of memory");
        return NULL;
    }
    in->o = *o;
    gs_transport_options topt = {.quiet = o->quiet, .name = "intake"};
    if (o->intake && o->intake[0]) {
        in->sub = gs_transport_new_curve(o->zmq_ctx, GS_CHANNEL_INTAKE, ZMQ_SUB, GS_BIND, o->intake,
                                         &topt, o->curve);
        if (!in->sub || gs_transport_subscribe(in->sub, "slide.arrived.") != 0)
            goto fail_sockets;
        if (o->intake_connect && o->intake_connect[0]) {
            char *list = strdup(o->intake_connect), *save = NULL;
            if (!list)
                goto fail_sockets;
            for (char *e = strtok_r(list, " \t\n", &save); e; e = strtok_r(NULL, " \t\n", &save))
                if (gs_transport_connect(in->sub, e) != 0) {
                    free(list);
                    goto fail_sockets;
                }
            free(list);
        }
    }
    if (o->submit && o->submit[0]) {
        topt.name = "submit";
        in->submit = gs_transport_new_curve(o->zmq_ctx, GS_CHANNEL_SUBMIT, ZMQ_ROUTER, GS_BIND,
                                            o->submit, &topt, o->curve);
        if (!in->submit)
            goto fail_sockets;
    }
    if (o->watch_dir && o->watch_dir[0]) {
        in->watch_dir = strdup(o->watch_dir);
        if (!in->watch_dir) {
            gs_error_set("intake: out of memory");
            goto fail_sockets;
        }
    }
    return in;

fail_sockets:
    gs_error_prefix("intake");
    gs_intake_destroy(&in);
    return NULL;
}

void gs_intake_destroy(gs_intake **pin)
{
    if (!pin || !*pin)
        return;
    gs_intake *in = *pin;
    gs_transport_destroy(&in->sub);
    gs_transport_destroy(&in->submit);
    for (size_t i = 0; i < in->n_watch; i++)
        free(in->watch[i].name);
    free(in->watch);
    free(in->watch_dir);
    free(in);
    *pin = NULL;
}

size_t gs_intake_poll_items(gs_intake *in, zmq_pollitem_t *items, size_t max)
{
    size_t n = 0;
    if (in->sub && n < max)
        items[n++] = (zmq_pollitem_t){.socket = gs_transport_socket(in->sub), .events = ZMQ_POLLIN};
    if (in->submit && n < max)
        items[n++] =
            (zmq_pollitem_t){.socket = gs_transport_socket(in->submit), .events = ZMQ_POLLIN};
    return n;
}

static void reply_submit(gs_intake *in, const gs_peer *to, const char *request_id,
                         Gastroscreen__V1__SubmitStatus status, const char *slide_id, uint64_t seq,
                         const char *error)
{
    Gastroscreen__V1__SubmitReply r = GASTROSCREEN__V1__SUBMIT_REPLY__INIT;
    r.request_id = (char *)(request_id ? request_id : "");
    r.status = status;
    r.slide_id = (char *)(slide_id ? slide_id : "");
    r.seq = seq;
    char err[1024];
    snprintf(err, sizeof err, "%s", error ? error : "");
    r.error = err;
    Gastroscreen__V1__SubmitMessage m = GASTROSCREEN__V1__SUBMIT_MESSAGE__INIT;
    m.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    m.body_case = GASTROSCREEN__V1__SUBMIT_MESSAGE__BODY_REPLY;
    m.reply = &r;
    /* A client that vanished is its own problem (ROUTER_MANDATORY makes the send fail). */
    (void)gs_transport_send(in->submit, to, &m.base, GS_SEND_DONTWAIT);
}

/* One submit request; returns 1 accepted, 0 answered otherwise (rejected or refused). */
static int handle_submit(gs_intake *in, gs_inbound *msg, gs_recv_status st)
{
    if (st == GS_RECV_DROPPED) {
        /* Counted by the transport. */
        if (msg->from.len > 0)
            reply_submit(in, &msg->from, "",
                         GASTROSCREEN__V1__SUBMIT_STATUS__SUBMIT_STATUS_REJECTED, "", 0,
                         gs_drop_reason_name(msg->drop));
        return 0;
    }
    const Gastroscreen__V1__SubmitMessage *m = msg->msg.submit;
    if (m->body_case != GASTROSCREEN__V1__SUBMIT_MESSAGE__BODY_REQUEST) {
        in->n.submit_wrong_type++;
        reply_submit(in, &msg->from, "", GASTROSCREEN__V1__SUBMIT_STATUS__SUBMIT_STATUS_REJECTED,
                     "", 0, "wrong message type: only SubmitRequest is served");
        return 0;
    }
    const Gastroscreen__V1__SubmitRequest *rq = m->request;
    if (!gs_wire_str_ok(rq->path, 4096) || !rq->path[0] || !gs_wire_str_ok(rq->request_id, 1024) ||
        !gs_wire_str_ok(rq->external_id, 1024)) {
        in->n.submit_malformed++;
        reply_submit(in, &msg->from, "", GASTROSCREEN__V1__SUBMIT_STATUS__SUBMIT_STATUS_REJECTED,
                     "", 0, "malformed request: path missing or a string too long");
        return 0;
    }
    char id[GS_SLIDE_ID_LEN + 1] = "";
    int dup = 0, rejected = 0;
    uint64_t seq = 0;
    if (take_path(in, rq->path, GS_INTAKE_SUBMIT, rq->external_id, id, &dup, &seq, &rejected) !=
        0) {
        /* A refusal (the journal cannot take the slide now) is answered like a rejection,
         * with its reason; the coordinator has decided what it means for itself. */
        reply_submit(in, &msg->from, rq->request_id,
                     GASTROSCREEN__V1__SUBMIT_STATUS__SUBMIT_STATUS_REJECTED, "", 0,
                     gs_error_get());
        if (!rejected && !in->o.quiet)
            fprintf(stderr, "gastroscreend: submitted slide refused: %s\n", gs_error_get());
        return 0;
    }
    in->n.submitted++;
    reply_submit(in, &msg->from, rq->request_id,
                 dup ? GASTROSCREEN__V1__SUBMIT_STATUS__SUBMIT_STATUS_DUPLICATE
                     : GASTROSCREEN__V1__SUBMIT_STATUS__SUBMIT_STATUS_ACCEPTED,
                 id, seq, "");
    return 1;
}

static int handle_arrived(gs_intake *in, gs_inbound *msg, gs_recv_status st)
{
    if (st == GS_RECV_DROPPED) {
        /* Counted by the transport. */
        return 0;
    }
    const Gastroscreen__V1__EventMessage *ev = msg->msg.event;
    if (ev->body_case != GASTROSCREEN__V1__EVENT_MESSAGE__BODY_ARRIVED) {
        in->n.intake_wrong_type++;
        return 0;
    }
    const Gastroscreen__V1__SlideArrived *a = ev->arrived;
    if (!gs_wire_str_ok(a->path, 4096) || !a->path[0] || !gs_wire_str_ok(a->announcer, 1024) ||
        !gs_wire_str_ok(a->external_id, 1024)) {
        in->n.intake_malformed++;
        return 0;
    }
    char id[GS_SLIDE_ID_LEN + 1];
    int dup = 0, rejected = 0;
    uint64_t seq = 0;
    if (take_path(in, a->path, GS_INTAKE_ANNOUNCED, a->external_id, id, &dup, &seq, &rejected) !=
        0) {
        /* Rejected (the path) or refused (the journal cannot take it now): either way the
         * announcer has no reply channel, so the log line is where the reason goes. */
        if (!in->o.quiet)
            fprintf(stderr, "gastroscreend: announcement from %s refused: %s\n",
                    a->announcer[0] ? a->announcer : "?", gs_error_get());
        return 0;
    }
    in->n.announced++;
    return 1;
}

static int drain(gs_intake *in, gs_transport *t,
                 int (*fn)(gs_intake *, gs_inbound *, gs_recv_status))
{
    int accepted = 0;
    /* Bounded so a flood on one socket cannot starve the work socket. */
    for (int i = 0; i < 256; i++) {
        gs_inbound msg;
        memset(&msg, 0, sizeof msg);
        gs_recv_status st = gs_transport_recv(t, &msg, GS_RECV_DONTWAIT);
        if (st == GS_RECV_EMPTY || st == GS_RECV_ERROR) {
            gs_inbound_release(&msg);
            break;
        }
        int r = fn(in, &msg, st);
        gs_inbound_release(&msg);
        if (r < 0)
            return -1;
        accepted += r;
    }
    return accepted;
}

static watch_entry *watch_find(gs_intake *in, const char *name)
{
    for (size_t i = 0; i < in->n_watch; i++)
        if (strcmp(in->watch[i].name, name) == 0)
            return &in->watch[i];
    return NULL;
}

static int scan_watch(gs_intake *in, int64_t now_ms)
{
    DIR *d = opendir(in->watch_dir);
    if (!d)
        return 0; /* the folder may appear later (a mount); nothing to take yet */
    for (size_t i = 0; i < in->n_watch; i++)
        in->watch[i].seen = 0;
    int accepted = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue; /* hidden and partial uploads (".name.part") */
        char full[PATH_MAX];
        if ((size_t)snprintf(full, sizeof full, "%s/%s", in->watch_dir, de->d_name) >= sizeof full)
            continue;
        struct stat st;
        if (stat(full, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        int64_t mt = (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
        watch_entry *e = watch_find(in, de->d_name);
        if (!e) {
            if (in->n_watch == in->cap_watch) {
                size_t cap = in->cap_watch ? in->cap_watch * 2 : 16;
                watch_entry *nw = realloc(in->watch, cap * sizeof *nw);
                if (!nw)
                    break;
                in->watch = nw;
                in->cap_watch = cap;
            }
            char *name = strdup(de->d_name);
            if (!name)
                break;
            e = &in->watch[in->n_watch++];
            *e = (watch_entry){
                .name = name, .size = st.st_size, .mtime_ms = mt, .stable_since_ms = now_ms};
        } else if (e->size != st.st_size || e->mtime_ms != mt) {
            /* Still being written, or replaced: wait for it to settle again. */
            e->size = st.st_size;
            e->mtime_ms = mt;
            e->stable_since_ms = now_ms;
            e->taken = 0;
        }
        e->seen = 1;
        if (!e->taken && now_ms - e->stable_since_ms >= in->o.watch_settle_ms) {
            char id[GS_SLIDE_ID_LEN + 1];
            int dup = 0, rejected = 0;
            uint64_t seq = 0;
            e->taken = 1;
            if (take_path(in, full, GS_INTAKE_WATCHED, "", id, &dup, &seq, &rejected) != 0) {
                if (!rejected) {
                    /* Refused for now (the journal cannot take it): the file stays in the
                     * folder and is taken at a later scan; the coordinator logged why. */
                    e->taken = 0;
                    break;
                }
                if (!in->o.quiet)
                    fprintf(stderr, "gastroscreend: watched file refused: %s\n", gs_error_get());
            } else {
                in->n.watched++;
                accepted++;
            }
        }
    }
    closedir(d);
    /* Forget files that left the folder, so one put back is taken again. */
    size_t k = 0;
    for (size_t i = 0; i < in->n_watch; i++) {
        if (in->watch[i].seen)
            in->watch[k++] = in->watch[i];
        else
            free(in->watch[i].name);
    }
    in->n_watch = k;
    return accepted;
}

int gs_intake_handle(gs_intake *in, int64_t now_ms)
{
    int total = 0, r;
    if (in->submit) {
        if ((r = drain(in, in->submit, handle_submit)) < 0)
            return -1;
        total += r;
    }
    if (in->sub) {
        if ((r = drain(in, in->sub, handle_arrived)) < 0)
            return -1;
        total += r;
    }
    if (in->watch_dir && now_ms >= in->next_scan_ms) {
        int64_t period = in->o.watch_settle_ms / 4;
        if (period > 1000)
            period = 1000;
        if (period < 10)
            period = 10;
        in->next_scan_ms = now_ms + period;
        if ((r = scan_watch(in, now_ms)) < 0)
            return -1;
        total += r;
    }
    return total;
}

const char *gs_intake_submit_endpoint(const gs_intake *in)
{
    return in->submit ? gs_transport_endpoint(in->submit) : "";
}

const char *gs_intake_intake_endpoint(const gs_intake *in)
{
    return in->sub ? gs_transport_endpoint(in->sub) : "";
}

void gs_intake_counters_get(const gs_intake *in, gs_intake_counters *c)
{
    *c = in->n;
    if (in->sub) {
        const gs_transport_counters *t = gs_transport_counters_get(in->sub);
        c->intake_malformed += t->malformed;
        c->intake_wrong_type += t->wrong_type;
    }
    if (in->submit) {
        const gs_transport_counters *t = gs_transport_counters_get(in->submit);
        c->submit_malformed += t->malformed;
        c->submit_wrong_type += t->wrong_type;
    }
}
