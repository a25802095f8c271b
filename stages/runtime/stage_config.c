#include "stages/runtime/stage_config.h"

#include <stddef.h>
#include <string.h>

#include "ops/error.h"
#include "stages/runtime/transport.h"

/* A setting of gs_stage_config: its key (section NULL: the stage's own section, so "threads"
 * is [blur] threads in the blur worker), its field and the flag that overrides it. A stage holds
 * the field when its section has the key: --batch is an option of blur and infer only. */
typedef struct {
    const char *section, *name;
    size_t offset, size;
    const char *flag, *arg; /* NULL: no flag */
} stage_field;

#define F(sec, key, f, flag, arg)                                                                  \
    {                                                                                              \
        sec, key, offsetof(gs_stage_config, f), sizeof(((gs_stage_config *)0)->f), flag, arg       \
    }

static const stage_field FIELDS[] = {
    F("coordinator", "work", work, "--coordinator", "ENDPOINT"),
    F("model", "bundle", model, "--model", "BUNDLE"),
    F(NULL, "threads", threads, "--threads", "N"),
    F(NULL, "batch", batch, "--batch", "N"),
    F(NULL, "tile_inbox", tile_inbox, "--tile-inbox", "ENDPOINT"),
    F(NULL, "advertise_host", advertise_host, "--advertise-host", "HOST"),
    F(NULL, "tile_hwm", tile_hwm, "--tile-hwm", "N"),
    F(NULL, "mask_mpp", mask_mpp, NULL, NULL),
    F(NULL, "mask_max_dim", mask_max_dim, NULL, NULL),
    F(NULL, "max_slide_mpx", max_slide_mpx, NULL, NULL),
    F(NULL, "max_thumbnail_mpx", max_thumbnail_mpx, NULL, NULL),
    F(NULL, "plan_budget", plan_budget_ms, NULL, NULL),
    F(NULL, "top_k", top_k, "--top-k", "N"),
    F(NULL, "report_dir", report_dir, "--report-dir", "DIR"),
    F(NULL, "precision", precision, "--precision", "fp32|bf16|int8"),
    F("coordinator", "heartbeat_ms", heartbeat_ms, "--heartbeat-ms", "N"),
    F("coordinator", "liveness", liveness, NULL, NULL),
    F("security", "security", security, NULL, NULL),
    F("security", "keys_dir", keys_dir, "--keys-dir", "DIR"),
    F("security", "worker_key", worker_key, "--key", "FILE"),
    F("security", "coordinator_public", coordinator_public, "--coordinator-key", "FILE"),
};
#define N_FIELDS (sizeof FIELDS / sizeof FIELDS[0])

static int runs_network(Gastroscreen__V1__Stage s)
{
    return s != GASTROSCREEN__V1__STAGE__STAGE_TILER &&
           s != GASTROSCREEN__V1__STAGE__STAGE_REPORTER;
}

/* Returns 0 and the key of f when `stage` holds the field, -1 when it does not. */
static int field_key(Gastroscreen__V1__Stage stage, const stage_field *f, gs_config_key_id *k)
{
    if (!strcmp(f->name, "bundle") && !runs_network(stage))
        return -1;
    return gs_config_schema_find(f->section ? f->section : gs_stage_name(stage), f->name, k);
}

static int set_str(char *dst, size_t size, const char *v)
{
    if (strlen(v) > size - 1)
        return gs_error_set("longer than %zu bytes", size - 1);
    memcpy(dst, v, strlen(v) + 1);
    return 0;
}

/* The coordinator binds every interface ("*" as host); a worker on its host connects to
 * localhost. */
static int set_work(gs_stage_config *c, const char *v)
{
    if (!v[0])
        return gs_error_set("empty endpoint");
    const char *any = "tcp://*:";
    if (strncmp(v, any, strlen(any)))
        return set_str(c->work, sizeof c->work, v);
    char buf[sizeof c->work];
    if (snprintf(buf, sizeof buf, "tcp://localhost:%s", v + strlen(any)) >= (int)sizeof buf)
        return gs_error_set("longer than %zu bytes", sizeof buf - 1);
    return set_str(c->work, sizeof c->work, buf);
}

/* Stores a parsed value of key k in field f. Returns 0, or -1 with the error (a text too long
 * for its field, an empty work endpoint) for the caller to prefix with the key or flag. */
static int set_field(gs_stage_config *c, const stage_field *f, gs_config_key_id k,
                     const gs_config_value *v)
{
    void *at = (char *)c + f->offset;
    if (k == GS_CFG_COORDINATOR_WORK)
        return set_work(c, v->text);
    switch (gs_config_schema_key(k)->type) {
    case GS_CONFIG_STRING:
    case GS_CONFIG_PATH:
    case GS_CONFIG_FOLDERS:
        return set_str(at, f->size, v->text);
    case GS_CONFIG_COUNT:
        GS_ASSERT(f->size == sizeof(int));
        *(int *)at = (int)v->count;
        return 0;
    case GS_CONFIG_NUMBER:
        GS_ASSERT(f->size == sizeof(double));
        *(double *)at = v->number;
        return 0;
    case GS_CONFIG_DURATION:
        GS_ASSERT(f->size == sizeof(int64_t));
        *(int64_t *)at = v->ms;
        return 0;
    }
    GS_ASSERT(!"a stage setting of a type it cannot hold");
    return -1;
}

void gs_stage_config_default(gs_stage_config *c, Gastroscreen__V1__Stage stage)
{
    memset(c, 0, sizeof *c);
    c->stage = stage;
    snprintf(c->instance, sizeof c->instance, "1");
    c->batch = 1; /* the worker's batch for a stage without a batch key */
    for (size_t i = 0; i < N_FIELDS; i++) {
        gs_config_key_id k;
        /* No model unless given: foreground and blur run their classical methods then. */
        if (field_key(stage, &FIELDS[i], &k) != 0 || k == GS_CFG_MODEL_BUNDLE)
            continue;
        gs_config_value v = gs_config_schema_default(k);
        int rc = set_field(c, &FIELDS[i], k, &v);
        GS_ASSERT(rc == 0);
    }
}

int gs_stage_config_load(gs_stage_config *c, const char *path)
{
    int rc = -1;
    gs_config_values *v = gs_config_values_new();
    if (!v)
        return -1;
    if (gs_config_values_load(v, path) != 0)
        goto destroy_values;
    for (size_t i = 0; i < N_FIELDS; i++) {
        gs_config_key_id k;
        if (field_key(c->stage, &FIELDS[i], &k) != 0 || !gs_config_values_is_set(v, k))
            continue;
        if (set_field(c, &FIELDS[i], k, gs_config_values_get(v, k)) != 0) {
            const gs_config_key_info *info = gs_config_schema_key(k);
            gs_error_prefix("%s:%d: [%s] %s", path, gs_config_values_line(v, k), info->section,
                            info->name);
            goto destroy_values;
        }
        c->set[k] = 1;
    }
    rc = 0;
destroy_values:
    gs_config_values_destroy(&v);
    return rc;
}

int gs_stage_config_is_set(const gs_stage_config *c, gs_config_key_id k)
{
    GS_ASSERT((unsigned)k < GS_CFG_KEY_COUNT);
    return c->set[k];
}

/* The field a flag sets in `stage`, or NULL when the flag is not one of its options. */
static const stage_field *flag_field(Gastroscreen__V1__Stage stage, const char *flag,
                                     gs_config_key_id *k)
{
    for (size_t i = 0; i < N_FIELDS; i++)
        if (FIELDS[i].flag && !strcmp(FIELDS[i].flag, flag))
            return field_key(stage, &FIELDS[i], k) == 0 ? &FIELDS[i] : NULL;
    return NULL;
}

static int takes_value(Gastroscreen__V1__Stage stage, const char *flag)
{
    gs_config_key_id k;
    return !strcmp(flag, "--config") || !strcmp(flag, "--instance") || !strcmp(flag, "--id") ||
           flag_field(stage, flag, &k);
}

static int apply_flag(gs_stage_config *c, const char *f, const char *v)
{
    if (!strcmp(f, "--instance") || !strcmp(f, "--id")) {
        if (!v[0])
            return gs_error_set("%s: empty name", f);
        if (strpbrk(v, "/@ "))
            return gs_error_set("%s: '%s' may not contain '/', '@' or spaces", f, v);
        if (set_str(c->instance, sizeof c->instance, v) != 0)
            return gs_error_prefix("%s", f);
        return 0;
    }
    gs_config_key_id k;
    const stage_field *fl = flag_field(c->stage, f, &k);
    GS_ASSERT(fl); /* takes_value() said so */
    gs_config_value parsed;
    if (gs_config_schema_parse(k, v, &parsed) != 0 || set_field(c, fl, k, &parsed) != 0)
        return gs_error_prefix("%s", f);
    c->set[k] = 1;
    return 0;
}

int gs_stage_config_args(gs_stage_config *c, int argc, char **argv, int *help)
{
    *help = 0;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            *help = 1;
            return 0;
        }
    /* The file first, so flags override it wherever they appear. */
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "--", 2) || !takes_value(c->stage, argv[i]))
            continue;
        if (i + 1 >= argc)
            return gs_error_set("%s needs a value", argv[i]);
        if (!strcmp(argv[i], "--config") && gs_stage_config_load(c, argv[i + 1]) < 0)
            return -1;
        i++;
    }
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        if (strncmp(f, "--", 2))
            return gs_error_set("unexpected argument '%s'", f);
        if (!takes_value(c->stage, f))
            return gs_error_set("%s: not an option of gastroscreen-%s", f, gs_stage_name(c->stage));
        const char *v = argv[++i];
        if (!strcmp(f, "--config"))
            continue;
        if (apply_flag(c, f, v) < 0)
            return -1;
    }
    return 0;
}

/* Columns of the usage synopsis: as wide as the hand-written lines below it. */
#define USAGE_WIDTH 88

void gs_stage_config_usage(Gastroscreen__V1__Stage stage, FILE *f)
{
    const char *n = gs_stage_name(stage);
    fprintf(f,
            "usage: gastroscreen-%s [--config FILE] [--coordinator ENDPOINT] [--instance NAME]\n"
            "      ",
            n);
    gs_config_key_id k;
    int col = 6;
    for (size_t i = 0; i < N_FIELDS; i++) {
        if (!FIELDS[i].flag || !strcmp(FIELDS[i].flag, "--coordinator") ||
            field_key(stage, &FIELDS[i], &k) != 0)
            continue;
        int len = (int)(strlen(FIELDS[i].flag) + strlen(FIELDS[i].arg)) + 4;
        if (col + len > USAGE_WIDTH) {
            fprintf(f, "\n      ");
            col = 6;
        }
        col += fprintf(f, " [%s %s]", FIELDS[i].flag, FIELDS[i].arg);
    }
    fprintf(f,
            "\n"
            "\n"
            "The gastroscreen %s stage worker (proto/PROTOCOL.md): connects to the coordinator's\n"
            "`work` endpoint, serves its jobs in N handler threads, heartbeats with its\n"
            "statistics, and stops gracefully on SIGTERM (finishes or hands back its work).\n"
            "\n"
            "  --config FILE           settings (systemd/gastroscreen.conf format): every key is\n"
            "                          checked; this stage uses [coordinator] work, heartbeat_ms,\n"
            "                          liveness%s and [%s]\n"
            "  --coordinator ENDPOINT  the coordinator's work endpoint (tcp://localhost:5554)\n"
            "  --instance NAME         instance name in the worker id (1); alias --id\n",
            n, runs_network(stage) ? ", [model] bundle" : "", n);
    if (runs_network(stage))
        fprintf(f, "  --model BUNDLE          model bundle (.safetensors)%s\n",
                stage == GASTROSCREEN__V1__STAGE__STAGE_INFER ||
                        stage == GASTROSCREEN__V1__STAGE__STAGE_SCREENER
                    ? " (required)"
                    : " (optional: its sha256 is announced)");
    /* The other flags say what their key's schema entry says, so help and file agree. */
    for (size_t i = 0; i < N_FIELDS; i++) {
        const stage_field *fl = &FIELDS[i];
        if (!fl->flag || field_key(stage, fl, &k) != 0 || k == GS_CFG_COORDINATOR_WORK ||
            k == GS_CFG_MODEL_BUNDLE)
            continue;
        const gs_config_key_info *info = gs_config_schema_key(k);
        char opt[64], range[64];
        snprintf(opt, sizeof opt, "%s %s", fl->flag, fl->arg);
        gs_config_schema_range(k, range, sizeof range);
        fprintf(f, "  %-22s  %s (%s%s%s%s)\n", opt, info->doc, range, range[0] ? "; " : "",
                info->def[0] ? "default " : "default empty", info->def);
    }
    fprintf(f, "  --help                  this text\n");
}
