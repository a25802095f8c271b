/*
 * testrand: the seeded random buffers and error measures the ops/deform_conv tests share
 * (float32, bf16 and int8 paths), so each compares fast and reference paths the same way.
 *
 *     rng_seed(7);
 *     float *x = rand_buf(n, -1, 1);             // caller frees
 *     double err = max_diff(ref, fast, n);       // NaN anywhere counts as infinite
 *     assert_true(err <= tol * max_abs(ref, n));
 *
 * Header-only (static functions and state, one per test file): the tests link no shared
 * helper library. Include after <cmocka.h>.
 */
#ifndef GS_TESTS_UNIT_TESTRAND_H
#define GS_TESTS_UNIT_TESTRAND_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

/* xorshift64 from a state derived from s, so small seeds give unrelated streams. */
static inline void rng_seed(uint64_t s)
{
    rng_state = s * 0x9E3779B97F4A7C15ull + 1;
}

static inline float rng_uniform(float lo, float hi)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return lo + (hi - lo) * (float)((rng_state >> 11) * (1.0 / 9007199254740992.0));
}

/* n floats uniform in [lo, hi); the caller frees. */
static inline float *rand_buf(size_t n, float lo, float hi)
{
    float *b = malloc((n ? n : 1) * sizeof *b);
    assert_non_null(b);
    for (size_t i = 0; i < n; i++)
        b[i] = rng_uniform(lo, hi);
    return b;
}

static inline double max_abs(const float *a, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs(a[i]) > m)
            m = fabs(a[i]);
    return m;
}

/* max |a - b|; a NaN in either counts as an infinite error. */
static inline double max_diff(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]);
        if (!(e <= m))
            m = isnan(e) ? INFINITY : e;
    }
    return m;
}

#endif
