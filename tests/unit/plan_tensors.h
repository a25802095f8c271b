/*
 * plan_tensors: test-side filling and reading of gs_rt_tensor buffers from plain NCHW floats,
 * whatever the tensor's layout (plain, nChw16c or channels-last: a plan's default depends on
 * the CPU, model/runtime.h) and element type (float32 or bf16).
 *
 *     test_tensor_fill(t, nchw);          // after planning, before gs_rt_plan_run
 *     float *y = test_tensor_read(t);     // NCHW floats, caller frees
 *
 * Header-only (static functions): the tests link no shared helper library.
 */
#ifndef GS_TESTS_UNIT_PLAN_TENSORS_H
#define GS_TESTS_UNIT_PLAN_TENSORS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/runtime.h"
#include "ops/deform_conv.h"
#include "ops/dnnl_reorder.h"
#include "tests/unit/layouts.h"

static inline float *test_tensor_floats(size_t n)
{
    float *f = calloc(n, sizeof *f);
    if (!f) {
        fprintf(stderr, "plan_tensors: out of memory\n");
        abort();
    }
    return f;
}

/* Fills plan tensor t (float32 or bf16; plain, blocked or channels-last) from NCHW values. */
static inline void test_tensor_fill(gs_rt_tensor *t, const float *nchw)
{
    size_t n = t->nelems;
    float *f = test_tensor_floats(n);
    if (t->plain)
        memcpy(f, nchw, sizeof(float) * t->n * t->c * t->h * t->w);
    else if (t->cl)
        test_nchw_nhwc(nchw, t->n, t->c, (size_t)t->h * t->w, f, 0);
    else
        gs_deform_conv_pack_nchw16c(nchw, t->n, t->c, t->h, t->w, f);
    if (t->bf16)
        gs_bf16_from_f32_array(f, t->data, n);
    else
        memcpy(t->data, f, n * sizeof *f);
    free(f);
}

/* Reads plan tensor t into NCHW floats (caller frees). */
static inline float *test_tensor_read(const gs_rt_tensor *t)
{
    size_t n = t->nelems;
    float *f = test_tensor_floats(n), *out = test_tensor_floats((size_t)t->n * t->c * t->h * t->w);
    if (t->bf16)
        gs_bf16_to_f32_array(t->data, f, n);
    else
        memcpy(f, t->data, n * sizeof *f);
    if (t->plain)
        memcpy(out, f, sizeof(float) * t->n * t->c * t->h * t->w);
    else if (t->cl)
        test_nchw_nhwc(f, t->n, t->c, (size_t)t->h * t->w, out, 1);
    else
        gs_deform_conv_unpack_nchw16c(f, t->n, t->c, t->h, t->w, out);
    free(f);
    return out;
}

#endif
