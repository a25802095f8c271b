/*
 * gastroscreen: the command-line tool. Each command is a module of its own (cmd_*.h); this
 * file only dispatches.
 */
#include <stdio.h>
#include <string.h>

#include "daemon/cmd_bench.h"
#include "daemon/cmd_infer.h"
#include "daemon/cmd_tiles.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: gastroscreen [--help] [--version] COMMAND [ARGS]\n"
            "\n"
            "Screens gastric biopsy whole-slide images for cancer.\n"
            "\n"
            "commands:\n"
            "  tiles SLIDE [--out DIR]   print the slide's facts and its tissue plan; write the\n"
            "                            mask, the plan overlay and the plan as JSON\n"
            "  infer --model BUNDLE (TILE.png | SLIDE --x X --y Y) [--out DIR]\n"
            "                            run the networks on one tile; print scores, write the\n"
            "                            heatmap PNG (and every raw output as .npy with --out)\n"
            "  bench [--json] [--threads N] [--repeat N] [--quick] [--model BUNDLE]\n"
            "                            time our deformable conv vs dense oneDNN convs and the\n"
            "                            networks on this machine (DESIGN.md section 8)\n"
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
    if (!strcmp(cmd, "bench"))
        return gs_cmd_bench(argc - 1, argv + 1);
    if (!strcmp(cmd, "tiles"))
        return gs_cmd_tiles(argc - 1, argv + 1);
    if (!strcmp(cmd, "infer"))
        return gs_cmd_infer(argc - 1, argv + 1);
    fprintf(stderr, "gastroscreen: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
