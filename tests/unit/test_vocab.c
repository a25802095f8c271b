/*
 * test_vocab: the protocol vocabulary of proto/vocab.
 *
 * Slide ids are accepted exactly as the validators they replace accepted them (16 lower-case
 * hex digits, nothing else); the fence comes out of every job and result body of WorkMessage
 * and out of a TileMessage, and nothing comes out of a message that has none; every enum
 * value is named as the code printed it before (and as topics derive it from the schema), and
 * UNSPECIFIED or unknown values have no name; a verdict recorded before Verdict.poison is read
 * as poison by the old rule; every pixel format has its channel count.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <string.h>

#include "proto/vocab.h"

#define ID "0123456789abcdef"

/* ---- slide ids ------------------------------------------------------------------------- */

static void slide_ids(void **state)
{
    (void)state;
    assert_true(gs_slide_id_ok(ID));
    assert_true(gs_slide_id_ok("ffffffffffffffff"));
    assert_true(gs_slide_id_ok("0000000000000000"));
    assert_int_equal(strlen(ID), GS_SLIDE_ID_LEN);

    assert_false(gs_slide_id_ok(NULL));
    assert_false(gs_slide_id_ok(""));
    assert_false(gs_slide_id_ok("0123456789abcde"));   /* 15 */
    assert_false(gs_slide_id_ok("0123456789abcdef0")); /* 17 */
    assert_false(gs_slide_id_ok("0123456789ABCDEF"));  /* upper case */
    assert_false(gs_slide_id_ok("0123456789abcdeF"));
    assert_false(gs_slide_id_ok("0123456789abcdeg")); /* not hex */
    assert_false(gs_slide_id_ok("0123456789abcde-"));
    assert_false(gs_slide_id_ok("0123456789abcde "));
    assert_false(gs_slide_id_ok("../../etc/passwd"));
    assert_false(gs_slide_id_ok("s-0001"));
    /* A NUL inside is the end of the string: 15 characters. */
    assert_false(gs_slide_id_ok("0123456789abcde\0f"));
}

/* ---- fences ---------------------------------------------------------------------------- */

/* Every body gets its own slide id, attempt and job id, so a fence read from the wrong body
 * would show. */
#define FENCED(b, n) ((b).slide_id = (char *)ids[n], (b).attempt = 10u + (n))

static const char *const ids[] = {
    "00000000000000a0", "00000000000000a1", "00000000000000a2", "00000000000000a3",
    "00000000000000a4", "00000000000000a5", "00000000000000a6", "00000000000000a7",
    "00000000000000a8", "00000000000000a9", "00000000000000aa",
};

static void expect_fence(const ProtobufCMessage *m, int n, uint64_t job_id)
{
    gs_fence f;
    assert_int_equal(gs_fence_of(m, &f), 0);
    assert_string_equal(f.slide_id, ids[n]);
    assert_int_equal(f.attempt, 10u + (unsigned)n);
    assert_int_equal(f.job_id, job_id);
    assert_true(gs_fence_ok(&f));
}

static void expect_no_fence(const ProtobufCMessage *m)
{
    gs_fence f;
    memset(&f, 0x5a, sizeof f);
    assert_int_equal(gs_fence_of(m, &f), -1);
    assert_null(f.slide_id);
    assert_int_equal(f.attempt, 0);
    assert_int_equal(f.job_id, 0);
    assert_false(gs_fence_ok(&f));
}

static void fence_of_every_work_body(void **state)
{
    (void)state;
    Gastroscreen__V1__PlanJob pj = GASTROSCREEN__V1__PLAN_JOB__INIT;
    Gastroscreen__V1__TileJob tj = GASTROSCREEN__V1__TILE_JOB__INIT;
    Gastroscreen__V1__ScreenTask st = GASTROSCREEN__V1__SCREEN_TASK__INIT;
    Gastroscreen__V1__ReportJob rj = GASTROSCREEN__V1__REPORT_JOB__INIT;
    Gastroscreen__V1__PlanResult pr = GASTROSCREEN__V1__PLAN_RESULT__INIT;
    Gastroscreen__V1__TileJobDone td = GASTROSCREEN__V1__TILE_JOB_DONE__INIT;
    Gastroscreen__V1__TileResult tr = GASTROSCREEN__V1__TILE_RESULT__INIT;
    Gastroscreen__V1__BlurResult br = GASTROSCREEN__V1__BLUR_RESULT__INIT;
    Gastroscreen__V1__ScreenResult sr = GASTROSCREEN__V1__SCREEN_RESULT__INIT;
    Gastroscreen__V1__ReportResult rr = GASTROSCREEN__V1__REPORT_RESULT__INIT;
    FENCED(pj, 0);
    FENCED(tj, 1);
    FENCED(st, 2);
    FENCED(rj, 3);
    FENCED(pr, 4);
    FENCED(td, 5);
    FENCED(tr, 6);
    FENCED(br, 7);
    FENCED(sr, 8);
    FENCED(rr, 9);
    pj.job_id = 100;
    tj.job_id = 101;
    st.job_id = 102;
    rj.job_id = 103;
    pr.job_id = 104;
    td.job_id = 105;
    sr.job_id = 108;
    rr.job_id = 109;

    Gastroscreen__V1__WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    m.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_PLAN_JOB;
    m.plan_job = &pj;
    expect_fence(&m.base, 0, 100);
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_JOB;
    m.tile_job = &tj;
    expect_fence(&m.base, 1, 101);
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_SCREEN_TASK;
    m.screen_task = &st;
    expect_fence(&m.base, 2, 102);
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_REPORT_JOB;
    m.report_job = &rj;
    expect_fence(&m.base, 3, 103);
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_PLAN_RESULT;
    m.plan_result = &pr;
    expect_fence(&m.base, 4, 104);
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_JOB_DONE;
    m.tile_job_done = &td;
    expect_fence(&m.base, 5, 105);
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_RESULT;
    m.tile_result = &tr;
    expect_fence(&m.base, 6, 0);
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_BLUR_RESULT;
    m.blur_result = &br;
    expect_fence(&m.base, 7, 0);
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_SCREEN_RESULT;
    m.screen_result = &sr;
    expect_fence(&m.base, 8, 108);
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_REPORT_RESULT;
    m.report_result = &rr;
    expect_fence(&m.base, 9, 109);
}

static void fence_of_a_tile(void **state)
{
    (void)state;
    Gastroscreen__V1__TileHeader h = GASTROSCREEN__V1__TILE_HEADER__INIT;
    FENCED(h, 10);
    h.job_id = 110;
    Gastroscreen__V1__TileMessage m = GASTROSCREEN__V1__TILE_MESSAGE__INIT;
    m.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    m.body_case = GASTROSCREEN__V1__TILE_MESSAGE__BODY_TILE;
    m.tile = &h;
    expect_fence(&m.base, 10, 110);

    /* The same after the wire: unpacked messages are what receivers hold. */
    size_t len = gastroscreen__v1__tile_message__get_packed_size(&m);
    uint8_t buf[256];
    assert_true(len <= sizeof buf);
    gastroscreen__v1__tile_message__pack(&m, buf);
    Gastroscreen__V1__TileMessage *u = gastroscreen__v1__tile_message__unpack(NULL, len, buf);
    assert_non_null(u);
    expect_fence(&u->base, 10, 110);
    gastroscreen__v1__tile_message__free_unpacked(u, NULL);

    m.body_case = GASTROSCREEN__V1__TILE_MESSAGE__BODY__NOT_SET;
    m.tile = NULL;
    expect_no_fence(&m.base);
}

static void no_fence(void **state)
{
    (void)state;
    Gastroscreen__V1__WorkerHello hello = GASTROSCREEN__V1__WORKER_HELLO__INIT;
    Gastroscreen__V1__WorkerReady ready = GASTROSCREEN__V1__WORKER_READY__INIT;
    Gastroscreen__V1__WorkerHeartbeat hb = GASTROSCREEN__V1__WORKER_HEARTBEAT__INIT;
    Gastroscreen__V1__WorkerGoodbye bye = GASTROSCREEN__V1__WORKER_GOODBYE__INIT;
    Gastroscreen__V1__WorkerWelcome welcome = GASTROSCREEN__V1__WORKER_WELCOME__INIT;
    Gastroscreen__V1__CoordinatorHeartbeat chb = GASTROSCREEN__V1__COORDINATOR_HEARTBEAT__INIT;
    Gastroscreen__V1__WorkMessage m = GASTROSCREEN__V1__WORK_MESSAGE__INIT;
    expect_no_fence(&m.base); /* no body */
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_HELLO;
    m.hello = &hello;
    expect_no_fence(&m.base);
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_READY;
    m.ready = &ready;
    expect_no_fence(&m.base);
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_WORKER_HEARTBEAT;
    m.worker_heartbeat = &hb;
    expect_no_fence(&m.base);
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_GOODBYE;
    m.goodbye = &bye;
    expect_no_fence(&m.base);
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_WELCOME;
    m.welcome = &welcome;
    expect_no_fence(&m.base);
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_COORDINATOR_HEARTBEAT;
    m.coordinator_heartbeat = &chb;
    expect_no_fence(&m.base);
    /* A body case whose message is missing (only a hand-built message can have one). */
    m.body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_RESULT;
    m.tile_result = NULL;
    expect_no_fence(&m.base);

    /* A verdict names (slide_id, attempt) too, but it is an event, not a job or result. */
    Gastroscreen__V1__Verdict v = GASTROSCREEN__V1__VERDICT__INIT;
    FENCED(v, 0);
    Gastroscreen__V1__EventMessage e = GASTROSCREEN__V1__EVENT_MESSAGE__INIT;
    e.body_case = GASTROSCREEN__V1__EVENT_MESSAGE__BODY_VERDICT;
    e.verdict = &v;
    expect_no_fence(&e.base);
    expect_no_fence(NULL);
}

static void fence_ok(void **state)
{
    (void)state;
    gs_fence f = {.slide_id = ID, .attempt = 1};
    assert_true(gs_fence_ok(&f));
    f.attempt = 0; /* "not set" makes the message malformed (PROTOCOL.md §1) */
    assert_false(gs_fence_ok(&f));
    f.attempt = 2;
    f.slide_id = "0123456789ABCDEF";
    assert_false(gs_fence_ok(&f));
    f.slide_id = "";
    assert_false(gs_fence_ok(&f));
    f.slide_id = NULL;
    assert_false(gs_fence_ok(&f));
    assert_false(gs_fence_ok(NULL));
}

/* ---- names ---------------------------------------------------------------------------- */

static void wire_strings(void **state)
{
    (void)state;
    assert_false(gs_wire_str_ok(NULL, 8));
    assert_true(gs_wire_str_ok("", 0));
    assert_true(gs_wire_str_ok("12345678", 8));
    assert_false(gs_wire_str_ok("123456789", 8));
    /* Not read past max + 1: no terminator needed beyond that. */
    char unterminated[4] = {'a', 'b', 'c', 'd'};
    assert_false(gs_wire_str_ok(unterminated, 2));
}

static void stage_names(void **state)
{
    (void)state;
    assert_string_equal(gs_stage_name(GASTROSCREEN__V1__STAGE__STAGE_TILER), "tiler");
    assert_string_equal(gs_stage_name(GASTROSCREEN__V1__STAGE__STAGE_FOREGROUND), "foreground");
    assert_string_equal(gs_stage_name(GASTROSCREEN__V1__STAGE__STAGE_BLUR), "blur");
    assert_string_equal(gs_stage_name(GASTROSCREEN__V1__STAGE__STAGE_INFER), "infer");
    assert_string_equal(gs_stage_name(GASTROSCREEN__V1__STAGE__STAGE_SCREENER), "screener");
    assert_string_equal(gs_stage_name(GASTROSCREEN__V1__STAGE__STAGE_REPORTER), "reporter");
    assert_string_equal(gs_stage_name(GASTROSCREEN__V1__STAGE__STAGE_COORDINATOR), "coordinator");
    assert_null(gs_stage_name(GASTROSCREEN__V1__STAGE__STAGE_UNSPECIFIED));
    assert_null(gs_stage_name(8));
    assert_null(gs_stage_name(-1));
}

static void slide_state_names(void **state)
{
    (void)state;
    assert_string_equal(gs_slide_state_name(GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_ACCEPTED),
                        "accepted");
    assert_string_equal(gs_slide_state_name(GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_PLANNED),
                        "planned");
    assert_string_equal(
        gs_slide_state_name(GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_BLUR_CHECKED),
        "blur_checked");
    assert_string_equal(gs_slide_state_name(GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_INFERRING),
                        "inferring");
    assert_string_equal(gs_slide_state_name(GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_SCREENED),
                        "screened");
    assert_string_equal(gs_slide_state_name(GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_REPORTED),
                        "reported");
    assert_string_equal(gs_slide_state_name(GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_DONE),
                        "done");
    assert_string_equal(gs_slide_state_name(GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_FAILED),
                        "failed");
    assert_null(gs_slide_state_name(GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_UNSPECIFIED));
    assert_null(gs_slide_state_name(9));
    assert_null(gs_slide_state_name(-1));
}

static void verdict_class_names(void **state)
{
    (void)state;
    assert_string_equal(
        gs_verdict_class_name(GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_NEGATIVE), "negative");
    assert_string_equal(
        gs_verdict_class_name(GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_POSITIVE), "positive");
    assert_string_equal(
        gs_verdict_class_name(GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_UNASSESSABLE),
        "unassessable");
    assert_string_equal(
        gs_verdict_class_name(GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_FAILED), "failed");
    assert_null(gs_verdict_class_name(GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_UNSPECIFIED));
    assert_null(gs_verdict_class_name(5));
    assert_null(gs_verdict_class_name(-1));
}

static void method_names(void **state)
{
    (void)state;
    assert_string_equal(gs_method_name(GASTROSCREEN__V1__METHOD__METHOD_NETWORK), "network");
    assert_string_equal(gs_method_name(GASTROSCREEN__V1__METHOD__METHOD_CLASSICAL), "classical");
    assert_null(gs_method_name(GASTROSCREEN__V1__METHOD__METHOD_UNSPECIFIED));
    assert_null(gs_method_name(3));
    assert_null(gs_method_name(-1));
}

static void tile_outcome_names(void **state)
{
    (void)state;
    assert_string_equal(gs_tile_outcome_name(GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_INFERRED),
                        "inferred");
    assert_string_equal(
        gs_tile_outcome_name(GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_BACKGROUND),
        "background");
    assert_string_equal(gs_tile_outcome_name(GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_BLURRY),
                        "blurry");
    assert_string_equal(gs_tile_outcome_name(GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_ERROR),
                        "error");
    assert_null(gs_tile_outcome_name(GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_UNSPECIFIED));
    assert_null(gs_tile_outcome_name(5));
    assert_null(gs_tile_outcome_name(-1));
}

/* Every value the schema declares, but UNSPECIFIED, is named as PROTOCOL.md §3 says topics name
 * it: the proto name without its prefix, in lower case. A value added to the schema without a
 * name here fails this. */
static void names_follow_the_schema(void **state)
{
    (void)state;
    static const struct {
        const ProtobufCEnumDescriptor *d;
        const char *prefix;
        const char *(*name)(int);
    } enums[] = {
        {&gastroscreen__v1__stage__descriptor, "STAGE_", gs_stage_name},
        {&gastroscreen__v1__slide_state__descriptor, "SLIDE_STATE_", gs_slide_state_name},
        {&gastroscreen__v1__verdict_class__descriptor, "VERDICT_CLASS_", gs_verdict_class_name},
        {&gastroscreen__v1__method__descriptor, "METHOD_", gs_method_name},
        {&gastroscreen__v1__tile_outcome__descriptor, "TILE_OUTCOME_", gs_tile_outcome_name},
    };
    for (size_t e = 0; e < sizeof enums / sizeof enums[0]; e++) {
        const ProtobufCEnumDescriptor *d = enums[e].d;
        size_t plen = strlen(enums[e].prefix);
        for (unsigned i = 0; i < d->n_values; i++) {
            const ProtobufCEnumValue *v = &d->values[i];
            const char *got = enums[e].name(v->value);
            if (v->value == 0) {
                assert_null(got);
                continue;
            }
            assert_non_null(got);
            assert_memory_equal(v->name, enums[e].prefix, plen);
            char want[64];
            size_t n = strlen(v->name + plen);
            assert_true(n < sizeof want);
            for (size_t k = 0; k <= n; k++)
                want[k] = (char)tolower((unsigned char)v->name[plen + k]);
            assert_string_equal(got, want);
        }
    }
}

/* ---- poison ---------------------------------------------------------------------------- */

static void poison_by_legacy_reason(void **state)
{
    (void)state;
    assert_true(gs_poison_by_legacy_reason(GS_VERDICT_FAILED,
                                           "poison: 3 workers were lost while holding this slide"));
    assert_true(gs_poison_by_legacy_reason(
        GS_VERDICT_FAILED, "poison: the coordinator restarted 5 times with this slide in flight"));
    assert_true(gs_poison_by_legacy_reason(GS_VERDICT_FAILED, GS_POISON_REASON));
    assert_false(gs_poison_by_legacy_reason(GS_VERDICT_FAILED, "plan: unsupported format"));
    assert_false(gs_poison_by_legacy_reason(GS_VERDICT_FAILED, "poiso"));
    assert_false(gs_poison_by_legacy_reason(GS_VERDICT_FAILED, "Poison: 3 workers"));
    assert_false(gs_poison_by_legacy_reason(GS_VERDICT_FAILED, ""));
    assert_false(gs_poison_by_legacy_reason(GS_VERDICT_FAILED, NULL));
    /* only a FAILED verdict can have been poison */
    assert_false(gs_poison_by_legacy_reason(GS_VERDICT_NONE, "poison: 3 workers"));
    assert_false(gs_poison_by_legacy_reason(GS_VERDICT_UNASSESSABLE, "poison: 3 workers"));
    assert_false(gs_poison_by_legacy_reason(GS_VERDICT_NEGATIVE, "poison: 3 workers"));
}

/* ---- pixel formats --------------------------------------------------------------------- */

static void pixel_channels(void **state)
{
    (void)state;
    assert_int_equal(gs_pixel_channels(GASTROSCREEN__V1__PIXEL_FORMAT__PIXEL_FORMAT_RGB8), 3);
    assert_int_equal(gs_pixel_channels(GASTROSCREEN__V1__PIXEL_FORMAT__PIXEL_FORMAT_RGBA8), 4);
    assert_int_equal(gs_pixel_channels(GASTROSCREEN__V1__PIXEL_FORMAT__PIXEL_FORMAT_GRAY8), 1);
    assert_int_equal(gs_pixel_channels(GASTROSCREEN__V1__PIXEL_FORMAT__PIXEL_FORMAT_UNSPECIFIED),
                     0);
    assert_int_equal(gs_pixel_channels((Gastroscreen__V1__PixelFormat)4), 0);
    assert_int_equal(gs_pixel_channels((Gastroscreen__V1__PixelFormat)-1), 0);
    /* Every format the schema declares has its channels here. */
    const ProtobufCEnumDescriptor *d = &gastroscreen__v1__pixel_format__descriptor;
    for (unsigned i = 0; i < d->n_values; i++)
        if (d->values[i].value != 0)
            assert_true(gs_pixel_channels((Gastroscreen__V1__PixelFormat)d->values[i].value) > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(slide_ids),
        cmocka_unit_test(fence_of_every_work_body),
        cmocka_unit_test(fence_of_a_tile),
        cmocka_unit_test(no_fence),
        cmocka_unit_test(fence_ok),
        cmocka_unit_test(wire_strings),
        cmocka_unit_test(stage_names),
        cmocka_unit_test(slide_state_names),
        cmocka_unit_test(verdict_class_names),
        cmocka_unit_test(method_names),
        cmocka_unit_test(tile_outcome_names),
        cmocka_unit_test(names_follow_the_schema),
        cmocka_unit_test(poison_by_legacy_reason),
        cmocka_unit_test(pixel_channels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
