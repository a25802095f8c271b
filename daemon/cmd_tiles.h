/*
 * cmd_tiles: `gastroscreen tiles SLIDE [--out DIR]`, the tissue plan of one slide.
 *
 * Prints the slide's facts (vendor, levels, resolution, warnings) and the plan summary, and
 * writes into DIR the tissue mask (mask.png), the plan drawn over the thumbnail (plan.png) and
 * the plan itself (plan.json: every planned tile with its grid position, target-resolution and
 * level-0 coordinates and tissue fraction). Errors go to stderr naming the file and the cause.
 */
#ifndef GS_DAEMON_CMD_TILES_H
#define GS_DAEMON_CMD_TILES_H

/* Runs the command on argv (argv[0] is "tiles"). Returns the process exit status: 0 on
 * success, 1 when the slide could not be planned, 2 on a usage error. */
int gs_cmd_tiles(int argc, char **argv);

#endif
