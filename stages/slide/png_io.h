/*
 * png_io: 8-bit PNG files in and out, for thumbnails, heatmaps, masks and test fixtures.
 *
 * Writing is atomic: the image goes to a temporary file in the destination folder, is flushed
 * to disk and then renamed over the destination, so a reader (a viewer, a report collector, a
 * second process) never sees half a file, and a failed write leaves the old file untouched.
 *
 * Reading accepts every PNG that libpng accepts (palette, grey, grey+alpha, 1/2/4/16-bit,
 * tRNS transparency, interlaced) and returns 8-bit interleaved pixels. Sample values are
 * taken as stored: no gamma or ICC conversion is applied (the same values PIL or OpenCV
 * return, which is what the PyTorch side of the project sees); 16-bit samples are scaled to 8
 * bits by rounding (v * 255 / 65535). Asking for 3 channels composites any alpha over white
 * in the stored (sRGB) values, the same rule the slide reader uses for transparent slide
 * areas; asking for 4 channels returns the alpha (255 where the file has none).
 *
 * Errors are returned as -1 with a message naming the path and the cause (errno text or
 * libpng's own message).
 */
#ifndef GS_STAGES_SLIDE_PNG_IO_H
#define GS_STAGES_SLIDE_PNG_IO_H

#include <stddef.h>
#include <stdint.h>

/* Writes px (w x h, `channels` 1 = grey, 3 = RGB, 4 = RGBA, 8 bits each, rows `stride` bytes
 * apart) to `path` as an 8-bit PNG, through a temporary file in the same folder and a rename.
 * The caller keeps ownership of px. Returns 0, or -1 with a message naming the path. */
int gs_png_write(const char *path, const uint8_t *px, int w, int h, size_t stride, int channels);

/* Reads the PNG at `path` as 8-bit interleaved pixels with `channels` 3 (RGB, alpha composited
 * over white) or 4 (RGBA). On success *px is a malloc'd buffer of w*h*channels bytes (rows
 * w*channels apart) that the caller frees, and *w, *h are set. Returns 0, or -1 with a message
 * naming the path (then *px is NULL). Images over 2^28 pixels are refused. */
int gs_png_read(const char *path, int channels, uint8_t **px, int *w, int *h);

#endif
