/*
 * dnnl_reorder: a one-off oneDNN reorder between two memory layouts, and the bf16 number
 * format of the reduced-precision paths.
 *
 * Weights are reordered once, at load, into the blocked layout a primitive asked for
 * (format_tag_any); the deformable conv and the network runtime both need exactly this, so it
 * lives here rather than twice. Not for hot paths: it creates and destroys a primitive and a
 * stream on every call.
 *
 * bf16 is the top half of an IEEE float32 (8 exponent bits, 7 mantissa bits): widening is a
 * shift, narrowing rounds to nearest even as oneDNN and the AVX512-BF16 instructions do, so
 * our own kernels (ops/deform_conv, the runtime's transposed conv) and oneDNN's primitives
 * round alike. gs_bf16_native() says whether this CPU executes bf16 dot products natively.
 */
#ifndef GS_OPS_DNNL_REORDER_H
#define GS_OPS_DNNL_REORDER_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <oneapi/dnnl/dnnl.h>

/* Copies the tensor at `from` (laid out as from_md) to `to` (laid out as to_md) on `engine`.
 * Both buffers are the caller's and must hold their descriptor's size. Returns 0, or -1 with
 * the error "oneDNN: reorder <step>: <status>". */
int gs_dnnl_reorder(dnnl_engine_t engine, const dnnl_memory_desc_t *from_md, void *from,
                    const dnnl_memory_desc_t *to_md, void *to);

/* bf16 -> float32 (exact). */
static inline float gs_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* float32 -> bf16, round to nearest even (NaN stays NaN, infinities stay infinite). */
static inline uint16_t gs_bf16_from_f32(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* n values each way (caller-owned arrays). */
void gs_bf16_from_f32_array(const float *src, uint16_t *dst, size_t n);
void gs_bf16_to_f32_array(const uint16_t *src, float *dst, size_t n);

/* 1 if oneDNN runs bf16 convolutions and matmuls natively on this CPU (its effective ISA
 * includes avx512_core_bf16, e.g. Cooper Lake, Sapphire Rapids with AMX, Zen 4), else 0:
 * oneDNN would then emulate bf16 at a fraction of the fp32 speed. */
int gs_bf16_native(void);

/* 1 if oneDNN's effective ISA on this CPU (ONEDNN_MAX_CPU_ISA applied) includes isa, e.g.
 * dnnl_cpu_isa_avx512_core_vnni or dnnl_cpu_isa_avx512_core_amx, else 0. */
int gs_dnnl_isa_has(dnnl_cpu_isa_t isa);

#endif
