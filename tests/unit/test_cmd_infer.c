/*
 * `gastroscreen infer` error paths, called in-process through gs_cmd_infer(): usage errors
 * exit 2; a missing or corrupt bundle, a missing tile or a tile of the wrong size exit 1 with
 * a message naming the file. (The successful path is exercised by tests/parity.)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon/cli/commands.h"
#include "ops/error.h"
#include "stages/slide/png_io.h"

static int run(int argc, const char **argv)
{
    fflush(stdout);
    return gs_cmd_infer(argc, (char **)argv);
}

static void test_usage_errors(void **state)
{
    (void)state;
    const char *no_model[] = {"infer", "tile.png"};
    assert_int_equal(run(2, no_model), 2);
    const char *no_input[] = {"infer", "--model", "b.safetensors"};
    assert_int_equal(run(3, no_input), 2);
    const char *slide_no_xy[] = {"infer", "--model", "b.safetensors", "slide.svs"};
    assert_int_equal(run(4, slide_no_xy), 2);
    const char *png_with_xy[] = {"infer", "--model", "b.safetensors", "t.png",
                                 "--x",   "1",       "--y",           "2"};
    assert_int_equal(run(8, png_with_xy), 2);
    const char *bad_x[] = {"infer", "--model", "b.safetensors", "s.svs", "--x", "1z", "--y", "2"};
    assert_int_equal(run(8, bad_x), 2);
}

static void test_missing_and_corrupt_bundle(void **state)
{
    (void)state;
    /* A valid tile, so that the bundle is what fails. */
    char tile[128], path[128];
    snprintf(tile, sizeof tile, "/tmp/gs_test_infer_t_%d.png", (int)getpid());
    uint8_t px[64 * 64 * 3];
    memset(px, 90, sizeof px);
    assert_int_equal(gs_png_write(tile, px, 64, 64, 64 * 3, 3), 0);
    const char *missing[] = {"infer", "--model", "/nonexistent/bundle.safetensors", tile};
    assert_int_equal(run(4, missing), 1);
    assert_non_null(strstr(gs_error_get(), "/nonexistent/bundle.safetensors"));

    snprintf(path, sizeof path, "/tmp/gs_test_infer_%d.safetensors", (int)getpid());
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs("abcde", f);
    fclose(f);
    const char *corrupt[] = {"infer", "--model", path, tile};
    assert_int_equal(run(4, corrupt), 1);
    assert_non_null(strstr(gs_error_get(), path));
    assert_non_null(strstr(gs_error_get(), "shorter than"));
    unlink(path);
    unlink(tile);
}

static void test_tile_errors(void **state)
{
    (void)state;
    const char *missing[] = {"infer", "--model", "b.safetensors", "/nonexistent/tile.png"};
    assert_int_equal(run(4, missing), 1);
    assert_non_null(strstr(gs_error_get(), "/nonexistent/tile.png"));

    char a[128], b[128];
    snprintf(a, sizeof a, "/tmp/gs_test_infer_a_%d.png", (int)getpid());
    snprintf(b, sizeof b, "/tmp/gs_test_infer_b_%d.png", (int)getpid());
    uint8_t px[64 * 64 * 3];
    memset(px, 200, sizeof px);
    assert_int_equal(gs_png_write(a, px, 48, 64, 48 * 3, 3), 0);
    const char *odd[] = {"infer", "--model", "b.safetensors", a};
    assert_int_equal(run(4, odd), 1);
    assert_non_null(strstr(gs_error_get(), a));
    assert_non_null(strstr(gs_error_get(), "multiples of 32"));

    assert_int_equal(gs_png_write(a, px, 64, 64, 64 * 3, 3), 0);
    assert_int_equal(gs_png_write(b, px, 32, 64, 32 * 3, 3), 0);
    const char *mixed[] = {"infer", "--model", "b.safetensors", a, b};
    assert_int_equal(run(5, mixed), 1);
    assert_non_null(strstr(gs_error_get(), b));
    assert_non_null(strstr(gs_error_get(), "differs"));
    unlink(a);
    unlink(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_usage_errors),
        cmocka_unit_test(test_missing_and_corrupt_bundle),
        cmocka_unit_test(test_tile_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
