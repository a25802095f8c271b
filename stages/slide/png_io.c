#include "stages/slide/png_io.h"

#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ops/error.h"
#include "stages/runtime/fileio.h"

/* Refuse images whose 8-bit RGBA buffer would exceed 1 GiB: no thumbnail, heatmap or mask of
 * this project comes near it, and a forged header must not make us allocate gigabytes. */
enum { PNG_MAX_PIXELS = 1 << 28 };

/* libpng reports errors through a callback that must not return; we keep its message and
 * jump back to the setjmp in the caller. */
typedef struct {
    char msg[256];
} png_err_ctx;

static void png_error_cb(png_structp png, png_const_charp msg)
{
    png_err_ctx *ctx = png_get_error_ptr(png);
    snprintf(ctx->msg, sizeof ctx->msg, "%s", msg ? msg : "unknown libpng error");
    png_longjmp(png, 1);
}

/* Warnings (e.g. "iCCP: known incorrect sRGB profile") do not make an image unusable and
 * would only clutter a worker's log. */
static void png_warning_cb(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

/* Encodes the image into the open stream. Returns 0 or -1 with ctx->msg set. Kept apart from
 * the file handling so that nothing modified after setjmp is needed after a longjmp. */
static int png_encode(FILE *fp, const uint8_t *px, int w, int h, size_t stride, int channels,
                      png_err_ctx *ctx)
{
    png_structp png =
        png_create_write_struct(PNG_LIBPNG_VER_STRING, ctx, png_error_cb, png_warning_cb);
    if (!png) {
        snprintf(ctx->msg, sizeof ctx->msg, "out of memory");
        return -1;
    }
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        snprintf(ctx->msg, sizeof ctx->msg, "out of memory");
        return -1;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        return -1;
    }
    int colour = channels == 1   ? PNG_COLOR_TYPE_GRAY
                 : channels == 3 ? PNG_COLOR_TYPE_RGB
                                 : PNG_COLOR_TYPE_RGB_ALPHA;
    png_init_io(png, fp);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, colour, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < h; y++)
        png_write_row(png, px + (size_t)y * stride);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return 0;
}

int gs_png_write(const char *path, const uint8_t *px, int w, int h, size_t stride, int channels)
{
    if (!path)
        return gs_error_set("gs_png_write: no path");
    if (!px || w <= 0 || h <= 0 || (channels != 1 && channels != 3 && channels != 4) ||
        stride < (size_t)w * (size_t)channels)
        return gs_error_set("%s: cannot write PNG: invalid image (%dx%d, %d channels, stride %zu)",
                            path, w, h, channels, stride);

    /* Encoded in memory, then written whole through the one atomic write (stages/runtime/
     * fileio): a reader never sees half an image, and a failed write keeps the old one. */
    char *buf = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&buf, &len);
    if (!fp)
        return gs_error_set("%s: out of memory", path);
    png_err_ctx ctx = {{0}};
    int enc = png_encode(fp, px, w, h, stride, channels, &ctx);
    if (fclose(fp) != 0 && enc == 0) {
        enc = -1;
        snprintf(ctx.msg, sizeof ctx.msg, "out of memory");
    }
    /* A report image is meant to be read by others: 0644 whatever the umask. */
    int rc = enc != 0 ? gs_error_set("%s: cannot write PNG: %s", path, ctx.msg)
                      : gs_write_atomic(path, buf, len, 0644);
    free(buf);
    return rc;
}

/* Decodes the stream (signature already consumed) into a malloc'd RGBA buffer. Returns the
 * buffer, or NULL with ctx->msg set. */
static uint8_t *png_decode_rgba(FILE *fp, int *w, int *h, png_err_ctx *ctx)
{
    /* Assigned after setjmp and freed after a longjmp, hence volatile. */
    uint8_t *volatile buf = NULL;
    png_bytep *volatile rows = NULL;

    png_structp png =
        png_create_read_struct(PNG_LIBPNG_VER_STRING, ctx, png_error_cb, png_warning_cb);
    if (!png) {
        snprintf(ctx->msg, sizeof ctx->msg, "out of memory");
        return NULL;
    }
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        snprintf(ctx->msg, sizeof ctx->msg, "out of memory");
        return NULL;
    }
    if (setjmp(png_jmpbuf(png))) {
        free(rows);
        free(buf);
        png_destroy_read_struct(&png, &info, NULL);
        return NULL;
    }
    png_init_io(png, fp);
    png_set_sig_bytes(png, 8);
    png_read_info(png, info);

    png_uint_32 width = png_get_image_width(png, info);
    png_uint_32 height = png_get_image_height(png, info);
    if ((uint64_t)width * height > PNG_MAX_PIXELS)
        png_error(png, "image too large");
    int depth = png_get_bit_depth(png, info);
    int colour = png_get_color_type(png, info);

    /* Normalise every colour type and depth to 8-bit RGBA. */
    if (colour == PNG_COLOR_TYPE_PALETTE)
        png_set_palette_to_rgb(png);
    if (colour == PNG_COLOR_TYPE_GRAY && depth < 8)
        png_set_expand_gray_1_2_4_to_8(png);
    if (png_get_valid(png, info, PNG_INFO_tRNS))
        png_set_tRNS_to_alpha(png);
    if (depth == 16)
        png_set_scale_16(png);
    if (colour == PNG_COLOR_TYPE_GRAY || colour == PNG_COLOR_TYPE_GRAY_ALPHA)
        png_set_gray_to_rgb(png);
    if (!(colour & PNG_COLOR_MASK_ALPHA) && !png_get_valid(png, info, PNG_INFO_tRNS))
        png_set_filler(png, 0xff, PNG_FILLER_AFTER);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_rowbytes(png, info) != (size_t)width * 4)
        png_error(png, "unexpected row size after conversion to RGBA");

    buf = malloc((size_t)width * height * 4);
    rows = malloc(sizeof(png_bytep) * height);
    if (!buf || !rows)
        png_error(png, "out of memory");
    for (png_uint_32 y = 0; y < height; y++)
        rows[y] = buf + (size_t)y * width * 4;
    png_read_image(png, rows);
    png_read_end(png, NULL);

    uint8_t *out = buf;
    free(rows);
    png_destroy_read_struct(&png, &info, NULL);
    *w = (int)width;
    *h = (int)height;
    return out;
}

int gs_png_read(const char *path, int channels, uint8_t **px, int *w, int *h)
{
    if (px)
        *px = NULL;
    if (!path)
        return gs_error_set("gs_png_read: no path");
    if (!px || !w || !h || (channels != 3 && channels != 4))
        return gs_error_set("%s: cannot read PNG: channels must be 3 or 4 (got %d)", path,
                            channels);

    FILE *fp = fopen(path, "rb");
    if (!fp)
        return gs_error_set("%s: %s", path, strerror(errno));
    uint8_t sig[8];
    size_t got = fread(sig, 1, sizeof sig, fp);
    if (got != sizeof sig || png_sig_cmp(sig, 0, sizeof sig) != 0) {
        if (ferror(fp))
            gs_error_set("%s: %s", path, strerror(errno));
        else
            gs_error_set("%s: not a PNG file (no PNG signature)", path);
        fclose(fp);
        return -1;
    }
    png_err_ctx ctx = {{0}};
    int iw = 0, ih = 0;
    uint8_t *rgba = png_decode_rgba(fp, &iw, &ih, &ctx);
    fclose(fp);
    if (!rgba)
        return gs_error_set("%s: cannot read PNG: %s", path, ctx.msg);

    if (channels == 3) {
        /* In place, front to back: the write position never overtakes the read position. */
        size_t n = (size_t)iw * (size_t)ih;
        for (size_t i = 0; i < n; i++) {
            unsigned a = rgba[i * 4 + 3];
            for (int c = 0; c < 3; c++) {
                unsigned v = rgba[i * 4 + c];
                rgba[i * 3 + c] = (uint8_t)((v * a + 255u * (255u - a) + 127u) / 255u);
            }
        }
        uint8_t *shrunk = realloc(rgba, n * 3);
        if (shrunk)
            rgba = shrunk;
    }
    *px = rgba;
    *w = iw;
    *h = ih;
    return 0;
}
