#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "ops/error.h"

static void set_and_prefix(void **state)
{
    gs_error_clear();
    assert_string_equal(gs_error_get(), "");
    assert_int_equal(gs_error_set("bad %s %d", "marker", 7), -1);
    assert_string_equal(gs_error_get(), "bad marker 7");
    assert_int_equal(gs_error_prefix("%s", "slide.svs"), -1);
    assert_string_equal(gs_error_get(), "slide.svs: bad marker 7");
}

static void long_messages_are_truncated_not_overflowed(void **state)
{
    char big[4000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    gs_error_set("%s", big);
    assert_true(strlen(gs_error_get()) < sizeof big - 1);
    gs_error_prefix("%s", big);
    assert_true(strlen(gs_error_get()) < sizeof big - 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(set_and_prefix),
        cmocka_unit_test(long_messages_are_truncated_not_overflowed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
