/* The coordinator's life (new, destroy), its poll loop (drain the sockets, route work
 * messages, tick) and the public functions of coordinator.h, with the helpers every
 * coordinator_*.c file uses. The parts are listed in coordinator_internal.h. */
#include "daemon/service/coordinator_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ops/error.h"
#include "stages/runtime/log.h"

#define DRAIN_MAX 1000

/* ------------------------------------------------------------------------------------------ */
/* helpers the coordinator's files share */

/* The default clock_ms of the options: the monotonic clock (tests drive their own). */
static int64_t mono_ms(void *ud)
{
    (void)ud;
    return gs_mono_ms();
}

int64_t coord_now_ms(const gs_coordinator *c)
{
    return c->o.clock_ms(c->o.clock_ud);
}

/* One log line (stages/runtime/log). Under journald it carries STAGE=coordinator and, for a line
 * about a slide ("slide <id>..."), SLIDE_ID, so `journalctl SLIDE_ID=...` follows a slide. */
void coord_logf(const gs_coordinator *c, const char *fmt, ...)
{
    if (c->o.quiet)
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    static const char prefix[] = "slide ";
    char id[GS_SLIDE_ID_LEN + 1] = "";
    if (strncmp(msg, prefix, sizeof prefix - 1) == 0 &&
        strlen(msg) >= sizeof prefix - 1 + GS_SLIDE_ID_LEN) {
        memcpy(id, msg + sizeof prefix - 1, GS_SLIDE_ID_LEN);
        if (!gs_slide_id_ok(id))
            id[0] = 0;
    }
    gs_log_line("gastroscreend", "coordinator", id, GS_LOG_INFO, msg);
}

void coord_fill_provenance(const gs_coordinator *c, Gastroscreen__V1__ModelProvenance *mp)
{
    *mp = c->model;
}

void coord_peer_logf(gs_coordinator *c, const gs_peer *p, const char *fmt, ...)
{
    static const gs_peer none = {.len = 0};
    if (!p)
        p = &none;
    int64_t now = coord_now_ms(c);
    size_t slot = 0;
    for (size_t i = 0; i < PEER_LOG_SLOTS; i++) {
        if (c->peer_log[i].peer.len == p->len &&
            memcmp(c->peer_log[i].peer.id, p->id, p->len) == 0 &&
            (c->peer_log[i].next_ms || c->peer_log[i].suppressed)) {
            slot = i;
            goto found;
        }
        if (c->peer_log[i].next_ms < c->peer_log[slot].next_ms)
            slot = i;
    }
    c->peer_log[slot].peer = *p;
    c->peer_log[slot].next_ms = 0;
    c->peer_log[slot].suppressed = 0;
found:
    if (now < c->peer_log[slot].next_ms) {
        c->peer_log[slot].suppressed++;
        return;
    }
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (c->peer_log[slot].suppressed)
        coord_logf(c, "%s (and %llu more from this peer not logged)", msg,
                   (unsigned long long)c->peer_log[slot].suppressed);
    else
        coord_logf(c, "%s", msg);
    c->peer_log[slot].suppressed = 0;
    c->peer_log[slot].next_ms = now + PEER_LOG_MS;
}

void coord_count_malformed(gs_coordinator *c, const char *what, const gs_peer *p)
{
    c->st.malformed[GS_COORD_SOCKET_WORK]++;
    coord_peer_logf(c, p, "work: malformed %s dropped", what);
}

void coord_refuse_result(gs_coordinator *c, const gs_peer *p, const worker *w, const char *what,
                         const char *why)
{
    c->st.results_refused++;
    if (w)
        coord_peer_logf(c, p, "work: %s from worker %s (%s) refused: %s", what, w->id,
                        gs_stage_name(w->stage), why);
    else
        coord_peer_logf(c, p, "work: %s refused: %s", what, why);
}

/* ------------------------------------------------------------------------------------------ */
/* construction, destruction */

const char *gs_coord_socket_name(gs_coord_socket s)
{
    static const char *const names[] = {"intake", "submit", "query", "work"};
    return (unsigned)s < GS_COORD_SOCKET_COUNT ? names[s] : "";
}

void gs_coordinator_options_default(gs_coordinator_options *o)
{
    memset(o, 0, sizeof *o);
}

/* ------------------------------------------------------------------------------------------ */
/* degraded mode: the journal folder cannot be written (PROTOCOL.md §12) */

/* The storage errno behind a failure, or 0 when the journal folder takes writes: the
 * journal's own last write, the errno the failure left, or (for a write elsewhere on the same
 * disk, like the spool) a probe of the folder. */
static int journal_unwritable(gs_coordinator *c, int err)
{
    int e = gs_journal_write_errno(c->journal);
    if (gs_journal_errno_is_storage(e))
        return e;
    if (gs_journal_errno_is_storage(err) && gs_journal_probe(c->journal) != 0)
        return gs_journal_write_errno(c->journal) ? gs_journal_write_errno(c->journal) : err;
    return 0;
}

/* The reason a new slide is refused while degraded (to the submitter and in the log). */
static void refusal_reason(const gs_coordinator *c, char *out, size_t n)
{
    snprintf(out, n,
             "journal %s cannot be written (%s): new slides are refused until it can; slides "
             "already accepted are kept",
             gs_journal_dir(c->journal), strerror(c->degraded_errno));
}

static void enter_degraded(gs_coordinator *c, int e, const char *why)
{
    if (c->degraded)
        return;
    c->degraded = 1;
    c->degraded_errno = e;
    c->next_probe = coord_now_ms(c) + 1000;
    c->st.journal_degraded = 1;
    c->st.journal_degraded_total++;
    /* A slide caught by the failure while being activated has no phase yet: it goes back to
     * the table and is activated again from its journalled state once the folder is back. */
    for (size_t i = c->n_active; i-- > 0;)
        if (c->active[i]->phase == 0)
            coord_rt_drop(c, c->active[i]);
    coord_logf(c,
               "journal %s cannot be written (%s): degraded mode, new slides refused, %zu "
               "slides in flight held at their next transition (%s)",
               gs_journal_dir(c->journal), strerror(e), gs_slides_in_flight(c->slides), why);
}

static int job_outstanding(const gs_coordinator *c, uint64_t id)
{
    for (size_t i = 0; i < c->n_jobs; i++)
        if (c->jobs[i].id == id)
            return 1;
    return 0;
}

static void leave_degraded(gs_coordinator *c)
{
    c->degraded = 0;
    c->st.journal_degraded = 0;
    /* A result that arrived while the folder was full was answered but not journalled: its
     * job is sent again now, and that send is not held against the slide. */
    for (size_t i = 0; i < c->n_active; i++) {
        slide_rt *rt = c->active[i];
        int job_phase = rt->phase == PH_PLAN || rt->phase == PH_SCREEN || rt->phase == PH_REPORT ||
                        rt->phase == PH_FAIL_REPORT;
        if (job_phase && (rt->job_id == 0 || !job_outstanding(c, rt->job_id)) && !rt->need_send) {
            rt->job_id = 0;
            rt->need_send = 1;
            if (rt->sends > 0)
                rt->sends--;
        }
    }
    coord_logf(c, "journal %s can be written again: degraded mode over, new slides accepted",
               gs_journal_dir(c->journal));
}

int coord_survive_journal_failure(gs_coordinator *c, int err)
{
    int e = journal_unwritable(c, err);
    if (!e)
        return -1;
    enter_degraded(c, e, gs_error_get());
    return 0;
}

/* Once a second while degraded: is the folder back? */
static void probe_journal(gs_coordinator *c)
{
    int64_t now = coord_now_ms(c);
    if (!c->degraded || now < c->next_probe)
        return;
    c->next_probe = now + 1000;
    if (gs_journal_probe(c->journal) == 0)
        leave_degraded(c);
}

static int accept_cb(void *ud, const char *path, int64_t size, int64_t mtime_ms,
                     gs_intake_source source, const char *external_id,
                     char out_id[GS_SLIDE_ID_LEN + 1], int *duplicate, uint64_t *seq)
{
    gs_coordinator *c = ud;
    char why[512];
    if (c->degraded) {
        refusal_reason(c, why, sizeof why);
        c->st.intake_refused++;
        return gs_error_set("%s: %s", path, why);
    }
    if (gs_slides_intake(c->slides, path, size, mtime_ms, source, external_id, gs_unix_ms(), out_id,
                         duplicate, seq) != 0) {
        int err = errno;
        if (coord_survive_journal_failure(c, err) == 0) {
            refusal_reason(c, why, sizeof why);
            c->st.intake_refused++;
            return gs_error_set("%s: %s", path, why);
        }
        return -1;
    }
    if (*duplicate)
        c->st.intake_duplicates++;
    else
        c->st.slides_accepted++;
    coord_publish_pending(c);
    return 0;
}

static int copy_model(gs_coordinator *c, const Gastroscreen__V1__ModelProvenance *m)
{
    c->model = (Gastroscreen__V1__ModelProvenance)GASTROSCREEN__V1__MODEL_PROVENANCE__INIT;
    const char *src[6] = {"", "", "", "", "", ""};
    if (m) {
        src[0] = m->bundle ? m->bundle : "";
        src[1] = m->sha256 ? m->sha256 : "";
        src[2] = m->format_version ? m->format_version : "";
        src[3] = m->trained_on ? m->trained_on : "";
        src[4] = m->notice ? m->notice : "";
        c->model.untrained = m->untrained;
    }
    for (int i = 0; i < 5; i++)
        if (!(c->model_strings[i] = strdup(src[i])))
            return gs_error_set("coordinator: out of memory");
    c->model.bundle = c->model_strings[0];
    c->model.sha256 = c->model_strings[1];
    c->model.format_version = c->model_strings[2];
    c->model.trained_on = c->model_strings[3];
    c->model.notice = c->model_strings[4];
    size_t n = m ? m->n_networks : 0;
    for (size_t i = 0; i < n && i < GS_NET_COUNT; i++) {
        const Gastroscreen__V1__NetworkProvenance *s = m->networks[i];
        Gastroscreen__V1__NetworkProvenance *d = &c->model_nets[i];
        gastroscreen__v1__network_provenance__init(d);
        if (!(c->model_net_strings[i][0] = strdup(s->network ? s->network : "")) ||
            !(c->model_net_strings[i][1] = strdup(s->trained_on ? s->trained_on : "")))
            return gs_error_set("coordinator: out of memory");
        d->network = c->model_net_strings[i][0];
        d->trained_on = c->model_net_strings[i][1];
        d->present = s->present;
        d->untrained = s->untrained;
        c->model_net_ptr[i] = d;
        c->model.n_networks = i + 1;
    }
    c->model.networks = c->model.n_networks ? c->model_net_ptr : NULL;
    return 0;
}

gs_coordinator *gs_coordinator_new(const gs_coordinator_options *o)
{
    GS_ASSERT(o && o->config);
    gs_coordinator *c = calloc(1, sizeof *c);
    if (!c) {
        gs_error_set("coordinator: out of memory");
        return NULL;
    }
    c->o = *o;
    if (!c->o.clock_ms)
        c->o.clock_ms = mono_ms;
    c->cfg = o->config;
    c->zap = o->zap;
    pthread_mutex_init(&c->snap_lock, NULL);
    atomic_init(&c->stop_flag, 0);
    if (copy_model(c, o->model) != 0)
        goto fail;
    if (o->decision)
        c->decision = *o->decision;
    else
        gs_config_decision(c->cfg, NULL, &c->decision);
    c->o.decision = NULL; /* the copy above is the one used */
    c->started_unix_ms = gs_unix_ms();
    {
        unsigned char rnd[16];
        FILE *f = fopen("/dev/urandom", "rb");
        size_t got = f ? fread(rnd, 1, sizeof rnd, f) : 0;
        if (f)
            fclose(f);
        if (got != sizeof rnd) {
            int64_t ns = gs_mono_ns() ^ gs_unix_ms();
            for (size_t i = 0; i < sizeof rnd; i++)
                rnd[i] = (unsigned char)((ns >> (i % 8 * 8)) ^ (getpid() >> (i % 2 * 8)) ^ i);
        }
        for (size_t i = 0; i < sizeof rnd; i++)
            snprintf(c->coordinator_id + 2 * i, 3, "%02x", rnd[i]);
    }
    c->spool = gs_spool_new(c->cfg->spool_dir);
    if (!c->spool)
        goto fail;
    c->journal = gs_journal_open(c->cfg->journal_dir);
    if (!c->journal)
        goto fail;
    for (size_t i = 0; i < gs_journal_warning_count(c->journal); i++)
        coord_logf(c, "journal: %s", gs_journal_warning(c->journal, i));
    gs_slides_options so;
    gs_slides_options_default(&so);
    so.poison_limit = c->cfg->poison_limit;
    so.max_attempts = c->cfg->max_attempts;
    so.threshold = (float)c->decision.threshold;
    so.threshold_source = c->decision.threshold_source;
    so.model_bundle = c->model.bundle;
    so.model_sha256 = c->model.sha256;
    so.model_format_version = c->model.format_version;
    so.model_trained_on = c->model.trained_on;
    so.model_notice = c->model.notice;
    so.model_untrained = c->model.untrained;
    c->slides = gs_slides_new(c->journal, &so);
    if (!c->slides)
        goto fail;
    /* Records up to here were published by an earlier coordinator (or lost with it; the query
     * socket recovers them). What recovery journals now is published once bound. */
    c->published = gs_journal_last_seq(c->journal);
    if (gs_slides_recover(c->slides, gs_unix_ms()) < 0)
        goto fail;
    if (o->zmq_ctx)
        c->zctx = o->zmq_ctx;
    else {
        c->zctx = zmq_ctx_new();
        c->own_ctx = 1;
        if (!c->zctx) {
            gs_error_set("coordinator: zmq_ctx_new: %s", zmq_strerror(errno));
            goto fail;
        }
    }
    gs_transport_options topt = {.quiet = o->quiet};
    topt.name = "work";
    c->work = gs_transport_new_curve(c->zctx, GS_CHANNEL_WORK, ZMQ_ROUTER, GS_BIND, c->cfg->work,
                                     &topt, o->curve);
    if (!c->work)
        goto fail;
    topt.name = "query";
    c->query = gs_transport_new_curve(c->zctx, GS_CHANNEL_QUERY, ZMQ_ROUTER, GS_BIND, c->cfg->query,
                                      &topt, o->curve);
    if (!c->query)
        goto fail;
    topt.name = "events";
    c->events = gs_transport_new_curve(c->zctx, GS_CHANNEL_EVENTS, ZMQ_PUB, GS_BIND, c->cfg->events,
                                       &topt, o->curve);
    if (!c->events)
        goto fail;
    gs_intake_options io = {
        .zmq_ctx = c->zctx,
        .intake = c->cfg->intake,
        .intake_connect = c->cfg->intake_connect,
        .submit = c->cfg->submit,
        .roots = (const char *const *)c->cfg->slide_roots,
        .n_roots = c->cfg->n_slide_roots,
        .watch_dir = c->cfg->watch_dir,
        .watch_settle_ms = c->cfg->watch_settle_ms,
        .accept = accept_cb,
        .accept_ud = c,
        .quiet = o->quiet,
        .curve = o->curve,
    };
    c->intake = gs_intake_new(&io);
    if (!c->intake)
        goto fail;
    coord_publish_pending(c);
    /* Terminal slides whose spool outlived them (a crash before the cleanup, poison found by
     * recovery) are retired once here; afterwards each is retired as its verdict goes out. */
    for (size_t i = 0; i < gs_slides_count(c->slides); i++) {
        gs_slide_info info;
        if (gs_slides_at(c->slides, i, &info) == 0 &&
            (info.state == GS_SLIDE_DONE || info.state == GS_SLIDE_FAILED))
            coord_spool_retire(c, info.slide_id, info.state == GS_SLIDE_FAILED && info.poison);
    }
    coord_stats_refresh(c);
    return c;

fail:
    gs_error_prefix("coordinator");
    gs_coordinator_destroy(&c);
    return NULL;
}

void gs_coordinator_destroy(gs_coordinator **pc)
{
    if (!pc || !*pc)
        return;
    gs_coordinator *c = *pc;
    while (c->n_active > 0)
        coord_rt_drop(c, c->active[c->n_active - 1]);
    free(c->active);
    free(c->jobs);
    free(c->workers);
    gs_intake_destroy(&c->intake);
    gs_transport_destroy(&c->work);
    gs_transport_destroy(&c->query);
    gs_transport_destroy(&c->events);
    if (c->own_ctx && c->zctx)
        zmq_ctx_term(c->zctx);
    gs_slides_destroy(&c->slides);
    gs_journal_destroy(&c->journal);
    gs_spool_destroy(&c->spool);
    for (int i = 0; i < 6; i++)
        free(c->model_strings[i]);
    for (int i = 0; i < GS_NET_COUNT; i++)
        for (int k = 0; k < 2; k++)
            free(c->model_net_strings[i][k]);
    pthread_mutex_destroy(&c->snap_lock);
    free(c);
    *pc = NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* the loop */

/* 1 when a result comes from a worker that said hello as one of the stages sending such
 * results (stage, or also_stage; -1 = none), else counts and logs the refusal and returns 0.
 * Which job or tile it answers is checked by its handler. */
static int sender_ok(gs_coordinator *c, const worker *w, const gs_peer *from, const char *what,
                     int stage, int also_stage)
{
    if (!w) {
        coord_refuse_result(c, from, NULL, what, "the sender never said hello");
        return 0;
    }
    if (w->stage != stage && w->stage != also_stage) {
        coord_refuse_result(c, from, w, what, "not a result this stage sends");
        return 0;
    }
    return 1;
}

/* Routes one message of the work socket to its handler. Returns 0, or -1 on a fatal error
 * (the handler's). */
static int on_work(gs_coordinator *c, gs_inbound *in)
{
    const WorkMessage *m = in->msg.work;
    worker *w = coord_worker_by_peer(c, &in->from);
    int64_t now = coord_now_ms(c);
    if (w)
        w->last_heard = now;
    /* Every job and result names its slide and attempt (PROTOCOL.md §14, step 6); one check
     * here, so no handler can forget it. Life-cycle bodies carry no fence. */
    gs_fence f;
    if (gs_fence_of(&m->base, &f) == 0 && !gs_fence_ok(&f)) {
        coord_count_malformed(c, "work message (slide id or attempt)", &in->from);
        return 0;
    }
    switch (m->body_case) {
    case GASTROSCREEN__V1__WORK_MESSAGE__BODY_HELLO:
        coord_on_hello(c, &in->from, m->hello);
        return 0;
    case GASTROSCREEN__V1__WORK_MESSAGE__BODY_READY:
        if (w)
            w->free_slots = m->ready->free_slots;
        else
            coord_send_heartbeat(c, &in->from, 1); /* unknown: it says hello again */
        return 0;
    case GASTROSCREEN__V1__WORK_MESSAGE__BODY_WORKER_HEARTBEAT:
        if (w)
            coord_on_heartbeat(c, w, m->worker_heartbeat);
        else
            coord_send_heartbeat(c, &in->from, 1);
        return 0;
    case GASTROSCREEN__V1__WORK_MESSAGE__BODY_GOODBYE:
        if (w)
            return coord_on_goodbye(c, w, m->goodbye);
        return 0;
    case GASTROSCREEN__V1__WORK_MESSAGE__BODY_PLAN_RESULT:
        if (!sender_ok(c, w, &in->from, "PlanResult", GASTROSCREEN__V1__STAGE__STAGE_FOREGROUND,
                       -1))
            return 0;
        return coord_on_plan_result(c, w, m->plan_result);
    case GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_JOB_DONE:
        if (sender_ok(c, w, &in->from, "TileJobDone", GASTROSCREEN__V1__STAGE__STAGE_TILER, -1))
            coord_on_tile_job_done(c, w, m->tile_job_done);
        return 0;
    case GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_RESULT:
        /* the tiler reports a tile it could not read */
        if (sender_ok(c, w, &in->from, "TileResult", GASTROSCREEN__V1__STAGE__STAGE_INFER,
                      GASTROSCREEN__V1__STAGE__STAGE_TILER))
            coord_on_tile_result(c, w, m->tile_result);
        return 0;
    case GASTROSCREEN__V1__WORK_MESSAGE__BODY_BLUR_RESULT:
        if (sender_ok(c, w, &in->from, "BlurResult", GASTROSCREEN__V1__STAGE__STAGE_BLUR, -1))
            coord_on_blur_result(c, w, m->blur_result);
        return 0;
    case GASTROSCREEN__V1__WORK_MESSAGE__BODY_SCREEN_RESULT:
        if (!sender_ok(c, w, &in->from, "ScreenResult", GASTROSCREEN__V1__STAGE__STAGE_SCREENER,
                       -1))
            return 0;
        return coord_on_screen_result(c, w, m->screen_result);
    case GASTROSCREEN__V1__WORK_MESSAGE__BODY_REPORT_RESULT:
        if (!sender_ok(c, w, &in->from, "ReportResult", GASTROSCREEN__V1__STAGE__STAGE_REPORTER,
                       -1))
            return 0;
        return coord_on_report_result(c, w, m->report_result);
    default:
        /* A coordinator-to-worker body sent to the coordinator. */
        c->st.wrong_type[GS_COORD_SOCKET_WORK]++;
        coord_logf(c, "work: wrong message type dropped");
        return 0;
    }
}

static void tick(gs_coordinator *c)
{
    int64_t now = coord_now_ms(c);
    if (now < c->next_tick)
        return;
    c->next_tick = now + 1000;
    coord_stats_rate(c, now);
    if (now >= c->next_retain) {
        /* Compaction of slides terminal for longer than journal_retention, hourly. */
        c->next_retain = now + 3600 * 1000;
        size_t dropped = 0;
        if (gs_slides_retain(c->slides, gs_unix_ms(), c->cfg->journal_retention_ms, &dropped) != 0)
            coord_logf(c, "journal retention: %s", gs_error_get());
        else if (dropped)
            coord_logf(c, "journal retention: %zu slides dropped", dropped);
    }
    coord_stats_publish(c);
}

static int drain_work(gs_coordinator *c)
{
    for (int i = 0; i < DRAIN_MAX; i++) {
        gs_inbound in;
        memset(&in, 0, sizeof in);
        gs_recv_status st = gs_transport_recv(c->work, &in, GS_RECV_DONTWAIT);
        if (st == GS_RECV_EMPTY || st == GS_RECV_ERROR) {
            gs_inbound_release(&in);
            return 0;
        }
        int r = 0;
        if (st == GS_RECV_MESSAGE)
            r = on_work(c, &in);
        else if (in.from.len > 0) {
            worker *w = coord_worker_by_peer(c, &in.from);
            if (w)
                w->last_heard = coord_now_ms(c);
        }
        gs_inbound_release(&in);
        if (r < 0)
            return -1;
    }
    return 0;
}

static void drain_query(gs_coordinator *c)
{
    for (int i = 0; i < 64; i++) {
        gs_inbound in;
        memset(&in, 0, sizeof in);
        gs_recv_status st = gs_transport_recv(c->query, &in, GS_RECV_DONTWAIT);
        if (st == GS_RECV_EMPTY || st == GS_RECV_ERROR) {
            gs_inbound_release(&in);
            return;
        }
        coord_on_query(c, &in, st);
        gs_inbound_release(&in);
    }
}

int gs_coordinator_step(gs_coordinator *c, int timeout_ms)
{
    zmq_pollitem_t items[8];
    size_t n = 0;
    items[n++] = (zmq_pollitem_t){.socket = gs_transport_socket(c->work), .events = ZMQ_POLLIN};
    items[n++] = (zmq_pollitem_t){.socket = gs_transport_socket(c->query), .events = ZMQ_POLLIN};
    n += gs_intake_poll_items(c->intake, items + n, 8 - n);
    /* Wake for the next heartbeat or tick even when nothing arrives. */
    int cap = (int)(c->cfg->heartbeat_ms / 2);
    if (cap < 10)
        cap = 10;
    if (timeout_ms < 0 || timeout_ms > cap)
        timeout_ms = cap;
    if (zmq_poll(items, (int)n, timeout_ms) < 0 && errno != EINTR)
        return gs_error_set("coordinator: zmq_poll: %s", zmq_strerror(errno));
    /* work first: results unblock workers (PROTOCOL.md §10). A journal folder that cannot
     * be written fails these with an error that degraded mode absorbs; any other is fatal. */
    if (drain_work(c) != 0 && coord_survive_journal_failure(c, errno) != 0)
        return -1;
    drain_query(c);
    if (gs_intake_handle(c->intake, coord_now_ms(c)) < 0 &&
        coord_survive_journal_failure(c, errno) != 0)
        return -1;
    if (coord_check_liveness(c) != 0 && coord_survive_journal_failure(c, errno) != 0)
        return -1;
    probe_journal(c);
    if (coord_drive(c) != 0 && coord_survive_journal_failure(c, errno) != 0)
        return -1;
    coord_publish_pending(c);
    tick(c);
    coord_stats_refresh(c);
    return 0;
}

int gs_coordinator_run(gs_coordinator *c)
{
    while (!atomic_load(&c->stop_flag) && !(c->o.stop && *c->o.stop))
        if (gs_coordinator_step(c, 100) != 0)
            return -1;
    return 0;
}

void gs_coordinator_stop(gs_coordinator *c)
{
    atomic_store(&c->stop_flag, 1);
}

/* ------------------------------------------------------------------------------------------ */
/* the rest of coordinator.h */

int gs_coordinator_intake(gs_coordinator *c, const char *path, gs_intake_source source,
                          const char *external_id, char out_id[GS_SLIDE_ID_LEN + 1], int *duplicate)
{
    char id[GS_SLIDE_ID_LEN + 1];
    int dup = 0;
    if (gs_intake_path(c->intake, path, source, external_id, id, &dup, NULL) != 0)
        return -1;
    if (out_id)
        memcpy(out_id, id, sizeof id);
    if (duplicate)
        *duplicate = dup;
    return 0;
}

const char *gs_coordinator_endpoint(const gs_coordinator *c, gs_channel channel)
{
    switch (channel) {
    case GS_CHANNEL_INTAKE:
        return gs_intake_intake_endpoint(c->intake);
    case GS_CHANNEL_SUBMIT:
        return gs_intake_submit_endpoint(c->intake);
    case GS_CHANNEL_QUERY:
        return gs_transport_endpoint(c->query);
    case GS_CHANNEL_EVENTS:
        return gs_transport_endpoint(c->events);
    case GS_CHANNEL_WORK:
        return gs_transport_endpoint(c->work);
    default:
        return "";
    }
}

void *gs_coordinator_zmq_ctx(gs_coordinator *c)
{
    return c->zctx;
}

const gs_slides *gs_coordinator_slides(const gs_coordinator *c)
{
    return c->slides;
}

void gs_coordinator_stats_get(gs_coordinator *c, gs_coordinator_stats *out)
{
    pthread_mutex_lock(&c->snap_lock);
    *out = c->snap;
    pthread_mutex_unlock(&c->snap_lock);
}
