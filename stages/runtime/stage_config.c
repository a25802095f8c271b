#include "stages/runtime/stage_config.h"

#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops/error.h"
#include "stages/runtime/transport.h"

void gs_stage_config_default(gs_stage_config *c, Gastroscreen__V1__Stage stage)
{
    memset(c, 0, sizeof *c);
    c->stage = stage;
    snprintf(c->work, sizeof c->work, "tcp://localhost:5554");
    snprintf(c->instance, sizeof c->instance, "1");
    c->threads = stage == GASTROSCREEN__V1__STAGE__STAGE_TILER ||
                         stage == GASTROSCREEN__V1__STAGE__STAGE_INFER
                     ? 2
                     : 1;
    c->batch = stage == GASTROSCREEN__V1__STAGE__STAGE_BLUR    ? 8
               : stage == GASTROSCREEN__V1__STAGE__STAGE_INFER ? 4
                                                               : 1;
    snprintf(c->tile_inbox, sizeof c->tile_inbox, "tcp://*:*");
    c->tile_hwm = 8;
    c->mask_mpp = 4;
    c->mask_max_dim = 4096;
    c->top_k = 64;
    snprintf(c->report_dir, sizeof c->report_dir, "/var/lib/gastroscreen/reports");
    c->heartbeat_ms = 1000;
    c->liveness = 5;
}

static int set_str(char *dst, size_t n, const char *v, const char *key)
{
    if (strlen(v) >= n)
        return gs_error_set("%s: longer than %zu bytes", key, n - 1);
    memcpy(dst, v, strlen(v) + 1);
    return 0;
}

static int set_int(int *dst, const char *v, long lo, long hi, const char *key)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi)
        return gs_error_set("%s: '%s' is not a whole number in %ld..%ld", key, v, lo, hi);
    *dst = (int)x;
    return 0;
}

static int set_double(double *dst, const char *v, double lo, double hi, const char *key)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(x) || x < lo || x > hi)
        return gs_error_set("%s: '%s' is not a number in %g..%g", key, v, lo, hi);
    *dst = x;
    return 0;
}

/* The coordinator binds every interface ("*" as host); a worker on its host connects to
 * localhost. */
static int set_work(gs_stage_config *c, const char *v, const char *key)
{
    if (!strncmp(v, "tcp://*:", 8)) {
        char buf[1024];
        snprintf(buf, sizeof buf, "tcp://localhost:%s", v + 8);
        return set_str(c->work, sizeof c->work, buf, key);
    }
    if (!v[0])
        return gs_error_set("%s: empty endpoint", key);
    return set_str(c->work, sizeof c->work, v, key);
}

static int has_batch(Gastroscreen__V1__Stage s)
{
    return s == GASTROSCREEN__V1__STAGE__STAGE_BLUR || s == GASTROSCREEN__V1__STAGE__STAGE_INFER;
}

/* One key of the stage's own section; 1 if it was not one this stage reads. */
static int stage_key(gs_stage_config *c, const char *name, const char *v)
{
    Gastroscreen__V1__Stage s = c->stage;
    if (!strcmp(name, "threads"))
        return set_int(&c->threads, v, 1, 256, name);
    if (!strcmp(name, "batch") && has_batch(s))
        return set_int(&c->batch, v, 1, 1024, name);
    if (!strcmp(name, "tile_inbox") && has_batch(s))
        return set_str(c->tile_inbox, sizeof c->tile_inbox, v, name);
    if (!strcmp(name, "advertise_host") && has_batch(s))
        return set_str(c->advertise_host, sizeof c->advertise_host, v, name);
    if (!strcmp(name, "tile_hwm") && s == GASTROSCREEN__V1__STAGE__STAGE_TILER)
        return set_int(&c->tile_hwm, v, 4, 16, name);
    if (!strcmp(name, "mask_mpp") && s == GASTROSCREEN__V1__STAGE__STAGE_FOREGROUND)
        return set_double(&c->mask_mpp, v, 0.5, 64, name);
    if (!strcmp(name, "mask_max_dim") && s == GASTROSCREEN__V1__STAGE__STAGE_FOREGROUND)
        return set_int(&c->mask_max_dim, v, 256, 16384, name);
    if (!strcmp(name, "top_k") && s == GASTROSCREEN__V1__STAGE__STAGE_SCREENER)
        return set_int(&c->top_k, v, 1, 4096, name);
    if (!strcmp(name, "report_dir") && s == GASTROSCREEN__V1__STAGE__STAGE_REPORTER)
        return set_str(c->report_dir, sizeof c->report_dir, v, name);
    return 1;
}

typedef struct {
    gs_stage_config *c;
    int failed;
    char first[1024]; /* the first key's error; inih reports its line */
} load_state;

static int on_key(void *user, const char *section, const char *name, const char *value)
{
    load_state *st = user;
    gs_stage_config *c = st->c;
    int rc = 0;
    if (!strcmp(section, "coordinator")) {
        if (!strcmp(name, "work"))
            rc = set_work(c, value, name);
        else if (!strcmp(name, "heartbeat_ms"))
            rc = set_int(&c->heartbeat_ms, value, 10, 60000, name);
        else if (!strcmp(name, "liveness"))
            rc = set_int(&c->liveness, value, 1, 100, name);
    } else if (!strcmp(section, "model")) {
        /* Only the stages that run a network load the bundle. */
        if (!strcmp(name, "bundle") && c->stage != GASTROSCREEN__V1__STAGE__STAGE_TILER &&
            c->stage != GASTROSCREEN__V1__STAGE__STAGE_REPORTER)
            rc = set_str(c->model, sizeof c->model, value, name);
    } else if (!strcmp(section, gs_stage_name(c->stage))) {
        rc = stage_key(c, name, value) < 0 ? -1 : 0;
    }
    if (rc < 0) {
        if (!st->failed)
            snprintf(st->first, sizeof st->first, "[%s] %s", section, gs_error_get());
        st->failed = 1;
        return 0; /* inih then reports the first such line */
    }
    return 1;
}

int gs_stage_config_load(gs_stage_config *c, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return gs_error_set("%s: %s", path, strerror(errno));
    load_state st = {c, 0, ""};
    gs_error_clear();
    int line = ini_parse_file(f, on_key, &st);
    fclose(f);
    if (line < 0)
        return gs_error_set("%s: cannot be read", path);
    if (line > 0) {
        if (st.failed)
            return gs_error_set("%s:%d: %s", path, line, st.first);
        return gs_error_set("%s:%d: not an INI line", path, line);
    }
    return 0;
}

/* Flags with a value; NULL-terminated. */
static const char *const VALUE_FLAGS[] = {"--config",         "--coordinator",
                                          "--instance",       "--id",
                                          "--threads",        "--batch",
                                          "--model",          "--tile-inbox",
                                          "--advertise-host", "--tile-hwm",
                                          "--top-k",          "--report-dir",
                                          "--heartbeat-ms",   NULL};

static int takes_value(const char *flag)
{
    for (int i = 0; VALUE_FLAGS[i]; i++)
        if (!strcmp(flag, VALUE_FLAGS[i]))
            return 1;
    return 0;
}

static int apply_flag(gs_stage_config *c, const char *f, const char *v)
{
    Gastroscreen__V1__Stage s = c->stage;
    int tile_stage = has_batch(s);
    if (!strcmp(f, "--coordinator"))
        return set_work(c, v, f);
    if (!strcmp(f, "--instance") || !strcmp(f, "--id")) {
        for (const char *p = v; *p; p++)
            if (*p == '/' || *p == '@' || *p == ' ')
                return gs_error_set("%s: '%s' may not contain '/', '@' or spaces", f, v);
        return v[0] ? set_str(c->instance, sizeof c->instance, v, f)
                    : gs_error_set("%s: empty name", f);
    }
    if (!strcmp(f, "--threads"))
        return set_int(&c->threads, v, 1, 256, f);
    if (!strcmp(f, "--batch") && tile_stage)
        return set_int(&c->batch, v, 1, 1024, f);
    if (!strcmp(f, "--model") && s != GASTROSCREEN__V1__STAGE__STAGE_TILER &&
        s != GASTROSCREEN__V1__STAGE__STAGE_REPORTER)
        return set_str(c->model, sizeof c->model, v, f);
    if (!strcmp(f, "--tile-inbox") && tile_stage)
        return set_str(c->tile_inbox, sizeof c->tile_inbox, v, f);
    if (!strcmp(f, "--advertise-host") && tile_stage)
        return set_str(c->advertise_host, sizeof c->advertise_host, v, f);
    if (!strcmp(f, "--tile-hwm") && s == GASTROSCREEN__V1__STAGE__STAGE_TILER)
        return set_int(&c->tile_hwm, v, 4, 16, f);
    if (!strcmp(f, "--top-k") && s == GASTROSCREEN__V1__STAGE__STAGE_SCREENER)
        return set_int(&c->top_k, v, 1, 4096, f);
    if (!strcmp(f, "--report-dir") && s == GASTROSCREEN__V1__STAGE__STAGE_REPORTER)
        return set_str(c->report_dir, sizeof c->report_dir, v, f);
    if (!strcmp(f, "--heartbeat-ms"))
        return set_int(&c->heartbeat_ms, v, 10, 60000, f);
    return gs_error_set("%s: not an option of gastroscreen-%s", f, gs_stage_name(s));
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
        if (strncmp(argv[i], "--", 2) || !takes_value(argv[i]))
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
        if (!takes_value(f))
            return gs_error_set("%s: not an option of gastroscreen-%s", f, gs_stage_name(c->stage));
        const char *v = argv[++i];
        if (!strcmp(f, "--config"))
            continue;
        if (apply_flag(c, f, v) < 0)
            return -1;
    }
    return 0;
}

void gs_stage_config_usage(Gastroscreen__V1__Stage stage, FILE *f)
{
    const char *n = gs_stage_name(stage);
    int tile_stage = has_batch(stage);
    int model_stage = stage != GASTROSCREEN__V1__STAGE__STAGE_TILER &&
                      stage != GASTROSCREEN__V1__STAGE__STAGE_REPORTER;
    fprintf(f,
            "usage: gastroscreen-%s [--config FILE] [--coordinator ENDPOINT] [--instance NAME]\n"
            "       [--threads N]%s%s%s%s%s%s [--heartbeat-ms N]\n"
            "\n"
            "The gastroscreen %s stage worker (proto/PROTOCOL.md): connects to the coordinator's\n"
            "`work` endpoint, serves its jobs in N handler threads, heartbeats once a second with\n"
            "its statistics, and stops gracefully on SIGTERM (finishes or hands back its work).\n"
            "\n"
            "  --config FILE           read [coordinator] work, heartbeat_ms, liveness, [model] "
            "bundle\n"
            "                          and [%s] from FILE (systemd/gastroscreen.conf format)\n"
            "  --coordinator ENDPOINT  the coordinator's work endpoint (tcp://localhost:5554)\n"
            "  --instance NAME         instance name in the worker id (1); alias --id\n"
            "  --threads N             handler threads = jobs or batches at once\n",
            n, tile_stage ? " [--batch N]" : "", model_stage ? " [--model BUNDLE]" : "",
            tile_stage ? " [--tile-inbox ENDPOINT] [--advertise-host HOST]" : "",
            stage == GASTROSCREEN__V1__STAGE__STAGE_TILER ? " [--tile-hwm N]" : "",
            stage == GASTROSCREEN__V1__STAGE__STAGE_SCREENER ? " [--top-k N]" : "",
            stage == GASTROSCREEN__V1__STAGE__STAGE_REPORTER ? " [--report-dir DIR]" : "", n, n);
    if (model_stage)
        fprintf(f, "  --model BUNDLE          model bundle (.safetensors)%s\n",
                stage == GASTROSCREEN__V1__STAGE__STAGE_INFER ||
                        stage == GASTROSCREEN__V1__STAGE__STAGE_SCREENER
                    ? " (required)"
                    : " (optional: its sha256 is announced)");
    if (tile_stage)
        fprintf(f, "  --batch N               tiles per batch\n"
                   "  --tile-inbox ENDPOINT   where to bind the tile inbox (tcp://*:*)\n"
                   "  --advertise-host HOST   host name tilers connect to (this host's name)\n");
    if (stage == GASTROSCREEN__V1__STAGE__STAGE_TILER)
        fprintf(f, "  --tile-hwm N            tile socket high-water mark, 4..16 (8)\n");
    if (stage == GASTROSCREEN__V1__STAGE__STAGE_SCREENER)
        fprintf(f, "  --top-k N               rows of the screener matrix (64)\n");
    if (stage == GASTROSCREEN__V1__STAGE__STAGE_REPORTER)
        fprintf(f, "  --report-dir DIR        report folder for jobs without one\n");
    fprintf(f, "  --heartbeat-ms N        heartbeat period until the coordinator says (1000)\n"
               "  --help                  this text\n");
}
