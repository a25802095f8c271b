/*
 * Unit tests of gs_model_load_nets (model/network.h): a model that builds only some of the
 * bundle's networks, on the seeded four-network bundle made by the seeded_bundle fixture.
 * Only the blur network built: its outputs equal the full load's bit for bit, presence,
 * provenance and "untrained" answers equal the full load's for every network, and states of
 * the networks not built are refused with a message naming the network. The networks skipped
 * are still checked by name and shape: a renamed or reshaped multitask tensor (header edits
 * of the same length, so the file stays a valid safetensors) fails a blur-only load.
 */
/* memmem: _GNU_SOURCE comes from the build (-D_GNU_SOURCE). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "model/network.h"
#include "model/weights.h"
#include "ops/error.h"

static const char *bundle_path(void)
{
    static char p[4096];
    const char *b = getenv("GS_BUILD_DIR");
    assert_non_null(b);
    snprintf(p, sizeof p, "%s/tests/seeded/seed1.safetensors", b);
    return p;
}

/* Deterministic non-flat crops, so a blur logit depends on every weight of the network. */
static uint8_t *crops(int n, int side)
{
    size_t len = (size_t)n * side * side * 3;
    uint8_t *rgb = malloc(len);
    assert_non_null(rgb);
    uint32_t x = 12345u;
    for (size_t i = 0; i < len; i++) {
        x = x * 1664525u + 1013904223u;
        rgb[i] = (uint8_t)(x >> 24);
    }
    return rgb;
}

static void blur_logits(const gs_model *m, const uint8_t *rgb, int n, int side, float *logit)
{
    gs_net_state *s = gs_net_state_new(m, GS_NET_BLUR, n, side, side);
    if (!s)
        fail_msg("%s", gs_error_get());
    assert_int_equal(gs_net_run_blur(s, rgb, logit), 0);
    gs_net_state_destroy(&s);
}

static void test_blur_only_matches_full(void **state)
{
    (void)state;
    gs_model *full = gs_model_load(bundle_path());
    if (!full)
        fail_msg("%s", gs_error_get());
    const gs_net_id blur = GS_NET_BLUR;
    gs_model *sub = gs_model_load_nets(bundle_path(), &blur, 1);
    if (!sub)
        fail_msg("%s", gs_error_get());
    for (int i = 0; i < GS_NET_COUNT; i++) {
        gs_net_id id = (gs_net_id)i;
        /* The seeded bundle holds all four networks, so each skip below is a real one. */
        assert_int_equal(gs_model_has(full, id), 1);
        assert_int_equal(gs_model_built(full, id), 1);
        assert_int_equal(gs_model_has(sub, id), 1);
        assert_int_equal(gs_model_built(sub, id), id == GS_NET_BLUR);
        assert_string_equal(gs_model_provenance(sub, id), gs_model_provenance(full, id));
        assert_int_equal(gs_model_untrained(sub, id), gs_model_untrained(full, id));
    }
    assert_string_equal(gs_weights_meta(gs_model_weights(sub), "creator"),
                        gs_weights_meta(gs_model_weights(full), "creator"));

    enum { N = 3, SIDE = 256 };
    uint8_t *rgb = crops(N, SIDE);
    float a[N], b[N];
    blur_logits(full, rgb, N, SIDE, a);
    blur_logits(sub, rgb, N, SIDE, b);
    for (int i = 0; i < N; i++) {
        printf("blur logit %d: full %.9g, blur-only %.9g\n", i, (double)a[i], (double)b[i]);
        assert_true(isfinite(a[i]));
    }
    assert_true(a[0] != a[1] || a[1] != a[2]); /* the crops differ, so should the logits */
    assert_memory_equal(a, b, sizeof a);

    static const struct {
        gs_net_id id;
        int n, h, w;
    } refused[] = {
        {GS_NET_MULTITASK, 1, 64, 64}, {GS_NET_FOREGROUND, 1, 64, 64}, {GS_NET_SCREENER, 4, 1, 1}};
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        assert_null(gs_net_state_new(sub, refused[i].id, refused[i].n, refused[i].h, refused[i].w));
        const char *msg = gs_error_get();
        printf("expected error: %s\n", msg);
        assert_non_null(strstr(msg, gs_net_name(refused[i].id)));
        assert_non_null(strstr(msg, "not loaded"));
    }
    /* The full model makes those states. */
    gs_net_state *s = gs_net_state_new(full, GS_NET_MULTITASK, 1, 64, 64);
    if (!s)
        fail_msg("%s", gs_error_get());
    gs_net_state_destroy(&s);
    free(rgb);
    gs_model_destroy(&sub);
    assert_null(sub);
    gs_model_destroy(&full);
}

/* No network built: metadata and provenance only; every state is refused. */
static void test_none_built(void **state)
{
    (void)state;
    gs_model *m = gs_model_load_nets(bundle_path(), NULL, 0);
    if (!m)
        fail_msg("%s", gs_error_get());
    for (int i = 0; i < GS_NET_COUNT; i++) {
        assert_int_equal(gs_model_has(m, (gs_net_id)i), 1);
        assert_int_equal(gs_model_built(m, (gs_net_id)i), 0);
        assert_string_equal(gs_model_provenance(m, (gs_net_id)i), "untrained");
    }
    assert_null(gs_net_state_new(m, GS_NET_BLUR, 1, 256, 256));
    assert_non_null(strstr(gs_error_get(), "blur was not loaded"));
    gs_model_destroy(&m);

    const gs_net_id bad = (gs_net_id)GS_NET_COUNT;
    assert_null(gs_model_load_nets(bundle_path(), &bad, 1));
    assert_non_null(strstr(gs_error_get(), "no such network"));
}

static unsigned char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("%s: cannot open", path);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    assert_true(n > 8);
    rewind(f);
    unsigned char *buf = malloc((size_t)n);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* Replaces the first `from` in the safetensors header of buf by `to` (same length). */
static void edit_header(unsigned char *buf, size_t len, const char *from, const char *to)
{
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = hl << 8 | buf[i];
    assert_true(hl <= len - 8);
    assert_int_equal(strlen(from), strlen(to));
    unsigned char *at = memmem(buf + 8, (size_t)hl, from, strlen(from));
    if (!at)
        fail_msg("header has no %s", from);
    memcpy(at, to, strlen(to));
}

static void expect_blur_only_fails(const unsigned char *buf, size_t len, const char *needle1,
                                   const char *needle2)
{
    gs_weights *w = gs_weights_open_buffer(buf, len, "edited.safetensors");
    if (!w)
        fail_msg("the edit broke the file itself: %s", gs_error_get());
    const gs_net_id blur = GS_NET_BLUR;
    gs_model *m = gs_model_from_weights_nets(&w, &blur, 1);
    assert_null(w);
    const char *msg = gs_error_get();
    printf("expected error: %s\n", msg);
    assert_null(m);
    assert_non_null(strstr(msg, needle1));
    assert_non_null(strstr(msg, needle2));
}

static void test_skipped_network_still_checked(void **state)
{
    (void)state;
    size_t len;
    unsigned char *orig = read_all(bundle_path(), &len);
    unsigned char *buf = malloc(len);
    assert_non_null(buf);

    /* Unedited, the buffer loads (so the failures below are the edits'). */
    gs_weights *w = gs_weights_open_buffer(orig, len, "seed1");
    assert_non_null(w);
    const gs_net_id blur = GS_NET_BLUR;
    gs_model *m = gs_model_from_weights_nets(&w, &blur, 1);
    if (!m)
        fail_msg("%s", gs_error_get());
    gs_model_destroy(&m);

    memcpy(buf, orig, len);
    edit_header(buf, len, "\"multitask.cls.fc.weight\":{\"dtype\":\"F32\",\"shape\":[1,512]",
                "\"multitask.cls.fc.weight\":{\"dtype\":\"F32\",\"shape\":[512,1]");
    expect_blur_only_fails(buf, len, "multitask.cls.fc.weight",
                           "shape [512,1] but expected [1,512]");

    memcpy(buf, orig, len);
    edit_header(buf, len, "\"multitask.cls.fc.bias\"", "\"multitask.cls.fc.bjas\"");
    expect_blur_only_fails(buf, len, "multitask.cls.fc.bias", "missing");

    memcpy(buf, orig, len);
    edit_header(buf, len, "\"screener.fc.bias\"", "\"screener.fc.bia2\"");
    expect_blur_only_fails(buf, len, "screener.fc.bias", "missing");

    memcpy(buf, orig, len);
    edit_header(buf, len, "\"bn_eps\":\"1e-5\"", "\"bn_eps\":\"-1e5\"");
    expect_blur_only_fails(buf, len, "bn_eps", "\"-1e5\"");
    free(buf);
    free(orig);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blur_only_matches_full),
        cmocka_unit_test(test_none_built),
        cmocka_unit_test(test_skipped_network_still_checked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
