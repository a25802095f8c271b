#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stages/slide/uuid5.h"

static void hex(const uint8_t *d, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

/* The four test vectors of RFC 3174 §7.3 (the fourth is 80 bytes repeated 10 times). */
static void sha1_rfc3174_vectors(void **state)
{
    (void)state;
    uint8_t d[20];
    char h[41];
    gs_sha1("abc", 3, d);
    hex(d, 20, h);
    assert_string_equal(h, "a9993e364706816aba3e25717850c26c9cd0d89d");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    gs_sha1(two, strlen(two), d);
    hex(d, 20, h);
    assert_string_equal(h, "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
    char *million = malloc(1000000);
    assert_non_null(million);
    memset(million, 'a', 1000000);
    gs_sha1(million, 1000000, d);
    free(million);
    hex(d, 20, h);
    assert_string_equal(h, "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
    char four[801] = "";
    for (int i = 0; i < 10; i++)
        strcat(four, "0123456701234567012345670123456701234567012345670123456701234567");
    gs_sha1(four, 640, d);
    hex(d, 20, h);
    assert_string_equal(h, "dea356a2cddd90c7a7ecedc5ebb563934f460452");
    /* Empty input and the 55/56/64-byte edges where the padding spills into a second block
     * (values from Python's hashlib). */
    gs_sha1("", 0, d);
    hex(d, 20, h);
    assert_string_equal(h, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    char a64[65];
    memset(a64, 'a', 64);
    gs_sha1(a64, 55, d);
    hex(d, 20, h);
    assert_string_equal(h, "c1c8bbdc22796e28c0e15163d20899b65621d65a");
    gs_sha1(a64, 56, d);
    hex(d, 20, h);
    assert_string_equal(h, "c2db330f6083854c99d4b5bfb6e8f29f201be699");
    gs_sha1(a64, 64, d);
    hex(d, 20, h);
    assert_string_equal(h, "0098ba824b5c16427bd7a1122a5a442a25ec644d");
}

/* Known version-5 UUIDs (Python's uuid.uuid5): RFC 4122's DNS namespace, and ours. */
static void uuid5_known_values(void **state)
{
    (void)state;
    char id[GS_UUID_STR];
    assert_int_equal(gs_uuid5("6ba7b810-9dad-11d1-80b4-00c04fd430c8", "python.org", id), 0);
    assert_string_equal(id, "886313e1-3b8a-5372-9b90-0c9aee199e5d");
    assert_int_equal(gs_uuid5("6BA7B810-9DAD-11D1-80B4-00C04FD430C8", "python.org", id), 0);
    assert_string_equal(id, "886313e1-3b8a-5372-9b90-0c9aee199e5d");
    assert_int_equal(gs_uuid5(GS_UUID5_NAMESPACE, "0123456789abcdef/region/1", id), 0);
    assert_string_equal(id, "250204be-bba8-56f1-893f-d9a423dc6a57");
}

static void uuid5_bad_namespace(void **state)
{
    (void)state;
    char id[GS_UUID_STR];
    assert_int_equal(gs_uuid5("6ba7b810-9dad-11d1-80b4-00c04fd430c", "x", id), -1);
    assert_int_equal(gs_uuid5("6ba7b810x9dad-11d1-80b4-00c04fd430c8", "x", id), -1);
    assert_int_equal(gs_uuid5("6ba7b810-9dad-11d1-80b4-00c04fd430cg", "x", id), -1);
    assert_int_equal(gs_uuid5(NULL, "x", id), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sha1_rfc3174_vectors),
        cmocka_unit_test(uuid5_known_values),
        cmocka_unit_test(uuid5_bad_namespace),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
