#include "daemon/cli/commands.h"

#include <string.h>

const gs_cli_command gs_cli_commands[] = {
    {"screen", "SLIDE... [--model BUNDLE] [--out DIR] [--config FILE]",
     "screen slides in this process (the service's stages\nas threads); one verdict line per slide",
     gs_cmd_screen},
    {"tiles", "SLIDE [--out DIR]",
     "print the slide's facts and its tissue plan; write the\nmask, the plan overlay and the plan "
     "as JSON",
     gs_cmd_tiles},
    {"infer", "--model BUNDLE (TILE.png | SLIDE --x X --y Y) [--out DIR] [--json]",
     "run the networks on one tile; print scores, write the\nheatmap PNG (and every raw output as "
     ".npy with --out;\nevery network's judgement as JSON with --json)",
     gs_cmd_infer},
    {"bench", "[--json] [--threads N] [--repeat N] [--quick] [--model BUNDLE]",
     "time our deformable conv vs dense oneDNN convs and the\nnetworks on this machine (DESIGN.md "
     "section 8)",
     gs_cmd_bench},
    {"calibrate", "--model BUNDLE --tiles DIR [--max N] --out BUNDLE8",
     "record the multi-task network's activation ranges on\nPNG tiles and write a bundle that "
     "runs precision int8",
     gs_cmd_calibrate},
    {"refine", "SLIDE ANNOTATION.geojson --out REFINED.geojson",
     "cut a QuPath annotation's regions to the slide's\ntissue (glass inside loose outlines "
     "removed)",
     gs_cmd_refine},
    {"dataset", "LABELS.csv --out DIR [--annotations DIR]",
     "build a training set: lesion and tissue patches with\nmasks, thumbnails with tissue masks, "
     "manifest.csv",
     gs_cmd_dataset},
    {"features", "LABELS.csv --out DIR [--model BUNDLE]",
     "screen labelled slides and keep each one's top-k\nfeature matrix: the screener's training "
     "set",
     gs_cmd_features},
    {"eval", "LABELS.csv --out DIR [--model BUNDLE] [--reports DIR]",
     "screen labelled slides (or read earlier reports) and\nwrite sensitivity, specificity, AUCs "
     "and curves",
     gs_cmd_eval},
    {"view", "OUT_DIR [--listen HOST:PORT]",
     "serve the slide viewer (tiles, heat map, regions) for\nthe reports of 'screen --out OUT_DIR'",
     gs_cmd_view},
    {"submit", "PATH...", "submit slides to gastroscreend; prints each slide id", gs_cmd_submit},
    {"announce", "PATH... [--connect|--bind ENDPOINT]",
     "publish slide.arrived. as a scanner would; waits for\nthe slide.accepted. acknowledgement",
     gs_cmd_announce},
    {"watch", "[--since SEQ]", "print one line per verdict as gastroscreend publishes",
     gs_cmd_watch},
    {"status", "[SLIDE]", "state of a slide, or of every slide in flight", gs_cmd_status},
    {"top", "[--once [--json]]", "live tiles/s, queue depth, busy % per stage", gs_cmd_top},
    {"keygen", "NAME --out DIR [--roles STAGES]",
     "write a CURVE key pair (NAME.key 0600, NAME.pub) for\na node of the service", gs_cmd_keygen},
    {NULL, NULL, NULL, NULL},
};

const gs_cli_command *gs_cli_command_find(const char *name)
{
    for (const gs_cli_command *c = gs_cli_commands; c->name; c++)
        if (!strcmp(c->name, name))
            return c;
    return NULL;
}

/* Synopsis and summary share a line when both fit in the summary column (28 characters in),
 * as a reader scans the left column for names. */
enum { SUMMARY_COLUMN = 28 };

static void print_summary(FILE *f, const char *summary, int col)
{
    fprintf(f, "%*s", SUMMARY_COLUMN - col, "");
    for (const char *p = summary; *p; p++) {
        fputc(*p, f);
        if (*p == '\n')
            fprintf(f, "%*s", SUMMARY_COLUMN, "");
    }
    fputc('\n', f);
}

void gs_cli_usage(FILE *f)
{
    fputs("usage: gastroscreen [--help] [--version] COMMAND [ARGS]\n"
          "\n"
          "Screens gastric biopsy whole-slide images for cancer.\n"
          "\n"
          "commands:\n",
          f);
    for (const gs_cli_command *c = gs_cli_commands; c->name; c++) {
        int col = fprintf(f, "  %s %s", c->name, c->synopsis);
        if (col + 2 > SUMMARY_COLUMN) {
            fputc('\n', f);
            col = 0;
        }
        print_summary(f, c->summary, col);
    }
    fputs("\nRun 'gastroscreen COMMAND --help' for a command's options.\n", f);
}
