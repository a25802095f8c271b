/* The journal's defences against what an operator's folder can do to it: a second coordinator
 * on the same folder, a hand-edited slide file, a write path that fails (full, read-only). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon/service/journal.h"
#include "ops/error.h"

static const char *ID_A = "00000000000000aa";
static const char *ID_B = "00000000000000bb";

static void make_tmpdir(char *buf, size_t n)
{
    snprintf(buf, n, "/tmp/gs_test_journal_faults_XXXXXX");
    assert_non_null(mkdtemp(buf));
}

static void remove_tree(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static int warned(const gs_journal *j, const char *needle)
{
    for (size_t i = 0; i < gs_journal_warning_count(j); i++)
        if (strstr(gs_journal_warning(j, i), needle))
            return 1;
    return 0;
}

static void commit_rec(gs_journal *j, const char *id, double score)
{
    json_t *r = json_pack("{s:s, s:f}", "state", "DONE", "score", score);
    assert_int_equal(gs_journal_commit(j, id, r, 1, 1000, "ev", 2, NULL), 0);
    json_decref(r);
}

static char *read_text(const char *dir, const char *name)
{
    char p[600];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "rb");
    assert_non_null(f);
    char *buf = calloc(1, 1 << 16);
    size_t n = fread(buf, 1, (1 << 16) - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

static void write_text(const char *dir, const char *name, const char *text)
{
    char p[600];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* Replaces the first occurrence of from by to (same length or shorter) in place. */
static void edit(char *text, const char *from, const char *to)
{
    char *at = strstr(text, from);
    assert_non_null(at);
    size_t fl = strlen(from), tl = strlen(to);
    memmove(at + tl, at + fl, strlen(at + fl) + 1);
    memcpy(at, to, tl);
}

/* A second journal on a locked folder is refused, naming the folder and the holder's pid;
 * once the first is closed, the folder opens again. */
static void second_open_is_refused_naming_the_holder(void **state)
{
    (void)state;
    char dir[256];
    make_tmpdir(dir, sizeof dir);
    gs_journal *a = gs_journal_open(dir);
    assert_non_null(a);
    commit_rec(a, ID_A, 0.1);
    gs_journal *b = gs_journal_open(dir);
    assert_null(b);
    assert_non_null(strstr(gs_error_get(), dir));
    assert_non_null(strstr(gs_error_get(), "in use by another coordinator"));
    char pid[32];
    snprintf(pid, sizeof pid, "pid %ld", (long)getpid());
    assert_non_null(strstr(gs_error_get(), pid));
    /* The refused open wrote nothing: the first journal goes on with its numbers. */
    commit_rec(a, ID_B, 0.2);
    assert_int_equal(gs_journal_last_seq(a), 2);
    gs_journal_destroy(&a);
    b = gs_journal_open(dir);
    assert_non_null(b);
    assert_int_equal(gs_journal_last_seq(b), 2);
    gs_journal_destroy(&b);
    remove_tree(dir);
}

/* The lock belongs to the process: a child holding it blocks us; its death frees it. */
static void lock_of_a_dead_process_is_free(void **state)
{
    (void)state;
    char dir[256];
    make_tmpdir(dir, sizeof dir);
    int go[2], ready[2];
    assert_int_equal(pipe(go), 0);
    assert_int_equal(pipe(ready), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        gs_journal *c = gs_journal_open(dir);
        char x = c ? 'y' : 'n';
        if (write(ready[1], &x, 1) != 1 || read(go[0], &x, 1) != 1)
            _exit(2);
        _exit(0); /* dies holding it: no destroy */
    }
    char x = 0;
    assert_int_equal(read(ready[0], &x, 1), 1);
    assert_int_equal(x, 'y');
    assert_null(gs_journal_open(dir));
    char pid[32];
    snprintf(pid, sizeof pid, "pid %ld", (long)child);
    assert_non_null(strstr(gs_error_get(), pid));
    assert_int_equal(write(go[1], "g", 1), 1);
    int st = 0;
    assert_int_equal(waitpid(child, &st, 0), child);
    gs_journal *j = gs_journal_open(dir);
    assert_non_null(j);
    gs_journal_destroy(&j);
    close(go[0]);
    close(go[1]);
    close(ready[0]);
    close(ready[1]);
    remove_tree(dir);
}

/* A hand-edited slide file fails its checksum: reported by name, moved to quarantine/ and
 * not served; the log's copy of the record comes back in its place; other slides stay. */
static void edited_slide_file_is_quarantined(void **state)
{
    (void)state;
    char dir[256];
    make_tmpdir(dir, sizeof dir);
    gs_journal *j = gs_journal_open(dir);
    assert_non_null(j);
    commit_rec(j, ID_A, 0.125);
    commit_rec(j, ID_A, 0.25);
    commit_rec(j, ID_B, 0.5);
    gs_journal_destroy(&j);

    char name[64];
    snprintf(name, sizeof name, "%s.json", ID_A);
    char *text = read_text(dir, name);
    assert_non_null(strstr(text, "\"crc32\""));
    edit(text, "0.25", "0.95");
    write_text(dir, name, text);
    free(text);

    j = gs_journal_open(dir);
    assert_non_null(j);
    assert_true(warned(j, "checksum mismatch"));
    assert_true(warned(j, name));
    char q[600];
    snprintf(q, sizeof q, "%s/quarantine/%s", dir, name);
    struct stat st;
    assert_int_equal(stat(q, &st), 0);
    /* The log had the slide's record: it is what is served, never the edited 0.95. */
    const json_t *r = gs_journal_slide_get(j, ID_A);
    assert_non_null(r);
    assert_true(json_real_value(json_object_get(r, "score")) == 0.25);
    /* Restored from the newest of its two log records: one file write, one line. */
    size_t restored = 0;
    for (size_t i = 0; i < gs_journal_warning_count(j); i++)
        restored += strstr(gs_journal_warning(j, i), "restored from events.log") != NULL;
    assert_int_equal(restored, 1);
    assert_true(warned(j, "restored from events.log seq 2"));
    r = gs_journal_slide_get(j, ID_B);
    assert_non_null(r);
    assert_true(json_real_value(json_object_get(r, "score")) == 0.5);
    gs_journal_destroy(&j);

    /* With the log gone (compacted, lost), the edited file's slide is simply not served. */
    text = read_text(dir, name);
    edit(text, "0.25", "0.95");
    write_text(dir, name, text);
    free(text);
    char log[600];
    snprintf(log, sizeof log, "%s/events.log", dir);
    assert_int_equal(unlink(log), 0);
    j = gs_journal_open(dir);
    assert_non_null(j);
    assert_true(warned(j, "checksum mismatch"));
    assert_null(gs_journal_slide_get(j, ID_A));
    assert_non_null(gs_journal_slide_get(j, ID_B));
    gs_journal_destroy(&j);
    remove_tree(dir);
}

/* A slide file of an earlier release has no checksum: it loads, with one warning for all. */
static void slide_file_without_checksum_loads_with_one_warning(void **state)
{
    (void)state;
    char dir[256];
    make_tmpdir(dir, sizeof dir);
    const char *ids[2] = {ID_A, ID_B};
    for (int i = 0; i < 2; i++) {
        char name[64], text[256];
        snprintf(name, sizeof name, "%s.json", ids[i]);
        snprintf(text, sizeof text,
                 "{\"slide_id\":\"%s\",\"seq\":%d,\"terminal\":true,\"time_unix_ms\":5,"
                 "\"record\":{\"state\":\"DONE\"}}",
                 ids[i], i + 1);
        write_text(dir, name, text);
    }
    gs_journal *j = gs_journal_open(dir);
    assert_non_null(j);
    assert_non_null(gs_journal_slide_get(j, ID_A));
    assert_non_null(gs_journal_slide_get(j, ID_B));
    size_t n = 0;
    for (size_t i = 0; i < gs_journal_warning_count(j); i++)
        n += strstr(gs_journal_warning(j, i), "carry no checksum") != NULL;
    assert_int_equal(n, 1);
    assert_true(warned(j, "2 slide files"));
    gs_journal_destroy(&j);
    remove_tree(dir);
}

static int fault_errno;
static int fault_calls;

static int fault(void *ud, const char *dir, const char *what)
{
    (void)ud;
    (void)dir;
    (void)what;
    fault_calls++;
    return fault_errno;
}

/* A write refused by the system (here injected) fails the call, leaves the journal as it
 * was, and says why in gs_journal_write_errno(); the probe tells when writes work again. */
static void failed_write_changes_nothing_and_is_told(void **state)
{
    (void)state;
    char dir[256];
    make_tmpdir(dir, sizeof dir);
    gs_journal *j = gs_journal_open(dir);
    assert_non_null(j);
    commit_rec(j, ID_A, 0.1);
    gs_journal_set_fault_hook(fault, NULL);
    const int errs[] = {ENOSPC, EROFS, EDQUOT, EIO};
    for (size_t k = 0; k < sizeof errs / sizeof errs[0]; k++) {
        fault_errno = errs[k];
        json_t *r = json_pack("{s:s}", "state", "X");
        assert_int_equal(gs_journal_commit(j, ID_B, r, 0, 1, "e", 1, NULL), -1);
        assert_non_null(strstr(gs_error_get(), strerror(errs[k])));
        assert_int_equal(gs_journal_write_errno(j), errs[k]);
        assert_true(gs_journal_errno_is_storage(gs_journal_write_errno(j)));
        assert_int_equal(gs_journal_put_slide(j, ID_A, r, 0, 1), -1);
        json_decref(r);
        assert_int_equal(gs_journal_probe(j), -1);
        assert_int_equal(gs_journal_last_seq(j), 1);
        assert_null(gs_journal_slide_get(j, ID_B));
    }
    assert_false(gs_journal_errno_is_storage(EINVAL));
    fault_errno = 0;
    assert_int_equal(gs_journal_probe(j), 0);
    assert_int_equal(gs_journal_write_errno(j), 0);
    commit_rec(j, ID_B, 0.2);
    assert_int_equal(gs_journal_last_seq(j), 2);
    assert_true(fault_calls > 0);
    gs_journal_set_fault_hook(NULL, NULL);
    gs_journal_destroy(&j);
    /* Nothing of the refused writes reached the disk. */
    j = gs_journal_open(dir);
    assert_non_null(j);
    assert_int_equal(gs_journal_last_seq(j), 2);
    assert_true(gs_journal_has_event(j, 1));
    assert_true(gs_journal_has_event(j, 2));
    assert_false(gs_journal_has_event(j, 3));
    gs_journal_destroy(&j);
    remove_tree(dir);
}

/* A real read-only folder (not for root, whom permissions do not stop): the slide file
 * cannot be written, the commit fails with EACCES and its log record is cut off again. */
static void read_only_folder_fails_commits_cleanly(void **state)
{
    (void)state;
    if (geteuid() == 0) {
        fprintf(stderr, "read_only_folder_fails_commits_cleanly: skipped: running as root, "
                        "whom folder permissions do not stop\n");
        skip();
    }
    char dir[256];
    make_tmpdir(dir, sizeof dir);
    gs_journal *j = gs_journal_open(dir);
    assert_non_null(j);
    commit_rec(j, ID_A, 0.1);
    assert_int_equal(chmod(dir, 0500), 0);
    json_t *r = json_pack("{s:s}", "state", "X");
    assert_int_equal(gs_journal_commit(j, ID_B, r, 0, 1, "e", 1, NULL), -1);
    assert_true(gs_journal_errno_is_storage(gs_journal_write_errno(j)));
    assert_int_equal(gs_journal_probe(j), -1);
    assert_int_equal(chmod(dir, 0750), 0);
    assert_int_equal(gs_journal_probe(j), 0);
    assert_int_equal(gs_journal_commit(j, ID_B, r, 0, 1, "e", 1, NULL), 0);
    json_decref(r);
    assert_int_equal(gs_journal_last_seq(j), 2);
    gs_journal_destroy(&j);
    remove_tree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(second_open_is_refused_naming_the_holder),
        cmocka_unit_test(lock_of_a_dead_process_is_free),
        cmocka_unit_test(edited_slide_file_is_quarantined),
        cmocka_unit_test(slide_file_without_checksum_loads_with_one_warning),
        cmocka_unit_test(failed_write_changes_nothing_and_is_told),
        cmocka_unit_test(read_only_folder_fails_commits_cleanly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
