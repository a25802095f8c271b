/*
 * worklist: see worklist.h. The snapshot is an array of plain entries, newest first, swapped in
 * whole under the mutex; readers build their JSON (jansson) under the same mutex, which takes
 * well under a millisecond per thousand slides.
 */
#include "daemon/service/worklist.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "ops/error.h"
#include "proto/vocab.h"
#include "stages/runtime/fileio.h"

typedef struct {
    char id[GS_SLIDE_ID_LEN + 1];
    char *path, *external_id, *reason, *warnings, *report_dir, *duplicate_of;
    gs_slide_state state;
    gs_verdict_class verdict;
    int terminal;
    float score, threshold;
    int has_score, has_threshold;
    int64_t accepted_unix_ms, updated_unix_ms;
} entry;

typedef struct {
    uint32_t workers, queue_depth;
    double tiles_per_second;
} stage_figures;

/* The stages the throughput panel lists, in pipeline order. */
static const int STAGES[] = {
    GASTROSCREEN__V1__STAGE__STAGE_FOREGROUND, GASTROSCREEN__V1__STAGE__STAGE_TILER,
    GASTROSCREEN__V1__STAGE__STAGE_BLUR,       GASTROSCREEN__V1__STAGE__STAGE_INFER,
    GASTROSCREEN__V1__STAGE__STAGE_SCREENER,   GASTROSCREEN__V1__STAGE__STAGE_REPORTER,
};
#define N_STAGES (sizeof STAGES / sizeof STAGES[0])

struct gs_worklist {
    pthread_mutex_t lock; /* guards everything below */
    entry *entries;
    size_t n;
    uint64_t seen_seq; /* the table's newest event and size at the last copy */
    size_t seen_count;
    int published;
    int untrained;
    stage_figures stage[N_STAGES];
    uint32_t slides_in_flight, slides_active;
    double tiles_per_second;
    char *web_dir;
};

static void entries_free(entry *e, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(e[i].path);
        free(e[i].external_id);
        free(e[i].reason);
        free(e[i].warnings);
        free(e[i].report_dir);
        free(e[i].duplicate_of);
    }
    free(e);
}

gs_worklist *gs_worklist_new(int untrained)
{
    gs_worklist *w = calloc(1, sizeof *w);
    if (!w) {
        gs_error_set("worklist: out of memory");
        return NULL;
    }
    pthread_mutex_init(&w->lock, NULL);
    w->untrained = untrained;
    return w;
}

void gs_worklist_destroy(gs_worklist **pw)
{
    if (!pw || !*pw)
        return;
    gs_worklist *w = *pw;
    entries_free(w->entries, w->n);
    free(w->web_dir);
    pthread_mutex_destroy(&w->lock);
    free(w);
    *pw = NULL;
}

static int newest_first(const void *a, const void *b)
{
    const entry *x = a, *y = b;
    if (x->accepted_unix_ms != y->accepted_unix_ms)
        return x->accepted_unix_ms > y->accepted_unix_ms ? -1 : 1;
    return strcmp(x->id, y->id);
}

/* The folder of a report file ("" when there is none). */
static char *folder_of(const char *file)
{
    const char *slash = file ? strrchr(file, '/') : NULL;
    if (!slash || slash == file)
        return strdup("");
    return strndup(file, (size_t)(slash - file));
}

static int copy_entry(entry *e, const gs_slide_info *v)
{
    snprintf(e->id, sizeof e->id, "%s", v->slide_id);
    e->state = v->state;
    e->terminal = v->state == GS_SLIDE_DONE || v->state == GS_SLIDE_FAILED;
    e->verdict = v->verdict;
    /* A score exists once the screener judged the slide (SCREENED and later, positive or
     * negative); the threshold with it. */
    e->has_score = v->state >= GS_SLIDE_SCREENED &&
                   (v->verdict == GS_VERDICT_POSITIVE || v->verdict == GS_VERDICT_NEGATIVE);
    e->score = v->score;
    e->has_threshold = v->threshold_source && v->threshold_source[0];
    e->threshold = v->threshold;
    e->accepted_unix_ms = v->accepted_unix_ms;
    e->updated_unix_ms = v->updated_unix_ms;
    const char *reason = v->reason && v->reason[0] ? v->reason : v->unassessable_reason;
    e->path = strdup(v->path ? v->path : "");
    e->external_id = strdup(v->external_id ? v->external_id : "");
    e->reason = strdup(reason ? reason : "");
    e->warnings = strdup(v->warnings ? v->warnings : "");
    e->duplicate_of = strdup(v->duplicate_of ? v->duplicate_of : "");
    e->report_dir = folder_of(v->report_json);
    if (!e->path || !e->external_id || !e->reason || !e->warnings || !e->duplicate_of ||
        !e->report_dir)
        return gs_error_set("worklist: out of memory");
    return 0;
}

int gs_worklist_publish(gs_worklist *w, const gs_slides *t, const gs_coordinator_stats *s,
                        int64_t now_unix_ms)
{
    GS_ASSERT(w);
    (void)now_unix_ms;
    if (s) {
        pthread_mutex_lock(&w->lock);
        for (size_t i = 0; i < N_STAGES; i++) {
            const gs_coordinator_stage_stats *st = &s->stage[STAGES[i]];
            w->stage[i] = (stage_figures){st->workers, st->queue_depth, st->tiles_per_second};
        }
        w->slides_in_flight = s->slides_in_flight;
        w->slides_active = s->slides_active;
        w->tiles_per_second = s->tiles_per_second;
        pthread_mutex_unlock(&w->lock);
    }
    if (!t)
        return 0;
    size_t n = gs_slides_count(t);
    uint64_t seq = 0;
    gs_slide_info v;
    for (size_t i = 0; i < n; i++)
        if (gs_slides_at(t, i, &v) == 0 && v.last_seq > seq)
            seq = v.last_seq;
    /* Nothing journalled and nothing dropped since the last copy: the same table. (A slide's
     * every change journals an event with a new, higher sequence number.) */
    if (w->published && seq == w->seen_seq && n == w->seen_count)
        return 0;
    entry *fresh = calloc(n ? n : 1, sizeof *fresh);
    if (!fresh)
        return gs_error_set("worklist: out of memory");
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (gs_slides_at(t, i, &v) != 0 || !gs_slide_id_ok(v.slide_id))
            continue;
        if (copy_entry(&fresh[m++], &v) != 0) {
            entries_free(fresh, m);
            return -1;
        }
    }
    qsort(fresh, m, sizeof *fresh, newest_first);
    pthread_mutex_lock(&w->lock);
    entry *old = w->entries;
    size_t old_n = w->n;
    w->entries = fresh;
    w->n = m;
    pthread_mutex_unlock(&w->lock);
    entries_free(old, old_n);
    w->seen_seq = seq;
    w->seen_count = n;
    w->published = 1;
    return 0;
}

/* jansson helpers that keep going on failure: json_dumps of an incomplete object would still
 * parse, so a failure is remembered and the whole answer refused. */
static void put(json_t *o, const char *key, json_t *v, int *failed)
{
    if (!v || json_object_set_new(o, key, v) != 0)
        *failed = 1;
}

static json_t *text_or_null(const char *s)
{
    return s && s[0] ? json_string(s) : json_null();
}

/* The file name of a path. */
static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

static json_t *entry_json(const entry *e, int untrained, int *failed)
{
    json_t *o = json_object();
    if (!o) {
        *failed = 1;
        return NULL;
    }
    put(o, "id", json_string(e->id), failed);
    put(o, "name", json_string(base_name(e->path)), failed);
    put(o, "external_id", json_string(e->external_id), failed);
    put(o, "state", json_string(gs_slide_state_name(e->state)), failed);
    int has_verdict =
        e->terminal && e->verdict >= GS_VERDICT_NEGATIVE && e->verdict <= GS_VERDICT_FAILED;
    put(o, "verdict", has_verdict ? json_string(gs_verdict_class_name(e->verdict)) : json_null(),
        failed);
    put(o, "score", e->has_score ? json_real(e->score) : json_null(), failed);
    put(o, "threshold", e->has_threshold ? json_real(e->threshold) : json_null(), failed);
    json_t *warnings = json_array();
    if (!warnings)
        *failed = 1;
    for (const char *p = e->warnings; warnings && *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (len && json_array_append_new(warnings, json_stringn(p, len)) != 0)
            *failed = 1;
        p += len + (nl ? 1 : 0);
    }
    put(o, "warnings", warnings, failed);
    put(o, "reason", text_or_null(e->reason), failed);
    put(o, "duplicate_of", text_or_null(e->duplicate_of), failed);
    put(o, "submitted_unix_ms", json_integer(e->accepted_unix_ms), failed);
    put(o, "decided_unix_ms", e->terminal ? json_integer(e->updated_unix_ms) : json_null(), failed);
    put(o, "seconds_to_verdict",
        has_verdict ? json_real((double)(e->updated_unix_ms - e->accepted_unix_ms) / 1000.0)
                    : json_null(),
        failed);
    put(o, "untrained", json_boolean(untrained), failed);
    char viewer[32];
    snprintf(viewer, sizeof viewer, "/view/%s", e->id);
    put(o, "viewer", e->report_dir[0] ? json_string(viewer) : json_null(), failed);
    return o;
}

/* 1 when e passes the filter (NULL = all). */
static int matches(const entry *e, const char *verdict)
{
    if (!verdict)
        return 1;
    int decided =
        e->terminal && e->verdict >= GS_VERDICT_NEGATIVE && e->verdict <= GS_VERDICT_FAILED;
    if (!strcmp(verdict, "pending"))
        return !e->terminal;
    return decided && !strcmp(verdict, gs_verdict_class_name(e->verdict));
}

static char *dump(json_t *root, int failed)
{
    char *text = failed ? NULL : json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!text)
        gs_error_set("worklist: out of memory writing JSON");
    return text;
}

char *gs_worklist_slides_json(gs_worklist *w, const char *verdict, int64_t now_unix_ms)
{
    GS_ASSERT(w);
    static const char *const filters[] = {"negative", "positive", "unassessable", "failed",
                                          "pending"};
    if (verdict) {
        int known = 0;
        for (size_t i = 0; i < sizeof filters / sizeof *filters; i++)
            known |= !strcmp(verdict, filters[i]);
        if (!known) {
            gs_error_set("worklist: unknown verdict '%.32s' (negative, positive, unassessable, "
                         "failed or pending)",
                         verdict);
            return NULL;
        }
    }
    int failed = 0;
    json_t *root = json_object(), *slides = json_array();
    if (!root || !slides) {
        json_decref(root);
        json_decref(slides);
        gs_error_set("worklist: out of memory");
        return NULL;
    }
    put(root, "generated_unix_ms", json_integer(now_unix_ms), &failed);
    pthread_mutex_lock(&w->lock);
    for (size_t i = 0; i < w->n && !failed; i++)
        if (matches(&w->entries[i], verdict)) {
            json_t *o = entry_json(&w->entries[i], w->untrained, &failed);
            if (!o || json_array_append_new(slides, o) != 0)
                failed = 1;
        }
    pthread_mutex_unlock(&w->lock);
    put(root, "slides", slides, &failed);
    put(root, "untrained", json_boolean(w->untrained), &failed);
    return dump(root, failed);
}

char *gs_worklist_throughput_json(gs_worklist *w, int64_t now_unix_ms)
{
    GS_ASSERT(w);
    int failed = 0;
    json_t *root = json_object(), *stages = json_array();
    if (!root || !stages) {
        json_decref(root);
        json_decref(stages);
        gs_error_set("worklist: out of memory");
        return NULL;
    }
    put(root, "generated_unix_ms", json_integer(now_unix_ms), &failed);
    pthread_mutex_lock(&w->lock);
    for (size_t i = 0; i < N_STAGES; i++) {
        json_t *o = json_object();
        if (!o || json_array_append_new(stages, o) != 0) {
            failed = 1;
            break;
        }
        put(o, "stage", json_string(gs_stage_name(STAGES[i])), &failed);
        put(o, "workers", json_integer(w->stage[i].workers), &failed);
        put(o, "queue_depth", json_integer(w->stage[i].queue_depth), &failed);
        put(o, "tiles_per_second", json_real(w->stage[i].tiles_per_second), &failed);
    }
    uint32_t in_flight = w->slides_in_flight, active = w->slides_active;
    double tps = w->tiles_per_second;
    pthread_mutex_unlock(&w->lock);
    put(root, "stages", stages, &failed);
    put(root, "slides_in_flight", json_integer(in_flight), &failed);
    put(root, "slides_waiting", json_integer(in_flight > active ? in_flight - active : 0), &failed);
    put(root, "tiles_per_second", json_real(tps), &failed);
    return dump(root, failed);
}

int gs_worklist_lookup(const char *slide_id, char *slide_path, size_t path_len, char *report_dir,
                       size_t dir_len, void *user)
{
    gs_worklist *w = user;
    GS_ASSERT(w);
    if (!slide_id || !gs_slide_id_ok(slide_id))
        return -1;
    int rc = -1;
    pthread_mutex_lock(&w->lock);
    for (size_t i = 0; i < w->n; i++) {
        const entry *e = &w->entries[i];
        if (strcmp(e->id, slide_id) != 0)
            continue;
        if (e->report_dir[0] && strlen(e->path) < path_len && strlen(e->report_dir) < dir_len) {
            strcpy(slide_path, e->path);
            strcpy(report_dir, e->report_dir);
            rc = 0;
        }
        break;
    }
    pthread_mutex_unlock(&w->lock);
    return rc;
}

/* ---- HTTP ---- */

static int reply_json_text(gs_http_reply *reply, char *text)
{
    if (!text)
        return gs_http_reply_json(reply, 400, "{\"error\":\"bad request\"}");
    int rc = gs_http_reply_header(reply, "Cache-Control", "no-store");
    if (rc == 0)
        rc = gs_http_reply_json(reply, 200, text);
    free(text);
    return rc;
}

static int serve_slides(const gs_http_request *rq, gs_http_reply *reply, void *user)
{
    gs_worklist *w = user;
    if (strcmp(gs_http_path(rq), "/api/slides") != 0)
        return gs_http_reply_text(reply, 404, "not found\n");
    const char *verdict = gs_http_query(rq, "verdict");
    if (verdict && !*verdict)
        verdict = NULL;
    char *text = gs_worklist_slides_json(w, verdict, gs_unix_ms());
    if (!text && verdict) {
        /* an unknown filter: say which are known */
        json_t *o = json_pack("{s:s}", "error", gs_error_get());
        char *msg = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        int rc = gs_http_reply_json(reply, 400, msg ? msg : "{\"error\":\"bad verdict\"}");
        free(msg);
        return rc;
    }
    if (!text)
        return -1;
    return reply_json_text(reply, text);
}

static int serve_throughput(const gs_http_request *rq, gs_http_reply *reply, void *user)
{
    gs_worklist *w = user;
    if (strcmp(gs_http_path(rq), "/api/throughput") != 0)
        return gs_http_reply_text(reply, 404, "not found\n");
    char *text = gs_worklist_throughput_json(w, gs_unix_ms());
    if (!text)
        return -1;
    return reply_json_text(reply, text);
}

static int serve_index(const gs_http_request *rq, gs_http_reply *reply, void *user)
{
    const char *web_dir = user;
    const char *p = gs_http_path(rq);
    if (strcmp(p, "/") != 0 && strcmp(p, "/worklist.html") != 0)
        return gs_http_reply_text(reply, 404, "not found\n");
    /* The page loads only its own script and style sheet: nothing injected into a slide's
     * name or warnings could run even if a page bug let it through. */
    if (gs_http_reply_header(reply, "Content-Security-Policy",
                             "default-src 'self'; object-src 'none'; base-uri 'none'; "
                             "frame-ancestors 'none'") != 0 ||
        gs_http_reply_header(reply, "Cache-Control", "no-cache") != 0)
        return -1;
    return gs_http_reply_file(reply, web_dir, "worklist.html", NULL);
}

static int serve_static(const gs_http_request *rq, gs_http_reply *reply, void *user)
{
    const char *web_dir = user;
    return gs_http_reply_file(reply, web_dir, gs_http_path(rq) + strlen("/static/"), NULL);
}

static int serve_leaflet(const gs_http_request *rq, gs_http_reply *reply, void *user)
{
    (void)user;
    if (gs_http_reply_header(reply, "Cache-Control", "max-age=86400") != 0)
        return -1;
    return gs_http_reply_file(reply, GS_LEAFLET_DIR, gs_http_path(rq) + strlen("/static/leaflet/"),
                              NULL);
}

int gs_worklist_page_routes(gs_http *h, const char *web_dir)
{
    GS_ASSERT(h && web_dir);
    void *dir = (void *)(uintptr_t)web_dir; /* read only by the handlers */
    if (gs_http_route(h, "/", serve_index, dir) != 0 ||
        gs_http_route(h, "/static/", serve_static, dir) != 0 ||
        gs_http_route(h, "/static/leaflet/", serve_leaflet, NULL) != 0)
        return -1;
    return 0;
}

int gs_worklist_routes(gs_http *h, gs_worklist *w, const char *web_dir)
{
    GS_ASSERT(h && w && web_dir);
    char *copy = strdup(web_dir);
    if (!copy)
        return gs_error_set("worklist: out of memory");
    free(w->web_dir);
    w->web_dir = copy;
    if (gs_worklist_page_routes(h, w->web_dir) != 0 ||
        gs_http_route(h, "/api/slides", serve_slides, w) != 0 ||
        gs_http_route(h, "/api/throughput", serve_throughput, w) != 0)
        return -1;
    return 0;
}

/* ---- where the pages are ---- */

#ifndef GS_DATADIR
#define GS_DATADIR "share"
#endif

const char *gs_worklist_web_dir(const char *configured)
{
    if (configured && *configured)
        return configured;
    /* Found from the program's own place, so one build serves the right pages wherever it is
     * installed (cmake --install --prefix decides that after the build). */
    static char dir[PATH_MAX];
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return "/usr/" GS_DATADIR "/gastroscreen/web";
    exe[n] = '\0';
#if defined(GS_WEB_SOURCE_DIR) && defined(GS_BUILD_DIR)
    /* A program of the build tree serves the pages of the source tree it was built from, so a
     * change to a page shows without installing (and never a stale installed copy). */
    size_t b = strlen(GS_BUILD_DIR);
    if (!strncmp(exe, GS_BUILD_DIR, b) && exe[b] == '/')
        return GS_WEB_SOURCE_DIR;
#endif
    /* PREFIX/bin/program -> PREFIX/share/gastroscreen/web */
    char *slash = strrchr(exe, '/');
    if (slash)
        *slash = '\0';
    slash = strrchr(exe, '/');
    if (slash)
        *slash = '\0';
    int len = snprintf(dir, sizeof dir, "%s/%s/gastroscreen/web", slash ? exe : "/usr", GS_DATADIR);
    return len > 0 && (size_t)len < sizeof dir ? dir : "/usr/" GS_DATADIR "/gastroscreen/web";
}
