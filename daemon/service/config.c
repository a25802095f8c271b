#include "daemon/service/config.h"

#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ops/error.h"

typedef enum { T_STR, T_U32, T_F64, T_DUR, T_ROOTS } key_type;

/* One known key: where it goes, its default (parsed by the same code as the file, so the
 * defaults are validated too) and its range. */
typedef struct {
    const char *section, *key;
    key_type type;
    size_t offset;
    const char *def;
    double min, max; /* numbers; durations in ms */
} key_def;

#define O(f) offsetof(gs_config, f)
#define DAY (86400.0 * 1000.0)

static const key_def KEYS[] = {
    {"coordinator", "intake", T_STR, O(intake), "tcp://*:5550", 0, 0},
    {"coordinator", "intake_connect", T_STR, O(intake_connect), "", 0, 0},
    {"coordinator", "submit", T_STR, O(submit), "tcp://*:5551", 0, 0},
    {"coordinator", "query", T_STR, O(query), "tcp://*:5552", 0, 0},
    {"coordinator", "events", T_STR, O(events), "tcp://*:5553", 0, 0},
    {"coordinator", "work", T_STR, O(work), "tcp://*:5554", 0, 0},
    {"coordinator", "journal_dir", T_STR, O(journal_dir), "/var/lib/gastroscreen/journal", 0, 0},
    {"coordinator", "spool_dir", T_STR, O(spool_dir), "/var/lib/gastroscreen/spool", 0, 0},
    {"coordinator", "metrics", T_STR, O(metrics), "127.0.0.1:9464", 0, 0},
    {"coordinator", "heartbeat_ms", T_U32, O(heartbeat_ms), "1000", 100, 60000},
    {"coordinator", "liveness", T_U32, O(liveness), "5", 2, 100},
    {"coordinator", "max_slides_in_flight", T_U32, O(max_slides_in_flight), "2", 1, 64},
    {"coordinator", "tiles_per_job", T_U32, O(tiles_per_job), "16", 1, 1024},
    {"coordinator", "journal_retention", T_DUR, O(journal_retention_ms), "7d", 60000, 3650 * DAY},
    {"coordinator", "tile_stall_timeout", T_DUR, O(tile_stall_timeout_ms), "120s", 1000, DAY},
    {"coordinator", "loss_grace", T_DUR, O(loss_grace_ms), "15s", 0, DAY},
    {"coordinator", "plan_timeout", T_DUR, O(plan_timeout_ms), "300s", 1000, DAY},
    {"coordinator", "screen_timeout", T_DUR, O(screen_timeout_ms), "60s", 1000, DAY},
    {"coordinator", "report_timeout", T_DUR, O(report_timeout_ms), "300s", 1000, DAY},
    {"coordinator", "tile_max_requests", T_U32, O(tile_max_requests), "3", 1, 100},
    {"coordinator", "job_max_sends", T_U32, O(job_max_sends), "3", 1, 100},
    {"coordinator", "poison_limit", T_U32, O(poison_limit), "3", 1, 100},
    {"coordinator", "max_attempts", T_U32, O(max_attempts), "5", 1, 100},
    {"coordinator", "max_error_fraction", T_F64, O(max_error_fraction), "0.05", 0, 1},
    {"intake", "slide_roots", T_ROOTS, O(slide_roots), "/srv/slides", 0, 0},
    {"intake", "watch_dir", T_STR, O(watch_dir), "", 0, 0},
    {"intake", "watch_settle", T_DUR, O(watch_settle_ms), "5s", 0, DAY},
    {"model", "bundle", T_STR, O(bundle), "/usr/share/gastroscreen/default.safetensors", 0, 0},
    {"foreground", "threads", T_U32, O(foreground_threads), "1", 1, 256},
    {"foreground", "target_mpp", T_F64, O(target_mpp), "0.5", 0.05, 10},
    {"foreground", "tile_size", T_U32, O(tile_size), "512", 64, 4096},
    {"foreground", "stride", T_U32, O(stride), "512", 16, 4096},
    {"foreground", "default_mpp", T_F64, O(default_mpp), "0.25", 0.05, 10},
    {"foreground", "min_tissue_fraction", T_F64, O(min_tissue_fraction), "0.25", 0, 1},
    {"foreground", "thumbnail_size", T_U32, O(thumbnail_size), "512", 64, 8192},
    {"foreground", "mask_mpp", T_F64, O(mask_mpp), "4", 0.5, 64},
    {"foreground", "mask_max_dim", T_U32, O(mask_max_dim), "4096", 256, 16384},
    {"tiler", "threads", T_U32, O(tiler_threads), "2", 1, 256},
    {"tiler", "tile_hwm", T_U32, O(tile_hwm), "8", 4, 16},
    {"blur", "threads", T_U32, O(blur_threads), "1", 1, 256},
    {"blur", "batch", T_U32, O(blur_batch), "8", 1, 1024},
    {"blur", "blur_sample", T_U32, O(blur_sample), "32", 1, 4096},
    {"blur", "blur_min_valid", T_U32, O(blur_min_valid), "8", 1, 4096},
    {"blur", "blur_slide_fraction", T_F64, O(blur_slide_fraction), "0.5", 0, 1},
    {"blur", "focus_threshold", T_F64, O(focus_threshold), "0", 0, 1e9},
    {"blur", "tile_inbox", T_STR, O(blur_tile_inbox), "tcp://*:*", 0, 0},
    {"blur", "advertise_host", T_STR, O(blur_advertise_host), "", 0, 0},
    {"infer", "threads", T_U32, O(infer_threads), "2", 1, 256},
    {"infer", "batch", T_U32, O(infer_batch), "4", 1, 1024},
    {"infer", "heatmap_size", T_U32, O(heatmap_size), "16", 1, 512},
    {"infer", "tile_inbox", T_STR, O(infer_tile_inbox), "tcp://*:*", 0, 0},
    {"infer", "advertise_host", T_STR, O(infer_advertise_host), "", 0, 0},
    {"screener", "threads", T_U32, O(screener_threads), "1", 1, 256},
    {"screener", "threshold", T_F64, O(threshold), "0.74", 0, 1},
    {"screener", "top_k", T_U32, O(top_k), "64", 1, 4096},
    {"reporter", "threads", T_U32, O(reporter_threads), "1", 1, 256},
    {"reporter", "report_dir", T_STR, O(report_dir), "/var/lib/gastroscreen/reports", 0, 0},
};
#define N_KEYS (sizeof KEYS / sizeof KEYS[0])

size_t gs_config_key_count(void)
{
    return N_KEYS;
}

int gs_config_key(size_t i, const char **section, const char **key)
{
    if (i >= N_KEYS)
        return -1;
    *section = KEYS[i].section;
    *key = KEYS[i].key;
    return 0;
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
    } units[] = {{"", 1000}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(end, units[i].unit) == 0) {
            double r = v * units[i].ms;
            if (r > 9.0e15)
                return gs_error_set("\"%s\" is too long a duration", text);
            *ms = (int64_t)llround(r);
            return 0;
        }
    }
    return gs_error_set("\"%s\": unknown unit (ms, s, m, h, d)", text);
}

static void free_roots(gs_config *c)
{
    for (size_t i = 0; i < c->n_slide_roots; i++)
        free(c->slide_roots[i]);
    free(c->slide_roots);
    c->slide_roots = NULL;
    c->n_slide_roots = 0;
}

/* Adds the whitespace-separated absolute folders of text to the roots. */
static int add_roots(gs_config *c, const char *text)
{
    const char *p = text;
    while (*p) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p)
            break;
        size_t n = strcspn(p, " \t");
        if (p[0] != '/')
            return gs_error_set("\"%.*s\" is not an absolute path", (int)n, p);
        char **r = realloc(c->slide_roots, (c->n_slide_roots + 1) * sizeof *r);
        if (!r)
            return gs_error_set("out of memory");
        c->slide_roots = r;
        r[c->n_slide_roots] = strndup(p, n);
        if (!r[c->n_slide_roots])
            return gs_error_set("out of memory");
        c->n_slide_roots++;
        p += n;
    }
    return 0;
}

int gs_config_set_string(char **field, const char *value)
{
    char *s = strdup(value);
    if (!s)
        return gs_error_set("out of memory");
    free(*field);
    *field = s;
    return 0;
}

static int set_value(gs_config *c, const key_def *k, const char *value)
{
    char *field = (char *)c + k->offset;
    char *end = NULL;
    switch (k->type) {
    case T_STR:
        return gs_config_set_string((char **)field, value);
    case T_ROOTS:
        return add_roots(c, value);
    case T_U32: {
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (!*value || *end || errno != 0)
            return gs_error_set("\"%s\" is not a whole number", value);
        if ((double)v < k->min || (double)v > k->max)
            return gs_error_set("%lld is out of range %.0f..%.0f", v, k->min, k->max);
        *(uint32_t *)field = (uint32_t)v;
        return 0;
    }
    case T_F64: {
        errno = 0;
        double v = strtod(value, &end);
        if (!*value || *end || errno != 0 || !isfinite(v))
            return gs_error_set("\"%s\" is not a number", value);
        if (v < k->min || v > k->max)
            return gs_error_set("%g is out of range %g..%g", v, k->min, k->max);
        *(double *)field = v;
        return 0;
    }
    case T_DUR: {
        int64_t ms = 0;
        if (gs_config_parse_duration(value, &ms) != 0)
            return -1;
        if ((double)ms < k->min || (double)ms > k->max)
            return gs_error_set("%s is out of range %gs..%gs", value, k->min / 1000, k->max / 1000);
        *(int64_t *)field = ms;
        return 0;
    }
    }
    return gs_error_set("unknown key type");
}

/* What the inih callback needs: the config, which keys the file set (to refuse a key set
 * twice), and the first error, which inih reports only by line number. */
typedef struct {
    gs_config *c;
    unsigned char seen[N_KEYS];
    const char *last_key; /* inih repeats the name for continuation lines */
    char error[1200];
} load_state;

static int on_key(void *user, const char *section, const char *name, const char *value)
{
    load_state *st = user;
    const key_def *k = NULL;
    size_t i;
    int section_known = 0;
    for (i = 0; i < N_KEYS; i++) {
        if (strcmp(KEYS[i].section, section) != 0)
            continue;
        section_known = 1;
        if (strcmp(KEYS[i].key, name) == 0) {
            k = &KEYS[i];
            break;
        }
    }
    int rc = 0;
    if (!*section) {
        rc = gs_error_set("%s: key outside a section", name);
    } else if (!section_known) {
        rc = gs_error_set("[%s]: unknown section", section);
    } else if (!k) {
        rc = gs_error_set("[%s] %s: unknown key", section, name);
    } else if (st->seen[i] && !(k->type == T_ROOTS && st->last_key == k->key)) {
        rc = gs_error_set("[%s] %s: set twice", section, name);
    } else {
        if (k->type == T_ROOTS && !st->seen[i])
            free_roots(st->c); /* the file replaces the default list */
        st->seen[i] = 1;
        if (set_value(st->c, k, value) != 0)
            rc = gs_error_prefix("[%s] %s", section, name);
    }
    st->last_key = k ? k->key : NULL;
    if (rc == 0)
        return 1;
    if (!st->error[0])
        snprintf(st->error, sizeof st->error, "%s", gs_error_get());
    return 0;
}

gs_config *gs_config_new(void)
{
    gs_config *c = calloc(1, sizeof *c);
    if (!c) {
        gs_error_set("config: out of memory");
        return NULL;
    }
    for (size_t i = 0; i < N_KEYS; i++) {
        /* A GS_ASSERT would do for a bad default, but allocation can fail too. */
        if (set_value(c, &KEYS[i], KEYS[i].def) != 0) {
            gs_error_prefix("config: default of [%s] %s", KEYS[i].section, KEYS[i].key);
            gs_config_destroy(&c);
            return NULL;
        }
    }
    return c;
}

void gs_config_destroy(gs_config **cp)
{
    if (!cp || !*cp)
        return;
    gs_config *c = *cp;
    for (size_t i = 0; i < N_KEYS; i++)
        if (KEYS[i].type == T_STR) {
            char **f = (char **)((char *)c + KEYS[i].offset);
            free(*f);
        }
    free_roots(c);
    free(c);
    *cp = NULL;
}

int gs_config_load(gs_config *c, const char *path)
{
    load_state st = {.c = c};
    FILE *f = fopen(path, "r");
    if (!f)
        return gs_error_set("%s: %s", path, strerror(errno));
    /* inih reads lines into a fixed buffer and parses the rest of a longer line as a line of
     * its own, so a long value would be cut and the error land on the wrong line: refuse long
     * lines here, with their own number. */
    char *text = NULL;
    size_t cap = 0;
    ssize_t len;
    for (int n = 1; (len = getline(&text, &cap, f)) >= 0; n++) {
        if (len > 0 && text[len - 1] == '\n')
            len--;
        if (len > GS_CONFIG_MAX_LINE) {
            free(text);
            fclose(f);
            return gs_error_set("%s:%d: line longer than %d characters", path, n,
                                GS_CONFIG_MAX_LINE);
        }
    }
    free(text);
    rewind(f);
    int line = ini_parse_file(f, on_key, &st);
    fclose(f);
    if (line != 0) {
        if (line < 0)
            return gs_error_set("%s: cannot parse (out of memory)", path);
        if (st.error[0])
            return gs_error_set("%s:%d: %s", path, line, st.error);
        return gs_error_set("%s:%d: syntax error (expected [section] or key = value)", path, line);
    }
    if (c->blur_min_valid > c->blur_sample)
        return gs_error_set("%s: [blur] blur_min_valid (%u) exceeds blur_sample (%u)", path,
                            c->blur_min_valid, c->blur_sample);
    if (c->stride > c->tile_size)
        return gs_error_set("%s: [foreground] stride (%u) exceeds tile_size (%u): tiles would "
                            "leave gaps",
                            path, c->stride, c->tile_size);
    if (!c->journal_dir[0] || c->journal_dir[0] != '/')
        return gs_error_set("%s: [coordinator] journal_dir must be an absolute path", path);
    return 0;
}
