/*
 * Fuzz target for the GeoJSON annotation reader (stages/slide/annotation): any file text must
 * be refused with an error naming the file, or give features whose bounds, areas and
 * rasterisation are finite and stay inside the caller's mask (ASan checks the writes), with
 * every message about a left-out feature naming the file.
 *
 * Built with -fsanitize=fuzzer when GS_FUZZ is on; otherwise linked with tests/fuzz/
 * standalone_main.c, which replays the seed corpus once in every build.
 */
#include "ops/error.h"
#include "stages/slide/annotation.h"
#include "tests/fuzz/fuzz_util.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Mask side, cells: small so that every execution stays fast whatever the geometry. */
#define MASK 24

static void use_feature(const gs_annotations *a, size_t i)
{
    double x0, y0, x1, y1;
    gs_annotations_bounds(a, i, &x0, &y0, &x1, &y1);
    GS_ASSERT(isfinite(x0) && isfinite(y0) && isfinite(x1) && isfinite(y1));
    GS_ASSERT(x0 <= x1 && y0 <= y1);
    GS_ASSERT(!isnan(gs_annotations_area(a, i)));
    GS_ASSERT(gs_annotations_class(a, i) != NULL);
    uint8_t *mask = calloc(MASK * MASK, 1);
    GS_ASSERT(mask);
    double span = fmax(x1 - x0, y1 - y0);
    double cell = span > 0 && isfinite(span / MASK) ? span / MASK : 1.0;
    if (gs_annotations_fill(a, i, x0, y0, cell, mask, MASK, MASK) == 0)
        for (size_t j = 0; j < MASK * MASK; j++)
            GS_ASSERT(mask[j] <= 1);
    free(mask);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_write_input("fuzz.geojson", data, size);
    gs_annotations *a = gs_annotations_read(path);
    if (!a) {
        GS_ASSERT(strncmp(gs_error_get(), path, strlen(path)) == 0 ||
                  strncmp(gs_error_get(), "out of memory", 13) == 0);
        return 0;
    }
    size_t n = gs_annotations_count(a);
    for (size_t i = 0; i < n; i++) {
        use_feature(a, i);
        GS_ASSERT(gs_annotations_file_index(a, i) >= i);
    }
    for (size_t i = 0; i < gs_annotations_message_count(a); i++)
        GS_ASSERT(strncmp(gs_annotations_message(a, i), path, strlen(path)) == 0);
    /* The whole-slide mask over a slide of 4096 x 4096 level-0 pixels, 256-pixel cells. */
    uint8_t mask[16 * 16];
    int64_t on = gs_annotations_slide_mask(a, NULL, 4096, 4096, NULL, 0, 0, 256.0, mask, 16, 16);
    GS_ASSERT(on >= -1 && on <= 16 * 16);
    gs_annotations_destroy(&a);
    GS_ASSERT(a == NULL);
    return 0;
}
