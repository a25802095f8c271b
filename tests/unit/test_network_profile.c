/*
 * Unit tests of the per-part profiling hook of model/network.h (gs_net_state_profile), on the
 * seeded four-network bundle of the seeded_bundle fixture: off by default (no runs counted,
 * all parts zero), on it counts runs and puts time in every part of the multi-task network
 * (so a step left untagged or a part never reached would show), it does not change the
 * outputs, and switching it off freezes the totals. No time is compared with another.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "model/network.h"
#include "ops/error.h"

enum { SIDE = 64 };

static const char *bundle_path(void)
{
    static char p[4096];
    const char *b = getenv("GS_BUILD_DIR");
    assert_non_null(b);
    snprintf(p, sizeof p, "%s/tests/seeded/seed1.safetensors", b);
    return p;
}

static void run(gs_net_state *s, const uint8_t *rgb, float *logit, float *feat, float *seg)
{
    if (gs_net_run_multitask(s, rgb, logit, feat, seg) != 0)
        fail_msg("%s", gs_error_get());
}

static void test_profile_parts(void **state)
{
    (void)state;
    const gs_net_id mt = GS_NET_MULTITASK;
    gs_model *m = gs_model_load_nets(bundle_path(), &mt, 1);
    if (!m)
        fail_msg("%s", gs_error_get());
    gs_net_state *s = gs_net_state_new(m, GS_NET_MULTITASK, 1, SIDE, SIDE);
    if (!s)
        fail_msg("%s", gs_error_get());
    uint8_t rgb[SIDE * SIDE * 3];
    uint32_t x = 7u;
    for (size_t i = 0; i < sizeof rgb; i++) {
        x = x * 1664525u + 1013904223u;
        rgb[i] = (uint8_t)(x >> 24);
    }
    float logit[2], feat[2][512], seg[2][SIDE / 4 * SIDE / 4];
    double t[GS_NET_PART_COUNT];

    run(s, rgb, &logit[0], feat[0], seg[0]);
    assert_int_equal(gs_net_state_profile_get(s, t), 0);
    for (int p = 0; p < GS_NET_PART_COUNT; p++)
        assert_true(t[p] == 0.0);

    gs_net_state_profile(s, 1);
    run(s, rgb, &logit[1], feat[1], seg[1]);
    run(s, rgb, &logit[1], feat[1], seg[1]);
    assert_int_equal(gs_net_state_profile_get(s, t), 2);
    for (int p = 0; p < GS_NET_PART_COUNT; p++) {
        if (!(t[p] > 0.0))
            fail_msg("part %s got no time", gs_net_part_name((gs_net_part)p));
    }
    /* Profiling waits between steps; it must not change what is computed. */
    assert_memory_equal(&logit[0], &logit[1], sizeof logit[0]);
    assert_memory_equal(feat[0], feat[1], sizeof feat[0]);
    assert_memory_equal(seg[0], seg[1], sizeof seg[0]);

    gs_net_state_profile(s, 0);
    double frozen[GS_NET_PART_COUNT];
    run(s, rgb, &logit[1], feat[1], seg[1]);
    assert_int_equal(gs_net_state_profile_get(s, frozen), 2);
    assert_memory_equal(frozen, t, sizeof t);

    /* Switching on again starts from zero. */
    gs_net_state_profile(s, 1);
    assert_int_equal(gs_net_state_profile_get(s, t), 0);
    for (int p = 0; p < GS_NET_PART_COUNT; p++)
        assert_true(t[p] == 0.0);
    gs_net_state_destroy(&s);
    gs_model_destroy(&m);
}

static void test_part_names(void **state)
{
    (void)state;
    static const char *const want[GS_NET_PART_COUNT] = {
        "input", "encoder", "decoder_offsets", "decoder_dcn", "transposed_convs",
        "heads", "reorders"};
    for (int p = 0; p < GS_NET_PART_COUNT; p++)
        assert_string_equal(gs_net_part_name((gs_net_part)p), want[p]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_profile_parts),
        cmocka_unit_test(test_part_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
