/*
 * evaluation: the statistics `gastroscreen eval` reports on a lab's labelled slides, as the
 * paper reports them (Yu et al. 2019, Table 1 and section 5): sensitivity and specificity with
 * exact Clopper-Pearson intervals, ROC AUC and precision-recall AUC with percentile bootstrap
 * intervals, and the curves behind them.
 *
 * Everything here is a pure function of arrays the caller owns: score[i] is slide i's score,
 * label[i] is 1 for a positive slide and 0 for a negative one. A slide is called positive when
 * its score is strictly above the threshold, as the pipeline decides (Verdict.threshold).
 *
 *     double lo, hi;
 *     gs_eval_clopper_pearson(tp, tp + fn, 0.05, &lo, &hi);   // sensitivity's 95% interval
 *     double auc = gs_eval_roc_auc(score, label, n);
 *     gs_eval_bootstrap(score, label, n, GS_EVAL_ROC_AUC, 1000, seed, 0.05, &lo, &hi);
 */
#ifndef GS_DAEMON_CLI_EVALUATION_H
#define GS_DAEMON_CLI_EVALUATION_H

#include <stddef.h>
#include <stdint.h>

/* The regularised incomplete beta function I_x(a, b) (a, b > 0, x in [0, 1]); NaN outside. */
double gs_eval_betainc(double a, double b, double x);

/* The exact two-sided (1 - alpha) Clopper-Pearson interval of k successes in n trials:
 * lo = the alpha/2 quantile of Beta(k, n - k + 1) (0 when k = 0), hi = the 1 - alpha/2
 * quantile of Beta(k + 1, n - k) (1 when k = n). Returns 0, or -1 with the error when n = 0,
 * k > n or alpha is not in (0, 1). */
int gs_eval_clopper_pearson(uint32_t k, uint32_t n, double alpha, double *lo, double *hi);

/* ROC AUC: the probability that a positive slide scores above a negative one, ties counting
 * one half (the Mann-Whitney statistic). NaN when either class is empty. */
double gs_eval_roc_auc(const double *score, const int *label, size_t n);

/* Precision-recall AUC as average precision: the sum over the distinct score thresholds, from
 * high to low, of (recall gained) x (precision there); the usual step-wise estimate. NaN
 * without positives. */
double gs_eval_pr_auc(const double *score, const int *label, size_t n);

typedef enum { GS_EVAL_ROC_AUC, GS_EVAL_PR_AUC } gs_eval_statistic;

/* Percentile bootstrap interval of a statistic: `rounds` resamples of the n slides with
 * replacement, stratified by label (each resample keeps the numbers of positives and
 * negatives, so every resample has both), from a generator seeded with `seed` (the same seed
 * gives the same interval). Returns 0, or -1 with the error when a class is empty, rounds < 10
 * or alpha is not in (0, 1), or out of memory. */
int gs_eval_bootstrap(const double *score, const int *label, size_t n, gs_eval_statistic stat,
                      uint32_t rounds, uint64_t seed, double alpha, double *lo, double *hi);

/* The ROC curve: points (fpr[j], tpr[j]) from (0, 0) to (1, 1), one per distinct score from
 * high to low. fpr and tpr must hold n + 1 values. Returns the number of points, or 0 when
 * either class is empty. */
size_t gs_eval_roc_curve(const double *score, const int *label, size_t n, double *fpr, double *tpr);

/* The precision-recall curve: points (recall[j], precision[j]), one per distinct score from
 * high to low, starting at (0, 1). recall and precision must hold n + 1 values. Returns the
 * number of points, or 0 without positives. */
size_t gs_eval_pr_curve(const double *score, const int *label, size_t n, double *recall,
                        double *precision);

#endif
