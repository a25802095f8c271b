#include "stages/runtime/provenance.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "ops/error.h"
#include "stages/slide/report_files.h"

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

typedef struct {
    uint32_t h[8];
    uint64_t bytes;
    uint8_t buf[64];
    size_t fill;
} sha256_ctx;

static uint32_t ror(uint32_t x, int n)
{
    return (x >> n) | (x << (32 - n));
}

static void sha256_block(sha256_ctx *c, const uint8_t *p)
{
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = c->h[0], b = c->h[1], cc = c->h[2], d = c->h[3], e = c->h[4], f = c->h[5],
             g = c->h[6], h = c->h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 =
            h + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        uint32_t t2 = (ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & cc) ^ (b & cc));
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = cc;
        cc = b;
        b = a;
        a = t1 + t2;
    }
    c->h[0] += a;
    c->h[1] += b;
    c->h[2] += cc;
    c->h[3] += d;
    c->h[4] += e;
    c->h[5] += f;
    c->h[6] += g;
    c->h[7] += h;
}

static void sha256_init(sha256_ctx *c)
{
    static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(c->h, h0, sizeof h0);
    c->bytes = 0;
    c->fill = 0;
}

static void sha256_update(sha256_ctx *c, const uint8_t *p, size_t n)
{
    c->bytes += n;
    while (n) {
        if (c->fill == 0 && n >= 64) {
            sha256_block(c, p);
            p += 64;
            n -= 64;
            continue;
        }
        size_t take = 64 - c->fill < n ? 64 - c->fill : n;
        memcpy(c->buf + c->fill, p, take);
        c->fill += take;
        p += take;
        n -= take;
        if (c->fill == 64) {
            sha256_block(c, c->buf);
            c->fill = 0;
        }
    }
}

static void sha256_final(sha256_ctx *c, uint8_t digest[32])
{
    uint64_t bits = c->bytes * 8;
    uint8_t pad = 0x80;
    sha256_update(c, &pad, 1);
    pad = 0;
    while (c->fill != 56)
        sha256_update(c, &pad, 1);
    uint8_t len[8];
    for (int i = 0; i < 8; i++)
        len[i] = (uint8_t)(bits >> (56 - 8 * i));
    sha256_update(c, len, 8);
    for (int i = 0; i < 8; i++) {
        digest[4 * i] = (uint8_t)(c->h[i] >> 24);
        digest[4 * i + 1] = (uint8_t)(c->h[i] >> 16);
        digest[4 * i + 2] = (uint8_t)(c->h[i] >> 8);
        digest[4 * i + 3] = (uint8_t)c->h[i];
    }
}

void gs_sha256(const void *data, size_t len, uint8_t digest[32])
{
    sha256_ctx c;
    sha256_init(&c);
    sha256_update(&c, data, len);
    sha256_final(&c, digest);
}

int gs_sha256_file(const char *path, char hex[65])
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return gs_error_set("%s: %s", path, strerror(errno));
    sha256_ctx c;
    sha256_init(&c);
    uint8_t buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        sha256_update(&c, buf, n);
    int bad = ferror(f);
    fclose(f);
    if (bad)
        return gs_error_set("%s: read error", path);
    uint8_t d[32];
    sha256_final(&c, d);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    return 0;
}

int gs_provenance_init(gs_provenance *p, const char *path, const gs_model *m, const gs_net_id *nets,
                       size_t n)
{
    char hex[65];
    if (gs_sha256_file(path, hex) < 0)
        return -1;
    gs_provenance_init_hashed(p, path, hex, m, nets, n);
    return 0;
}

void gs_provenance_init_hashed(gs_provenance *p, const char *path, const char *sha256,
                               const gs_model *m, const gs_net_id *nets, size_t n)
{
    memset(p, 0, sizeof *p);
    snprintf(p->sha256, sizeof p->sha256, "%s", sha256);
    const char *slash = strrchr(path, '/');
    snprintf(p->bundle, sizeof p->bundle, "%s", slash ? slash + 1 : path);
    snprintf(p->precision, sizeof p->precision, "%s", gs_precision_name(gs_model_precision(m)));
    const char *fv = gs_weights_meta(gs_model_weights(m), "format_version");
    snprintf(p->format_version, sizeof p->format_version, "%s", fv ? fv : "");
    int untrained = 0, all_untrained = 1;
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        int u = gs_model_untrained(m, nets[i]);
        untrained |= u;
        all_untrained &= u;
        int k = snprintf(p->trained_on + used, sizeof p->trained_on - used, "%s%s: %s",
                         i ? "; " : "", gs_net_name(nets[i]), gs_model_provenance(m, nets[i]));
        if (k > 0)
            used += (size_t)k < sizeof p->trained_on - used ? (size_t)k
                                                            : sizeof p->trained_on - used - 1;
    }
    if (n && all_untrained)
        snprintf(p->trained_on, sizeof p->trained_on, "untrained");
    if (untrained)
        snprintf(p->notice, sizeof p->notice, "%s", GS_REPORT_UNTRAINED_NOTICE);
    gastroscreen__v1__model_provenance__init(&p->msg);
    p->msg.bundle = p->bundle;
    p->msg.sha256 = p->sha256;
    p->msg.format_version = p->format_version;
    p->msg.trained_on = p->trained_on;
    p->msg.untrained = untrained != 0;
    p->msg.notice = p->notice;
    /* Only the multi-task network has a precision setting; a stage that does not run it
     * says nothing rather than the fp32 its model defaults to. */
    for (size_t i = 0; i < n; i++)
        if (nets[i] == GS_NET_MULTITASK)
            p->msg.precision = p->precision;
    for (int i = 0; i < GS_NET_COUNT; i++) {
        gastroscreen__v1__network_provenance__init(&p->net[i]);
        snprintf(p->net_trained_on[i], sizeof p->net_trained_on[i], "%s",
                 gs_model_provenance(m, (gs_net_id)i));
        p->net[i].network = (char *)gs_net_name((gs_net_id)i);
        p->net[i].present = gs_model_has(m, (gs_net_id)i) != 0;
        p->net[i].untrained = gs_model_untrained(m, (gs_net_id)i) != 0;
        p->net[i].trained_on = p->net_trained_on[i];
        p->net_ptr[i] = &p->net[i];
    }
    p->msg.n_networks = GS_NET_COUNT;
    p->msg.networks = p->net_ptr;
}

gs_net_id gs_provenance_stage_net(Gastroscreen__V1__Stage stage)
{
    switch (stage) {
    case GASTROSCREEN__V1__STAGE__STAGE_FOREGROUND:
        return GS_NET_FOREGROUND;
    case GASTROSCREEN__V1__STAGE__STAGE_BLUR:
        return GS_NET_BLUR;
    case GASTROSCREEN__V1__STAGE__STAGE_SCREENER:
        return GS_NET_SCREENER;
    default:
        return GS_NET_MULTITASK;
    }
}
