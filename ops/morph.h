/*
 * morph: binary erosion, dilation, opening and closing with a square structuring element.
 *
 * Used to clean the tissue mask: an opening removes specks of dust and debris smaller than the
 * element, a closing fills pinholes and thin cracks. Masks are uint8, w*h, rows contiguous;
 * any nonzero byte is foreground, and every function rewrites the mask in place as 0/1.
 *
 * The element is the (2r+1)x(2r+1) square centred on the pixel (r = 0 only binarises). Pixels
 * outside the image count as background for dilation and as foreground for erosion: erosion
 * therefore never eats tissue that touches the image edge, and an opening keeps a tissue
 * region that runs off the border (the thumbnail crops tissue, it does not end there), while a
 * closing does not grow the mask beyond what dilation put inside the image. Opening is erosion
 * then dilation and closing is dilation then erosion, both with the same r.
 *
 * The fast functions are separable (a row pass then a column pass) with running counts, so
 * their cost does not depend on r; they allocate a w*h scratch plane and a few rows internally
 * and free them before returning. The `_ref` versions test every element position per pixel
 * (cost grows with r^2) and are there for the tests. No state, no I/O.
 */
#ifndef GS_OPS_MORPH_H
#define GS_OPS_MORPH_H

#include <stdint.h>

/* Each returns 0, or -1 with the message set for a NULL mask, non-positive sizes, negative r or
 * a failed allocation. Erosion and dilation leave the mask unchanged on failure; an opening or
 * closing whose second step fails leaves the first step's result. */
int gs_morph_erode(uint8_t *mask, int w, int h, int r);
int gs_morph_dilate(uint8_t *mask, int w, int h, int r);
int gs_morph_open(uint8_t *mask, int w, int h, int r);
int gs_morph_close(uint8_t *mask, int w, int h, int r);

int gs_morph_erode_ref(uint8_t *mask, int w, int h, int r);
int gs_morph_dilate_ref(uint8_t *mask, int w, int h, int r);

#endif
