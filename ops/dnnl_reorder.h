/*
 * dnnl_reorder: a one-off oneDNN reorder between two memory layouts.
 *
 * Weights are reordered once, at load, into the blocked layout a primitive asked for
 * (format_tag_any); the deformable conv and the network runtime both need exactly this, so it
 * lives here rather than twice. Not for hot paths: it creates and destroys a primitive and a
 * stream on every call.
 */
#ifndef GS_OPS_DNNL_REORDER_H
#define GS_OPS_DNNL_REORDER_H

#include <oneapi/dnnl/dnnl.h>

/* Copies the tensor at `from` (laid out as from_md) to `to` (laid out as to_md) on `engine`.
 * Both buffers are the caller's and must hold their descriptor's size. Returns 0, or -1 with
 * the error "oneDNN: reorder <step>: <status>". */
int gs_dnnl_reorder(dnnl_engine_t engine, const dnnl_memory_desc_t *from_md, void *from,
                    const dnnl_memory_desc_t *to_md, void *to);

#endif
