/*
 * gastroscreen: the command-line tool. Each command is a module of its own (cmd_*.h); this
 * file only dispatches.
 */
#include <stdio.h>
#include <string.h>

#include "daemon/cmd_bench.h"
#include "daemon/cmd_infer.h"
#include "daemon/cmd_screen.h"
#include "daemon/cmd_status.h"
#include "daemon/cmd_submit.h"
#include "daemon/cmd_tiles.h"
#include "daemon/cmd_top.h"
#include "daemon/cmd_watch.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: gastroscreen [--help] [--version] COMMAND [ARGS]\n"
            "\n"
            "Screens gastric biopsy whole-slide images for cancer.\n"
            "\n"
            "commands:\n"
            "  screen SLIDE... [--model BUNDLE] [--out DIR] [--config FILE]\n"
            "                            screen slides in this process (the service's stages\n"
            "                            as threads); one verdict line per slide\n"
            "  tiles SLIDE [--out DIR]   print the slide's facts and its tissue plan; write the\n"
            "                            mask, the plan overlay and the plan as JSON\n"
            "  infer --model BUNDLE (TILE.png | SLIDE --x X --y Y) [--out DIR]\n"
            "                            run the networks on one tile; print scores, write the\n"
            "                            heatmap PNG (and every raw output as .npy with --out)\n"
            "  bench [--json] [--threads N] [--repeat N] [--quick] [--model BUNDLE]\n"
            "                            time our deformable conv vs dense oneDNN convs and the\n"
            "                            networks on this machine (DESIGN.md section 8)\n"
            "  submit PATH...            submit slides to gastroscreend; prints each slide id\n"
            "  watch [--since SEQ]       print one line per verdict as gastroscreend publishes\n"
            "  status [SLIDE]            state of a slide, or of every slide in flight\n"
            "  top [--once [--json]]     live tiles/s, queue depth, busy %% per stage\n"
            "\n"
            "Run 'gastroscreen COMMAND --help' for a command's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        printf("gastroscreen %s\n", GS_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "screen"))
        return gs_cmd_screen(argc - 1, argv + 1);
    if (!strcmp(cmd, "bench"))
        return gs_cmd_bench(argc - 1, argv + 1);
    if (!strcmp(cmd, "tiles"))
        return gs_cmd_tiles(argc - 1, argv + 1);
    if (!strcmp(cmd, "infer"))
        return gs_cmd_infer(argc - 1, argv + 1);
    if (!strcmp(cmd, "submit"))
        return gs_cmd_submit(argc - 1, argv + 1);
    if (!strcmp(cmd, "watch"))
        return gs_cmd_watch(argc - 1, argv + 1);
    if (!strcmp(cmd, "status"))
        return gs_cmd_status(argc - 1, argv + 1);
    if (!strcmp(cmd, "top"))
        return gs_cmd_top(argc - 1, argv + 1);
    fprintf(stderr, "gastroscreen: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
