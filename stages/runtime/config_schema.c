#include "stages/runtime/config_schema.h"

#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/error.h"

#define SEC 1000.0
/* tile_size must be a multiple of this: the multi-task network (DLA-34) halves its input five
 * times (model/network.h: multitask states need multiples of 32). */
#define TILE_MULTIPLE 32
#define DAY (86400.0 * SEC)

/* Indexed by key, so the table cannot drift from the enumeration; gs_config_schema_default()
 * asserts every entry is filled. The ranges are a lab's: heartbeat_ms below 100 ms would make
 * the coordinator poll and every worker heartbeat as fast as it can, and liveness 1 would count
 * a worker lost on its first late heartbeat. */
static const gs_config_key_info KEYS[GS_CFG_KEY_COUNT] = {
    [GS_CFG_COORDINATOR_INTAKE] = {"coordinator", "intake", GS_CONFIG_STRING, "tcp://*:5550", 0, 0,
                                   "intake of slide.arrived. announcements (SUB)"},
    [GS_CFG_COORDINATOR_INTAKE_CONNECT] = {"coordinator", "intake_connect", GS_CONFIG_STRING, "", 0,
                                           0, "announcer PUB endpoints to connect to as well"},
    [GS_CFG_COORDINATOR_SUBMIT] = {"coordinator", "submit", GS_CONFIG_STRING, "tcp://*:5551", 0, 0,
                                   "gastroscreen submit (ROUTER; the reliable intake path)"},
    [GS_CFG_COORDINATOR_QUERY] = {"coordinator", "query", GS_CONFIG_STRING, "tcp://*:5552", 0, 0,
                                  "queries: events since N, state of a slide"},
    [GS_CFG_COORDINATOR_EVENTS] = {"coordinator", "events", GS_CONFIG_STRING, "tcp://*:5553", 0, 0,
                                   "events (PUB)"},
    [GS_CFG_COORDINATOR_WORK] = {"coordinator", "work", GS_CONFIG_STRING, "tcp://*:5554", 0, 0,
                                 "jobs and results of every stage worker (ROUTER)"},
    [GS_CFG_COORDINATOR_JOURNAL_DIR] = {"coordinator", "journal_dir", GS_CONFIG_PATH,
                                        "/var/lib/gastroscreen/journal", 0, 0,
                                        "journal of slide records and events"},
    [GS_CFG_COORDINATOR_SPOOL_DIR] = {"coordinator", "spool_dir", GS_CONFIG_STRING,
                                      "/var/lib/gastroscreen/spool", 0, 0,
                                      "per-slide working files"},
    [GS_CFG_COORDINATOR_METRICS] =
        {"coordinator", "metrics", GS_CONFIG_STRING, "127.0.0.1:9464", 0, 0,
         "HTTP listen address (/metrics, worklist, viewer); empty = off"},
    [GS_CFG_COORDINATOR_HTTP_TOKEN_FILE] = {"coordinator", "http_token_file", GS_CONFIG_STRING, "",
                                            0, 0,
                                            "file holding the HTTP token; required off loopback"},
    [GS_CFG_COORDINATOR_WEB_DIR] = {"coordinator", "web_dir", GS_CONFIG_STRING, "", 0, 0,
                                    "the web pages' folder; empty = the installed one"},
    [GS_CFG_COORDINATOR_HEARTBEAT_MS] = {"coordinator", "heartbeat_ms", GS_CONFIG_COUNT, "1000",
                                         100, 60000, "worker heartbeat period, milliseconds"},
    [GS_CFG_COORDINATOR_LIVENESS] = {"coordinator", "liveness", GS_CONFIG_COUNT, "5", 2, 100,
                                     "missed heartbeats before a peer counts as lost"},
    [GS_CFG_COORDINATOR_MAX_SLIDES_IN_FLIGHT] = {"coordinator", "max_slides_in_flight",
                                                 GS_CONFIG_COUNT, "2", 1, 64,
                                                 "slides whose tiles are in flight at once"},
    [GS_CFG_COORDINATOR_TILES_PER_JOB] = {"coordinator", "tiles_per_job", GS_CONFIG_COUNT, "16", 1,
                                          1024, "tiles per TileJob sent to a tiler"},
    [GS_CFG_COORDINATOR_JOURNAL_RETENTION] = {"coordinator", "journal_retention",
                                              GS_CONFIG_DURATION, "7d", 60 * SEC, 3650 * DAY,
                                              "finished slides' events and records are kept"},
    [GS_CFG_COORDINATOR_TILE_STALL_TIMEOUT] = {"coordinator", "tile_stall_timeout",
                                               GS_CONFIG_DURATION, "120s", SEC, DAY,
                                               "no result this long: tiles are asked again"},
    [GS_CFG_COORDINATOR_LOSS_GRACE] = {"coordinator", "loss_grace", GS_CONFIG_DURATION, "15s", 0,
                                       DAY, "a lost worker's tiles are asked again after this"},
    [GS_CFG_COORDINATOR_PLAN_TIMEOUT] = {"coordinator", "plan_timeout", GS_CONFIG_DURATION, "300s",
                                         SEC, DAY, "deadline of a plan job"},
    [GS_CFG_COORDINATOR_SCREEN_TIMEOUT] = {"coordinator", "screen_timeout", GS_CONFIG_DURATION,
                                           "60s", SEC, DAY, "deadline of a screen job"},
    [GS_CFG_COORDINATOR_REPORT_TIMEOUT] = {"coordinator", "report_timeout", GS_CONFIG_DURATION,
                                           "300s", SEC, DAY, "deadline of a report job"},
    [GS_CFG_COORDINATOR_TILE_MAX_REQUESTS] = {"coordinator", "tile_max_requests", GS_CONFIG_COUNT,
                                              "3", 1, 100,
                                              "requests of one tile before it is an error"},
    [GS_CFG_COORDINATOR_JOB_MAX_SENDS] = {"coordinator", "job_max_sends", GS_CONFIG_COUNT, "3", 1,
                                          100, "sends of one job before the slide fails"},
    [GS_CFG_COORDINATOR_POISON_LIMIT] = {"coordinator", "poison_limit", GS_CONFIG_COUNT, "3", 1,
                                         100, "lost workers holding a slide before quarantine"},
    [GS_CFG_COORDINATOR_MAX_ATTEMPTS] = {"coordinator", "max_attempts", GS_CONFIG_COUNT, "5", 1,
                                         100, "restarts with a slide in flight before quarantine"},
    [GS_CFG_COORDINATOR_MAX_ERROR_FRACTION] = {"coordinator", "max_error_fraction",
                                               GS_CONFIG_NUMBER, "0.05", 0, 1,
                                               "share of tiles that may fail before the slide"},
    [GS_CFG_INTAKE_SLIDE_ROOTS] = {"intake", "slide_roots", GS_CONFIG_FOLDERS, "/srv/slides", 0, 0,
                                   "folders slides may come from"},
    [GS_CFG_INTAKE_WATCH_DIR] = {"intake", "watch_dir", GS_CONFIG_STRING, "", 0, 0,
                                 "watched folder; empty = none"},
    [GS_CFG_INTAKE_WATCH_SETTLE] = {"intake", "watch_settle", GS_CONFIG_DURATION, "5s", 0, DAY,
                                    "a watched file is taken once stable this long"},
    [GS_CFG_MODEL_BUNDLE] = {"model", "bundle", GS_CONFIG_STRING,
                             "/usr/share/gastroscreen/default.safetensors", 0, 0,
                             "the model bundle (safetensors)"},
    [GS_CFG_FOREGROUND_THREADS] = {"foreground", "threads", GS_CONFIG_COUNT, "1", 1, 256,
                                   "foreground worker threads"},
    [GS_CFG_FOREGROUND_TARGET_MPP] = {"foreground", "target_mpp", GS_CONFIG_NUMBER, "0.5", 0.05, 10,
                                      "resolution of the tiles, microns per pixel"},
    /* 1672: the largest square RGB tile under the tile socket's 8 MiB message cap (the tiler
     * refuses larger ones, stages/handlers/tiler.c); a multiple of 32 (checked below). */
    [GS_CFG_FOREGROUND_TILE_SIZE] = {"foreground", "tile_size", GS_CONFIG_COUNT, "512", 64, 1672,
                                     "tile side, pixels at target_mpp; a multiple of 32"},
    [GS_CFG_FOREGROUND_STRIDE] = {"foreground", "stride", GS_CONFIG_COUNT, "512", 64, 1672,
                                  "window step, pixels; must equal tile_size"},
    [GS_CFG_FOREGROUND_DEFAULT_MPP] = {"foreground", "default_mpp", GS_CONFIG_NUMBER, "0.25", 0.05,
                                       10, "microns per pixel of a slide that does not say"},
    [GS_CFG_FOREGROUND_MIN_TISSUE_FRACTION] = {"foreground", "min_tissue_fraction",
                                               GS_CONFIG_NUMBER, "0.25", 0, 1,
                                               "tissue share below which a tile is background"},
    [GS_CFG_FOREGROUND_THUMBNAIL_SIZE] = {"foreground", "thumbnail_size", GS_CONFIG_COUNT, "512",
                                          64, 8192, "thumbnail side for the foreground network"},
    [GS_CFG_FOREGROUND_MASK_MPP] = {"foreground", "mask_mpp", GS_CONFIG_NUMBER, "4", 0.5, 64,
                                    "tissue mask resolution, microns per pixel"},
    [GS_CFG_FOREGROUND_MASK_MAX_DIM] = {"foreground", "mask_max_dim", GS_CONFIG_COUNT, "4096", 256,
                                        16384, "cap on the tissue mask's longer side, pixels"},
    /* The plan's work caps (stages/slide/tissue, stages/handlers/foreground). */
    [GS_CFG_FOREGROUND_MAX_SLIDE_MPX] = {"foreground", "max_slide_mpx", GS_CONFIG_NUMBER, "100000",
                                         1, 1e7, "largest slide planned, megapixels at level 0"},
    [GS_CFG_FOREGROUND_MAX_THUMBNAIL_MPX] = {"foreground", "max_thumbnail_mpx", GS_CONFIG_NUMBER,
                                             "1000", 1, 1e5,
                                             "largest level a plan reads its thumbnail from, "
                                             "megapixels"},
    [GS_CFG_FOREGROUND_PLAN_BUDGET] = {"foreground", "plan_budget", GS_CONFIG_DURATION, "120s", SEC,
                                       DAY, "a plan still reading the slide after this fails"},
    [GS_CFG_TILER_THREADS] = {"tiler", "threads", GS_CONFIG_COUNT, "2", 1, 256,
                              "tiler threads (one OpenSlide handle each)"},
    [GS_CFG_TILER_TILE_HWM] = {"tiler", "tile_hwm", GS_CONFIG_COUNT, "8", 4, 16,
                               "high-water mark of the tile PUSH sockets"},
    [GS_CFG_BLUR_THREADS] = {"blur", "threads", GS_CONFIG_COUNT, "1", 1, 256,
                             "blur worker threads"},
    [GS_CFG_BLUR_BATCH] = {"blur", "batch", GS_CONFIG_COUNT, "8", 1, 1024, "tiles per batch"},
    [GS_CFG_BLUR_BLUR_SAMPLE] = {"blur", "blur_sample", GS_CONFIG_COUNT, "32", 1, 4096,
                                 "sample tiles of the blur-first check"},
    [GS_CFG_BLUR_BLUR_MIN_VALID] = {"blur", "blur_min_valid", GS_CONFIG_COUNT, "8", 1, 4096,
                                    "sample tiles that must be judged"},
    [GS_CFG_BLUR_BLUR_SLIDE_FRACTION] = {"blur", "blur_slide_fraction", GS_CONFIG_NUMBER, "0.5", 0,
                                         1,
                                         "blurry share of tissue tiles above which a slide is "
                                         "unassessable; unset = the bundle's"},
    [GS_CFG_BLUR_EVERY_TILE] = {"blur", "every_tile", GS_CONFIG_COUNT, "1", 0, 1,
                                "1 = judge every tissue tile's focus before inference"},
    /* Real tiles score up to a few thousand on the classical measure (ops/focus.h), under 1 on
     * the network's: a larger threshold is a typing error. */
    [GS_CFG_BLUR_FOCUS_THRESHOLD] = {"blur", "focus_threshold", GS_CONFIG_NUMBER, "0", 0, 100000,
                                     "focus below which a tile is blurry; 0 = built in"},
    /* A share of the crop's pixels; 0 is a meaningful setting (the rule off), so only an
     * explicit key overrides the bundle. */
    [GS_CFG_BLUR_SPARSE_TISSUE] = {"blur", "sparse_tissue", GS_CONFIG_NUMBER, "0", 0, 1,
                                   "tissue share under which the blur network's crop is also "
                                   "judged classically; 0 = off; unset = the bundle's"},
    [GS_CFG_BLUR_TILE_INBOX] = {"blur", "tile_inbox", GS_CONFIG_STRING, "tcp://*:*", 0, 0,
                                "where to bind the tile inbox"},
    [GS_CFG_BLUR_ADVERTISE_HOST] = {"blur", "advertise_host", GS_CONFIG_STRING, "", 0, 0,
                                    "host tilers connect to; empty = this host's name"},
    [GS_CFG_INFER_THREADS] = {"infer", "threads", GS_CONFIG_COUNT, "2", 1, 256,
                              "multi-task network worker threads"},
    [GS_CFG_INFER_BATCH] = {"infer", "batch", GS_CONFIG_COUNT, "4", 1, 1024, "tiles per batch"},
    [GS_CFG_INFER_HEATMAP_SIZE] = {"infer", "heatmap_size", GS_CONFIG_COUNT, "64", 1, 512,
                                   "side of the per-tile heatmap"},
    [GS_CFG_INFER_CONTEXT] = {"infer", "context", GS_CONFIG_COUNT, "0", 0, 256,
                              "target pixels of context around each tile (multiple of 16)"},
    [GS_CFG_INFER_TILE_INBOX] = {"infer", "tile_inbox", GS_CONFIG_STRING, "tcp://*:*", 0, 0,
                                 "where to bind the tile inbox"},
    [GS_CFG_INFER_ADVERTISE_HOST] = {"infer", "advertise_host", GS_CONFIG_STRING, "", 0, 0,
                                     "host tilers connect to; empty = this host's name"},
    [GS_CFG_INFER_PRECISION] =
        {"infer", "precision", GS_CONFIG_STRING, "", 0, 0,
         "fp32, bf16 or int8; empty = the fastest the CPU runs natively whose budget the bundle "
         "records as met, else fp32 (gs_precision_default)"},
    [GS_CFG_SCREENER_THREADS] = {"screener", "threads", GS_CONFIG_COUNT, "1", 1, 256,
                                 "screener worker threads"},
    [GS_CFG_SCREENER_THRESHOLD] = {"screener", "threshold", GS_CONFIG_NUMBER, "0.74", 0, 1,
                                   "positive above this; unset = the bundle's threshold.screen"},
    [GS_CFG_SCREENER_TOP_K] = {"screener", "top_k", GS_CONFIG_COUNT, "64", 1, 4096,
                               "screener rows (top tiles); unset = the bundle's topk"},
    [GS_CFG_REPORTER_THREADS] = {"reporter", "threads", GS_CONFIG_COUNT, "1", 1, 256,
                                 "reporter worker threads"},
    [GS_CFG_REPORTER_REPORT_DIR] = {"reporter", "report_dir", GS_CONFIG_STRING,
                                    "/var/lib/gastroscreen/reports", 0, 0,
                                    "report folder for jobs without one"},
    /* PROTOCOL.md §2: CURVE on every tcp:// socket unless the lab says off; an empty key file
     * is the keys folder's coordinator.key, coordinator.pub, node.key or client.key. */
    [GS_CFG_SECURITY_SECURITY] = {"security", "security", GS_CONFIG_STRING, "curve", 0, 0,
                                  "curve (keys required off loopback) or off (plain, warned)"},
    [GS_CFG_SECURITY_KEYS_DIR] = {"security", "keys_dir", GS_CONFIG_PATH, "/etc/gastroscreen/keys",
                                  0, 0, "the keys folder: listed public keys, own key files"},
    [GS_CFG_SECURITY_COORDINATOR_KEY] = {"security", "coordinator_key", GS_CONFIG_STRING, "", 0, 0,
                                         "gastroscreend's secret key file; empty = keys_dir's"},
    [GS_CFG_SECURITY_COORDINATOR_PUBLIC] = {"security", "coordinator_public", GS_CONFIG_STRING, "",
                                            0, 0,
                                            "coordinator public key file; empty = keys_dir's"},
    [GS_CFG_SECURITY_WORKER_KEY] = {"security", "worker_key", GS_CONFIG_STRING, "", 0, 0,
                                    "stage workers' secret key file; empty = keys_dir's"},
    [GS_CFG_SECURITY_CLIENT_KEY] = {"security", "client_key", GS_CONFIG_STRING, "", 0, 0,
                                    "client commands' secret key; empty = keys_dir's"},
};

const gs_config_key_info *gs_config_schema_key(gs_config_key_id k)
{
    if ((unsigned)k >= GS_CFG_KEY_COUNT)
        return NULL;
    return &KEYS[k];
}

int gs_config_schema_find(const char *section, const char *name, gs_config_key_id *k)
{
    for (int i = 0; i < GS_CFG_KEY_COUNT; i++)
        if (!strcmp(KEYS[i].section, section) && !strcmp(KEYS[i].name, name)) {
            *k = (gs_config_key_id)i;
            return 0;
        }
    return -1;
}

/* "7d", "2m", "250ms": the largest unit that divides the duration; "0s" for none. */
static void format_duration(double ms, char *buf, size_t size)
{
    if (ms == 0) {
        snprintf(buf, size, "0s");
        return;
    }
    static const struct {
        const char *unit;
        double ms;
    } units[] = {{"d", DAY}, {"h", 3600 * SEC}, {"m", 60 * SEC}, {"s", SEC}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (fmod(ms, units[i].ms) == 0) {
            snprintf(buf, size, "%.0f%s", ms / units[i].ms, units[i].unit);
            return;
        }
    snprintf(buf, size, "%.0fms", ms);
}

char *gs_config_schema_range(gs_config_key_id k, char *buf, size_t size)
{
    const gs_config_key_info *i = gs_config_schema_key(k);
    GS_ASSERT(i && size > 0);
    buf[0] = '\0';
    switch (i->type) {
    case GS_CONFIG_COUNT:
        snprintf(buf, size, "%.0f..%.0f", i->min, i->max);
        break;
    case GS_CONFIG_NUMBER:
        snprintf(buf, size, "%g..%g", i->min, i->max);
        break;
    case GS_CONFIG_DURATION: {
        char lo[32], hi[32];
        format_duration(i->min, lo, sizeof lo);
        format_duration(i->max, hi, sizeof hi);
        snprintf(buf, size, "%s..%s", lo, hi);
        break;
    }
    case GS_CONFIG_STRING:
    case GS_CONFIG_PATH:
    case GS_CONFIG_FOLDERS:
        break;
    }
    return buf;
}

int gs_config_parse_duration(const char *text, int64_t *ms)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(text, &end);
    if (end == text || errno != 0 || !isfinite(v) || v < 0)
        return gs_error_set("\"%s\" is not a duration (e.g. 500ms, 15s, 5m, 2h, 7d)", text);
    static const struct {
        const char *unit;
        double ms;
    } units[] = {{"", SEC}, {"ms", 1}, {"s", SEC}, {"m", 60 * SEC}, {"h", 3600 * SEC}, {"d", DAY}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(end, units[i].unit) == 0) {
            double r = v * units[i].ms;
            /* int64_t holds it, and llround is exact below 2^53. */
            if (r > 9.0e15)
                return gs_error_set("\"%s\" is too long a duration", text);
            *ms = (int64_t)llround(r);
            return 0;
        }
    }
    return gs_error_set("\"%s\": unknown unit (ms, s, m, h, d)", text);
}

/* Every whitespace-separated word of text is an absolute path. */
static int check_folders(const char *text)
{
    const char *p = text;
    while (*p) {
        p += strspn(p, " \t");
        if (!*p)
            break;
        size_t n = strcspn(p, " \t");
        if (p[0] != '/')
            return gs_error_set("\"%.*s\" is not an absolute path", (int)n, p);
        p += n;
    }
    return 0;
}

int gs_config_schema_parse(gs_config_key_id k, const char *text, gs_config_value *out)
{
    const gs_config_key_info *i = gs_config_schema_key(k);
    GS_ASSERT(i);
    char range[64];
    char *end = NULL;
    memset(out, 0, sizeof *out);
    out->text = text;
    switch (i->type) {
    case GS_CONFIG_STRING:
        if (k == GS_CFG_SECURITY_SECURITY && strcmp(text, "curve") && strcmp(text, "off"))
            return gs_error_set("\"%s\" is neither curve nor off", text);
        /* The names of model/network.h gs_precision_parse; stages do not parse them twice. */
        if (k == GS_CFG_INFER_PRECISION && text[0] && strcmp(text, "fp32") &&
            strcmp(text, "bf16") && strcmp(text, "int8"))
            return gs_error_set("\"%s\" is none of fp32, bf16, int8", text);
        if (k >= GS_CFG_SECURITY_COORDINATOR_KEY && k <= GS_CFG_SECURITY_CLIENT_KEY && text[0] &&
            text[0] != '/')
            return gs_error_set("\"%s\" is not an absolute path", text);
        return 0;
    case GS_CONFIG_PATH:
        if (text[0] != '/')
            return gs_error_set("\"%s\" is not an absolute path", text);
        return 0;
    case GS_CONFIG_FOLDERS:
        return check_folders(text);
    case GS_CONFIG_COUNT: {
        errno = 0;
        long long v = strtoll(text, &end, 10);
        if (!*text || *end || errno != 0)
            return gs_error_set("\"%s\" is not a whole number", text);
        if ((double)v < i->min || (double)v > i->max)
            return gs_error_set("%lld is out of range %s", v,
                                gs_config_schema_range(k, range, sizeof range));
        out->count = (uint32_t)v;
        return 0;
    }
    case GS_CONFIG_NUMBER: {
        errno = 0;
        double v = strtod(text, &end);
        if (!*text || *end || errno != 0 || !isfinite(v))
            return gs_error_set("\"%s\" is not a number", text);
        if (v < i->min || v > i->max)
            return gs_error_set("%g is out of range %s", v,
                                gs_config_schema_range(k, range, sizeof range));
        out->number = v;
        return 0;
    }
    case GS_CONFIG_DURATION: {
        int64_t ms = 0;
        if (gs_config_parse_duration(text, &ms) != 0)
            return -1;
        if ((double)ms < i->min || (double)ms > i->max)
            return gs_error_set("%s is out of range %s", text,
                                gs_config_schema_range(k, range, sizeof range));
        out->ms = ms;
        return 0;
    }
    }
    return gs_error_set("[%s] %s: unknown key type", i->section, i->name);
}

gs_config_value gs_config_schema_default(gs_config_key_id k)
{
    const gs_config_key_info *i = gs_config_schema_key(k);
    GS_ASSERT(i && i->section && i->name && i->def && i->doc);
    gs_config_value v;
    int rc = gs_config_schema_parse(k, i->def, &v);
    GS_ASSERT(rc == 0);
    return v;
}

/* ------------------------------------------------------------------------------------------ */

typedef struct {
    gs_config_value v;
    char *own; /* v.text of a loaded value; NULL for the default's static text */
    int line;  /* 0: the default */
} slot;

struct gs_config_values {
    slot keys[GS_CFG_KEY_COUNT];
};

gs_config_values *gs_config_values_new(void)
{
    gs_config_values *v = calloc(1, sizeof *v);
    if (!v) {
        gs_error_set("config: out of memory");
        return NULL;
    }
    for (int k = 0; k < GS_CFG_KEY_COUNT; k++)
        v->keys[k].v = gs_config_schema_default((gs_config_key_id)k);
    return v;
}

void gs_config_values_destroy(gs_config_values **vp)
{
    if (!vp || !*vp)
        return;
    for (int k = 0; k < GS_CFG_KEY_COUNT; k++)
        free((*vp)->keys[k].own);
    free(*vp);
    *vp = NULL;
}

const gs_config_value *gs_config_values_get(const gs_config_values *v, gs_config_key_id k)
{
    GS_ASSERT((unsigned)k < GS_CFG_KEY_COUNT);
    return &v->keys[k].v;
}

int gs_config_values_is_set(const gs_config_values *v, gs_config_key_id k)
{
    return gs_config_values_line(v, k) > 0;
}

int gs_config_values_line(const gs_config_values *v, gs_config_key_id k)
{
    GS_ASSERT((unsigned)k < GS_CFG_KEY_COUNT);
    return v->keys[k].line;
}

/* What the inih callback needs: the values, the line being parsed (inih reports a line only
 * for the first error, and the rules joining keys need the line of each), which keys this
 * file set (to refuse a key set twice) and the first error. */
typedef struct {
    gs_config_values *v;
    FILE *f;
    int line;
    int indented; /* the line starts with white space: inih's continuation of a value */
    unsigned char seen[GS_CFG_KEY_COUNT];
    int error_line;
    char error[1024];
} load_state;

static char *read_line(char *str, int num, void *stream)
{
    load_state *st = stream;
    char *r = fgets(str, num, st->f);
    if (r) {
        st->line++;
        st->indented = str[0] == ' ' || str[0] == '\t';
    }
    return r;
}

/* Stores one value of key k; a continuation line adds folders to the list. */
static int store(slot *s, gs_config_key_id k, const char *value, int continued)
{
    gs_config_value parsed;
    if (gs_config_schema_parse(k, value, &parsed) != 0)
        return -1;
    size_t n = strlen(value);
    size_t keep = continued && s->own ? strlen(s->own) : 0;
    char *text = malloc(keep + (keep ? 1 : 0) + n + 1);
    if (!text)
        return gs_error_set("out of memory");
    if (keep) {
        memcpy(text, s->own, keep);
        text[keep++] = ' ';
    }
    memcpy(text + keep, value, n + 1);
    free(s->own);
    s->own = text;
    s->v = parsed;
    s->v.text = text;
    return 0;
}

static int on_key(void *user, const char *section, const char *name, const char *value)
{
    load_state *st = user;
    gs_config_key_id k;
    int rc = 0;
    if (!*section) {
        rc = gs_error_set("%s: key outside a section", name);
    } else if (gs_config_schema_find(section, name, &k) != 0) {
        int section_known = 0;
        for (int i = 0; i < GS_CFG_KEY_COUNT; i++)
            section_known |= !strcmp(KEYS[i].section, section);
        rc = section_known ? gs_error_set("[%s] %s: unknown key", section, name)
                           : gs_error_set("[%s]: unknown section", section);
    } else {
        slot *s = &st->v->keys[k];
        int continued = st->seen[k] && st->indented && KEYS[k].type == GS_CONFIG_FOLDERS;
        if (st->seen[k] && !continued) {
            rc = gs_error_set("[%s] %s: set twice", section, name);
        } else {
            st->seen[k] = 1;
            s->line = st->line;
            if (store(s, k, value, continued) != 0)
                rc = gs_error_prefix("[%s] %s", section, name);
        }
    }
    if (rc == 0)
        return 1;
    if (!st->error_line) {
        st->error_line = st->line;
        snprintf(st->error, sizeof st->error, "%s", gs_error_get());
    }
    return 0;
}

/* "path:12" for a key the file set, "path" for a default. */
static const char *where(char *buf, size_t size, const char *path, int line)
{
    if (line > 0)
        snprintf(buf, size, "%s:%d", path, line);
    else
        snprintf(buf, size, "%s", path);
    return buf;
}

static int later_line(const gs_config_values *v, gs_config_key_id a, gs_config_key_id b)
{
    int la = gs_config_values_line(v, a), lb = gs_config_values_line(v, b);
    return la > lb ? la : lb;
}

/* The rules that join keys, checked once the whole file is read. */
static int check_rules(const gs_config_values *v, const char *path)
{
    char at[4200];
    uint32_t min_valid = v->keys[GS_CFG_BLUR_BLUR_MIN_VALID].v.count;
    uint32_t sample = v->keys[GS_CFG_BLUR_BLUR_SAMPLE].v.count;
    if (min_valid > sample)
        return gs_error_set(
            "%s: [blur] blur_min_valid: %u exceeds blur_sample %u: the check could never judge "
            "enough sample tiles",
            where(at, sizeof at, path,
                  later_line(v, GS_CFG_BLUR_BLUR_MIN_VALID, GS_CFG_BLUR_BLUR_SAMPLE)),
            min_valid, sample);
    uint32_t stride = v->keys[GS_CFG_FOREGROUND_STRIDE].v.count;
    uint32_t tile = v->keys[GS_CFG_FOREGROUND_TILE_SIZE].v.count;
    if (tile % TILE_MULTIPLE)
        return gs_error_set("%s: [foreground] tile_size: %u is not a multiple of %d: the "
                            "multi-task network halves its input five times",
                            where(at, sizeof at, path, v->keys[GS_CFG_FOREGROUND_TILE_SIZE].line),
                            tile, TILE_MULTIPLE);
    uint32_t context = v->keys[GS_CFG_INFER_CONTEXT].v.count;
    if (context % (TILE_MULTIPLE / 2))
        return gs_error_set("%s: [infer] context: %u is not a multiple of %d: the tile with its "
                            "context on both sides must stay a multiple of %d",
                            where(at, sizeof at, path, v->keys[GS_CFG_INFER_CONTEXT].line), context,
                            TILE_MULTIPLE / 2, TILE_MULTIPLE);
    if (stride != tile)
        return gs_error_set(
            "%s: [foreground] stride: %u differs from tile_size %u: overlapping windows are not "
            "supported (the heat map and the tile ledger assume the tiles partition the slide); "
            "set stride = tile_size",
            where(at, sizeof at, path,
                  later_line(v, GS_CFG_FOREGROUND_STRIDE, GS_CFG_FOREGROUND_TILE_SIZE)),
            stride, tile);
    return 0;
}

/* inih reads lines into a fixed buffer and parses the rest of a longer line as a line of its
 * own, so a long value would be cut and the error land on the wrong line: refuse long lines
 * first, with their own number. */
static int check_line_lengths(FILE *f, const char *path)
{
    char *text = NULL;
    size_t cap = 0;
    ssize_t len;
    int rc = 0;
    for (int n = 1; (len = getline(&text, &cap, f)) >= 0; n++) {
        if (len > 0 && text[len - 1] == '\n')
            len--;
        if (len > GS_CONFIG_MAX_LINE) {
            rc = gs_error_set("%s:%d: line longer than %d characters", path, n, GS_CONFIG_MAX_LINE);
            break;
        }
    }
    free(text);
    rewind(f);
    return rc;
}

int gs_config_values_load(gs_config_values *v, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return gs_error_set("%s: %s", path, strerror(errno));
    if (check_line_lengths(f, path) != 0) {
        fclose(f);
        return -1;
    }
    load_state st = {.v = v, .f = f};
    int line = ini_parse_stream(read_line, &st, on_key, &st);
    fclose(f);
    if (line < 0)
        return gs_error_set("%s: cannot parse (out of memory)", path);
    if (line > 0 && line == st.error_line)
        return gs_error_set("%s:%d: %s", path, line, st.error);
    if (line > 0)
        return gs_error_set("%s:%d: syntax error (expected [section] or key = value)", path, line);
    return check_rules(v, path);
}
