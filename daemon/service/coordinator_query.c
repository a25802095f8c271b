/* The query socket: "events since N" from the journal, and the state of one slide (by id or
 * path) or of every slide in flight, with the verdict of a terminal one. */
#include "daemon/service/coordinator_internal.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

static void query_reply(gs_coordinator *c, const gs_peer *to, Gastroscreen__V1__QueryMessage *m)
{
    m->protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    if (gs_transport_send(c->query, to, &m->base, GS_SEND_DONTWAIT) == 0)
        c->st.queries_answered++;
}

static void query_error(gs_coordinator *c, const gs_peer *to, const char *msg)
{
    Gastroscreen__V1__QueryError e = GASTROSCREEN__V1__QUERY_ERROR__INIT;
    e.error = (char *)msg;
    Gastroscreen__V1__QueryMessage m = GASTROSCREEN__V1__QUERY_MESSAGE__INIT;
    m.body_case = GASTROSCREEN__V1__QUERY_MESSAGE__BODY_ERROR;
    m.error = &e;
    query_reply(c, to, &m);
}

static void answer_events_since(gs_coordinator *c, const gs_peer *to,
                                const Gastroscreen__V1__EventsSinceRequest *r)
{
    size_t max = r->max_events && r->max_events < 1000 ? r->max_events : 1000;
    gs_journal_event *evs = calloc(max, sizeof *evs);
    Gastroscreen__V1__EventMessage **out = calloc(max, sizeof *out);
    if (!evs || !out) {
        free(evs);
        free(out);
        query_error(c, to, "coordinator out of memory");
        return;
    }
    size_t n = gs_journal_events_since(c->journal, r->after_seq, evs, max);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        Gastroscreen__V1__EventMessage *ev =
            gastroscreen__v1__event_message__unpack(NULL, evs[i].payload_len, evs[i].payload);
        if (ev)
            out[k++] = ev;
    }
    Gastroscreen__V1__EventsSinceReply rep = GASTROSCREEN__V1__EVENTS_SINCE_REPLY__INIT;
    rep.n_events = k;
    rep.events = out;
    rep.last_seq = gs_journal_last_seq(c->journal);
    rep.oldest_retained_seq = gs_journal_complete_from(c->journal);
    rep.truncated = r->after_seq + 1 < gs_journal_complete_from(c->journal);
    Gastroscreen__V1__QueryMessage m = GASTROSCREEN__V1__QUERY_MESSAGE__INIT;
    m.body_case = GASTROSCREEN__V1__QUERY_MESSAGE__BODY_EVENTS;
    m.events = &rep;
    query_reply(c, to, &m);
    for (size_t i = 0; i < k; i++)
        gastroscreen__v1__event_message__free_unpacked(out[i], NULL);
    free(out);
    free(evs);
}

/* One SlideStatus, with its verdict when terminal. All pointers into *s and the table. */
typedef struct {
    Gastroscreen__V1__SlideStatus s;
    Gastroscreen__V1__TileCounts tc, vtc;
    Gastroscreen__V1__Verdict v;
    Gastroscreen__V1__ModelProvenance mp;
    Gastroscreen__V1__ReportPaths rp;
    char *warn_copy;
    char **warn;
} status_buf;

static void fill_status(gs_coordinator *c, const gs_slide_info *info, const gs_slide_info *vinfo,
                        status_buf *b)
{
    b->s = (Gastroscreen__V1__SlideStatus)GASTROSCREEN__V1__SLIDE_STATUS__INIT;
    b->tc = (Gastroscreen__V1__TileCounts)GASTROSCREEN__V1__TILE_COUNTS__INIT;
    b->s.slide_id = (char *)info->slide_id;
    b->s.attempt = info->attempt;
    b->s.path = (char *)info->path;
    b->s.state = (Gastroscreen__V1__SlideState)info->state;
    /* A slide being inferred reports the live ledger, not its last journalled counts. */
    slide_rt *rt = coord_rt_find(c, info->slide_id);
    gs_slide_tiles live = info->tiles;
    if (rt && rt->ledger)
        coord_tile_counts(rt, &live);
    coord_tile_counts_msg(&live, &b->tc);
    b->s.tiles = &b->tc;
    b->s.last_seq = info->last_seq;
    b->s.accepted_unix_ms = info->accepted_unix_ms;
    b->s.duplicate_of = (char *)info->duplicate_of;
    if (!vinfo || (vinfo->state != GS_SLIDE_DONE && vinfo->state != GS_SLIDE_FAILED) ||
        vinfo->verdict == GS_VERDICT_NONE)
        return;
    b->v = (Gastroscreen__V1__Verdict)GASTROSCREEN__V1__VERDICT__INIT;
    b->vtc = (Gastroscreen__V1__TileCounts)GASTROSCREEN__V1__TILE_COUNTS__INIT;
    b->rp = (Gastroscreen__V1__ReportPaths)GASTROSCREEN__V1__REPORT_PATHS__INIT;
    coord_fill_provenance(c, &b->mp);
    b->mp.precision = (char *)vinfo->precision;
    coord_tile_counts_msg(&vinfo->tiles, &b->vtc);
    b->rp.report_json = (char *)vinfo->report_json;
    b->rp.heatmap_png = (char *)vinfo->heatmap_png;
    b->rp.regions_geojson = (char *)vinfo->regions_geojson;
    b->v.slide_id = (char *)vinfo->slide_id;
    b->v.attempt = vinfo->attempt;
    b->v.path = (char *)vinfo->path;
    b->v.verdict_class = (Gastroscreen__V1__VerdictClass)vinfo->verdict;
    b->v.score = vinfo->score;
    coord_verdict_threshold(c, vinfo, &b->v);
    b->v.reason = (char *)vinfo->reason;
    b->v.model = &b->mp;
    b->v.report = &b->rp;
    b->v.tiles = &b->vtc;
    b->v.blurred_fraction = vinfo->blurred_fraction;
    b->v.foreground_method = (Gastroscreen__V1__Method)vinfo->foreground_method;
    b->v.blur_method = (Gastroscreen__V1__Method)vinfo->blur_method;
    b->v.external_id = (char *)vinfo->external_id;
    b->v.decided_unix_ms = vinfo->updated_unix_ms;
    b->v.state = (Gastroscreen__V1__SlideState)vinfo->state;
    b->v.poison = vinfo->poison != 0;
    if (vinfo->warnings[0] && (b->warn_copy = strdup(vinfo->warnings)) != NULL) {
        size_t n = 1;
        for (const char *p = b->warn_copy; *p; p++)
            n += *p == '\n';
        if ((b->warn = calloc(n, sizeof *b->warn)) != NULL) {
            char *save = NULL;
            size_t k = 0;
            for (char *t = strtok_r(b->warn_copy, "\n", &save); t && k < n;
                 t = strtok_r(NULL, "\n", &save))
                b->warn[k++] = t;
            b->v.n_warnings = k;
            b->v.warnings = b->warn;
        }
    }
    b->s.verdict = &b->v;
}

static void answer_state(gs_coordinator *c, const gs_peer *to,
                         const Gastroscreen__V1__SlideStateRequest *r)
{
    size_t n_all = gs_slides_count(c->slides);
    status_buf *bufs = calloc(n_all ? n_all : 1, sizeof *bufs);
    Gastroscreen__V1__SlideStatus **ps = calloc(n_all ? n_all : 1, sizeof *ps);
    gs_slide_info *infos = calloc(2 * (n_all ? n_all : 1), sizeof *infos);
    if (!bufs || !ps || !infos) {
        free(bufs);
        free(ps);
        free(infos);
        query_error(c, to, "coordinator out of memory");
        return;
    }
    size_t k = 0;
    if (r->in_flight) {
        for (size_t i = 0; i < n_all; i++) {
            if (gs_slides_at(c->slides, i, &infos[2 * k]) != 0)
                continue;
            if (infos[2 * k].state == GS_SLIDE_DONE || infos[2 * k].state == GS_SLIDE_FAILED)
                continue;
            k++;
        }
        for (size_t i = 0; i < k; i++) {
            fill_status(c, &infos[2 * i], NULL, &bufs[i]);
            ps[i] = &bufs[i].s;
        }
    } else if (n_all > 0) {
        int found = -1;
        if (r->slide_id[0])
            found = gs_slides_get(c->slides, r->slide_id, &infos[0]);
        else if (r->path[0]) {
            char canon[PATH_MAX];
            const char *p = realpath(r->path, canon) ? canon : r->path;
            found = gs_slides_get_by_path(c->slides, p, &infos[0]);
        }
        if (found == 0) {
            const gs_slide_info *v = &infos[0];
            /* A folded record answers with the verdict of the slide it is. */
            if (infos[0].duplicate_of[0] &&
                gs_slides_get(c->slides, infos[0].duplicate_of, &infos[1]) == 0)
                v = &infos[1];
            fill_status(c, &infos[0], v, &bufs[0]);
            ps[0] = &bufs[0].s;
            k = 1;
        }
    }
    Gastroscreen__V1__SlideStateReply rep = GASTROSCREEN__V1__SLIDE_STATE_REPLY__INIT;
    rep.n_slides = k;
    rep.slides = ps;
    Gastroscreen__V1__QueryMessage m = GASTROSCREEN__V1__QUERY_MESSAGE__INIT;
    m.body_case = GASTROSCREEN__V1__QUERY_MESSAGE__BODY_STATE;
    m.state = &rep;
    query_reply(c, to, &m);
    for (size_t i = 0; i < k; i++) {
        free(bufs[i].warn);
        free(bufs[i].warn_copy);
    }
    free(bufs);
    free(ps);
    free(infos);
}

void coord_on_query(gs_coordinator *c, gs_inbound *in, gs_recv_status st)
{
    if (st == GS_RECV_DROPPED) {
        if (in->from.len > 0)
            query_error(c, &in->from,
                        in->drop == GS_DROP_WRONG_TYPE ? "wrong message type"
                                                       : "malformed message");
        return;
    }
    const Gastroscreen__V1__QueryMessage *m = in->msg.query;
    if (m->body_case == GASTROSCREEN__V1__QUERY_MESSAGE__BODY_EVENTS_SINCE)
        answer_events_since(c, &in->from, m->events_since);
    else if (m->body_case == GASTROSCREEN__V1__QUERY_MESSAGE__BODY_SLIDE_STATE) {
        const Gastroscreen__V1__SlideStateRequest *r = m->slide_state;
        if (!gs_wire_str_ok(r->slide_id, 1024) || !gs_wire_str_ok(r->path, 4096)) {
            c->st.malformed[GS_COORD_SOCKET_QUERY]++;
            query_error(c, &in->from, "malformed request: a string too long");
            return;
        }
        answer_state(c, &in->from, r);
    } else {
        c->st.wrong_type[GS_COORD_SOCKET_QUERY]++;
        query_error(c, &in->from, "wrong message type: only requests are served");
    }
}
