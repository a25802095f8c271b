/*
 * test_journal_degraded: the coordinator when its journal folder cannot be written (full,
 * read-only, failing), driven in-process with fake workers (tests/unit/coordinator_world) and
 * the journal's fault hook standing in for the file system: new slides are refused with the
 * reason, the coordinator keeps running, slides in flight wait and finish once the folder is
 * back, and no verdict is published that is not journalled.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "tests/unit/coordinator_world.h"
#include "daemon/service/coordinator.h"
#include "daemon/service/journal.h"
#include "daemon/service/slide_table.h"
#include "stages/runtime/transport.h"

static int fault_errno; /* what every journal write fails with; 0 = the folder works */

static int fault(void *ud, const char *dir, const char *what)
{
    (void)ud;
    (void)dir;
    (void)what;
    return fault_errno;
}

/* Submits path and returns the reply's status, its error text in why. */
static int submit_why(world *w, const char *path, char *why, size_t n)
{
    gs_transport_options q = {.quiet = 1};
    gs_transport *req = gs_transport_new(w->ctx, GS_CHANNEL_SUBMIT, ZMQ_REQ, GS_CONNECT,
                                         gs_coordinator_endpoint(w->c, GS_CHANNEL_SUBMIT), &q);
    assert_non_null(req);
    Gastroscreen__V1__SubmitRequest r = GASTROSCREEN__V1__SUBMIT_REQUEST__INIT;
    r.path = (char *)path;
    r.request_id = "rq-d";
    Gastroscreen__V1__SubmitMessage m = GASTROSCREEN__V1__SUBMIT_MESSAGE__INIT;
    m.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    m.body_case = GASTROSCREEN__V1__SUBMIT_MESSAGE__BODY_REQUEST;
    m.request = &r;
    assert_int_equal(gs_transport_send(req, NULL, &m.base, 0), 0);
    int status = -1;
    for (int i = 0; i < 100000 && status < 0; i++) {
        pump(w);
        gs_inbound in;
        memset(&in, 0, sizeof in);
        if (gs_transport_recv(req, &in, GS_RECV_DONTWAIT) == GS_RECV_MESSAGE) {
            status = in.msg.submit->reply->status;
            snprintf(why, n, "%s", in.msg.submit->reply->error);
        }
        gs_inbound_release(&in);
    }
    gs_transport_destroy(&req);
    return status;
}

static gs_coordinator_stats stats(world *w)
{
    gs_coordinator_stats s;
    gs_coordinator_stats_get(w->c, &s);
    return s;
}

/* Arms the fault (the folder turns read-only) as soon as the slide is INFERRING, before its
 * screen result can be journalled. */
static int arm_at_inferring(world *w, const char *id)
{
    gs_slide_info v;
    if (gs_slides_get(gs_coordinator_slides(w->c), id, &v) == 0 && v.state >= GS_SLIDE_INFERRING) {
        fault_errno = EROFS;
        return 1;
    }
    return 0;
}

static void make_second_slide(world *w, char *path, size_t n)
{
    snprintf(path, n, "%s/slides/b.svs", w->dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("another slide\n", f);
    fclose(f);
}

/* The folder fills while a slide is in flight: the coordinator does not exit; a new slide is
 * refused with the reason; the gauge says so; when space returns the slide in flight finishes
 * with exactly one verdict and new slides are taken again. */
static void full_journal_refuses_new_slides_and_keeps_the_old(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    start_with_workers(&w);
    gs_journal_set_fault_hook(fault, NULL);
    char id[GS_SLIDE_ID_LEN + 1], why[1024] = "";
    assert_int_equal(submit(&w, w.slide, id, NULL),
                     GASTROSCREEN__V1__SUBMIT_STATUS__SUBMIT_STATUS_ACCEPTED);

    fault_errno = ENOSPC;
    for (int i = 0; i < 200; i++)
        pump(&w); /* the plan comes back and cannot be journalled: degraded, not an exit */
    assert_int_equal(stats(&w).journal_degraded, 1);
    assert_int_equal(slide_info(&w, id).state, GS_SLIDE_ACCEPTED);

    char b[PATH_MAX];
    make_second_slide(&w, b, sizeof b);
    char idb[GS_SLIDE_ID_LEN + 1];
    assert_int_equal(submit_why(&w, b, why, sizeof why),
                     GASTROSCREEN__V1__SUBMIT_STATUS__SUBMIT_STATUS_REJECTED);
    assert_non_null(strstr(why, "No space left on device"));
    assert_non_null(strstr(why, "new slides are refused"));
    assert_int_equal(stats(&w).intake_refused, 1);
    assert_int_equal(gs_slides_count(gs_coordinator_slides(w.c)), 1);
    /* Time passes (probes fail): still degraded, still running. */
    for (int round = 0; round < 20; round++) {
        w.now += 500;
        for (int i = 0; i < 10; i++)
            pump(&w);
    }
    assert_int_equal(stats(&w).journal_degraded, 1);
    assert_false(is_terminal(&w, id));

    fault_errno = 0;
    assert_true(run_until(&w, is_terminal, id));
    assert_int_equal(stats(&w).journal_degraded, 0);
    assert_int_equal(stats(&w).journal_degraded_total, 1);
    gs_slide_info v = slide_info(&w, id);
    assert_int_equal(v.state, GS_SLIDE_DONE);
    assert_int_equal(v.verdict, GS_VERDICT_POSITIVE);
    assert_int_equal(journal_verdicts(&w, id), 1);
    assert_int_equal(submit(&w, b, idb, NULL),
                     GASTROSCREEN__V1__SUBMIT_STATUS__SUBMIT_STATUS_ACCEPTED);
    assert_true(run_until(&w, is_terminal, idb));
    assert_int_equal(journal_verdicts(&w, idb), 1);
    gs_journal_set_fault_hook(NULL, NULL);
    world_free(&w);
}

/* The folder turns read-only while the slide is inferred: nothing is published until the
 * verdict is journalled, and then exactly once. */
static void no_verdict_is_published_before_it_is_journalled(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    start_with_workers(&w);
    gs_journal_set_fault_hook(fault, NULL);
    char id[GS_SLIDE_ID_LEN + 1];
    assert_int_equal(submit(&w, w.slide, id, NULL),
                     GASTROSCREEN__V1__SUBMIT_STATUS__SUBMIT_STATUS_ACCEPTED);
    assert_true(run_until(&w, arm_at_inferring, id));
    for (int round = 0; round < 40; round++) {
        w.now += 500;
        for (int i = 0; i < 10; i++)
            pump(&w);
    }
    assert_false(is_terminal(&w, id));
    assert_int_equal(w.verdict_events, 0);
    assert_int_equal(stats(&w).journal_degraded, 1);
    assert_int_equal(slide_info(&w, id).state, GS_SLIDE_INFERRING);
    fault_errno = 0;
    assert_true(run_until(&w, has_verdict_event, id));
    assert_int_equal(slide_info(&w, id).state, GS_SLIDE_DONE);
    assert_int_equal(slide_info(&w, id).tiles.inferred, N_INFER);
    assert_int_equal(w.verdict_events, 1);
    assert_int_equal(journal_verdicts(&w, id), 1);
    gs_journal_set_fault_hook(NULL, NULL);
    world_free(&w);
}

static int has_slide(world *w, const char *id)
{
    (void)id;
    return gs_slides_count(gs_coordinator_slides(w->c)) > 0;
}

/* A file settled in the watched folder while the journal cannot be written is refused, not
 * lost: it stays in the folder and becomes a slide once the folder is back. */
static void watched_file_waits_for_the_journal(void **state)
{
    (void)state;
    world w;
    world_init(&w);
    w.watch = 1;
    world_start(&w);
    gs_journal_set_fault_hook(fault, NULL);
    fault_errno = EDQUOT;
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/watch/w.svs", w.dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("a watched slide", f);
    fclose(f);
    for (int i = 0; i < 40; i++) {
        w.now += 500;
        for (int k = 0; k < 3; k++)
            pump(&w);
    }
    assert_int_equal(gs_slides_count(gs_coordinator_slides(w.c)), 0);
    assert_int_equal(stats(&w).journal_degraded, 1);
    assert_true(stats(&w).intake_refused >= 1);
    fault_errno = 0;
    assert_true(run_until(&w, has_slide, NULL));
    gs_slide_info info;
    assert_int_equal(gs_slides_at(gs_coordinator_slides(w.c), 0, &info), 0);
    assert_int_equal(info.source, GS_INTAKE_WATCHED);
    assert_int_equal(stats(&w).journal_degraded, 0);
    gs_journal_set_fault_hook(NULL, NULL);
    world_free(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(full_journal_refuses_new_slides_and_keeps_the_old),
        cmocka_unit_test(no_verdict_is_published_before_it_is_journalled),
        cmocka_unit_test(watched_file_waits_for_the_journal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
