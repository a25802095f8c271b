#include "stages/slide/uuid5.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nettle/sha1.h>

#include "ops/error.h"

void gs_sha1(const void *data, size_t len, uint8_t digest[20])
{
    struct sha1_ctx c;
    sha1_init(&c);
    sha1_update(&c, len, data);
    sha1_digest(&c, SHA1_DIGEST_SIZE, digest);
}

static int hex_value(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Parses the 8-4-4-4-12 form into 16 bytes in network order. Returns 0 or -1. */
static int parse_uuid(const char *s, uint8_t out[16])
{
    if (strlen(s) != GS_UUID_STR - 1)
        return -1;
    int n = 0;
    for (int i = 0; i < GS_UUID_STR - 1; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return -1;
            continue;
        }
        int hi = hex_value(s[i]), lo = hex_value(s[i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[n++] = (uint8_t)(hi << 4 | lo);
        i++;
    }
    return n == 16 ? 0 : -1;
}

int gs_uuid5(const char *ns, const char *name, char out[GS_UUID_STR])
{
    uint8_t nsb[16], d[20];
    if (!ns || parse_uuid(ns, nsb) < 0)
        return gs_error_set("uuid namespace \"%s\" is not a UUID", ns ? ns : "(null)");
    struct sha1_ctx c;
    sha1_init(&c);
    sha1_update(&c, sizeof nsb, nsb);
    sha1_update(&c, strlen(name), (const uint8_t *)name);
    sha1_digest(&c, sizeof d, d);
    d[6] = (uint8_t)((d[6] & 0x0F) | 0x50); /* version 5 */
    d[8] = (uint8_t)((d[8] & 0x3F) | 0x80); /* RFC 4122 variant */
    static const char hex[] = "0123456789abcdef";
    int o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[d[i] >> 4];
        out[o++] = hex[d[i] & 15];
    }
    out[o] = '\0';
    return 0;
}
