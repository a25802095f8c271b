/*
 * plot: small line charts as PNG files, for the curves `gastroscreen eval` draws (ROC,
 * precision-recall) on the unit square.
 *
 * A chart is 520 x 520 pixels: a white canvas, the unit square with a grid every 0.2 and tick
 * labels, a title above and the axis names, and each series as a 2-pixel polyline in its
 * colour (optionally drawn as steps, as ROC and PR curves are). Text uses a built-in 5 x 7
 * pixel font (digits, letters without case, and . , : = ( ) - % / [ ]); other characters print
 * as blanks. Debian's libpng (stages/slide/png_io) writes the file atomically.
 *
 *     gs_plot_series s = {.x = fpr, .y = tpr, .n = k, .rgb = {200, 30, 30}, .steps = 0};
 *     gs_plot_write_png("roc.png", "ROC AUC 0.91", "1 - SPECIFICITY", "SENSITIVITY", &s, 1);
 */
#ifndef GS_DAEMON_CLI_PLOT_H
#define GS_DAEMON_CLI_PLOT_H

#include <stddef.h>
#include <stdint.h>

/* One polyline: n points (x[i], y[i]) in [0, 1] (values outside are clamped), owned by the
 * caller. steps: join consecutive points by a horizontal then a vertical segment. */
typedef struct {
    const double *x, *y;
    size_t n;
    uint8_t rgb[3];
    int steps;
} gs_plot_series;

/* Draws the chart and writes it to path. title, xlabel and ylabel may be NULL. Returns 0, or -1
 * with the error (out of memory, the file cannot be written). */
int gs_plot_write_png(const char *path, const char *title, const char *xlabel, const char *ylabel,
                      const gs_plot_series *series, size_t n_series);

/* Draws text into an RGB image (w x h, rows w*3 apart) with its top-left corner at (x, y), each
 * font pixel `scale` pixels wide, clipped to the image. Exposed for tests. */
void gs_plot_text(uint8_t *img, int w, int h, int x, int y, int scale, const uint8_t rgb[3],
                  const char *text);

#endif
