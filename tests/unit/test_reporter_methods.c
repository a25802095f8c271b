/* The reporter lists in report.json every method that judged a slide: the tissue plan and the
 * blur check (classical or network, as the verdict names them), the multi-task network when it
 * inferred tiles and the screener when the verdict is its score. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto/gastroscreen.pb-c.h"
#include "stages/slide/report_files.h"
#include "stages/handlers/reporter.h"

#define SLIDE_ID "0123456789abcdef"
#define SHA "00000000000000000000000000000000000000000000000000000000000000aa"

static char tmp_root[64];

static int setup(void **state)
{
    (void)state;
    snprintf(tmp_root, sizeof tmp_root, "/tmp/gs_reporter_methods_XXXXXX");
    return mkdtemp(tmp_root) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_root);
    return system(cmd) == 0 ? 0 : -1;
}

/* A verdict and job about the sample slide, with the default bundle's provenance (untrained). */
typedef struct {
    char slide[4096], dir[256];
    Gastroscreen__V1__ModelProvenance mp;
    Gastroscreen__V1__TileCounts tc;
    Gastroscreen__V1__Verdict v;
    Gastroscreen__V1__SlideFacts facts;
    Gastroscreen__V1__TileGrid grid;
    Gastroscreen__V1__ReportJob job;
} job_buf;

static void make_job(job_buf *b, const char *name, Gastroscreen__V1__VerdictClass cls)
{
    memset(b, 0, sizeof *b);
    const char *data = getenv("GS_TEST_DATA");
    assert_non_null(data);
    snprintf(b->slide, sizeof b->slide, "%s/CMU-1-Small-Region.svs", data);
    snprintf(b->dir, sizeof b->dir, "%s/%s", tmp_root, name);
    gastroscreen__v1__model_provenance__init(&b->mp);
    b->mp.bundle = "default.safetensors";
    b->mp.sha256 = SHA;
    b->mp.format_version = "1";
    b->mp.trained_on = "untrained";
    b->mp.untrained = 1;
    b->mp.notice = GS_REPORT_UNTRAINED_NOTICE;
    gastroscreen__v1__tile_counts__init(&b->tc);
    gastroscreen__v1__verdict__init(&b->v);
    b->v.slide_id = SLIDE_ID;
    b->v.attempt = 1;
    b->v.path = b->slide;
    b->v.verdict_class = cls;
    b->v.threshold = 0.74f;
    b->v.reason = "why";
    b->v.model = &b->mp;
    b->v.tiles = &b->tc;
    gastroscreen__v1__slide_facts__init(&b->facts);
    b->facts.width = 2220;
    b->facts.height = 2967;
    b->facts.mpp_x = b->facts.mpp_y = 0.499;
    gastroscreen__v1__tile_grid__init(&b->grid);
    b->grid.tile_size = 512;
    b->grid.target_mpp = 0.5;
    b->grid.window_level0 = b->grid.stride_level0 = 1026;
    gastroscreen__v1__report_job__init(&b->job);
    b->job.slide_id = SLIDE_ID;
    b->job.attempt = 1;
    b->job.job_id = 5;
    b->job.path = b->slide;
    b->job.out_dir = b->dir;
    b->job.verdict = &b->v;
    b->job.facts = &b->facts;
    b->job.grid = &b->grid;
    b->job.heatmap_size = 16;
}

/* Writes the job's report and returns report.json's "models" array (a new reference kept
 * alive by *root, which the caller decrefs). */
static json_t *models_of(const job_buf *b, json_t **root)
{
    gs_reporter_options o;
    gs_reporter_options_default(&o);
    o.thumbnail_size = 64;
    gs_report_result *res = malloc(sizeof *res);
    assert_non_null(res);
    assert_int_equal(gs_reporter_write(&b->job, &o, NULL, res), 0);
    if (res->r.error && res->r.error[0])
        fail_msg("reporter: %s", res->r.error);
    json_error_t je;
    *root = json_load_file(res->r.paths->report_json, 0, &je);
    free(res);
    if (!*root)
        fail_msg("report.json: %s", je.text);
    json_t *m = json_object_get(*root, "models");
    assert_true(json_is_array(m));
    return m;
}

static const char *str(const json_t *entry, const char *key)
{
    const char *s = json_string_value(json_object_get(entry, key));
    return s ? s : "(null)";
}

static int is_null(const json_t *entry, const char *key)
{
    return json_is_null(json_object_get(entry, key));
}

static void assert_classical(const json_t *e, const char *network, const char *words)
{
    assert_string_equal(str(e, "network"), network);
    assert_string_equal(str(e, "method"), "classical");
    assert_non_null(strstr(str(e, "algorithm"), words));
    assert_string_equal(str(e, "version"), "gastroscreen " GS_VERSION);
    assert_true(is_null(e, "bundle"));
    assert_true(is_null(e, "sha256"));
    assert_true(is_null(e, "format_version"));
    assert_true(is_null(e, "trained_on"));
    assert_true(json_is_false(json_object_get(e, "untrained")));
}

static void assert_network(const json_t *e, const char *network, int untrained)
{
    assert_string_equal(str(e, "network"), network);
    assert_string_equal(str(e, "method"), "network");
    assert_true(is_null(e, "algorithm"));
    assert_true(is_null(e, "version"));
    assert_string_equal(str(e, "bundle"), "default.safetensors");
    assert_string_equal(str(e, "sha256"), SHA);
    assert_string_equal(str(e, "format_version"), "1");
    assert_int_equal(json_is_true(json_object_get(e, "untrained")), untrained);
}

/* Out of focus at the blur check, plan and blur both classical: the two classical entries
 * and nothing else (the multi-task network and the screener never ran). */
static void blur_exit_lists_classical_plan_and_blur(void **state)
{
    (void)state;
    job_buf b;
    make_job(&b, "oof", GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_UNASSESSABLE);
    b.v.reason = "out of focus: 27 of 32 sample tiles blurry";
    b.tc.planned = 40;
    b.tc.blurry = 27;
    b.v.blur_sample_judged = 32;
    b.v.blurred_fraction = 27.f / 32.f;
    b.v.foreground_method = GASTROSCREEN__V1__METHOD__METHOD_CLASSICAL;
    b.v.blur_method = GASTROSCREEN__V1__METHOD__METHOD_CLASSICAL;
    json_t *root;
    json_t *m = models_of(&b, &root);
    assert_int_equal(json_array_size(m), 2);
    assert_classical(json_array_get(m, 0), "foreground", "Otsu");
    assert_classical(json_array_get(m, 1), "blur", "Laplacian");
    /* The bundle in use is untrained, so the notice stays although no network judged. */
    assert_true(json_is_true(json_object_get(root, "untrained")));
    assert_string_equal(json_string_value(json_object_get(root, "notice")),
                        GS_REPORT_UNTRAINED_NOTICE);
    json_decref(root);
}

/* A screened slide: plan classical, blur by a trained network, then the multi-task network and
 * the screener of the same (otherwise untrained) bundle, in pipeline order. */
static void screened_slide_lists_all_four(void **state)
{
    (void)state;
    job_buf b;
    make_job(&b, "pos", GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_POSITIVE);
    b.v.score = 0.9f;
    b.tc.planned = 40;
    b.tc.inferred = 36;
    b.tc.background = 4;
    b.v.blur_sample_judged = 32;
    b.v.foreground_method = GASTROSCREEN__V1__METHOD__METHOD_CLASSICAL;
    b.v.blur_method = GASTROSCREEN__V1__METHOD__METHOD_NETWORK;
    b.mp.precision = "bf16";
    json_t *root;
    json_t *m = models_of(&b, &root);
    assert_int_equal(json_array_size(m), 4);
    assert_classical(json_array_get(m, 0), "foreground", "colour deconvolution");
    assert_network(json_array_get(m, 1), "blur", 0);
    assert_network(json_array_get(m, 2), "multitask", 1);
    assert_network(json_array_get(m, 3), "screener", 1);
    /* The precision belongs to the multi-task network alone (the others have no setting). */
    assert_string_equal(str(json_array_get(m, 2), "precision"), "bf16");
    assert_true(is_null(json_array_get(m, 1), "precision"));
    assert_true(is_null(json_array_get(m, 3), "precision"));
    assert_true(is_null(json_array_get(m, 0), "precision"));
    json_decref(root);
}

/* The verdict does not name the methods (a slide planned before they were recorded): the
 * stages that ran are "unknown", never guessed; a stage that did not run has no entry. */
static void unknown_methods_are_stated_not_invented(void **state)
{
    (void)state;
    job_buf b;
    make_job(&b, "unknown", GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_UNASSESSABLE);
    b.v.blur_sample_judged = 32;
    json_t *root;
    json_t *m = models_of(&b, &root);
    assert_int_equal(json_array_size(m), 2);
    for (size_t i = 0; i < 2; i++) {
        const json_t *e = json_array_get(m, i);
        assert_string_equal(str(e, "network"), i == 0 ? "foreground" : "blur");
        assert_string_equal(str(e, "method"), "unknown");
        assert_true(is_null(e, "algorithm"));
        assert_true(is_null(e, "bundle"));
    }
    json_decref(root);

    /* No tissue: the plan ran (classical), the blur check never did. */
    make_job(&b, "no-tissue", GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_UNASSESSABLE);
    b.v.reason = "no tissue";
    b.v.foreground_method = GASTROSCREEN__V1__METHOD__METHOD_CLASSICAL;
    m = models_of(&b, &root);
    assert_int_equal(json_array_size(m), 1);
    assert_classical(json_array_get(m, 0), "foreground", "Otsu");
    json_decref(root);

    /* A plan that failed: no plan, no method, no entry. */
    make_job(&b, "failed", GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_FAILED);
    b.v.reason = "plan: openslide: cannot open";
    b.job.facts = NULL;
    b.job.grid = NULL;
    m = models_of(&b, &root);
    assert_int_equal(json_array_size(m), 0);
    json_decref(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(blur_exit_lists_classical_plan_and_blur),
        cmocka_unit_test(screened_slide_lists_all_four),
        cmocka_unit_test(unknown_methods_are_stated_not_invented),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
