/* stages/runtime/log: the journal fields of a line, when stderr counts as the journal's stream, and
 * the plain stderr form outside journald. */
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

#include "stages/runtime/log.h"

static void assert_field(const gs_log_record *r, int i, const char *want)
{
    assert_true(i < r->n);
    assert_int_equal(r->iov[i].iov_len, strlen(want));
    assert_memory_equal(r->iov[i].iov_base, want, strlen(want));
}

static void fields_with_and_without_slide(void **state)
{
    (void)state;
    gs_log_record r;
    assert_int_equal(gs_log_format(&r, "gastroscreen-infer", "infer", "0123456789abcdef",
                                   GS_LOG_INFO, "job 7 of slide 0123456789abcdef failed"),
                     5);
    assert_field(&r, 0, "MESSAGE=job 7 of slide 0123456789abcdef failed");
    assert_field(&r, 1, "PRIORITY=6");
    assert_field(&r, 2, "SYSLOG_IDENTIFIER=gastroscreen-infer");
    assert_field(&r, 3, "STAGE=infer");
    assert_field(&r, 4, "SLIDE_ID=0123456789abcdef");

    /* No slide: no SLIDE_ID field at all (an empty one would match `journalctl SLIDE_ID=`). */
    assert_int_equal(gs_log_format(&r, "gastroscreend", "coordinator", "", GS_LOG_ERR, "x"), 4);
    assert_field(&r, 1, "PRIORITY=3");
    assert_field(&r, 3, "STAGE=coordinator");
    assert_int_equal(gs_log_format(&r, NULL, NULL, NULL, GS_LOG_WARNING, NULL), 4);
    assert_field(&r, 0, "MESSAGE=");
    assert_field(&r, 2, "SYSLOG_IDENTIFIER=");
}

static void long_values_are_cut(void **state)
{
    (void)state;
    static char big[3 * GS_LOG_MESSAGE_MAX];
    memset(big, 'm', sizeof big - 1);
    gs_log_record r;
    assert_int_equal(gs_log_format(&r, big, big, big, GS_LOG_INFO, big), 5);
    assert_int_equal(r.iov[0].iov_len, strlen("MESSAGE=") + GS_LOG_MESSAGE_MAX);
    assert_int_equal(r.iov[2].iov_len, strlen("SYSLOG_IDENTIFIER=") + 127);
    assert_int_equal(r.iov[4].iov_len, strlen("SLIDE_ID=") + 127);
    /* Every field lies inside the record's buffer. */
    for (int i = 0; i < r.n; i++) {
        const char *p = r.iov[i].iov_base;
        assert_true(p >= r.buf && p + r.iov[i].iov_len <= r.buf + sizeof r.buf);
    }
}

static void journal_stream_must_name_stderr(void **state)
{
    (void)state;
    struct stat st;
    assert_int_equal(fstat(STDERR_FILENO, &st), 0);
    char env[64];
    unsetenv("JOURNAL_STREAM");
    assert_int_equal(gs_log_to_journal(), 0);
    snprintf(env, sizeof env, "%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino + 1);
    setenv("JOURNAL_STREAM", env, 1);
    assert_int_equal(gs_log_to_journal(), 0);
    setenv("JOURNAL_STREAM", "garbage", 1);
    assert_int_equal(gs_log_to_journal(), 0);
    snprintf(env, sizeof env, "%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino);
    setenv("JOURNAL_STREAM", env, 1);
    assert_int_equal(gs_log_to_journal(), 1);
    unsetenv("JOURNAL_STREAM");
}

static void plain_line_on_stderr(void **state)
{
    (void)state;
    unsetenv("JOURNAL_STREAM");
    char path[] = "/tmp/gs_test_log_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fd, STDERR_FILENO) >= 0);
    gs_log_linef("gastroscreen-tiler", "tiler", "0123456789abcdef", GS_LOG_INFO, "job %d", 42);
    gs_log_line("gastroscreend", "coordinator", NULL, GS_LOG_INFO, "ready");
    /* A peer's text with a newline cannot start a line of its own. */
    gs_log_line("gastroscreend", "coordinator", NULL, GS_LOG_INFO,
                "worker w\ngastroscreend: score 0.99 refused");
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    char got[512] = "";
    FILE *f = fdopen(fd, "r");
    assert_non_null(f);
    rewind(f);
    size_t n = fread(got, 1, sizeof got - 1, f);
    got[n] = 0;
    fclose(f);
    unlink(path);
    assert_string_equal(got, "gastroscreen-tiler: job 42\ngastroscreend: ready\n"
                             "gastroscreend: worker w\\x0agastroscreend: score 0.99 refused\n");
}

static void control_characters_are_escaped(void **state)
{
    (void)state;
    char out[32];
    assert_int_equal(gs_log_escape(out, sizeof out, "a\r\nb\tc\x7f\x1b[2J"), 26);
    assert_string_equal(out, "a\\x0d\\x0ab\\x09c\\x7f\\x1b[2J");
    /* Cut whole: an escape never ends half-written. */
    assert_int_equal(gs_log_escape(out, 6, "ab\n"), 2);
    assert_string_equal(out, "ab");
    assert_int_equal(gs_log_escape(out, 7, "ab\n"), 6);
    assert_int_equal(gs_log_escape(out, sizeof out, NULL), 0);
    /* UTF-8 passes unchanged. */
    assert_int_equal(gs_log_escape(out, sizeof out, "\xc2\xb5m"), 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fields_with_and_without_slide),
        cmocka_unit_test(long_values_are_cut),
        cmocka_unit_test(journal_stream_must_name_stderr),
        cmocka_unit_test(plain_line_on_stderr),
        cmocka_unit_test(control_characters_are_escaped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
