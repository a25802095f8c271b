#include "daemon/cli/evaluation.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops/error.h"
#include "ops/rng.h"

/* The continued fraction of I_x(a, b), evaluated with the modified Lentz method; converges
 * fast for x < (a + 1) / (a + b + 2), which the caller arranges by symmetry. */
static double betacf(double a, double b, double x)
{
    const double tiny = 1e-300;
    double c = 1.0, d = 1.0 - (a + b) * x / (a + 1.0);
    d = fabs(d) < tiny ? tiny : d;
    d = 1.0 / d;
    double f = d;
    for (int m = 1; m <= 500; m++) {
        double m2 = 2.0 * m;
        double num = m * (b - m) * x / ((a + m2 - 1.0) * (a + m2));
        d = 1.0 + num * d;
        d = fabs(d) < tiny ? tiny : d;
        c = 1.0 + num / c;
        c = fabs(c) < tiny ? tiny : c;
        d = 1.0 / d;
        f *= d * c;
        num = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0));
        d = 1.0 + num * d;
        d = fabs(d) < tiny ? tiny : d;
        c = 1.0 + num / c;
        c = fabs(c) < tiny ? tiny : c;
        d = 1.0 / d;
        double step = d * c;
        f *= step;
        if (fabs(step - 1.0) < 1e-15)
            break;
    }
    return f;
}

double gs_eval_betainc(double a, double b, double x)
{
    if (!(a > 0) || !(b > 0) || !(x >= 0) || !(x <= 1))
        return NAN;
    if (x == 0 || x == 1)
        return x;
    double lbeta = lgamma(a + b) - lgamma(a) - lgamma(b);
    double front = exp(lbeta + a * log(x) + b * log1p(-x));
    if (x < (a + 1.0) / (a + b + 2.0))
        return front * betacf(a, b, x) / a;
    return 1.0 - front * betacf(b, a, 1.0 - x) / b;
}

/* The p quantile of Beta(a, b) by bisection: I_x is increasing in x, and 80 halvings of
 * [0, 1] leave an interval far below the 1e-6 anyone reads. */
static double beta_quantile(double a, double b, double p)
{
    double lo = 0.0, hi = 1.0;
    for (int i = 0; i < 80; i++) {
        double mid = 0.5 * (lo + hi);
        if (gs_eval_betainc(a, b, mid) < p)
            lo = mid;
        else
            hi = mid;
    }
    return 0.5 * (lo + hi);
}

int gs_eval_clopper_pearson(uint32_t k, uint32_t n, double alpha, double *lo, double *hi)
{
    if (n == 0 || k > n || !(alpha > 0 && alpha < 1))
        return gs_error_set("Clopper-Pearson interval of %u in %u at alpha %g: not defined", k, n,
                            alpha);
    *lo = k == 0 ? 0.0 : beta_quantile(k, n - k + 1.0, alpha / 2);
    *hi = k == n ? 1.0 : beta_quantile(k + 1.0, n - k, 1 - alpha / 2);
    return 0;
}

double gs_eval_roc_auc(const double *score, const int *label, size_t n)
{
    /* O(P x N) is fine for the slides of one evaluation (thousands at most). */
    double sum = 0;
    size_t np = 0, nn = 0;
    for (size_t i = 0; i < n; i++)
        np += label[i] != 0;
    nn = n - np;
    if (np == 0 || nn == 0)
        return NAN;
    for (size_t i = 0; i < n; i++) {
        if (!label[i])
            continue;
        for (size_t j = 0; j < n; j++) {
            if (label[j])
                continue;
            sum += score[i] > score[j] ? 1.0 : score[i] == score[j] ? 0.5 : 0.0;
        }
    }
    return sum / ((double)np * (double)nn);
}

typedef struct {
    double score;
    int label;
} scored;

static int by_score_desc(const void *a, const void *b)
{
    double x = ((const scored *)a)->score, y = ((const scored *)b)->score;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* The slides sorted by score, highest first; NULL when out of memory (error set). */
static scored *sorted_desc(const double *score, const int *label, size_t n)
{
    scored *s = malloc((n ? n : 1) * sizeof *s);
    if (!s) {
        gs_error_set("out of memory for %zu scores", n);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        s[i] = (scored){score[i], label[i] != 0};
    qsort(s, n, sizeof *s, by_score_desc);
    return s;
}

/* Walks the thresholds from high to low: calls emit(tp, fp, ud) after each group of equal
 * scores. Returns the number of positives, or -1 when out of memory. */
static long walk(const double *score, const int *label, size_t n,
                 void (*emit)(size_t tp, size_t fp, void *ud), void *ud)
{
    scored *s = sorted_desc(score, label, n);
    if (!s)
        return -1;
    size_t tp = 0, fp = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && s[j].score == s[i].score) {
            tp += (size_t)s[j].label;
            fp += (size_t)!s[j].label;
            j++;
        }
        emit(tp, fp, ud);
        i = j;
    }
    free(s);
    return (long)tp;
}

typedef struct {
    size_t np, nn, k;
    double *x, *y; /* curve points, or NULL */
    double ap, last_recall;
} curve_acc;

static void emit_roc(size_t tp, size_t fp, void *ud)
{
    curve_acc *c = ud;
    c->x[c->k] = (double)fp / (double)c->nn;
    c->y[c->k] = (double)tp / (double)c->np;
    c->k++;
}

static void emit_pr(size_t tp, size_t fp, void *ud)
{
    curve_acc *c = ud;
    double recall = (double)tp / (double)c->np, precision = (double)tp / (double)(tp + fp);
    c->ap += (recall - c->last_recall) * precision;
    c->last_recall = recall;
    if (c->x) {
        c->x[c->k] = recall;
        c->y[c->k] = precision;
    }
    c->k++;
}

static void count_classes(const int *label, size_t n, size_t *np, size_t *nn)
{
    *np = 0;
    for (size_t i = 0; i < n; i++)
        *np += label[i] != 0;
    *nn = n - *np;
}

size_t gs_eval_roc_curve(const double *score, const int *label, size_t n, double *fpr, double *tpr)
{
    curve_acc c = {.x = fpr, .y = tpr};
    count_classes(label, n, &c.np, &c.nn);
    if (c.np == 0 || c.nn == 0)
        return 0;
    fpr[0] = tpr[0] = 0.0;
    c.k = 1;
    if (walk(score, label, n, emit_roc, &c) < 0)
        return 0;
    return c.k;
}

size_t gs_eval_pr_curve(const double *score, const int *label, size_t n, double *recall,
                        double *precision)
{
    curve_acc c = {.x = recall, .y = precision};
    count_classes(label, n, &c.np, &c.nn);
    if (c.np == 0)
        return 0;
    recall[0] = 0.0;
    precision[0] = 1.0;
    c.k = 1;
    if (walk(score, label, n, emit_pr, &c) < 0)
        return 0;
    return c.k;
}

double gs_eval_pr_auc(const double *score, const int *label, size_t n)
{
    curve_acc c = {0};
    count_classes(label, n, &c.np, &c.nn);
    if (c.np == 0 || walk(score, label, n, emit_pr, &c) < 0)
        return NAN;
    return c.ap;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y ? 1 : 0;
}

int gs_eval_bootstrap(const double *score, const int *label, size_t n, gs_eval_statistic stat,
                      uint32_t rounds, uint64_t seed, double alpha, double *lo, double *hi)
{
    size_t np, nn;
    count_classes(label, n, &np, &nn);
    if (np == 0 || nn == 0 || rounds < 10 || !(alpha > 0 && alpha < 1))
        return gs_error_set("bootstrap: needs both classes (%zu positive, %zu negative), at "
                            "least 10 rounds (%u) and alpha in (0, 1)",
                            np, nn, rounds);
    size_t *pos = malloc(np * sizeof *pos), *neg = malloc(nn * sizeof *neg);
    double *s = malloc(n * sizeof *s), *stats = malloc(rounds * sizeof *stats);
    int *l = malloc(n * sizeof *l);
    int rc = -1;
    if (!pos || !neg || !s || !stats || !l) {
        gs_error_set("out of memory for the bootstrap of %zu slides", n);
        goto free_buffers;
    }
    for (size_t i = 0, a = 0, b = 0; i < n; i++) {
        if (label[i])
            pos[a++] = i;
        else
            neg[b++] = i;
    }
    uint64_t state = seed;
    for (uint32_t r = 0; r < rounds; r++) {
        for (size_t i = 0; i < np; i++) {
            s[i] = score[pos[gs_rng_next(&state) % np]];
            l[i] = 1;
        }
        for (size_t i = 0; i < nn; i++) {
            s[np + i] = score[neg[gs_rng_next(&state) % nn]];
            l[np + i] = 0;
        }
        stats[r] = stat == GS_EVAL_ROC_AUC ? gs_eval_roc_auc(s, l, n) : gs_eval_pr_auc(s, l, n);
    }
    qsort(stats, rounds, sizeof *stats, cmp_double);
    /* Nearest-rank percentiles: the ceil(p * rounds)-th smallest value. */
    double klo = ceil(alpha / 2 * rounds), khi = ceil((1 - alpha / 2) * rounds);
    size_t ilo = klo < 1 ? 0 : (size_t)klo - 1, ihi = khi < 1 ? 0 : (size_t)khi - 1;
    *lo = stats[ilo];
    *hi = stats[ihi];
    rc = 0;
free_buffers:
    free(pos);
    free(neg);
    free(s);
    free(stats);
    free(l);
    return rc;
}
