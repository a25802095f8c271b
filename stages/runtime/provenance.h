/*
 * provenance: what a model-using stage says about its bundle (ModelProvenance), and the
 * SHA-256 of the bundle file that identifies it.
 *
 * The coordinator refuses a worker whose bundle differs from its own by comparing
 * ModelProvenance.sha256 (PROTOCOL.md §5), tile headers carry the sha256 a tile must be
 * scored with (§9), and every verdict repeats the provenance so a report says what produced
 * it. The Debian packages the project builds on offer no SHA-256 (no OpenSSL), so the hash
 * is computed here (FIPS 180-4), streaming the file once.
 *
 * Use: gs_provenance p; gs_provenance_init(&p, path, model, nets, n) then hand &p.msg to
 * gs_worker_config.model or copy it into results. The message's strings point into p, so p
 * must outlive every use of p.msg; nothing is allocated.
 */
#ifndef GS_STAGES_RUNTIME_PROVENANCE_H
#define GS_STAGES_RUNTIME_PROVENANCE_H

#include <stddef.h>
#include <stdint.h>

#include "model/network.h"
#include "proto/gastroscreen.pb-c.h"

typedef struct {
    char bundle[256];        /* file name of the bundle (no folder) */
    char sha256[65];         /* lower-case hex */
    char format_version[32]; /* metadata "format_version" */
    char trained_on[512];    /* the networks' provenance, "untrained" when all are */
    char notice[64];         /* GS_REPORT_UNTRAINED_NOTICE when any network is untrained */
    char precision[8]; /* the multi-task network's arithmetic when p was made: "fp32", "bf16" */
    char net_trained_on[GS_NET_COUNT][512]; /* each network's own provenance.<net> */
    Gastroscreen__V1__NetworkProvenance net[GS_NET_COUNT];
    Gastroscreen__V1__NetworkProvenance *net_ptr[GS_NET_COUNT];
    Gastroscreen__V1__ModelProvenance msg; /* points into the fields above */
} gs_provenance;

/* SHA-256 of `len` bytes (Nettle); writes 32 bytes into digest. */
void gs_sha256(const void *data, size_t len, uint8_t digest[32]);

/* Lower-case hex SHA-256 of the file at path into hex (65 bytes with the NUL). Returns 0, or
 * -1 with the error naming the file. */
int gs_sha256_file(const char *path, char hex[65]);

/* Fills *p for the bundle file `path`, loaded as `m`, of which the stage uses the networks
 * nets[0..n-1]: untrained is set when any of them is untrained (absent, or provenance
 * "untrained"), and trained_on joins their provenance strings ("multitask: untrained");
 * precision is gs_model_precision(m), so set the model's precision (gs_model_set_precision)
 * first; msg.precision points at it when nets holds the multi-task network, else stays "".
 * Returns 0, or -1 with the error (the file cannot be read). */
int gs_provenance_init(gs_provenance *p, const char *path, const gs_model *m, const gs_net_id *nets,
                       size_t n);

/* As gs_provenance_init with the file's SHA-256 already known (sha256: its lower-case hex,
 * e.g. another gs_provenance's of the same file): the file is not read again. The embedded
 * mode describes one bundle to several workers; hashing an ~80 MB bundle once per worker was
 * ~10% of the CPU time of screening one 110-tile slide. */
void gs_provenance_init_hashed(gs_provenance *p, const char *path, const char *sha256,
                               const gs_model *m, const gs_net_id *nets, size_t n);

/* The network a stage worker runs (the only one a stage executable builds) and whose
 * provenance it announces: foreground, blur and screener their own, every other stage the
 * multi-task network. */
gs_net_id gs_provenance_stage_net(Gastroscreen__V1__Stage stage);

#endif
