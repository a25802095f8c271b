#include "stages/runtime/provenance.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <nettle/sha2.h>

#include "ops/error.h"
#include "stages/slide/report_files.h"

void gs_sha256(const void *data, size_t len, uint8_t digest[32])
{
    struct sha256_ctx c;
    sha256_init(&c);
    sha256_update(&c, len, data);
    sha256_digest(&c, SHA256_DIGEST_SIZE, digest);
}

int gs_sha256_file(const char *path, char hex[65])
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return gs_error_set("%s: %s", path, strerror(errno));
    struct sha256_ctx c;
    sha256_init(&c);
    uint8_t buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        sha256_update(&c, n, buf);
    int bad = ferror(f);
    fclose(f);
    if (bad)
        return gs_error_set("%s: read error", path);
    uint8_t d[SHA256_DIGEST_SIZE];
    sha256_digest(&c, sizeof d, d);
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
