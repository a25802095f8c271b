#include "model/network.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/network_internal.h"
#include "model/runtime.h"
#include "ops/cpu_rate.h"
#include "ops/dnnl_reorder.h"
#include "ops/error.h"

/* Layer names are built by snprintf from fixed architecture names (at most ~50 characters)
   into 128-byte buffers; gcc cannot see that bound through the nested prefixes. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif

static const char *const net_names[GS_NET_COUNT] = {"multitask", "foreground", "blur", "screener"};

double gs_sigmoid(double logit)
{
    return 1.0 / (1.0 + exp(-logit));
}

const char *gs_net_name(gs_net_id id)
{
    GS_ASSERT(id >= 0 && id < GS_NET_COUNT);
    return net_names[id];
}

/* The runtime puts its memory moves in a bucket of its own; it is ours. */
_Static_assert((int)GS_RT_PART_MOVES == (int)GS_NET_PART_REORDERS,
               "runtime and network buckets differ");

static const char *const part_names[GS_NET_PART_COUNT] = {
    "input", "encoder", "decoder_offsets", "decoder_dcn", "transposed_convs", "heads", "reorders"};

const char *gs_net_part_name(gs_net_part part)
{
    GS_ASSERT(part >= 0 && part < GS_NET_PART_COUNT);
    return part_names[part];
}

/* ---------------------------------------------------------------------------------------- */
/* Model */

static int parse3(const gs_weights *w, const char *key, float *v)
{
    const char *s = gs_weights_meta(w, key);
    if (!s)
        return gs_error_set("metadata %s: missing", key);
    const char *q = s;
    for (int i = 0; i < 3; i++) {
        char *end = NULL;
        double d = strtod(q, &end);
        if (end == q || !isfinite(d))
            return gs_error_set("metadata %s = \"%s\": expected 3 comma-separated numbers", key, s);
        v[i] = (float)d;
        q = end;
        if (i < 2) {
            if (*q != ',')
                return gs_error_set("metadata %s = \"%s\": expected 3 comma-separated numbers", key,
                                    s);
            q++;
        }
    }
    if (*q != '\0')
        return gs_error_set("metadata %s = \"%s\": expected 3 comma-separated numbers", key, s);
    return 0;
}

/* A metadata number in [lo, hi]; whole when `whole`. */
static int parse_number(const gs_weights *w, const char *key, double lo, double hi, int whole,
                        double *v)
{
    const char *s = gs_weights_meta(w, key);
    char *end = NULL;
    double d = s ? strtod(s, &end) : NAN;
    if (!s || end == s || *end != '\0' || !isfinite(d) || d < lo || d > hi ||
        (whole && d != floor(d)))
        return gs_error_set("metadata %s = \"%s\": expected %s in %g..%g", key, s ? s : "(missing)",
                            whole ? "a whole number" : "a number", lo, hi);
    *v = d;
    return 0;
}

/* The decision metadata: the values the pipeline judges with unless the lab's config sets its
 * own. topk's bound is the screener's largest matrix (stages/handlers/screener.c). */
static int parse_thresholds(gs_model *m)
{
    double topk, screen, blur, fg, blur_slide = GS_MODEL_BLUR_SLIDE_DEFAULT, sparse = 0.0;
    if (parse_number(m->w, "topk", 1, 4096, 1, &topk) ||
        parse_number(m->w, "threshold.screen", 0, 1, 0, &screen) ||
        parse_number(m->w, "threshold.blur", 0, 1, 0, &blur) ||
        parse_number(m->w, "threshold.foreground", 0, 1, 0, &fg))
        return -1;
    /* Optional: bundles written before it existed still load. */
    if (gs_weights_meta(m->w, "threshold.blur_slide") &&
        parse_number(m->w, "threshold.blur_slide", 0, 1, 0, &blur_slide))
        return -1;
    if (gs_weights_meta(m->w, "threshold.blur_sparse_tissue") &&
        parse_number(m->w, "threshold.blur_sparse_tissue", 0, 1, 0, &sparse))
        return -1;
    m->thresholds = (gs_model_thresholds){.topk = (uint32_t)topk,
                                          .screen = (float)screen,
                                          .blur = (float)blur,
                                          .foreground = (float)fg,
                                          .blur_slide = (float)blur_slide,
                                          .blur_sparse_tissue = (float)sparse};
    return 0;
}

static int parse_meta(gs_model *m)
{
    const char *col = gs_weights_meta(m->w, "input_colour");
    if (!col || strcmp(col, "RGB"))
        return gs_error_set("metadata input_colour = \"%s\": only RGB is supported",
                            col ? col : "(missing)");
    if (parse3(m->w, "input_mean", m->mean) || parse3(m->w, "input_std", m->std))
        return -1;
    for (int i = 0; i < 3; i++)
        if (!(m->std[i] > 0.0f))
            return gs_error_set("metadata input_std: value %d is not positive", i);
    if (gs_act_parse(gs_weights_meta(m->w, "activation"), &m->act))
        return -1;
    const char *e = gs_weights_meta(m->w, "bn_eps");
    char *end = NULL;
    double eps = e ? strtod(e, &end) : -1.0;
    if (!e || end == e || *end != '\0' || !(eps > 0.0) || !isfinite(eps))
        return gs_error_set("metadata bn_eps = \"%s\": expected a positive number",
                            e ? e : "(missing)");
    m->eps = (float)eps;
    return parse_thresholds(m);
}

/* The blur network's global pool (metadata pool.blur, model/FORMAT.md): *tissue = 1 for
 * "tissue", 0 for "mean" or no key (bundles made before the key). */
static int blur_pool_tissue(const gs_model *m, int *tissue)
{
    const char *v = gs_weights_meta(m->w, "pool.blur");
    *tissue = v && !strcmp(v, "tissue");
    if (v && !*tissue && strcmp(v, "mean"))
        return gs_error_set("metadata pool.blur = \"%s\": expected mean or tissue", v);
    return 0;
}

/* Builds network `id` (checking != 0: only checks its tensors' names and shapes). */
static int load_network(gs_model *m, gs_net_id id, int checking)
{
    builder b = {.m = m, .id = id, .loading = 1, .checking = checking};
    gs_net_state st = {.m = m, .id = id, .n = 1};
    switch (id) {
    case GS_NET_MULTITASK:
    case GS_NET_FOREGROUND:
        st.h = st.w = 512;
        break;
    case GS_NET_BLUR: {
        int tissue;
        if (blur_pool_tissue(m, &tissue))
            return -1;
        st.h = st.w = 256;
        break;
    }
    default:
        st.h = st.w = 1;
    }
    int rc = -1;
    b.p = gs_rt_plan_new(m->engine, 1, 1);
    if (!b.p)
        goto done;
    if (gs_net_build(&b, &st))
        goto done;
    /* Every tensor of this network must have been consumed. */
    char prefix[32];
    snprintf(prefix, sizeof prefix, "%s.", net_names[id]);
    size_t plen = strlen(prefix);
    for (size_t i = 0; i < gs_weights_count(m->w); i++) {
        const char *name = gs_weights_at(m->w, i)->name;
        if (strncmp(name, prefix, plen))
            continue;
        int found = 0;
        for (size_t j = 0; j < b.nused && !found; j++)
            found = !strcmp(b.used[j], name);
        if (!found) {
            gs_error_set("tensor %s: not part of the %s network", name, net_names[id]);
            goto done;
        }
    }
    rc = 0;
done:
    gs_rt_plan_destroy(&b.p);
    for (size_t j = 0; j < b.nused; j++)
        free(b.used[j]);
    free(b.used);
    return rc;
}

gs_model *gs_model_from_weights_nets(gs_weights **wp, const gs_net_id *nets, size_t n)
{
    int want[GS_NET_COUNT] = {0};
    for (size_t i = 0; i < n; i++) {
        if ((int)nets[i] < 0 || nets[i] >= GS_NET_COUNT) {
            gs_weights_destroy(wp);
            gs_error_set("network id %d: no such network", (int)nets[i]);
            return NULL;
        }
        want[nets[i]] = 1;
    }
    gs_model *m = calloc(1, sizeof *m);
    if (!m) {
        gs_weights_destroy(wp);
        gs_error_set("out of memory for a model");
        return NULL;
    }
    m->w = *wp;
    *wp = NULL;
    if (gs_weights_check_bundle(m->w))
        goto fail;
    if (parse_meta(m))
        goto fail;
    if (dnnl_engine_create(&m->engine, dnnl_cpu, 0) != dnnl_success) {
        gs_error_set("oneDNN: cannot create a CPU engine");
        goto fail;
    }
    for (int id = 0; id < GS_NET_COUNT; id++) {
        char prefix[32], key[48];
        snprintf(prefix, sizeof prefix, "%s.", net_names[id]);
        snprintf(key, sizeof key, "provenance.%s", net_names[id]);
        m->present[id] = gs_weights_count_prefix(m->w, prefix) > 0;
        const char *prov = gs_weights_meta(m->w, key);
        m->provenance[id] = !m->present[id] || !prov ? "untrained" : prov;
        if (m->present[id] && load_network(m, (gs_net_id)id, !want[id]))
            goto fail;
        m->built[id] = m->present[id] && want[id];
    }
    return m;
fail:
    gs_model_destroy(&m);
    return NULL;
}

static const gs_net_id all_nets[GS_NET_COUNT] = {GS_NET_MULTITASK, GS_NET_FOREGROUND, GS_NET_BLUR,
                                                 GS_NET_SCREENER};

gs_model *gs_model_from_weights(gs_weights **wp)
{
    return gs_model_from_weights_nets(wp, all_nets, GS_NET_COUNT);
}

gs_model *gs_model_load_nets(const char *path, const gs_net_id *nets, size_t n)
{
    gs_weights *w = gs_weights_open(path);
    if (!w)
        return NULL;
    gs_model *m = gs_model_from_weights_nets(&w, nets, n);
    if (!m) {
        /* Our own messages do not carry the file name yet; gs_weights' ones do. */
        const char *msg = gs_error_get();
        size_t pl = strlen(path);
        if (strncmp(msg, path, pl) || msg[pl] != ':')
            gs_error_prefix("%s", path);
    }
    return m;
}

gs_model *gs_model_load(const char *path)
{
    return gs_model_load_nets(path, all_nets, GS_NET_COUNT);
}

void gs_model_destroy(gs_model **mp)
{
    if (!mp || !*mp)
        return;
    gs_model *m = *mp;
    for (int id = 0; id < GS_NET_COUNT; id++) {
        layer_list *l = &m->layers[id];
        for (size_t i = 0; i < l->n; i++) {
            gs_rt_conv_free(&l->v[i].conv);
            free(l->v[i].w);
            free(l->v[i].b);
        }
        free(l->v);
    }
    if (m->engine)
        dnnl_engine_destroy(m->engine);
    gs_weights_destroy(&m->w);
    free(m);
    *mp = NULL;
}

int gs_model_has(const gs_model *m, gs_net_id id)
{
    GS_ASSERT(id >= 0 && id < GS_NET_COUNT);
    return m->present[id];
}

int gs_model_built(const gs_model *m, gs_net_id id)
{
    GS_ASSERT(id >= 0 && id < GS_NET_COUNT);
    return m->built[id];
}

const char *gs_model_provenance(const gs_model *m, gs_net_id id)
{
    GS_ASSERT(id >= 0 && id < GS_NET_COUNT);
    return m->provenance[id];
}

int gs_model_untrained(const gs_model *m, gs_net_id id)
{
    return !gs_model_has(m, id) || !strcmp(gs_model_provenance(m, id), "untrained");
}

gs_model_thresholds gs_model_get_thresholds(const gs_model *m)
{
    return m->thresholds;
}

const gs_weights *gs_model_weights(const gs_model *m)
{
    return m->w;
}

/* ---------------------------------------------------------------------------------------- */
/* Precision */

static const char *const precision_names[GS_PRECISION_COUNT] = {"fp32", "bf16", "int8"};

const char *gs_precision_name(gs_precision p)
{
    GS_ASSERT(p >= 0 && p < GS_PRECISION_COUNT);
    return precision_names[p];
}

int gs_precision_parse(const char *s, gs_precision *p)
{
    for (int i = 0; i < GS_PRECISION_COUNT; i++)
        if (s && !strcmp(s, precision_names[i])) {
            *p = (gs_precision)i;
            return 0;
        }
    return gs_error_set("precision \"%s\": expected \"fp32\", \"bf16\" or \"int8\"",
                        s ? s : "(missing)");
}

int gs_precision_budget_met(const gs_weights *w, gs_precision p)
{
    GS_ASSERT(p >= 0 && p < GS_PRECISION_COUNT);
    if (p == GS_PRECISION_FP32)
        return 1;
    char key[64];
    snprintf(key, sizeof key, GS_PRECISION_BUDGET_PREFIX "%s", precision_names[p]);
    const char *v = w ? gs_weights_meta(w, key) : NULL;
    return v && !strncmp(v, "met", 3) && (v[3] == '\0' || v[3] == ';');
}

gs_precision gs_precision_default(const gs_weights *w)
{
    if (gs_precision_budget_met(w, GS_PRECISION_INT8) &&
        gs_dnnl_isa_has(dnnl_cpu_isa_avx512_core_vnni))
        return GS_PRECISION_INT8;
    if (gs_precision_budget_met(w, GS_PRECISION_BF16) && gs_bf16_pays())
        return GS_PRECISION_BF16;
    return GS_PRECISION_FP32;
}

/* oneDNN 2.6 runs its AMX convolutions (bf16 and int8) only on channels-last activations:
 * on an AMX CPU a bf16 3x3 conv 128->128 at 64x64 measured 1.2 ms channels-last against
 * 8.4 ms in nChw16c (jit_bf16) and 5.1 ms in fp32. Without AMX, bf16 keeps nChw16c. */
static int amx_native(void)
{
    return gs_dnnl_isa_has(dnnl_cpu_isa_avx512_core_amx);
}

gs_precision gs_precision_usable(gs_precision asked, char *why, size_t len)
{
    if (why && len)
        why[0] = '\0';
    if (asked == GS_PRECISION_INT8) {
        if (gs_dnnl_isa_has(dnnl_cpu_isa_avx512_core_vnni))
            return asked;
        gs_precision alt = gs_bf16_pays() ? GS_PRECISION_BF16 : GS_PRECISION_FP32;
        if (why && len)
            snprintf(why, len,
                     "precision int8 asked for, but this CPU has no VNNI (oneDNN ISA without "
                     "avx512_core_vnni): running %s",
                     precision_names[alt]);
        return alt;
    }
    if (asked != GS_PRECISION_BF16)
        return asked;
    if (!gs_bf16_native()) {
        if (why && len)
            snprintf(why, len,
                     "precision bf16 asked for, but this CPU has no native bf16 (oneDNN ISA "
                     "without avx512_core_bf16): running fp32");
        return GS_PRECISION_FP32;
    }
    if (!gs_bf16_pays() && why && len)
        snprintf(why, len,
                 "precision bf16 asked for: running it, but this CPU does bf16 multiply-adds at "
                 "%.2fx its fp32 rate and has no AMX, so bf16 will be slower than fp32",
                 gs_cpu_bf16_rate());
    return asked;
}

/* The convs int8 quantises: the encoder's dense convs but the first (3 input channels: the
 * network input is plain, and a 27-tap dot product gains nothing from int8). */
static int int8_layer(const layer *y)
{
    return y->kind == LAYER_CONV && !y->conv.deconv && y->conv.cin != 3 &&
           !strncmp(y->name, "base.", 5);
}

/* The deformable convs int8 quantises where the bundle has their ranges (make_int8). */
static int int8_dcn(const layer *y)
{
    return y->kind == LAYER_DCN;
}

static const char *int8_amax(const gs_model *m, const layer *y)
{
    char key[160];
    snprintf(key, sizeof key, GS_INT8_AMAX_PREFIX "%s.%s", net_names[GS_NET_MULTITASK], y->name);
    return gs_weights_meta(m->w, key);
}

/* How many of the layers `which` selects (int8_layer, int8_dcn) have a calibrated range in
 * the bundle (*have) out of how many (returned); *missing = the first without one, or NULL. */
static int int8_ranges(const gs_model *m, int (*which)(const layer *), int *have,
                       const layer **missing)
{
    const layer_list *l = &m->layers[GS_NET_MULTITASK];
    int n = 0;
    *have = 0;
    *missing = NULL;
    for (size_t i = 0; i < l->n; i++)
        if (which(&l->v[i])) {
            n++;
            if (int8_amax(m, &l->v[i]))
                (*have)++;
            else if (!*missing)
                *missing = &l->v[i];
        }
    return n;
}

int gs_model_has_int8(const gs_model *m)
{
    int have;
    const layer *missing;
    return int8_ranges(m, int8_layer, &have, &missing) > 0 && !missing;
}

/* The calibrated range of layer y into *amax; returns 0, or -1 with the error set when the
 * bundle's value is missing or not a positive finite number. */
static int layer_amax(const gs_model *m, const layer *y, float *amax)
{
    const char *v = int8_amax(m, y);
    char *end = NULL;
    *amax = v ? strtof(v, &end) : 0.0f;
    if (!v || *end != '\0' || !(*amax > 0.0f) || !isfinite(*amax))
        return gs_error_set("%s: metadata " GS_INT8_AMAX_PREFIX "%s.%s: \"%s\" is not a "
                            "positive number",
                            gs_weights_name(m->w), net_names[GS_NET_MULTITASK], y->name,
                            v ? v : "(missing)");
    return 0;
}

static int make_int8(gs_model *m)
{
    layer_list *l = &m->layers[GS_NET_MULTITASK];
    for (size_t i = 0; i < l->n; i++) {
        layer *y = &l->v[i];
        float amax;
        if (!int8_layer(y))
            continue;
        if (layer_amax(m, y, &amax) < 0)
            return -1;
        if (gs_rt_conv_make_int8(&y->conv, m->engine, amax, m->act.kind == GS_ACT_RELU))
            return gs_error_prefix("layer %s", y->name);
    }
    /* The deformable convs: int8 when every one has a range, else all in bf16 as before them
     * (a bundle calibrated by an older release). A proj_* conv reads an encoder level or an
     * earlier node, both after the activation, so with ReLU its input is non-negative and gets
     * u8 columns; a node_* conv reads a transposed conv plus a skip, of either sign: s8. */
    int have;
    const layer *missing;
    int n = int8_ranges(m, int8_dcn, &have, &missing);
    if (missing) {
        /* Where the rest runs fp32 the deformable convs do too, ranges or not: nothing to say. */
        if (gs_bf16_pays())
            fprintf(stderr,
                    "gastroscreen: %s: no int8 range for the deformable conv %s (%d of %d; "
                    "bundles calibrated before int8 deformable convs have none): they run in "
                    "bf16; calibrate again with gastroscreen calibrate\n",
                    gs_weights_name(m->w), missing->name, have, n);
        return 0;
    }
    for (size_t i = 0; i < l->n; i++) {
        layer *y = &l->v[i];
        if (!int8_dcn(y))
            continue;
        if (layer_amax(m, y, &y->dcn_amax) < 0)
            return -1;
        y->dcn_u8 = m->act.kind == GS_ACT_RELU && strstr(y->name, ".proj_") != NULL;
    }
    return 0;
}

int gs_model_set_precision(gs_model *m, gs_precision p)
{
    GS_ASSERT(p >= 0 && p < GS_PRECISION_COUNT);
    if (p == GS_PRECISION_INT8 && m->built[GS_NET_MULTITASK] && !gs_model_has_int8(m)) {
        gs_precision alt = gs_bf16_pays() ? GS_PRECISION_BF16 : GS_PRECISION_FP32;
        int have;
        const layer *missing;
        int n = int8_ranges(m, int8_layer, &have, &missing);
        if (have > 0)
            fprintf(stderr,
                    "gastroscreen: %s: precision int8 asked for, but the bundle's int8 "
                    "calibration is incomplete (%d of %d ranges; no metadata " GS_INT8_AMAX_PREFIX
                    "%s.%s): running %s; calibrate it again with gastroscreen calibrate\n",
                    gs_weights_name(m->w), have, n, net_names[GS_NET_MULTITASK], missing->name,
                    precision_names[alt]);
        else
            fprintf(stderr,
                    "gastroscreen: %s: precision int8 asked for, but the bundle has no int8 "
                    "calibration (make one with gastroscreen calibrate): running %s\n",
                    gs_weights_name(m->w), precision_names[alt]);
        p = alt;
    }
    /* int8 runs the layers it does not quantise in bf16 where bf16 pays, else in fp32 (on a
     * CPU with bf16 at half the fp32 rate an int8 tile took 189-200 ms with them in bf16,
     * 143-145 ms in fp32). */
    int want_bf16 = p == GS_PRECISION_BF16 || (p == GS_PRECISION_INT8 && gs_bf16_pays());
    /* oneDNN 2.6 has bf16 convolutions (native or emulated) from avx512_core up only. */
    if (want_bf16 && !gs_dnnl_isa_has(dnnl_cpu_isa_avx512_core))
        return gs_error_set("%s: precision bf16 needs AVX-512 (oneDNN ISA avx512_core), which "
                            "this CPU lacks; gs_precision_usable says what runs instead",
                            gs_weights_name(m->w));
    if (want_bf16 && !m->bf16_weights) {
        layer_list *l = &m->layers[GS_NET_MULTITASK];
        int cl = amx_native();
        for (size_t i = 0; i < l->n; i++)
            if (l->v[i].kind == LAYER_CONV && gs_rt_conv_make_bf16(&l->v[i].conv, m->engine, cl))
                return gs_error_prefix("layer %s", l->v[i].name);
        m->bf16_weights = 1;
        m->bf16_cl = cl;
    }
    if (p == GS_PRECISION_INT8 && !m->int8_weights) {
        if (make_int8(m))
            return -1;
        m->int8_weights = 1;
    }
    m->precision = p;
    return 0;
}

gs_precision gs_model_precision(const gs_model *m)
{
    return m->precision;
}

/* ---------------------------------------------------------------------------------------- */
/* States and runs */

static gs_net_state *state_new(const gs_model *m, gs_net_id id, int n, int h, int w,
                               int calibrating)
{
    GS_ASSERT(id >= 0 && id < GS_NET_COUNT);
    if (!m->present[id]) {
        gs_error_set("network %s is absent from the bundle (untrained)", net_names[id]);
        return NULL;
    }
    if (!m->built[id]) {
        gs_error_set("network %s was not loaded: the model was loaded without it "
                     "(gs_model_load_nets)",
                     net_names[id]);
        return NULL;
    }
    int mult = id == GS_NET_MULTITASK ? 32 : id == GS_NET_FOREGROUND ? 8 : 4;
    if (id == GS_NET_SCREENER) {
        if (n < 1 || h != 1 || w != 1) {
            gs_error_set("screener state: need n = k >= 1 rows and h = w = 1, got %d, %dx%d", n, h,
                         w);
            return NULL;
        }
    } else if (n < 1 || h < mult || w < mult || h % mult || w % mult) {
        gs_error_set("%s state: batch %d of %dx%d: sizes must be positive multiples of %d",
                     net_names[id], n, h, w, mult);
        return NULL;
    }
    gs_net_state *st = calloc(1, sizeof *st);
    if (!st) {
        gs_error_set("out of memory for a network state");
        return NULL;
    }
    st->m = m;
    st->id = id;
    st->n = n;
    st->h = h;
    st->w = w;
    builder b = {.m = (gs_model *)m, .id = id, .loading = 0};
    b.p = st->p = gs_rt_plan_new(m->engine, n, 0);
    if (st->p && id == GS_NET_MULTITASK && calibrating)
        gs_rt_plan_set_observe(st->p, 1);
    else if (st->p && id == GS_NET_MULTITASK && m->precision == GS_PRECISION_BF16) {
        gs_rt_plan_set_bf16(st->p, 1);
        /* On AMX the whole network channels-last (amx_native says why). */
        gs_rt_plan_set_channels_last(st->p, m->bf16_cl);
        st->decoder_cl = m->bf16_cl;
    } else if (st->p && id == GS_NET_MULTITASK && m->precision == GS_PRECISION_INT8) {
        /* gs_bf16_pays() is fixed for the process: gs_model_set_precision made the bf16
           weights by the same answer. */
        const int rest_bf16 = gs_bf16_pays();
        gs_rt_plan_set_bf16(st->p, rest_bf16);
        gs_rt_plan_set_int8(st->p, 1);
        /* The encoder channels-last, so its int8 convs write their outputs themselves; the
           bf16 decoder too on AMX. */
        gs_rt_plan_set_channels_last(st->p, 1);
        st->decoder_cl = rest_bf16 && m->bf16_cl;
    }
    if (!gs_rt_blocked_native())
        st->decoder_cl = 1;
    if (!st->p || gs_net_build(&b, st)) {
        gs_error_prefix("%s network, batch %d, %dx%d", net_names[id], n, h, w);
        gs_net_state_destroy(&st);
        return NULL;
    }
    GS_ASSERT(b.next == m->layers[id].n);
    st->calibrating = calibrating;
    return st;
}

gs_net_state *gs_net_state_new(const gs_model *m, gs_net_id id, int n, int h, int w)
{
    return state_new(m, id, n, h, w, 0);
}

gs_net_state *gs_net_state_new_calibrating(const gs_model *m, int n, int h, int w)
{
    return state_new(m, GS_NET_MULTITASK, n, h, w, 1);
}

int gs_net_state_calibration(const gs_net_state *s,
                             void (*fn)(void *ctx, const char *key, float amax), void *ctx)
{
    if (!s->calibrating)
        return gs_error_set("state is not a calibrating one");
    const layer_list *l = &s->m->layers[GS_NET_MULTITASK];
    int count = 0;
    for (size_t i = 0; i < l->n; i++) {
        if (!int8_layer(&l->v[i]) && !int8_dcn(&l->v[i]))
            continue;
        float amax = gs_rt_plan_observed(s->p, int8_dcn(&l->v[i]) ? (const void *)l->v[i].w
                                                                  : (const void *)&l->v[i].conv);
        if (amax < 0.0f)
            return gs_error_set("layer %s: no range recorded", l->v[i].name);
        char key[160];
        snprintf(key, sizeof key, GS_INT8_AMAX_PREFIX "%s.%s", net_names[GS_NET_MULTITASK],
                 l->v[i].name);
        fn(ctx, key, amax);
        count++;
    }
    return count;
}

void gs_net_state_destroy(gs_net_state **sp)
{
    if (!sp || !*sp)
        return;
    gs_rt_plan_destroy(&(*sp)->p);
    free(*sp);
    *sp = NULL;
}

static void normalise(const gs_net_state *s, const uint8_t *rgb);

int gs_net_state_weight_reorders(const gs_net_state *s)
{
    return gs_rt_plan_weight_reorders(s->p);
}

int gs_net_state_winograd_convs(const gs_net_state *s)
{
    return gs_rt_plan_winograd_convs(s->p);
}

int gs_net_state_reorders(const gs_net_state *s)
{
    return gs_rt_plan_reorders(s->p);
}

void gs_net_state_profile(gs_net_state *s, int on)
{
    s->profiling = on != 0;
    if (on) {
        memset(s->profile, 0, sizeof s->profile);
        s->profile_runs = 0;
    }
    gs_rt_plan_profile(s->p, on ? s->profile : NULL, GS_NET_PART_COUNT);
}

int gs_net_state_profile_get(const gs_net_state *s, double *seconds)
{
    memcpy(seconds, s->profile, sizeof s->profile);
    return s->profile_runs;
}

/* Profiling clock around the work outside the plan: returns the time now when profiling. */
static double prof_start(const gs_net_state *s)
{
    return s->profiling ? gs_rt_now() : 0.0;
}

static void prof_add(gs_net_state *s, gs_net_part part, double t0)
{
    if (s->profiling)
        s->profile[part] += gs_rt_now() - t0;
}

/* Normalises the input and runs the plan, timing the normalisation when profiling. */
static int run_plan(gs_net_state *s, const uint8_t *rgb)
{
    double t0 = prof_start(s);
    normalise(s, rgb);
    prof_add(s, GS_NET_PART_INPUT, t0);
    if (gs_rt_plan_run(s->p))
        return -1;
    s->profile_runs += s->profiling;
    return 0;
}

/* rgb[n][h][w][3] -> normalised float input, NCHW or (channels-last plans) NHWC, with
 * PyTorch's float32 arithmetic. A channel's value depends only on its byte, so each of the
 * 768 values is computed once, as PyTorch does it, and the pixels are a table lookup: the
 * two float divisions per value took 1.5 ms of a 512 x 512 tile on one thread (the work no
 * other thread shared), the lookups, split among the threads, a fraction of that. */
static void normalise(const gs_net_state *s, const uint8_t *rgb)
{
    const size_t hw = (size_t)s->h * s->w;
    float tab[3][256];
    uint16_t tab16[3][256];
    const int cl = s->in->cl, bf16 = s->in->bf16;
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++) {
            tab[c][v] = ((float)v / 255.0f - s->m->mean[c]) / s->m->std[c];
            if (bf16)
                tab16[c][v] = gs_bf16_from_f32(tab[c][v]);
        }
    const long rows = (long)s->n * s->h;
#pragma omp parallel for schedule(static)
    for (long r = 0; r < rows; r++) {
        const size_t n = (size_t)(r / s->h), y = (size_t)(r % s->h);
        /* The row in rgb and, channels-last, in the input; NCHW: plane c of image n, row y. */
        const size_t row_at = (n * hw + y * s->w) * 3;
        const uint8_t *src = rgb + row_at;
        for (int c = 0; c < 3; c++) {
            const size_t at = cl ? row_at + (size_t)c : ((n * 3 + (size_t)c) * hw + y * s->w);
            const size_t step = cl ? 3 : 1;
            if (bf16) {
                uint16_t *d = (uint16_t *)s->in->data + at;
                for (int x = 0; x < s->w; x++)
                    d[(size_t)x * step] = tab16[c][src[(size_t)x * 3 + (size_t)c]];
            } else {
                float *d = (float *)s->in->data + at;
                for (int x = 0; x < s->w; x++)
                    d[(size_t)x * step] = tab[c][src[(size_t)x * 3 + (size_t)c]];
            }
        }
    }
}

static void fc_apply(const layer *y, const float *x, int n, float *out)
{
    for (int i = 0; i < n; i++)
        for (int o = 0; o < y->cout; o++) {
            double acc = y->b[o];
            for (int k = 0; k < y->cin; k++)
                acc += (double)y->w[(size_t)o * y->cin + k] * x[(size_t)i * y->cin + k];
            out[(size_t)i * y->cout + o] = (float)acc;
        }
}

static int check_state(const gs_net_state *s, gs_net_id id)
{
    GS_ASSERT(s && s->id == id);
    return 0;
}

int gs_net_run_multitask(gs_net_state *s, const uint8_t *rgb, float *logit, float *feature,
                         float *seg)
{
    check_state(s, GS_NET_MULTITASK);
    if (run_plan(s, rgb))
        return gs_error_prefix("multitask");
    double t0 = prof_start(s);
    gs_rt_gap(s->out_a, feature);
    fc_apply(s->fc, feature, s->n, logit);
    gs_rt_extract_channel(s->out_b, 0, seg);
    prof_add(s, GS_NET_PART_HEADS, t0);
    return 0;
}

/* PyTorch's bilinear upsampling, align_corners=False, one plane in -> out. */
static void upsample_bilinear(const float *in, int ih, int iw, float *out, int oh, int ow)
{
    float sh = (float)ih / (float)oh, sw = (float)iw / (float)ow;
    for (int y = 0; y < oh; y++) {
        float fy = ((float)y + 0.5f) * sh - 0.5f;
        if (fy < 0.0f)
            fy = 0.0f;
        int y0 = (int)fy, y1 = y0 + (y0 < ih - 1);
        float ly = fy - (float)y0, hy = 1.0f - ly;
        for (int x = 0; x < ow; x++) {
            float fx = ((float)x + 0.5f) * sw - 0.5f;
            if (fx < 0.0f)
                fx = 0.0f;
            int x0 = (int)fx, x1 = x0 + (x0 < iw - 1);
            float lx = fx - (float)x0, hx = 1.0f - lx;
            out[(size_t)y * ow + x] =
                hy * (hx * in[(size_t)y0 * iw + x0] + lx * in[(size_t)y0 * iw + x1]) +
                ly * (hx * in[(size_t)y1 * iw + x0] + lx * in[(size_t)y1 * iw + x1]);
        }
    }
}

int gs_net_run_foreground(gs_net_state *s, const uint8_t *rgb, float *logit, float *lowres)
{
    check_state(s, GS_NET_FOREGROUND);
    if (run_plan(s, rgb))
        return gs_error_prefix("foreground");
    int lh = s->out_a->h, lw = s->out_a->w;
    size_t lhw = (size_t)lh * lw;
    float *low = lowres ? lowres : malloc((size_t)s->n * lhw * sizeof(float));
    if (!low)
        return gs_error_set("foreground: out of memory");
    gs_rt_extract_channel(s->out_a, 0, low);
    for (int n = 0; n < s->n; n++)
        upsample_bilinear(low + n * lhw, lh, lw, logit + (size_t)n * s->h * s->w, s->h, s->w);
    if (low != lowres)
        free(low);
    return 0;
}

/* The "tissue" pool's rule, identical to networks.py blur_tissue_mask: a pixel is tissue when
 * its grey is below the glass level, a 4x4 block (one conv2 position) when at least
 * BLUR_BLOCK_TISSUE of its pixels are; with fewer than 1/BLUR_MIN_SHARE_DIV of the positions
 * holding tissue every position counts (the plain mean). */
enum { BLUR_GLASS_GREY = 215, BLUR_BLOCK_TISSUE = 4, BLUR_MIN_SHARE_DIV = 32, BLUR_STRIDE = 4 };

/* mask[fh*fw] of one h x w RGB crop. */
static void blur_tissue_mask(const uint8_t *rgb, int h, int w, int fh, int fw, uint8_t *mask)
{
    size_t count = 0;
    for (int fy = 0; fy < fh; fy++)
        for (int fx = 0; fx < fw; fx++) {
            int n = 0;
            for (int y = fy * BLUR_STRIDE; y < fy * BLUR_STRIDE + BLUR_STRIDE && y < h; y++)
                for (int x = fx * BLUR_STRIDE; x < fx * BLUR_STRIDE + BLUR_STRIDE && x < w; x++) {
                    const uint8_t *p = rgb + ((size_t)y * w + x) * 3;
                    uint32_t g = (19595u * p[0] + 38470u * p[1] + 7471u * p[2] + 32768u) >> 16;
                    n += g < BLUR_GLASS_GREY;
                }
            mask[(size_t)fy * fw + fx] = n >= BLUR_BLOCK_TISSUE;
            count += n >= BLUR_BLOCK_TISSUE;
        }
    if (count * BLUR_MIN_SHARE_DIV < (size_t)fh * fw)
        memset(mask, 1, (size_t)fh * fw);
}

/* The tissue pool of the conv2 output t (float32, either layout) into out[n][c]: the mean over
 * the positions whose input block holds tissue. */
static int blur_tissue_pool(const gs_rt_tensor *t, const uint8_t *rgb, int h, int w, float *out)
{
    GS_ASSERT(!t->q && !t->bf16); /* the blur network always runs fp32 */
    size_t hw = (size_t)t->h * t->w;
    uint8_t *mask = malloc((size_t)t->n * hw);
    if (!mask)
        return gs_error_set("blur: out of memory");
    for (int n = 0; n < t->n; n++)
        blur_tissue_mask(rgb + (size_t)n * h * w * 3, h, w, t->h, t->w, mask + n * hw);
    gs_rt_masked_mean(t, mask, out);
    free(mask);
    return 0;
}

int gs_net_run_blur(gs_net_state *s, const uint8_t *rgb, float *logit)
{
    check_state(s, GS_NET_BLUR);
    int tissue;
    if (blur_pool_tissue(s->m, &tissue))
        return gs_error_prefix("blur");
    if (run_plan(s, rgb))
        return gs_error_prefix("blur");
    float feat[32 * 64];
    float *f = s->n <= 64 ? feat : malloc((size_t)s->n * 32 * sizeof(float));
    if (!f)
        return gs_error_set("blur: out of memory");
    int rc = 0;
    if (tissue) {
        GS_ASSERT(s->out_a->h * BLUR_STRIDE == s->h && s->out_a->w * BLUR_STRIDE == s->w);
        rc = blur_tissue_pool(s->out_a, rgb, s->h, s->w, f);
    } else {
        gs_rt_gap(s->out_a, f);
    }
    if (!rc)
        fc_apply(s->fc, f, s->n, logit);
    if (f != feat)
        free(f);
    return rc ? gs_error_prefix("blur") : 0;
}

int gs_net_run_screener(gs_net_state *s, const float *features, float *logit)
{
    check_state(s, GS_NET_SCREENER);
    /* [k][512] rows are exactly the bytes of k images of 512 x 1 x 1, nChw16c or channels-last. */
    memcpy(s->in->data, features, (size_t)s->n * 512 * sizeof(float));
    if (gs_rt_plan_run(s->p))
        return gs_error_prefix("screener");
    s->profile_runs += s->profiling;
    float pooled[512];
    const float *h = (const float *)s->out_a->data;
    for (int c = 0; c < 512; c++) {
        float v = h[c];
        for (int k = 1; k < s->n; k++)
            v = fmaxf(v, h[(size_t)k * 512 + c]);
        pooled[c] = v;
    }
    fc_apply(s->fc, pooled, 1, logit);
    return 0;
}
