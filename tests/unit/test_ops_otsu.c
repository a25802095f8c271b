#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops/error.h"
#include "ops/otsu.h"
#include "ops/rng.h"

static float otsu_f(int fast, const float *v, const uint8_t *m, size_t n, int nbins)
{
    float t = NAN;
    int r = fast ? gs_otsu_f32(v, m, n, nbins, &t) : gs_otsu_f32_ref(v, m, n, nbins, &t);
    if (r != 0)
        fail_msg("otsu_f32 (%s) failed: %s", fast ? "fast" : "ref", gs_error_get());
    return t;
}

static int otsu_b(int fast, const uint8_t *v, const uint8_t *m, size_t n)
{
    uint8_t t = 0;
    int r = fast ? gs_otsu_u8(v, m, n, &t) : gs_otsu_u8_ref(v, m, n, &t);
    if (r != 0)
        fail_msg("otsu_u8 (%s) failed: %s", fast ? "fast" : "ref", gs_error_get());
    return t;
}

static void hand_computed(void **state)
{
    for (int fast = 0; fast < 2; fast++) {
        /* {0, 0, 4, 10}: split after 0 gives 2*2*(0-7)^2 = 196, split after 4 gives
         * 3*1*(4/3-10)^2 = 225.3, so the lower class is {0, 4} and the threshold is 4. */
        const uint8_t a[4] = {10, 0, 4, 0};
        assert_int_equal(otsu_b(fast, a, NULL, 4), 4);
        /* Two separated modes: every split in the gap has the same variance, the first wins,
         * so the threshold is the top of the lower mode. */
        uint8_t b[20];
        for (int i = 0; i < 20; i++)
            b[i] = i % 2 ? 200 : 20;
        assert_int_equal(otsu_b(fast, b, NULL, 20), 20);
        /* The mask removes the 10: {0, 0, 4} -> split after 0. */
        const uint8_t m[4] = {0, 1, 1, 1};
        assert_int_equal(otsu_b(fast, a, m, 4), 0);

        /* Floats, 256 bins over [0, 10]: width 10/256 = 0.0390625; 4 lies in bin 102
         * [3.984375, 4.0234375), whose centre 4.00390625 is the threshold (lower class {0,4}). */
        const float f[4] = {10, 0, 4, 0};
        assert_true(otsu_f(fast, f, NULL, 4, 256) == 4.00390625f);
        /* Ten 0s and ten 1s: threshold is the centre of bin 0, 1/512. */
        float g[20];
        for (int i = 0; i < 20; i++)
            g[i] = (float)(i % 2);
        assert_true(otsu_f(fast, g, NULL, 20, 256) == 1.0f / 512.0f);
        /* Two bins: the threshold is the centre of the lower one. */
        assert_true(otsu_f(fast, g, NULL, 20, 2) == 0.25f);
        /* Negative values and a mask. */
        const float h[5] = {-8, -8, 8, 1000, 8};
        const uint8_t hm[5] = {1, 1, 1, 0, 1};
        assert_true(otsu_f(fast, h, hm, 5, 4) == -6.0f);
    }
}

/* The arrays tests/tools/skimage_hed_values.py builds: k = (31 i^2 + 17 i) mod 1009,
 * v = k / 7 in float, plus 500 where k >= 300 for the bimodal ones. */
static float *formula_f32(size_t n, int bimodal)
{
    float *v = malloc(sizeof *v * n);
    assert_non_null(v);
    for (size_t i = 0; i < n; i++) {
        int64_t k = ((int64_t)i * (int64_t)i * 31 + (int64_t)i * 17) % 1009;
        v[i] = (float)k / 7.0f;
        if (bimodal && k >= 300)
            v[i] = v[i] + 500.0f;
    }
    return v;
}

static void matches_skimage(void **state)
{
    /* skimage.filters.threshold_otsu(v, nbins=256) (scikit-image 0.19.3), %.9g. */
    static const struct {
        size_t n;
        int bimodal;
        float want;
    } cases[] = {
        {1000, 0, 72.7714844f},
        {1000, 1, 41.4986076f},
        {37, 1, 38.1531792f},
        {5000, 1, 41.4986076f},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        float *v = formula_f32(cases[c].n, cases[c].bimodal);
        for (int fast = 0; fast < 2; fast++) {
            float t = otsu_f(fast, v, NULL, cases[c].n, 256);
            if (t != cases[c].want)
                fail_msg("case %zu (%s): %.9g, skimage %.9g", c, fast ? "fast" : "ref", t,
                         cases[c].want);
        }
        free(v);
    }
    /* uint8: threshold_otsu(k % 251 as uint8): 127 for n = 1000, 120 for n = 77. */
    uint8_t u[1000];
    for (int i = 0; i < 1000; i++)
        u[i] = (uint8_t)((((int64_t)i * i * 31 + (int64_t)i * 17) % 1009) % 251);
    for (int fast = 0; fast < 2; fast++) {
        assert_int_equal(otsu_b(fast, u, NULL, 1000), 127);
        assert_int_equal(otsu_b(fast, u, NULL, 77), 120);
    }
}

static void fast_matches_ref_f32(void **state)
{
    static const size_t sizes[] = {2, 3, 17, 31 * 33, 513 * 7, 70001};
    static const int bins[] = {2, 3, 256, 1000};
    uint64_t s = 21;
    float *v = malloc(sizeof *v * 70001);
    uint8_t *m = malloc(70001);
    assert_non_null(v);
    assert_non_null(m);
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        size_t n = sizes[si];
        for (int kind = 0; kind < 5; kind++) {
            for (size_t i = 0; i < n; i++) {
                double u = gs_rng_unit(&s);
                switch (kind) {
                case 0: /* uniform */
                    v[i] = (float)u;
                    break;
                case 1: /* bimodal */
                    v[i] = (float)(i % 3 ? 0.2 + 0.05 * u : 0.7 + 0.1 * u);
                    break;
                case 2: /* huge magnitudes */
                    v[i] = (float)((u - 0.5) * 6e38);
                    break;
                case 3: /* few distinct values, many ties on bin edges */
                    v[i] = (float)(gs_rng_next(&s) % 5);
                    break;
                default: /* non-finite values mixed in are ignored */
                    v[i] = i % 7 == 0 ? NAN : i % 11 == 0 ? -INFINITY : (float)(u * u);
                    break;
                }
                m[i] = (uint8_t)(gs_rng_next(&s) % 3 ? 1 + gs_rng_next(&s) % 255 : 0);
            }
            v[0] = 0.0f;
            v[n - 1] = 1.0f; /* at least two distinct values, also under the mask */
            m[0] = m[n - 1] = 1;
            for (size_t bi = 0; bi < sizeof bins / sizeof bins[0]; bi++) {
                if (n > 10000 && bins[bi] > 256)
                    continue; /* the reference bins by linear search */
                for (int masked = 0; masked < 2; masked++) {
                    const uint8_t *mk = masked ? m : NULL;
                    float a = otsu_f(1, v, mk, n, bins[bi]), b = otsu_f(0, v, mk, n, bins[bi]);
                    if (a != b)
                        fail_msg("n %zu kind %d bins %d mask %d: fast %.9g ref %.9g", n, kind,
                                 bins[bi], masked, a, b);
                    assert_true(isfinite(a));
                }
            }
        }
    }
    free(v);
    free(m);
}

static void fast_matches_ref_u8(void **state)
{
    static const size_t sizes[] = {2, 3, 17, 31 * 33, 513 * 7, 200003};
    uint64_t s = 22;
    uint8_t *v = malloc(200003), *m = malloc(200003);
    assert_non_null(v);
    assert_non_null(m);
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        size_t n = sizes[si];
        for (int kind = 0; kind < 3; kind++) {
            for (size_t i = 0; i < n; i++) {
                uint64_t r = gs_rng_next(&s);
                v[i] = kind == 0   ? (uint8_t)r
                       : kind == 1 ? (uint8_t)(i % 2 ? 30 + r % 40 : 150 + r % 60)
                                   : (uint8_t)(r % 2 ? 255 : 0);
                m[i] = (uint8_t)((r >> 20) % 4 != 0);
            }
            v[0] = 0;
            v[n - 1] = 255;
            m[0] = m[n - 1] = 1;
            for (int masked = 0; masked < 2; masked++) {
                const uint8_t *mk = masked ? m : NULL;
                assert_int_equal(otsu_b(1, v, mk, n), otsu_b(0, v, mk, n));
            }
            if (kind == 2)
                assert_int_equal(otsu_b(1, v, NULL, n), 0);
        }
    }
    free(v);
    free(m);
}

/* Values on, just below and just above every float bin edge, where an arithmetic bin guess is
 * most likely to be wrong; the fast histogram must match the reference's edge comparisons. */
static void histogram_bin_edges(void **state)
{
    static const struct {
        float lo, hi;
        int nbins;
    } ranges[] = {
        {0.1f, 0.7f, 256},    {-5.0f, 3.0f, 7},        {0.0f, 1000.0f, 1000},
        {-3e38f, 3e38f, 256}, {1.0f, 1.0000048f, 256}, /* many duplicate edges */
        {1e-30f, 2e-30f, 3},
    };
    for (size_t ri = 0; ri < sizeof ranges / sizeof ranges[0]; ri++) {
        const float lo = ranges[ri].lo, hi = ranges[ri].hi;
        const int nb = ranges[ri].nbins;
        const double step = ((double)hi - (double)lo) / nb;
        size_t n = 0, cap = (size_t)nb * 3 + 8;
        float *v = malloc(sizeof *v * cap);
        assert_non_null(v);
        v[n++] = lo;
        v[n++] = hi;
        for (int i = 0; i <= nb; i++) {
            float e = i == nb ? hi : (float)((double)i * step + (double)lo);
            float cands[3] = {e, nextafterf(e, -INFINITY), nextafterf(e, INFINITY)};
            for (int k = 0; k < 3; k++)
                if (cands[k] >= lo && cands[k] <= hi)
                    v[n++] = cands[k];
        }
        uint64_t *a = malloc(sizeof *a * (size_t)nb), *b = malloc(sizeof *b * (size_t)nb);
        float *ca = malloc(sizeof *ca * (size_t)nb), *cb = malloc(sizeof *cb * (size_t)nb);
        assert_non_null(a);
        assert_non_null(b);
        assert_non_null(ca);
        assert_non_null(cb);
        assert_int_equal(gs_otsu_histogram_f32(v, NULL, n, nb, a, ca), 0);
        assert_int_equal(gs_otsu_histogram_f32_ref(v, NULL, n, nb, b, cb), 0);
        uint64_t total = 0;
        for (int i = 0; i < nb; i++) {
            if (a[i] != b[i])
                fail_msg("range %zu bin %d: fast %llu ref %llu", ri, i, (unsigned long long)a[i],
                         (unsigned long long)b[i]);
            total += a[i];
        }
        assert_int_equal(total, n);
        assert_memory_equal(ca, cb, sizeof *ca * (size_t)nb);
        for (int i = 0; i < nb; i++)
            assert_true(isfinite(ca[i]) && ca[i] >= lo && ca[i] <= hi);
        assert_true(otsu_f(1, v, NULL, n, nb) == otsu_f(0, v, NULL, n, nb));
        free(v);
        free(a);
        free(b);
        free(ca);
        free(cb);
    }
    /* Hand check: {0, 0.5, 1} in two bins [0, 0.5) and [0.5, 1]: counts 1 and 2. */
    const float h[3] = {0.5f, 1.0f, 0.0f};
    uint64_t c[2];
    float ce[2];
    assert_int_equal(gs_otsu_histogram_f32(h, NULL, 3, 2, c, ce), 0);
    assert_int_equal(c[0], 1);
    assert_int_equal(c[1], 2);
    assert_true(ce[0] == 0.25f && ce[1] == 0.75f);
}

static void errors(void **state)
{
    float t = 0;
    uint8_t tb = 0;
    const float f[3] = {2, 2, 2};
    const uint8_t b[3] = {7, 7, 7};
    const uint8_t none[3] = {0, 0, 0};
    const float nan3[3] = {NAN, INFINITY, NAN};
    for (int fast = 0; fast < 2; fast++) {
        int (*ff)(const float *, const uint8_t *, size_t, int, float *) =
            fast ? gs_otsu_f32 : gs_otsu_f32_ref;
        int (*fb)(const uint8_t *, const uint8_t *, size_t, uint8_t *) =
            fast ? gs_otsu_u8 : gs_otsu_u8_ref;
        gs_error_clear();
        assert_int_equal(ff(f, NULL, 3, 256, &t), -1);
        assert_non_null(strstr(gs_error_get(), "equal"));
        assert_int_equal(ff(f, NULL, 0, 256, &t), -1);
        assert_non_null(strstr(gs_error_get(), "no values"));
        assert_int_equal(ff(f, none, 3, 256, &t), -1);
        assert_int_equal(ff(nan3, NULL, 3, 256, &t), -1);
        assert_int_equal(ff(f, NULL, 3, 1, &t), -1);
        assert_int_equal(ff(f, NULL, 3, 256, NULL), -1);
        assert_int_equal(ff(NULL, NULL, 3, 256, &t), -1);
        assert_int_equal(fb(b, NULL, 3, &tb), -1);
        assert_non_null(strstr(gs_error_get(), "equal"));
        assert_int_equal(fb(b, none, 3, &tb), -1);
        assert_non_null(strstr(gs_error_get(), "no values"));
        assert_int_equal(fb(b, NULL, 0, &tb), -1);
        assert_int_equal(fb(b, NULL, 3, NULL), -1);
    }
    assert_true(t == 0 && tb == 0); /* failures leave the output alone */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hand_computed),        cmocka_unit_test(matches_skimage),
        cmocka_unit_test(fast_matches_ref_f32), cmocka_unit_test(fast_matches_ref_u8),
        cmocka_unit_test(histogram_bin_edges),  cmocka_unit_test(errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
