/*
 * The blur network's sparse-tissue rule (stages/handlers/blur.h, bundle key
 * threshold.blur_sparse_tissue) on the committed trained blur network and real held-out crops
 * of CMU-1-Small-Region (tests/unit/make_blur_sparse_crops.py): a defocused crop that is mostly
 * glass, which the network alone calls sharp, is blurry with the key (the classical measure
 * catches it) and sharp without it; its sharp twin stays sharp; a dense-tissue crop is judged
 * by the network alone whatever the classical measure would say; the configured classical
 * threshold (focus_threshold >= 1) is the one the check uses; a key outside 0..1 is refused
 * naming it. A job's sparse_tissue (BlurJob/InferJob) overrides the key: negative turns the
 * rule off in the blur stage and the infer worker alike, a share turns it on or moves it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/network.h"
#include "ops/error.h"
#include "ops/focus.h"
#include "stages/handlers/blur.h"
#include "stages/handlers/infer.h"
#include "stages/slide/png_io.h"

typedef struct {
    gs_model *with_key, *without_key;
    gs_blur *on, *off;
} fixture;

static const char *path_in(const char *env, const char *rel)
{
    static char p[4][4096];
    static int i;
    const char *d = getenv(env);
    assert_non_null(d);
    i = (i + 1) % 4;
    snprintf(p[i], sizeof p[i], "%s/%s", d, rel);
    return p[i];
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->with_key = gs_model_load(path_in("GS_SOURCE_DIR", "model/trained/blur.safetensors"));
    assert_non_null(f->with_key);
    f->without_key =
        gs_model_load(path_in("GS_BUILD_DIR", "tests/blur-sparse/blur-nokey.safetensors"));
    assert_non_null(f->without_key);
    assert_true(gs_model_get_thresholds(f->with_key).blur_sparse_tissue == 0.5f);
    assert_true(gs_model_get_thresholds(f->without_key).blur_sparse_tissue == 0.0f);
    f->on = gs_blur_new(f->with_key, NULL);
    f->off = gs_blur_new(f->without_key, NULL);
    assert_non_null(f->on);
    assert_non_null(f->off);
    assert_int_equal(gs_blur_method(f->on), GASTROSCREEN__V1__METHOD__METHOD_NETWORK);
    assert_int_equal(gs_blur_method(f->off), GASTROSCREEN__V1__METHOD__METHOD_NETWORK);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    gs_blur_destroy(&f->on);
    gs_blur_destroy(&f->off);
    gs_model_destroy(&f->with_key);
    gs_model_destroy(&f->without_key);
    free(f);
    return 0;
}

/* The crop <name>.png (GS_BLUR_CROP square, RGB; caller frees). */
static uint8_t *crop(const char *name)
{
    char rel[256];
    snprintf(rel, sizeof rel, "tests/blur-sparse/%s.png", name);
    uint8_t *px = NULL;
    int w = 0, h = 0;
    assert_int_equal(gs_png_read(path_in("GS_BUILD_DIR", rel), 3, &px, &w, &h), 0);
    assert_int_equal(w, GS_BLUR_CROP);
    assert_int_equal(h, GS_BLUR_CROP);
    return px;
}

/* Judges the crop <name>.png with state b, the job's focus_threshold t and sparse_tissue s. */
static gs_focus_judgement judge_rule(gs_blur *b, const char *name, double t, double s)
{
    uint8_t *px = crop(name);
    gs_focus_judgement j;
    assert_int_equal(gs_blur_judge_pixels(b, px, GS_BLUR_CROP, GS_BLUR_CROP, 3, t, s, &j), 0);
    assert_string_equal(j.error, "");
    printf("%-14s t %-6g s %-5g below %.2f tissue %.3f P(sharp) %.3f classical %s %.1f -> %s\n",
           name, t, s, j.sparse.below, j.sparse.tissue_fraction, j.focus,
           j.sparse.ran ? "ran" : "off", j.sparse.score, j.blurry ? "blurry" : "sharp");
    free(px);
    return j;
}

/* The same with the bundle's rule (a job that sets none). */
static gs_focus_judgement judge(gs_blur *b, const char *name, double t)
{
    return judge_rule(b, name, t, GS_BLUR_SPARSE_BUNDLE);
}

/* A blur-stage tile header for a GS_BLUR_CROP square RGB tile with BlurJob bj. */
static void blur_header(Gastroscreen__V1__TileHeader *hd, Gastroscreen__V1__BlurJob *bj)
{
    gastroscreen__v1__tile_header__init(hd);
    hd->job_case = GASTROSCREEN__V1__TILE_HEADER__JOB_BLUR;
    hd->blur = bj;
    hd->width = hd->height = GS_BLUR_CROP;
    hd->channels = 3;
    hd->pixel_format = GASTROSCREEN__V1__PIXEL_FORMAT__PIXEL_FORMAT_RGB8;
}

static void sparse_defocused_crop_blurry_only_with_the_key(void **state)
{
    fixture *f = *state;
    gs_focus_judgement off = judge(f->off, "sparse_gauss2", 0);
    /* the network alone calls it sharp: the miss the rule is for */
    assert_false(off.blurry);
    assert_true(off.focus > 1.0 - 0.54);
    assert_false(off.sparse.ran);
    assert_true(off.sparse.tissue_fraction < 0.2);

    gs_focus_judgement on = judge(f->on, "sparse_gauss2", 0);
    assert_true(on.blurry);
    assert_true(on.sparse.ran);
    assert_true(on.sparse.blurry);
    assert_true(on.sparse.score < GS_FOCUS_THRESHOLD);
    assert_true(on.sparse.threshold == GS_FOCUS_THRESHOLD);
    assert_true(on.focus == off.focus); /* focus stays the network's P(sharp) */
    assert_true(on.sparse.tissue_fraction == off.sparse.tissue_fraction);

    /* the same through the stage's BlurResult */
    uint8_t *px = crop("sparse_gauss2");
    const size_t len = (size_t)GS_BLUR_CROP * GS_BLUR_CROP * 3;
    Gastroscreen__V1__TileHeader hd;
    Gastroscreen__V1__BlurJob bj = GASTROSCREEN__V1__BLUR_JOB__INIT;
    blur_header(&hd, &bj);
    gs_blur_result res;
    assert_int_equal(gs_blur_judge(f->on, &hd, px, len, NULL, &res), 0);
    assert_true(!res.r.error || !res.r.error[0]); /* judged */
    assert_true(res.r.blurry);
    assert_int_equal(gs_blur_judge(f->off, &hd, px, len, NULL, &res), 0);
    assert_false(res.r.blurry);
    free(px);
}

/* BlurJob.sparse_tissue: negative turns the bundle's rule off (the crop the rule catches is
 * sharp again), 0 keeps the bundle's, a share replaces it (on a bundle without the key too),
 * and a share under the crop's tissue leaves the crop to the network. */
static void job_rule_overrides_the_bundle(void **state)
{
    fixture *f = *state;
    gs_focus_judgement j = judge_rule(f->on, "sparse_gauss2", 0, GS_BLUR_SPARSE_OFF);
    assert_false(j.blurry);
    assert_false(j.sparse.ran);
    assert_true(j.sparse.below == 0);
    j = judge_rule(f->off, "sparse_gauss2", 0, 0.5);
    assert_true(j.blurry);
    assert_true(j.sparse.ran);
    assert_true(j.sparse.below == 0.5);
    double tissue = j.sparse.tissue_fraction;
    assert_true(tissue > 0.01);
    j = judge_rule(f->on, "sparse_gauss2", 0, 0.01);
    assert_false(j.sparse.ran);
    assert_false(j.blurry);

    /* through the blur stage's header, as the coordinator sends it */
    uint8_t *px = crop("sparse_gauss2");
    const size_t len = (size_t)GS_BLUR_CROP * GS_BLUR_CROP * 3;
    Gastroscreen__V1__TileHeader hd;
    Gastroscreen__V1__BlurJob bj = GASTROSCREEN__V1__BLUR_JOB__INIT;
    blur_header(&hd, &bj);
    gs_blur_result res;
    bj.sparse_tissue = (float)GS_BLUR_SPARSE_OFF;
    assert_int_equal(gs_blur_judge(f->on, &hd, px, len, NULL, &res), 0);
    assert_true(!res.r.error || !res.r.error[0]);
    assert_false(res.r.blurry);
    bj.sparse_tissue = 0.5f;
    assert_int_equal(gs_blur_judge(f->off, &hd, px, len, NULL, &res), 0);
    assert_true(res.r.blurry);
    free(px);
}

/* InferJob.sparse_tissue: the infer worker judging every tile's focus (judge_focus) with the
 * default bundle's trained blur network answers the sparse defocused crop BLURRY under the
 * bundle's rule and infers it when the job turns the rule off. */
static void infer_worker_follows_the_jobs_rule(void **state)
{
    (void)state;
    gs_model *m = gs_model_load(path_in("GS_BUILD_DIR", "model/default.safetensors"));
    assert_non_null(m);
    assert_true(gs_model_get_thresholds(m).blur_sparse_tissue == 0.5f);
    gs_infer *inf = gs_infer_new(m, 1, NULL);
    assert_non_null(inf);
    uint8_t *px = crop("sparse_gauss2");
    size_t len = (size_t)GS_BLUR_CROP * GS_BLUR_CROP * 3;
    Gastroscreen__V1__TileHeader hd = GASTROSCREEN__V1__TILE_HEADER__INIT;
    Gastroscreen__V1__InferJob ij = GASTROSCREEN__V1__INFER_JOB__INIT;
    hd.slide_id = "0123456789abcdef0123456789abcdef";
    hd.attempt = 1;
    hd.tile_index = 7;
    hd.request = 1;
    hd.width = hd.height = GS_BLUR_CROP;
    hd.channels = 3;
    hd.pixel_format = GASTROSCREEN__V1__PIXEL_FORMAT__PIXEL_FORMAT_RGB8;
    hd.job_case = GASTROSCREEN__V1__TILE_HEADER__JOB_INFER;
    hd.infer = &ij;
    ij.heatmap_size = 16;
    ij.judge_focus = 1;
    const Gastroscreen__V1__TileHeader *hp[1] = {&hd};
    const uint8_t *pp[1] = {px};

    ij.sparse_tissue = (float)GS_BLUR_SPARSE_BUNDLE;
    assert_int_equal(gs_infer_run(inf, 1, hp, pp, &len, NULL, NULL), 0);
    const Gastroscreen__V1__TileResult *r = gs_infer_result(inf, 0);
    printf("bundle's rule: outcome %d focus %.3f %s\n", r->outcome, r->focus,
           r->error ? r->error : "");
    assert_int_equal(r->outcome, GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_BLURRY);
    assert_int_equal(r->focus_method, GASTROSCREEN__V1__METHOD__METHOD_NETWORK);

    ij.sparse_tissue = (float)GS_BLUR_SPARSE_OFF;
    assert_int_equal(gs_infer_run(inf, 1, hp, pp, &len, NULL, NULL), 0);
    r = gs_infer_result(inf, 0);
    printf("rule off: outcome %d focus %.3f %s\n", r->outcome, r->focus, r->error ? r->error : "");
    assert_int_equal(r->outcome, GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_INFERRED);
    assert_int_equal(r->focus_method, GASTROSCREEN__V1__METHOD__METHOD_NETWORK);
    assert_true(r->focus > 0.5);
    free(px);
    gs_infer_destroy(&inf);
    gs_model_destroy(&m);
}

static void sparse_sharp_crop_stays_sharp(void **state)
{
    fixture *f = *state;
    gs_focus_judgement on = judge(f->on, "sparse_sharp", 0);
    assert_false(on.blurry);
    assert_true(on.sparse.ran);
    assert_false(on.sparse.blurry);
    assert_false(judge(f->off, "sparse_sharp", 0).blurry);
}

static void dense_crop_judged_by_the_network_alone(void **state)
{
    fixture *f = *state;
    /* a classical threshold no crop reaches: the check would call anything blurry */
    const double strict = 100000;
    gs_focus_judgement d = judge(f->on, "dense_sharp", strict);
    assert_true(d.sparse.tissue_fraction >= 0.5);
    assert_false(d.sparse.ran);
    assert_false(d.blurry);
    assert_true(judge(f->on, "dense_gauss2", 0).blurry);
    assert_true(judge(f->off, "dense_gauss2", 0).blurry);
    assert_false(judge(f->on, "dense_sharp", 0).blurry);
    assert_false(judge(f->off, "dense_sharp", 0).blurry);
}

static void configured_classical_threshold_is_used(void **state)
{
    fixture *f = *state;
    gs_focus_judgement s = judge(f->on, "sparse_sharp", 100000);
    assert_true(s.sparse.threshold == 100000);
    assert_true(s.sparse.ran);
    assert_true(s.blurry);
    /* a threshold in (0, 1) is the network's: the check keeps the classical default */
    gs_focus_judgement n = judge(f->on, "sparse_sharp", 0.3);
    assert_true(n.sparse.threshold == GS_FOCUS_THRESHOLD);
    assert_false(n.blurry);
    /* without the key the configured classical threshold changes nothing on the network */
    assert_false(judge(f->off, "sparse_sharp", 100000).blurry);
}

static void key_outside_0_1_refused_naming_it(void **state)
{
    (void)state;
    gs_model *m =
        gs_model_load(path_in("GS_BUILD_DIR", "tests/blur-sparse/blur-badkey.safetensors"));
    assert_null(m);
    printf("refused: %s\n", gs_error_get());
    assert_non_null(strstr(gs_error_get(), "threshold.blur_sparse_tissue"));
    gs_error_clear();
}

static void check_without_a_model_is_off(void **state)
{
    (void)state;
    uint8_t px[16 * 16 * 3];
    memset(px, 250, sizeof px); /* glass */
    gs_blur_sparse s;
    assert_int_equal(gs_blur_sparse_check(NULL, px, 16, 16, 0, GS_BLUR_SPARSE_BUNDLE, &s), 0);
    assert_true(s.below == 0 && !s.ran && s.tissue_fraction == 0);
    assert_int_equal(gs_blur_sparse_check(NULL, NULL, 16, 16, 0, GS_BLUR_SPARSE_BUNDLE, &s), -1);
    gs_error_clear();
    /* A job's share is taken only in (0, 1]; NaN or more than 1 is read as 0, the bundle's. */
    assert_int_equal(gs_blur_sparse_check(NULL, px, 16, 16, 0, 0.25, &s), 0);
    assert_true(s.below == 0.25);
    assert_int_equal(gs_blur_sparse_check(NULL, px, 16, 16, 0, 1.0, &s), 0);
    assert_true(s.below == 1.0);
    assert_int_equal(gs_blur_sparse_check(NULL, px, 16, 16, 0, 2.0, &s), 0);
    assert_true(s.below == 0);
    assert_int_equal(gs_blur_sparse_check(NULL, px, 16, 16, 0, NAN, &s), 0);
    assert_true(s.below == 0);
    /* The classical threshold: a classical score is kept, anything else is 60. */
    assert_int_equal(gs_blur_sparse_check(NULL, px, 16, 16, 40, 0.25, &s), 0);
    assert_true(s.threshold == 40);
    assert_int_equal(gs_blur_sparse_check(NULL, px, 16, 16, 0.4, 0.25, &s), 0);
    assert_true(s.threshold == GS_FOCUS_THRESHOLD);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sparse_defocused_crop_blurry_only_with_the_key),
        cmocka_unit_test(sparse_sharp_crop_stays_sharp),
        cmocka_unit_test(dense_crop_judged_by_the_network_alone),
        cmocka_unit_test(configured_classical_threshold_is_used),
        cmocka_unit_test(job_rule_overrides_the_bundle),
        cmocka_unit_test(infer_worker_follows_the_jobs_rule),
        cmocka_unit_test(key_outside_0_1_refused_naming_it),
        cmocka_unit_test(check_without_a_model_is_off),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
