#include "stages/handlers/tiler.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/error.h"
#include "proto/vocab.h"
#include "stages/slide/reader.h"
#include "stages/runtime/fileio.h"
#include "stages/runtime/transport.h"

#define PATH_MAX_BYTES 4096
#define TILE_MIN 16
/* The largest square RGB tile under the tile socket's 8 MiB message cap (1672^2 * 3). */
#define TILE_MAX 1672
#define TILES_PER_JOB_MAX 65536
/* Context around an infer tile, target pixels per side (InferJob.context). */
#define CONTEXT_MAX 256

struct gs_tiler_job {
    const Gastroscreen__V1__TileJob *job;
    char tiler_id[256];
    gs_slide *slide; /* NULL when the open failed: every tile fails with open_error */
    char open_error[1024];
    char read_error[1024];    /* set by the first failed read: the handle is closed since */
    double level0_per_target; /* level-0 pixels per target pixel */
    int64_t width0, height0;
    size_t next; /* index into job->tiles of the next tile to hand out */
    uint32_t sent, failed;
    uint32_t *unsent; /* n_tiles entries, filled by gs_tiler_job_unsent */
};

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* PROTOCOL.md §14 step 6 for a TileJob. */
static int check_job(const Gastroscreen__V1__TileJob *job)
{
    if (!gs_slide_id_ok(job->slide_id))
        return gs_error_set("tile job: slide_id is not 16 lower-case hex digits");
    if (job->attempt < 1)
        return gs_error_set("tile job: attempt not set");
    if (!job->path || !job->path[0] || strlen(job->path) >= PATH_MAX_BYTES)
        return gs_error_set("tile job: missing or over-long slide path");
    const Gastroscreen__V1__TileGrid *g = job->grid;
    if (!g)
        return gs_error_set("tile job: no grid");
    if (g->tile_size < TILE_MIN || g->tile_size > TILE_MAX)
        return gs_error_set("tile job: tile_size %" PRIu32 " outside %d..%d", g->tile_size,
                            TILE_MIN, TILE_MAX);
    if (!isfinite(g->target_mpp) || g->target_mpp <= 0 || g->target_mpp > 1000)
        return gs_error_set("tile job: target_mpp %g is not a resolution", g->target_mpp);
    if (g->window_level0 == 0)
        return gs_error_set("tile job: window_level0 not set");
    if (job->job_case != GASTROSCREEN__V1__TILE_JOB__JOB_INFER &&
        job->job_case != GASTROSCREEN__V1__TILE_JOB__JOB_BLUR)
        return gs_error_set("tile job: neither infer nor blur");
    if ((job->job_case == GASTROSCREEN__V1__TILE_JOB__JOB_INFER && !job->infer) ||
        (job->job_case == GASTROSCREEN__V1__TILE_JOB__JOB_BLUR && !job->blur))
        return gs_error_set("tile job: empty infer/blur parameters");
    if (job->job_case == GASTROSCREEN__V1__TILE_JOB__JOB_INFER &&
        (job->infer->context % 16 || job->infer->context > CONTEXT_MAX))
        return gs_error_set("tile job: context %" PRIu32 " is not a multiple of 16 in 0..%d",
                            job->infer->context, CONTEXT_MAX);
    if (job->job_case == GASTROSCREEN__V1__TILE_JOB__JOB_INFER &&
        g->tile_size + 2 * job->infer->context > TILE_MAX)
        return gs_error_set("tile job: tile_size %" PRIu32 " with context %" PRIu32
                            " makes a frame over %d px",
                            g->tile_size, job->infer->context, TILE_MAX);
    if (job->n_tiles == 0 || job->n_tiles > TILES_PER_JOB_MAX)
        return gs_error_set("tile job: %zu tiles", job->n_tiles);
    uint32_t *idx = malloc(job->n_tiles * sizeof *idx);
    if (!idx)
        return gs_error_set("tile job: out of memory");
    for (size_t i = 0; i < job->n_tiles; i++) {
        if (!job->tiles[i]) {
            free(idx);
            return gs_error_set("tile job: empty tile reference");
        }
        idx[i] = job->tiles[i]->index;
    }
    qsort(idx, job->n_tiles, sizeof *idx, cmp_u32);
    for (size_t i = 1; i < job->n_tiles; i++) {
        if (idx[i] == idx[i - 1]) {
            uint32_t dup = idx[i];
            free(idx);
            return gs_error_set("tile job: tile %" PRIu32 " listed twice", dup);
        }
    }
    free(idx);
    return 0;
}

gs_tiler_job *gs_tiler_job_new(const Gastroscreen__V1__TileJob *job, const char *tiler_id)
{
    if (check_job(job) < 0)
        return NULL;
    gs_tiler_job *j = calloc(1, sizeof *j);
    if (!j) {
        gs_error_set("out of memory for a tile job");
        return NULL;
    }
    j->job = job;
    /* Allocated now so that a hand-back never fails for want of memory. */
    j->unsent = malloc(job->n_tiles * sizeof *j->unsent);
    if (!j->unsent) {
        free(j);
        gs_error_set("out of memory for a tile job");
        return NULL;
    }
    snprintf(j->tiler_id, sizeof j->tiler_id, "%s", tiler_id ? tiler_id : "");
    const Gastroscreen__V1__TileGrid *g = job->grid;
    /* The job carries no default mpp; the grid implies the one the plan used: a window of
     * window_level0 level-0 pixels is tile_size target pixels. It is used only when the slide
     * has no mpp of its own, exactly as the foreground stage did. */
    gs_slide_options so;
    gs_slide_options_default(&so);
    so.target_mpp = g->target_mpp;
    so.default_mpp = g->target_mpp * (double)g->tile_size / (double)g->window_level0;
    j->slide = gs_slide_open_for_job(job->path, &so, job->identity);
    if (!j->slide) {
        snprintf(j->open_error, sizeof j->open_error, "%s", gs_error_get());
        return j;
    }
    j->level0_per_target = g->target_mpp / gs_slide_mpp(j->slide);
    gs_slide_level_size(j->slide, 0, &j->width0, &j->height0);
    return j;
}

void gs_tiler_job_destroy(gs_tiler_job **jp)
{
    if (!jp || !*jp)
        return;
    gs_slide_destroy(&(*jp)->slide);
    free((*jp)->unsent);
    free(*jp);
    *jp = NULL;
}

static int fail_item(gs_tiler_job *j, gs_tiler_item *it, const Gastroscreen__V1__TileRef *ref,
                     const char *msg)
{
    const Gastroscreen__V1__TileJob *job = j->job;
    it->failed = 1;
    snprintf(it->error, sizeof it->error, "%s", msg);
    gastroscreen__v1__tile_result__init(&it->tile_result);
    it->tile_result.slide_id = job->slide_id;
    it->tile_result.attempt = job->attempt;
    it->tile_result.tile_index = ref->index;
    it->tile_result.worker_id = j->tiler_id;
    it->tile_result.outcome = GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_ERROR;
    it->tile_result.error = it->error;
    it->tile_result.request = job->request;
    gastroscreen__v1__work_message__init(&it->result);
    it->result.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    it->result.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_RESULT;
    it->result.tile_result = &it->tile_result;
    j->failed++;
    return 1;
}

int gs_tiler_job_next(gs_tiler_job *j, gs_tiler_item *it)
{
    const Gastroscreen__V1__TileJob *job = j->job;
    memset(it, 0, sizeof *it);
    if (j->next >= job->n_tiles)
        return 0;
    const Gastroscreen__V1__TileRef *ref = job->tiles[j->next];
    if (!j->slide) {
        j->next++;
        return fail_item(j, it, ref, j->open_error);
    }
    if (j->read_error[0]) {
        j->next++;
        return fail_item(j, it, ref, j->read_error);
    }
    const Gastroscreen__V1__TileGrid *g = job->grid;
    if (ref->x0 < 0 || ref->y0 < 0 || ref->x0 >= j->width0 || ref->y0 >= j->height0) {
        char msg[256];
        snprintf(msg, sizeof msg,
                 "%s: tile %" PRIu32 " at (%" PRId64 ", %" PRId64 ") is outside the %" PRId64
                 "x%" PRId64 " slide",
                 job->path, ref->index, ref->x0, ref->y0, j->width0, j->height0);
        j->next++;
        return fail_item(j, it, ref, msg);
    }
    /* An infer tile may carry context around its window (InferJob.context). */
    uint32_t ctx = job->job_case == GASTROSCREEN__V1__TILE_JOB__JOB_INFER ? job->infer->context : 0;
    size_t side = g->tile_size + 2 * (size_t)ctx, len = side * side * 3;
    uint8_t *px = malloc(len);
    if (!px) {
        gs_error_set("out of memory for a %zux%zu tile", side, side);
        return -1;
    }
    j->next++;
    int64_t t0 = gs_mono_us();
    int64_t tx = llround((double)ref->x0 / j->level0_per_target);
    int64_t ty = llround((double)ref->y0 / j->level0_per_target);
    /* OpenSlide re-opens the file by path while reading, so each tile read is followed by a
     * check that the path still names the file accepted (a stat and a realpath: nothing next
     * to a tile read); a changed file fails this and the remaining tiles. */
    if (gs_slide_read_target(j->slide, tx - ctx, ty - ctx, (int)side, (int)side, px) < 0 ||
        (job->identity && gs_slide_recheck(j->slide) < 0)) {
        /* The slide closed its handle, or the file changed: the remaining tiles fail with this
         * same message. */
        free(px);
        snprintf(j->read_error, sizeof j->read_error, "%s", gs_error_get());
        return fail_item(j, it, ref, j->read_error);
    }
    Gastroscreen__V1__TileHeader *h = &it->header;
    gastroscreen__v1__tile_header__init(h);
    h->slide_id = job->slide_id;
    h->attempt = job->attempt;
    h->tile_index = ref->index;
    h->width = (uint32_t)side;
    h->height = (uint32_t)side;
    h->channels = 3;
    h->pixel_format = GASTROSCREEN__V1__PIXEL_FORMAT__PIXEL_FORMAT_RGB8;
    h->x0 = ref->x0;
    h->y0 = ref->y0;
    h->window_level0 = g->window_level0;
    h->mpp = g->target_mpp;
    h->job_id = job->job_id;
    h->tiler_id = j->tiler_id;
    h->request = job->request;
    h->read_us = (uint64_t)(gs_mono_us() - t0);
    if (job->job_case == GASTROSCREEN__V1__TILE_JOB__JOB_INFER) {
        h->job_case = GASTROSCREEN__V1__TILE_HEADER__JOB_INFER;
        h->infer = job->infer;
    } else {
        h->job_case = GASTROSCREEN__V1__TILE_HEADER__JOB_BLUR;
        h->blur = job->blur;
    }
    gastroscreen__v1__tile_message__init(&it->message);
    it->message.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    it->message.body_case = GASTROSCREEN__V1__TILE_MESSAGE__BODY_TILE;
    it->message.tile = h;
    it->pixels = px;
    it->pixels_len = len;
    j->sent++;
    return 1;
}

void gs_tiler_item_release(gs_tiler_item *it)
{
    free(it->pixels);
    it->pixels = NULL;
    it->pixels_len = 0;
}

const uint32_t *gs_tiler_job_unsent(gs_tiler_job *j, size_t *n)
{
    const Gastroscreen__V1__TileJob *job = j->job;
    *n = job->n_tiles - j->next;
    for (size_t i = 0; i < *n; i++)
        j->unsent[i] = job->tiles[j->next + i]->index;
    return j->unsent;
}

void gs_tiler_job_counts(const gs_tiler_job *j, uint32_t *sent, uint32_t *failed)
{
    *sent = j->sent;
    *failed = j->failed;
}

void gs_tiler_job_done(const gs_tiler_job *j, Gastroscreen__V1__TileJobDone *done)
{
    gastroscreen__v1__tile_job_done__init(done);
    done->slide_id = j->job->slide_id;
    done->attempt = j->job->attempt;
    done->job_id = j->job->job_id;
    done->worker_id = (char *)j->tiler_id;
    done->sent = j->sent;
    done->failed = j->failed;
}

/* ---- the tiler stage on a gs_worker ----------------------------------------------------- */

#define SINKS_MAX 256
/* A tile waiting for room in the sinks looks at the stop flag this often. */
#define POLLOUT_SLICE_MS 100

/* One PUSH of a handler thread with the endpoints it is connected to. A thread keeps one per
 * sink stage (infer, blur): zmq_disconnect discards the tiles still queued for that peer once
 * LINGER runs out, so switching one socket between the infer inboxes and the blur inboxes (one
 * slide in its blur check while another infers) silently lost tiles a busy infer worker had
 * not read yet. Endpoints are only disconnected when their worker left the stage's list. */
typedef struct {
    gs_transport *push;
    char *sinks[SINKS_MAX];
    char *keys[SINKS_MAX]; /* each sink's CURVE key as connected ("" plain) */
    size_t nsinks;
} tiler_thread;
#define SINK_STAGES 2 /* tiler_thread [2 * thread + 0]: infer sinks, [2 * thread + 1]: blur */

struct gs_tiler_stage {
    void *ctx;
    int hwm;
    int sink_wait_ms;
    int nthreads;
    tiler_thread *threads;
    const gs_curve_keys *curve;
};

gs_tiler_stage *gs_tiler_stage_new(void *zctx, int threads, int tile_hwm)
{
    if (!zctx || threads < 1) {
        gs_error_set("tiler stage: needs a ZeroMQ context and at least one thread");
        return NULL;
    }
    gs_tiler_stage *s = calloc(1, sizeof *s);
    if (!s || !(s->threads = calloc((size_t)threads * SINK_STAGES, sizeof *s->threads))) {
        free(s);
        gs_error_set("out of memory for the tiler stage");
        return NULL;
    }
    s->ctx = zctx;
    s->hwm = tile_hwm > 0 ? tile_hwm : 8;
    s->sink_wait_ms = GS_TILER_SINK_WAIT_MS;
    s->nthreads = threads;
    return s;
}

void gs_tiler_stage_set_sink_wait(gs_tiler_stage *s, int ms)
{
    GS_ASSERT(s && ms > 0);
    s->sink_wait_ms = ms;
}

void gs_tiler_stage_set_curve(gs_tiler_stage *s, const gs_curve_keys *keys)
{
    s->curve = keys;
}

void gs_tiler_stage_destroy(gs_tiler_stage **sp)
{
    if (!sp || !*sp)
        return;
    gs_tiler_stage *s = *sp;
    for (int i = 0; i < s->nthreads * SINK_STAGES; i++) {
        gs_transport_destroy(&s->threads[i].push);
        for (size_t k = 0; k < s->threads[i].nsinks; k++) {
            free(s->threads[i].sinks[k]);
            free(s->threads[i].keys[k]);
        }
    }
    free(s->threads);
    free(s);
    *sp = NULL;
}

/* Sink i's CURVE public key ("" for a plain inbox or an older coordinator). */
static const char *sink_key(const Gastroscreen__V1__TileJob *job, size_t i)
{
    return i < job->n_sink_keys && job->sink_keys[i] ? job->sink_keys[i] : "";
}

/* The keys to connect to sink i with (PROTOCOL.md §2): NULL = plain. */
static const gs_curve_keys *sink_curve(const gs_tiler_stage *s,
                                       const Gastroscreen__V1__TileJob *job, size_t i,
                                       gs_curve_keys *buf)
{
    if (!s->curve || !sink_key(job, i)[0])
        return NULL;
    *buf = *s->curve;
    buf->server = sink_key(job, i);
    return buf;
}

/* Connects the thread's PUSH (made on first use) to sink i of the job and records it. */
static int add_sink(gs_tiler_stage *s, tiler_thread *t, const Gastroscreen__V1__TileJob *job,
                    size_t i)
{
    gs_curve_keys buf;
    const gs_curve_keys *k = sink_curve(s, job, i, &buf);
    if (!t->push) {
        gs_transport_options o = {s->hwm, "tiles", 0};
        t->push = gs_transport_new_curve(s->ctx, GS_CHANNEL_TILES, ZMQ_PUSH, GS_CONNECT,
                                         job->sink_endpoints[i], &o, k);
        if (!t->push)
            return -1;
    } else if (gs_transport_connect_curve(t->push, job->sink_endpoints[i], k) < 0) {
        return -1;
    }
    if (!(t->sinks[t->nsinks] = strdup(job->sink_endpoints[i])))
        return gs_error_set("out of memory");
    if (!(t->keys[t->nsinks] = strdup(sink_key(job, i)))) {
        free(t->sinks[t->nsinks]);
        return gs_error_set("out of memory");
    }
    t->nsinks++;
    return 0;
}

/* Makes the thread's PUSH connections equal to the job's sink_endpoints (with their keys: an
 * inbox restarted with another key on the same address is connected again). */
static int sync_sinks(gs_tiler_stage *s, tiler_thread *t, const Gastroscreen__V1__TileJob *job)
{
    if (job->n_sink_endpoints == 0 || job->n_sink_endpoints > SINKS_MAX)
        return gs_error_set("tile job: %zu sink endpoints", job->n_sink_endpoints);
    for (size_t k = 0; k < t->nsinks;) {
        int wanted = 0;
        for (size_t i = 0; i < job->n_sink_endpoints && !wanted; i++)
            wanted = !strcmp(t->sinks[k], job->sink_endpoints[i]) &&
                     !strcmp(t->keys[k], sink_key(job, i));
        if (wanted) {
            k++;
            continue;
        }
        gs_transport_disconnect(t->push, t->sinks[k]); /* already gone is fine */
        free(t->sinks[k]);
        free(t->keys[k]);
        t->nsinks--;
        t->sinks[k] = t->sinks[t->nsinks];
        t->keys[k] = t->keys[t->nsinks];
    }
    for (size_t i = 0; i < job->n_sink_endpoints; i++) {
        int have = 0;
        for (size_t k = 0; k < t->nsinks && !have; k++)
            have = !strcmp(t->sinks[k], job->sink_endpoints[i]) &&
                   !strcmp(t->keys[k], sink_key(job, i));
        if (!have && add_sink(s, t, job, i) < 0)
            return -1;
    }
    return 0;
}

static void free_pixels(void *pixels, void *hint)
{
    (void)hint;
    free(pixels);
}

/* Pushes one tile, waiting for room up to wait_ms; 1 when sent, 0 when a stop came first, 2
 * when no sink took it in time, -1 on error. */
static int push_tile(tiler_thread *t, gs_worker_job *job, gs_tiler_item *it, int wait_ms)
{
    int64_t give_up = gs_mono_us() + (int64_t)wait_ms * 1000;
    for (;;) {
        if (gs_worker_job_stopping(job))
            return 0;
        if (gs_mono_us() >= give_up)
            return 2;
        zmq_pollitem_t p = {gs_transport_socket(t->push), 0, ZMQ_POLLOUT, 0};
        int n = zmq_poll(&p, 1, POLLOUT_SLICE_MS);
        if (n < 0 && errno != EINTR)
            return gs_error_set("tiles: poll: %s", zmq_strerror(errno));
        if (n <= 0)
            continue;
        if (gs_transport_send_tile(t->push, &it->message, it->pixels, it->pixels_len, free_pixels,
                                   NULL, GS_SEND_DONTWAIT) == 0) {
            it->pixels = NULL; /* ZeroMQ frees them */
            return 1;
        }
        if (errno != EAGAIN)
            return -1;
    }
}

/* The tile just taken with gs_tiler_job_next could not be sent: it fails with msg (into *it),
 * and so does every later tile of the job, as after a read error. */
static void sink_failed(gs_tiler_job *j, const char *msg, gs_tiler_item *it)
{
    GS_ASSERT(j->next > 0 && j->sent > 0);
    snprintf(j->read_error, sizeof j->read_error, "%s", msg);
    j->sent--;
    memset(it, 0, sizeof *it);
    fail_item(j, it, j->job->tiles[j->next - 1], j->read_error);
}

static int hand_back_from(gs_worker_job *job, gs_tiler_job *tj, const uint32_t *current)
{
    size_t n;
    const uint32_t *rest = gs_tiler_job_unsent(tj, &n);
    uint32_t *all = malloc((n + 1) * sizeof *all);
    if (!all)
        return gs_error_set("out of memory handing back tiles");
    size_t k = 0;
    if (current)
        all[k++] = *current;
    for (size_t i = 0; i < n; i++)
        all[k++] = rest[i];
    int rc = gs_worker_job_hand_back(job, all, k);
    free(all);
    return rc;
}

int gs_tiler_handle(gs_worker_job *job, void *ud)
{
    gs_tiler_stage *s = ud;
    int th = gs_worker_job_thread(job);
    GS_ASSERT(th >= 0 && th < s->nthreads);
    const Gastroscreen__V1__WorkMessage *m = gs_worker_job_message(job);
    GS_ASSERT(m->body_case == GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_JOB && m->tile_job);
    const Gastroscreen__V1__TileJob *job_msg = m->tile_job;
    int blur = job_msg->job_case == GASTROSCREEN__V1__TILE_JOB__JOB_BLUR;
    tiler_thread *t = &s->threads[th * SINK_STAGES + blur];
    gs_tiler_job *tj = gs_tiler_job_new(job_msg, gs_worker_job_worker_id(job));
    if (!tj)
        return -1;
    int rc = -1;
    if (sync_sinks(s, t, job_msg) < 0)
        goto destroy_job;
    for (;;) {
        if (gs_worker_job_stopping(job)) {
            rc = hand_back_from(job, tj, NULL);
            goto destroy_job;
        }
        gs_tiler_item it;
        int got = gs_tiler_job_next(tj, &it);
        if (got < 0)
            goto destroy_job;
        if (got == 0)
            break;
        if (it.failed) {
            if (gs_worker_job_emit(job, &it.result) < 0)
                goto destroy_job;
            gs_worker_job_progress(job, 1);
            continue;
        }
        int sent = push_tile(t, job, &it, s->sink_wait_ms);
        uint32_t index = it.header.tile_index;
        gs_tiler_item_release(&it);
        if (sent < 0)
            goto destroy_job;
        if (sent == 2) {
            char msg[160];
            snprintf(msg, sizeof msg, "no tile sink took a tile for %.3g s (%zu %s inbox(es))",
                     s->sink_wait_ms / 1000.0, t->nsinks, blur ? "blur" : "infer");
            sink_failed(tj, msg, &it);
            if (gs_worker_job_emit(job, &it.result) < 0)
                goto destroy_job;
            gs_worker_job_progress(job, 1);
            continue;
        }
        if (sent == 0) {
            rc = hand_back_from(job, tj, &index);
            goto destroy_job;
        }
        gs_worker_job_progress(job, 1);
    }
    Gastroscreen__V1__TileJobDone done;
    gs_tiler_job_done(tj, &done);
    Gastroscreen__V1__WorkMessage out = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    out.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    out.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_JOB_DONE;
    out.tile_job_done = &done;
    rc = gs_worker_job_emit(job, &out);

destroy_job:
    gs_tiler_job_destroy(&tj);
    return rc;
}
