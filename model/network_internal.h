/*
 * network_internal: what model/network.c (the model, states and runs) and
 * model/network_build.c (the walk of each architecture) share. Private to those two files;
 * everything else uses model/network.h.
 */
#ifndef GS_MODEL_NETWORK_INTERNAL_H
#define GS_MODEL_NETWORK_INTERNAL_H

#include <stddef.h>

#include "model/network.h"
#include "model/runtime.h"

enum { LAYER_CONV, LAYER_DCN, LAYER_FC };

/* One learnt layer, in the order the network walk visits it. */
typedef struct {
    char name[96];
    int kind;
    gs_rt_conv conv; /* LAYER_CONV */
    float *w, *b;    /* LAYER_DCN: folded [cout][cin][3][3], [cout]; LAYER_FC: [out][in] */
    int cin, cout;
    float dcn_amax; /* LAYER_DCN in int8: the calibrated input range (0: the DCN runs bf16) */
    int dcn_u8;     /* ... and its input is known non-negative (u8 columns, else s8) */
} layer;

typedef struct {
    layer *v;
    size_t n, cap;
} layer_list;

struct gs_model {
    gs_weights *w;
    dnnl_engine_t engine;
    gs_act act;
    float eps;
    gs_model_thresholds thresholds;
    float mean[3], std[3];
    int present[GS_NET_COUNT];
    int built[GS_NET_COUNT]; /* folded and reordered (a subset of present) */
    const char *provenance[GS_NET_COUNT];
    layer_list layers[GS_NET_COUNT];
    gs_precision precision;
    int bf16_weights; /* the multi-task convs hold bf16 weights too */
    int bf16_cl;      /* ... laid out for channels-last activations (gs_model_set_precision) */
    int int8_weights; /* the encoder's convs hold int8 weights too (and the DCNs ranges) */
};

struct gs_net_state {
    const gs_model *m;
    gs_net_id id;
    int n, h, w;
    gs_rt_plan *p;
    gs_rt_tensor *in;
    gs_rt_tensor *out_a, *out_b; /* multitask: L5, seg; foreground: low logit; blur: conv2;
                                    screener: hidden */
    const layer *fc;             /* cls.fc / blur fc / screener fc */
    int calibrating; /* multitask: records conv input ranges (gs_net_state_new_calibrating) */
    int decoder_cl;  /* multitask: the decoder runs channels-last too, not only the encoder */
    int profiling;
    int profile_runs;
    double profile[GS_NET_PART_COUNT]; /* seconds per gs_net_part */
};

/* The builder: one walk of the architecture, either loading (dry plan, creates layers) or
 * planning (real plan, uses the layers in the same order). A loading walk may be a checking
 * one (a network present in the bundle but not asked for): it looks every tensor up in the
 * header and checks its shape, reads no value and creates no layer, so the network's pages
 * of the mapping are never touched and nothing is allocated for it. */

typedef struct {
    gs_model *m;
    gs_net_id id;
    gs_rt_plan *p;
    int loading;
    int checking; /* loading only: names and shapes, no values, no layers */
    size_t next;  /* planning: index of the next layer */
    char **used;  /* loading: full names of the tensors consumed */
    size_t nused, cap_used;
} builder;

/* Walks network b->id: creates st->in and plans every layer into b->p (loading: looks up, checks
 * and, unless checking, folds the tensors into new layers of b->m; planning: uses those layers
 * in the same order). Returns 0, or -1 with the error naming the tensor or layer. */
int gs_net_build(builder *b, gs_net_state *st);

#endif
