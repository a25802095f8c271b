/*
 * cmd_screen: `gastroscreen screen SLIDE... [--model BUNDLE] [--out DIR] [--config FILE]
 * [--verbose]`, the whole service in one process (daemon/embedded: the coordinator and one
 * worker of each stage as threads over inproc://, the same code as gastroscreend and the
 * stage executables).
 *
 * Each SLIDE is submitted; the journal and spool live in a temporary folder removed at exit,
 * so every run screens its slides afresh. Reports go to DIR/<slide_id>/ (report.json,
 * heatmap.png, regions.geojson; DIR defaults to ./gastroscreen-reports). While it runs, a
 * progress bar is drawn on stderr when stderr is a terminal. One line per slide is printed on
 * stdout as each verdict arrives (slides that cannot be submitted come first, as
 * "PATH: not screened: REASON"):
 *     PATH: CLASS score S threshold T report FOLDER[; reason: R][; model: untrained ...]
 * CLASS is negative, positive, unassessable or failed; S is "-" when there is no score; the
 * notice "model: untrained — not a diagnosis" ends every line when the bundle's multi-task
 * network or screener is untrained.
 *
 * The bundle: --model BUNDLE; else [model] bundle of --config FILE when one is given; else
 * the first that exists of <exe>/../model/default.safetensors (the build tree: made by the
 * default build, model/bundle.cmake), <exe>/../share/gastroscreen/default.safetensors (an
 * install under a prefix) and /usr/share/gastroscreen/default.safetensors. --config supplies
 * threads, batches, thresholds and timeouts (its endpoints, folders and slide roots are
 * replaced: the slide roots become the folders of the given slides).
 *
 * Exit status: 0 when every slide got a negative, positive or unassessable verdict; 1 when
 * any slide FAILED (a lab wants to hear about those), could not be submitted (missing, not a
 * file), or the service could not start or stopped (interrupted by SIGINT / SIGTERM); 2 on a
 * usage error.
 */
#ifndef GS_DAEMON_CMD_SCREEN_H
#define GS_DAEMON_CMD_SCREEN_H

/* Runs the command on argv (argv[0] is "screen"). Returns the exit status above. */
int gs_cmd_screen(int argc, char **argv);

#endif
