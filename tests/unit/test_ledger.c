#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/service/ledger.h"
#include "ops/error.h"
#include "stages/runtime/recfile.h"

#define DIM 8 /* small features keep the tests fast; the heap is the same for 512 */

static gs_ledger_options opts(uint32_t k)
{
    gs_ledger_options o;
    gs_ledger_options_default(&o);
    o.top_k = k;
    o.feature_dim = DIM;
    o.stall_timeout_ms = 1000;
    o.loss_grace_ms = 100;
    o.tile_max_requests = 3;
    return o;
}

/* xorshift: reproducible random orders without libc's rand state. */
static uint32_t rng(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (uint32_t)(*s >> 11);
}

static void feature_of(uint32_t idx, float *f)
{
    for (int k = 0; k < DIM; k++)
        f[k] = (float)idx + 0.001f * (float)k;
}

typedef struct {
    uint32_t idx;
    float score;
} ref_item;

static int ref_cmp(const void *a, const void *b)
{
    const ref_item *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return x->idx < y->idx ? -1 : 1;
}

static void defaults_match_protocol(void **state)
{
    (void)state;
    gs_ledger_options o;
    gs_ledger_options_default(&o);
    assert_int_equal(o.tile_max_requests, 3);
    assert_int_equal(o.stall_timeout_ms, 120000);
    assert_int_equal(o.loss_grace_ms, 15000);
    assert_int_equal(o.top_k, 64);
    assert_int_equal(o.feature_dim, 512);
    o.top_k = 0;
    assert_null(gs_ledger_new(10, 1, &o));
    gs_ledger_options_default(&o);
    assert_null(gs_ledger_new(10, 0, &o));
}

/* Random orders of results with duplicates and stale attempts: every tile ends with exactly
 * one outcome, the counts add up, and the top-k equals a full sort, for k below and above
 * the number of tiles. */
static void random_orders_duplicates_stale_and_topk(void **state)
{
    (void)state;
    const uint32_t ks[] = {1, 5, 64, 300};
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    for (int round = 0; round < 40; round++) {
        uint32_t n = 1 + rng(&seed) % 200;
        uint32_t k = ks[round % 4];
        gs_ledger_options o = opts(k);
        gs_ledger *l = gs_ledger_new(n, 2, &o);
        assert_non_null(l);
        gs_ledger_begin_inference(l);
        /* scores with many ties, so the tie rule matters */
        float *score = malloc(n * sizeof *score);
        uint8_t *bg = calloc(n, 1);
        uint32_t *order = malloc(3 * n * sizeof *order);
        uint32_t n_bg = 0;
        for (uint32_t i = 0; i < n; i++) {
            score[i] = (float)(rng(&seed) % 11) / 10.f;
            bg[i] = rng(&seed) % 5 == 0;
            n_bg += bg[i];
        }
        /* each tile delivered 1-3 times, shuffled */
        uint32_t m = 0;
        for (uint32_t i = 0; i < n; i++) {
            uint32_t copies = 1 + rng(&seed) % 3;
            for (uint32_t c = 0; c < copies; c++)
                order[m++] = i;
        }
        for (uint32_t i = m; i > 1; i--) {
            uint32_t j = rng(&seed) % i;
            uint32_t t = order[i - 1];
            order[i - 1] = order[j];
            order[j] = t;
        }
        uint32_t recorded = 0, dups = 0, stale = 0;
        float f[DIM];
        for (uint32_t q = 0; q < m; q++) {
            uint32_t i = order[q];
            feature_of(i, f);
            if (rng(&seed) % 7 == 0) {
                /* a stale attempt's result with a different score must never land */
                assert_int_equal(gs_ledger_record(l, 1, i, GS_TILE_INFERRED, 0.99f, f, q),
                                 GS_LEDGER_STALE);
                stale++;
            }
            int r = gs_ledger_record(l, 2, i, bg[i] ? GS_TILE_BACKGROUND : GS_TILE_INFERRED,
                                     score[i], f, q);
            if (r == GS_LEDGER_RECORDED)
                recorded++;
            else {
                assert_int_equal(r, GS_LEDGER_DUPLICATE);
                dups++;
            }
        }
        assert_int_equal(recorded, n);
        assert_true(gs_ledger_complete(l));
        gs_ledger_counts c;
        gs_ledger_counts_get(l, &c);
        assert_int_equal(c.planned, n);
        assert_int_equal(c.pending, 0);
        assert_int_equal(c.inferred + c.background + c.blurry + c.error, n);
        assert_int_equal(c.background, n_bg);
        assert_int_equal(c.duplicates, dups);
        assert_int_equal(c.stale, stale);

        ref_item *ref = malloc(n * sizeof *ref);
        uint32_t nr = 0;
        for (uint32_t i = 0; i < n; i++)
            if (!bg[i])
                ref[nr++] = (ref_item){i, score[i]};
        qsort(ref, nr, sizeof *ref, ref_cmp);
        uint32_t *ti = malloc(k * sizeof *ti);
        float *ts = malloc(k * sizeof *ts);
        float *tf = malloc((size_t)k * DIM * sizeof *tf);
        uint32_t got = gs_ledger_top(l, ti, ts, tf);
        assert_int_equal(got, nr < k ? nr : k);
        for (uint32_t r = 0; r < got; r++) {
            assert_int_equal(ti[r], ref[r].idx);
            assert_true(ts[r] == ref[r].score);
            feature_of(ti[r], f);
            assert_memory_equal(tf + (size_t)r * DIM, f, sizeof f);
            assert_true(gs_ledger_score(l, ti[r]) == ts[r]);
        }
        free(ref);
        free(ti);
        free(ts);
        free(tf);
        free(score);
        free(bg);
        free(order);
        gs_ledger_destroy(&l);
        assert_null(l);
    }
}

static void malformed_results_are_errors(void **state)
{
    (void)state;
    gs_ledger_options o = opts(4);
    gs_ledger *l = gs_ledger_new(4, 1, &o);
    float f[DIM] = {0};
    /* tile results are not taken during the blur check */
    assert_int_equal(gs_ledger_record(l, 1, 0, GS_TILE_INFERRED, 0.5f, f, 0), -1);
    gs_ledger_begin_inference(l);
    assert_int_equal(gs_ledger_record(l, 1, 4, GS_TILE_INFERRED, 0.5f, f, 0), -1);
    assert_int_equal(gs_ledger_record(l, 1, 0, GS_TILE_INFERRED, NAN, f, 0), -1);
    assert_int_equal(gs_ledger_record(l, 1, 0, GS_TILE_INFERRED, 1.5f, f, 0), -1);
    assert_int_equal(gs_ledger_record(l, 1, 0, GS_TILE_INFERRED, 0.5f, NULL, 0), -1);
    assert_int_equal(gs_ledger_record(l, 1, 0, GS_TILE_ERROR, 0.5f, f, 0), -1);
    f[3] = INFINITY;
    assert_int_equal(gs_ledger_record(l, 1, 0, GS_TILE_INFERRED, 0.5f, f, 0), -1);
    assert_int_equal(gs_ledger_judge_blur(l, 1, 0, 1, 0), -1);
    assert_int_equal(gs_ledger_failed_request(l, 1, 9, "x", 0), -1);
    assert_int_equal(gs_ledger_requested(l, 9, 0), -1);
    gs_ledger_counts c;
    gs_ledger_counts_get(l, &c);
    assert_int_equal(c.pending, 4);
    assert_int_equal(c.duplicates + c.stale, 0);
    gs_ledger_destroy(&l);
}

static void failed_requests_retry_then_error(void **state)
{
    (void)state;
    gs_ledger_options o = opts(4);
    gs_ledger *l = gs_ledger_new(3, 1, &o);
    gs_ledger_begin_inference(l);
    uint32_t due[8];
    uint32_t un[8];
    assert_int_equal(gs_ledger_unrequested(l, un, 8), 3);
    for (uint32_t i = 0; i < 3; i++)
        assert_int_equal(gs_ledger_requested(l, i, 0), 0);
    assert_int_equal(gs_ledger_unrequested(l, un, 8), 0);
    assert_int_equal(gs_ledger_due(l, 10, due, 8), 0);
    /* tile 1 fails three times: due at once after each of the first two, then ERROR */
    gs_ledger_counts c;
    gs_ledger_counts_get(l, &c);
    assert_int_equal(c.in_flight, 3);
    assert_int_equal(gs_ledger_failed_request(l, 1, 1, "read error 1", 10), GS_LEDGER_RETRY);
    gs_ledger_counts_get(l, &c);
    assert_int_equal(c.in_flight, 2); /* the failed one is in nobody's pipe */
    assert_int_equal(gs_ledger_due(l, 10, due, 8), 1);
    assert_int_equal(due[0], 1);
    assert_int_equal(gs_ledger_due(l, 11, due, 8), 1); /* stays due until requested */
    assert_int_equal(gs_ledger_requested(l, 1, 12), 0);
    assert_int_equal(gs_ledger_due(l, 12, due, 8), 0);
    assert_int_equal(gs_ledger_failed_request(l, 1, 1, "read error 2", 13), GS_LEDGER_RETRY);
    assert_int_equal(gs_ledger_requested(l, 1, 14), 0);
    assert_int_equal(gs_ledger_failed_request(l, 1, 1, "read error 3", 15), GS_LEDGER_GAVE_UP);
    assert_int_equal(gs_ledger_outcome(l, 1), GS_TILE_ERROR);
    assert_string_equal(gs_ledger_error(l, 1), "read error 3");
    assert_int_equal(gs_ledger_requested(l, 1, 16), -1);
    /* a late success for it is a duplicate: one outcome only */
    float f[DIM] = {0};
    assert_int_equal(gs_ledger_record(l, 1, 1, GS_TILE_INFERRED, 0.5f, f, 17), GS_LEDGER_DUPLICATE);
    assert_int_equal(gs_ledger_failed_request(l, 1, 1, "again", 17), GS_LEDGER_DUPLICATE);
    /* a stale failure changes nothing */
    assert_int_equal(gs_ledger_failed_request(l, 7, 0, "old attempt", 18), GS_LEDGER_STALE);
    assert_int_equal(gs_ledger_due(l, 18, due, 8), 0);
    assert_int_equal(gs_ledger_record(l, 1, 0, GS_TILE_INFERRED, 0.5f, f, 19), GS_LEDGER_RECORDED);
    assert_false(gs_ledger_complete(l));
    assert_int_equal(gs_ledger_record(l, 1, 2, GS_TILE_BACKGROUND, 0, NULL, 20),
                     GS_LEDGER_RECORDED);
    assert_true(gs_ledger_complete(l));
    gs_ledger_counts_get(l, &c);
    assert_int_equal(c.in_flight, 0);
    assert_int_equal(c.error, 1);
    assert_int_equal(c.inferred, 1);
    assert_int_equal(c.background, 1);
    assert_int_equal(c.rerequested, 2);
    assert_int_equal(c.duplicates, 2);
    assert_int_equal(c.stale, 1);
    gs_ledger_destroy(&l);
}

static void stall_deadline_rerequests_then_error(void **state)
{
    (void)state;
    gs_ledger_options o = opts(4); /* stall 1000 ms, 3 requests */
    gs_ledger *l = gs_ledger_new(4, 1, &o);
    gs_ledger_begin_inference(l);
    uint32_t due[8];
    float f[DIM] = {0};
    for (uint32_t i = 0; i < 3; i++) /* tile 3 is not sent yet */
        gs_ledger_requested(l, i, 0);
    assert_int_equal(gs_ledger_due(l, 999, due, 8), 0);
    /* a result at 900 keeps the slide alive: nothing stalls before 1900 */
    assert_int_equal(gs_ledger_record(l, 1, 0, GS_TILE_INFERRED, 0.2f, f, 900), GS_LEDGER_RECORDED);
    assert_int_equal(gs_ledger_due(l, 1000, due, 8), 0);
    assert_int_equal(gs_ledger_due(l, 1900, due, 8), 2);
    assert_int_equal(due[0], 1);
    assert_int_equal(due[1], 2);
    /* max = 1: only the first due index is returned, the other stays due */
    assert_int_equal(gs_ledger_due(l, 1900, due, 1), 1);
    gs_ledger_requested(l, 1, 1900);
    gs_ledger_requested(l, 2, 1900);
    assert_int_equal(gs_ledger_due(l, 2899, due, 8), 0);
    assert_int_equal(gs_ledger_due(l, 2900, due, 8), 2);
    gs_ledger_requested(l, 1, 2900);
    gs_ledger_requested(l, 2, 2900);
    /* third request lost too: ERROR, not due */
    assert_int_equal(gs_ledger_due(l, 3900, due, 8), 0);
    assert_int_equal(gs_ledger_outcome(l, 1), GS_TILE_ERROR);
    assert_int_equal(gs_ledger_outcome(l, 2), GS_TILE_ERROR);
    assert_non_null(gs_ledger_error(l, 1));
    /* the never-sent tile is not "due": it is unrequested */
    uint32_t un[4];
    assert_int_equal(gs_ledger_unrequested(l, un, 4), 1);
    assert_int_equal(un[0], 3);
    assert_false(gs_ledger_complete(l));
    gs_ledger_destroy(&l);
}

static void worker_loss_makes_older_requests_due_after_grace(void **state)
{
    (void)state;
    gs_ledger_options o = opts(4); /* grace 100 ms */
    gs_ledger *l = gs_ledger_new(3, 1, &o);
    gs_ledger_begin_inference(l);
    uint32_t due[4];
    gs_ledger_requested(l, 0, 0);
    gs_ledger_requested(l, 1, 50);
    gs_ledger_requested(l, 2, 200); /* after the loss: not affected */
    gs_ledger_worker_lost(l, 100);
    assert_int_equal(gs_ledger_due(l, 199, due, 4), 0);
    assert_int_equal(gs_ledger_due(l, 200, due, 4), 2);
    assert_int_equal(due[0], 0);
    assert_int_equal(due[1], 1);
    /* tile 1's result arrives after the grace but before its re-request */
    float f[DIM] = {0};
    assert_int_equal(gs_ledger_record(l, 1, 1, GS_TILE_INFERRED, 0.3f, f, 201), GS_LEDGER_RECORDED);
    assert_int_equal(gs_ledger_due(l, 201, due, 4), 1);
    assert_int_equal(due[0], 0);
    gs_ledger_requested(l, 0, 202);
    assert_int_equal(gs_ledger_due(l, 250, due, 4), 0);
    gs_ledger_destroy(&l);
}

static void blur_phase_judgements(void **state)
{
    (void)state;
    gs_ledger_options o = opts(4);
    gs_ledger *l = gs_ledger_new(6, 3, &o);
    assert_int_equal(gs_ledger_set_background(l, 5), 0);
    assert_int_equal(gs_ledger_set_background(l, 5), -1);
    assert_false(gs_ledger_inferring(l));
    for (uint32_t i = 0; i < 4; i++)
        gs_ledger_requested(l, i, 0);
    assert_int_equal(gs_ledger_judge_blur(l, 3, 0, 1, 1), GS_LEDGER_RECORDED);
    assert_int_equal(gs_ledger_judge_blur(l, 3, 0, 0, 2), GS_LEDGER_DUPLICATE);
    assert_int_equal(gs_ledger_judge_blur(l, 3, 1, 0, 2), GS_LEDGER_RECORDED);
    assert_int_equal(gs_ledger_judge_blur(l, 3, 1, 1, 3), GS_LEDGER_DUPLICATE);
    assert_int_equal(gs_ledger_judge_blur(l, 2, 2, 1, 3), GS_LEDGER_STALE);
    assert_int_equal(gs_ledger_requested(l, 1, 3), -1); /* judged: nothing to request */
    /* tile 2 fails all its requests: unjudged, not an error */
    assert_int_equal(gs_ledger_failed_request(l, 3, 2, "e", 4), GS_LEDGER_RETRY);
    gs_ledger_requested(l, 2, 5);
    assert_int_equal(gs_ledger_failed_request(l, 3, 2, "e", 6), GS_LEDGER_RETRY);
    gs_ledger_requested(l, 2, 7);
    assert_int_equal(gs_ledger_failed_request(l, 3, 2, "e", 8), GS_LEDGER_GAVE_UP);
    assert_int_equal(gs_ledger_outcome(l, 2), GS_TILE_PENDING);
    gs_ledger_counts c;
    gs_ledger_counts_get(l, &c);
    assert_int_equal(c.blur_judged, 2);
    assert_int_equal(c.blur_blurry, 1);
    assert_int_equal(c.blur_outstanding, 1); /* tile 3 */
    assert_int_equal(c.blurry, 1);
    assert_int_equal(c.error, 0);
    /* tile 3 stalls through its requests: given up, the sample is settled */
    uint32_t due[4];
    assert_int_equal(gs_ledger_due(l, 1007, due, 4), 0); /* the last failure was at 8 */
    assert_int_equal(gs_ledger_due(l, 1008, due, 4), 1);
    assert_int_equal(due[0], 3);
    gs_ledger_requested(l, 3, 1008);
    assert_int_equal(gs_ledger_due(l, 2008, due, 4), 1);
    gs_ledger_requested(l, 3, 2008);
    assert_int_equal(gs_ledger_due(l, 3008, due, 4), 0);
    gs_ledger_counts_get(l, &c);
    assert_int_equal(c.blur_outstanding, 0);
    assert_int_equal(c.error, 0);

    /* inference: the sharp, the unjudged and the unsampled tiles all start fresh */
    gs_ledger_begin_inference(l);
    uint32_t un[8];
    assert_int_equal(gs_ledger_unrequested(l, un, 8), 4);
    assert_int_equal(un[0], 1);
    assert_int_equal(un[1], 2);
    assert_int_equal(un[2], 3);
    assert_int_equal(un[3], 4);
    for (uint32_t i = 1; i < 5; i++)
        assert_int_equal(gs_ledger_requested(l, i, 3000), 0);
    assert_int_equal(gs_ledger_judge_blur(l, 3, 4, 1, 3001), -1);
    float f[DIM] = {0};
    for (uint32_t i = 1; i < 5; i++)
        assert_int_equal(gs_ledger_record(l, 3, i, GS_TILE_INFERRED, 0.1f * (float)i, f, 3002),
                         GS_LEDGER_RECORDED);
    assert_true(gs_ledger_complete(l));
    gs_ledger_counts_get(l, &c);
    assert_int_equal(c.inferred, 4);
    assert_int_equal(c.blurry, 1);
    assert_int_equal(c.background, 1);
    uint32_t ti[4];
    assert_int_equal(gs_ledger_top(l, ti, NULL, NULL), 4);
    assert_int_equal(ti[0], 4);
    assert_int_equal(ti[3], 1);
    gs_ledger_destroy(&l);
}

static void ledger_file_is_adopted_after_restart(void **state)
{
    (void)state;
    char path[64];
    snprintf(path, sizeof path, "/tmp/gs_test_ledger_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    unlink(path);
    gs_ledger_options o = opts(3);
    uint32_t adopted = 99, dropped = 99;
    gs_ledger *l = gs_ledger_new(8, 1, &o);
    /* a missing file adopts nothing */
    assert_int_equal(gs_ledger_adopt_file(l, path, &adopted, &dropped), 0);
    assert_int_equal(adopted, 0);
    assert_int_equal(dropped, 0);
    assert_int_equal(gs_ledger_attach_file(l, path), 0);
    assert_int_equal(gs_ledger_set_background(l, 7), 0);
    gs_ledger_requested(l, 6, 0);
    assert_int_equal(gs_ledger_judge_blur(l, 1, 6, 1, 1), GS_LEDGER_RECORDED);
    gs_ledger_begin_inference(l);
    float f[DIM];
    for (uint32_t i = 0; i < 5; i++) {
        feature_of(i, f);
        assert_int_equal(gs_ledger_record(l, 1, i, GS_TILE_INFERRED, 0.1f * (float)i, f, 2),
                         GS_LEDGER_RECORDED);
    }
    for (int r = 0; r < 3; r++) {
        gs_ledger_requested(l, 5, 3);
        gs_ledger_failed_request(l, 1, 5, "bad tile", 4);
    }
    assert_int_equal(gs_ledger_outcome(l, 5), GS_TILE_ERROR);
    assert_int_equal(gs_ledger_sync(l), 0);
    uint32_t top1[3];
    float feat1[3 * DIM];
    assert_int_equal(gs_ledger_top(l, top1, NULL, feat1), 3);
    gs_ledger_destroy(&l);

    /* the coordinator restarts: attempt 2 adopts everything */
    l = gs_ledger_new(8, 2, &o);
    assert_int_equal(gs_ledger_adopt_file(l, path, &adopted, &dropped), 0);
    assert_int_equal(adopted, 8);
    assert_int_equal(dropped, 0);
    assert_true(gs_ledger_complete(l));
    gs_ledger_counts c;
    gs_ledger_counts_get(l, &c);
    assert_int_equal(c.inferred, 5);
    assert_int_equal(c.background, 1);
    assert_int_equal(c.blurry, 1);
    assert_int_equal(c.error, 1);
    uint32_t top2[3];
    float feat2[3 * DIM];
    assert_int_equal(gs_ledger_top(l, top2, NULL, feat2), 3);
    assert_memory_equal(top1, top2, sizeof top1);
    assert_memory_equal(feat1, feat2, sizeof feat1);
    assert_true(gs_ledger_score(l, 4) == 0.4f);
    /* adopting the same file twice: every record is for a settled tile */
    assert_int_equal(gs_ledger_adopt_file(l, path, &adopted, &dropped), 0);
    assert_int_equal(adopted, 0);
    assert_int_equal(dropped, 8);
    gs_ledger_destroy(&l);

    /* a torn last record is cut; the intact ones are adopted; appends continue after them */
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(truncate(path, st.st_size - 3), 0);
    l = gs_ledger_new(8, 3, &o);
    assert_int_equal(gs_ledger_adopt_file(l, path, &adopted, &dropped), 0);
    assert_int_equal(adopted, 7);
    assert_int_equal(dropped, 1);
    assert_int_equal(gs_ledger_outcome(l, 5), GS_TILE_PENDING); /* its record was the torn one */
    gs_ledger_begin_inference(l);
    assert_int_equal(gs_ledger_attach_file(l, path), 0);
    feature_of(5, f);
    gs_ledger_requested(l, 5, 10);
    assert_int_equal(gs_ledger_record(l, 3, 5, GS_TILE_INFERRED, 0.9f, f, 11), GS_LEDGER_RECORDED);
    gs_ledger_destroy(&l);
    l = gs_ledger_new(8, 4, &o);
    assert_int_equal(gs_ledger_adopt_file(l, path, &adopted, &dropped), 0);
    assert_int_equal(adopted, 8);
    assert_int_equal(dropped, 0);
    assert_int_equal(gs_ledger_top(l, top2, NULL, NULL), 3);
    assert_int_equal(top2[0], 5);
    gs_ledger_destroy(&l);

    /* a ledger of a smaller plan drops records it cannot hold */
    l = gs_ledger_new(4, 5, &o);
    assert_int_equal(gs_ledger_adopt_file(l, path, &adopted, &dropped), 0);
    assert_int_equal(adopted, 4);
    assert_int_equal(dropped, 4);
    gs_ledger_destroy(&l);
    unlink(path);
    l = gs_ledger_new(1, 1, &o);
    assert_int_equal(gs_ledger_attach_file(l, "/nonexistent/dir/ledger"), -1);
    gs_ledger_destroy(&l);
}

static size_t put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
    return 4;
}

/* One ledger.bin record exactly as the release before the record files wrote it:
 * [magic "GSL1"][body_len u32][body][crc32(body) u32]; body: [index u32][outcome u8]
 * [score f32][dim u32][dim x f32]. Returns its size. */
static size_t old_ledger_record(uint8_t *out, uint32_t index, gs_tile_outcome outcome, float score,
                                const float *feature, uint32_t dim)
{
    uint8_t *b = out + 8;
    put_le32(b, index);
    b[4] = (uint8_t)outcome;
    uint32_t u;
    memcpy(&u, &score, sizeof u);
    put_le32(b + 5, u);
    put_le32(b + 9, dim);
    for (uint32_t k = 0; k < dim; k++) {
        memcpy(&u, &feature[k], sizeof u);
        put_le32(b + 13 + 4 * k, u);
    }
    uint32_t body = 13 + 4 * dim;
    put_le32(out, 0x314c5347u);
    put_le32(out + 4, body);
    put_le32(b + body, gs_crc32(0, b, body));
    return 8 + body + 4;
}

/* A slide in flight across the upgrade: the ledger file of the previous release (ending in a
 * torn append) is adopted, converted, and appended to afterwards. */
static void ledger_file_of_the_previous_release_is_adopted(void **state)
{
    (void)state;
    char path[64];
    snprintf(path, sizeof path, "/tmp/gs_test_ledger_old_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    uint8_t raw[1024];
    float f[DIM];
    feature_of(0, f);
    size_t n = old_ledger_record(raw, 0, GS_TILE_INFERRED, 0.75f, f, DIM);
    n += old_ledger_record(raw + n, 1, GS_TILE_BACKGROUND, 0.f, NULL, 0);
    n += old_ledger_record(raw + n, 2, GS_TILE_BLURRY, 0.f, NULL, 0);
    uint8_t torn[128];
    size_t t = old_ledger_record(torn, 3, GS_TILE_ERROR, 0.f, NULL, 0);
    memcpy(raw + n, torn, t - 5);
    assert_int_equal(write(fd, raw, n + t - 5), (ssize_t)(n + t - 5));
    close(fd);

    gs_ledger_options o = opts(3);
    uint32_t adopted = 99, dropped = 99;
    gs_ledger *l = gs_ledger_new(4, 2, &o);
    assert_int_equal(gs_ledger_adopt_file(l, path, &adopted, &dropped), 0);
    assert_int_equal(adopted, 3);
    assert_int_equal(dropped, 1); /* the torn record */
    assert_int_equal(gs_ledger_outcome(l, 0), GS_TILE_INFERRED);
    assert_true(gs_ledger_score(l, 0) == 0.75f);
    assert_int_equal(gs_ledger_outcome(l, 1), GS_TILE_BACKGROUND);
    assert_int_equal(gs_ledger_outcome(l, 2), GS_TILE_BLURRY);
    assert_int_equal(gs_ledger_outcome(l, 3), GS_TILE_PENDING);
    float top[DIM];
    assert_int_equal(gs_ledger_top(l, NULL, NULL, top), 1);
    assert_memory_equal(top, f, sizeof f);
    /* The file is a record file now; outcomes recorded next follow the adopted ones. */
    FILE *fp = fopen(path, "rb");
    char head[8];
    assert_int_equal(fread(head, 1, sizeof head, fp), sizeof head);
    fclose(fp);
    assert_memory_equal(head, "GSRFLEDG", 8);
    assert_int_equal(gs_ledger_attach_file(l, path), 0);
    gs_ledger_begin_inference(l);
    for (int r = 0; r < 3; r++) {
        gs_ledger_requested(l, 3, r);
        gs_ledger_failed_request(l, 2, 3, "unreadable", r);
    }
    assert_int_equal(gs_ledger_outcome(l, 3), GS_TILE_ERROR);
    gs_ledger_destroy(&l);
    l = gs_ledger_new(4, 3, &o);
    assert_int_equal(gs_ledger_adopt_file(l, path, &adopted, &dropped), 0);
    assert_int_equal(adopted, 4);
    assert_int_equal(dropped, 0);
    gs_ledger_destroy(&l);

    /* A file that is not a ledger file is an error naming it, and stays as it was. */
    fd = open(path, O_WRONLY | O_TRUNC);
    assert_int_equal(write(fd, "plan.pb, not a ledger", 21), 21);
    close(fd);
    l = gs_ledger_new(4, 4, &o);
    gs_error_clear();
    assert_int_equal(gs_ledger_adopt_file(l, path, &adopted, &dropped), -1);
    assert_non_null(strstr(gs_error_get(), path));
    assert_int_equal(gs_ledger_attach_file(l, path), -1);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, 21);
    gs_ledger_destroy(&l);
    unlink(path);
}

static void empty_plan_is_complete(void **state)
{
    (void)state;
    gs_ledger_options o = opts(64);
    gs_ledger *l = gs_ledger_new(0, 1, &o);
    assert_non_null(l);
    assert_true(gs_ledger_complete(l));
    assert_int_equal(gs_ledger_top(l, NULL, NULL, NULL), 0);
    gs_ledger_destroy(&l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults_match_protocol),
        cmocka_unit_test(random_orders_duplicates_stale_and_topk),
        cmocka_unit_test(malformed_results_are_errors),
        cmocka_unit_test(failed_requests_retry_then_error),
        cmocka_unit_test(stall_deadline_rerequests_then_error),
        cmocka_unit_test(worker_loss_makes_older_requests_due_after_grace),
        cmocka_unit_test(blur_phase_judgements),
        cmocka_unit_test(ledger_file_is_adopted_after_restart),
        cmocka_unit_test(ledger_file_of_the_previous_release_is_adopted),
        cmocka_unit_test(empty_plan_is_complete),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
