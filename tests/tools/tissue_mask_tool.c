/*
 * tissue_mask_tool: the classical tissue mask (stages/slide/tissue.h) of one PNG image.
 *
 *     tissue_mask_tool IN.png MPP OUT_MASK.png
 *
 * Reads IN.png as RGB (alpha composited over white, as the slide reader does), runs
 * gs_tissue_mask() with the default options at MPP um/px (the image's real pixel size; it
 * sizes the cleanup), writes the mask as a grey PNG (255 = tissue, 0 = not) and prints the
 * stats as one JSON line on stdout. model/pytorch/learn_foreground.py uses it to make the
 * foreground network's training labels from the C implementation itself, not from a port.
 * Exit status 0 on success, 1 with the error on stderr, 2 on bad usage.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "ops/error.h"
#include "stages/slide/png_io.h"
#include "stages/slide/tissue.h"

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s IN.png MPP OUT_MASK.png\n", argv[0]);
        return 2;
    }
    char *end = NULL;
    double mpp = strtod(argv[2], &end);
    if (end == argv[2] || *end != '\0' || !(mpp > 0.0)) {
        fprintf(stderr, "%s: MPP %s is not a positive number\n", argv[0], argv[2]);
        return 2;
    }
    int rc = 1;
    uint8_t *rgb = NULL;
    int w = 0, h = 0;
    if (gs_png_read(argv[1], 3, &rgb, &w, &h) != 0) {
        fprintf(stderr, "%s\n", gs_error_get());
        return 1;
    }
    uint8_t *mask = malloc((size_t)w * (size_t)h);
    if (mask == NULL) {
        fprintf(stderr, "%s: out of memory for a %dx%d mask\n", argv[1], w, h);
        goto free_rgb;
    }
    gs_tissue_options o;
    gs_tissue_options_default(&o);
    gs_tissue_stats st;
    if (gs_tissue_mask(rgb, w, h, mpp, &o, mask, &st) != 0) {
        fprintf(stderr, "%s: %s\n", argv[1], gs_error_get());
        goto free_mask;
    }
    for (size_t i = 0; i < (size_t)w * (size_t)h; i++)
        mask[i] = mask[i] ? 255 : 0;
    if (gs_png_write(argv[3], mask, w, h, (size_t)w, 1) != 0) {
        fprintf(stderr, "%s\n", gs_error_get());
        goto free_mask;
    }
    printf("{\"width\":%d,\"height\":%d,\"mpp\":%g,\"otsu\":%.6f,\"threshold\":%.6f,"
           "\"median_grey\":%.3f,\"ink_fraction\":%.6f,\"tissue_fraction\":%.6f,"
           "\"brightfield\":%d}\n",
           w, h, mpp, st.otsu, st.threshold, st.median_grey, st.ink_fraction, st.tissue_fraction,
           st.brightfield);
    rc = 0;
free_mask:
    free(mask);
free_rgb:
    free(rgb);
    return rc;
}
