#include "daemon/service/slide_table.h"
#include "daemon/service/slide_table_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>

#include "ops/error.h"
#include "proto/gastroscreen.pb-c.h"

#define MAX_PATH_LEN 4096
#define MAX_TEXT_LEN 1024

struct gs_slides {
    gs_journal *journal;
    gs_slides_options o;
    char *model[5]; /* owned copies of the provenance strings */
    slide **slides;
    size_t n, cap;
    gs_slides_stats stats;
    int recovered;
};

void gs_slides_options_default(gs_slides_options *o)
{
    memset(o, 0, sizeof *o);
    o->poison_limit = 3;
    o->max_attempts = 5;
    o->threshold = 0.74f;
}

static int terminal(gs_slide_state s)
{
    return s == GS_SLIDE_DONE || s == GS_SLIDE_FAILED;
}

static slide *find(const gs_slides *t, const char *id)
{
    if (!id)
        return NULL;
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->slides[i]->id, id) == 0)
            return t->slides[i];
    return NULL;
}

/* ---- events ---------------------------------------------------------------------------- */

typedef enum { EV_ACCEPTED, EV_STATE, EV_VERDICT } event_kind;

/* The packed EventMessage announcing candidate c (seq = the journal's next number). Returns a
 * malloc'd buffer or NULL. */
static uint8_t *event_of(const gs_slides *t, const slide *c, event_kind kind, gs_slide_state from,
                         const char *reason, int duplicate, uint64_t seq, int64_t now, size_t *len)
{
    Gastroscreen__V1__EventMessage ev = GASTROSCREEN__V1__EVENT_MESSAGE__INIT;
    Gastroscreen__V1__SlideAccepted acc = GASTROSCREEN__V1__SLIDE_ACCEPTED__INIT;
    Gastroscreen__V1__SlideStateChanged sc = GASTROSCREEN__V1__SLIDE_STATE_CHANGED__INIT;
    Gastroscreen__V1__Verdict v = GASTROSCREEN__V1__VERDICT__INIT;
    Gastroscreen__V1__ModelProvenance mp = GASTROSCREEN__V1__MODEL_PROVENANCE__INIT;
    Gastroscreen__V1__ReportPaths rp = GASTROSCREEN__V1__REPORT_PATHS__INIT;
    Gastroscreen__V1__TileCounts tc = GASTROSCREEN__V1__TILE_COUNTS__INIT;
    char *warnings_buf = NULL;
    char *warn_ptrs[64];
    ev.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    ev.seq = seq;
    ev.last_seq = seq;
    ev.time_unix_ms = now;
    switch (kind) {
    case EV_ACCEPTED:
        acc.slide_id = (char *)c->id;
        acc.path = (char *)S(c->path);
        acc.source = (Gastroscreen__V1__IntakeSource)c->source;
        acc.external_id = (char *)S(c->external_id);
        acc.duplicate = duplicate;
        acc.accepted_unix_ms = duplicate ? now : c->accepted_ms;
        ev.body_case = GASTROSCREEN__V1__EVENT_MESSAGE__BODY_ACCEPTED;
        ev.accepted = &acc;
        break;
    case EV_STATE:
        sc.slide_id = (char *)c->id;
        sc.attempt = c->attempt;
        sc.from = (Gastroscreen__V1__SlideState)from;
        sc.to = (Gastroscreen__V1__SlideState)c->state;
        sc.reason = (char *)S(reason);
        ev.body_case = GASTROSCREEN__V1__EVENT_MESSAGE__BODY_STATE_CHANGED;
        ev.state_changed = &sc;
        break;
    case EV_VERDICT:
        mp.bundle = t->model[0];
        mp.sha256 = t->model[1];
        mp.format_version = t->model[2];
        mp.trained_on = t->model[3];
        mp.notice = t->model[4];
        mp.untrained = t->o.model_untrained;
        mp.precision = (char *)c->precision;
        rp.report_json = (char *)S(c->report_json);
        rp.heatmap_png = (char *)S(c->heatmap_png);
        rp.regions_geojson = (char *)S(c->regions_geojson);
        tc.planned = c->tiles.planned;
        tc.inferred = c->tiles.inferred;
        tc.background = c->tiles.background;
        tc.blurry = c->tiles.blurry;
        tc.error = c->tiles.error;
        tc.rerequested = c->tiles.rerequested;
        v.slide_id = (char *)c->id;
        v.attempt = c->attempt;
        v.path = (char *)S(c->path);
        v.verdict_class = (Gastroscreen__V1__VerdictClass)c->verdict;
        v.score = c->score;
        /* The threshold that judged the slide; a slide never screened (or screened by a build
         * that did not record it) carries the table's. */
        v.threshold = c->threshold_source[0] ? c->threshold : t->o.threshold;
        v.threshold_source =
            (char *)(c->threshold_source[0] ? c->threshold_source : S(t->o.threshold_source));
        v.reason = (char *)S(c->reason);
        v.model = &mp;
        v.report = &rp;
        v.tiles = &tc;
        v.blurred_fraction = c->blurred_fraction;
        v.external_id = (char *)S(c->external_id);
        v.decided_unix_ms = now;
        v.state = (Gastroscreen__V1__SlideState)c->state;
        v.foreground_method = (Gastroscreen__V1__Method)c->foreground_method;
        v.blur_method = (Gastroscreen__V1__Method)c->blur_method;
        v.poison = c->poison;
        if (c->warnings && *c->warnings) {
            warnings_buf = strdup(c->warnings);
            if (!warnings_buf)
                return NULL;
            size_t n = 0;
            for (char *save = NULL, *w = strtok_r(warnings_buf, "\n", &save); w && n < 64;
                 w = strtok_r(NULL, "\n", &save))
                warn_ptrs[n++] = w;
            v.n_warnings = n;
            v.warnings = warn_ptrs;
        }
        ev.body_case = GASTROSCREEN__V1__EVENT_MESSAGE__BODY_VERDICT;
        ev.verdict = &v;
        break;
    }
    *len = gastroscreen__v1__event_message__get_packed_size(&ev);
    uint8_t *buf = malloc(*len ? *len : 1);
    if (buf)
        gastroscreen__v1__event_message__pack(&ev, buf);
    free(warnings_buf);
    return buf;
}

/* ---- committing a transition ------------------------------------------------------------ */

/* Journals candidate c (a copy of cur with borrowed strings) and its event, then makes it
 * the slide's state. cur is NULL for a new slide. Returns 0 or -1. */
static int commit(gs_slides *t, slide *cur, slide *c, event_kind kind, gs_slide_state from,
                  const char *reason, int64_t now, uint64_t *seq)
{
    uint64_t s = gs_journal_next_seq(t->journal);
    c->updated_ms = now;
    c->last_seq = s;
    json_t *rec = slide_record_of(c);
    size_t len = 0;
    uint8_t *payload = rec ? event_of(t, c, kind, from, reason, 0, s, now, &len) : NULL;
    if (!rec || !payload) {
        json_decref(rec);
        free(payload);
        return gs_error_set("slide %s: out of memory", c->id);
    }
    int rc = gs_journal_commit(t->journal, c->id, rec, terminal(c->state), now, payload, len, &s);
    json_decref(rec);
    free(payload);
    if (rc != 0)
        return gs_error_prefix("slide %s", c->id);
    /* Journalled: from here on the transition happened. Copies of the borrowed strings
     * cannot be allowed to fail halfway, so an allocation failure aborts and the restart
     * recovers the slide from the journal. */
    slide *dst = cur;
    if (!dst) {
        dst = calloc(1, sizeof *dst);
        GS_ASSERT(dst != NULL);
        if (t->n == t->cap) {
            size_t cap = t->cap ? 2 * t->cap : 64;
            slide **p = realloc(t->slides, cap * sizeof *p);
            GS_ASSERT(p != NULL);
            t->slides = p;
            t->cap = cap;
        }
        t->slides[t->n++] = dst;
    }
    char **fd[N_STR], **fc[N_STR];
    slide_str_fields(dst, fd);
    slide_str_fields(c, fc);
    char *keep[N_STR];
    for (int i = 0; i < N_STR; i++) {
        if (*fc[i] == *fd[i]) {
            keep[i] = *fd[i];
            continue;
        }
        keep[i] = slide_dup_nonempty(*fc[i]);
        GS_ASSERT(keep[i] || !*fc[i] || !**fc[i]);
    }
    for (int i = 0; i < N_STR; i++) {
        if (keep[i] != *fd[i])
            free(*fd[i]);
    }
    *dst = *c;
    for (int i = 0; i < N_STR; i++)
        *fd[i] = keep[i];
    if (seq)
        *seq = s;
    return 0;
}

/* Journals an event about an existing slide without changing its record (duplicate intake). */
static int commit_duplicate(gs_slides *t, slide *cur, gs_intake_source source,
                            const char *external_id, int64_t now, uint64_t *seq)
{
    slide c = *cur;
    c.source = source;
    c.external_id = (char *)external_id;
    size_t len = 0;
    uint64_t s = gs_journal_next_seq(t->journal);
    uint8_t *payload = event_of(t, &c, EV_ACCEPTED, 0, NULL, 1, s, now, &len);
    if (!payload)
        return gs_error_set("slide %s: out of memory", cur->id);
    int rc = gs_journal_commit(t->journal, cur->id, NULL, 0, now, payload, len, &s);
    free(payload);
    if (rc != 0)
        return gs_error_prefix("slide %s", cur->id);
    cur->last_seq = s;
    if (seq)
        *seq = s;
    return 0;
}

/* The fence and the state check shared by every transition: returns -2 to go on with *sp set,
 * GS_SLIDES_IGNORED, or -1. `to` is the target; `from_ok` says which states it comes from. */
static int check(gs_slides *t, const char *id, uint32_t attempt, gs_slide_state to,
                 int (*from_ok)(const slide *), slide **sp)
{
    slide *s = find(t, id);
    if (!s || terminal(s->state) || attempt != s->attempt) {
        t->stats.stale++;
        return GS_SLIDES_IGNORED;
    }
    if (from_ok(s)) {
        *sp = s;
        return -2;
    }
    /* Already at or past the target (a re-sent job's second result): a duplicate. */
    if (s->state >= to && to != GS_SLIDE_FAILED) {
        t->stats.duplicates++;
        return GS_SLIDES_IGNORED;
    }
    t->stats.illegal++;
    return gs_error_set("slide %s: illegal transition %s -> %s", id, gs_slide_state_name(s->state),
                        gs_slide_state_name(to));
}

/* ---- the table -------------------------------------------------------------------------- */

gs_slides *gs_slides_new(gs_journal *journal, const gs_slides_options *o)
{
    if (!journal || !o || o->poison_limit < 1 || o->max_attempts < 1 || !isfinite(o->threshold) ||
        o->threshold < 0.f || o->threshold > 1.f) {
        gs_error_set("slide table: bad options");
        return NULL;
    }
    gs_slides *t = calloc(1, sizeof *t);
    if (!t)
        goto fail_oom;
    t->journal = journal;
    t->o = *o;
    const char *m[5] = {o->model_bundle, o->model_sha256, o->model_format_version,
                        o->model_trained_on, o->model_notice};
    for (int i = 0; i < 5; i++) {
        t->model[i] = strdup(S(m[i]));
        if (!t->model[i])
            goto fail_oom;
    }
    size_t n = gs_journal_slide_count(journal);
    for (size_t i = 0; i < n; i++) {
        const char *id = NULL;
        const json_t *rec = NULL;
        gs_journal_slide_at(journal, i, &id, &rec, NULL, NULL, NULL);
        slide *s = slide_of_record(rec);
        if (!s || strcmp(s->id, id) != 0) {
            fprintf(stderr, "slide table: journal record %s skipped: %s\n", id,
                    s ? "slide id differs from the file" : gs_error_get());
            slide_free(s);
            t->stats.load_skipped++;
            continue;
        }
        if (t->n == t->cap) {
            size_t cap = t->cap ? 2 * t->cap : 64;
            slide **p = realloc(t->slides, cap * sizeof *p);
            if (!p) {
                slide_free(s);
                goto fail_oom;
            }
            t->slides = p;
            t->cap = cap;
        }
        t->slides[t->n++] = s;
    }
    return t;
fail_oom:
    gs_slides_destroy(&t);
    gs_error_set("slide table: out of memory");
    return NULL;
}

void gs_slides_destroy(gs_slides **tp)
{
    if (!tp || !*tp)
        return;
    gs_slides *t = *tp;
    for (size_t i = 0; i < t->n; i++)
        slide_free(t->slides[i]);
    for (int i = 0; i < 5; i++)
        free(t->model[i]);
    free(t->slides);
    free(t);
    *tp = NULL;
}

static int new_slide_id(const gs_slides *t, char out[GS_SLIDE_ID_LEN + 1])
{
    for (int tries = 0; tries < 16; tries++) {
        uint8_t b[8];
        if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b)
            return gs_error_set("slide table: getrandom: %s", strerror(errno));
        for (int i = 0; i < 8; i++)
            snprintf(out + 2 * i, 3, "%02x", b[i]);
        if (!find(t, out))
            return 0;
    }
    return gs_error_set("slide table: no free slide id");
}

static int text_ok(const char *s, size_t max)
{
    return !s || strnlen(s, max + 1) <= max;
}

int gs_slides_intake(gs_slides *t, const char *path, int64_t size, int64_t mtime_ms,
                     gs_intake_source source, const char *external_id, int64_t now_unix_ms,
                     char out_id[GS_SLIDE_ID_LEN + 1], int *duplicate, uint64_t *seq)
{
    if (!path || path[0] != '/' || !text_ok(path, MAX_PATH_LEN) ||
        !text_ok(external_id, MAX_TEXT_LEN))
        return gs_error_set("intake: the path must be absolute and at most %d bytes", MAX_PATH_LEN);
    if (source < GS_INTAKE_ANNOUNCED || source > GS_INTAKE_EMBEDDED)
        return gs_error_set("intake: bad source %d", (int)source);
    if (duplicate)
        *duplicate = 0;
    /* Rule 1 of PROTOCOL.md §13: the same path in flight, or finished with the same file. A
     * folded record is not a slide of its own, so it never answers for the path. */
    for (size_t i = 0; i < t->n; i++) {
        slide *s = t->slides[i];
        if (strcmp(S(s->path), path) != 0 || s->duplicate_of)
            continue;
        if (!terminal(s->state) || (s->size == size && s->mtime_ms == mtime_ms)) {
            if (commit_duplicate(t, s, source, external_id, now_unix_ms, seq) != 0)
                return -1;
            memcpy(out_id, s->id, GS_SLIDE_ID_LEN + 1);
            if (duplicate)
                *duplicate = 1;
            t->stats.duplicates++;
            return 0;
        }
    }
    slide c = {0};
    if (new_slide_id(t, c.id) != 0)
        return -1;
    c.path = (char *)path;
    c.external_id = (char *)external_id;
    c.state = GS_SLIDE_ACCEPTED;
    c.source = source;
    c.attempt = 1;
    c.size = size;
    c.mtime_ms = mtime_ms;
    c.accepted_ms = now_unix_ms;
    /* What the stages will check before they read the slide (PROTOCOL.md §13). */
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISREG(st.st_mode))
        c.file = (gs_slide_file){(uint64_t)st.st_dev, (uint64_t)st.st_ino, (int64_t)st.st_size,
                                 (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec};
    if (commit(t, NULL, &c, EV_ACCEPTED, 0, NULL, now_unix_ms, seq) != 0)
        return -1;
    memcpy(out_id, c.id, GS_SLIDE_ID_LEN + 1);
    return 0;
}

static int from_accepted(const slide *s)
{
    return s->state == GS_SLIDE_ACCEPTED;
}

static int from_planned(const slide *s)
{
    return s->state == GS_SLIDE_PLANNED && !s->unassessable_reason;
}

static int from_sharp_blur_checked(const slide *s)
{
    return s->state == GS_SLIDE_BLUR_CHECKED && !s->out_of_focus;
}

static int from_inferring(const slide *s)
{
    return s->state == GS_SLIDE_INFERRING;
}

static int from_reportable(const slide *s)
{
    return s->state == GS_SLIDE_SCREENED ||
           (s->state == GS_SLIDE_PLANNED && s->unassessable_reason) ||
           (s->state == GS_SLIDE_BLUR_CHECKED && s->out_of_focus);
}

static int from_reported(const slide *s)
{
    return s->state == GS_SLIDE_REPORTED;
}

static int from_any(const slide *s)
{
    return !terminal(s->state);
}

int gs_slides_planned(gs_slides *t, const char *slide_id, uint32_t attempt, const char *quickhash,
                      gs_slide_method method, const char *unassessable_reason, int64_t now_unix_ms,
                      int *folded, uint64_t *seq)
{
    slide *s = NULL;
    if (folded)
        *folded = 0;
    if (!text_ok(quickhash, MAX_TEXT_LEN) || !text_ok(unassessable_reason, MAX_TEXT_LEN))
        return gs_error_set("slide %s: plan strings too long", S(slide_id));
    if (!slide_method_ok(method))
        return gs_error_set("slide %s: plan method %d unknown", S(slide_id), (int)method);
    int r = check(t, slide_id, attempt, GS_SLIDE_PLANNED, from_accepted, &s);
    if (r != -2)
        return r;
    slide c = *s;
    c.quickhash = (char *)quickhash;
    /* Rule 2 of PROTOCOL.md §13: same path and same content is the same slide. */
    const slide *same = NULL;
    for (size_t i = 0; quickhash && *quickhash && i < t->n && !same; i++) {
        const slide *o = t->slides[i];
        if (o != s && !o->duplicate_of && o->state != GS_SLIDE_FAILED &&
            strcmp(S(o->path), S(s->path)) == 0 && strcmp(S(o->quickhash), quickhash) == 0)
            same = o;
    }
    if (same) {
        char reason[64];
        snprintf(reason, sizeof reason, "duplicate of %s", same->id);
        c.state = GS_SLIDE_DONE;
        c.duplicate_of = (char *)same->id;
        c.reason = reason;
        if (commit(t, s, &c, EV_STATE, GS_SLIDE_ACCEPTED, reason, now_unix_ms, seq) != 0)
            return -1;
        if (folded)
            *folded = 1;
        return 0;
    }
    c.state = GS_SLIDE_PLANNED;
    c.foreground_method = method;
    c.unassessable_reason = (char *)unassessable_reason;
    return commit(t, s, &c, EV_STATE, GS_SLIDE_ACCEPTED, NULL, now_unix_ms, seq);
}

int gs_slides_blur_checked(gs_slides *t, const char *slide_id, uint32_t attempt,
                           float blurred_fraction, gs_slide_method method, int out_of_focus,
                           const char *reason, int64_t now_unix_ms, uint64_t *seq)
{
    slide *s = NULL;
    if (!isfinite(blurred_fraction) || blurred_fraction < 0.f || blurred_fraction > 1.f ||
        !text_ok(reason, MAX_TEXT_LEN) || !slide_method_ok(method))
        return gs_error_set("slide %s: bad blurred fraction, method or reason", S(slide_id));
    int r = check(t, slide_id, attempt, GS_SLIDE_BLUR_CHECKED, from_planned, &s);
    if (r != -2)
        return r;
    slide c = *s;
    c.state = GS_SLIDE_BLUR_CHECKED;
    c.blurred_fraction = blurred_fraction;
    c.blur_method = method;
    c.out_of_focus = !!out_of_focus;
    if (out_of_focus) {
        c.verdict = GS_VERDICT_UNASSESSABLE;
        c.reason = (char *)(reason && *reason ? reason : "out of focus");
    }
    return commit(t, s, &c, EV_STATE, GS_SLIDE_PLANNED, NULL, now_unix_ms, seq);
}

int gs_slides_inferring(gs_slides *t, const char *slide_id, uint32_t attempt, int64_t now_unix_ms,
                        uint64_t *seq)
{
    slide *s = NULL;
    int r = check(t, slide_id, attempt, GS_SLIDE_INFERRING, from_sharp_blur_checked, &s);
    if (r != -2)
        return r;
    slide c = *s;
    c.state = GS_SLIDE_INFERRING;
    return commit(t, s, &c, EV_STATE, GS_SLIDE_BLUR_CHECKED, NULL, now_unix_ms, seq);
}

int gs_slides_screened(gs_slides *t, const char *slide_id, uint32_t attempt, float score,
                       int64_t now_unix_ms, uint64_t *seq)
{
    return gs_slides_screened_in(t, slide_id, attempt, score, NULL, now_unix_ms, seq);
}

int gs_slides_screened_in(gs_slides *t, const char *slide_id, uint32_t attempt, float score,
                          const char *precision, int64_t now_unix_ms, uint64_t *seq)
{
    slide *s = NULL;
    if (!isfinite(score) || score < 0.f || score > 1.f)
        return gs_error_set("slide %s: screen score %g is not in 0..1", S(slide_id), (double)score);
    if (!slide_precision_ok(precision))
        return gs_error_set("slide %s: precision \"%.40s\" is not a precision list", S(slide_id),
                            precision);
    int r = check(t, slide_id, attempt, GS_SLIDE_SCREENED, from_inferring, &s);
    if (r != -2)
        return r;
    slide c = *s;
    char reason[96];
    c.state = GS_SLIDE_SCREENED;
    c.score = score;
    snprintf(c.precision, sizeof c.precision, "%s", S(precision));
    c.verdict = score > t->o.threshold ? GS_VERDICT_POSITIVE : GS_VERDICT_NEGATIVE;
    c.threshold = t->o.threshold;
    snprintf(c.threshold_source, sizeof c.threshold_source, "%s",
             t->o.threshold_source && t->o.threshold_source[0] ? t->o.threshold_source
                                                               : GS_SLIDE_SOURCE_UNKNOWN);
    snprintf(reason, sizeof reason, "score %.2f %s %.2f", (double)score,
             c.verdict == GS_VERDICT_POSITIVE ? ">" : "<=", (double)t->o.threshold);
    c.reason = reason;
    return commit(t, s, &c, EV_STATE, GS_SLIDE_INFERRING, NULL, now_unix_ms, seq);
}

int gs_slides_out_of_focus(gs_slides *t, const char *slide_id, uint32_t attempt, const char *reason,
                           int64_t now_unix_ms, uint64_t *seq)
{
    slide *s = NULL;
    if (!text_ok(reason, MAX_TEXT_LEN) || !reason[0])
        return gs_error_set("slide %s: an out-of-focus verdict needs a reason", S(slide_id));
    int r = check(t, slide_id, attempt, GS_SLIDE_SCREENED, from_inferring, &s);
    if (r != -2)
        return r;
    slide c = *s;
    c.state = GS_SLIDE_SCREENED;
    c.score = 0.f;
    c.verdict = GS_VERDICT_UNASSESSABLE;
    c.out_of_focus = 1;
    c.reason = (char *)reason;
    return commit(t, s, &c, EV_STATE, GS_SLIDE_INFERRING, NULL, now_unix_ms, seq);
}

/* Joins the report's warnings with '\n' into a malloc'd string (NULL when there are none). */
static int join_warnings(const gs_slide_report *rep, char **out)
{
    *out = NULL;
    if (!rep || rep->n_warnings == 0)
        return 0;
    size_t len = 1;
    for (size_t i = 0; i < rep->n_warnings; i++) {
        const char *w = rep->warnings[i];
        if (!w || !text_ok(w, MAX_TEXT_LEN) || strchr(w, '\n'))
            return gs_error_set("warning %zu is missing, too long or not one line", i);
        len += strlen(w) + 1;
    }
    char *buf = malloc(len);
    if (!buf)
        return gs_error_set("out of memory");
    buf[0] = 0;
    for (size_t i = 0; i < rep->n_warnings; i++) {
        if (i)
            strcat(buf, "\n");
        strcat(buf, rep->warnings[i]);
    }
    *out = buf;
    return 0;
}

static int apply_report(slide *c, const gs_slide_report *rep, char **warnings)
{
    if (!rep)
        return 0;
    if (!text_ok(rep->report_json, MAX_PATH_LEN) || !text_ok(rep->heatmap_png, MAX_PATH_LEN) ||
        !text_ok(rep->regions_geojson, MAX_PATH_LEN))
        return gs_error_set("report path too long");
    if (join_warnings(rep, warnings) != 0)
        return -1;
    c->report_json = (char *)rep->report_json;
    c->heatmap_png = (char *)rep->heatmap_png;
    c->regions_geojson = (char *)rep->regions_geojson;
    c->warnings = *warnings;
    c->tiles = rep->tiles;
    return 0;
}

int gs_slides_reported(gs_slides *t, const char *slide_id, uint32_t attempt,
                       const gs_slide_report *report, int64_t now_unix_ms, uint64_t *seq)
{
    slide *s = NULL;
    int r = check(t, slide_id, attempt, GS_SLIDE_REPORTED, from_reportable, &s);
    if (r != -2)
        return r;
    slide c = *s;
    char *warnings = NULL;
    if (apply_report(&c, report, &warnings) != 0)
        return gs_error_prefix("slide %s", slide_id);
    gs_slide_state from = s->state;
    if (from == GS_SLIDE_PLANNED) {
        c.verdict = GS_VERDICT_UNASSESSABLE;
        c.reason = s->unassessable_reason;
    }
    c.state = GS_SLIDE_REPORTED;
    r = commit(t, s, &c, EV_STATE, from, NULL, now_unix_ms, seq);
    free(warnings);
    return r;
}

int gs_slides_done(gs_slides *t, const char *slide_id, uint32_t attempt, int64_t now_unix_ms,
                   uint64_t *seq)
{
    slide *s = NULL;
    int r = check(t, slide_id, attempt, GS_SLIDE_DONE, from_reported, &s);
    if (r != -2)
        return r;
    slide c = *s;
    c.state = GS_SLIDE_DONE;
    return commit(t, s, &c, EV_VERDICT, GS_SLIDE_REPORTED, NULL, now_unix_ms, seq);
}

/* gs_slides_fail(), and the poison verdicts this module decides itself. */
static int fail(gs_slides *t, const char *slide_id, uint32_t attempt, const char *reason,
                int poison, const gs_slide_report *report, int64_t now_unix_ms, uint64_t *seq)
{
    slide *s = NULL;
    if (!reason || !*reason || !text_ok(reason, MAX_TEXT_LEN))
        return gs_error_set("slide %s: a failure needs a reason of at most %d bytes", S(slide_id),
                            MAX_TEXT_LEN);
    int r = check(t, slide_id, attempt, GS_SLIDE_FAILED, from_any, &s);
    if (r != -2)
        return r;
    slide c = *s;
    char *warnings = NULL;
    if (apply_report(&c, report, &warnings) != 0)
        return gs_error_prefix("slide %s", slide_id);
    c.state = GS_SLIDE_FAILED;
    c.verdict = GS_VERDICT_FAILED;
    c.poison = poison;
    c.score = 0.f;
    c.reason = (char *)reason;
    r = commit(t, s, &c, EV_VERDICT, s->state, NULL, now_unix_ms, seq);
    free(warnings);
    return r;
}

int gs_slides_fail(gs_slides *t, const char *slide_id, uint32_t attempt, const char *reason,
                   const gs_slide_report *report, int64_t now_unix_ms, uint64_t *seq)
{
    return fail(t, slide_id, attempt, reason, 0, report, now_unix_ms, seq);
}

int gs_slides_crash_mark(gs_slides *t, const char *slide_id, uint32_t attempt, int64_t now_unix_ms,
                         uint64_t *seq)
{
    slide *s = NULL;
    if (seq)
        *seq = 0;
    int r = check(t, slide_id, attempt, GS_SLIDE_FAILED, from_any, &s);
    if (r != -2)
        return r;
    /* Written so that no count read back from the journal can wrap (poison_limit >= 1). */
    if (s->crash_marks >= t->o.poison_limit - 1) {
        char reason[128];
        uint32_t before = s->crash_marks; /* restored below if the journal refuses */
        if (s->crash_marks < UINT32_MAX)
            s->crash_marks++;
        snprintf(reason, sizeof reason,
                 GS_POISON_REASON ": %u workers were lost while holding this slide",
                 s->crash_marks);
        r = fail(t, slide_id, attempt, reason, 1, NULL, now_unix_ms, seq);
        if (r != 0)
            s->crash_marks = before;
        return r;
    }
    slide c = *s;
    c.crash_marks++;
    c.updated_ms = now_unix_ms;
    json_t *rec = slide_record_of(&c);
    if (!rec)
        return gs_error_set("slide %s: out of memory", slide_id);
    r = gs_journal_put_slide(t->journal, slide_id, rec, 0, now_unix_ms);
    json_decref(rec);
    if (r != 0)
        return gs_error_prefix("slide %s", slide_id);
    s->crash_marks = c.crash_marks;
    s->updated_ms = now_unix_ms;
    return 0;
}

/* A terminal slide whose closing event (its Verdict, or the DONE of a folded duplicate) is
 * not in the log lost it to damage (a torn or corrupt tail, a lost log) after its record was
 * written. The record has everything the event said: it is journalled again, with a new
 * sequence number and the time the slide was decided, so events-since-0 shows every
 * verdict. Returns 0, or -1 on a journal failure. */
static int rebuild_lost_events(gs_slides *t)
{
    for (size_t i = 0; i < t->n; i++) {
        slide *s = t->slides[i];
        if (!terminal(s->state) || s->last_seq == 0 ||
            gs_journal_has_event(t->journal, s->last_seq))
            continue;
        uint64_t lost = s->last_seq, seq = 0;
        slide c = *s;
        int folded = s->duplicate_of != NULL;
        if (commit(t, s, &c, folded ? EV_STATE : EV_VERDICT, GS_SLIDE_ACCEPTED, NULL, s->updated_ms,
                   &seq) != 0)
            return -1;
        t->stats.rebuilt_events++;
        fprintf(stderr,
                "slide table: slide %s: its %s event (seq %llu) is missing from the journal's "
                "log: re-derived from its record as seq %llu\n",
                s->id, folded ? "DONE" : "verdict", (unsigned long long)lost,
                (unsigned long long)seq);
    }
    return 0;
}

int gs_slides_recover(gs_slides *t, int64_t now_unix_ms)
{
    if (t->recovered)
        return gs_error_set("slide table: recovery runs once, at start");
    t->recovered = 1;
    if (rebuild_lost_events(t) != 0)
        return -1;
    int changed = 0;
    /* Snapshot the ids: transitions never add slides, but be independent of the order. */
    for (size_t i = 0; i < t->n; i++) {
        slide *s = t->slides[i];
        if (terminal(s->state))
            continue;
        int r;
        if (s->state == GS_SLIDE_REPORTED) {
            r = gs_slides_done(t, s->id, s->attempt, now_unix_ms, NULL);
        } else if (s->attempt >= t->o.max_attempts) {
            /* Never attempt + 1 > max: an attempt of UINT32_MAX read back from the journal
             * would wrap to 0, and the slide would be screened again under a new fence. */
            char reason[128];
            snprintf(reason, sizeof reason,
                     GS_POISON_REASON
                     ": the coordinator restarted %u times with this slide in flight",
                     s->attempt);
            r = fail(t, s->id, s->attempt, reason, 1, NULL, now_unix_ms, NULL);
        } else {
            slide c = *s;
            c.attempt++;
            r = commit(t, s, &c, EV_STATE, s->state, "coordinator restart", now_unix_ms, NULL);
        }
        if (r != 0)
            return -1;
        changed++;
    }
    return changed;
}

int gs_slides_fence(gs_slides *t, const char *slide_id, uint32_t attempt)
{
    const slide *s = find(t, slide_id);
    if (!s || terminal(s->state) || s->attempt != attempt) {
        t->stats.stale++;
        return GS_SLIDES_IGNORED;
    }
    return 0;
}

static void view(const slide *s, gs_slide_info *v)
{
    v->slide_id = s->id;
    v->path = S(s->path);
    v->external_id = S(s->external_id);
    v->quickhash = S(s->quickhash);
    v->duplicate_of = S(s->duplicate_of);
    v->unassessable_reason = S(s->unassessable_reason);
    v->reason = S(s->reason);
    v->report_json = S(s->report_json);
    v->heatmap_png = S(s->heatmap_png);
    v->regions_geojson = S(s->regions_geojson);
    v->warnings = S(s->warnings);
    v->state = s->state;
    v->source = s->source;
    v->verdict = s->verdict;
    v->attempt = s->attempt;
    v->crash_marks = s->crash_marks;
    v->out_of_focus = s->out_of_focus;
    v->poison = s->poison;
    v->foreground_method = s->foreground_method;
    v->blur_method = s->blur_method;
    v->score = s->score;
    v->threshold = s->threshold;
    v->threshold_source = s->threshold_source;
    v->precision = s->precision;
    v->blurred_fraction = s->blurred_fraction;
    v->tiles = s->tiles;
    v->size = s->size;
    v->mtime_ms = s->mtime_ms;
    v->file = s->file;
    v->accepted_unix_ms = s->accepted_ms;
    v->updated_unix_ms = s->updated_ms;
    v->last_seq = s->last_seq;
}

int gs_slides_get(const gs_slides *t, const char *slide_id, gs_slide_info *info)
{
    const slide *s = find(t, slide_id);
    if (!s)
        return gs_error_set("slide %s: unknown", S(slide_id));
    view(s, info);
    return 0;
}

int gs_slides_get_by_path(const gs_slides *t, const char *path, gs_slide_info *info)
{
    const slide *best = NULL;
    for (size_t i = 0; path && i < t->n; i++) {
        const slide *s = t->slides[i];
        if (s->duplicate_of || strcmp(S(s->path), path) != 0)
            continue;
        if (!terminal(s->state)) {
            best = s;
            break;
        }
        if (!best || s->accepted_ms > best->accepted_ms ||
            (s->accepted_ms == best->accepted_ms && s->last_seq > best->last_seq))
            best = s;
    }
    if (!best)
        return gs_error_set("%s: no slide with this path", S(path));
    view(best, info);
    return 0;
}

size_t gs_slides_count(const gs_slides *t)
{
    return t->n;
}

int gs_slides_at(const gs_slides *t, size_t i, gs_slide_info *info)
{
    if (i >= t->n)
        return -1;
    view(t->slides[i], info);
    return 0;
}

size_t gs_slides_in_flight(const gs_slides *t)
{
    size_t k = 0;
    for (size_t i = 0; i < t->n; i++)
        k += !terminal(t->slides[i]->state);
    return k;
}

gs_slide_step gs_slide_next_step(const gs_slide_info *v)
{
    switch (v->state) {
    case GS_SLIDE_ACCEPTED:
        return GS_STEP_PLAN;
    case GS_SLIDE_PLANNED:
        return v->unassessable_reason[0] ? GS_STEP_REPORT : GS_STEP_BLUR_CHECK;
    case GS_SLIDE_BLUR_CHECKED:
        return v->out_of_focus ? GS_STEP_REPORT : GS_STEP_INFER;
    case GS_SLIDE_INFERRING:
        return GS_STEP_INFER;
    case GS_SLIDE_SCREENED:
        return GS_STEP_REPORT;
    case GS_SLIDE_REPORTED:
        return GS_STEP_COMMIT;
    default:
        return GS_STEP_NONE;
    }
}

void gs_slides_stats_get(const gs_slides *t, gs_slides_stats *s)
{
    *s = t->stats;
}

int gs_slides_under_roots(const char *const *roots, size_t n_roots, const char *real)
{
    int inside = 0;
    for (size_t i = 0; i < n_roots && !inside; i++) {
        char *root = realpath(roots[i], NULL);
        if (!root)
            continue; /* a missing root admits nothing */
        size_t n = strlen(root);
        /* "/" as a root admits everything; otherwise the match must end at a separator */
        inside = strncmp(real, root, n) == 0 && (n == 1 || real[n] == '/' || real[n] == 0);
        free(root);
    }
    return inside;
}

int gs_slides_resolve_path(const char *const *roots, size_t n_roots, const char *path, char *out,
                           size_t out_len, int64_t *size, int64_t *mtime_ms)
{
    if (!path || !*path || !text_ok(path, MAX_PATH_LEN))
        return gs_error_set("intake: empty or overlong path");
    /* The journal keeps paths as JSON text: a name that is not UTF-8 could never be recorded,
     * so it is refused here with its reason (a watched folder would otherwise retry it). */
    if (!gs_utf8_ok(path))
        return gs_error_set("%s: the path is not UTF-8 (rename the file)", path);
    char *real = realpath(path, NULL);
    if (!real)
        return gs_error_set("%s: %s", path, strerror(errno));
    int rc = -1;
    struct stat st;
    if (!gs_slides_under_roots(roots, n_roots, real)) {
        gs_error_set("%s: outside the slide roots", path);
    } else if (!gs_utf8_ok(real)) {
        gs_error_set("%s: the resolved path is not UTF-8 (rename the file)", path);
    } else if (stat(real, &st) != 0) {
        gs_error_set("%s: %s", path, strerror(errno));
    } else if (!S_ISREG(st.st_mode)) {
        gs_error_set("%s: not a regular file", path);
    } else if (strlen(real) + 1 > out_len) {
        gs_error_set("%s: resolved path too long", path);
    } else {
        memcpy(out, real, strlen(real) + 1);
        *size = (int64_t)st.st_size;
        *mtime_ms = (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
        rc = 0;
    }
    free(real);
    return rc;
}

int gs_slides_retain(gs_slides *t, int64_t now_unix_ms, int64_t max_age_ms, size_t *dropped)
{
    if (gs_journal_retain(t->journal, now_unix_ms, max_age_ms, dropped) != 0)
        return -1;
    /* The journal decided which records went; the table follows it. */
    size_t w = 0;
    for (size_t i = 0; i < t->n; i++) {
        if (gs_journal_slide_get(t->journal, t->slides[i]->id))
            t->slides[w++] = t->slides[i];
        else
            slide_free(t->slides[i]);
    }
    t->n = w;
    return 0;
}
