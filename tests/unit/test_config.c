#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/service/config.h"
#include "ops/error.h"

static char tmp_path[64];

static const char *write_conf(const char *text)
{
    snprintf(tmp_path, sizeof tmp_path, "/tmp/gs_test_config_XXXXXX");
    int fd = mkstemp(tmp_path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return tmp_path;
}

static char *example_path(void)
{
    const char *src = getenv("GS_SOURCE_DIR");
    assert_non_null(src);
    static char p[4096];
    snprintf(p, sizeof p, "%s/systemd/gastroscreen.conf", src);
    return p;
}

static void defaults(void **state)
{
    (void)state;
    gs_config *c = gs_config_new();
    assert_non_null(c);
    assert_string_equal(c->intake, "tcp://*:5550");
    assert_string_equal(c->work, "tcp://*:5554");
    assert_string_equal(c->intake_connect, "");
    assert_int_equal(c->heartbeat_ms, 1000);
    assert_int_equal(c->liveness, 5);
    assert_int_equal(c->tile_stall_timeout_ms, 120000);
    assert_int_equal(c->loss_grace_ms, 15000);
    assert_int_equal(c->plan_timeout_ms, 300000);
    assert_int_equal(c->screen_timeout_ms, 60000);
    assert_int_equal(c->journal_retention_ms, 7LL * 86400 * 1000);
    assert_int_equal(c->tile_max_requests, 3);
    assert_int_equal(c->job_max_sends, 3);
    assert_int_equal(c->poison_limit, 3);
    assert_int_equal(c->max_attempts, 5);
    assert_int_equal(c->max_slides_in_flight, 2);
    assert_true(c->max_error_fraction == 0.05);
    assert_int_equal(c->n_slide_roots, 1);
    assert_string_equal(c->slide_roots[0], "/srv/slides");
    assert_int_equal(c->watch_settle_ms, 5000);
    /* the tissue code's values (stages/slide/tissue.h), as PROTOCOL.md §15 */
    assert_true(c->min_tissue_fraction == 0.25);
    assert_true(c->mask_mpp == 4.0);
    assert_int_equal(c->mask_max_dim, 4096);
    assert_true(c->target_mpp == 0.5);
    assert_true(c->default_mpp == 0.25);
    assert_int_equal(c->tile_size, 512);
    assert_int_equal(c->blur_sample, 32);
    assert_int_equal(c->blur_min_valid, 8);
    assert_true(c->blur_slide_fraction == 0.5);
    assert_int_equal(c->tile_hwm, 8);
    assert_int_equal(c->tiles_per_job, 16);
    assert_int_equal(c->heatmap_size, 64);
    assert_true(c->threshold == 0.74);
    assert_int_equal(c->top_k, 64);
    gs_config_destroy(&c);
    assert_null(c);
    gs_config_destroy(&c);
}

/* The example shows every key with its default value: loading it gives exactly the
 * defaults. */
static void example_file_loads_and_matches_defaults(void **state)
{
    (void)state;
    gs_config *d = gs_config_new();
    gs_config *c = gs_config_new();
    if (gs_config_load(c, example_path()) != 0)
        fail_msg("%s", gs_error_get());
#define SAME_STR(f) assert_string_equal(c->f, d->f)
#define SAME_NUM(f) assert_true(c->f == d->f)
    SAME_STR(intake);
    SAME_STR(intake_connect);
    SAME_STR(submit);
    SAME_STR(query);
    SAME_STR(events);
    SAME_STR(work);
    SAME_STR(journal_dir);
    SAME_STR(spool_dir);
    SAME_STR(metrics);
    SAME_STR(watch_dir);
    SAME_STR(bundle);
    SAME_STR(blur_tile_inbox);
    SAME_STR(blur_advertise_host);
    SAME_STR(infer_tile_inbox);
    SAME_STR(infer_advertise_host);
    SAME_STR(report_dir);
    SAME_NUM(heartbeat_ms);
    SAME_NUM(liveness);
    SAME_NUM(max_slides_in_flight);
    SAME_NUM(tiles_per_job);
    SAME_NUM(journal_retention_ms);
    SAME_NUM(tile_stall_timeout_ms);
    SAME_NUM(loss_grace_ms);
    SAME_NUM(plan_timeout_ms);
    SAME_NUM(screen_timeout_ms);
    SAME_NUM(report_timeout_ms);
    SAME_NUM(tile_max_requests);
    SAME_NUM(job_max_sends);
    SAME_NUM(poison_limit);
    SAME_NUM(max_attempts);
    SAME_NUM(max_error_fraction);
    SAME_NUM(n_slide_roots);
    SAME_STR(slide_roots[0]);
    SAME_NUM(watch_settle_ms);
    SAME_NUM(foreground_threads);
    SAME_NUM(target_mpp);
    SAME_NUM(default_mpp);
    SAME_NUM(min_tissue_fraction);
    SAME_NUM(mask_mpp);
    SAME_NUM(tile_size);
    SAME_NUM(stride);
    SAME_NUM(thumbnail_size);
    SAME_NUM(mask_max_dim);
    SAME_NUM(tiler_threads);
    SAME_NUM(tile_hwm);
    SAME_NUM(blur_threads);
    SAME_NUM(blur_batch);
    SAME_NUM(blur_sample);
    SAME_NUM(blur_min_valid);
    SAME_NUM(blur_slide_fraction);
    SAME_NUM(focus_threshold);
    SAME_NUM(sparse_tissue);
    SAME_NUM(infer_threads);
    SAME_NUM(infer_batch);
    SAME_NUM(heatmap_size);
    SAME_NUM(screener_threads);
    SAME_NUM(top_k);
    SAME_NUM(threshold);
    SAME_NUM(reporter_threads);
    gs_config_destroy(&c);
    gs_config_destroy(&d);

    /* that every key is documented, with its range: test_config_schema */
}

static void values_override_defaults(void **state)
{
    (void)state;
    gs_config *c = gs_config_new();
    const char *p = write_conf("; a comment\n"
                               "[coordinator]\n"
                               "work = ipc:///run/gastroscreen/work.sock\n"
                               "tile_stall_timeout = 2m\n"
                               "loss_grace = 500ms\n"
                               "journal_retention = 30d\n"
                               "plan_timeout = 90\n"
                               "[intake]\n"
                               "slide_roots = /srv/a  /mnt/scans\n"
                               "  /mnt/more\n"
                               "[infer]\n"
                               "batch = 16\n"
                               "threads = 8\n"
                               "[screener]\n"
                               "threshold = 0.6\n");
    if (gs_config_load(c, p) != 0)
        fail_msg("%s", gs_error_get());
    unlink(p);
    assert_string_equal(c->work, "ipc:///run/gastroscreen/work.sock");
    assert_int_equal(c->tile_stall_timeout_ms, 120000);
    assert_int_equal(c->loss_grace_ms, 500);
    assert_int_equal(c->journal_retention_ms, 30LL * 86400 * 1000);
    assert_int_equal(c->plan_timeout_ms, 90000);
    assert_int_equal(c->n_slide_roots, 3);
    assert_string_equal(c->slide_roots[0], "/srv/a");
    assert_string_equal(c->slide_roots[1], "/mnt/scans");
    assert_string_equal(c->slide_roots[2], "/mnt/more");
    assert_int_equal(c->infer_batch, 16);
    assert_int_equal(c->infer_threads, 8);
    assert_true(c->threshold == 0.6);
    assert_int_equal(c->blur_batch, 8); /* untouched */
    assert_int_equal(gs_config_is_set(c, GS_CFG_INFER_BATCH), 1);
    assert_int_equal(gs_config_is_set(c, GS_CFG_BLUR_BATCH), 0);
    gs_config_destroy(&c);

    /* an empty file is all defaults */
    c = gs_config_new();
    p = write_conf("");
    assert_int_equal(gs_config_load(c, p), 0);
    unlink(p);
    assert_int_equal(c->infer_batch, 4);
    gs_config_destroy(&c);
}

/* Loads text and expects an error containing every needle. */
static void expect_error(const char *text, const char *n1, const char *n2)
{
    gs_config *c = gs_config_new();
    const char *p = write_conf(text);
    gs_error_clear();
    assert_int_equal(gs_config_load(c, p), -1);
    const char *e = gs_error_get();
    if (!strstr(e, p) || !strstr(e, n1) || (n2 && !strstr(e, n2)))
        fail_msg("error \"%s\" lacks \"%s\" / \"%s\"", e, n1, n2 ? n2 : "");
    unlink(p);
    gs_config_destroy(&c);
}

static void errors_name_file_line_and_key(void **state)
{
    (void)state;
    expect_error("[coordinator]\nliveness = 5\nbogus = 1\n",
                 ":3: ", "[coordinator] bogus: unknown key");
    expect_error("[nosuch]\nx = 1\n", ":2: ", "[nosuch]: unknown section");
    expect_error("[infer]\nbatch = many\n",
                 ":2: ", "[infer] batch: \"many\" is not a whole number");
    expect_error("[infer]\n\nbatch = 0\n", ":3: ", "[infer] batch: 0 is out of range 1..1024");
    expect_error("[infer]\nbatch = 4.5\n", ":2: ", "[infer] batch");
    expect_error("[infer]\nbatch = -3\n", ":2: ", "out of range");
    expect_error("[screener]\nthreshold = 1.5\n",
                 ":2: ", "[screener] threshold: 1.5 is out of range");
    expect_error("[screener]\nthreshold = nan\n", ":2: ", "[screener] threshold");
    expect_error("[tiler]\ntile_hwm = 32\n", ":2: ", "[tiler] tile_hwm");
    expect_error("[coordinator]\nloss_grace = 15 s\n", ":2: ", "[coordinator] loss_grace");
    expect_error("[coordinator]\nloss_grace = 15y\n", ":2: ", "unknown unit");
    expect_error("[coordinator]\nplan_timeout = 10ms\n", ":2: ", "[coordinator] plan_timeout");
    expect_error("[coordinator]\nliveness = 4\nheartbeat_ms = 500\nliveness = 6\n",
                 ":4: ", "[coordinator] liveness: set twice");
    expect_error("liveness = 4\n", ":1: ", "liveness: key outside a section");
    expect_error("[coordinator]\nthis line has no equals sign\n", ":2: ", "syntax error");
    expect_error("[intake]\nslide_roots = relative/path\n", ":2: ", "[intake] slide_roots");
    /* only the first error is reported, with its own line */
    expect_error("[infer]\nbatch = 0\nthreads = 0\n", ":2: ", "[infer] batch");
    /* cross-key checks name the keys */
    expect_error("[blur]\nblur_sample = 4\nblur_min_valid = 8\n", "blur_min_valid", "blur_sample");
    expect_error("[foreground]\nstride = 1024\n", "stride", "tile_size");
    expect_error("[coordinator]\njournal_dir = relative\n", "journal_dir", NULL);

    /* a line inih would cut is refused with its own line number */
    char longline[400];
    snprintf(longline, sizeof longline, "[intake]\nwatch_dir = /%0*d\n[infer]\n", 250, 0);
    expect_error(longline, ":2: ", "longer than");
    char fits[400];
    snprintf(fits, sizeof fits, "[intake]\nwatch_dir = /%0*d\n", GS_CONFIG_MAX_LINE - 13, 0);
    gs_config *c = gs_config_new();
    const char *p = write_conf(fits);
    assert_int_equal(gs_config_load(c, p), 0);
    unlink(p);
    assert_int_equal(strlen(c->watch_dir), GS_CONFIG_MAX_LINE - 12);
    gs_config_destroy(&c);

    c = gs_config_new();
    assert_int_equal(gs_config_load(c, "/nonexistent/gastroscreen.conf"), -1);
    assert_non_null(strstr(gs_error_get(), "/nonexistent/gastroscreen.conf: No such file"));
    gs_config_destroy(&c);
}

static void durations(void **state)
{
    (void)state;
    int64_t ms = 0;
    assert_int_equal(gs_config_parse_duration("250ms", &ms), 0);
    assert_int_equal(ms, 250);
    assert_int_equal(gs_config_parse_duration("1.5s", &ms), 0);
    assert_int_equal(ms, 1500);
    assert_int_equal(gs_config_parse_duration("7d", &ms), 0);
    assert_int_equal(ms, 604800000);
    assert_int_equal(gs_config_parse_duration("2h", &ms), 0);
    assert_int_equal(ms, 7200000);
    assert_int_equal(gs_config_parse_duration("3", &ms), 0);
    assert_int_equal(ms, 3000);
    assert_int_equal(gs_config_parse_duration("", &ms), -1);
    assert_int_equal(gs_config_parse_duration("-1s", &ms), -1);
    assert_int_equal(gs_config_parse_duration("1e300d", &ms), -1);
    assert_int_equal(gs_config_parse_duration("5 m", &ms), -1);
}

typedef struct {
    int n;
    char last[1024];
} warnings;

static void collect(const char *line, void *ud)
{
    warnings *w = ud;
    w->n++;
    snprintf(w->last, sizeof w->last, "%s", line);
}

/* The folders a service needs are looked at once at start: none at all refuses, the rest warn
 * with the key and the path. */
static void start_checks_folders(void **state)
{
    (void)state;
    char root[] = "/tmp/gs_test_roots_XXXXXX";
    assert_non_null(mkdtemp(root));
    char conf[1024], watch[sizeof root + 16], ro[sizeof root + 16];
    snprintf(watch, sizeof watch, "%s/in", root);
    snprintf(ro, sizeof ro, "%s/ro", root);
    assert_int_equal(mkdir(watch, 0755), 0);
    assert_int_equal(mkdir(ro, 0555), 0);
    warnings w = {0};
    gs_config *c = gs_config_new();

    snprintf(conf, sizeof conf, "[intake]\nslide_roots = %s\nwatch_dir = %s\n", root, watch);
    assert_int_equal(gs_config_load(c, write_conf(conf)), 0);
    unlink(tmp_path);
    assert_int_equal(gs_config_check_start(c, collect, &w), 0);
    assert_int_equal(w.n, 0);

    snprintf(conf, sizeof conf, "[intake]\nslide_roots = %s/gone\nwatch_dir = /\n", root);
    assert_int_equal(gs_config_load(c, write_conf(conf)), 0);
    unlink(tmp_path);
    assert_int_equal(gs_config_check_start(c, collect, &w), 0);
    assert_int_equal(w.n, 2);
    assert_non_null(strstr(w.last, "[intake] watch_dir: / is outside every slide root"));

    w.n = 0;
    snprintf(conf, sizeof conf, "[intake]\nslide_roots = %s\nwatch_dir = %s/nope\n", root, root);
    assert_int_equal(gs_config_load(c, write_conf(conf)), 0);
    unlink(tmp_path);
    assert_int_equal(gs_config_check_start(c, collect, &w), 0);
    assert_int_equal(w.n, 1);
    assert_non_null(strstr(w.last, "[intake] watch_dir:"));
    assert_non_null(strstr(w.last, "No such file or directory"));

    /* A report folder this process cannot write (root can write anything: skipped as root). */
    if (geteuid() != 0) {
        w.n = 0;
        snprintf(conf, sizeof conf, "[intake]\nslide_roots = %s\n[reporter]\nreport_dir = %s\n",
                 root, ro);
        assert_int_equal(gs_config_load(c, write_conf(conf)), 0);
        unlink(tmp_path);
        assert_int_equal(gs_config_check_start(c, collect, &w), 0);
        assert_int_equal(w.n, 1);
        assert_non_null(strstr(w.last, "[reporter] report_dir:"));
    }

    /* No slide root at all: refused. */
    assert_int_equal(gs_config_load(c, write_conf("[intake]\nslide_roots =\n")), 0);
    unlink(tmp_path);
    assert_int_equal(gs_config_check_start(c, collect, &w), -1);
    assert_non_null(strstr(gs_error_get(), "[intake] slide_roots is empty"));
    gs_config_destroy(&c);
    rmdir(watch);
    rmdir(ro);
    rmdir(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults),
        cmocka_unit_test(example_file_loads_and_matches_defaults),
        cmocka_unit_test(values_override_defaults),
        cmocka_unit_test(errors_name_file_line_and_key),
        cmocka_unit_test(durations),
        cmocka_unit_test(start_checks_folders),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
