#include "daemon/service/ledger.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ops/error.h"
#include "stages/runtime/recfile.h"

/* Per-tile flags. */
#define F_RETRY 1u   /* a request failed: due at once */
#define F_JUDGED 2u  /* blur phase: judged (sharp; blurry ones have an outcome) */
#define F_GAVE_UP 4u /* blur phase: out of requests, left unjudged */
#define F_LOSS 8u    /* loss_due holds a deadline */

#define MAX_ERROR_LEN 1024

struct gs_ledger {
    gs_ledger_options o;
    uint32_t n, attempt;
    int inferring;
    uint8_t *outcome;
    uint8_t *flags;
    uint16_t *requests;
    int64_t *last_request;
    int64_t *loss_due;
    float *score;
    char **error; /* lazily allocated: most slides have no errors */
    int64_t last_result;
    gs_ledger_counts c;
    /* top-k heap: the worst kept tile at the root */
    uint32_t heap_n;
    uint32_t *heap_idx;
    float *heap_score;
    float *heap_feat;
    gs_recfile *file; /* the ledger file outcomes are appended to, or NULL */
};

void gs_ledger_options_default(gs_ledger_options *o)
{
    o->tile_max_requests = 3;
    o->stall_timeout_ms = 120000;
    o->loss_grace_ms = 15000;
    o->top_k = 64;
    o->feature_dim = 512;
}

gs_ledger *gs_ledger_new(uint32_t n_tiles, uint32_t attempt, const gs_ledger_options *o)
{
    if (!o || attempt < 1 || o->tile_max_requests < 1 || o->tile_max_requests > 1000 ||
        o->top_k < 1 || o->top_k > 4096 || o->feature_dim < 1 || o->feature_dim > 65536 ||
        o->stall_timeout_ms < 1 || o->loss_grace_ms < 0) {
        gs_error_set("ledger: bad options or attempt");
        return NULL;
    }
    gs_ledger *l = calloc(1, sizeof *l);
    if (!l)
        goto fail_oom;
    l->o = *o;
    l->n = n_tiles;
    l->attempt = attempt;
    size_t n = n_tiles ? n_tiles : 1;
    l->outcome = calloc(n, 1);
    l->flags = calloc(n, 1);
    l->requests = calloc(n, sizeof *l->requests);
    l->last_request = calloc(n, sizeof *l->last_request);
    l->loss_due = calloc(n, sizeof *l->loss_due);
    l->score = calloc(n, sizeof *l->score);
    l->heap_idx = calloc(o->top_k, sizeof *l->heap_idx);
    l->heap_score = calloc(o->top_k, sizeof *l->heap_score);
    l->heap_feat = calloc((size_t)o->top_k * o->feature_dim, sizeof *l->heap_feat);
    if (!l->outcome || !l->flags || !l->requests || !l->last_request || !l->loss_due || !l->score ||
        !l->heap_idx || !l->heap_score || !l->heap_feat)
        goto fail_oom;
    l->c.planned = n_tiles;
    l->c.pending = n_tiles;
    l->last_result = INT64_MIN;
    return l;
fail_oom:
    gs_ledger_destroy(&l);
    gs_error_set("ledger: out of memory for %u tiles", n_tiles);
    return NULL;
}

void gs_ledger_destroy(gs_ledger **lp)
{
    if (!lp || !*lp)
        return;
    gs_ledger *l = *lp;
    if (l->error)
        for (uint32_t i = 0; i < l->n; i++)
            free(l->error[i]);
    free(l->error);
    free(l->outcome);
    free(l->flags);
    free(l->requests);
    free(l->last_request);
    free(l->loss_due);
    free(l->score);
    free(l->heap_idx);
    free(l->heap_score);
    free(l->heap_feat);
    gs_recfile_destroy(&l->file);
    free(l);
    *lp = NULL;
}

uint32_t gs_ledger_attempt(const gs_ledger *l)
{
    return l->attempt;
}

uint32_t gs_ledger_tile_count(const gs_ledger *l)
{
    return l->n;
}

int gs_ledger_inferring(const gs_ledger *l)
{
    return l->inferring;
}

static void set_outcome(gs_ledger *l, uint32_t i, gs_tile_outcome out)
{
    GS_ASSERT(l->outcome[i] == GS_TILE_PENDING && out != GS_TILE_PENDING);
    l->outcome[i] = (uint8_t)out;
    l->flags[i] &= (uint8_t) ~(F_RETRY | F_LOSS);
    l->c.pending--;
    switch (out) {
    case GS_TILE_INFERRED:
        l->c.inferred++;
        break;
    case GS_TILE_BACKGROUND:
        l->c.background++;
        break;
    case GS_TILE_BLURRY:
        l->c.blurry++;
        break;
    case GS_TILE_ERROR:
        l->c.error++;
        break;
    default:
        GS_ASSERT(0);
    }
}

static void set_error(gs_ledger *l, uint32_t i, const char *msg)
{
    if (!msg)
        return;
    if (!l->error) {
        l->error = calloc(l->n, sizeof *l->error);
        if (!l->error)
            return; /* the message is a nicety; the outcome is what counts */
    }
    free(l->error[i]);
    l->error[i] = strndup(msg, MAX_ERROR_LEN);
}

/* ---- the ledger file ----------------------------------------------------------------------
 * A record file (stages/runtime/recfile) of kind "LEDG"; a record's payload, little-endian:
 * [index u32][outcome u8][score f32][dim u32][dim x f32 feature]. Records are appended
 * without fsync: the file only saves work at a restart, and a torn tail costs only its
 * tiles. Releases before the record files framed the same bodies as [magic "GSL1"]
 * [body_len u32][body][crc32(body) u32] with no file header; such a file is converted when it
 * is adopted, so a slide in flight keeps its outcomes across the upgrade. */
#define LEDGER_KIND "LEDG"
#define LEDGER_VERSION 1
#define LEDGER_LEGACY_MAGIC 0x314c5347u /* "GSL1" */
#define REC_FIXED 13
/* The longest record a ledger writes: feature_dim is at most 65536 (gs_ledger_new). */
#define REC_MAX (REC_FIXED + 4 * 65536)
/* Saved outcomes are the service's own: the group may read them, nobody else. */
#define FILE_MODE 0640

static gs_recfile_options file_options(int create)
{
    return (gs_recfile_options){.kind = LEDGER_KIND,
                                .version = LEDGER_VERSION,
                                .max_record = REC_MAX,
                                .legacy_magic = LEDGER_LEGACY_MAGIC,
                                .mode = FILE_MODE,
                                .create = create};
}

static uint32_t float_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float bits_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static void file_append(gs_ledger *l, uint32_t i, gs_tile_outcome out, float score,
                        const float *feature)
{
    if (!l->file)
        return;
    uint32_t dim = out == GS_TILE_INFERRED ? l->o.feature_dim : 0;
    size_t body = REC_FIXED + 4 * (size_t)dim;
    uint8_t stack[REC_FIXED + 4 * 512];
    uint8_t *b = body <= sizeof stack ? stack : malloc(body);
    if (!b) {
        l->c.file_errors++;
        return;
    }
    gs_le32_put(b, i);
    b[4] = (uint8_t)out;
    gs_le32_put(b + 5, float_bits(score));
    gs_le32_put(b + 9, dim);
    for (uint32_t k = 0; k < dim; k++)
        gs_le32_put(b + REC_FIXED + 4 * k, float_bits(feature[k]));
    if (gs_recfile_append(l->file, b, body, 0) != 0) {
        /* Stop writing: a full disk would only fail again. The failed record was cut off,
         * so the outcomes saved so far are still adopted after a restart. */
        fprintf(stderr, "ledger: %s; outcomes are no longer saved\n", gs_error_get());
        l->c.file_errors++;
        gs_recfile_destroy(&l->file);
    }
    if (b != stack)
        free(b);
}

int gs_ledger_set_background(gs_ledger *l, uint32_t index)
{
    if (index >= l->n || l->outcome[index] != GS_TILE_PENDING)
        return gs_error_set("ledger: tile %u: out of range or already recorded", index);
    set_outcome(l, index, GS_TILE_BACKGROUND);
    file_append(l, index, GS_TILE_BACKGROUND, 0.f, NULL);
    return 0;
}

void gs_ledger_begin_inference(gs_ledger *l)
{
    if (l->inferring)
        return;
    l->inferring = 1;
    for (uint32_t i = 0; i < l->n; i++) {
        l->requests[i] = 0;
        l->last_request[i] = 0;
        l->flags[i] = 0;
    }
    l->last_result = INT64_MIN;
}

int gs_ledger_requested(gs_ledger *l, uint32_t index, int64_t now_ms)
{
    if (index >= l->n)
        return gs_error_set("ledger: tile %u of %u: out of range", index, l->n);
    if (l->outcome[index] != GS_TILE_PENDING)
        return gs_error_set("ledger: tile %u: already recorded", index);
    if (l->requests[index] >= l->o.tile_max_requests || (l->flags[index] & F_GAVE_UP))
        return gs_error_set("ledger: tile %u: had its %u requests", index, l->o.tile_max_requests);
    if (!l->inferring && (l->flags[index] & F_JUDGED))
        return gs_error_set("ledger: tile %u: already judged", index);
    if (l->requests[index] > 0)
        l->c.rerequested++;
    l->requests[index]++;
    l->last_request[index] = now_ms;
    l->flags[index] &= (uint8_t) ~(F_RETRY | F_LOSS);
    return 0;
}

/* Is a better than b for the top-k: a higher score, or the same score and a lower index. */
static int better(float sa, uint32_t ia, float sb, uint32_t ib)
{
    return sa > sb || (sa == sb && ia < ib);
}

static void heap_swap(gs_ledger *l, uint32_t a, uint32_t b)
{
    uint32_t ti = l->heap_idx[a];
    l->heap_idx[a] = l->heap_idx[b];
    l->heap_idx[b] = ti;
    float ts = l->heap_score[a];
    l->heap_score[a] = l->heap_score[b];
    l->heap_score[b] = ts;
    size_t d = l->o.feature_dim;
    float *fa = l->heap_feat + a * d, *fb = l->heap_feat + b * d;
    for (size_t k = 0; k < d; k++) {
        float t = fa[k];
        fa[k] = fb[k];
        fb[k] = t;
    }
}

/* The root holds the worst kept tile; children are never worse than their parent. */
static void heap_sift_down(gs_ledger *l, uint32_t i)
{
    for (;;) {
        uint32_t w = i, a = 2 * i + 1, b = 2 * i + 2;
        if (a < l->heap_n &&
            better(l->heap_score[w], l->heap_idx[w], l->heap_score[a], l->heap_idx[a]))
            w = a;
        if (b < l->heap_n &&
            better(l->heap_score[w], l->heap_idx[w], l->heap_score[b], l->heap_idx[b]))
            w = b;
        if (w == i)
            return;
        heap_swap(l, i, w);
        i = w;
    }
}

static void heap_offer(gs_ledger *l, uint32_t index, float score, const float *feat)
{
    size_t d = l->o.feature_dim;
    uint32_t slot;
    if (l->heap_n < l->o.top_k) {
        slot = l->heap_n++;
        l->heap_idx[slot] = index;
        l->heap_score[slot] = score;
        memcpy(l->heap_feat + slot * d, feat, d * sizeof *feat);
        /* sift up: a worse child moves toward the root */
        while (slot > 0) {
            uint32_t p = (slot - 1) / 2;
            if (!better(l->heap_score[p], l->heap_idx[p], l->heap_score[slot], l->heap_idx[slot]))
                break;
            heap_swap(l, p, slot);
            slot = p;
        }
        return;
    }
    if (!better(score, index, l->heap_score[0], l->heap_idx[0]))
        return;
    l->heap_idx[0] = index;
    l->heap_score[0] = score;
    memcpy(l->heap_feat, feat, d * sizeof *feat);
    heap_sift_down(l, 0);
}

/* Common fence and duplicate checks; returns -2 to go on, or the result to return. */
static int fence(gs_ledger *l, uint32_t attempt, uint32_t index)
{
    if (index >= l->n)
        return gs_error_set("ledger: tile %u of %u: out of range", index, l->n);
    if (attempt != l->attempt) {
        l->c.stale++;
        return GS_LEDGER_STALE;
    }
    if (l->outcome[index] != GS_TILE_PENDING) {
        l->c.duplicates++;
        return GS_LEDGER_DUPLICATE;
    }
    return -2;
}

int gs_ledger_record(gs_ledger *l, uint32_t attempt, uint32_t index, gs_tile_outcome outcome,
                     float score, const float *feature, int64_t now_ms)
{
    if (outcome != GS_TILE_INFERRED && outcome != GS_TILE_BACKGROUND && outcome != GS_TILE_BLURRY)
        return gs_error_set("ledger: tile %u: outcome %d is not a result", index, (int)outcome);
    if (outcome == GS_TILE_INFERRED && (!isfinite(score) || score < 0.f || score > 1.f))
        return gs_error_set("ledger: tile %u: score %g is not in 0..1", index, (double)score);
    if (outcome == GS_TILE_INFERRED && !feature)
        return gs_error_set("ledger: tile %u: no feature", index);
    if (outcome == GS_TILE_INFERRED)
        for (uint32_t k = 0; k < l->o.feature_dim; k++)
            if (!isfinite(feature[k]))
                return gs_error_set("ledger: tile %u: feature %u is not finite", index, k);
    int r = fence(l, attempt, index);
    if (r != -2)
        return r;
    if (!l->inferring)
        return gs_error_set("ledger: tile %u: a tile result during the blur check", index);
    set_outcome(l, index, outcome);
    l->last_result = now_ms;
    if (outcome == GS_TILE_INFERRED) {
        l->score[index] = score;
        heap_offer(l, index, score, feature);
    }
    file_append(l, index, outcome, score, feature);
    return GS_LEDGER_RECORDED;
}

int gs_ledger_failed_request(gs_ledger *l, uint32_t attempt, uint32_t index, const char *error,
                             int64_t now_ms)
{
    int r = fence(l, attempt, index);
    if (r != -2)
        return r;
    if (!l->inferring && (l->flags[index] & (F_JUDGED | F_GAVE_UP))) {
        l->c.duplicates++;
        return GS_LEDGER_DUPLICATE;
    }
    l->last_result = now_ms;
    set_error(l, index, error);
    if (l->requests[index] >= l->o.tile_max_requests) {
        if (l->inferring) {
            set_outcome(l, index, GS_TILE_ERROR);
            file_append(l, index, GS_TILE_ERROR, 0.f, NULL);
        } else
            l->flags[index] = (uint8_t)((l->flags[index] & ~(F_RETRY | F_LOSS)) | F_GAVE_UP);
        return GS_LEDGER_GAVE_UP;
    }
    l->flags[index] |= F_RETRY;
    return GS_LEDGER_RETRY;
}

int gs_ledger_judge_blur(gs_ledger *l, uint32_t attempt, uint32_t index, int blurry, int64_t now_ms)
{
    int r = fence(l, attempt, index);
    if (r != -2)
        return r;
    if (l->inferring)
        return gs_error_set("ledger: tile %u: a blur judgement after the blur check", index);
    if (l->flags[index] & F_JUDGED) {
        l->c.duplicates++;
        return GS_LEDGER_DUPLICATE;
    }
    /* A late judgement of a tile that was given up is still a judgement: better data. */
    l->flags[index] = (uint8_t)((l->flags[index] & ~(F_RETRY | F_LOSS | F_GAVE_UP)) | F_JUDGED);
    l->last_result = now_ms;
    l->c.blur_judged++;
    if (blurry) {
        l->c.blur_blurry++;
        set_outcome(l, index, GS_TILE_BLURRY);
        file_append(l, index, GS_TILE_BLURRY, 0.f, NULL);
    }
    return GS_LEDGER_RECORDED;
}

/* Requested in this phase and waiting for its result. */
static int outstanding(const gs_ledger *l, uint32_t i)
{
    if (l->outcome[i] != GS_TILE_PENDING || l->requests[i] == 0)
        return 0;
    if (!l->inferring && (l->flags[i] & (F_JUDGED | F_GAVE_UP)))
        return 0;
    return 1;
}

void gs_ledger_worker_lost(gs_ledger *l, int64_t lost_at_ms)
{
    for (uint32_t i = 0; i < l->n; i++) {
        if (!outstanding(l, i) || l->last_request[i] >= lost_at_ms)
            continue;
        int64_t due = lost_at_ms + l->o.loss_grace_ms;
        if (!(l->flags[i] & F_LOSS) || due < l->loss_due[i])
            l->loss_due[i] = due;
        l->flags[i] |= F_LOSS;
    }
}

size_t gs_ledger_due(gs_ledger *l, int64_t now_ms, uint32_t *out, size_t max)
{
    size_t k = 0;
    for (uint32_t i = 0; i < l->n; i++) {
        if (!outstanding(l, i))
            continue;
        int64_t quiet_since =
            l->last_result > l->last_request[i] ? l->last_result : l->last_request[i];
        int due = (l->flags[i] & F_RETRY) || now_ms - quiet_since >= l->o.stall_timeout_ms ||
                  ((l->flags[i] & F_LOSS) && now_ms >= l->loss_due[i]);
        if (!due)
            continue;
        if (l->requests[i] >= l->o.tile_max_requests) {
            if (!(l->flags[i] & F_RETRY))
                set_error(l, i, "no result after the last request");
            if (l->inferring) {
                set_outcome(l, i, GS_TILE_ERROR);
                file_append(l, i, GS_TILE_ERROR, 0.f, NULL);
            } else
                l->flags[i] = (uint8_t)((l->flags[i] & ~(F_RETRY | F_LOSS)) | F_GAVE_UP);
            continue;
        }
        if (k < max)
            out[k++] = i;
    }
    return k;
}

size_t gs_ledger_unrequested(const gs_ledger *l, uint32_t *out, size_t max)
{
    size_t k = 0;
    for (uint32_t i = 0; i < l->n && k < max; i++)
        if (l->outcome[i] == GS_TILE_PENDING && l->requests[i] == 0 &&
            (l->inferring || !(l->flags[i] & (F_JUDGED | F_GAVE_UP))))
            out[k++] = i;
    return k;
}

gs_tile_outcome gs_ledger_outcome(const gs_ledger *l, uint32_t index)
{
    return index < l->n ? (gs_tile_outcome)l->outcome[index] : GS_TILE_PENDING;
}

float gs_ledger_score(const gs_ledger *l, uint32_t index)
{
    return index < l->n && l->outcome[index] == GS_TILE_INFERRED ? l->score[index] : 0.f;
}

const char *gs_ledger_error(const gs_ledger *l, uint32_t index)
{
    return index < l->n && l->error ? l->error[index] : NULL;
}

int gs_ledger_complete(const gs_ledger *l)
{
    return l->c.pending == 0;
}

void gs_ledger_counts_get(const gs_ledger *l, gs_ledger_counts *c)
{
    *c = l->c;
    c->blur_outstanding = 0;
    c->in_flight = 0;
    for (uint32_t i = 0; i < l->n; i++) {
        if (!outstanding(l, i))
            continue;
        if (!l->inferring)
            c->blur_outstanding++;
        if (!(l->flags[i] & F_RETRY))
            c->in_flight++;
    }
}

typedef struct {
    const gs_ledger *l;
    uint32_t slot;
} rank_item;

static int rank_cmp(const void *a, const void *b)
{
    const rank_item *x = a, *y = b;
    const gs_ledger *l = x->l;
    if (better(l->heap_score[x->slot], l->heap_idx[x->slot], l->heap_score[y->slot],
               l->heap_idx[y->slot]))
        return -1;
    return 1; /* indices differ, so two slots are never equal */
}

uint32_t gs_ledger_top(const gs_ledger *l, uint32_t *index, float *score, float *features)
{
    uint32_t k = l->heap_n;
    rank_item items[k ? k : 1];
    for (uint32_t i = 0; i < k; i++)
        items[i] = (rank_item){l, i};
    qsort(items, k, sizeof *items, rank_cmp);
    size_t d = l->o.feature_dim;
    for (uint32_t i = 0; i < k; i++) {
        uint32_t s = items[i].slot;
        if (index)
            index[i] = l->heap_idx[s];
        if (score)
            score[i] = l->heap_score[s];
        if (features)
            memcpy(features + i * d, l->heap_feat + s * d, d * sizeof *features);
    }
    return k;
}

typedef struct {
    gs_ledger *l;
    uint32_t adopted, dropped;
    const char *path;
} adopt_ctx;

/* Adopts one intact record if it fits this ledger and its tile is pending. */
static int adopt_record(void *ud, const uint8_t *b, size_t body, uint64_t offset)
{
    (void)offset;
    adopt_ctx *c = ud;
    gs_ledger *l = c->l;
    if (body < REC_FIXED) {
        c->dropped++; /* intact, but no release wrote it */
        return 0;
    }
    uint32_t i = gs_le32_get(b), dim = gs_le32_get(b + 9);
    gs_tile_outcome out = (gs_tile_outcome)b[4];
    float score = bits_float(gs_le32_get(b + 5));
    int ok = i < l->n && body == REC_FIXED + 4 * (size_t)dim && out >= GS_TILE_INFERRED &&
             out <= GS_TILE_ERROR;
    if (ok && out == GS_TILE_INFERRED)
        ok = dim == l->o.feature_dim && isfinite(score) && score >= 0.f && score <= 1.f;
    else if (ok)
        ok = dim == 0;
    if (!ok || l->outcome[i] != GS_TILE_PENDING) {
        c->dropped++; /* another plan's record, or one already adopted */
        return 0;
    }
    set_outcome(l, i, out);
    if (out == GS_TILE_INFERRED) {
        float *feat = malloc((size_t)dim * sizeof *feat);
        if (!feat)
            return gs_error_set("ledger %s: out of memory", c->path);
        for (uint32_t k = 0; k < dim; k++)
            feat[k] = bits_float(gs_le32_get(b + REC_FIXED + 4 * k));
        l->score[i] = score;
        heap_offer(l, i, score, feat);
        free(feat);
    }
    c->adopted++;
    return 0;
}

int gs_ledger_adopt_file(gs_ledger *l, const char *path, uint32_t *adopted, uint32_t *dropped)
{
    adopt_ctx c = {l, 0, 0, path};
    gs_recfile_options o = file_options(0);
    gs_recfile *f = gs_recfile_open(path, &o);
    if (!f) {
        if (errno == ENOENT)
            goto out;
        return gs_error_prefix("ledger");
    }
    gs_recfile_legacy_info li;
    gs_recfile_legacy(f, &li);
    if (li.converted) {
        fprintf(stderr,
                "ledger %s: converted from the format of earlier releases (%llu records kept, "
                "%llu damaged bytes dropped)\n",
                path, (unsigned long long)li.records, (unsigned long long)li.dropped);
        if (li.dropped)
            c.dropped++;
    }
    gs_recfile_scan_info info;
    int rc = gs_recfile_scan(f, adopt_record, &c, &info);
    if (rc == 0 && info.damaged) {
        /* A torn or corrupt tail: cut it, so records appended next follow intact ones. */
        fprintf(stderr, "ledger %s: dropped %llu bytes of torn or corrupt records at offset %llu\n",
                path, (unsigned long long)info.damaged, (unsigned long long)info.intact_end);
        c.dropped++;
        rc = gs_recfile_cut_tail(f, NULL);
    }
    gs_recfile_destroy(&f);
    if (rc != 0)
        return gs_error_prefix("ledger");
out:
    if (adopted)
        *adopted = c.adopted;
    if (dropped)
        *dropped = c.dropped;
    return 0;
}

int gs_ledger_attach_file(gs_ledger *l, const char *path)
{
    gs_recfile_options o = file_options(1);
    gs_recfile *f = gs_recfile_open(path, &o);
    if (!f)
        return gs_error_prefix("ledger");
    gs_recfile_destroy(&l->file);
    l->file = f;
    return 0;
}

int gs_ledger_sync(gs_ledger *l)
{
    if (l->file && gs_recfile_sync(l->file) != 0)
        return gs_error_prefix("ledger");
    return 0;
}
