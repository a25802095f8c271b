#include "daemon/service/config.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <stdlib.h>
#include <string.h>

#include "daemon/service/slide_table.h"
#include "ops/error.h"

/* Where each schema key lives in gs_config. The size lets gs_config_new() catch a key without
 * a field, or a field of another type than its key's. */
typedef struct {
    size_t offset, size;
} key_field;

#define F(f)                                                                                       \
    {                                                                                              \
        offsetof(gs_config, f), sizeof(((gs_config *)0)->f)                                        \
    }

static const key_field FIELDS[GS_CFG_KEY_COUNT] = {
    [GS_CFG_COORDINATOR_INTAKE] = F(intake),
    [GS_CFG_COORDINATOR_INTAKE_CONNECT] = F(intake_connect),
    [GS_CFG_COORDINATOR_SUBMIT] = F(submit),
    [GS_CFG_COORDINATOR_QUERY] = F(query),
    [GS_CFG_COORDINATOR_EVENTS] = F(events),
    [GS_CFG_COORDINATOR_WORK] = F(work),
    [GS_CFG_COORDINATOR_JOURNAL_DIR] = F(journal_dir),
    [GS_CFG_COORDINATOR_SPOOL_DIR] = F(spool_dir),
    [GS_CFG_COORDINATOR_METRICS] = F(metrics),
    [GS_CFG_COORDINATOR_HTTP_TOKEN_FILE] = F(http_token_file),
    [GS_CFG_COORDINATOR_WEB_DIR] = F(web_dir),
    [GS_CFG_COORDINATOR_HEARTBEAT_MS] = F(heartbeat_ms),
    [GS_CFG_COORDINATOR_LIVENESS] = F(liveness),
    [GS_CFG_COORDINATOR_MAX_SLIDES_IN_FLIGHT] = F(max_slides_in_flight),
    [GS_CFG_COORDINATOR_TILES_PER_JOB] = F(tiles_per_job),
    [GS_CFG_COORDINATOR_JOURNAL_RETENTION] = F(journal_retention_ms),
    [GS_CFG_COORDINATOR_TILE_STALL_TIMEOUT] = F(tile_stall_timeout_ms),
    [GS_CFG_COORDINATOR_LOSS_GRACE] = F(loss_grace_ms),
    [GS_CFG_COORDINATOR_PLAN_TIMEOUT] = F(plan_timeout_ms),
    [GS_CFG_COORDINATOR_SCREEN_TIMEOUT] = F(screen_timeout_ms),
    [GS_CFG_COORDINATOR_REPORT_TIMEOUT] = F(report_timeout_ms),
    [GS_CFG_COORDINATOR_TILE_MAX_REQUESTS] = F(tile_max_requests),
    [GS_CFG_COORDINATOR_JOB_MAX_SENDS] = F(job_max_sends),
    [GS_CFG_COORDINATOR_POISON_LIMIT] = F(poison_limit),
    [GS_CFG_COORDINATOR_MAX_ATTEMPTS] = F(max_attempts),
    [GS_CFG_COORDINATOR_MAX_ERROR_FRACTION] = F(max_error_fraction),
    [GS_CFG_INTAKE_SLIDE_ROOTS] = F(slide_roots),
    [GS_CFG_INTAKE_WATCH_DIR] = F(watch_dir),
    [GS_CFG_INTAKE_WATCH_SETTLE] = F(watch_settle_ms),
    [GS_CFG_MODEL_BUNDLE] = F(bundle),
    [GS_CFG_FOREGROUND_THREADS] = F(foreground_threads),
    [GS_CFG_FOREGROUND_TARGET_MPP] = F(target_mpp),
    [GS_CFG_FOREGROUND_TILE_SIZE] = F(tile_size),
    [GS_CFG_FOREGROUND_STRIDE] = F(stride),
    [GS_CFG_FOREGROUND_DEFAULT_MPP] = F(default_mpp),
    [GS_CFG_FOREGROUND_MIN_TISSUE_FRACTION] = F(min_tissue_fraction),
    [GS_CFG_FOREGROUND_THUMBNAIL_SIZE] = F(thumbnail_size),
    [GS_CFG_FOREGROUND_MASK_MPP] = F(mask_mpp),
    [GS_CFG_FOREGROUND_MASK_MAX_DIM] = F(mask_max_dim),
    [GS_CFG_FOREGROUND_MAX_SLIDE_MPX] = F(max_slide_mpx),
    [GS_CFG_FOREGROUND_MAX_THUMBNAIL_MPX] = F(max_thumbnail_mpx),
    [GS_CFG_FOREGROUND_PLAN_BUDGET] = F(plan_budget_ms),
    [GS_CFG_TILER_THREADS] = F(tiler_threads),
    [GS_CFG_TILER_TILE_HWM] = F(tile_hwm),
    [GS_CFG_BLUR_THREADS] = F(blur_threads),
    [GS_CFG_BLUR_BATCH] = F(blur_batch),
    [GS_CFG_BLUR_BLUR_SAMPLE] = F(blur_sample),
    [GS_CFG_BLUR_BLUR_MIN_VALID] = F(blur_min_valid),
    [GS_CFG_BLUR_BLUR_SLIDE_FRACTION] = F(blur_slide_fraction),
    [GS_CFG_BLUR_EVERY_TILE] = F(blur_every_tile),
    [GS_CFG_BLUR_FOCUS_THRESHOLD] = F(focus_threshold),
    [GS_CFG_BLUR_SPARSE_TISSUE] = F(sparse_tissue),
    [GS_CFG_BLUR_TILE_INBOX] = F(blur_tile_inbox),
    [GS_CFG_BLUR_ADVERTISE_HOST] = F(blur_advertise_host),
    [GS_CFG_INFER_THREADS] = F(infer_threads),
    [GS_CFG_INFER_BATCH] = F(infer_batch),
    [GS_CFG_INFER_HEATMAP_SIZE] = F(heatmap_size),
    [GS_CFG_INFER_CONTEXT] = F(infer_context),
    [GS_CFG_INFER_TILE_INBOX] = F(infer_tile_inbox),
    [GS_CFG_INFER_ADVERTISE_HOST] = F(infer_advertise_host),
    [GS_CFG_INFER_PRECISION] = F(infer_precision),
    [GS_CFG_SCREENER_THREADS] = F(screener_threads),
    [GS_CFG_SCREENER_THRESHOLD] = F(threshold),
    [GS_CFG_SCREENER_TOP_K] = F(top_k),
    [GS_CFG_REPORTER_THREADS] = F(reporter_threads),
    [GS_CFG_REPORTER_REPORT_DIR] = F(report_dir),
    [GS_CFG_SECURITY_SECURITY] = F(security),
    [GS_CFG_SECURITY_KEYS_DIR] = F(keys_dir),
    [GS_CFG_SECURITY_COORDINATOR_KEY] = F(coordinator_key),
    [GS_CFG_SECURITY_COORDINATOR_PUBLIC] = F(coordinator_public),
    [GS_CFG_SECURITY_WORKER_KEY] = F(worker_key),
    [GS_CFG_SECURITY_CLIENT_KEY] = F(client_key),
};

static int is_text(gs_config_type t)
{
    return t == GS_CONFIG_STRING || t == GS_CONFIG_PATH;
}

static void free_roots(gs_config *c)
{
    for (size_t i = 0; i < c->n_slide_roots; i++)
        free(c->slide_roots[i]);
    free(c->slide_roots);
    c->slide_roots = NULL;
    c->n_slide_roots = 0;
}

/* Replaces the roots with the whitespace-separated folders of text (the schema checked them). */
static int set_roots(gs_config *c, const char *text)
{
    free_roots(c);
    for (const char *p = text + strspn(text, " \t"); *p; p += strspn(p, " \t")) {
        size_t n = strcspn(p, " \t");
        char **r = realloc(c->slide_roots, (c->n_slide_roots + 1) * sizeof *r);
        if (!r)
            return gs_error_set("out of memory");
        c->slide_roots = r;
        if (!(r[c->n_slide_roots] = strndup(p, n)))
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

static int set_field(gs_config *c, gs_config_key_id k, const gs_config_value *v)
{
    gs_config_type type = gs_config_schema_key(k)->type;
    void *at = (char *)c + FIELDS[k].offset;
    switch (type) {
    case GS_CONFIG_STRING:
    case GS_CONFIG_PATH:
        GS_ASSERT(FIELDS[k].size == sizeof(char *));
        return gs_config_set_string(at, v->text);
    case GS_CONFIG_FOLDERS:
        GS_ASSERT(FIELDS[k].offset == offsetof(gs_config, slide_roots));
        return set_roots(c, v->text);
    case GS_CONFIG_COUNT:
        GS_ASSERT(FIELDS[k].size == sizeof(uint32_t));
        *(uint32_t *)at = v->count;
        return 0;
    case GS_CONFIG_NUMBER:
        GS_ASSERT(FIELDS[k].size == sizeof(double));
        *(double *)at = v->number;
        return 0;
    case GS_CONFIG_DURATION:
        GS_ASSERT(FIELDS[k].size == sizeof(int64_t));
        *(int64_t *)at = v->ms;
        return 0;
    }
    GS_ASSERT(!"unknown gs_config_type");
    return -1;
}

gs_config *gs_config_new(void)
{
    gs_config *c = calloc(1, sizeof *c);
    if (!c) {
        gs_error_set("config: out of memory");
        return NULL;
    }
    for (int k = 0; k < GS_CFG_KEY_COUNT; k++) {
        gs_config_value v = gs_config_schema_default((gs_config_key_id)k);
        if (set_field(c, (gs_config_key_id)k, &v) != 0) {
            gs_error_prefix("config");
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
    for (int k = 0; k < GS_CFG_KEY_COUNT; k++)
        if (is_text(gs_config_schema_key((gs_config_key_id)k)->type))
            free(*(char **)((char *)c + FIELDS[k].offset));
    free_roots(c);
    free(c);
    *cp = NULL;
}

int gs_config_load(gs_config *c, const char *path)
{
    int rc = -1;
    gs_config_values *v = gs_config_values_new();
    if (!v)
        return -1;
    if (gs_config_values_load(v, path) != 0)
        goto destroy_values;
    for (int k = 0; k < GS_CFG_KEY_COUNT; k++) {
        if (!gs_config_values_is_set(v, (gs_config_key_id)k))
            continue;
        if (set_field(c, (gs_config_key_id)k, gs_config_values_get(v, (gs_config_key_id)k)) != 0) {
            gs_error_prefix("%s", path);
            goto destroy_values;
        }
        c->set[k] = 1;
    }
    rc = 0;
destroy_values:
    gs_config_values_destroy(&v);
    return rc;
}

void gs_config_decision(const gs_config *c, const gs_model *model, gs_decision *d)
{
    gs_model_thresholds b = {0};
    if (model)
        b = gs_model_get_thresholds(model);
    gs_decision_resolve(d, model ? &b : NULL, c->threshold,
                        gs_config_is_set(c, GS_CFG_SCREENER_THRESHOLD), c->top_k,
                        gs_config_is_set(c, GS_CFG_SCREENER_TOP_K));
    int blur_trained =
        model && gs_model_has(model, GS_NET_BLUR) && !gs_model_untrained(model, GS_NET_BLUR);
    gs_decision_resolve_focus(d, model ? &b : NULL, blur_trained, c->blur_slide_fraction,
                              gs_config_is_set(c, GS_CFG_BLUR_BLUR_SLIDE_FRACTION),
                              c->focus_threshold, gs_config_is_set(c, GS_CFG_BLUR_FOCUS_THRESHOLD),
                              c->sparse_tissue, gs_config_is_set(c, GS_CFG_BLUR_SPARSE_TISSUE));
}

int gs_config_is_set(const gs_config *c, gs_config_key_id k)
{
    GS_ASSERT((unsigned)k < GS_CFG_KEY_COUNT);
    return c->set[k];
}

/* 1 when path is a folder, else 0 with why (strerror, or "not a folder") in why. */
static int is_folder(const char *path, char *why, size_t n)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(why, n, "%s", strerror(errno));
        return 0;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(why, n, "not a folder");
        return 0;
    }
    return 1;
}

int gs_config_check_start(const gs_config *c, void (*warn)(const char *line, void *ud), void *ud)
{
    char line[PATH_MAX + 256], why[128];
    if (c->n_slide_roots == 0)
        return gs_error_set("[intake] slide_roots is empty: no slide could ever be accepted "
                            "(name the folders slides are read from)");
    for (size_t i = 0; i < c->n_slide_roots; i++)
        if (!is_folder(c->slide_roots[i], why, sizeof why)) {
            snprintf(line, sizeof line,
                     "[intake] slide_roots: %s: %s (slides under it are refused until it exists)",
                     c->slide_roots[i], why);
            warn(line, ud);
        }
    if (c->watch_dir && c->watch_dir[0]) {
        if (!is_folder(c->watch_dir, why, sizeof why)) {
            snprintf(line, sizeof line,
                     "[intake] watch_dir: %s: %s (nothing is taken from it until it exists)",
                     c->watch_dir, why);
            warn(line, ud);
        } else {
            char *real = realpath(c->watch_dir, NULL);
            int inside = real && gs_slides_under_roots((const char *const *)c->slide_roots,
                                                       c->n_slide_roots, real);
            free(real);
            if (!inside) {
                snprintf(line, sizeof line,
                         "[intake] watch_dir: %s is outside every slide root (every file in it "
                         "would be refused)",
                         c->watch_dir);
                warn(line, ud);
            }
        }
    }
    if (c->report_dir && c->report_dir[0] && is_folder(c->report_dir, why, sizeof why) &&
        access(c->report_dir, W_OK | X_OK) != 0) {
        snprintf(line, sizeof line,
                 "[reporter] report_dir: %s: not writable by this process: %s (a reporter "
                 "running as this user cannot write reports)",
                 c->report_dir, strerror(errno));
        warn(line, ud);
    }
    return 0;
}
