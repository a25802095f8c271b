/* The coordinator's workers: who is there (hello, refusal, welcome, heartbeats, goodbye,
 * liveness), what becomes of a worker's jobs and slides when it goes, which worker gets the next
 * job, and the table of jobs sent and not yet answered. */
#include "daemon/service/coordinator_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/error.h"

/* ------------------------------------------------------------------------------------------ */
/* the registry and the job table */

int coord_any_worker(const gs_coordinator *c, int stage)
{
    for (size_t i = 0; i < c->n_workers; i++)
        if (c->workers[i].used && c->workers[i].stage == stage)
            return 1;
    return 0;
}

worker *coord_worker_by_peer(gs_coordinator *c, const gs_peer *p)
{
    for (size_t i = 0; i < c->n_workers; i++)
        if (c->workers[i].used && c->workers[i].peer.len == p->len &&
            memcmp(c->workers[i].peer.id, p->id, p->len) == 0)
            return &c->workers[i];
    return NULL;
}

int coord_send_work(gs_coordinator *c, worker *w, WorkMessage *m)
{
    m->protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    if (gs_transport_send(c->work, &w->peer, &m->base, GS_SEND_DONTWAIT) != 0)
        return -1;
    w->last_sent = coord_now_ms(c);
    return 0;
}

/* The worker of the stage with a free slot, least recently used first. */
worker *coord_pick_worker(gs_coordinator *c, int stage)
{
    worker *best = NULL;
    for (size_t i = 0; i < c->n_workers; i++) {
        worker *w = &c->workers[i];
        if (!w->used || w->stage != stage || w->free_slots == 0)
            continue;
        if (!best || w->last_used < best->last_used)
            best = w;
    }
    return best;
}

static int add_job(gs_coordinator *c, uint64_t id, int kind, const char *slide, uint32_t attempt,
                   worker *w)
{
    if (c->n_jobs == c->cap_jobs) {
        size_t cap = c->cap_jobs ? c->cap_jobs * 2 : 64;
        job *nj = realloc(c->jobs, cap * sizeof *nj);
        if (!nj)
            return gs_error_set("coordinator: out of memory");
        c->jobs = nj;
        c->cap_jobs = cap;
    }
    job *j = &c->jobs[c->n_jobs++];
    j->id = id;
    j->kind = kind;
    snprintf(j->slide, sizeof j->slide, "%s", slide);
    j->attempt = attempt;
    j->worker = (int)(w - c->workers);
    return 0;
}

void coord_remove_job(gs_coordinator *c, uint64_t id)
{
    for (size_t i = 0; i < c->n_jobs; i++)
        if (c->jobs[i].id == id) {
            c->jobs[i] = c->jobs[--c->n_jobs];
            return;
        }
}

job *coord_job_find(gs_coordinator *c, uint64_t id)
{
    for (size_t i = 0; id && i < c->n_jobs; i++)
        if (c->jobs[i].id == id)
            return &c->jobs[i];
    return NULL;
}

int coord_job_sent(gs_coordinator *c, worker *w, int kind, slide_rt *rt, uint64_t id)
{
    w->free_slots--;
    w->last_used = coord_now_ms(c);
    c->st.jobs_sent++;
    return add_job(c, id, kind, rt->id, rt->attempt, w);
}

/* Collects the tile inboxes of a stage's workers into eps (pointers into the table). */
size_t coord_inboxes(gs_coordinator *c, int stage, char **eps, char **keys, size_t max,
                     uint32_t *batch_sum)
{
    size_t n = 0;
    uint32_t b = 0;
    for (size_t i = 0; i < c->n_workers && n < max; i++)
        if (c->workers[i].used && c->workers[i].stage == stage && c->workers[i].inbox[0]) {
            keys[n] = c->workers[i].inbox_key;
            eps[n++] = c->workers[i].inbox;
            b += c->workers[i].batch ? c->workers[i].batch : 1;
        }
    if (batch_sum)
        *batch_sum = b;
    return n;
}

/* ------------------------------------------------------------------------------------------ */
/* worker life cycle */

static void send_welcome(gs_coordinator *c, const gs_peer *to, int accepted, const char *reason)
{
    Gastroscreen__V1__WorkerWelcome w = GASTROSCREEN__V1__WORKER_WELCOME__INIT;
    w.accepted = accepted;
    w.reason = (char *)reason;
    w.heartbeat_ms = c->cfg->heartbeat_ms;
    w.liveness = c->cfg->liveness;
    w.coordinator_id = c->coordinator_id;
    WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    m.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_WELCOME;
    m.welcome = &w;
    (void)gs_transport_send(c->work, to, &m.base, GS_SEND_DONTWAIT);
}

void coord_send_heartbeat(gs_coordinator *c, const gs_peer *to, int say_hello)
{
    Gastroscreen__V1__CoordinatorHeartbeat h = GASTROSCREEN__V1__COORDINATOR_HEARTBEAT__INIT;
    h.coordinator_id = c->coordinator_id;
    h.say_hello = say_hello;
    WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    m.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_COORDINATOR_HEARTBEAT;
    m.coordinator_heartbeat = &h;
    (void)gs_transport_send(c->work, to, &m.base, GS_SEND_DONTWAIT);
}

/* The worker is gone (lost = 1: a crash mark for its slides) or said goodbye / hello again.
 * Its jobs are re-sent; tiles it may have held are re-requested after loss_grace. */
static int worker_gone(gs_coordinator *c, worker *w, int lost)
{
    int64_t now = coord_now_ms(c);
    int idx = (int)(w - c->workers);
    char marks[MAX_HAND + 64][GS_SLIDE_ID_LEN + 1];
    uint32_t mark_att[MAX_HAND + 64];
    size_t n_marks = 0;
    for (size_t i = 0; i < c->n_jobs;) {
        job *j = &c->jobs[i];
        if (j->worker != idx) {
            i++;
            continue;
        }
        slide_rt *rt = coord_rt_find(c, j->slide);
        if (rt && rt->job_id == j->id) {
            rt->job_id = 0;
            rt->need_send = 1;
        }
        if (n_marks < MAX_HAND + 64) {
            snprintf(marks[n_marks], sizeof marks[0], "%s", j->slide);
            mark_att[n_marks++] = j->attempt;
        }
        c->jobs[i] = c->jobs[--c->n_jobs];
    }
    for (size_t i = 0; i < w->n_hand && n_marks < MAX_HAND + 64; i++) {
        snprintf(marks[n_marks], sizeof marks[0], "%s", w->hand[i].slide);
        mark_att[n_marks++] = w->hand[i].attempt;
    }
    if (w->stage == GASTROSCREEN__V1__STAGE__STAGE_TILER ||
        w->stage == GASTROSCREEN__V1__STAGE__STAGE_BLUR ||
        w->stage == GASTROSCREEN__V1__STAGE__STAGE_INFER)
        for (size_t i = 0; i < c->n_active; i++)
            if (c->active[i]->ledger)
                gs_ledger_worker_lost(c->active[i]->ledger, now);
    w->used = 0;
    if (!lost)
        return 0;
    c->st.workers_lost++;
    coord_logf(c, "worker %s lost", w->id);
    for (size_t i = 0; i < n_marks; i++) {
        int dup = 0;
        for (size_t k = 0; k < i; k++)
            if (strcmp(marks[k], marks[i]) == 0)
                dup = 1;
        if (dup)
            continue;
        uint64_t seq = 0;
        int r = gs_slides_crash_mark(c->slides, marks[i], mark_att[i], gs_unix_ms(), &seq);
        if (r < 0)
            return -1;
        if (r == 0 && seq) {
            slide_rt *rt = coord_rt_find(c, marks[i]);
            if (rt)
                coord_rt_drop(c, rt);
            coord_publish_pending(c);
        }
    }
    return 0;
}

/* 1 when a worker id is printable ASCII without spaces: ids reach log lines and events, and
 * a newline in one could forge a log line. */
static int worker_id_ok(const char *id)
{
    if (!id[0])
        return 0;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++)
        if (*p <= ' ' || *p >= 0x7f)
            return 0;
    return 1;
}

/* A precision a hello may name: the name of one (gs_precision_name), [a-z0-9], at most 15
 * characters; it becomes a metrics label and part of a slide's precision list. */
static int precision_name_ok(const char *p)
{
    size_t n = strlen(p);
    if (n > 15)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= '0' && p[i] <= '9')))
            return 0;
    return 1;
}

/* 1 for the stages that load the bundle's networks (or their classical fallbacks): their
 * hello must name the bundle, so a worker with another model, or none, is never sent tiles. */
static int uses_model(int stage)
{
    return stage == GASTROSCREEN__V1__STAGE__STAGE_FOREGROUND ||
           stage == GASTROSCREEN__V1__STAGE__STAGE_BLUR ||
           stage == GASTROSCREEN__V1__STAGE__STAGE_INFER ||
           stage == GASTROSCREEN__V1__STAGE__STAGE_SCREENER;
}

/* With CURVE, the key a worker connected with must list the stage it says hello as
 * (stages/runtime/keys: `roles` of its .pub file, looked up in the keys now in force). NULL
 * when it may, else the reason to refuse it. */
static const char *key_role_refusal(gs_coordinator *c, const gs_peer *from, int stage)
{
    if (!c->zap)
        return NULL; /* plain sockets: no key to check (PROTOCOL.md §2) */
    unsigned roles = 0;
    if (gs_zap_worker_roles(c->zap, from->user_id, &roles) < 0)
        return "the connection's key is not a listed worker key";
    if (stage < 0 || stage >= 32 || !(roles & (1u << stage)))
        return "the worker's key is not listed for this stage";
    return NULL;
}

void coord_on_hello(gs_coordinator *c, const gs_peer *from, const Gastroscreen__V1__WorkerHello *h)
{
    if (!gs_wire_str_ok(h->worker_id, 255) || !worker_id_ok(h->worker_id) ||
        !gs_wire_str_ok(h->tile_inbox, 511) || !gs_wire_str_ok(h->host, 1024) ||
        !gs_wire_str_ok(h->tile_inbox_key, 40) ||
        (h->tile_inbox_key[0] && strlen(h->tile_inbox_key) != 40) ||
        !gs_wire_str_ok(h->version, 1024)) {
        coord_count_malformed(c, "WorkerHello", from);
        return;
    }
    int64_t now = coord_now_ms(c);
    const char *reason = NULL;
    if (h->stage < GASTROSCREEN__V1__STAGE__STAGE_TILER ||
        h->stage > GASTROSCREEN__V1__STAGE__STAGE_REPORTER)
        reason = "unknown stage";
    else if ((reason = key_role_refusal(c, from, h->stage)))
        ;
    else if ((h->stage == GASTROSCREEN__V1__STAGE__STAGE_BLUR ||
              h->stage == GASTROSCREEN__V1__STAGE__STAGE_INFER) &&
             !h->tile_inbox[0])
        reason = "a blur or infer worker must announce its tile_inbox";
    else if (uses_model(h->stage) && c->model.sha256[0] &&
             (!h->model || !h->model->sha256 || !h->model->sha256[0]))
        reason = "a worker of this stage must name its model (WorkerHello.model)";
    else if (c->model.sha256[0] && h->model && h->model->sha256 && h->model->sha256[0] &&
             strcmp(h->model->sha256, c->model.sha256) != 0)
        reason = "model sha256 differs from the coordinator's";
    else if (h->model && h->model->precision && !precision_name_ok(h->model->precision))
        reason = "model precision is not a short lower-case name";
    /* An id in use by a worker heard from lately, on another connection, is not that worker
     * coming back (it would say hello on its own connection, or after going quiet): ids are
     * public (stats events), so taking one over must not make the real worker's jobs lost. */
    for (size_t i = 0; !reason && i < c->n_workers; i++) {
        const worker *o = &c->workers[i];
        if (o->used && strcmp(o->id, h->worker_id) == 0 &&
            !(o->peer.len == from->len && memcmp(o->peer.id, from->id, from->len) == 0) &&
            now - o->last_heard < 2 * (int64_t)c->cfg->heartbeat_ms)
            reason = "worker id in use by a live worker";
    }
    if (reason) {
        c->st.workers_refused++;
        coord_peer_logf(c, from, "worker %s refused: %s", h->worker_id, reason);
        send_welcome(c, from, 0, reason);
        return;
    }
    /* A worker saying hello again abandoned its jobs: they are re-sent (no crash mark). */
    for (size_t i = 0; i < c->n_workers; i++) {
        worker *o = &c->workers[i];
        if (o->used && (strcmp(o->id, h->worker_id) == 0 ||
                        (o->peer.len == from->len && memcmp(o->peer.id, from->id, from->len) == 0)))
            worker_gone(c, o, 0);
    }
    worker *w = NULL;
    for (size_t i = 0; i < c->n_workers; i++)
        if (!c->workers[i].used) {
            w = &c->workers[i];
            break;
        }
    if (!w) {
        worker *nw = realloc(c->workers, (c->n_workers + 1) * sizeof *nw);
        if (!nw) {
            send_welcome(c, from, 0, "coordinator out of memory");
            return;
        }
        c->workers = nw;
        w = &c->workers[c->n_workers++];
    }
    memset(w, 0, sizeof *w);
    w->used = 1;
    w->peer = *from;
    snprintf(w->id, sizeof w->id, "%s", h->worker_id);
    w->stage = h->stage;
    snprintf(w->inbox, sizeof w->inbox, "%s", h->tile_inbox);
    snprintf(w->inbox_key, sizeof w->inbox_key, "%s", h->tile_inbox_key);
    w->batch = h->batch_size;
    snprintf(w->precision, sizeof w->precision, "%s",
             h->model && h->model->precision && h->model->precision[0] ? h->model->precision
                                                                       : "fp32");
    w->last_heard = now;
    w->welcomed_at = now;
    w->last_used = 0;
    c->st.workers_welcomed++;
    send_welcome(c, from, 1, "");
    w->last_sent = now;
    coord_logf(c, "worker %s welcomed", w->id);
}

void coord_on_heartbeat(gs_coordinator *c, worker *w, const Gastroscreen__V1__WorkerHeartbeat *h)
{
    w->n_hand = 0;
    for (size_t i = 0; i < h->n_in_hand && w->n_hand < MAX_HAND; i++) {
        const Gastroscreen__V1__JobRef *r = h->in_hand[i];
        if (!gs_slide_id_ok(r->slide_id))
            continue;
        snprintf(w->hand[w->n_hand].slide, sizeof w->hand[0].slide, "%s", r->slide_id);
        w->hand[w->n_hand].attempt = r->attempt;
        w->n_hand++;
    }
    if (h->stats) {
        const Gastroscreen__V1__StageStats *s = h->stats;
        w->st.workers = 1;
        w->st.tiles_per_second = isfinite(s->tiles_per_second) ? s->tiles_per_second : 0;
        w->st.busy_fraction = isfinite(s->busy_fraction) ? s->busy_fraction : 0;
        w->st.queue_depth = s->queue_depth;
        w->st.processed = s->processed;
        w->st.malformed = s->malformed;
        w->st.wrong_type = s->wrong_type;
        w->st.errors = s->errors;
        w->st.stale = s->stale;
        w->st.duplicates = s->duplicates;
        w->st.rss_bytes = s->rss_bytes;
        w->st.peak_rss_bytes = s->peak_rss_bytes;
        if (gs_wire_str_ok(s->instance_id, 1024) && gs_wire_str_ok(s->host, 1024) &&
            s->stage == (Gastroscreen__V1__Stage)w->stage) {
            Gastroscreen__V1__EventMessage ev = GASTROSCREEN__V1__EVENT_MESSAGE__INIT;
            ev.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
            ev.time_unix_ms = gs_unix_ms();
            ev.body_case = GASTROSCREEN__V1__EVENT_MESSAGE__BODY_STATS;
            ev.stats = (Gastroscreen__V1__StageStats *)s;
            coord_send_event(c, &ev);
        }
    }
}

int coord_on_goodbye(gs_coordinator *c, worker *w, const Gastroscreen__V1__WorkerGoodbye *g)
{
    int64_t now = coord_now_ms(c);
    c->st.workers_goodbye++;
    for (size_t i = 0; i < g->n_handed_back; i++) {
        const Gastroscreen__V1__HandedBack *hb = g->handed_back[i];
        if (!hb->job || !gs_slide_id_ok(hb->job->slide_id))
            continue;
        slide_rt *rt = coord_rt_find(c, hb->job->slide_id);
        if (!rt || rt->attempt != hb->job->attempt)
            continue;
        if (rt->job_id && rt->job_id == hb->job->job_id) {
            coord_remove_job(c, rt->job_id);
            rt->job_id = 0;
            rt->need_send = 1;
        }
        for (size_t k = 0; rt->ledger && k < hb->n_unsent_tiles; k++)
            coord_note_tile(c,
                            gs_ledger_failed_request(rt->ledger, rt->attempt, hb->unsent_tiles[k],
                                                     "handed back unsent", now));
    }
    coord_logf(c, "worker %s said goodbye%s%s", w->id, g->reason[0] ? ": " : "", g->reason);
    return worker_gone(c, w, 0);
}

int coord_check_liveness(gs_coordinator *c)
{
    int64_t now = coord_now_ms(c);
    int64_t hb = c->cfg->heartbeat_ms;
    int64_t dead = hb * c->cfg->liveness;
    for (size_t i = 0; i < c->n_workers; i++) {
        worker *w = &c->workers[i];
        if (!w->used)
            continue;
        if (now - w->last_heard > dead) {
            if (worker_gone(c, w, 1) != 0)
                return -1;
            continue;
        }
        if (now - w->last_sent >= hb) {
            coord_send_heartbeat(c, &w->peer, 0);
            w->last_sent = now;
        }
    }
    return 0;
}
