#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/service/journal.h"
#include "daemon/service/slide_table.h"
#include "ops/error.h"
#include "proto/gastroscreen.pb-c.h"

typedef struct {
    char dir[64];
    gs_journal *j;
    gs_slides *t;
} fixture;

static gs_slides_options options(void)
{
    gs_slides_options o;
    gs_slides_options_default(&o);
    o.model_bundle = "default.safetensors";
    o.model_sha256 = "ab12";
    o.model_trained_on = "untrained";
    o.model_notice = "model: untrained — not a diagnosis";
    o.model_untrained = 1;
    return o;
}

static void open_fixture(fixture *f)
{
    f->j = gs_journal_open(f->dir);
    assert_non_null(f->j);
    gs_slides_options o = options();
    f->t = gs_slides_new(f->j, &o);
    assert_non_null(f->t);
}

static void close_fixture(fixture *f)
{
    gs_slides_destroy(&f->t);
    assert_null(f->t);
    gs_journal_destroy(&f->j);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/gs_test_slides_XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    open_fixture(f);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    close_fixture(f);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* Unpacks the journalled event with number seq. Caller frees with
 * gastroscreen__v1__event_message__free_unpacked. */
static Gastroscreen__V1__EventMessage *event(fixture *f, uint64_t seq)
{
    gs_journal_event ev;
    assert_int_equal(gs_journal_events_since(f->j, seq - 1, &ev, 1), 1);
    assert_int_equal(ev.seq, seq);
    Gastroscreen__V1__EventMessage *m =
        gastroscreen__v1__event_message__unpack(NULL, ev.payload_len, ev.payload);
    assert_non_null(m);
    assert_int_equal(m->protocol, GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1);
    assert_int_equal(m->seq, seq);
    return m;
}

static gs_slide_info info(fixture *f, const char *id)
{
    gs_slide_info v;
    assert_int_equal(gs_slides_get(f->t, id, &v), 0);
    return v;
}

static void accept(fixture *f, const char *path, char id[17])
{
    int dup = -1;
    uint64_t seq = 0;
    assert_int_equal(
        gs_slides_intake(f->t, path, 1000, 5000, GS_INTAKE_SUBMIT, "ACC-1", 100, id, &dup, &seq),
        0);
    assert_int_equal(dup, 0);
    assert_int_equal(seq, gs_journal_last_seq(f->j));
}

static void full_flow_journals_every_transition(void **state)
{
    fixture *f = *state;
    char id[17];
    uint64_t seq = 0;
    accept(f, "/slides/a.svs", id);
    assert_int_equal(strlen(id), 16);
    Gastroscreen__V1__EventMessage *m = event(f, 1);
    assert_int_equal(m->body_case, GASTROSCREEN__V1__EVENT_MESSAGE__BODY_ACCEPTED);
    assert_string_equal(m->accepted->slide_id, id);
    assert_string_equal(m->accepted->path, "/slides/a.svs");
    assert_string_equal(m->accepted->external_id, "ACC-1");
    assert_false(m->accepted->duplicate);
    gastroscreen__v1__event_message__free_unpacked(m, NULL);
    assert_int_equal(info(f, id).state, GS_SLIDE_ACCEPTED);
    assert_int_equal(info(f, id).attempt, 1);

    int folded = -1;
    assert_int_equal(
        gs_slides_planned(f->t, id, 1, "qh1", GS_METHOD_CLASSICAL, NULL, 200, &folded, &seq), 0);
    assert_int_equal(folded, 0);
    assert_int_equal(seq, 2);
    m = event(f, 2);
    assert_int_equal(m->body_case, GASTROSCREEN__V1__EVENT_MESSAGE__BODY_STATE_CHANGED);
    assert_int_equal(m->state_changed->from, GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_ACCEPTED);
    assert_int_equal(m->state_changed->to, GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_PLANNED);
    assert_int_equal(m->state_changed->attempt, 1);
    gastroscreen__v1__event_message__free_unpacked(m, NULL);

    assert_int_equal(
        gs_slides_blur_checked(f->t, id, 1, 0.125f, GS_METHOD_CLASSICAL, 0, NULL, 300, &seq), 0);
    assert_int_equal(gs_slides_inferring(f->t, id, 1, 400, &seq), 0);
    assert_int_equal(gs_slides_screened(f->t, id, 1, 0.91f, 500, &seq), 0);
    gs_slide_info v = info(f, id);
    assert_int_equal(v.state, GS_SLIDE_SCREENED);
    assert_int_equal(v.verdict, GS_VERDICT_POSITIVE);
    assert_string_equal(v.reason, "score 0.91 > 0.74");
    const char *warnings[] = {"no mpp: used default 0.25", "2 tiles failed"};
    gs_slide_report rep = {.report_json = "/out/a/report.json",
                           .heatmap_png = "/out/a/heatmap.png",
                           .regions_geojson = "/out/a/regions.geojson",
                           .tiles = {100, 60, 30, 8, 2, 5},
                           .warnings = warnings,
                           .n_warnings = 2};
    assert_int_equal(gs_slides_reported(f->t, id, 1, &rep, 600, &seq), 0);
    assert_int_equal(gs_slides_done(f->t, id, 1, 700, &seq), 0);
    assert_int_equal(seq, 7);
    assert_int_equal(gs_journal_last_seq(f->j), 7);
    m = event(f, 7);
    assert_int_equal(m->body_case, GASTROSCREEN__V1__EVENT_MESSAGE__BODY_VERDICT);
    Gastroscreen__V1__Verdict *vd = m->verdict;
    assert_string_equal(vd->slide_id, id);
    assert_int_equal(vd->verdict_class, GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_POSITIVE);
    assert_int_equal(vd->state, GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_DONE);
    assert_true(vd->score == 0.91f);
    assert_true(vd->threshold == 0.74f);
    assert_true(vd->blurred_fraction == 0.125f);
    assert_string_equal(vd->model->notice, "model: untrained — not a diagnosis");
    assert_true(vd->model->untrained);
    assert_string_equal(vd->report->regions_geojson, "/out/a/regions.geojson");
    assert_int_equal(vd->tiles->planned, 100);
    assert_int_equal(vd->tiles->rerequested, 5);
    assert_int_equal(vd->n_warnings, 2);
    assert_string_equal(vd->warnings[1], "2 tiles failed");
    assert_string_equal(vd->external_id, "ACC-1");
    gastroscreen__v1__event_message__free_unpacked(m, NULL);
    assert_int_equal(gs_slides_in_flight(f->t), 0);

    /* The journal holds the same picture after a restart. */
    close_fixture(f);
    open_fixture(f);
    assert_int_equal(gs_slides_recover(f->t, 800), 0);
    v = info(f, id);
    assert_int_equal(v.state, GS_SLIDE_DONE);
    assert_int_equal(v.verdict, GS_VERDICT_POSITIVE);
    assert_string_equal(v.warnings, "no mpp: used default 0.25\n2 tiles failed");
    assert_int_equal(v.tiles.inferred, 60);
    assert_int_equal(v.last_seq, 7);
    assert_int_equal(gs_slide_next_step(&v), GS_STEP_NONE);
    assert_int_equal(gs_slides_recover(f->t, 800), -1); /* once only */
}

/* The threshold that judged a slide is journalled with SCREENED: a coordinator restarted with
 * another threshold (the lab edited its config) still reports the one that judged it. */
static void judging_threshold_survives_a_restart(void **state)
{
    fixture *f = *state;
    close_fixture(f);
    f->j = gs_journal_open(f->dir);
    assert_non_null(f->j);
    gs_slides_options o = options();
    o.threshold = 0.6f;
    o.threshold_source = "config";
    f->t = gs_slides_new(f->j, &o);
    assert_non_null(f->t);
    char id[17];
    accept(f, "/slides/t.svs", id);
    int folded = -1;
    assert_int_equal(
        gs_slides_planned(f->t, id, 1, "qh", GS_METHOD_CLASSICAL, NULL, 2, &folded, NULL), 0);
    assert_int_equal(
        gs_slides_blur_checked(f->t, id, 1, 0.f, GS_METHOD_CLASSICAL, 0, NULL, 3, NULL), 0);
    assert_int_equal(gs_slides_inferring(f->t, id, 1, 4, NULL), 0);
    assert_int_equal(gs_slides_screened(f->t, id, 1, 0.65f, 5, NULL), 0);
    gs_slide_info v = info(f, id);
    assert_int_equal(v.verdict, GS_VERDICT_POSITIVE); /* 0.65 > 0.6 */
    assert_true(v.threshold == 0.6f);
    assert_string_equal(v.threshold_source, "config");

    close_fixture(f);
    open_fixture(f);                                 /* the default options: 0.74, no source */
    assert_int_equal(gs_slides_recover(f->t, 6), 1); /* attempt 2 */
    v = info(f, id);
    assert_true(v.threshold == 0.6f);
    assert_string_equal(v.threshold_source, "config");
    gs_slide_report rep = {.tiles = {1, 1, 0, 0, 0, 0}};
    uint32_t attempt = v.attempt;
    if (v.state == GS_SLIDE_SCREENED) {
        uint64_t seq = 0;
        assert_int_equal(gs_slides_reported(f->t, id, attempt, &rep, 7, NULL), 0);
        assert_int_equal(gs_slides_done(f->t, id, attempt, 8, &seq), 0);
        Gastroscreen__V1__EventMessage *m = event(f, seq);
        assert_int_equal(m->body_case, GASTROSCREEN__V1__EVENT_MESSAGE__BODY_VERDICT);
        assert_true(m->verdict->threshold == 0.6f);
        assert_string_equal(m->verdict->threshold_source, "config");
        gastroscreen__v1__event_message__free_unpacked(m, NULL);
    } else {
        fail_msg("recovery left the screened slide in state %d", (int)v.state);
    }
}

/* The precision list that inferred a slide's tiles is journalled with SCREENED, goes into the
 * published verdict's model provenance, comes back after a restart, and a list that is not
 * one ("FP32", too long) is refused; a record written before it was recorded loads with none
 * (the verdict's precision empty: fp32 by the protocol). */
static void precision_is_journalled(void **state)
{
    fixture *f = *state;
    char id[17], old[17];
    accept(f, "/slides/bf.svs", id);
    accept(f, "/slides/old.svs", old);
    const char *ids[] = {id, old};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(
            gs_slides_planned(f->t, ids[i], 1, "q", GS_METHOD_NETWORK, NULL, 2, NULL, NULL), 0);
        assert_int_equal(
            gs_slides_blur_checked(f->t, ids[i], 1, 0.f, GS_METHOD_NETWORK, 0, NULL, 3, NULL), 0);
        assert_int_equal(gs_slides_inferring(f->t, ids[i], 1, 4, NULL), 0);
    }
    assert_int_equal(gs_slides_screened_in(f->t, id, 1, 0.2f, "FP32", 5, NULL), -1);
    assert_int_equal(
        gs_slides_screened_in(f->t, id, 1, 0.2f, "fp32+bf16+int8+fp16+abcdefghijkl", 5, NULL), -1);
    assert_int_equal(info(f, id).state, GS_SLIDE_INFERRING);
    assert_int_equal(gs_slides_screened_in(f->t, id, 1, 0.2f, "bf16+fp32", 5, NULL), 0);
    assert_string_equal(info(f, id).precision, "bf16+fp32");
    assert_int_equal(gs_slides_screened_in(f->t, old, 1, 0.2f, "bf16", 5, NULL), 0);
    json_t *rec = json_deep_copy(gs_journal_slide_get(f->j, old));
    assert_non_null(rec);
    assert_string_equal(json_string_value(json_object_get(rec, "precision")), "bf16");
    assert_int_equal(json_object_del(rec, "precision"), 0);
    assert_int_equal(gs_journal_put_slide(f->j, old, rec, 0, 6), 0);
    json_decref(rec);

    close_fixture(f);
    open_fixture(f);
    assert_int_equal(gs_slides_recover(f->t, 7), 2); /* both: attempt 2 */
    assert_string_equal(info(f, id).precision, "bf16+fp32");
    assert_string_equal(info(f, old).precision, "");
    gs_slide_report rep = {.tiles = {1, 1, 0, 0, 0, 0}};
    for (int i = 0; i < 2; i++) {
        uint64_t seq = 0;
        gs_slide_info v = info(f, ids[i]);
        assert_int_equal(v.state, GS_SLIDE_SCREENED);
        assert_int_equal(gs_slides_reported(f->t, ids[i], v.attempt, &rep, 8, NULL), 0);
        assert_int_equal(gs_slides_done(f->t, ids[i], v.attempt, 9, &seq), 0);
        Gastroscreen__V1__EventMessage *m = event(f, seq);
        assert_int_equal(m->body_case, GASTROSCREEN__V1__EVENT_MESSAGE__BODY_VERDICT);
        assert_string_equal(m->verdict->model->precision, i == 0 ? "bf16+fp32" : "");
        assert_string_equal(m->verdict->model->sha256, "ab12");
        gastroscreen__v1__event_message__free_unpacked(m, NULL);
    }
}

/* The plan's and the blur check's methods go into the record with PLANNED and BLUR_CHECKED,
 * into the published verdict, and come back after a restart; a record written before they
 * were recorded loads them as unknown. */
static void methods_are_journalled(void **state)
{
    fixture *f = *state;
    char id[17];
    accept(f, "/slides/m.svs", id);
    assert_int_equal(gs_slides_planned(f->t, id, 1, "q", (gs_slide_method)3, NULL, 1, NULL, NULL),
                     -1);
    assert_int_equal(gs_slides_planned(f->t, id, 1, "q", GS_METHOD_NETWORK, NULL, 1, NULL, NULL),
                     0);
    assert_int_equal(info(f, id).foreground_method, GS_METHOD_NETWORK);
    assert_int_equal(info(f, id).blur_method, GS_METHOD_UNKNOWN);
    assert_int_equal(
        gs_slides_blur_checked(f->t, id, 1, 0.9f, (gs_slide_method)-1, 1, "oof", 2, NULL), -1);
    assert_int_equal(gs_slides_blur_checked(f->t, id, 1, 0.9f, GS_METHOD_CLASSICAL, 1,
                                            "out of focus: 9 of 10", 2, NULL),
                     0);

    /* A restart between the blur check and the report: the record gives both back. */
    close_fixture(f);
    open_fixture(f);
    assert_int_equal(gs_slides_recover(f->t, 3), 1);
    gs_slide_info v = info(f, id);
    assert_int_equal(v.attempt, 2);
    assert_int_equal(v.foreground_method, GS_METHOD_NETWORK);
    assert_int_equal(v.blur_method, GS_METHOD_CLASSICAL);
    assert_int_equal(gs_slide_next_step(&v), GS_STEP_REPORT);
    gs_slide_report rep = {.report_json = "/out/m/report.json"};
    assert_int_equal(gs_slides_reported(f->t, id, 2, &rep, 4, NULL), 0);
    uint64_t seq = 0;
    assert_int_equal(gs_slides_done(f->t, id, 2, 5, &seq), 0);
    Gastroscreen__V1__EventMessage *m = event(f, seq);
    assert_int_equal(m->body_case, GASTROSCREEN__V1__EVENT_MESSAGE__BODY_VERDICT);
    assert_int_equal(m->verdict->verdict_class,
                     GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_UNASSESSABLE);
    assert_int_equal(m->verdict->foreground_method, GASTROSCREEN__V1__METHOD__METHOD_NETWORK);
    assert_int_equal(m->verdict->blur_method, GASTROSCREEN__V1__METHOD__METHOD_CLASSICAL);
    gastroscreen__v1__event_message__free_unpacked(m, NULL);

    /* The same record without the two keys (an older coordinator wrote it): unknown. */
    json_t *old = json_deep_copy(gs_journal_slide_get(f->j, id));
    assert_non_null(old);
    assert_int_equal(json_object_get(old, "blur_method") != NULL, 1);
    assert_int_equal(json_object_del(old, "foreground_method"), 0);
    assert_int_equal(json_object_del(old, "blur_method"), 0);
    assert_int_equal(gs_journal_put_slide(f->j, id, old, 1, 5), 0);
    json_decref(old);
    close_fixture(f);
    open_fixture(f);
    v = info(f, id);
    assert_int_equal(v.state, GS_SLIDE_DONE);
    assert_int_equal(v.foreground_method, GS_METHOD_UNKNOWN);
    assert_int_equal(v.blur_method, GS_METHOD_UNKNOWN);
}

static void illegal_transitions_are_errors_and_change_nothing(void **state)
{
    fixture *f = *state;
    char id[17];
    accept(f, "/slides/b.svs", id);
    uint64_t last = gs_journal_last_seq(f->j);
    assert_int_equal(gs_slides_screened(f->t, id, 1, 0.5f, 1, NULL), -1);
    assert_non_null(strstr(gs_error_get(), "illegal transition accepted -> screened"));
    assert_int_equal(gs_slides_inferring(f->t, id, 1, 1, NULL), -1);
    assert_int_equal(gs_slides_done(f->t, id, 1, 1, NULL), -1);
    assert_int_equal(gs_slides_reported(f->t, id, 1, NULL, 1, NULL), -1);
    assert_int_equal(gs_slides_planned(f->t, id, 1, "q", GS_METHOD_CLASSICAL, NULL, 1, NULL, NULL),
                     0);
    /* a plan without an unassessable reason cannot go straight to REPORTED */
    assert_int_equal(gs_slides_reported(f->t, id, 1, NULL, 1, NULL), -1);
    assert_int_equal(gs_slides_blur_checked(f->t, id, 1, 0.9f, GS_METHOD_CLASSICAL, 1,
                                            "out of focus: 9 of 10", 2, NULL),
                     0);
    /* out of focus: no inference */
    assert_int_equal(gs_slides_inferring(f->t, id, 1, 3, NULL), -1);
    /* bad data is refused before anything else */
    assert_int_equal(gs_slides_screened(f->t, id, 1, 1.5f, 1, NULL), -1);
    assert_int_equal(gs_slides_fail(f->t, id, 1, "", NULL, 1, NULL), -1);
    gs_slides_stats st;
    gs_slides_stats_get(f->t, &st);
    assert_int_equal(st.illegal, 6);
    assert_int_equal(gs_journal_last_seq(f->j), last + 2);
    gs_slide_info v = info(f, id);
    assert_int_equal(v.state, GS_SLIDE_BLUR_CHECKED);
    assert_int_equal(gs_slide_next_step(&v), GS_STEP_REPORT);
    assert_int_equal(gs_slides_reported(f->t, id, 1, NULL, 4, NULL), 0);
    assert_int_equal(gs_slides_done(f->t, id, 1, 5, NULL), 0);
    v = info(f, id);
    assert_int_equal(v.verdict, GS_VERDICT_UNASSESSABLE);
    assert_string_equal(v.reason, "out of focus: 9 of 10");
}

static void stale_and_duplicate_messages_are_ignored(void **state)
{
    fixture *f = *state;
    char id[17];
    accept(f, "/slides/c.svs", id);
    uint64_t last = gs_journal_last_seq(f->j);
    assert_int_equal(gs_slides_planned(f->t, id, 2, "q", GS_METHOD_CLASSICAL, NULL, 1, NULL, NULL),
                     GS_SLIDES_IGNORED);
    assert_int_equal(gs_slides_planned(f->t, "ffffffffffffffff", 1, "q", GS_METHOD_CLASSICAL, NULL,
                                       1, NULL, NULL),
                     GS_SLIDES_IGNORED);
    assert_int_equal(gs_slides_fence(f->t, id, 0), GS_SLIDES_IGNORED);
    assert_int_equal(gs_slides_fence(f->t, id, 1), 0);
    assert_int_equal(gs_journal_last_seq(f->j), last);
    assert_int_equal(gs_slides_planned(f->t, id, 1, "q", GS_METHOD_CLASSICAL, NULL, 1, NULL, NULL),
                     0);
    /* a re-sent PlanJob's second answer, now and after the slide moved on */
    assert_int_equal(gs_slides_planned(f->t, id, 1, "q", GS_METHOD_CLASSICAL, NULL, 2, NULL, NULL),
                     GS_SLIDES_IGNORED);
    assert_int_equal(
        gs_slides_blur_checked(f->t, id, 1, 0.f, GS_METHOD_CLASSICAL, 0, NULL, 3, NULL), 0);
    assert_int_equal(gs_slides_inferring(f->t, id, 1, 4, NULL), 0);
    assert_int_equal(gs_slides_planned(f->t, id, 1, "q", GS_METHOD_CLASSICAL, NULL, 5, NULL, NULL),
                     GS_SLIDES_IGNORED);
    assert_int_equal(gs_slides_inferring(f->t, id, 1, 5, NULL), GS_SLIDES_IGNORED);
    assert_int_equal(gs_slides_fail(f->t, id, 1, "plan: no result after 3 sends", NULL, 6, NULL),
                     0);
    /* terminal: everything is stale */
    assert_int_equal(gs_slides_fail(f->t, id, 1, "again", NULL, 7, NULL), GS_SLIDES_IGNORED);
    assert_int_equal(gs_slides_screened(f->t, id, 1, 0.2f, 7, NULL), GS_SLIDES_IGNORED);
    assert_int_equal(gs_slides_crash_mark(f->t, id, 1, 7, NULL), GS_SLIDES_IGNORED);
    gs_slides_stats st;
    gs_slides_stats_get(f->t, &st);
    assert_int_equal(st.stale, 6);
    assert_int_equal(st.duplicates, 3);
    assert_int_equal(st.illegal, 0);
    gs_slide_info v = info(f, id);
    assert_int_equal(v.state, GS_SLIDE_FAILED);
    assert_int_equal(v.verdict, GS_VERDICT_FAILED);
    assert_string_equal(v.reason, "plan: no result after 3 sends");
    Gastroscreen__V1__EventMessage *m = event(f, gs_journal_last_seq(f->j));
    assert_int_equal(m->body_case, GASTROSCREEN__V1__EVENT_MESSAGE__BODY_VERDICT);
    assert_int_equal(m->verdict->verdict_class,
                     GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_FAILED);
    assert_int_equal(m->verdict->state, GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_FAILED);
    gastroscreen__v1__event_message__free_unpacked(m, NULL);
}

static void intake_is_idempotent(void **state)
{
    fixture *f = *state;
    char a[17], b[17], c[17];
    int dup = 0;
    uint64_t seq = 0;
    accept(f, "/slides/d.svs", a);
    /* announced twice while in flight: one slide, the duplicate journalled with a seq */
    assert_int_equal(gs_slides_intake(f->t, "/slides/d.svs", 1000, 5000, GS_INTAKE_ANNOUNCED, NULL,
                                      150, b, &dup, &seq),
                     0);
    assert_int_equal(dup, 1);
    assert_string_equal(a, b);
    Gastroscreen__V1__EventMessage *m = event(f, seq);
    assert_int_equal(m->body_case, GASTROSCREEN__V1__EVENT_MESSAGE__BODY_ACCEPTED);
    assert_true(m->accepted->duplicate);
    assert_string_equal(m->accepted->slide_id, a);
    gastroscreen__v1__event_message__free_unpacked(m, NULL);
    assert_int_equal(gs_slides_count(f->t), 1);

    /* finish it */
    assert_int_equal(
        gs_slides_planned(f->t, a, 1, "QH", GS_METHOD_CLASSICAL, "no tissue", 200, NULL, NULL), 0);
    gs_slide_info v = info(f, a);
    assert_int_equal(gs_slide_next_step(&v), GS_STEP_REPORT);
    assert_int_equal(gs_slides_reported(f->t, a, 1, NULL, 300, NULL), 0);
    assert_int_equal(gs_slides_done(f->t, a, 1, 400, NULL), 0);
    assert_int_equal(info(f, a).verdict, GS_VERDICT_UNASSESSABLE);
    assert_string_equal(info(f, a).reason, "no tissue");

    /* terminal, same size and mtime: still the same slide */
    assert_int_equal(gs_slides_intake(f->t, "/slides/d.svs", 1000, 5000, GS_INTAKE_WATCHED, NULL,
                                      500, b, &dup, NULL),
                     0);
    assert_int_equal(dup, 1);
    assert_string_equal(a, b);
    /* touched file: a new slide, folded at planning when the content is the same */
    assert_int_equal(gs_slides_intake(f->t, "/slides/d.svs", 1000, 9000, GS_INTAKE_WATCHED, NULL,
                                      600, c, &dup, NULL),
                     0);
    assert_int_equal(dup, 0);
    assert_string_not_equal(a, c);
    int folded = 0;
    assert_int_equal(
        gs_slides_planned(f->t, c, 1, "QH", GS_METHOD_CLASSICAL, NULL, 700, &folded, &seq), 0);
    assert_int_equal(folded, 1);
    v = info(f, c);
    assert_int_equal(v.state, GS_SLIDE_DONE);
    assert_string_equal(v.duplicate_of, a);
    m = event(f, seq);
    assert_int_equal(m->body_case, GASTROSCREEN__V1__EVENT_MESSAGE__BODY_STATE_CHANGED);
    assert_int_equal(m->state_changed->to, GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_DONE);
    char want[64];
    snprintf(want, sizeof want, "duplicate of %s", a);
    assert_string_equal(m->state_changed->reason, want);
    gastroscreen__v1__event_message__free_unpacked(m, NULL);
    /* a changed file with another quickhash is a slide of its own */
    char d[17];
    assert_int_equal(gs_slides_intake(f->t, "/slides/d.svs", 2000, 9500, GS_INTAKE_WATCHED, NULL,
                                      800, d, &dup, NULL),
                     0);
    assert_int_equal(dup, 0);
    assert_int_equal(
        gs_slides_planned(f->t, d, 1, "OTHER", GS_METHOD_CLASSICAL, NULL, 900, &folded, NULL), 0);
    assert_int_equal(folded, 0);
    assert_int_equal(info(f, d).state, GS_SLIDE_PLANNED);
    /* by path: d is in flight; once it is done, the newest slide of the path answers,
     * never the folded record */
    v.slide_id = NULL;
    assert_int_equal(gs_slides_get_by_path(f->t, "/slides/d.svs", &v), 0);
    assert_string_equal(v.slide_id, d);
    assert_int_equal(gs_slides_fail(f->t, d, 1, "unreadable", NULL, 950, NULL), 0);
    assert_int_equal(gs_slides_get_by_path(f->t, "/slides/d.svs", &v), 0);
    assert_string_equal(v.slide_id, d);
    assert_int_equal(gs_slides_get_by_path(f->t, "/slides/none.svs", &v), -1);
    /* bad paths */
    assert_int_equal(
        gs_slides_intake(f->t, "relative.svs", 1, 1, GS_INTAKE_SUBMIT, NULL, 1, d, NULL, NULL), -1);
    assert_int_equal(
        gs_slides_intake(f->t, "/x.svs", 1, 1, (gs_intake_source)9, NULL, 1, d, NULL, NULL), -1);
}

static void poison_after_crash_marks(void **state)
{
    fixture *f = *state;
    char id[17];
    uint64_t seq = 99;
    accept(f, "/slides/e.svs", id);
    assert_int_equal(gs_slides_planned(f->t, id, 1, "q", GS_METHOD_CLASSICAL, NULL, 1, NULL, NULL),
                     0);
    uint64_t last = gs_journal_last_seq(f->j);
    assert_int_equal(gs_slides_crash_mark(f->t, id, 1, 2, &seq), 0);
    assert_int_equal(seq, 0);
    assert_int_equal(gs_slides_crash_mark(f->t, id, 2, 2, &seq), GS_SLIDES_IGNORED);
    assert_int_equal(gs_slides_crash_mark(f->t, id, 1, 3, &seq), 0);
    assert_int_equal(info(f, id).crash_marks, 2);
    assert_int_equal(gs_journal_last_seq(f->j), last); /* marks are not published */
    /* the marks survive a restart (which also bumps the attempt) */
    close_fixture(f);
    open_fixture(f);
    assert_int_equal(info(f, id).crash_marks, 2);
    assert_int_equal(gs_slides_recover(f->t, 4), 1);
    assert_int_equal(info(f, id).attempt, 2);
    assert_int_equal(gs_slides_crash_mark(f->t, id, 2, 5, &seq), 0);
    assert_true(seq > 0);
    gs_slide_info v = info(f, id);
    assert_int_equal(v.state, GS_SLIDE_FAILED);
    assert_string_equal(v.reason, "poison: 3 workers were lost while holding this slide");
    assert_int_equal(v.crash_marks, 3);
    assert_int_equal(v.poison, 1);
    Gastroscreen__V1__EventMessage *m = event(f, seq);
    assert_int_equal(m->body_case, GASTROSCREEN__V1__EVENT_MESSAGE__BODY_VERDICT);
    assert_int_equal(m->verdict->verdict_class,
                     GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_FAILED);
    assert_true(m->verdict->poison);
    gastroscreen__v1__event_message__free_unpacked(m, NULL);
    /* the flag is journalled with the record */
    close_fixture(f);
    open_fixture(f);
    assert_int_equal(info(f, id).poison, 1);
}

/* Records and verdicts of a build before the poison flag: a slide that build failed as poison
 * is still poison after the upgrade, and other slides are not (PROTOCOL.md §12). */
static void poison_of_records_without_the_flag(void **state)
{
    fixture *f = *state;
    char poisoned[17], failed[17], done[17], named[17];
    accept(f, "/slides/p.svs", poisoned);
    accept(f, "/slides/f.svs", failed);
    accept(f, "/slides/d.svs", done);
    accept(f, "/slides/n.svs", named);
    uint64_t seq = 0;
    assert_int_equal(gs_slides_fail(f->t, poisoned, 1,
                                    "poison: 3 workers were lost while holding this slide", NULL, 2,
                                    NULL),
                     0);
    assert_int_equal(gs_slides_fail(f->t, failed, 1, "plan: unsupported format", NULL, 2, &seq), 0);
    /* A failure that does not come from the slide table is never poison, whatever its words. */
    assert_int_equal(info(f, poisoned).poison, 0);
    Gastroscreen__V1__EventMessage *m = event(f, seq);
    assert_false(m->verdict->poison);
    gastroscreen__v1__event_message__free_unpacked(m, NULL);
    assert_int_equal(
        gs_slides_planned(f->t, done, 1, "q", GS_METHOD_CLASSICAL, "no tissue", 3, NULL, NULL), 0);
    assert_int_equal(gs_slides_reported(f->t, done, 1, NULL, 4, NULL), 0);
    assert_int_equal(gs_slides_done(f->t, done, 1, 5, NULL), 0);
    assert_int_equal(gs_slides_crash_mark(f->t, named, 1, 6, NULL), 0);

    /* Drop the key from every record, as the older build wrote them. */
    const char *ids[] = {poisoned, failed, done, named};
    for (size_t i = 0; i < 4; i++) {
        json_t *old = json_deep_copy(gs_journal_slide_get(f->j, ids[i]));
        assert_non_null(old);
        assert_int_equal(json_object_del(old, "poison"), 0);
        int terminal = i < 3;
        assert_int_equal(gs_journal_put_slide(f->j, ids[i], old, terminal, 7), 0);
        json_decref(old);
    }
    close_fixture(f);
    open_fixture(f);
    assert_int_equal(info(f, poisoned).poison, 1); /* FAILED, reason "poison: ..." */
    assert_int_equal(info(f, failed).poison, 0);
    assert_int_equal(info(f, done).poison, 0);
    assert_int_equal(info(f, named).poison, 0); /* not FAILED */

    /* A flag that is there is the answer, even against the words. */
    json_t *rec = json_deep_copy(gs_journal_slide_get(f->j, poisoned));
    assert_int_equal(json_object_set_new(rec, "poison", json_false()), 0);
    assert_int_equal(gs_journal_put_slide(f->j, poisoned, rec, 1, 8), 0);
    json_decref(rec);
    /* and a flag that is not a boolean makes the record unreadable */
    rec = json_deep_copy(gs_journal_slide_get(f->j, failed));
    assert_int_equal(json_object_set_new(rec, "poison", json_string("yes")), 0);
    assert_int_equal(gs_journal_put_slide(f->j, failed, rec, 1, 8), 0);
    json_decref(rec);
    close_fixture(f);
    open_fixture(f);
    assert_int_equal(info(f, poisoned).poison, 0);
    gs_slide_info v;
    assert_int_equal(gs_slides_get(f->t, failed, &v), -1);
}

static void restart_recovery(void **state)
{
    fixture *f = *state;
    char acc[17], pl[17], inf[17], rep[17], old[17], done[17];
    accept(f, "/slides/acc.svs", acc);
    accept(f, "/slides/pl.svs", pl);
    accept(f, "/slides/inf.svs", inf);
    accept(f, "/slides/rep.svs", rep);
    accept(f, "/slides/old.svs", old);
    accept(f, "/slides/done.svs", done);
    assert_int_equal(gs_slides_planned(f->t, pl, 1, "1", GS_METHOD_CLASSICAL, NULL, 1, NULL, NULL),
                     0);
    assert_int_equal(gs_slides_planned(f->t, inf, 1, "2", GS_METHOD_CLASSICAL, NULL, 1, NULL, NULL),
                     0);
    assert_int_equal(
        gs_slides_blur_checked(f->t, inf, 1, 0.f, GS_METHOD_CLASSICAL, 0, NULL, 1, NULL), 0);
    assert_int_equal(gs_slides_inferring(f->t, inf, 1, 1, NULL), 0);
    assert_int_equal(gs_slides_planned(f->t, rep, 1, "3", GS_METHOD_CLASSICAL, NULL, 1, NULL, NULL),
                     0);
    assert_int_equal(
        gs_slides_blur_checked(f->t, rep, 1, 0.f, GS_METHOD_CLASSICAL, 0, NULL, 1, NULL), 0);
    assert_int_equal(gs_slides_inferring(f->t, rep, 1, 1, NULL), 0);
    assert_int_equal(gs_slides_screened(f->t, rep, 1, 0.1f, 1, NULL), 0);
    assert_int_equal(gs_slides_reported(f->t, rep, 1, NULL, 1, NULL), 0);
    assert_int_equal(gs_slides_fail(f->t, done, 1, "unreadable", NULL, 1, NULL), 0);
    /* four restarts: rep is committed DONE at the first, the others go to attempt 5 */
    for (int r = 0; r < 4; r++) {
        close_fixture(f);
        open_fixture(f);
        assert_int_equal(gs_slides_recover(f->t, 2), r == 0 ? 5 : 4);
    }
    assert_int_equal(info(f, old).attempt, 5);
    assert_int_equal(info(f, rep).state, GS_SLIDE_DONE);
    assert_int_equal(info(f, done).state, GS_SLIDE_FAILED);
    assert_int_equal(info(f, done).attempt, 1);

    uint64_t before = gs_journal_last_seq(f->j);
    /* one more crash: every slide in flight would reach attempt 6 > max_attempts (5) */
    close_fixture(f);
    open_fixture(f);
    assert_int_equal(gs_slides_recover(f->t, 3), 4);
    gs_slide_info v = info(f, old);
    assert_int_equal(v.state, GS_SLIDE_FAILED);
    assert_string_equal(v.reason,
                        "poison: the coordinator restarted 5 times with this slide in flight");
    assert_int_equal(v.poison, 1);
    assert_int_equal(info(f, done).poison, 0);
    assert_int_equal(gs_journal_last_seq(f->j), before + 4);
    assert_int_equal(gs_slides_in_flight(f->t), 0);
}

static void recovery_bumps_attempt_and_fences_old_results(void **state)
{
    fixture *f = *state;
    char acc[17], pl[17], pu[17], oof[17], inf[17], scr[17], rep[17];
    accept(f, "/s/acc.svs", acc);
    accept(f, "/s/pl.svs", pl);
    accept(f, "/s/pu.svs", pu);
    accept(f, "/s/oof.svs", oof);
    accept(f, "/s/inf.svs", inf);
    accept(f, "/s/scr.svs", scr);
    accept(f, "/s/rep.svs", rep);
    const char *planned[] = {pl, pu, oof, inf, scr, rep};
    for (int i = 0; i < 6; i++)
        assert_int_equal(gs_slides_planned(f->t, planned[i], 1, planned[i], GS_METHOD_CLASSICAL,
                                           planned[i] == pu ? "not brightfield" : NULL, 1, NULL,
                                           NULL),
                         0);
    assert_int_equal(
        gs_slides_blur_checked(f->t, oof, 1, 0.8f, GS_METHOD_CLASSICAL, 1, "out of focus", 1, NULL),
        0);
    const char *sharp[] = {inf, scr, rep};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(
            gs_slides_blur_checked(f->t, sharp[i], 1, 0.f, GS_METHOD_CLASSICAL, 0, NULL, 1, NULL),
            0);
        assert_int_equal(gs_slides_inferring(f->t, sharp[i], 1, 1, NULL), 0);
    }
    assert_int_equal(gs_slides_screened(f->t, scr, 1, 0.3f, 1, NULL), 0);
    assert_int_equal(gs_slides_screened(f->t, rep, 1, 0.3f, 1, NULL), 0);
    assert_int_equal(gs_slides_reported(f->t, rep, 1, NULL, 1, NULL), 0);
    uint64_t before = gs_journal_last_seq(f->j);

    close_fixture(f);
    open_fixture(f);
    assert_int_equal(gs_slides_recover(f->t, 2), 7);
    assert_int_equal(gs_journal_last_seq(f->j), before + 7);
    struct {
        const char *id;
        gs_slide_step step;
    } want[] = {{acc, GS_STEP_PLAN},   {pl, GS_STEP_BLUR_CHECK}, {pu, GS_STEP_REPORT},
                {oof, GS_STEP_REPORT}, {inf, GS_STEP_INFER},     {scr, GS_STEP_REPORT}};
    for (int i = 0; i < 6; i++) {
        gs_slide_info v = info(f, want[i].id);
        assert_int_equal(v.attempt, 2);
        assert_int_equal(gs_slide_next_step(&v), want[i].step);
        Gastroscreen__V1__EventMessage *m = event(f, v.last_seq);
        assert_int_equal(m->body_case, GASTROSCREEN__V1__EVENT_MESSAGE__BODY_STATE_CHANGED);
        assert_int_equal(m->state_changed->from, m->state_changed->to);
        assert_int_equal(m->state_changed->attempt, 2);
        assert_string_equal(m->state_changed->reason, "coordinator restart");
        gastroscreen__v1__event_message__free_unpacked(m, NULL);
    }
    gs_slide_info v = info(f, rep);
    assert_int_equal(v.state, GS_SLIDE_DONE);
    assert_int_equal(v.attempt, 1);
    /* results of the old attempt are stale now */
    assert_int_equal(gs_slides_screened(f->t, inf, 1, 0.5f, 3, NULL), GS_SLIDES_IGNORED);
    assert_int_equal(gs_slides_screened(f->t, inf, 2, 0.5f, 3, NULL), 0);
}

static void journal_failure_changes_nothing(void **state)
{
    fixture *f = *state;
    char id[17];
    accept(f, "/slides/f.svs", id);
    /* The folder disappears under the journal: the slide file cannot be written. */
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    uint64_t last = gs_journal_last_seq(f->j);
    assert_int_equal(gs_slides_planned(f->t, id, 1, "q", GS_METHOD_CLASSICAL, NULL, 1, NULL, NULL),
                     -1);
    assert_int_equal(gs_journal_last_seq(f->j), last); /* the number was not used */
    assert_non_null(strstr(gs_error_get(), id));
    assert_int_equal(info(f, id).state, GS_SLIDE_ACCEPTED);
    char other[17];
    assert_int_equal(
        gs_slides_intake(f->t, "/slides/g.svs", 1, 1, GS_INTAKE_SUBMIT, NULL, 1, other, NULL, NULL),
        -1);
    assert_int_equal(gs_slides_count(f->t), 1);
    assert_int_equal(mkdir(f->dir, 0700), 0);
}

/* Sets one integer field of a slide's journalled record (as a damaged or hostile journal
 * would hold it), then restarts the fixture. */
static void set_record_field(fixture *f, const char *id, const char *key, json_int_t value)
{
    json_t *r = json_deep_copy(gs_journal_slide_get(f->j, id));
    assert_non_null(r);
    assert_int_equal(json_object_set_new(r, key, json_integer(value)), 0);
    assert_int_equal(gs_journal_put_slide(f->j, id, r, 0, 1), 0);
    json_decref(r);
    close_fixture(f);
    open_fixture(f);
}

/* Counts the verdict events of slide id in the whole log. */
static int verdicts_of(fixture *f, const char *id)
{
    gs_journal_event ev[256];
    size_t n = gs_journal_events_since(f->j, 0, ev, 256);
    int k = 0;
    for (size_t i = 0; i < n; i++) {
        Gastroscreen__V1__EventMessage *m =
            gastroscreen__v1__event_message__unpack(NULL, ev[i].payload_len, ev[i].payload);
        assert_non_null(m);
        k += m->body_case == GASTROSCREEN__V1__EVENT_MESSAGE__BODY_VERDICT &&
             strcmp(m->verdict->slide_id, id) == 0;
        gastroscreen__v1__event_message__free_unpacked(m, NULL);
    }
    return k;
}

/* An attempt counter at its maximum fails the slide (poison) at the next restart instead of
 * wrapping to 0 and screening it again under a fresh fence. */
static void attempt_at_its_maximum_fails_instead_of_wrapping(void **state)
{
    fixture *f = *state;
    char id[17];
    accept(f, "/slides/wrap.svs", id);
    set_record_field(f, id, "attempt", (json_int_t)UINT32_MAX);
    assert_int_equal(info(f, id).attempt, UINT32_MAX);
    assert_int_equal(gs_slides_recover(f->t, 5), 1);
    gs_slide_info v = info(f, id);
    assert_int_equal(v.state, GS_SLIDE_FAILED);
    assert_int_equal(v.attempt, UINT32_MAX);
    assert_int_equal(v.poison, 1);
    assert_int_equal(verdicts_of(f, id), 1);
    /* No attempt 0 exists to take results. */
    assert_int_equal(gs_slides_fence(f->t, id, 0), GS_SLIDES_IGNORED);
    assert_int_equal(gs_slides_screened(f->t, id, 0, 0.9f, 6, NULL), GS_SLIDES_IGNORED);
    close_fixture(f);
    open_fixture(f);
    assert_int_equal(gs_slides_recover(f->t, 7), 0);
    assert_int_equal(verdicts_of(f, id), 1);
}

/* A crash-mark count at its maximum fails the slide as poison without wrapping to 0. */
static void crash_marks_at_their_maximum_do_not_wrap(void **state)
{
    fixture *f = *state;
    char id[17];
    accept(f, "/slides/marks.svs", id);
    set_record_field(f, id, "crash_marks", (json_int_t)UINT32_MAX);
    assert_int_equal(gs_slides_recover(f->t, 5), 1); /* attempt 2 */
    uint64_t seq = 0;
    assert_int_equal(gs_slides_crash_mark(f->t, id, 2, 6, &seq), 0);
    assert_true(seq > 0);
    gs_slide_info v = info(f, id);
    assert_int_equal(v.state, GS_SLIDE_FAILED);
    assert_int_equal(v.poison, 1);
    assert_int_equal(v.crash_marks, UINT32_MAX);
    assert_non_null(strstr(v.reason, "4294967295 workers"));
}

/* A torn tail took the DONE slide's verdict event with it (the slide file, written after the
 * log record, survived): recovery journals the verdict again from the record, once. */
static void verdict_event_lost_with_a_torn_tail_is_rebuilt(void **state)
{
    fixture *f = *state;
    char id[17];
    accept(f, "/slides/torn.svs", id);
    assert_int_equal(gs_slides_planned(f->t, id, 1, "q", GS_METHOD_CLASSICAL, NULL, 2, NULL, NULL),
                     0);
    assert_int_equal(
        gs_slides_blur_checked(f->t, id, 1, 0.f, GS_METHOD_CLASSICAL, 0, NULL, 3, NULL), 0);
    assert_int_equal(gs_slides_inferring(f->t, id, 1, 4, NULL), 0);
    assert_int_equal(gs_slides_screened(f->t, id, 1, 0.91f, 5, NULL), 0);
    assert_int_equal(gs_slides_reported(f->t, id, 1, NULL, 6, NULL), 0);
    uint64_t done = 0;
    assert_int_equal(gs_slides_done(f->t, id, 1, 7, &done), 0);
    close_fixture(f);
    char log[128];
    snprintf(log, sizeof log, "%s/events.log", f->dir);
    struct stat st;
    assert_int_equal(stat(log, &st), 0);
    assert_int_equal(truncate(log, st.st_size - 3), 0);

    open_fixture(f);
    assert_false(gs_journal_has_event(f->j, done));
    assert_int_equal(verdicts_of(f, id), 0);
    assert_int_equal(gs_slides_recover(f->t, 100), 0);
    assert_int_equal(verdicts_of(f, id), 1);
    gs_slide_info v = info(f, id);
    assert_int_equal(v.state, GS_SLIDE_DONE);
    assert_true(v.last_seq > done);
    Gastroscreen__V1__EventMessage *m = event(f, v.last_seq);
    assert_int_equal(m->body_case, GASTROSCREEN__V1__EVENT_MESSAGE__BODY_VERDICT);
    assert_string_equal(m->verdict->slide_id, id);
    assert_int_equal(m->verdict->verdict_class,
                     GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_POSITIVE);
    assert_true(m->verdict->score == 0.91f);
    assert_int_equal(m->verdict->decided_unix_ms, 7); /* when it was decided, not now */
    gastroscreen__v1__event_message__free_unpacked(m, NULL);
    gs_slides_stats ss;
    gs_slides_stats_get(f->t, &ss);
    assert_int_equal(ss.rebuilt_events, 1);
    /* Rebuilt once: the next restart finds it in the log. */
    close_fixture(f);
    open_fixture(f);
    assert_int_equal(gs_slides_recover(f->t, 200), 0);
    assert_int_equal(verdicts_of(f, id), 1);
}

static void touch(const char *path)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs("slide", fp);
    fclose(fp);
}

static void resolve_path_checks_roots(void **state)
{
    fixture *f = *state;
    char root[128], root2[128], p[256], out[4096];
    snprintf(root, sizeof root, "%s/root", f->dir);
    snprintf(root2, sizeof root2, "%s/root2", f->dir);
    assert_int_equal(mkdir(root, 0700), 0);
    assert_int_equal(mkdir(root2, 0700), 0);
    snprintf(p, sizeof p, "%s/sub", root);
    assert_int_equal(mkdir(p, 0700), 0);
    snprintf(p, sizeof p, "%s/sub/a.svs", root);
    touch(p);
    snprintf(p, sizeof p, "%s/b.svs", root2);
    touch(p);
    snprintf(p, sizeof p, "%s/outside.svs", f->dir);
    touch(p);
    char link[256];
    snprintf(link, sizeof link, "%s/escape.svs", root);
    assert_int_equal(symlink(p, link), 0);
    const char *roots[] = {"/nonexistent-root", root};
    int64_t size = 0, mtime = 0;

    /* inside, through ".." */
    snprintf(p, sizeof p, "%s/sub/../sub/a.svs", root);
    assert_int_equal(gs_slides_resolve_path(roots, 2, p, out, sizeof out, &size, &mtime), 0);
    char want[256];
    snprintf(want, sizeof want, "%s/sub/a.svs", root);
    char *real_want = realpath(want, NULL);
    assert_string_equal(out, real_want);
    free(real_want);
    assert_int_equal(size, 5);
    assert_true(mtime > 0);
    /* the same path always resolves to the same text: the identity for intake */
    char again[4096];
    snprintf(p, sizeof p, "%s/sub/a.svs", root);
    assert_int_equal(gs_slides_resolve_path(roots, 2, p, again, sizeof again, &size, &mtime), 0);
    assert_string_equal(out, again);

    /* a sibling whose name starts with the root's is outside */
    snprintf(p, sizeof p, "%s/b.svs", root2);
    assert_int_equal(gs_slides_resolve_path(roots, 2, p, out, sizeof out, &size, &mtime), -1);
    assert_non_null(strstr(gs_error_get(), "outside the slide roots"));
    /* a symlink out of the root is outside */
    assert_int_equal(gs_slides_resolve_path(roots, 2, link, out, sizeof out, &size, &mtime), -1);
    assert_non_null(strstr(gs_error_get(), "outside the slide roots"));
    /* a folder is not a slide */
    snprintf(p, sizeof p, "%s/sub", root);
    assert_int_equal(gs_slides_resolve_path(roots, 2, p, out, sizeof out, &size, &mtime), -1);
    assert_non_null(strstr(gs_error_get(), "not a regular file"));
    /* nor is a FIFO (stat'ed, never opened: opening one would block) or a device */
    snprintf(p, sizeof p, "%s/fifo.svs", root);
    assert_int_equal(mkfifo(p, 0600), 0);
    assert_int_equal(gs_slides_resolve_path(roots, 2, p, out, sizeof out, &size, &mtime), -1);
    assert_non_null(strstr(gs_error_get(), "not a regular file"));
    const char *dev_root[] = {"/dev"};
    assert_int_equal(
        gs_slides_resolve_path(dev_root, 1, "/dev/null", out, sizeof out, &size, &mtime), -1);
    assert_non_null(strstr(gs_error_get(), "not a regular file"));
    snprintf(p, sizeof p, "%s/missing.svs", root);
    assert_int_equal(gs_slides_resolve_path(roots, 2, p, out, sizeof out, &size, &mtime), -1);
    assert_non_null(strstr(gs_error_get(), "No such file"));
    /* a name that is not UTF-8 could never be journalled: refused with the reason */
    snprintf(p, sizeof p, "%s/bad\xe5name.svs", root);
    FILE *bad = fopen(p, "w");
    assert_non_null(bad);
    fclose(bad);
    assert_int_equal(gs_slides_resolve_path(roots, 2, p, out, sizeof out, &size, &mtime), -1);
    assert_non_null(strstr(gs_error_get(), "not UTF-8"));
    unlink(p);
    /* no roots: nothing is admitted */
    snprintf(p, sizeof p, "%s/sub/a.svs", root);
    assert_int_equal(gs_slides_resolve_path(roots, 0, p, out, sizeof out, &size, &mtime), -1);
    assert_int_equal(gs_slides_resolve_path(roots, 2, p, out, 8, &size, &mtime), -1);
}

static void retention_drops_old_finished_slides(void **state)
{
    fixture *f = *state;
    char a[17], b[17];
    accept(f, "/slides/r1.svs", a);
    accept(f, "/slides/r2.svs", b);
    assert_int_equal(gs_slides_fail(f->t, a, 1, "unreadable", NULL, 1000, NULL), 0);
    size_t dropped = 9;
    assert_int_equal(gs_slides_retain(f->t, 1500, 1000, &dropped), 0);
    assert_int_equal(dropped, 0);
    assert_int_equal(gs_slides_retain(f->t, 5000, 1000, &dropped), 0);
    assert_int_equal(dropped, 1);
    assert_int_equal(gs_slides_count(f->t), 1);
    gs_slide_info v;
    assert_int_equal(gs_slides_get(f->t, a, &v), -1);
    assert_int_equal(gs_slides_get(f->t, b, &v), 0);
    /* the path is free again: a new intake is a new slide */
    char c[17];
    int dup = 1;
    assert_int_equal(gs_slides_intake(f->t, "/slides/r1.svs", 1000, 5000, GS_INTAKE_SUBMIT, NULL,
                                      6000, c, &dup, NULL),
                     0);
    assert_int_equal(dup, 0);
    close_fixture(f);
    open_fixture(f);
    assert_int_equal(gs_slides_count(f->t), 2);
}

static void names(void **state)
{
    (void)state;
    assert_string_equal(gs_slide_state_name(GS_SLIDE_BLUR_CHECKED), "blur_checked");
    assert_string_equal(gs_slide_state_name(GS_SLIDE_FAILED), "failed");
    assert_string_equal(gs_verdict_class_name(GS_VERDICT_UNASSESSABLE), "unassessable");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(full_flow_journals_every_transition, setup, teardown),
        cmocka_unit_test_setup_teardown(judging_threshold_survives_a_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(methods_are_journalled, setup, teardown),
        cmocka_unit_test_setup_teardown(precision_is_journalled, setup, teardown),
        cmocka_unit_test_setup_teardown(illegal_transitions_are_errors_and_change_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(stale_and_duplicate_messages_are_ignored, setup, teardown),
        cmocka_unit_test_setup_teardown(intake_is_idempotent, setup, teardown),
        cmocka_unit_test_setup_teardown(poison_after_crash_marks, setup, teardown),
        cmocka_unit_test_setup_teardown(poison_of_records_without_the_flag, setup, teardown),
        cmocka_unit_test_setup_teardown(restart_recovery, setup, teardown),
        cmocka_unit_test_setup_teardown(recovery_bumps_attempt_and_fences_old_results, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(attempt_at_its_maximum_fails_instead_of_wrapping, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(crash_marks_at_their_maximum_do_not_wrap, setup, teardown),
        cmocka_unit_test_setup_teardown(verdict_event_lost_with_a_torn_tail_is_rebuilt, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(journal_failure_changes_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(resolve_path_checks_roots, setup, teardown),
        cmocka_unit_test_setup_teardown(retention_drops_old_finished_slides, setup, teardown),
        cmocka_unit_test(names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
