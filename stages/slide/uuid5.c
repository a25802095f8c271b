#include "stages/slide/uuid5.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/error.h"

typedef struct {
    uint32_t h[5];
    uint64_t bytes;    /* message length so far */
    uint8_t block[64]; /* pending bytes of the current block */
    size_t used;       /* bytes in block */
} sha1_ctx;

static uint32_t rol(uint32_t x, int n)
{
    return (x << n) | (x >> (32 - n));
}

static void sha1_block(sha1_ctx *c, const uint8_t *p)
{
    uint32_t w[80];
    for (int t = 0; t < 16; t++)
        w[t] = (uint32_t)p[4 * t] << 24 | (uint32_t)p[4 * t + 1] << 16 |
               (uint32_t)p[4 * t + 2] << 8 | (uint32_t)p[4 * t + 3];
    for (int t = 16; t < 80; t++)
        w[t] = rol(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1);
    uint32_t a = c->h[0], b = c->h[1], d = c->h[3], e = c->h[4], cc = c->h[2];
    for (int t = 0; t < 80; t++) {
        uint32_t f, k;
        if (t < 20) {
            f = (b & cc) | (~b & d);
            k = 0x5A827999u;
        } else if (t < 40) {
            f = b ^ cc ^ d;
            k = 0x6ED9EBA1u;
        } else if (t < 60) {
            f = (b & cc) | (b & d) | (cc & d);
            k = 0x8F1BBCDCu;
        } else {
            f = b ^ cc ^ d;
            k = 0xCA62C1D6u;
        }
        uint32_t tmp = rol(a, 5) + f + e + w[t] + k;
        e = d;
        d = cc;
        cc = rol(b, 30);
        b = a;
        a = tmp;
    }
    c->h[0] += a;
    c->h[1] += b;
    c->h[2] += cc;
    c->h[3] += d;
    c->h[4] += e;
}

static void sha1_init(sha1_ctx *c)
{
    static const uint32_t h0[5] = {0x67452301u, 0xEFCDAB89u, 0x98BADCFEu, 0x10325476u, 0xC3D2E1F0u};
    memcpy(c->h, h0, sizeof h0);
    c->bytes = 0;
    c->used = 0;
}

static void sha1_update(sha1_ctx *c, const void *data, size_t len)
{
    const uint8_t *p = data;
    c->bytes += len;
    while (len) {
        size_t take = sizeof c->block - c->used;
        take = take < len ? take : len;
        memcpy(c->block + c->used, p, take);
        c->used += take;
        p += take;
        len -= take;
        if (c->used == sizeof c->block) {
            sha1_block(c, c->block);
            c->used = 0;
        }
    }
}

static void sha1_final(sha1_ctx *c, uint8_t digest[20])
{
    uint64_t bits = c->bytes * 8;
    static const uint8_t one = 0x80, zero = 0;
    sha1_update(c, &one, 1);
    while (c->used != 56)
        sha1_update(c, &zero, 1);
    uint8_t len[8];
    for (int i = 0; i < 8; i++)
        len[i] = (uint8_t)(bits >> (56 - 8 * i));
    sha1_update(c, len, sizeof len);
    for (int i = 0; i < 5; i++)
        for (int k = 0; k < 4; k++)
            digest[4 * i + k] = (uint8_t)(c->h[i] >> (24 - 8 * k));
}

void gs_sha1(const void *data, size_t len, uint8_t digest[20])
{
    sha1_ctx c;
    sha1_init(&c);
    sha1_update(&c, data, len);
    sha1_final(&c, digest);
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
    sha1_ctx c;
    sha1_init(&c);
    sha1_update(&c, nsb, sizeof nsb);
    sha1_update(&c, name, strlen(name));
    sha1_final(&c, d);
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
