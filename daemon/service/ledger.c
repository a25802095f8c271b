#include "daemon/service/ledger.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/service/journal.h"
#include "ops/error.h"

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
    int fd;          /* the ledger file outcomes are appended to, or -1 */
    char *file_path; /* for messages */
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
    l->fd = -1;
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
    if (l->fd >= 0)
        close(l->fd);
    free(l->file_path);
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
 * Framing: [magic u32][body_len u32][body][crc32(body) u32], little-endian; body: [index u32]
 * [outcome u8][score f32][dim u32][dim x f32 feature]. Records are appended without fsync:
 * the file only saves work at a restart, and a torn tail costs only its tiles. */
#define LEDGER_MAGIC 0x314c5347u /* "GSL1" */
#define REC_FIXED 13

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
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
    if (l->fd < 0)
        return;
    uint32_t dim = out == GS_TILE_INFERRED ? l->o.feature_dim : 0;
    size_t body = REC_FIXED + 4 * (size_t)dim;
    uint8_t stack[REC_FIXED + 12 + 4 * 512];
    uint8_t *buf = body + 12 <= sizeof stack ? stack : malloc(body + 12);
    if (!buf) {
        l->c.file_errors++;
        return;
    }
    put32(buf, LEDGER_MAGIC);
    put32(buf + 4, (uint32_t)body);
    uint8_t *b = buf + 8;
    put32(b, i);
    b[4] = (uint8_t)out;
    put32(b + 5, float_bits(score));
    put32(b + 9, dim);
    for (uint32_t k = 0; k < dim; k++)
        put32(b + REC_FIXED + 4 * k, float_bits(feature[k]));
    put32(b + body, gs_journal_crc32(0, b, body));
    size_t n = body + 12, done = 0;
    while (done < n) {
        ssize_t w = write(l->fd, buf + done, n - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        done += (size_t)w;
    }
    if (done < n) {
        /* Stop writing: later records after a gap would be adopted without the lost one,
         * which is harmless, but a full disk would only fail again. */
        fprintf(stderr, "ledger %s: write failed (%s); outcomes are no longer saved\n",
                l->file_path, strerror(errno));
        l->c.file_errors++;
        close(l->fd);
        l->fd = -1;
    }
    if (buf != stack)
        free(buf);
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
    if (outcome != GS_TILE_INFERRED && outcome != GS_TILE_BACKGROUND)
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

int gs_ledger_adopt_file(gs_ledger *l, const char *path, uint32_t *adopted, uint32_t *dropped)
{
    uint32_t n_adopted = 0, n_dropped = 0;
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            goto out;
        return gs_error_set("ledger %s: %s", path, strerror(errno));
    }
    struct stat st;
    uint8_t *buf = NULL;
    if (fstat(fd, &st) != 0 || !(buf = malloc((size_t)st.st_size + 1))) {
        close(fd);
        return gs_error_set("ledger %s: cannot read: %s", path, strerror(errno));
    }
    size_t size = 0;
    while (size < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + size, (size_t)st.st_size - size);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        size += (size_t)r;
    }
    size_t o = 0;
    while (o + 8 <= size) {
        uint32_t body = get32(buf + o + 4);
        if (get32(buf + o) != LEDGER_MAGIC || body < REC_FIXED || o + 12 + (size_t)body > size)
            break;
        const uint8_t *b = buf + o + 8;
        if (gs_journal_crc32(0, b, body) != get32(b + body))
            break;
        uint32_t i = get32(b), dim = get32(b + 9);
        gs_tile_outcome out = (gs_tile_outcome)b[4];
        float score = bits_float(get32(b + 5));
        o += 12 + (size_t)body;
        int ok = i < l->n && (size_t)body == REC_FIXED + 4 * (size_t)dim &&
                 out >= GS_TILE_INFERRED && out <= GS_TILE_ERROR;
        if (ok && out == GS_TILE_INFERRED)
            ok = dim == l->o.feature_dim && isfinite(score) && score >= 0.f && score <= 1.f;
        else if (ok)
            ok = dim == 0;
        if (!ok || l->outcome[i] != GS_TILE_PENDING) {
            n_dropped++; /* another plan's record, or one already adopted */
            continue;
        }
        set_outcome(l, i, out);
        if (out == GS_TILE_INFERRED) {
            float *feat = malloc((size_t)dim * sizeof *feat);
            if (!feat) {
                free(buf);
                close(fd);
                return gs_error_set("ledger %s: out of memory", path);
            }
            for (uint32_t k = 0; k < dim; k++)
                feat[k] = bits_float(get32(b + REC_FIXED + 4 * k));
            l->score[i] = score;
            heap_offer(l, i, score, feat);
            free(feat);
        }
        n_adopted++;
    }
    if (o < size) {
        /* A torn or corrupt tail: cut it, so records appended next follow intact ones. */
        fprintf(stderr, "ledger %s: dropped %zu bytes of torn or corrupt records at offset %zu\n",
                path, size - o, o);
        n_dropped++;
        if (ftruncate(fd, (off_t)o) != 0) {
            free(buf);
            close(fd);
            return gs_error_set("ledger %s: cannot cut the torn tail: %s", path, strerror(errno));
        }
    }
    free(buf);
    close(fd);
out:
    if (adopted)
        *adopted = n_adopted;
    if (dropped)
        *dropped = n_dropped;
    return 0;
}

int gs_ledger_attach_file(gs_ledger *l, const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return gs_error_set("ledger %s: %s", path, strerror(errno));
    char *p = strdup(path);
    if (!p) {
        close(fd);
        return gs_error_set("ledger %s: out of memory", path);
    }
    if (l->fd >= 0)
        close(l->fd);
    free(l->file_path);
    l->fd = fd;
    l->file_path = p;
    return 0;
}

int gs_ledger_sync(gs_ledger *l)
{
    if (l->fd >= 0 && fsync(l->fd) != 0)
        return gs_error_set("ledger %s: fsync: %s", l->file_path, strerror(errno));
    return 0;
}
