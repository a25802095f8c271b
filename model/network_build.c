/*
 * network_build: one walk of each architecture (DLA-34 multi-task with its deformable decoder,
 * foreground, blur, screener) over the bundle's tensors, shared by loading and planning
 * (model/network_internal.h). Shapes and weight names follow network-architecture.md and
 * model/pytorch/networks.py.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/network_internal.h"
#include "ops/error.h"

/* Layer names are built by snprintf from fixed architecture names (at most ~50 characters)
   into 128-byte buffers; gcc cannot see that bound through the nested prefixes. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif

static int note_used(builder *b, const char *full)
{
    if (b->nused == b->cap_used) {
        size_t nc = b->cap_used ? b->cap_used * 2 : 64;
        char **p = realloc(b->used, nc * sizeof *p);
        if (!p)
            return gs_error_set("out of memory");
        b->used = p;
        b->cap_used = nc;
    }
    b->used[b->nused] = strdup(full);
    if (!b->used[b->nused])
        return gs_error_set("out of memory");
    b->nused++;
    return 0;
}

/* Loads tensor <net>.<key> with the given shape into a new float array (caller frees), checks
 * that every value is finite. Returns NULL with the error set. */
static float *get_tensor(builder *b, const char *key, int ndim, int64_t s0, int64_t s1, int64_t s2,
                         int64_t s3)
{
    char full[160];
    snprintf(full, sizeof full, "%s.%s", gs_net_name(b->id), key);
    const int64_t shape[4] = {s0, s1, s2, s3};
    size_t count = 1;
    for (int i = 0; i < ndim; i++)
        count *= (size_t)shape[i];
    float *dst = malloc(count * sizeof(float));
    if (!dst) {
        gs_error_set("out of memory for tensor %s", full);
        return NULL;
    }
    if (gs_weights_get_f32(b->m->w, full, ndim, shape, dst) != 0) {
        free(dst);
        return NULL;
    }
    for (size_t i = 0; i < count; i++)
        if (!isfinite(dst[i])) {
            gs_error_set("tensor %s: value %zu is not finite (%g)", full, i, (double)dst[i]);
            free(dst);
            return NULL;
        }
    if (note_used(b, full)) {
        free(dst);
        return NULL;
    }
    return dst;
}

static void format_shape(char *buf, size_t n, int ndim, const int64_t *shape)
{
    size_t used = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, "%s%lld", i ? "," : "", (long long)shape[i]);
    if (used < n)
        snprintf(buf + used, n - used, "]");
}

/* Checking walk: tensor <net>.<key> is in the bundle with exactly this shape (its values are
 * not read, so not checked finite). Returns 0 or -1 with the error set in the words of
 * gs_weights_get_f32. */
static int check_tensor(builder *b, const char *key, int ndim, int64_t s0, int64_t s1, int64_t s2,
                        int64_t s3)
{
    char full[160];
    snprintf(full, sizeof full, "%s.%s", gs_net_name(b->id), key);
    const int64_t shape[4] = {s0, s1, s2, s3};
    const gs_tensor *t = gs_weights_find(b->m->w, full);
    if (!t)
        return gs_error_set("tensor %s: missing", full);
    int same = t->ndim == ndim;
    for (int i = 0; i < ndim && same; i++)
        same = t->shape[i] == shape[i];
    if (!same) {
        char got[160], want[96];
        format_shape(got, sizeof got, t->ndim, t->shape);
        format_shape(want, sizeof want, ndim, shape);
        return gs_error_set("tensor %s: shape %s but expected %s", full, got, want);
    }
    return note_used(b, full);
}

/* Checking walk: the four tensors of BN <bn> over cout channels. */
static int check_bn(builder *b, const char *bn, int cout)
{
    static const char *const parts[4] = {"weight", "bias", "running_mean", "running_var"};
    char k[160];
    for (int i = 0; i < 4; i++) {
        snprintf(k, sizeof k, "%s.%s", bn, parts[i]);
        if (check_tensor(b, k, 1, cout, 0, 0, 0))
            return -1;
    }
    return 0;
}

/* Checking walk: a conv with this geometry and no weights, enough for a dry plan step. */
static gs_rt_conv shape_only_conv(int cin, int cout, int k, int stride)
{
    gs_rt_conv c;
    memset(&c, 0, sizeof c);
    c.cin = cin;
    c.cout = cout;
    c.kh = c.kw = k;
    c.stride = stride;
    c.pad = k / 2;
    return c;
}

static layer *push_layer(builder *b, const char *name, int kind)
{
    layer_list *l = &b->m->layers[b->id];
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 64;
        layer *v = realloc(l->v, nc * sizeof *v);
        if (!v) {
            gs_error_set("out of memory");
            return NULL;
        }
        l->v = v;
        l->cap = nc;
    }
    layer *y = &l->v[l->n++];
    memset(y, 0, sizeof *y);
    snprintf(y->name, sizeof y->name, "%s", name);
    y->kind = kind;
    return y;
}

static const layer *take_layer(builder *b, const char *name, int kind)
{
    const layer_list *l = &b->m->layers[b->id];
    GS_ASSERT(b->next < l->n);
    const layer *y = &l->v[b->next++];
    GS_ASSERT(y->kind == kind && !strcmp(y->name, name));
    return y;
}

/* Folds BN "<bn>.{weight,bias,running_mean,running_var}" into w/b. */
static int fold(builder *b, const char *bn, float *w, float *bias, int cout, size_t per_out)
{
    char k[128];
    float *g = NULL, *be = NULL, *mu = NULL, *var = NULL;
    int rc = -1;
    snprintf(k, sizeof k, "%s.weight", bn);
    if (!(g = get_tensor(b, k, 1, cout, 0, 0, 0)))
        goto done;
    snprintf(k, sizeof k, "%s.bias", bn);
    if (!(be = get_tensor(b, k, 1, cout, 0, 0, 0)))
        goto done;
    snprintf(k, sizeof k, "%s.running_mean", bn);
    if (!(mu = get_tensor(b, k, 1, cout, 0, 0, 0)))
        goto done;
    snprintf(k, sizeof k, "%s.running_var", bn);
    if (!(var = get_tensor(b, k, 1, cout, 0, 0, 0)))
        goto done;
    for (int i = 0; i < cout; i++)
        if (var[i] < 0.0f) {
            gs_error_set("tensor %s.%s: variance %d is negative", gs_net_name(b->id), k, i);
            goto done;
        }
    gs_rt_fold_bn(w, bias, cout, per_out, g, be, mu, var, b->m->eps);
    rc = 0;
done:
    free(g);
    free(be);
    free(mu);
    free(var);
    return rc;
}

/* Planning: the layer called `name` among those not yet taken (NULL if none). */
static const layer *peek_layer(const builder *b, const char *name)
{
    const layer_list *l = &b->m->layers[b->id];
    for (size_t i = b->next; i < l->n; i++)
        if (l->v[i].kind == LAYER_CONV && !strcmp(l->v[i].name, name))
            return &l->v[i];
    return NULL;
}

/* conv <conv>.weight [cout,cin,k,k] (+ <bias_key> if not NULL) (+ BN <bn> if not NULL), then
 * a plan step into *dst (sum into it if sum). next, if not NULL, names the conv that alone
 * reads the (new) output (gs_rt_plan_conv_feeding). */
static int conv_bn_feeding(builder *b, const char *conv, const char *bias_key, const char *bn,
                           gs_rt_tensor *src, int cout, int k, int stride, int sum, gs_act act,
                           gs_rt_tensor **dst, const char *next)
{
    const layer *y;
    if (b->checking) {
        char key[128];
        snprintf(key, sizeof key, "%s.weight", conv);
        if (check_tensor(b, key, 4, cout, src->c, k, k) ||
            (bias_key && check_tensor(b, bias_key, 1, cout, 0, 0, 0)) ||
            (bn && check_bn(b, bn, cout)))
            return -1;
        gs_rt_conv g = shape_only_conv(src->c, cout, k, stride);
        return gs_rt_plan_conv(b->p, &g, src, dst, sum, act);
    }
    if (b->loading) {
        char key[128];
        int cin = src->c;
        snprintf(key, sizeof key, "%s.weight", conv);
        float *w = get_tensor(b, key, 4, cout, cin, k, k), *bias = NULL;
        if (!w)
            return -1;
        if (bias_key)
            bias = get_tensor(b, bias_key, 1, cout, 0, 0, 0);
        else if (bn)
            bias = calloc((size_t)cout, sizeof(float));
        int rc = 0;
        if ((bias_key || bn) && !bias)
            rc = bias_key ? -1 : gs_error_set("out of memory for %s", conv);
        if (rc == 0 && bn)
            rc = fold(b, bn, w, bias, cout, (size_t)cin * k * k);
        layer *ny = rc == 0 ? push_layer(b, conv, LAYER_CONV) : NULL;
        if (ny)
            rc = gs_rt_conv_init(&ny->conv, b->m->engine, cin, cout, k, stride, k / 2, 0, w, bias);
        else
            rc = -1;
        free(w);
        free(bias);
        if (rc)
            return -1;
        y = ny;
    } else {
        y = take_layer(b, conv, LAYER_CONV);
    }
    const layer *ny = next && !b->loading && !sum ? peek_layer(b, next) : NULL;
    if (ny)
        return gs_rt_plan_conv_feeding(b->p, &y->conv, src, dst, act, &ny->conv);
    return gs_rt_plan_conv(b->p, &y->conv, src, dst, sum, act);
}

static int conv_bn(builder *b, const char *conv, const char *bias_key, const char *bn,
                   gs_rt_tensor *src, int cout, int k, int stride, int sum, gs_act act,
                   gs_rt_tensor **dst)
{
    return conv_bn_feeding(b, conv, bias_key, bn, src, cout, k, stride, sum, act, dst, NULL);
}

static const gs_act act_none = {GS_ACT_NONE, 0.0f};
static const gs_act act_relu = {GS_ACT_RELU, 0.0f};

/* Root: 1x1 conv over cat(parts) + BN + act, split by input-channel ranges into nparts convs
 * accumulating in *dst through sum post-ops. */
static int root(builder *b, const char *pfx, gs_rt_tensor **parts, int nparts, int cout,
                gs_rt_tensor **dst)
{
    char name[128];
    if (b->checking) {
        int cin = 0;
        for (int i = 0; i < nparts; i++)
            cin += parts[i]->c;
        snprintf(name, sizeof name, "%s.conv.weight", pfx);
        if (check_tensor(b, name, 4, cout, cin, 1, 1))
            return -1;
        snprintf(name, sizeof name, "%s.bn", pfx);
        if (check_bn(b, name, cout))
            return -1;
        for (int i = 0; i < nparts; i++) {
            gs_rt_conv g = shape_only_conv(parts[i]->c, cout, 1, 1);
            if (gs_rt_plan_conv(b->p, &g, parts[i], dst, i > 0, act_none))
                return -1;
        }
        return 0;
    }
    if (b->loading) {
        int cin = 0;
        for (int i = 0; i < nparts; i++)
            cin += parts[i]->c;
        snprintf(name, sizeof name, "%s.conv.weight", pfx);
        float *w = get_tensor(b, name, 4, cout, cin, 1, 1);
        float *bias = calloc((size_t)cout, sizeof(float));
        float *slice = malloc((size_t)cout * cin * sizeof(float));
        int rc = w ? 0 : -1;
        if (rc == 0 && (!bias || !slice))
            rc = gs_error_set("out of memory for %s", pfx);
        snprintf(name, sizeof name, "%s.bn", pfx);
        if (rc == 0)
            rc = fold(b, name, w, bias, cout, (size_t)cin);
        for (int i = 0, off = 0; rc == 0 && i < nparts; off += parts[i]->c, i++) {
            int pc = parts[i]->c;
            for (int o = 0; o < cout; o++)
                memcpy(slice + (size_t)o * pc, w + (size_t)o * cin + off, pc * sizeof(float));
            snprintf(name, sizeof name, "%s.conv[%d]", pfx, i);
            layer *y = push_layer(b, name, LAYER_CONV);
            rc = y ? gs_rt_conv_init(&y->conv, b->m->engine, pc, cout, 1, 1, 0, 0, slice,
                                     i == 0 ? bias : NULL)
                   : -1;
        }
        free(w);
        free(bias);
        free(slice);
        if (rc)
            return -1;
    }
    for (int i = 0; i < nparts; i++) {
        const layer *y;
        snprintf(name, sizeof name, "%s.conv[%d]", pfx, i);
        if (b->loading)
            y = &b->m->layers[b->id].v[b->m->layers[b->id].n - nparts + i];
        else
            y = take_layer(b, name, LAYER_CONV);
        if (gs_rt_plan_conv(b->p, &y->conv, parts[i], dst, i > 0,
                            i == nparts - 1 ? b->m->act : act_none))
            return -1;
    }
    return 0;
}

/* Loads (and checks) weights the forward never uses: the levels=2 trees' discarded project. */
static int load_unused_project(builder *b, const char *pfx, int cin, int cout)
{
    if (!b->loading)
        return 0;
    char k[128];
    snprintf(k, sizeof k, "%s.project.0.weight", pfx);
    if (b->checking) {
        if (check_tensor(b, k, 4, cout, cin, 1, 1))
            return -1;
        snprintf(k, sizeof k, "%s.project.1", pfx);
        return check_bn(b, k, cout);
    }
    float *w = get_tensor(b, k, 4, cout, cin, 1, 1);
    float *bias = calloc((size_t)cout, sizeof(float));
    int rc = w ? 0 : -1;
    if (rc == 0 && !bias)
        rc = gs_error_set("out of memory for %s", pfx);
    snprintf(k, sizeof k, "%s.project.1", pfx);
    if (rc == 0)
        rc = fold(b, k, w, bias, cout, (size_t)cin);
    free(w);
    free(bias);
    return rc;
}

/* BasicBlock: out = act(bn2(conv2(act(bn1(conv1(x))))) + residual). The residual is either a
 * 1x1 project of `bottom` written straight into out (proj != 0) or a copy of `bottom`. */
static int basic_block(builder *b, const char *pfx, gs_rt_tensor *x, gs_rt_tensor *bottom,
                       int project, const char *proj_pfx, int cout, int stride, gs_rt_tensor **out)
{
    char c1[128], b1[128], c2[128], b2[128];
    snprintf(c1, sizeof c1, "%s.conv1", pfx);
    snprintf(b1, sizeof b1, "%s.bn1", pfx);
    snprintf(c2, sizeof c2, "%s.conv2", pfx);
    snprintf(b2, sizeof b2, "%s.bn2", pfx);
    gs_rt_tensor *t = NULL;
    *out = NULL;
    if (conv_bn_feeding(b, c1, NULL, b1, x, cout, 3, stride, 0, b->m->act, &t, c2))
        return -1;
    if (project) {
        char pc[128], pb[128];
        snprintf(pc, sizeof pc, "%s.project.0", proj_pfx);
        snprintf(pb, sizeof pb, "%s.project.1", proj_pfx);
        if (conv_bn(b, pc, NULL, pb, bottom, cout, 1, 1, 0, act_none, out))
            return -1;
    } else if (gs_rt_plan_copy(b->p, bottom, out)) {
        return -1;
    }
    if (conv_bn(b, c2, NULL, b2, t, cout, 3, 1, 1, b->m->act, out))
        return -1;
    gs_rt_plan_release(b->p, t);
    return 0;
}

/* A levels=1 Tree. bottom_given: the already max-pooled input (NULL: pool here if stride 2).
 * extra: children appended to the root after [x2, x1] (and after bottom if level_root). */
static int tree1(builder *b, const char *pfx, gs_rt_tensor *x, gs_rt_tensor *bottom_given, int cout,
                 int stride, int level_root, gs_rt_tensor **extra, int nextra, gs_rt_tensor **out)
{
    gs_rt_tensor *bottom = x, *x1 = NULL, *x2 = NULL;
    int own_bottom = 0;
    if (stride == 2) {
        bottom = bottom_given;
        if (!bottom) {
            if (gs_rt_plan_maxpool2(b->p, x, &bottom))
                return -1;
            own_bottom = 1;
        }
    }
    char s[128];
    snprintf(s, sizeof s, "%s.tree1", pfx);
    if (basic_block(b, s, x, bottom, x->c != cout, pfx, cout, stride, &x1))
        return -1;
    snprintf(s, sizeof s, "%s.tree2", pfx);
    if (basic_block(b, s, x1, x1, 0, NULL, cout, 1, &x2))
        return -1;
    gs_rt_tensor *parts[8];
    int np = 0;
    parts[np++] = x2;
    parts[np++] = x1;
    if (level_root)
        parts[np++] = bottom;
    for (int i = 0; i < nextra; i++)
        parts[np++] = extra[i];
    snprintf(s, sizeof s, "%s.root", pfx);
    *out = NULL;
    if (root(b, s, parts, np, cout, out))
        return -1;
    gs_rt_plan_release(b->p, x1);
    gs_rt_plan_release(b->p, x2);
    if (own_bottom)
        gs_rt_plan_release(b->p, bottom);
    return 0;
}

/* A levels=2 Tree with level_root (levels 3 and 4 of DLA-34). */
static int tree2(builder *b, const char *pfx, gs_rt_tensor *x, int cout, gs_rt_tensor **out)
{
    gs_rt_tensor *bottom = NULL, *big = NULL;
    char s[128];
    if (gs_rt_plan_maxpool2(b->p, x, &bottom))
        return -1;
    if (load_unused_project(b, pfx, x->c, cout))
        return -1;
    snprintf(s, sizeof s, "%s.tree1", pfx);
    if (tree1(b, s, x, bottom, cout, 2, 0, NULL, 0, &big))
        return -1;
    gs_rt_tensor *extra[2] = {bottom, big};
    snprintf(s, sizeof s, "%s.tree2", pfx);
    if (tree1(b, s, big, NULL, cout, 1, 0, extra, 2, out))
        return -1;
    gs_rt_plan_release(b->p, bottom);
    gs_rt_plan_release(b->p, big);
    return 0;
}

/* DeformConv: act(BN(DCN(x))) with offsets and mask from conv_offset_mask. */
static int deform(builder *b, const char *pfx, gs_rt_tensor *x, int cout, gs_rt_tensor **out)
{
    char k[128], bn[128];
    gs_rt_tensor *off = NULL;
    snprintf(k, sizeof k, "%s.conv.conv_offset_mask", pfx);
    char bk[160];
    snprintf(bk, sizeof bk, "%s.bias", k);
    gs_rt_plan_set_part(b->p, GS_NET_PART_DCN_OFFSET);
    /* Offsets stay float32 in a bf16 plan: bf16 would put a 30-pixel offset an eighth of a
       pixel off. */
    off = gs_rt_plan_tensor_f32(b->p, 27, x->h, x->w, 0);
    if (!off || conv_bn(b, k, bk, NULL, x, 27, 3, 1, 0, act_none, &off))
        return -1;
    gs_rt_plan_set_part(b->p, GS_NET_PART_DCN);
    const layer *y;
    snprintf(k, sizeof k, "%s.conv", pfx);
    if (b->checking) {
        char wk[160];
        snprintf(wk, sizeof wk, "%s.weight", k);
        snprintf(bk, sizeof bk, "%s.bias", k);
        snprintf(bn, sizeof bn, "%s.actf.0", pfx);
        if (check_tensor(b, wk, 4, cout, x->c, 3, 3) || check_tensor(b, bk, 1, cout, 0, 0, 0) ||
            check_bn(b, bn, cout))
            return -1;
        /* A dry plan reads neither weights nor bias. */
        if (gs_rt_plan_dcn(b->p, NULL, NULL, cout, x, off, b->m->act, 0.0f, 0, out))
            return -1;
        gs_rt_plan_release(b->p, off);
        return 0;
    }
    if (b->loading) {
        int cin = x->c;
        char wk[160];
        snprintf(wk, sizeof wk, "%s.weight", k);
        snprintf(bk, sizeof bk, "%s.bias", k);
        snprintf(bn, sizeof bn, "%s.actf.0", pfx);
        float *w = get_tensor(b, wk, 4, cout, cin, 3, 3);
        float *bias = w ? get_tensor(b, bk, 1, cout, 0, 0, 0) : NULL;
        int rc = w && bias ? fold(b, bn, w, bias, cout, (size_t)cin * 9) : -1;
        layer *ny = rc == 0 ? push_layer(b, k, LAYER_DCN) : NULL;
        if (!ny) {
            free(w);
            free(bias);
            return -1;
        }
        ny->w = w;
        ny->b = bias;
        ny->cin = cin;
        ny->cout = cout;
        y = ny;
    } else {
        y = take_layer(b, k, LAYER_DCN);
    }
    if (gs_rt_plan_dcn(b->p, y->w, y->b, cout, x, off, b->m->act, y->dcn_amax, y->dcn_u8, out))
        return -1;
    gs_rt_plan_release(b->p, off);
    return 0;
}

/* up_j: depthwise transposed conv (kernel 2f, stride f, pad f/2) of x, plus prev (sum). */
static int up_add(builder *b, const char *key, gs_rt_tensor *x, int f, gs_rt_tensor *prev,
                  gs_rt_tensor **out)
{
    const layer *y;
    gs_rt_plan_set_part(b->p, GS_NET_PART_TRANSPOSED);
    if (b->checking) {
        char wk[160];
        snprintf(wk, sizeof wk, "%s.weight", key);
        if (check_tensor(b, wk, 4, x->c, 1, 2 * f, 2 * f))
            return -1;
        /* gs_rt_plan_dwdeconv wants the repacked kernel even when dry: make the output of
           ConvTranspose2d(kernel 2f, stride f, padding f/2) directly. */
        int ho = (x->h - 1) * f - 2 * (f / 2) + 2 * f, wo = (x->w - 1) * f - 2 * (f / 2) + 2 * f;
        if (prev->c != x->c || prev->h != ho || prev->w != wo)
            return gs_error_set("%s: skip %dx%dx%d does not fit output %dx%dx%d", key, prev->c,
                                prev->h, prev->w, x->c, ho, wo);
        *out = gs_rt_plan_tensor(b->p, x->c, ho, wo, 0);
        return *out ? 0 : -1;
    }
    if (b->loading) {
        char wk[160];
        snprintf(wk, sizeof wk, "%s.weight", key);
        float *w = get_tensor(b, wk, 4, x->c, 1, 2 * f, 2 * f);
        layer *ny = w ? push_layer(b, key, LAYER_CONV) : NULL;
        int rc =
            ny ? gs_rt_conv_init(&ny->conv, b->m->engine, x->c, x->c, 2 * f, f, f / 2, 1, w, NULL)
               : -1;
        free(w);
        if (rc)
            return -1;
        y = ny;
    } else {
        y = take_layer(b, key, LAYER_CONV);
    }
    return gs_rt_plan_dwdeconv(b->p, &y->conv, x, prev, out);
}

/* IDAUp forward over layers[startp..endp) (in place), as CenterNet's. */
static int ida(builder *b, const char *pfx, gs_rt_tensor **layers, int startp, int endp, int o,
               const int *ups)
{
    for (int i = startp + 1; i < endp; i++) {
        int j = i - startp;
        char k[128];
        gs_rt_tensor *pr = NULL, *up = NULL, *node = NULL;
        snprintf(k, sizeof k, "%s.proj_%d", pfx, j);
        if (deform(b, k, layers[i], o, &pr))
            return -1;
        snprintf(k, sizeof k, "%s.up_%d", pfx, j);
        if (up_add(b, k, pr, ups[j], layers[i - 1], &up))
            return -1;
        gs_rt_plan_release(b->p, pr);
        snprintf(k, sizeof k, "%s.node_%d", pfx, j);
        if (deform(b, k, up, o, &node))
            return -1;
        gs_rt_plan_release(b->p, up);
        layers[i] = node;
    }
    return 0;
}

static int fc_layer(builder *b, const char *pfx, int in, int out, const layer **y)
{
    if (b->checking) {
        char k[128];
        snprintf(k, sizeof k, "%s.weight", pfx);
        if (check_tensor(b, k, 2, out, in, 0, 0))
            return -1;
        snprintf(k, sizeof k, "%s.bias", pfx);
        *y = NULL;
        return check_tensor(b, k, 1, out, 0, 0, 0);
    }
    if (b->loading) {
        char k[128];
        snprintf(k, sizeof k, "%s.weight", pfx);
        float *w = get_tensor(b, k, 2, out, in, 0, 0);
        snprintf(k, sizeof k, "%s.bias", pfx);
        float *bias = w ? get_tensor(b, k, 1, out, 0, 0, 0) : NULL;
        layer *ny = bias ? push_layer(b, pfx, LAYER_FC) : NULL;
        if (!ny) {
            free(w);
            free(bias);
            return -1;
        }
        ny->w = w;
        ny->b = bias;
        ny->cin = in;
        ny->cout = out;
        *y = ny;
        return 0;
    }
    *y = take_layer(b, pfx, LAYER_FC);
    return 0;
}

static int build_multitask(builder *b, gs_net_state *st)
{
    gs_act a = b->m->act;
    gs_rt_tensor *x = st->in, *t = NULL, *l[6] = {0};
    if (conv_bn(b, "base.base_layer.0", NULL, "base.base_layer.1", x, 16, 3, 1, 0, a, &t))
        return -1;
    x = t;
    t = NULL;
    /* Each of these outputs is read by the next conv alone (int8: written int8 for it). */
    if (conv_bn_feeding(b, "base.base_layer.3", NULL, "base.base_layer.4", x, 16, 3, 1, 0, a, &t,
                        "base.base_layer.6"))
        return -1;
    gs_rt_plan_release(b->p, x);
    x = t;
    t = NULL;
    if (conv_bn_feeding(b, "base.base_layer.6", NULL, "base.base_layer.7", x, 16, 3, 1, 0, a, &t,
                        "base.level0.0"))
        return -1;
    gs_rt_plan_release(b->p, x);
    if (conv_bn_feeding(b, "base.level0.0", NULL, "base.level0.1", t, 16, 3, 1, 0, a, &l[0],
                        "base.level1.0"))
        return -1;
    gs_rt_plan_release(b->p, t);
    if (conv_bn(b, "base.level1.0", NULL, "base.level1.1", l[0], 32, 3, 2, 0, a, &l[1]))
        return -1;
    gs_rt_plan_release(b->p, l[0]);
    if (tree1(b, "base.level2", l[1], NULL, 64, 2, 0, NULL, 0, &l[2]))
        return -1;
    gs_rt_plan_release(b->p, l[1]);
    if (tree2(b, "base.level3", l[2], 128, &l[3]) || tree2(b, "base.level4", l[3], 256, &l[4]))
        return -1;
    if (tree1(b, "base.level5", l[4], NULL, 512, 2, 1, NULL, 0, &l[5]))
        return -1;
    /* An int8 plan ran the encoder channels-last (model/runtime.h); unless the decoder runs
       channels-last too (AMX), it wants nChw16c: one reorder per level it reads. */
    if (gs_rt_plan_channels_last(b->p) && !st->decoder_cl) {
        gs_rt_plan_set_channels_last(b->p, 0);
        for (int i = 2; i <= 5; i++) {
            gs_rt_tensor *blk = NULL;
            if (gs_rt_plan_to_blocked(b->p, l[i], &blk))
                return -1;
            gs_rt_plan_release(b->p, l[i]);
            l[i] = blk;
        }
    }
    st->out_a = l[5];

    /* DLAUp over [L2..L5] at scales [1,2,4,8], then IDAUp over its first three outputs. */
    gs_rt_tensor *layers[4] = {l[2], l[3], l[4], l[5]}, *outs[3];
    static const int ups0[2] = {1, 2}, ups1[3] = {1, 2, 2}, ups2[4] = {1, 2, 2, 2},
                     upsf[3] = {1, 2, 4};
    if (ida(b, "dla_up.ida_0", layers, 2, 4, 256, ups0))
        return -1;
    outs[2] = layers[3];
    if (ida(b, "dla_up.ida_1", layers, 1, 4, 128, ups1))
        return -1;
    outs[1] = layers[3];
    if (ida(b, "dla_up.ida_2", layers, 0, 4, 64, ups2))
        return -1;
    outs[0] = layers[3];
    if (ida(b, "ida_up", outs, 0, 3, 64, upsf))
        return -1;
    gs_rt_tensor *h = NULL;
    gs_rt_plan_set_part(b->p, GS_NET_PART_HEADS);
    if (conv_bn(b, "seg.0", "seg.0.bias", NULL, outs[2], 256, 3, 1, 0, act_relu, &h))
        return -1;
    /* The seg logits leave the network as float32 whatever the plan's precision. */
    st->out_b = gs_rt_plan_tensor_f32(b->p, 1, h->h, h->w, 0);
    if (!st->out_b || conv_bn(b, "seg.2", "seg.2.bias", NULL, h, 1, 1, 1, 0, act_none, &st->out_b))
        return -1;
    return fc_layer(b, "cls.fc", 512, 1, &st->fc);
}

static int build_foreground(builder *b, gs_net_state *st)
{
    gs_rt_tensor *t1 = NULL, *t2 = NULL, *t3 = NULL;
    if (conv_bn(b, "conv1", NULL, "bn1", st->in, 16, 3, 2, 0, act_relu, &t1) ||
        conv_bn(b, "conv2", NULL, "bn2", t1, 32, 3, 2, 0, act_relu, &t2) ||
        conv_bn(b, "conv3", NULL, "bn3", t2, 64, 3, 2, 0, act_relu, &t3) ||
        conv_bn(b, "logit", "logit.bias", NULL, t3, 1, 1, 1, 0, act_none, &st->out_a))
        return -1;
    return 0;
}

static int build_blur(builder *b, gs_net_state *st)
{
    gs_rt_tensor *t1 = NULL;
    if (conv_bn(b, "conv1", NULL, "bn1", st->in, 16, 5, 2, 0, act_relu, &t1) ||
        conv_bn(b, "conv2", NULL, "bn2", t1, 32, 5, 2, 0, act_relu, &st->out_a))
        return -1;
    return fc_layer(b, "fc", 32, 1, &st->fc);
}

static int build_screener(builder *b, gs_net_state *st)
{
    /* Conv1d(512, 512, 1) over k rows = a 1x1 conv on k images of 512 x 1 x 1; its weight is
       [512,512,1] in the bundle. */
    const layer *y;
    if (b->checking) {
        if (check_tensor(b, "conv.weight", 3, 512, 512, 1, 0) ||
            check_tensor(b, "conv.bias", 1, 512, 0, 0, 0))
            return -1;
        gs_rt_conv g = shape_only_conv(512, 512, 1, 1);
        if (gs_rt_plan_conv(b->p, &g, st->in, &st->out_a, 0, act_relu))
            return -1;
        return fc_layer(b, "fc", 512, 1, &st->fc);
    }
    if (b->loading) {
        float *w = get_tensor(b, "conv.weight", 3, 512, 512, 1, 0);
        float *bias = w ? get_tensor(b, "conv.bias", 1, 512, 0, 0, 0) : NULL;
        layer *ny = bias ? push_layer(b, "conv", LAYER_CONV) : NULL;
        int rc = ny ? gs_rt_conv_init(&ny->conv, b->m->engine, 512, 512, 1, 1, 0, 0, w, bias) : -1;
        free(w);
        free(bias);
        if (rc)
            return -1;
        y = ny;
    } else {
        y = take_layer(b, "conv", LAYER_CONV);
    }
    if (gs_rt_plan_conv(b->p, &y->conv, st->in, &st->out_a, 0, act_relu))
        return -1;
    return fc_layer(b, "fc", 512, 1, &st->fc);
}

int gs_net_build(builder *b, gs_net_state *st)
{
    /* A channels-last plan (int8) takes its input NHWC too: oneDNN has no fast conv from an
       NCHW source to a channels-last destination. */
    int in_plain = b->id != GS_NET_SCREENER && !gs_rt_plan_channels_last(b->p);
    int c = b->id == GS_NET_SCREENER ? 512 : 3;
    st->in = gs_rt_plan_tensor(b->p, c, st->h, st->w, in_plain);
    if (!st->in)
        return -1;
    gs_rt_plan_set_part(b->p, GS_NET_PART_ENCODER);
    switch (b->id) {
    case GS_NET_MULTITASK:
        return build_multitask(b, st);
    case GS_NET_FOREGROUND:
        return build_foreground(b, st);
    case GS_NET_BLUR:
        return build_blur(b, st);
    case GS_NET_SCREENER:
        return build_screener(b, st);
    default:
        GS_ASSERT(0);
    }
    return -1;
}
