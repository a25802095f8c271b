#include "daemon/cli/plot.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/error.h"
#include "stages/slide/png_io.h"

enum { SIDE = 520, LEFT = 70, TOP = 50, AREA = 420, GLYPH_W = 5, GLYPH_H = 7 };

/* 5 x 7 glyphs, one byte per row, bit 4 = leftmost column. */
static const struct {
    char c;
    uint8_t rows[GLYPH_H];
} FONT[] = {
    {'0', {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E}},
    {'1', {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'2', {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F}},
    {'3', {0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E}},
    {'4', {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02}},
    {'5', {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E}},
    {'6', {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E}},
    {'7', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08}},
    {'8', {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E}},
    {'9', {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C}},
    {'A', {0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11}},
    {'B', {0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E}},
    {'C', {0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E}},
    {'D', {0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C}},
    {'E', {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F}},
    {'F', {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10}},
    {'G', {0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F}},
    {'H', {0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11}},
    {'I', {0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'J', {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C}},
    {'K', {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11}},
    {'L', {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F}},
    {'M', {0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11}},
    {'N', {0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11}},
    {'O', {0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}},
    {'P', {0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10}},
    {'Q', {0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D}},
    {'R', {0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11}},
    {'S', {0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E}},
    {'T', {0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04}},
    {'U', {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}},
    {'V', {0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04}},
    {'W', {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A}},
    {'X', {0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11}},
    {'Y', {0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04}},
    {'Z', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F}},
    {'.', {0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C}},
    {',', {0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08}},
    {':', {0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00}},
    {'=', {0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00}},
    {'(', {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02}},
    {')', {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08}},
    {'[', {0x0E, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0E}},
    {']', {0x0E, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0E}},
    {'-', {0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00}},
    {'%', {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03}},
    {'/', {0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00}},
};

static const uint8_t *glyph(char c)
{
    c = (char)toupper((unsigned char)c);
    for (size_t i = 0; i < sizeof FONT / sizeof FONT[0]; i++)
        if (FONT[i].c == c)
            return FONT[i].rows;
    return NULL;
}

static void put(uint8_t *img, int w, int h, int x, int y, const uint8_t rgb[3])
{
    if (x < 0 || y < 0 || x >= w || y >= h)
        return;
    memcpy(img + ((size_t)y * w + x) * 3, rgb, 3);
}

void gs_plot_text(uint8_t *img, int w, int h, int x, int y, int scale, const uint8_t rgb[3],
                  const char *text)
{
    for (size_t k = 0; text && text[k]; k++) {
        const uint8_t *g = glyph(text[k]);
        int ox = x + (int)k * (GLYPH_W + 1) * scale;
        for (int r = 0; g && r < GLYPH_H; r++)
            for (int col = 0; col < GLYPH_W; col++)
                if (g[r] & (0x10 >> col))
                    for (int dy = 0; dy < scale; dy++)
                        for (int dx = 0; dx < scale; dx++)
                            put(img, w, h, ox + col * scale + dx, y + r * scale + dy, rgb);
    }
}

/* A 2-pixel line from (x0, y0) to (x1, y1), image coordinates. */
static void line(uint8_t *img, int x0, int y0, int x1, int y1, const uint8_t rgb[3])
{
    int n = abs(x1 - x0) > abs(y1 - y0) ? abs(x1 - x0) : abs(y1 - y0);
    for (int i = 0; i <= n; i++) {
        double t = n ? (double)i / n : 0.0;
        int x = (int)lround(x0 + t * (x1 - x0)), y = (int)lround(y0 + t * (y1 - y0));
        put(img, SIDE, SIDE, x, y, rgb);
        put(img, SIDE, SIDE, x + 1, y, rgb);
        put(img, SIDE, SIDE, x, y + 1, rgb);
    }
}

static int px_x(double v)
{
    v = v < 0 ? 0 : v > 1 ? 1 : v;
    return LEFT + (int)lround(v * AREA);
}

static int px_y(double v)
{
    v = v < 0 ? 0 : v > 1 ? 1 : v;
    return TOP + AREA - (int)lround(v * AREA);
}

int gs_plot_write_png(const char *path, const char *title, const char *xlabel, const char *ylabel,
                      const gs_plot_series *series, size_t n_series)
{
    uint8_t *img = malloc((size_t)SIDE * SIDE * 3);
    if (!img)
        return gs_error_set("plot: out of memory");
    memset(img, 255, (size_t)SIDE * SIDE * 3);
    static const uint8_t grid[3] = {225, 225, 225}, axis[3] = {60, 60, 60}, ink[3] = {0, 0, 0};
    for (int i = 0; i <= 5; i++) {
        double v = i / 5.0;
        line(img, px_x(v), px_y(0), px_x(v), px_y(1), i == 0 ? axis : grid);
        line(img, px_x(0), px_y(v), px_x(1), px_y(v), i == 0 ? axis : grid);
        char label[8];
        snprintf(label, sizeof label, "%.1f", v);
        gs_plot_text(img, SIDE, SIDE, px_x(v) - 9, px_y(0) + 8, 1, ink, label);
        gs_plot_text(img, SIDE, SIDE, LEFT - 26, px_y(v) - 3, 1, ink, label);
    }
    line(img, px_x(1), px_y(0), px_x(1), px_y(1), axis);
    line(img, px_x(0), px_y(1), px_x(1), px_y(1), axis);
    for (size_t s = 0; s < n_series; s++) {
        const gs_plot_series *p = &series[s];
        for (size_t i = 1; i < p->n; i++) {
            int xa = px_x(p->x[i - 1]), ya = px_y(p->y[i - 1]);
            int xb = px_x(p->x[i]), yb = px_y(p->y[i]);
            if (p->steps) {
                line(img, xa, ya, xb, ya, p->rgb);
                line(img, xb, ya, xb, yb, p->rgb);
            } else
                line(img, xa, ya, xb, yb, p->rgb);
        }
    }
    if (title)
        gs_plot_text(img, SIDE, SIDE, LEFT, 14, 2, ink, title);
    if (xlabel)
        gs_plot_text(img, SIDE, SIDE, LEFT + AREA / 2 - (int)strlen(xlabel) * 6, px_y(0) + 26, 2,
                     ink, xlabel);
    if (ylabel)
        gs_plot_text(img, SIDE, SIDE, 4, TOP - 14, 1, ink, ylabel);
    int rc = gs_png_write(path, img, SIDE, SIDE, (size_t)SIDE * 3, 3);
    free(img);
    return rc;
}
