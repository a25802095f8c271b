#include "ops/dnnl_reorder.h"

#include <oneapi/dnnl/dnnl_debug.h>

#include "ops/error.h"

#define TRY(call, what)                                                                            \
    do {                                                                                           \
        dnnl_status_t st_ = (call);                                                                \
        if (st_ != dnnl_success) {                                                                 \
            gs_error_set("oneDNN: reorder %s: %s", what, dnnl_status2str(st_));                    \
            goto destroy;                                                                          \
        }                                                                                          \
    } while (0)

int gs_dnnl_reorder(dnnl_engine_t engine, const dnnl_memory_desc_t *from_md, void *from,
                    const dnnl_memory_desc_t *to_md, void *to)
{
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    dnnl_memory_t a = NULL, b = NULL;
    dnnl_stream_t stream = NULL;
    int rc = -1;
    TRY(dnnl_memory_create(&a, from_md, engine, from), "source");
    TRY(dnnl_memory_create(&b, to_md, engine, to), "destination");
    TRY(dnnl_reorder_primitive_desc_create(&pd, from_md, engine, to_md, engine, NULL),
        "descriptor");
    TRY(dnnl_primitive_create(&prim, pd), "primitive");
    TRY(dnnl_stream_create(&stream, engine, dnnl_stream_default_flags), "stream");
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, a}, {DNNL_ARG_TO, b}};
    TRY(dnnl_primitive_execute(prim, stream, 2, args), "execution");
    TRY(dnnl_stream_wait(stream), "wait");
    rc = 0;
destroy:
    if (stream)
        dnnl_stream_destroy(stream);
    if (prim)
        dnnl_primitive_destroy(prim);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    if (b)
        dnnl_memory_destroy(b);
    if (a)
        dnnl_memory_destroy(a);
    return rc;
}

void gs_bf16_from_f32_array(const float *src, uint16_t *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = gs_bf16_from_f32(src[i]);
}

void gs_bf16_to_f32_array(const uint16_t *src, float *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = gs_bf16_to_f32(src[i]);
}

int gs_dnnl_isa_has(dnnl_cpu_isa_t isa)
{
    /* The ISA values are nested bit masks: every ISA that includes isa contains its bits. */
    const unsigned need = (unsigned)isa;
    return ((unsigned)dnnl_get_effective_cpu_isa() & need) == need;
}

int gs_bf16_native(void)
{
    return gs_dnnl_isa_has(dnnl_cpu_isa_avx512_core_bf16);
}
