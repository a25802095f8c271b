/*
 * Tests of model/weights: the safetensors reader. The files come from
 * tests/tools/safetensors_writer.py (stdlib-only Python), run once by the group setup into
 * $GS_BUILD_DIR/test_weights/; the values it writes are repeated here as C literals and read
 * back bit for bit.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/weights.h"
#include "ops/error.h"

static char cases_dir[4096];

static int generate_cases(void **state)
{
    const char *build = getenv("GS_BUILD_DIR");
    const char *source = getenv("GS_SOURCE_DIR");
    if (!build || !source) {
        fprintf(stderr, "test_weights: GS_BUILD_DIR and GS_SOURCE_DIR must be set (ctest "
                        "sets them)\n");
        return -1;
    }
    snprintf(cases_dir, sizeof cases_dir, "%s/test_weights", build);
    char cmd[3 * 4096];
    snprintf(cmd, sizeof cmd,
             "rm -rf '%s' && /usr/bin/python3 '%s/tests/tools/safetensors_writer.py' cases '%s'",
             cases_dir, source, cases_dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "test_weights: failed: %s\n", cmd);
        return -1;
    }
    return 0;
}

static const char *case_path(const char *name)
{
    static char path[4096 + 256];
    snprintf(path, sizeof path, "%s/%s", cases_dir, name);
    return path;
}

static void *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    assert_true(n >= 0);
    rewind(f);
    void *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* Bit-exact float comparison (so -0.0 != 0.0), except that any NaN matches any NaN. */
static void assert_same_float(float got, float want, const char *what, size_t i)
{
    if (isnan(want)) {
        if (!isnan(got))
            fail_msg("%s[%zu]: got %a, want NaN", what, i, (double)got);
        return;
    }
    if (memcmp(&got, &want, sizeof got) != 0)
        fail_msg("%s[%zu]: got %a, want %a", what, i, (double)got, (double)want);
}

/* The values safetensors_writer.py puts in valid_mixed / valid_unaligned. */
static const float f32_values[] = {1.5f, -2.25f, 0x1p-149f, FLT_MAX, -0.0f, INFINITY, 0.1f};
static const float f16_values[] = {1.0f,  -2.5f,    65504.0f,  0x1p-24f, 0x1p-14f, 1023 * 0x1p-24f,
                                   -0.0f, INFINITY, -INFINITY, NAN};
static const float bf16_values[] = {1.0f,  -3.140625f, 0x1p-133f, 0x1.fep127f,
                                    -0.0f, INFINITY,   0x1p-126f};

typedef struct {
    const char *name;
    gs_dtype dtype;
    int ndim;
    int64_t shape[2];
    size_t nbytes;
} expected_tensor;

/* In file (data) order, which is not the alphabetical header order. */
static const expected_tensor mixed_tensors[] = {
    {"multitask.cls.fc.weight", GS_DTYPE_F32, 2, {1, 7}, 28},
    {"blur.fc.bias", GS_DTYPE_F32, 0, {0, 0}, 4},
    {"foreground.logit.weight", GS_DTYPE_F16, 2, {2, 5}, 20},
    {"foreground.empty", GS_DTYPE_F32, 2, {0, 3}, 0},
    {"screener.fc.weight", GS_DTYPE_BF16, 1, {7, 0}, 14},
};

static void check_mixed(const char *file)
{
    gs_weights *w = gs_weights_open(case_path(file));
    if (!w)
        fail_msg("%s", gs_error_get());
    size_t n = sizeof mixed_tensors / sizeof mixed_tensors[0];
    assert_int_equal(gs_weights_count(w), n);
    const uint8_t *prev_end = NULL;
    for (size_t i = 0; i < n; i++) {
        const expected_tensor *e = &mixed_tensors[i];
        const gs_tensor *t = gs_weights_at(w, i);
        assert_string_equal(t->name, e->name);
        assert_int_equal(t->dtype, e->dtype);
        assert_int_equal(t->ndim, e->ndim);
        for (int d = 0; d < e->ndim; d++)
            assert_int_equal(t->shape[d], e->shape[d]);
        assert_int_equal(t->nbytes, e->nbytes);
        assert_ptr_equal(gs_weights_find(w, e->name), t);
        /* File order means the data follow each other. */
        if (prev_end)
            assert_ptr_equal(t->data, prev_end);
        prev_end = (const uint8_t *)t->data + t->nbytes;
    }

    float f32[7], f16[10], bf16[7], scalar = 0, unused = 42;
    const int64_t s_f32[] = {1, 7}, s_f16[] = {2, 5}, s_bf16[] = {7}, s_empty[] = {0, 3};
    assert_int_equal(gs_weights_get_f32(w, "multitask.cls.fc.weight", 2, s_f32, f32), 0);
    assert_int_equal(gs_weights_get_f32(w, "foreground.logit.weight", 2, s_f16, f16), 0);
    assert_int_equal(gs_weights_get_f32(w, "screener.fc.weight", 1, s_bf16, bf16), 0);
    assert_int_equal(gs_weights_get_f32(w, "blur.fc.bias", 0, NULL, &scalar), 0);
    assert_int_equal(gs_weights_get_f32(w, "foreground.empty", 2, s_empty, &unused), 0);
    for (size_t i = 0; i < 7; i++)
        assert_same_float(f32[i], f32_values[i], "F32", i);
    for (size_t i = 0; i < 10; i++)
        assert_same_float(f16[i], f16_values[i], "F16", i);
    for (size_t i = 0; i < 7; i++)
        assert_same_float(bf16[i], bf16_values[i], "BF16", i);
    assert_same_float(scalar, 0.25f, "scalar", 0);
    assert_same_float(unused, 42, "empty tensor wrote nothing", 0);
    gs_weights_destroy(&w);
    assert_null(w);
}

static void valid_file_reads_back_exactly(void **state)
{
    check_mixed("valid_mixed.safetensors");
}

static void unaligned_data_reads_back_exactly(void **state)
{
    check_mixed("valid_unaligned.safetensors");
    /* Make sure the file really is unaligned, or the test above proves nothing. */
    gs_weights *w = gs_weights_open(case_path("valid_unaligned.safetensors"));
    assert_non_null(w);
    assert_int_not_equal((uintptr_t)gs_weights_find(w, "multitask.cls.fc.weight")->data % 4, 0);
    gs_weights_destroy(&w);
}

static void metadata_is_read(void **state)
{
    gs_weights *w = gs_weights_open(case_path("valid_mixed.safetensors"));
    assert_non_null(w);
    assert_string_equal(gs_weights_meta(w, "format"), "gastroscreen-bundle");
    assert_string_equal(gs_weights_meta(w, "input_mean"), "0.485,0.456,0.406");
    assert_string_equal(gs_weights_meta(w, "threshold.screen"), "0.74");
    assert_string_equal(gs_weights_meta(w, "provenance.blur"), "untrained");
    assert_null(gs_weights_meta(w, "no.such.key"));
    assert_int_equal(gs_weights_meta_count(w), 19);
    const char *key, *value;
    gs_weights_meta_at(w, 0, &key, &value);
    assert_string_equal(key, "format");
    assert_string_equal(value, "gastroscreen-bundle");
    gs_weights_meta_at(w, 18, &key, &value);
    assert_string_equal(key, "creator");
    assert_int_equal(gs_weights_check_bundle(w), 0);
    gs_weights_destroy(&w);

    w = gs_weights_open(case_path("valid_no_metadata.safetensors"));
    assert_non_null(w);
    assert_int_equal(gs_weights_meta_count(w), 0);
    assert_null(gs_weights_meta(w, "format"));
    assert_int_equal(gs_weights_check_bundle(w), -1);
    assert_non_null(strstr(gs_error_get(), "metadata key format is missing"));
    gs_weights_destroy(&w);

    w = gs_weights_open(case_path("valid_other_version.safetensors"));
    assert_non_null(w);
    assert_int_equal(gs_weights_check_bundle(w), -1);
    assert_non_null(strstr(gs_error_get(), "unsupported format_version \"2\""));
    gs_weights_destroy(&w);
}

static void find_and_prefix(void **state)
{
    gs_weights *w = gs_weights_open(case_path("valid_mixed.safetensors"));
    assert_non_null(w);
    gs_error_set("untouched");
    assert_null(gs_weights_find(w, "multitask.cls.fc"));
    assert_null(gs_weights_find(w, "multitask.cls.fc.weight.x"));
    assert_null(gs_weights_find(w, ""));
    assert_string_equal(gs_error_get(), "untouched");
    const gs_tensor *t = gs_weights_find(w, "foreground.empty");
    assert_non_null(t);
    assert_string_equal(t->name, "foreground.empty");
    assert_int_equal(gs_weights_count_prefix(w, "foreground."), 2);
    assert_int_equal(gs_weights_count_prefix(w, "multitask."), 1);
    assert_int_equal(gs_weights_count_prefix(w, "screener."), 1);
    assert_int_equal(gs_weights_count_prefix(w, "blurry."), 0);
    assert_int_equal(gs_weights_count_prefix(w, ""), 5);
    gs_weights_destroy(&w);

    w = gs_weights_open(case_path("valid_empty.safetensors"));
    if (!w)
        fail_msg("%s", gs_error_get());
    assert_int_equal(gs_weights_count(w), 0);
    assert_null(gs_weights_find(w, "a"));
    assert_int_equal(gs_weights_count_prefix(w, "blur."), 0);
    gs_weights_destroy(&w);
}

static void shape_mismatch_and_missing_messages(void **state)
{
    const char *path = case_path("valid_mixed.safetensors");
    char want[8192];
    gs_weights *w = gs_weights_open(path);
    assert_non_null(w);
    float dst[16];
    for (size_t i = 0; i < 16; i++)
        dst[i] = -7.0f;

    const int64_t wrong_dim[] = {1, 8};
    assert_int_equal(gs_weights_get_f32(w, "multitask.cls.fc.weight", 2, wrong_dim, dst), -1);
    snprintf(want, sizeof want,
             "%s: tensor multitask.cls.fc.weight: shape [1,7] but expected [1,8]", path);
    assert_string_equal(gs_error_get(), want);

    const int64_t wrong_rank[] = {7};
    assert_int_equal(gs_weights_get_f32(w, "multitask.cls.fc.weight", 1, wrong_rank, dst), -1);
    snprintf(want, sizeof want, "%s: tensor multitask.cls.fc.weight: shape [1,7] but expected [7]",
             path);
    assert_string_equal(gs_error_get(), want);

    const int64_t one[] = {1};
    assert_int_equal(gs_weights_get_f32(w, "blur.fc.bias", 1, one, dst), -1);
    snprintf(want, sizeof want, "%s: tensor blur.fc.bias: shape [] but expected [1]", path);
    assert_string_equal(gs_error_get(), want);

    assert_int_equal(gs_weights_get_f32(w, "blur.fc.weight", 1, one, dst), -1);
    snprintf(want, sizeof want, "%s: tensor blur.fc.weight: missing", path);
    assert_string_equal(gs_error_get(), want);

    for (size_t i = 0; i < 16; i++)
        assert_same_float(dst[i], -7.0f, "dst untouched on error", i);
    gs_weights_destroy(&w);
}

/* Each malformed file and a piece of the message it must produce. */
static const struct {
    const char *file;
    const char *message;
} malformed[] = {
    {"bad_empty.safetensors", "file is 0 bytes, shorter than the 8-byte header length"},
    {"bad_short.safetensors", "file is 5 bytes, shorter than the 8-byte header length"},
    {"bad_header_zero.safetensors", "header length is 0"},
    {"bad_header_huge.safetensors", "header length 1099511627776 exceeds the cap"},
    {"bad_header_beyond.safetensors", "header length 1000 runs beyond the end of the file"},
    {"bad_truncated_header.safetensors", "runs beyond the end of the file"},
    {"bad_truncated_data.safetensors",
     "tensor b: data_offsets [8,12] end beyond the data section (10 bytes)"},
    {"bad_json.safetensors", "header is not valid JSON: "},
    {"bad_trailing_json.safetensors", "header is not valid JSON: end of file expected"},
    {"bad_duplicate_key.safetensors", "header is not valid JSON: duplicate object key"},
    {"bad_not_object.safetensors", "header is not a JSON object"},
    {"bad_entry_not_object.safetensors", "tensor a: entry is not an object"},
    {"bad_missing_dtype.safetensors", "tensor t: missing dtype"},
    {"bad_missing_shape.safetensors", "tensor t: missing shape"},
    {"bad_missing_offsets.safetensors", "tensor t: missing data_offsets"},
    {"bad_dtype_i64.safetensors", "tensor t: unknown dtype \"I64\""},
    {"bad_dtype_u8.safetensors", "tensor t: unknown dtype \"U8\""},
    {"bad_dtype_not_string.safetensors", "tensor t: dtype is not a string"},
    {"bad_shape_not_array.safetensors", "tensor t: shape is not an array"},
    {"bad_shape_9_dims.safetensors", "tensor t: shape has 9 dimensions, more than 8"},
    {"bad_shape_negative.safetensors", "tensor t: shape[1] is negative (-1)"},
    {"bad_shape_float.safetensors", "tensor t: shape[0] is not an integer"},
    {"bad_shape_overflow.safetensors",
     "tensor t: shape [2147483648,2147483648,4] of F32 overflows the byte count"},
    {"bad_shape_huge_int.safetensors", "header is not valid JSON: too big integer"},
    {"bad_offsets_not_pair.safetensors", "tensor t: data_offsets is not [begin,end]"},
    {"bad_offsets_not_int.safetensors", "tensor t: data_offsets is not [begin,end]"},
    {"bad_offsets_negative.safetensors", "tensor t: data_offsets [-4,0] has a negative offset"},
    {"bad_begin_gt_end.safetensors", "tensor t: data_offsets [4,0] has begin > end"},
    {"bad_offset_out_of_range.safetensors",
     "tensor t: data_offsets [4,8] end beyond the data section (4 bytes)"},
    {"bad_size_mismatch.safetensors", "hold 4 bytes but shape [2] of F32 needs 8 (size mismatch)"},
    {"bad_overlap.safetensors", "tensors a and b overlap (a ends at 8, b begins at 4)"},
    {"bad_gap_between.safetensors",
     "gap of 4 bytes between tensor a (ends at 4) and tensor b (begins at 8)"},
    {"bad_gap_start.safetensors", "gap of 4 bytes at the start of the data section"},
    {"bad_trailing_data.safetensors", "gap of 2 bytes after the last tensor t"},
    {"bad_data_no_tensors.safetensors", "data section has 4 bytes but no tensors"},
    {"bad_metadata_not_object.safetensors", "__metadata__ is not an object"},
    {"bad_metadata_nonstring.safetensors", "__metadata__ key \"tile_size\": value is not a string"},
    {"bad_empty_name.safetensors", "a tensor has an empty name"},
};

static void assert_rejected(gs_weights *w, const char *name, const char *message)
{
    if (w) {
        gs_weights_destroy(&w);
        fail_msg("%s: accepted, expected \"%s\"", name, message);
    }
    const char *err = gs_error_get();
    size_t nlen = strlen(name);
    if (strncmp(err, name, nlen) != 0 || strncmp(err + nlen, ": ", 2) != 0)
        fail_msg("%s: message does not start with the file name: \"%s\"", name, err);
    if (!strstr(err, message))
        fail_msg("%s: message \"%s\" lacks \"%s\"", name, err, message);
}

static void malformed_files_are_rejected_with_their_message(void **state)
{
    for (size_t i = 0; i < sizeof malformed / sizeof malformed[0]; i++) {
        const char *path = case_path(malformed[i].file);
        gs_error_clear();
        assert_rejected(gs_weights_open(path), path, malformed[i].message);

        size_t len;
        void *buf = slurp(path, &len);
        gs_error_clear();
        assert_rejected(gs_weights_open_buffer(buf, len, malformed[i].file), malformed[i].file,
                        malformed[i].message);
        free(buf);
    }
}

/* Every bad_* file the writer makes must be in the table above, so that a case added to the
   writer cannot go unchecked. */
static void every_malformed_file_is_checked(void **state)
{
    DIR *d = opendir(cases_dir);
    assert_non_null(d);
    size_t seen = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strncmp(de->d_name, "bad_", 4) != 0)
            continue;
        seen++;
        bool found = false;
        for (size_t i = 0; i < sizeof malformed / sizeof malformed[0]; i++)
            found = found || strcmp(malformed[i].file, de->d_name) == 0;
        if (!found)
            fail_msg("%s has no expected message in test_weights.c", de->d_name);
    }
    closedir(d);
    assert_int_equal(seen, sizeof malformed / sizeof malformed[0]);
}

static void missing_file_and_directory(void **state)
{
    const char *path = case_path("no_such_file.safetensors");
    assert_null(gs_weights_open(path));
    assert_non_null(strstr(gs_error_get(), path));
    assert_non_null(strstr(gs_error_get(), "cannot open: No such file or directory"));

    assert_null(gs_weights_open(cases_dir));
    assert_non_null(strstr(gs_error_get(), "not a regular file"));
}

static void buffer_is_copied(void **state)
{
    size_t len;
    void *buf = slurp(case_path("valid_mixed.safetensors"), &len);
    gs_weights *w = gs_weights_open_buffer(buf, len, "copied");
    assert_non_null(w);
    memset(buf, 0xff, len);
    free(buf);
    float scalar = 0;
    assert_int_equal(gs_weights_get_f32(w, "blur.fc.bias", 0, NULL, &scalar), 0);
    assert_same_float(scalar, 0.25f, "after freeing the caller's buffer", 0);
    assert_string_equal(gs_weights_meta(w, "tile_size"), "512");
    gs_weights_destroy(&w);
    assert_null(w);
    gs_weights_destroy(&w);
    gs_weights_destroy(NULL);
}

/* Reference decodings written differently from the reader: from the definition of the
   formats with ldexp, over every one of the 65536 bit patterns. */
static float half_reference(uint16_t h)
{
    int sign = h >> 15, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    float mag;
    if (exp == 0x1f)
        mag = mant ? NAN : INFINITY;
    else if (exp == 0)
        mag = ldexpf((float)mant, -24);
    else
        mag = ldexpf((float)(mant + 1024), exp - 25);
    return sign ? -mag : mag;
}

static float bf16_reference(uint16_t h)
{
    int sign = h >> 15, exp = (h >> 7) & 0xff, mant = h & 0x7f;
    float mag;
    if (exp == 0xff)
        mag = mant ? NAN : INFINITY;
    else if (exp == 0)
        mag = ldexpf((float)mant, -133);
    else
        mag = ldexpf((float)(mant + 128), exp - 134);
    return sign ? -mag : mag;
}

static void every_half_and_bfloat_converts_exactly(void **state)
{
    uint8_t bytes[2 * 65536];
    for (unsigned i = 0; i < 65536; i++) {
        bytes[2 * i] = (uint8_t)(i & 0xff);
        bytes[2 * i + 1] = (uint8_t)(i >> 8);
    }
    float *out = malloc(65536 * sizeof *out);
    assert_non_null(out);
    gs_weights_to_f32(GS_DTYPE_F16, bytes, 65536, out);
    for (unsigned i = 0; i < 65536; i++)
        assert_same_float(out[i], half_reference((uint16_t)i), "F16", i);
    gs_weights_to_f32(GS_DTYPE_BF16, bytes, 65536, out);
    for (unsigned i = 0; i < 65536; i++)
        assert_same_float(out[i], bf16_reference((uint16_t)i), "BF16", i);
    /* NaN payloads survive widening (quiet bit and payload move up unchanged). */
    const uint8_t half_nan[] = {0x01, 0x7e};
    gs_weights_to_f32(GS_DTYPE_F16, half_nan, 1, out);
    uint32_t bits;
    memcpy(&bits, out, 4);
    assert_int_equal(bits, 0x7fc02000u);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(valid_file_reads_back_exactly),
        cmocka_unit_test(unaligned_data_reads_back_exactly),
        cmocka_unit_test(metadata_is_read),
        cmocka_unit_test(find_and_prefix),
        cmocka_unit_test(shape_mismatch_and_missing_messages),
        cmocka_unit_test(malformed_files_are_rejected_with_their_message),
        cmocka_unit_test(every_malformed_file_is_checked),
        cmocka_unit_test(missing_file_and_directory),
        cmocka_unit_test(buffer_is_copied),
        cmocka_unit_test(every_half_and_bfloat_converts_exactly),
    };
    return cmocka_run_group_tests(tests, generate_cases, NULL);
}
