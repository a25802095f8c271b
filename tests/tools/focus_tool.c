/*
 * focus_tool: prints the classical focus judgement (ops/focus.h, gs_focus_judge_tile) of PNG
 * files, one line per file, so the PyTorch side (model/pytorch/learn_blur.py evaluate) can put
 * the C implementation itself, not a port of it, beside the blur network on the same crops.
 *
 *     focus_tool [--threshold T] FILE.png ...      (or "-" to read file names from stdin)
 *
 * Each line is "<score> <verdict> <path>" with verdict "blurry", "sharp" or "unjudged" (no
 * tissue pixel to measure; the score is then -1). T defaults to GS_FOCUS_THRESHOLD. Exits 1 if
 * a file cannot be read, 2 on bad usage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/error.h"
#include "ops/focus.h"
#include "stages/slide/png_io.h"

static int judge(const char *path, double threshold)
{
    uint8_t *px = NULL;
    int w = 0, h = 0;
    if (gs_png_read(path, 3, &px, &w, &h) < 0) {
        fprintf(stderr, "focus_tool: %s\n", gs_error_get());
        return -1;
    }
    gs_focus f;
    int rc = gs_focus_judge_tile(px, w, h, (size_t)w * 3, 3, threshold, &f);
    if (rc < 0)
        printf("-1 unjudged %s\n", path);
    else
        printf("%.6f %s %s\n", f.score, rc ? "blurry" : "sharp", path);
    free(px);
    return 0;
}

int main(int argc, char **argv)
{
    double threshold = GS_FOCUS_THRESHOLD;
    int first = 1;
    if (argc > 2 && strcmp(argv[1], "--threshold") == 0) {
        char *end = NULL;
        threshold = strtod(argv[2], &end);
        if (!end || *end) {
            fprintf(stderr, "focus_tool: bad threshold %s\n", argv[2]);
            return 2;
        }
        first = 3;
    }
    if (first >= argc) {
        fprintf(stderr, "usage: focus_tool [--threshold T] FILE.png ... | -\n");
        return 2;
    }
    int failed = 0;
    if (strcmp(argv[first], "-") == 0) {
        char line[4096];
        while (fgets(line, sizeof line, stdin)) {
            line[strcspn(line, "\r\n")] = '\0';
            if (line[0] && judge(line, threshold) < 0)
                failed = 1;
        }
    } else {
        for (int i = first; i < argc; i++)
            if (judge(argv[i], threshold) < 0)
                failed = 1;
    }
    return failed;
}
