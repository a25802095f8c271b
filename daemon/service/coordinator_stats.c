/* The coordinator's figures: the snapshot gs_coordinator_stats_get copies, the slide and tile
 * histograms, the tile rate, and the stats.coordinator event published once a second. */
#include "daemon/service/coordinator_internal.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Histogram bounds in seconds: a slide takes from seconds (no tissue) to many minutes; a tile
 * round trip from milliseconds (blur) to the stall timeout. */
static const double slide_bounds[] = {1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600};
static const double tile_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                     1,     2.5,  5,     10,   30,  60,   120};
#define N_SLIDE_BOUNDS (sizeof slide_bounds / sizeof slide_bounds[0])
#define N_TILE_BOUNDS (sizeof tile_bounds / sizeof tile_bounds[0])

/* The slide's time from acceptance to its verdict. A slide unknown to the table (never the
 * case for a verdict just journalled) counts as 0 s so the histogram's count stays the number
 * of verdicts. */
void coord_observe_slide(gs_coordinator *c, const Gastroscreen__V1__Verdict *v)
{
    gs_slide_info info;
    double secs = 0;
    if (gs_slide_id_ok(v->slide_id) && gs_slides_get(c->slides, v->slide_id, &info) == 0 &&
        info.accepted_unix_ms > 0 && v->decided_unix_ms > info.accepted_unix_ms)
        secs = (double)(v->decided_unix_ms - info.accepted_unix_ms) / 1000.0;
    gs_metrics_hist_observe(&c->st.slide_seconds, slide_bounds, N_SLIDE_BOUNDS, secs);
}

size_t gs_coordinator_slide_bounds(const double **bounds)
{
    *bounds = slide_bounds;
    return N_SLIDE_BOUNDS;
}

size_t gs_coordinator_tile_bounds(const double **bounds)
{
    *bounds = tile_bounds;
    return N_TILE_BOUNDS;
}

/* A tile's round trip (request to the result that recorded its outcome or judgement); which:
 * 0 blur, 1 infer. Results that record nothing (duplicates, stale, errors) are left out. */
void coord_observe_tile(gs_coordinator *c, const slide_rt *rt, uint32_t index, int which, int r,
                        int64_t now)
{
    if (r != GS_LEDGER_RECORDED || !rt->sent_ms || rt->sent_ms[index] < 0)
        return;
    gs_metrics_hist_observe(&c->st.tile_seconds[which], tile_bounds, N_TILE_BOUNDS,
                            (double)(now - rt->sent_ms[index]) / 1000.0);
}

void coord_stats_refresh(gs_coordinator *c)
{
    gs_coordinator_stats s = c->st;
    snprintf(s.coordinator_id, sizeof s.coordinator_id, "%s", c->coordinator_id);
    s.started_unix_ms = c->started_unix_ms;
    s.last_seq = gs_journal_last_seq(c->journal);
    memset(s.stage, 0, sizeof s.stage);
    for (size_t i = 0; i < c->n_workers; i++) {
        const worker *w = &c->workers[i];
        if (!w->used || w->stage < 1 || w->stage >= STAGE_N)
            continue;
        gs_coordinator_stage_stats *a = &s.stage[w->stage];
        a->workers++;
        a->tiles_per_second += w->st.tiles_per_second;
        a->busy_fraction += w->st.busy_fraction;
        a->queue_depth += w->st.queue_depth;
        a->processed += w->st.processed;
        a->malformed += w->st.malformed;
        a->wrong_type += w->st.wrong_type;
        a->errors += w->st.errors;
        a->stale += w->st.stale;
        a->duplicates += w->st.duplicates;
        a->rss_bytes += w->st.rss_bytes;
        if (w->st.peak_rss_bytes > a->peak_rss_bytes)
            a->peak_rss_bytes = w->st.peak_rss_bytes;
    }
    for (int i = 1; i < STAGE_N; i++)
        if (s.stage[i].workers)
            s.stage[i].busy_fraction /= s.stage[i].workers;
    gs_intake_counters ic;
    gs_intake_counters_get(c->intake, &ic);
    s.malformed[GS_COORD_SOCKET_INTAKE] = ic.intake_malformed;
    s.wrong_type[GS_COORD_SOCKET_INTAKE] = ic.intake_wrong_type;
    s.malformed[GS_COORD_SOCKET_SUBMIT] = ic.submit_malformed;
    s.wrong_type[GS_COORD_SOCKET_SUBMIT] = ic.submit_wrong_type;
    const gs_transport_counters *q = gs_transport_counters_get(c->query);
    const gs_transport_counters *wk = gs_transport_counters_get(c->work);
    s.malformed[GS_COORD_SOCKET_QUERY] += q->malformed;
    s.wrong_type[GS_COORD_SOCKET_QUERY] += q->wrong_type;
    s.malformed[GS_COORD_SOCKET_WORK] += wk->malformed;
    s.wrong_type[GS_COORD_SOCKET_WORK] += wk->wrong_type;
    s.slides_in_flight = (uint32_t)gs_slides_in_flight(c->slides);
    s.slides_active = (uint32_t)c->n_active;
    s.intake_rejected = ic.rejected;
    gs_coordinator_stage_stats *me = &s.stage[GASTROSCREEN__V1__STAGE__STAGE_COORDINATOR];
    me->workers = 1;
    me->tiles_per_second = c->st.tiles_per_second;
    me->processed = c->st.tiles_recorded;
    for (int i = 0; i < GS_COORD_SOCKET_COUNT; i++) {
        me->malformed += s.malformed[i];
        me->wrong_type += s.wrong_type[i];
    }
    me->stale = s.stale;
    me->duplicates = s.duplicates;
    pthread_mutex_lock(&c->snap_lock);
    c->snap = s;
    pthread_mutex_unlock(&c->snap_lock);
}

/* tile outcomes per second over the last 10 s */
void coord_stats_rate(gs_coordinator *c, int64_t now)
{
    memmove(c->rate_hist + 1, c->rate_hist, 10 * sizeof c->rate_hist[0]);
    memmove(c->rate_time + 1, c->rate_time, 10 * sizeof c->rate_time[0]);
    c->rate_hist[0] = c->st.tiles_recorded;
    c->rate_time[0] = now;
    int old = 10;
    while (old > 0 && c->rate_time[old] == 0)
        old--;
    if (old > 0 && c->rate_time[0] > c->rate_time[old])
        c->st.tiles_per_second = (double)(c->rate_hist[0] - c->rate_hist[old]) * 1000.0 /
                                 (double)(c->rate_time[0] - c->rate_time[old]);
}

void coord_stats_publish(gs_coordinator *c)
{
    coord_stats_refresh(c);
    gs_coordinator_stats s;
    gs_coordinator_stats_get(c, &s);
    const gs_coordinator_stage_stats *me = &s.stage[GASTROSCREEN__V1__STAGE__STAGE_COORDINATOR];
    Gastroscreen__V1__StageStats ss = GASTROSCREEN__V1__STAGE_STATS__INIT;
    ss.stage = GASTROSCREEN__V1__STAGE__STAGE_COORDINATOR;
    ss.instance_id = c->coordinator_id;
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    ss.host = host;
    ss.started_unix_ms = c->started_unix_ms;
    ss.tiles_per_second = me->tiles_per_second;
    ss.processed = me->processed;
    ss.malformed = me->malformed;
    ss.wrong_type = me->wrong_type;
    ss.stale = me->stale;
    ss.duplicates = me->duplicates;
    ss.slides_in_flight = s.slides_in_flight;
    Gastroscreen__V1__EventMessage ev = GASTROSCREEN__V1__EVENT_MESSAGE__INIT;
    ev.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    ev.time_unix_ms = gs_unix_ms();
    ev.body_case = GASTROSCREEN__V1__EVENT_MESSAGE__BODY_STATS;
    ev.stats = &ss;
    coord_send_event(c, &ev);
    if (c->o.on_tick)
        c->o.on_tick(&s, c->o.tick_ud);
}
