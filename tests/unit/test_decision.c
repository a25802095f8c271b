/*
 * test_decision: which threshold, top k and focus rules judge a slide (stages/runtime/decision):
 * the config's only when the file set the key, else the bundle's, else the config's default.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ops/focus.h"
#include "stages/runtime/decision.h"

static const gs_model_thresholds BUNDLE = {.topk = 12,
                                           .screen = 0.3125f,
                                           .blur = 0.25f,
                                           .foreground = 0.5f,
                                           .blur_slide = 0.375f,
                                           .blur_sparse_tissue = 0.625f};

static void bundle_wins_over_defaults(void **state)
{
    (void)state;
    gs_decision d;
    gs_decision_resolve(&d, &BUNDLE, 0.74, 0, 64, 0);
    assert_float_equal(d.threshold, 0.3125, 1e-7);
    assert_string_equal(d.threshold_source, GS_DECISION_FROM_BUNDLE);
    assert_int_equal(d.top_k, 12);
    assert_string_equal(d.top_k_source, GS_DECISION_FROM_BUNDLE);
}

static void explicit_config_wins_over_bundle(void **state)
{
    (void)state;
    gs_decision d;
    /* Set explicitly to the very value of the default: still the lab's choice. */
    gs_decision_resolve(&d, &BUNDLE, 0.74, 1, 64, 0);
    assert_float_equal(d.threshold, 0.74, 1e-7);
    assert_string_equal(d.threshold_source, GS_DECISION_FROM_CONFIG);
    assert_int_equal(d.top_k, 12);
    assert_string_equal(d.top_k_source, GS_DECISION_FROM_BUNDLE);
    gs_decision_resolve(&d, &BUNDLE, 0.5, 0, 32, 1);
    assert_float_equal(d.threshold, 0.3125, 1e-7);
    assert_string_equal(d.threshold_source, GS_DECISION_FROM_BUNDLE);
    assert_int_equal(d.top_k, 32);
    assert_string_equal(d.top_k_source, GS_DECISION_FROM_CONFIG);
}

static void no_bundle_uses_config(void **state)
{
    (void)state;
    gs_decision d;
    gs_decision_resolve(&d, NULL, 0.74, 0, 64, 0);
    assert_float_equal(d.threshold, 0.74, 1e-7);
    assert_string_equal(d.threshold_source, GS_DECISION_FROM_DEFAULT);
    assert_int_equal(d.top_k, 64);
    assert_string_equal(d.top_k_source, GS_DECISION_FROM_DEFAULT);
    gs_decision_resolve(&d, NULL, 0.6, 1, 8, 1);
    assert_float_equal(d.threshold, 0.6, 1e-7);
    assert_string_equal(d.threshold_source, GS_DECISION_FROM_CONFIG);
    assert_int_equal(d.top_k, 8);
    assert_string_equal(d.top_k_source, GS_DECISION_FROM_CONFIG);
}

/* The focus rules: the slide share as the threshold; the tile threshold is the config's when
 * set above 0 (with a trained blur network only below 1, on its P(sharp) scale: a larger one
 * is a classical score), else the bundle's (1 - threshold.blur, on focus = P(sharp)) when its
 * blur network is trained, else the classical default. */
static void focus_rules(void **state)
{
    (void)state;
    gs_decision d;
    gs_decision_resolve_focus(&d, &BUNDLE, 1, 0.5, 0, 0, 0, 0, 0);
    assert_true(d.blur_slide_fraction == 0.375);
    assert_string_equal(d.blur_slide_source, GS_DECISION_FROM_BUNDLE);
    assert_true(d.focus_threshold == 0.75);
    assert_string_equal(d.focus_threshold_source, GS_DECISION_FROM_BUNDLE);
    gs_decision_resolve_focus(&d, &BUNDLE, 0, 0.5, 0, 0, 1, 0, 0);
    assert_true(d.focus_threshold == GS_FOCUS_THRESHOLD);
    assert_string_equal(d.focus_threshold_source, GS_DECISION_FROM_DEFAULT);
    gs_decision_resolve_focus(&d, &BUNDLE, 0, 0.25, 1, 40, 1, 0, 0);
    assert_true(d.blur_slide_fraction == 0.25);
    assert_string_equal(d.blur_slide_source, GS_DECISION_FROM_CONFIG);
    assert_true(d.focus_threshold == 40);
    assert_string_equal(d.focus_threshold_source, GS_DECISION_FROM_CONFIG);
    /* a classical score leaves a trained network at the bundle's threshold */
    gs_decision_resolve_focus(&d, &BUNDLE, 1, 0.25, 1, 40, 1, 0, 0);
    assert_true(d.focus_threshold == 0.75);
    assert_string_equal(d.focus_threshold_source, GS_DECISION_FROM_BUNDLE);
    gs_decision_resolve_focus(&d, &BUNDLE, 1, 0.25, 1, 0.4, 1, 0, 0);
    assert_true(d.focus_threshold == 0.4);
    assert_string_equal(d.focus_threshold_source, GS_DECISION_FROM_CONFIG);
    gs_decision_resolve_focus(&d, NULL, 0, 0.5, 0, 0, 0, 0, 0);
    assert_true(d.blur_slide_fraction == 0.5);
    assert_string_equal(d.blur_slide_source, GS_DECISION_FROM_DEFAULT);
}

/* The blur network's sparse-tissue rule: the config's [blur] sparse_tissue only when set (0 then
 * turns the rule off), else the bundle's key; off, from the default, without a bundle or with
 * a classical blur method whatever the config says; the classical threshold it holds crops to
 * is the config's focus_threshold when that is a classical score (>= 1), else 60. */
static void sparse_tissue_rule(void **state)
{
    (void)state;
    gs_decision d;
    /* unset: the bundle's */
    gs_decision_resolve_focus(&d, &BUNDLE, 1, 0.5, 0, 0, 0, 0, 0);
    assert_true(d.sparse_tissue == 0.625);
    assert_string_equal(d.sparse_tissue_source, GS_DECISION_FROM_BUNDLE);
    assert_true(d.sparse_classical_threshold == GS_FOCUS_THRESHOLD);
    /* set: the config's, even to the schema's default value */
    gs_decision_resolve_focus(&d, &BUNDLE, 1, 0.5, 0, 0, 0, 0.25, 1);
    assert_true(d.sparse_tissue == 0.25);
    assert_string_equal(d.sparse_tissue_source, GS_DECISION_FROM_CONFIG);
    /* set to 0: off, and the config said so */
    gs_decision_resolve_focus(&d, &BUNDLE, 1, 0.5, 0, 0, 0, 0, 1);
    assert_true(d.sparse_tissue == 0);
    assert_string_equal(d.sparse_tissue_source, GS_DECISION_FROM_CONFIG);
    assert_true(d.sparse_classical_threshold == 0);
    /* a classical focus_threshold is the one the rule holds crops to; a network one is not */
    gs_decision_resolve_focus(&d, &BUNDLE, 1, 0.5, 0, 40, 1, 0, 0);
    assert_true(d.sparse_classical_threshold == 40);
    gs_decision_resolve_focus(&d, &BUNDLE, 1, 0.5, 0, 0.4, 1, 0, 0);
    assert_true(d.sparse_classical_threshold == GS_FOCUS_THRESHOLD);
    /* a bundle without the key: off, from the bundle */
    gs_model_thresholds nokey = BUNDLE;
    nokey.blur_sparse_tissue = 0;
    gs_decision_resolve_focus(&d, &nokey, 1, 0.5, 0, 0, 0, 0, 0);
    assert_true(d.sparse_tissue == 0);
    assert_string_equal(d.sparse_tissue_source, GS_DECISION_FROM_BUNDLE);
    assert_true(d.sparse_classical_threshold == 0);
    /* no bundle, or a classical blur method: off whatever the config says */
    gs_decision_resolve_focus(&d, NULL, 0, 0.5, 0, 0, 0, 0.25, 1);
    assert_true(d.sparse_tissue == 0);
    assert_string_equal(d.sparse_tissue_source, GS_DECISION_FROM_DEFAULT);
    assert_true(d.sparse_classical_threshold == 0);
    gs_decision_resolve_focus(&d, &BUNDLE, 0, 0.5, 0, 0, 0, 0.25, 1);
    assert_true(d.sparse_tissue == 0);
    assert_string_equal(d.sparse_tissue_source, GS_DECISION_FROM_DEFAULT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bundle_wins_over_defaults),
        cmocka_unit_test(explicit_config_wins_over_bundle),
        cmocka_unit_test(no_bundle_uses_config),
        cmocka_unit_test(focus_rules),
        cmocka_unit_test(sparse_tissue_rule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
