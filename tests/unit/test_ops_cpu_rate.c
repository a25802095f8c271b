/*
 * Unit tests of ops/cpu_rate: the bf16-over-fp32 multiply-add rate is measured only where the
 * instructions exist, is a plausible positive ratio there, is measured once (every thread,
 * first callers racing, gets the same value), and gs_bf16_pays follows its documented rule.
 * The value itself depends on the CPU; bench prints it (tests never time anything).
 */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include <oneapi/dnnl/dnnl.h>

#include "ops/cpu_rate.h"
#include "ops/dnnl_reorder.h"

enum { THREADS = 4 };

static void *first_call(void *out)
{
    *(double *)out = gs_cpu_bf16_rate();
    return NULL;
}

static void measured_once_by_racing_threads(void **state)
{
    (void)state;
    pthread_t t[THREADS];
    double r[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, first_call, &r[i]), 0);
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    for (int i = 1; i < THREADS; i++)
        assert_true(r[i] == r[0]);
    assert_true(gs_cpu_bf16_rate() == r[0]);
}

static void zero_exactly_without_the_instructions(void **state)
{
    (void)state;
    __builtin_cpu_init();
    double r = gs_cpu_bf16_rate();
    printf("bf16 multiply-adds at %.3fx the fp32 rate\n", r);
    if (!__builtin_cpu_supports("avx512bf16")) {
        assert_true(r == 0.0);
        return;
    }
    /* One instruction kind against another on one core: a ratio far outside [1/16, 16]
       means the loops did not run as written (or the clock failed). */
    assert_true(isfinite(r));
    assert_true(r > 1.0 / 16 && r < 16.0);
}

static void pays_follows_isa_and_rate(void **state)
{
    (void)state;
    int pays = gs_bf16_pays();
    if (gs_dnnl_isa_has(dnnl_cpu_isa_avx512_core_amx))
        assert_int_equal(pays, 1);
    else if (!gs_bf16_native())
        assert_int_equal(pays, 0);
    else
        assert_int_equal(pays, gs_cpu_bf16_rate() >= GS_BF16_PAYS_RATE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(measured_once_by_racing_threads),
        cmocka_unit_test(zero_exactly_without_the_instructions),
        cmocka_unit_test(pays_follows_isa_and_rate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
