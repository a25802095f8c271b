/*
 * Fuzz target for model/weights: any byte string given to gs_weights_open_buffer must either
 * be rejected with a message naming the input, or yield tensors that can all be read back
 * through gs_weights_get_f32 without touching memory outside the input (ASan checks that,
 * since open_buffer reads from its own exact-size copy).
 *
 * Built with -fsanitize=fuzzer when GS_FUZZ is on; otherwise linked with tests/fuzz/
 * standalone_main.c, which replays the seed corpus once in every build.
 */
#include "model/weights.h"
#include "ops/error.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void read_every_tensor(const gs_weights *w)
{
    size_t n = gs_weights_count(w);
    for (size_t i = 0; i < n; i++) {
        const gs_tensor *t = gs_weights_at(w, i);
        GS_ASSERT(t->name && t->name[0]);
        GS_ASSERT(gs_weights_find(w, t->name) == t);
        GS_ASSERT(t->ndim >= 0 && t->ndim <= GS_WEIGHTS_MAX_DIMS);
        size_t esize = gs_dtype_size(t->dtype);
        GS_ASSERT(t->nbytes % esize == 0);
        size_t count = t->nbytes / esize;
        float *dst = malloc(count ? count * sizeof *dst : 1);
        GS_ASSERT(dst);
        GS_ASSERT(gs_weights_get_f32(w, t->name, t->ndim, t->shape, dst) == 0);
        /* A wrong rank must be refused, not read. */
        if (t->ndim < GS_WEIGHTS_MAX_DIMS) {
            int64_t longer[GS_WEIGHTS_MAX_DIMS] = {0};
            memcpy(longer, t->shape, (size_t)t->ndim * sizeof longer[0]);
            longer[t->ndim] = 1;
            GS_ASSERT(gs_weights_get_f32(w, t->name, t->ndim + 1, longer, dst) == -1);
        }
        free(dst);
    }
    size_t m = gs_weights_meta_count(w);
    for (size_t i = 0; i < m; i++) {
        const char *key, *value;
        gs_weights_meta_at(w, i, &key, &value);
        GS_ASSERT(gs_weights_meta(w, key) == value);
    }
    if (gs_weights_check_bundle(w) != 0)
        GS_ASSERT(strncmp(gs_error_get(), "fuzz: ", 6) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gs_weights *w = gs_weights_open_buffer(data, size, "fuzz");
    if (!w) {
        GS_ASSERT(strncmp(gs_error_get(), "fuzz: ", 6) == 0);
        return 0;
    }
    read_every_tensor(w);
    gs_weights_destroy(&w);
    GS_ASSERT(w == NULL);
    return 0;
}
