#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/service/journal.h"
#include "stages/runtime/recfile.h"
#include "ops/error.h"

static const char *ID_A = "00000000000000aa";
static const char *ID_B = "00000000000000bb";

static void make_tmpdir(char *buf, size_t n)
{
    snprintf(buf, n, "/tmp/gs_test_journal_XXXXXX");
    assert_non_null(mkdtemp(buf));
}

static void remove_tree(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static json_t *rec(const char *state, int n)
{
    return json_pack("{s:s, s:i}", "state", state, "n", n);
}

static void commit(gs_journal *j, const char *id, const char *state, int n, int terminal, int64_t t,
                   uint64_t expect_seq)
{
    json_t *r = id ? rec(state, n) : NULL;
    char payload[64];
    snprintf(payload, sizeof payload, "event %llu", (unsigned long long)expect_seq);
    uint64_t seq = 0;
    assert_int_equal(gs_journal_next_seq(j), expect_seq);
    assert_int_equal(gs_journal_commit(j, id, r, terminal, t, payload, strlen(payload), &seq), 0);
    assert_int_equal(seq, expect_seq);
    json_decref(r);
}

static const char *state_of(const gs_journal *j, const char *id)
{
    const json_t *r = gs_journal_slide_get(j, id);
    return r ? json_string_value(json_object_get(r, "state")) : NULL;
}

static int warned(const gs_journal *j, const char *needle)
{
    for (size_t i = 0; i < gs_journal_warning_count(j); i++)
        if (strstr(gs_journal_warning(j, i), needle))
            return 1;
    return 0;
}

static off_t file_size(const char *dir, const char *name)
{
    char p[600];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    assert_int_equal(stat(p, &st), 0);
    return st.st_size;
}

static void write_file(const char *dir, const char *name, const void *data, size_t n)
{
    char p[600];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
}

static void round_trip(void **state)
{
    (void)state;
    char dir[64];
    make_tmpdir(dir, sizeof dir);
    gs_journal *j = gs_journal_open(dir);
    assert_non_null(j);
    assert_int_equal(gs_journal_last_seq(j), 0);
    commit(j, ID_A, "accepted", 1, 0, 1000, 1);
    commit(j, ID_B, "accepted", 1, 0, 1001, 2);
    commit(j, ID_A, "planned", 2, 0, 1002, 3);
    commit(j, NULL, NULL, 0, 0, 1003, 4); /* an event without a record change */
    json_t *marked = json_pack("{s:s}", "state", "marked");
    assert_int_equal(gs_journal_put_slide(j, ID_B, marked, 0, 1004), 0);
    json_decref(marked);
    gs_journal_destroy(&j);
    assert_null(j);

    j = gs_journal_open(dir);
    assert_non_null(j);
    assert_int_equal(gs_journal_warning_count(j), 0);
    assert_int_equal(gs_journal_last_seq(j), 4);
    assert_int_equal(gs_journal_slide_count(j), 2);
    assert_string_equal(state_of(j, ID_A), "planned");
    assert_string_equal(state_of(j, ID_B), "marked");
    gs_journal_event ev[8];
    size_t n = gs_journal_events_since(j, 1, ev, 8);
    assert_int_equal(n, 3);
    assert_int_equal(ev[0].seq, 2);
    assert_string_equal(ev[0].slide_id, ID_B);
    assert_memory_equal(ev[0].payload, "event 2", 7);
    assert_string_equal(ev[2].slide_id, "");
    assert_int_equal(gs_journal_events_since(j, 0, ev, 2), 2);
    assert_int_equal(gs_journal_events_since(j, 4, ev, 8), 0);
    commit(j, ID_A, "done", 3, 1, 2000, 5);
    gs_journal_destroy(&j);
    remove_tree(dir);
}

static void torn_last_record_is_dropped(void **state)
{
    (void)state;
    char dir[64];
    make_tmpdir(dir, sizeof dir);
    gs_journal *j = gs_journal_open(dir);
    assert_non_null(j);
    commit(j, ID_A, "accepted", 1, 0, 1000, 1);
    off_t good = file_size(dir, "events.log");
    commit(j, ID_B, "accepted", 1, 0, 1001, 2);
    off_t full = file_size(dir, "events.log");
    gs_journal_destroy(&j);

    /* Crash in the middle of the second append: the log ends mid-record, and the slide
     * file of B was never written. */
    char p[600];
    snprintf(p, sizeof p, "%s/events.log", dir);
    assert_int_equal(truncate(p, good + (full - good) / 2), 0);
    snprintf(p, sizeof p, "%s/%s.json", dir, ID_B);
    assert_int_equal(unlink(p), 0);

    j = gs_journal_open(dir);
    assert_non_null(j);
    assert_true(warned(j, "torn last record"));
    assert_int_equal(gs_journal_last_seq(j), 1);
    assert_int_equal(gs_journal_slide_count(j), 1);
    assert_string_equal(state_of(j, ID_A), "accepted");
    assert_null(state_of(j, ID_B));
    /* The log was repaired: the next append follows the intact record, and a later replay
     * is clean. */
    assert_int_equal(file_size(dir, "events.log"), good);
    commit(j, ID_B, "accepted", 7, 0, 1005, 2);
    gs_journal_destroy(&j);
    j = gs_journal_open(dir);
    assert_int_equal(gs_journal_warning_count(j), 0);
    assert_int_equal(gs_journal_last_seq(j), 2);
    gs_journal_destroy(&j);
    remove_tree(dir);
}

static void corrupt_middle_record_keeps_later_ones(void **state)
{
    (void)state;
    char dir[64];
    make_tmpdir(dir, sizeof dir);
    gs_journal *j = gs_journal_open(dir);
    commit(j, ID_A, "accepted", 1, 0, 1000, 1);
    off_t first = file_size(dir, "events.log");
    commit(j, ID_A, "planned", 2, 0, 1001, 2);
    commit(j, ID_B, "accepted", 1, 0, 1002, 3);
    gs_journal_destroy(&j);

    char p[600];
    snprintf(p, sizeof p, "%s/events.log", dir);
    int fd = open(p, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, "XXXX", 4, first + 30), 4); /* inside record 2's body */
    close(fd);

    j = gs_journal_open(dir);
    assert_non_null(j);
    assert_true(warned(j, "corrupt record"));
    assert_int_equal(gs_journal_last_seq(j), 3);
    gs_journal_event ev[4];
    assert_int_equal(gs_journal_events_since(j, 0, ev, 4), 2);
    assert_int_equal(ev[0].seq, 1);
    assert_int_equal(ev[1].seq, 3);
    /* The slide file of A still has the planned state. */
    assert_string_equal(state_of(j, ID_A), "planned");
    gs_journal_destroy(&j);
    remove_tree(dir);
}

static void log_newer_than_slide_file_wins(void **state)
{
    (void)state;
    char dir[64];
    make_tmpdir(dir, sizeof dir);
    gs_journal *j = gs_journal_open(dir);
    commit(j, ID_A, "accepted", 1, 0, 1000, 1);
    char p[600], saved[600];
    snprintf(p, sizeof p, "%s/%s.json", dir, ID_A);
    snprintf(saved, sizeof saved, "%s/saved", dir);
    char cmd[1300];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", p, saved);
    assert_int_equal(system(cmd), 0);
    commit(j, ID_A, "planned", 2, 0, 1001, 2);
    gs_journal_destroy(&j);
    /* Crash between the log append and the rename of the slide file: the old file is there,
     * with a half-written temporary beside it. */
    assert_int_equal(rename(saved, p), 0);
    write_file(dir, "00000000000000aa.json.tmp", "{\"slide_id\":", 12);

    j = gs_journal_open(dir);
    assert_non_null(j);
    assert_true(warned(j, "00000000000000aa.json.tmp: removed a half-written temporary file"));
    assert_true(warned(j, "restored from events.log seq 2"));
    assert_string_equal(state_of(j, ID_A), "planned");
    gs_journal_destroy(&j);
    snprintf(p, sizeof p, "%s/00000000000000aa.json.tmp", dir);
    assert_int_equal(access(p, F_OK), -1);
    /* The file was rewritten, so the next replay is clean. */
    j = gs_journal_open(dir);
    assert_int_equal(gs_journal_warning_count(j), 0);
    assert_string_equal(state_of(j, ID_A), "planned");
    gs_journal_destroy(&j);
    remove_tree(dir);
}

static void garbage_files_are_skipped_with_warnings(void **state)
{
    (void)state;
    char dir[64];
    make_tmpdir(dir, sizeof dir);
    gs_journal *j = gs_journal_open(dir);
    commit(j, ID_A, "accepted", 1, 0, 1000, 1);
    gs_journal_destroy(&j);
    write_file(dir, "garbage.bin", "\x01\x02\x03", 3);
    write_file(dir, "00000000000000cc.json", "not json at all", 15);
    write_file(dir, "00000000000000dd.json", "{\"slide_id\":\"00000000000000ee\"}", 31);
    write_file(dir, "state.json", "[1,2]", 5);

    j = gs_journal_open(dir);
    assert_non_null(j);
    assert_true(warned(j, "garbage.bin: ignored"));
    assert_true(warned(j, "00000000000000cc.json: skipped: not JSON"));
    assert_true(warned(j, "00000000000000dd.json: skipped: not a slide record"));
    assert_true(warned(j, "state.json: skipped"));
    assert_int_equal(gs_journal_slide_count(j), 1);
    assert_string_equal(state_of(j, ID_A), "accepted");
    assert_int_equal(gs_journal_last_seq(j), 1);
    gs_journal_destroy(&j);
    remove_tree(dir);
}

static void unwritable_dir_is_a_clear_error(void **state)
{
    (void)state;
    char dir[64];
    make_tmpdir(dir, sizeof dir);
    write_file(dir, "plainfile", "x", 1);
    char p[600];
    /* A path under a regular file cannot be created, even by root. */
    snprintf(p, sizeof p, "%s/plainfile/journal", dir);
    gs_error_clear();
    assert_null(gs_journal_open(p));
    assert_non_null(strstr(gs_error_get(), "plainfile"));
    assert_non_null(strstr(gs_error_get(), "journal"));
    assert_null(gs_journal_open(""));
    /* Nested folders are created. */
    snprintf(p, sizeof p, "%s/a/b/c", dir);
    gs_journal *j = gs_journal_open(p);
    assert_non_null(j);
    gs_journal_destroy(&j);
    gs_journal_destroy(&j); /* idempotent */
    remove_tree(dir);
}

static void retention_drops_old_terminal_slides_and_keeps_seq(void **state)
{
    (void)state;
    char dir[64];
    make_tmpdir(dir, sizeof dir);
    gs_journal *j = gs_journal_open(dir);
    commit(j, ID_A, "accepted", 1, 0, 1000, 1);
    commit(j, ID_B, "accepted", 1, 0, 1000, 2);
    commit(j, ID_A, "done", 2, 1, 2000, 3);
    size_t dropped = 99;
    /* Not old enough yet. */
    assert_int_equal(gs_journal_retain(j, 2500, 1000, &dropped), 0);
    assert_int_equal(dropped, 0);
    assert_int_equal(gs_journal_retain(j, 5000, 1000, &dropped), 0);
    assert_int_equal(dropped, 1);
    assert_null(gs_journal_slide_get(j, ID_A));
    assert_int_equal(gs_journal_complete_from(j), 4);
    gs_journal_event ev[4];
    assert_int_equal(gs_journal_events_since(j, 0, ev, 4), 1);
    assert_int_equal(ev[0].seq, 2);
    gs_journal_destroy(&j);

    j = gs_journal_open(dir);
    assert_int_equal(gs_journal_warning_count(j), 0);
    assert_int_equal(gs_journal_slide_count(j), 1);
    assert_int_equal(gs_journal_last_seq(j), 3);
    assert_int_equal(gs_journal_complete_from(j), 4);
    assert_int_equal(gs_journal_events_since(j, 0, ev, 4), 1);
    /* B (in flight) is never dropped; once terminal and old, it goes too, and the seq
     * survives in state.json although no event is left. */
    commit(j, ID_B, "failed", 2, 1, 3000, 4);
    assert_int_equal(gs_journal_retain(j, 10000, 1000, &dropped), 0);
    assert_int_equal(dropped, 1);
    gs_journal_destroy(&j);
    j = gs_journal_open(dir);
    assert_int_equal(gs_journal_slide_count(j), 0);
    assert_int_equal(gs_journal_last_seq(j), 4);
    assert_int_equal(gs_journal_next_seq(j), 5);
    gs_journal_destroy(&j);
    remove_tree(dir);
}

/* Random damage to the log's records: every record whose bytes were not touched is
 * recovered, every damaged one is dropped, and replay never crashes (the sanitizer preset
 * checks the reads). The file header before the first record is left alone: a damaged header
 * makes the open fail (record_file_header_damage_fails_the_open). */
static void random_damage_keeps_every_intact_record(void **state)
{
    (void)state;
    uint64_t rng = 0x2545f4914f6cdd1dull;
    for (int round = 0; round < 30; round++) {
        char dir[64];
        make_tmpdir(dir, sizeof dir);
        gs_journal *j = gs_journal_open(dir);
        enum { N = 20 };
        off_t start[N + 1];
        start[0] = file_size(dir, "events.log");
        for (int i = 0; i < N; i++) {
            char payload[300];
            rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
            size_t len = rng % sizeof payload;
            memset(payload, 'A' + i, len);
            assert_int_equal(gs_journal_commit(j, NULL, NULL, 0, i, payload, len, NULL), 0);
            start[i + 1] = file_size(dir, "events.log");
        }
        gs_journal_destroy(&j);
        char p[600];
        snprintf(p, sizeof p, "%s/events.log", dir);
        int fd = open(p, O_RDWR);
        int damaged[N] = {0};
        int flips = 1 + (int)(rng % 4);
        for (int k = 0; k < flips; k++) {
            rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
            off_t at = start[0] + (off_t)(rng % (uint64_t)(start[N] - start[0]));
            unsigned char b;
            assert_int_equal(pread(fd, &b, 1, at), 1);
            b ^= (unsigned char)(1u << (rng >> 40) % 8);
            assert_int_equal(pwrite(fd, &b, 1, at), 1);
            for (int i = 0; i < N; i++)
                if (at >= start[i] && at < start[i + 1])
                    damaged[i] = 1;
        }
        close(fd);
        j = gs_journal_open(dir);
        assert_non_null(j);
        gs_journal_event ev[N];
        size_t n = gs_journal_events_since(j, 0, ev, N);
        size_t k = 0;
        for (int i = 0; i < N; i++) {
            if (damaged[i])
                continue;
            assert_true(k < n);
            assert_int_equal(ev[k].seq, (uint64_t)i + 1);
            k++;
        }
        assert_int_equal(k, n);
        assert_true(gs_journal_warning_count(j) > 0);
        gs_journal_destroy(&j);
        remove_tree(dir);
    }
}

/* Little-endian, as the release before the record files wrote its log. */
static size_t put_le(uint8_t *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        p[i] = (uint8_t)(v >> (8 * i));
    return (size_t)bytes;
}

/* One events.log record exactly as the release before the record files wrote it:
 * [magic "GSJ1"][body_len u32][body][crc32(body) u32]; body: [seq u64][slide_id 16 bytes,
 * NUL-padded][time_unix_ms i64][flags u8: 1 record, 2 terminal][record_len u32][record JSON]
 * [payload]. Returns its size. */
static size_t old_log_record(uint8_t *out, uint64_t seq, const char *id, int64_t t, int terminal,
                             const char *record, const char *payload)
{
    uint8_t *b = out + 8;
    size_t k = put_le(b, seq, 8);
    memset(b + k, 0, 16);
    if (id)
        memcpy(b + k, id, 16);
    k += 16;
    k += put_le(b + k, (uint64_t)t, 8);
    b[k++] = (uint8_t)((record ? 1 : 0) | (terminal ? 2 : 0));
    size_t rec_len = record ? strlen(record) : 0;
    k += put_le(b + k, rec_len, 4);
    memcpy(b + k, record ? record : "", rec_len);
    k += rec_len;
    memcpy(b + k, payload, strlen(payload));
    k += strlen(payload);
    put_le(out, 0x314a5347u, 4);
    put_le(out + 4, k, 4);
    put_le(b + k, gs_crc32(0, b, k), 4);
    return 8 + k + 4;
}

/* A lab upgrades with slides in flight: the journal the previous release wrote (its log
 * framing, its slide files, a crash that left a torn append and a slide file not yet written)
 * replays, and the log is converted once. */
static void journal_of_the_previous_release_replays(void **state)
{
    (void)state;
    char dir[64];
    make_tmpdir(dir, sizeof dir);
    static uint8_t log[4096];
    size_t n = 0;
    n += old_log_record(log + n, 1, ID_A, 1000, 0, "{\"state\":\"accepted\",\"n\":1}", "event 1");
    n += old_log_record(log + n, 2, ID_B, 1001, 0, "{\"state\":\"accepted\",\"n\":1}", "event 2");
    n += old_log_record(log + n, 3, ID_A, 1002, 0, "{\"state\":\"planned\",\"n\":2}", "event 3");
    n += old_log_record(log + n, 4, NULL, 1003, 0, NULL, "event 4");
    /* The fifth append was cut short by the crash. */
    uint8_t torn[256];
    size_t t = old_log_record(torn, 5, ID_B, 1004, 0, "{\"state\":\"planned\",\"n\":2}", "event 5");
    memcpy(log + n, torn, t / 2);
    write_file(dir, "events.log", log, n + t / 2);
    /* A's slide file is up to date; B's was never written (the crash came first). */
    const char *a_file = "{\"slide_id\":\"00000000000000aa\",\"seq\":3,\"terminal\":false,"
                         "\"time_unix_ms\":1002,\"record\":{\"state\":\"planned\",\"n\":2}}";
    write_file(dir, "00000000000000aa.json", a_file, strlen(a_file));

    gs_journal *j = gs_journal_open(dir);
    assert_non_null(j);
    assert_true(warned(j, "events.log: converted"));
    assert_true(warned(j, "4 records kept"));
    assert_true(warned(j, "00000000000000bb.json: restored from events.log seq 2"));
    assert_int_equal(gs_journal_last_seq(j), 4);
    assert_int_equal(gs_journal_slide_count(j), 2);
    assert_string_equal(state_of(j, ID_A), "planned");
    assert_string_equal(state_of(j, ID_B), "accepted");
    gs_journal_event ev[8];
    assert_int_equal(gs_journal_events_since(j, 0, ev, 8), 4);
    assert_int_equal(ev[3].seq, 4);
    assert_string_equal(ev[3].slide_id, "");
    assert_memory_equal(ev[3].payload, "event 4", 7);
    assert_string_equal(ev[1].slide_id, ID_B);
    commit(j, ID_B, "planned", 2, 0, 1005, 5);
    gs_journal_destroy(&j);

    /* Converted once: the log is a record file now and replays without a warning about it;
     * ID_A's file, of the previous release too and unchanged since, has no checksum yet. */
    char p[600];
    snprintf(p, sizeof p, "%s/events.log", dir);
    FILE *f = fopen(p, "rb");
    assert_non_null(f);
    char head[8];
    assert_int_equal(fread(head, 1, sizeof head, f), sizeof head);
    fclose(f);
    assert_memory_equal(head, "GSRFJLOG", 8);
    j = gs_journal_open(dir);
    assert_non_null(j);
    assert_int_equal(gs_journal_warning_count(j), 1);
    assert_true(warned(j, "1 slide files carry no checksum"));
    assert_int_equal(gs_journal_last_seq(j), 5);
    assert_string_equal(state_of(j, ID_B), "planned");
    gs_journal_destroy(&j);
    remove_tree(dir);

    /* The previous release created an empty log at its first open: that is a new log. */
    make_tmpdir(dir, sizeof dir);
    write_file(dir, "events.log", "", 0);
    j = gs_journal_open(dir);
    assert_non_null(j);
    assert_int_equal(gs_journal_warning_count(j), 0);
    commit(j, ID_A, "accepted", 1, 0, 1000, 1);
    gs_journal_destroy(&j);
    remove_tree(dir);
}

/* A log that is not a journal log (damaged header, another program's file) fails the open
 * naming it, and is left as it was for an operator: never read as an empty log. */
static void record_file_header_damage_fails_the_open(void **state)
{
    (void)state;
    char dir[64];
    make_tmpdir(dir, sizeof dir);
    gs_journal *j = gs_journal_open(dir);
    commit(j, ID_A, "accepted", 1, 0, 1000, 1);
    gs_journal_destroy(&j);
    char p[600];
    snprintf(p, sizeof p, "%s/events.log", dir);
    off_t size = file_size(dir, "events.log");
    int fd = open(p, O_WRONLY);
    assert_int_equal(pwrite(fd, "V", 1, 9), 1); /* the version */
    close(fd);
    gs_error_clear();
    assert_null(gs_journal_open(dir));
    assert_non_null(strstr(gs_error_get(), "events.log"));
    assert_non_null(strstr(gs_error_get(), "damaged"));
    assert_int_equal(file_size(dir, "events.log"), size);

    write_file(dir, "events.log", "some text that is not a journal\n", 32);
    assert_null(gs_journal_open(dir));
    assert_non_null(strstr(gs_error_get(), "events.log"));
    assert_int_equal(file_size(dir, "events.log"), 32);
    remove_tree(dir);
}

static void bad_arguments_are_errors(void **state)
{
    (void)state;
    char dir[64];
    make_tmpdir(dir, sizeof dir);
    gs_journal *j = gs_journal_open(dir);
    json_t *r = rec("accepted", 1);
    assert_int_equal(gs_journal_commit(j, "NOTHEX0000000000", r, 0, 0, "", 0, NULL), -1);
    assert_int_equal(gs_journal_commit(j, NULL, r, 0, 0, "", 0, NULL), -1);
    assert_int_equal(gs_journal_put_slide(j, "short", r, 0, 0), -1);
    assert_int_equal(gs_journal_last_seq(j), 0);
    json_decref(r);
    gs_journal_destroy(&j);
    remove_tree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(round_trip),
        cmocka_unit_test(torn_last_record_is_dropped),
        cmocka_unit_test(corrupt_middle_record_keeps_later_ones),
        cmocka_unit_test(log_newer_than_slide_file_wins),
        cmocka_unit_test(garbage_files_are_skipped_with_warnings),
        cmocka_unit_test(unwritable_dir_is_a_clear_error),
        cmocka_unit_test(retention_drops_old_terminal_slides_and_keeps_seq),
        cmocka_unit_test(random_damage_keeps_every_intact_record),
        cmocka_unit_test(journal_of_the_previous_release_replays),
        cmocka_unit_test(record_file_header_damage_fails_the_open),
        cmocka_unit_test(bad_arguments_are_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
