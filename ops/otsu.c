#include "ops/otsu.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "ops/error.h"

enum { GS_OTSU_MAX_BINS = 1 << 20, GS_OTSU_PARALLEL_MIN = 1 << 16 };

/*
 * Choosing the split. skimage evaluates, for every split k between bin k and bin k+1,
 * w1[k] * w2[k+1] * (m1[k] - m2[k+1])^2 with w/m the class weights and means built by cumulative
 * sums (the upper class summed from the top down), and takes the first maximum. Both versions
 * below add the same terms in the same order, so they agree bit for bit with each other (and
 * with numpy's sequential cumsum).
 */
static int pick_ref(const double *counts, const double *centers, int n)
{
    int best = 0;
    double best_var = -1.0;
    for (int k = 0; k + 1 < n; k++) {
        double w1 = 0, s1 = 0, w2 = 0, s2 = 0;
        for (int i = 0; i <= k; i++) {
            w1 += counts[i];
            s1 += counts[i] * centers[i];
        }
        for (int i = n - 1; i > k; i--) {
            w2 += counts[i];
            s2 += counts[i] * centers[i];
        }
        double d = s1 / w1 - s2 / w2;
        double var = w1 * w2 * (d * d);
        if (var > best_var) {
            best_var = var;
            best = k;
        }
    }
    return best;
}

/* Returns -1 only when out of memory. */
static int pick_fast(const double *counts, const double *centers, int n)
{
    double *w2 = malloc(sizeof *w2 * (size_t)n * 2);
    if (!w2)
        return -1;
    double *s2 = w2 + n;
    double w = 0, s = 0;
    for (int i = n - 1; i >= 0; i--) {
        w += counts[i];
        s += counts[i] * centers[i];
        w2[i] = w;
        s2[i] = s;
    }
    int best = 0;
    double best_var = -1.0, w1 = 0, s1 = 0;
    for (int k = 0; k + 1 < n; k++) {
        w1 += counts[k];
        s1 += counts[k] * centers[k];
        double d = s1 / w1 - s2[k + 1] / w2[k + 1];
        double var = w1 * w2[k + 1] * (d * d);
        if (var > best_var) {
            best_var = var;
            best = k;
        }
    }
    free(w2);
    return best;
}

static int check_args(const void *v, size_t n, int nbins, const void *thr)
{
    if (!thr)
        return gs_error_set("otsu: threshold output is NULL");
    if (!v && n > 0)
        return gs_error_set("otsu: values are NULL");
    if (nbins < 2 || nbins > GS_OTSU_MAX_BINS)
        return gs_error_set("otsu: %d bins (2..%d supported)", nbins, GS_OTSU_MAX_BINS);
    return 0;
}

static int no_values(size_t n)
{
    return gs_error_set("otsu: no values to threshold (%zu values, none selected and finite)", n);
}

/* Bin edges and centres as numpy.histogram(range=(min, max)) and skimage make them: edges are
 * min + i * (max - min) / nbins in double, rounded to float, the last one exactly max; centres
 * are (e[i] + e[i+1]) / 2 in float. */
static void make_bins(float lo, float hi, int nbins, float *edges, float *centers)
{
    double step = ((double)hi - (double)lo) / nbins;
    for (int i = 0; i < nbins; i++)
        edges[i] = (float)((double)i * step + (double)lo);
    edges[nbins] = hi;
    for (int i = 0; i < nbins; i++) {
        float c = (edges[i] + edges[i + 1]) / 2.0f;
        if (!isfinite(c))
            c = edges[i] * 0.5f + edges[i + 1] * 0.5f;
        centers[i] = c;
    }
}

static int selected(const float *v, const uint8_t *mask, size_t i)
{
    return (!mask || mask[i]) && isfinite(v[i]);
}

/* Range of the selected values; -1 with the message set if there is nothing to separate. */
static int value_range(const float *v, const uint8_t *mask, size_t n, int fast, float *lo_out,
                       float *hi_out)
{
    float lo = INFINITY, hi = -INFINITY;
    size_t count = 0;
    if (!fast) {
        for (size_t i = 0; i < n; i++) {
            if (!selected(v, mask, i))
                continue;
            count++;
            if (v[i] < lo)
                lo = v[i];
            if (v[i] > hi)
                hi = v[i];
        }
    } else {
        const int parallel = n >= GS_OTSU_PARALLEL_MIN;
#pragma omp parallel for reduction(min : lo) reduction(max : hi) reduction(+ : count) if (parallel)
        for (size_t i = 0; i < n; i++) {
            float x = v[i];
            if ((mask && !mask[i]) || !isfinite(x))
                continue;
            count++;
            lo = x < lo ? x : lo;
            hi = x > hi ? x : hi;
        }
    }
    if (count == 0)
        return no_values(n);
    if (lo == hi)
        return gs_error_set("otsu: all %zu values are equal (%g), nothing to separate", count,
                            (double)lo);
    *lo_out = lo;
    *hi_out = hi;
    return 0;
}

/* Reference binning: bin b holds e[b] <= x < e[b+1], the last bin also holds the maximum. */
static void bin_ref(const float *v, const uint8_t *mask, size_t n, int nbins, const float *edges,
                    uint64_t *counts)
{
    for (size_t i = 0; i < n; i++) {
        if (!selected(v, mask, i))
            continue;
        for (int b = 0; b < nbins; b++) {
            if (v[i] >= edges[b] && (v[i] < edges[b + 1] || b == nbins - 1)) {
                counts[b]++;
                break;
            }
        }
    }
}

/* Fast binning: an arithmetic guess, corrected against the float edges (the guess can be a bin
 * off where an edge was rounded), into per-thread histograms. Returns -1 if out of memory. */
static int bin_fast(const float *v, const uint8_t *mask, size_t n, int nbins, const float *edges,
                    uint64_t *counts)
{
    const int nthreads = n >= GS_OTSU_PARALLEL_MIN ? omp_get_max_threads() : 1;
    uint64_t *hist = calloc((size_t)nbins * (size_t)nthreads, sizeof *hist);
    if (!hist)
        return -1;
    const float lo = edges[0], hi = edges[nbins];
    const double dlo = lo, scale = nbins / ((double)hi - (double)lo);
    const int last = nbins - 1;
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    {
        uint64_t *mine = hist + (size_t)nbins * (size_t)omp_get_thread_num();
#pragma omp for schedule(static)
        for (size_t i = 0; i < n; i++) {
            float x = v[i];
            if ((mask && !mask[i]) || !isfinite(x))
                continue;
            double g = ((double)x - dlo) * scale;
            int b = g >= last ? last : (int)g;
            while (b > 0 && x < edges[b])
                b--;
            while (b < last && x >= edges[b + 1])
                b++;
            mine[b]++;
        }
    }
    for (int t = 0; t < nthreads; t++)
        for (int b = 0; b < nbins; b++)
            counts[b] += hist[(size_t)t * nbins + b];
    free(hist);
    return 0;
}

static int histogram_f32(const float *v, const uint8_t *mask, size_t n, int nbins, int fast,
                         uint64_t *counts, float *centers)
{
    float lo = 0.0f, hi = 0.0f;
    if (value_range(v, mask, n, fast, &lo, &hi))
        return -1;
    float *edges = malloc(sizeof *edges * ((size_t)nbins + 1));
    if (!edges)
        return gs_error_set("otsu: out of memory for %d bins", nbins);
    make_bins(lo, hi, nbins, edges, centers);
    memset(counts, 0, sizeof *counts * (size_t)nbins);
    int ret = 0;
    if (!fast)
        bin_ref(v, mask, n, nbins, edges, counts);
    else if (bin_fast(v, mask, n, nbins, edges, counts))
        ret = gs_error_set("otsu: out of memory for %d bins", nbins);
    free(edges);
    return ret;
}

static int histogram_api(const float *v, const uint8_t *mask, size_t n, int nbins, int fast,
                         uint64_t *counts, float *centers)
{
    if (check_args(v, n, nbins, counts) || check_args(v, n, nbins, centers))
        return -1;
    return histogram_f32(v, mask, n, nbins, fast, counts, centers);
}

int gs_otsu_histogram_f32(const float *v, const uint8_t *mask, size_t n, int nbins,
                          uint64_t *counts, float *centers)
{
    return histogram_api(v, mask, n, nbins, 1, counts, centers);
}

int gs_otsu_histogram_f32_ref(const float *v, const uint8_t *mask, size_t n, int nbins,
                              uint64_t *counts, float *centers)
{
    return histogram_api(v, mask, n, nbins, 0, counts, centers);
}

static int otsu_f32(const float *v, const uint8_t *mask, size_t n, int nbins, int fast, float *thr)
{
    if (check_args(v, n, nbins, thr))
        return -1;
    int ret = -1;
    uint64_t *hist = malloc(sizeof *hist * (size_t)nbins);
    float *fcenters = malloc(sizeof *fcenters * (size_t)nbins);
    double *counts = malloc(sizeof *counts * (size_t)nbins * 2);
    if (!hist || !fcenters || !counts) {
        gs_error_set("otsu: out of memory for %d bins", nbins);
        goto free_bins;
    }
    if (histogram_f32(v, mask, n, nbins, fast, hist, fcenters))
        goto free_bins;
    double *centers = counts + nbins;
    for (int b = 0; b < nbins; b++) {
        counts[b] = (double)hist[b];
        centers[b] = fcenters[b];
    }
    int k = fast ? pick_fast(counts, centers, nbins) : pick_ref(counts, centers, nbins);
    if (k < 0) {
        gs_error_set("otsu: out of memory for %d bins", nbins);
        goto free_bins;
    }
    *thr = fcenters[k];
    ret = 0;

free_bins:
    free(counts);
    free(fcenters);
    free(hist);
    return ret;
}

int gs_otsu_f32_ref(const float *v, const uint8_t *mask, size_t n, int nbins, float *thr)
{
    return otsu_f32(v, mask, n, nbins, 0, thr);
}

int gs_otsu_f32(const float *v, const uint8_t *mask, size_t n, int nbins, float *thr)
{
    return otsu_f32(v, mask, n, nbins, 1, thr);
}

/* skimage histograms integer images from the smallest to the largest value present, one bin per
 * value; leading/trailing empty bins would make a class weight 0. */
static int finish_u8(const uint64_t *hist, size_t n, int fast, uint8_t *thr)
{
    int lo = 0, hi = 255;
    while (lo < 256 && hist[lo] == 0)
        lo++;
    if (lo == 256)
        return no_values(n);
    while (hist[hi] == 0)
        hi--;
    if (lo == hi)
        return gs_error_set("otsu: all values are equal (%d), nothing to separate", lo);
    double counts[256], centers[256];
    int nb = hi - lo + 1;
    for (int i = 0; i < nb; i++) {
        counts[i] = (double)hist[lo + i];
        centers[i] = lo + i;
    }
    int k = fast ? pick_fast(counts, centers, nb) : pick_ref(counts, centers, nb);
    if (k < 0)
        return gs_error_set("otsu: out of memory");
    *thr = (uint8_t)(lo + k);
    return 0;
}

int gs_otsu_u8_ref(const uint8_t *v, const uint8_t *mask, size_t n, uint8_t *thr)
{
    if (check_args(v, n, 256, thr))
        return -1;
    uint64_t hist[256] = {0};
    for (size_t i = 0; i < n; i++)
        if (!mask || mask[i])
            hist[v[i]]++;
    return finish_u8(hist, n, 0, thr);
}

/* Four interleaved sub-histograms hide the store-to-load latency of runs of equal values. */
static void hist_u8(const uint8_t *v, const uint8_t *mask, size_t lo, size_t hi, uint64_t *h)
{
    uint32_t sub[4][256];
    memset(sub, 0, sizeof sub);
    size_t i = lo;
    while (i < hi) {
        /* uint32 sub-counts are flushed before they could overflow. */
        size_t end = hi - i > ((size_t)1 << 30) ? i + ((size_t)1 << 30) : hi;
        if (!mask) {
            for (; i + 4 <= end; i += 4) {
                sub[0][v[i]]++;
                sub[1][v[i + 1]]++;
                sub[2][v[i + 2]]++;
                sub[3][v[i + 3]]++;
            }
            for (; i < end; i++)
                sub[0][v[i]]++;
        } else {
            for (; i + 4 <= end; i += 4) {
                sub[0][v[i]] += mask[i] != 0;
                sub[1][v[i + 1]] += mask[i + 1] != 0;
                sub[2][v[i + 2]] += mask[i + 2] != 0;
                sub[3][v[i + 3]] += mask[i + 3] != 0;
            }
            for (; i < end; i++)
                sub[0][v[i]] += mask[i] != 0;
        }
        for (int b = 0; b < 256; b++) {
            h[b] += (uint64_t)sub[0][b] + sub[1][b] + sub[2][b] + sub[3][b];
            sub[0][b] = sub[1][b] = sub[2][b] = sub[3][b] = 0;
        }
    }
}

int gs_otsu_u8(const uint8_t *v, const uint8_t *mask, size_t n, uint8_t *thr)
{
    if (check_args(v, n, 256, thr))
        return -1;
    uint64_t hist[256] = {0};
    if (n < GS_OTSU_PARALLEL_MIN) {
        hist_u8(v, mask, 0, n, hist);
        return finish_u8(hist, n, 1, thr);
    }
#pragma omp parallel
    {
        uint64_t mine[256] = {0};
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        hist_u8(v, mask, n / nt * t, t == nt - 1 ? n : n / nt * (t + 1), mine);
#pragma omp critical(gs_otsu_hist)
        for (int b = 0; b < 256; b++)
            hist[b] += mine[b];
    }
    return finish_u8(hist, n, 1, thr);
}
