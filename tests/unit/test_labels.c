/*
 * test_labels: LABELS.csv as daemon/cli/labels reads it (columns by name, RFC 4180 quoting,
 * paths relative to the CSV's folder, the annotation fallback, errors naming file and line)
 * and the CSV field writer round-tripping through the reader.
 */
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

#include "daemon/cli/labels.h"
#include "ops/error.h"

static char dir[64];

static const char *write_csv(const char *name, const char *text)
{
    static char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/gs_test_labels_XXXXXX");
    assert_non_null(mkdtemp(dir));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void reads_columns_quotes_and_paths(void **state)
{
    (void)state;
    char ann[128];
    snprintf(ann, sizeof ann, "%s/b.geojson", dir);
    fclose(fopen(ann, "w"));
    gs_labels l;
    const char *p = write_csv("l.csv", "patient,extra,label,slide\r\n"
                                       "P1,\"a, \"\"quoted\"\"\nnote\",positive,a.svs\r\n"
                                       "\n"
                                       "P2,,negative,/abs/b.svs\n");
    assert_int_equal(gs_labels_read(p, dir, &l), 0);
    assert_int_equal(l.n, 2);
    char want[128];
    snprintf(want, sizeof want, "%s/a.svs", dir);
    assert_string_equal(l.rows[0].slide, want);
    assert_string_equal(l.rows[0].patient, "P1");
    assert_true(l.rows[0].positive);
    assert_null(l.rows[0].annotation);
    assert_string_equal(l.rows[1].slide, "/abs/b.svs");
    assert_false(l.rows[1].positive);
    /* --annotations DIR: b's stem has a file there, a's has none. */
    assert_string_equal(l.rows[1].annotation, ann);
    assert_true(l.annotations);
    gs_labels_free(&l);
}

static void errors_name_file_and_line(void **state)
{
    (void)state;
    gs_labels l;
    static const struct {
        const char *csv, *msg;
    } bad[] = {
        {"slide,label\na,positive\n", "l.csv:1: the header needs the columns"},
        {"slide,label,patient\na,maybe,P\n", "l.csv:2: label \"maybe\" is neither"},
        {"slide,label,patient\na,positive,P\na,negative,Q\n", "l.csv:3: slide "},
        {"slide,label,patient\n,positive,P\n", "l.csv:2: empty slide path"},
        {"slide,label,patient\n\"a,positive,P\n", "quoted field runs to the end"},
        {"slide,label,patient\n", "no slides below the header"},
        {"", "empty"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *p = write_csv("l.csv", bad[i].csv);
        assert_int_equal(gs_labels_read(p, NULL, &l), -1);
        if (!strstr(gs_error_get(), bad[i].msg))
            fail_msg("case %zu: \"%s\" lacks \"%s\"", i, gs_error_get(), bad[i].msg);
        assert_int_equal(l.n, 0);
    }
}

static void csv_field_round_trips(void **state)
{
    (void)state;
    char q[64];
    assert_int_equal(gs_csv_field("plain", q, sizeof q), 0);
    assert_string_equal(q, "plain");
    assert_int_equal(gs_csv_field("a,\"b\"", q, sizeof q), 0);
    assert_string_equal(q, "\"a,\"\"b\"\"\"");
    assert_int_equal(gs_csv_field("a,\"b\"", q, 9), -1);
    assert_int_equal(gs_csv_field("a,\"b\"", q, 10), 0);
    char csv[256];
    snprintf(csv, sizeof csv, "slide,label,patient\nx.svs,negative,%s\n", q);
    const char *p = write_csv("rt.csv", csv);
    gs_labels l;
    assert_int_equal(gs_labels_read(p, NULL, &l), 0);
    assert_string_equal(l.rows[0].patient, "a,\"b\"");
    gs_labels_free(&l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reads_columns_quotes_and_paths),
        cmocka_unit_test(errors_name_file_and_line),
        cmocka_unit_test(csv_field_round_trips),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
