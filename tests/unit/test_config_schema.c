/*
 * The settings schema (stages/runtime/config_schema) and its two readers, gastroscreend's
 * (daemon/service/config) and the stage workers' (stages/runtime/stage_config): the example
 * file documents exactly the schema's keys with their defaults and ranges, loads through both
 * readers, and a bad file fails both with the same message.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/service/config.h"
#include "ops/error.h"
#include "stages/runtime/config_schema.h"
#include "stages/runtime/stage_config.h"
#include "stages/runtime/transport.h"

static const Gastroscreen__V1__Stage STAGES[] = {
    GASTROSCREEN__V1__STAGE__STAGE_TILER,    GASTROSCREEN__V1__STAGE__STAGE_FOREGROUND,
    GASTROSCREEN__V1__STAGE__STAGE_BLUR,     GASTROSCREEN__V1__STAGE__STAGE_INFER,
    GASTROSCREEN__V1__STAGE__STAGE_SCREENER, GASTROSCREEN__V1__STAGE__STAGE_REPORTER,
};
#define N_STAGES (sizeof STAGES / sizeof STAGES[0])

static char tmp_path[64];

static const char *write_conf(const char *text)
{
    snprintf(tmp_path, sizeof tmp_path, "/tmp/gs_test_schema_XXXXXX");
    int fd = mkstemp(tmp_path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return tmp_path;
}

static const char *example_path(void)
{
    const char *src = getenv("GS_SOURCE_DIR");
    assert_non_null(src);
    static char p[4096];
    snprintf(p, sizeof p, "%s/systemd/gastroscreen.conf", src);
    return p;
}

static int is_number_type(gs_config_type t)
{
    return t == GS_CONFIG_COUNT || t == GS_CONFIG_NUMBER || t == GS_CONFIG_DURATION;
}

static void table_is_complete_and_defaults_parse(void **state)
{
    (void)state;
    assert_null(gs_config_schema_key(GS_CFG_KEY_COUNT));
    for (int k = 0; k < GS_CFG_KEY_COUNT; k++) {
        const gs_config_key_info *i = gs_config_schema_key((gs_config_key_id)k);
        assert_non_null(i);
        if (!i->section || !i->name || !i->def || !i->doc || !i->doc[0])
            fail_msg("key %d has no section, name, default or doc", k);
        gs_config_value v;
        if (gs_config_schema_parse((gs_config_key_id)k, i->def, &v) != 0)
            fail_msg("[%s] %s: default: %s", i->section, i->name, gs_error_get());
        gs_config_key_id found;
        assert_int_equal(gs_config_schema_find(i->section, i->name, &found), 0);
        if (found != (gs_config_key_id)k)
            fail_msg("[%s] %s is in the schema twice", i->section, i->name);
        char range[64];
        gs_config_schema_range((gs_config_key_id)k, range, sizeof range);
        assert_true(is_number_type(i->type) == (range[0] != '\0'));
    }
    gs_config_key_id k;
    assert_int_equal(gs_config_schema_find("coordinator", "nosuch", &k), -1);
    assert_int_equal(gs_config_schema_find("nosuch", "threads", &k), -1);
}

static void ranges_and_values(void **state)
{
    (void)state;
    char r[64];
    assert_string_equal(gs_config_schema_range(GS_CFG_COORDINATOR_HEARTBEAT_MS, r, sizeof r),
                        "100..60000");
    assert_string_equal(gs_config_schema_range(GS_CFG_COORDINATOR_LIVENESS, r, sizeof r), "2..100");
    assert_string_equal(gs_config_schema_range(GS_CFG_COORDINATOR_JOURNAL_RETENTION, r, sizeof r),
                        "1m..3650d");
    assert_string_equal(gs_config_schema_range(GS_CFG_COORDINATOR_LOSS_GRACE, r, sizeof r),
                        "0s..1d");
    assert_string_equal(gs_config_schema_range(GS_CFG_FOREGROUND_TARGET_MPP, r, sizeof r),
                        "0.05..10");
    assert_string_equal(gs_config_schema_range(GS_CFG_MODEL_BUNDLE, r, sizeof r), "");

    gs_config_value v;
    assert_int_equal(gs_config_schema_parse(GS_CFG_COORDINATOR_LOSS_GRACE, "500ms", &v), 0);
    assert_int_equal(v.ms, 500);
    assert_int_equal(gs_config_schema_parse(GS_CFG_SCREENER_THRESHOLD, "0.6", &v), 0);
    assert_true(v.number == 0.6);
    assert_int_equal(gs_config_schema_parse(GS_CFG_COORDINATOR_HEARTBEAT_MS, "50", &v), -1);
    assert_string_equal(gs_error_get(), "50 is out of range 100..60000");
    assert_int_equal(gs_config_schema_parse(GS_CFG_COORDINATOR_PLAN_TIMEOUT, "10ms", &v), -1);
    assert_string_equal(gs_error_get(), "10ms is out of range 1s..1d");
    assert_int_equal(gs_config_schema_parse(GS_CFG_INTAKE_SLIDE_ROOTS, "/a rel", &v), -1);
    assert_string_equal(gs_error_get(), "\"rel\" is not an absolute path");
    assert_int_equal(gs_config_schema_parse(GS_CFG_COORDINATOR_JOURNAL_DIR, "journal", &v), -1);
    /* [security]: curve or off; key files absolute or empty (the keys folder's). */
    assert_int_equal(gs_config_schema_parse(GS_CFG_SECURITY_SECURITY, "off", &v), 0);
    assert_int_equal(gs_config_schema_parse(GS_CFG_SECURITY_SECURITY, "maybe", &v), -1);
    assert_string_equal(gs_error_get(), "\"maybe\" is neither curve nor off");
    assert_int_equal(gs_config_schema_parse(GS_CFG_SECURITY_WORKER_KEY, "", &v), 0);
    assert_int_equal(gs_config_schema_parse(GS_CFG_SECURITY_WORKER_KEY, "node.key", &v), -1);
    assert_int_equal(gs_config_schema_parse(GS_CFG_SECURITY_CLIENT_KEY, "/k/c.key", &v), 0);
}

/* The same default, as parsed values. */
static int same_value(gs_config_key_id k, const gs_config_value *a, const gs_config_value *b)
{
    switch (gs_config_schema_key(k)->type) {
    case GS_CONFIG_COUNT:
        return a->count == b->count;
    case GS_CONFIG_NUMBER:
        return a->number == b->number;
    case GS_CONFIG_DURATION:
        return a->ms == b->ms;
    case GS_CONFIG_STRING:
    case GS_CONFIG_PATH:
    case GS_CONFIG_FOLDERS:
        return !strcmp(a->text, b->text);
    }
    return 0;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n'))
        s[--n] = '\0';
    return s;
}

/* "# name = value" with name a key-like word: an example of another value. */
static int example_line(const char *line, char *name, size_t size, const char **value)
{
    if (strncmp(line, "# ", 2))
        return 0;
    const char *p = line + 2;
    size_t n = strspn(p, "abcdefghijklmnopqrstuvwxyz0123456789_");
    if (!n || n >= size || strncmp(p + n, " =", 2))
        return 0;
    memcpy(name, p, n);
    name[n] = '\0';
    *value = p + n + 2;
    return 1;
}

/* The example file's conventions (its header): every key appears in its section as "key =
 * default" or as an example "# key = value"; "# Range: key MIN..MAX, ..." gives the range of
 * every number and duration. Anything documented must be a key of the schema, with the
 * schema's default and range, so a key added to the schema without its documentation fails
 * here, and so does documentation of a key the code does not know. */
static void example_documents_exactly_the_schema(void **state)
{
    (void)state;
    FILE *f = fopen(example_path(), "r");
    assert_non_null(f);
    unsigned char documented[GS_CFG_KEY_COUNT] = {0}, ranged[GS_CFG_KEY_COUNT] = {0};
    char section[64] = "", line[512];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        n++;
        char name[64], *value = NULL;
        const char *example_value = NULL;
        gs_config_key_id k;
        gs_config_value v;
        if (line[0] == '[') {
            char *end = strchr(line, ']');
            assert_non_null(end);
            snprintf(section, sizeof section, "%.*s", (int)(end - line - 1), line + 1);
        } else if (!strncmp(line, "# Range: ", 9)) {
            for (char *item = strtok(line + 9, ","); item; item = strtok(NULL, ",")) {
                char key[64], range[64], want[64];
                if (sscanf(trim(item), "%63s %63s", key, range) != 2)
                    fail_msg("line %d: \"%s\" is not \"key MIN..MAX\"", n, item);
                if (gs_config_schema_find(section, key, &k) != 0)
                    fail_msg("line %d: range of [%s] %s, not a key", n, section, key);
                gs_config_schema_range(k, want, sizeof want);
                if (strcmp(range, want))
                    fail_msg("line %d: [%s] %s documented as %s, the schema says %s", n, section,
                             key, range, want);
                ranged[k] = 1;
            }
        } else if (example_line(line, name, sizeof name, &example_value)) {
            if (gs_config_schema_find(section, name, &k) != 0)
                fail_msg("line %d: example of [%s] %s, not a key", n, section, name);
            char *copy = strdup(example_value);
            assert_non_null(copy);
            if (gs_config_schema_parse(k, trim(copy), &v) != 0)
                fail_msg("line %d: example [%s] %s: %s", n, section, name, gs_error_get());
            free(copy);
            documented[k] = 1;
        } else if (line[0] != '#' && line[0] != ';' && (value = strchr(line, '='))) {
            *value++ = '\0';
            snprintf(name, sizeof name, "%s", trim(line));
            if (gs_config_schema_find(section, name, &k) != 0)
                fail_msg("line %d: [%s] %s is not a key", n, section, name);
            gs_config_value def = gs_config_schema_default(k);
            if (gs_config_schema_parse(k, trim(value), &v) != 0 || !same_value(k, &v, &def))
                fail_msg("line %d: [%s] %s = %s, the default is %s", n, section, name, trim(value),
                         gs_config_schema_key(k)->def);
            documented[k] = 1;
        }
    }
    fclose(f);
    for (int k = 0; k < GS_CFG_KEY_COUNT; k++) {
        const gs_config_key_info *i = gs_config_schema_key((gs_config_key_id)k);
        if (!documented[k])
            fail_msg("[%s] %s is not documented in %s", i->section, i->name, example_path());
        if (is_number_type(i->type) && !ranged[k])
            fail_msg("[%s] %s has no \"# Range:\" in %s", i->section, i->name, example_path());
    }
}

static void example_loads_through_both_readers(void **state)
{
    (void)state;
    gs_config *c = gs_config_new();
    assert_non_null(c);
    if (gs_config_load(c, example_path()) != 0)
        fail_msg("gastroscreend: %s", gs_error_get());
    assert_true(gs_config_is_set(c, GS_CFG_COORDINATOR_HEARTBEAT_MS));
    gs_config_destroy(&c);
    for (size_t s = 0; s < N_STAGES; s++) {
        gs_stage_config sc;
        gs_stage_config_default(&sc, STAGES[s]);
        if (gs_stage_config_load(&sc, example_path()) != 0)
            fail_msg("gastroscreen-%s: %s", gs_stage_name(STAGES[s]), gs_error_get());
        assert_string_equal(sc.work, "tcp://localhost:5554");
        assert_int_equal(sc.heartbeat_ms, 1000);
        assert_int_equal(sc.liveness, 5);
    }
}

/* Loads text through gastroscreend's reader and every stage's; each must fail with the same
 * message, which contains want (with the temporary file's path for "%s"). */
static void both_refuse(const char *text, const char *want_fmt)
{
    const char *p = write_conf(text);
    char want[512];
    snprintf(want, sizeof want, want_fmt, p);
    gs_config *c = gs_config_new();
    gs_error_clear();
    assert_int_equal(gs_config_load(c, p), -1);
    char daemon_error[1024];
    snprintf(daemon_error, sizeof daemon_error, "%s", gs_error_get());
    gs_config_destroy(&c);
    if (!strstr(daemon_error, want))
        fail_msg("gastroscreend: \"%s\" lacks \"%s\"", daemon_error, want);
    for (size_t s = 0; s < N_STAGES; s++) {
        gs_stage_config sc;
        gs_stage_config_default(&sc, STAGES[s]);
        gs_error_clear();
        assert_int_equal(gs_stage_config_load(&sc, p), -1);
        if (strcmp(gs_error_get(), daemon_error))
            fail_msg("gastroscreen-%s: \"%s\", gastroscreend: \"%s\"", gs_stage_name(STAGES[s]),
                     gs_error_get(), daemon_error);
    }
    unlink(p);
}

static void readers_agree_on_every_key(void **state)
{
    (void)state;
    /* Once 10..60000 for the workers and 100..60000 for gastroscreend. */
    both_refuse("[coordinator]\nheartbeat_ms = 50\n",
                "%s:2: [coordinator] heartbeat_ms: 50 is out of range 100..60000");
    both_refuse("[coordinator]\nliveness = 1\n",
                "%s:2: [coordinator] liveness: 1 is out of range 2..100");
    /* Keys of other processes are checked too. */
    both_refuse("[infer]\n\nbatch = 0\n", "%s:3: [infer] batch: 0 is out of range 1..1024");
    both_refuse("[coordinator]\nloss_grace = 15y\n", "%s:2: [coordinator] loss_grace:");
    both_refuse("[screener]\nbogus = 1\n", "%s:2: [screener] bogus: unknown key");
    both_refuse("[nosuch]\nx = 1\n", "%s:2: [nosuch]: unknown section");
    both_refuse("[tiler]\nthreads = 2\nthreads = 3\n", "%s:3: [tiler] threads: set twice");
    both_refuse("[coordinator]\njournal_dir = relative\n",
                "%s:2: [coordinator] journal_dir: \"relative\" is not an absolute path");
    both_refuse("[blur]\nblur_sample = 4\n\nblur_min_valid = 8\n",
                "%s:4: [blur] blur_min_valid: 8 exceeds blur_sample 4");

    const char *p = write_conf("[coordinator]\nheartbeat_ms = 100\nliveness = 2\n");
    gs_config *c = gs_config_new();
    assert_int_equal(gs_config_load(c, p), 0);
    assert_int_equal(c->heartbeat_ms, 100);
    assert_int_equal(c->liveness, 2);
    gs_config_destroy(&c);
    gs_stage_config sc;
    gs_stage_config_default(&sc, GASTROSCREEN__V1__STAGE__STAGE_BLUR);
    assert_int_equal(gs_stage_config_load(&sc, p), 0);
    assert_int_equal(sc.heartbeat_ms, 100);
    assert_int_equal(sc.liveness, 2);
    unlink(p);
}

/* stride is the window step: any value but tile_size would fail every slide (the heat map and
 * the ledger assume the tiles partition the slide), so both readers refuse it up front. */
static void stride_must_equal_tile_size(void **state)
{
    (void)state;
    both_refuse("[foreground]\nstride = 256\n",
                "%s:2: [foreground] stride: 256 differs from tile_size 512: overlapping windows "
                "are not supported");
    /* A changed tile_size alone: the error is on its line, and still names stride. */
    both_refuse("[foreground]\n\ntile_size = 256\n",
                "%s:3: [foreground] stride: 512 differs from tile_size 256");
    both_refuse("[foreground]\nstride = 256\ntile_size = 1024\n", "%s:3: [foreground] stride:");
    /* Tiles the pipeline could never carry or infer are refused too. */
    both_refuse("[foreground]\ntile_size = 1696\nstride = 1696\n",
                "%s:2: [foreground] tile_size: 1696 is out of range 64..1672");
    both_refuse("[foreground]\ntile_size = 500\nstride = 500\n",
                "%s:2: [foreground] tile_size: 500 is not a multiple of 32");

    const char *p = write_conf("[foreground]\ntile_size = 256\nstride = 256\n");
    gs_config *c = gs_config_new();
    if (gs_config_load(c, p) != 0)
        fail_msg("%s", gs_error_get());
    assert_int_equal(c->tile_size, 256);
    assert_int_equal(c->stride, 256);
    gs_config_destroy(&c);
    gs_stage_config sc;
    gs_stage_config_default(&sc, GASTROSCREEN__V1__STAGE__STAGE_FOREGROUND);
    assert_int_equal(gs_stage_config_load(&sc, p), 0);
    unlink(p);
}

/* The plan's work caps reach the foreground worker and the embedded mode, defaults included
 * (0 would mean no cap). */
static void plan_caps_reach_both_readers(void **state)
{
    (void)state;
    gs_stage_config sc;
    gs_stage_config_default(&sc, GASTROSCREEN__V1__STAGE__STAGE_FOREGROUND);
    assert_true(sc.max_slide_mpx == 100000 && sc.max_thumbnail_mpx == 1000);
    assert_int_equal(sc.plan_budget_ms, 120000);
    const char *p = write_conf("[foreground]\nmax_slide_mpx = 50000\nplan_budget = 30s\n");
    gs_config *c = gs_config_new();
    if (gs_config_load(c, p) != 0)
        fail_msg("%s", gs_error_get());
    assert_true(c->max_slide_mpx == 50000 && c->max_thumbnail_mpx == 1000);
    assert_int_equal(c->plan_budget_ms, 30000);
    gs_config_destroy(&c);
    assert_int_equal(gs_stage_config_load(&sc, p), 0);
    assert_true(sc.max_slide_mpx == 50000 && sc.max_thumbnail_mpx == 1000);
    assert_int_equal(sc.plan_budget_ms, 30000);
    unlink(p);
}

static void values_record_what_the_file_set(void **state)
{
    (void)state;
    const char *p = write_conf("[screener]\nthreshold = 0.6\n[intake]\nslide_roots = /a\n"
                               "  /b /c\n[infer]\nbatch = 2\n");
    gs_config_values *v = gs_config_values_new();
    assert_non_null(v);
    assert_int_equal(gs_config_values_is_set(v, GS_CFG_SCREENER_THRESHOLD), 0);
    if (gs_config_values_load(v, p) != 0)
        fail_msg("%s", gs_error_get());
    assert_int_equal(gs_config_values_is_set(v, GS_CFG_SCREENER_THRESHOLD), 1);
    assert_int_equal(gs_config_values_line(v, GS_CFG_SCREENER_THRESHOLD), 2);
    assert_true(gs_config_values_get(v, GS_CFG_SCREENER_THRESHOLD)->number == 0.6);
    assert_int_equal(gs_config_values_is_set(v, GS_CFG_SCREENER_TOP_K), 0);
    assert_int_equal(gs_config_values_line(v, GS_CFG_SCREENER_TOP_K), 0);
    assert_int_equal(gs_config_values_get(v, GS_CFG_SCREENER_TOP_K)->count, 64);
    assert_string_equal(gs_config_values_get(v, GS_CFG_INTAKE_SLIDE_ROOTS)->text, "/a /b /c");
    assert_int_equal(gs_config_values_line(v, GS_CFG_INTAKE_SLIDE_ROOTS), 5);
    gs_config_values_destroy(&v);
    assert_null(v);
    gs_config_values_destroy(&v);

    gs_config *c = gs_config_new();
    assert_int_equal(gs_config_load(c, p), 0);
    assert_int_equal(gs_config_is_set(c, GS_CFG_SCREENER_THRESHOLD), 1);
    assert_int_equal(gs_config_is_set(c, GS_CFG_SCREENER_TOP_K), 0);
    assert_true(c->threshold == 0.6);
    assert_int_equal(c->n_slide_roots, 3);
    gs_config_destroy(&c);

    gs_stage_config sc;
    gs_stage_config_default(&sc, GASTROSCREEN__V1__STAGE__STAGE_INFER);
    assert_int_equal(gs_stage_config_load(&sc, p), 0);
    assert_int_equal(sc.batch, 2);
    assert_int_equal(gs_stage_config_is_set(&sc, GS_CFG_INFER_BATCH), 1);
    assert_int_equal(gs_stage_config_is_set(&sc, GS_CFG_INFER_THREADS), 0);
    unlink(p);
}

/* A flag takes its key's range and counts as set; a stage without the key has no flag. */
static void stage_flags_use_the_schema(void **state)
{
    (void)state;
    gs_stage_config sc;
    int help = 0;
    gs_stage_config_default(&sc, GASTROSCREEN__V1__STAGE__STAGE_INFER);
    assert_int_equal(sc.threads, 2);
    assert_int_equal(sc.batch, 4);
    char *ok[] = {"x", "--heartbeat-ms", "250", "--batch", "16", "--coordinator", "tcp://*:7000"};
    assert_int_equal(gs_stage_config_args(&sc, 7, ok, &help), 0);
    assert_int_equal(sc.heartbeat_ms, 250);
    assert_int_equal(sc.batch, 16);
    assert_string_equal(sc.work, "tcp://localhost:7000");
    assert_int_equal(gs_stage_config_is_set(&sc, GS_CFG_COORDINATOR_HEARTBEAT_MS), 1);
    assert_int_equal(gs_stage_config_is_set(&sc, GS_CFG_INFER_BATCH), 1);

    char *slow[] = {"x", "--heartbeat-ms", "50"};
    assert_int_equal(gs_stage_config_args(&sc, 3, slow, &help), -1);
    assert_string_equal(gs_error_get(), "--heartbeat-ms: 50 is out of range 100..60000");
    char *threads[] = {"x", "--threads", "0"};
    assert_int_equal(gs_stage_config_args(&sc, 3, threads, &help), -1);
    assert_string_equal(gs_error_get(), "--threads: 0 is out of range 1..256");

    gs_stage_config_default(&sc, GASTROSCREEN__V1__STAGE__STAGE_TILER);
    assert_int_equal(sc.batch, 1);
    assert_int_equal(sc.tile_hwm, 8);
    char *batch[] = {"x", "--batch", "4"};
    assert_int_equal(gs_stage_config_args(&sc, 3, batch, &help), -1);
    assert_string_equal(gs_error_get(), "--batch: not an option of gastroscreen-tiler");
    char *hwm[] = {"x", "--tile-hwm", "32"};
    assert_int_equal(gs_stage_config_args(&sc, 3, hwm, &help), -1);
    assert_string_equal(gs_error_get(), "--tile-hwm: 32 is out of range 4..16");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(table_is_complete_and_defaults_parse),
        cmocka_unit_test(ranges_and_values),
        cmocka_unit_test(example_documents_exactly_the_schema),
        cmocka_unit_test(example_loads_through_both_readers),
        cmocka_unit_test(readers_agree_on_every_key),
        cmocka_unit_test(stride_must_equal_tile_size),
        cmocka_unit_test(plan_caps_reach_both_readers),
        cmocka_unit_test(values_record_what_the_file_set),
        cmocka_unit_test(stage_flags_use_the_schema),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
