/*
 * test_evaluation: the statistics of daemon/cli/evaluation against values worked out by hand
 * or with scipy (scipy.stats.beta.ppf for the Clopper-Pearson bounds), and the bootstrap's
 * determinism for a seed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>

#include "daemon/cli/evaluation.h"

static void clopper_pearson_matches_scipy(void **state)
{
    (void)state;
    double lo, hi;
    /* scipy.stats.beta.ppf(0.025, 8, 3), beta.ppf(0.975, 9, 2) */
    assert_int_equal(gs_eval_clopper_pearson(8, 10, 0.05, &lo, &hi), 0);
    assert_true(fabs(lo - 0.4439045376) < 1e-8 && fabs(hi - 0.9747892736) < 1e-8);
    /* k = 0 and k = n: one-sided ends. beta.ppf(0.975, 1, 2) = 0.8418861170 */
    assert_int_equal(gs_eval_clopper_pearson(0, 2, 0.05, &lo, &hi), 0);
    assert_true(lo == 0.0 && fabs(hi - 0.8418861170) < 1e-8);
    assert_int_equal(gs_eval_clopper_pearson(3, 3, 0.05, &lo, &hi), 0);
    assert_true(hi == 1.0 && fabs(lo - 0.2924017738) < 1e-8);
    /* The paper's scale: 1,000 slides. beta.ppf(0.025, 927, 74), beta.ppf(0.975, 928, 73) */
    assert_int_equal(gs_eval_clopper_pearson(927, 1000, 0.05, &lo, &hi), 0);
    assert_true(fabs(lo - 0.9090858246) < 1e-8 && fabs(hi - 0.9423463748) < 1e-8);
    assert_int_equal(gs_eval_clopper_pearson(1, 0, 0.05, &lo, &hi), -1);
    assert_int_equal(gs_eval_clopper_pearson(3, 2, 0.05, &lo, &hi), -1);
    assert_true(isnan(gs_eval_betainc(0, 1, 0.5)));
    assert_true(fabs(gs_eval_betainc(2, 3, 0.4) - 0.5248) < 1e-12);
}

static void aucs_by_hand(void **state)
{
    (void)state;
    /* Positives 0.9, 0.7; negatives 0.8, 0.6: 3 of 4 pairs ordered right. */
    const double s[4] = {0.9, 0.8, 0.7, 0.6};
    const int l[4] = {1, 0, 1, 0};
    assert_true(fabs(gs_eval_roc_auc(s, l, 4) - 0.75) < 1e-12);
    /* Average precision: recall 0.5 at precision 1, then recall 1 at precision 2/3. */
    assert_true(fabs(gs_eval_pr_auc(s, l, 4) - (0.5 + 0.5 * 2.0 / 3.0)) < 1e-12);
    /* Ties count one half, and a tied group is one threshold. */
    const double t[3] = {0.5, 0.5, 0.2};
    const int tl[3] = {1, 0, 0};
    assert_true(fabs(gs_eval_roc_auc(t, tl, 3) - 0.75) < 1e-12);
    assert_true(fabs(gs_eval_pr_auc(t, tl, 3) - 0.5) < 1e-12);
    const int one[3] = {1, 1, 1};
    assert_true(isnan(gs_eval_roc_auc(t, one, 3)));
    double x[5], y[5];
    assert_int_equal(gs_eval_roc_curve(s, l, 4, x, y), 5);
    assert_true(x[0] == 0 && y[0] == 0 && x[1] == 0 && y[1] == 0.5 && x[2] == 0.5 && y[2] == 0.5 &&
                x[4] == 1 && y[4] == 1);
    assert_int_equal(gs_eval_pr_curve(t, tl, 3, x, y), 3);
    assert_true(x[1] == 1.0 && y[1] == 0.5 && x[2] == 1.0 && fabs(y[2] - 1.0 / 3) < 1e-12);
}

static void bootstrap_is_seeded(void **state)
{
    (void)state;
    double s[40];
    int l[40];
    for (int i = 0; i < 40; i++) {
        l[i] = i % 2;
        s[i] = 0.5 + (l[i] ? 0.2 : -0.2) + 0.3 * sin(i * 1.7);
    }
    double auc = gs_eval_roc_auc(s, l, 40), a, b, c, d;
    assert_int_equal(gs_eval_bootstrap(s, l, 40, GS_EVAL_ROC_AUC, 500, 3, 0.05, &a, &b), 0);
    assert_int_equal(gs_eval_bootstrap(s, l, 40, GS_EVAL_ROC_AUC, 500, 3, 0.05, &c, &d), 0);
    assert_true(a == c && b == d);
    assert_true(a < auc && auc < b && b <= 1.0 && a < b);
    assert_int_equal(gs_eval_bootstrap(s, l, 40, GS_EVAL_PR_AUC, 500, 4, 0.05, &c, &d), 0);
    assert_true(c < d && d <= 1.0);
    const int none[2] = {0, 0};
    assert_int_equal(gs_eval_bootstrap(s, none, 2, GS_EVAL_ROC_AUC, 500, 3, 0.05, &a, &b), -1);
    assert_int_equal(gs_eval_bootstrap(s, l, 40, GS_EVAL_ROC_AUC, 5, 3, 0.05, &a, &b), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(clopper_pearson_matches_scipy),
        cmocka_unit_test(aucs_by_hand),
        cmocka_unit_test(bootstrap_is_seeded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
