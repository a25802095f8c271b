/*
 * stage_run: the whole of a stage executable's main, shared by gastroscreen-tiler,
 * -foreground, -blur, -infer, -screener and -reporter, so their one main
 * (stages/runtime/stage_main.c, built once per stage) is one call.
 *
 * gs_stage_run() reads the settings (stages/runtime/stage_config: flags, optional --config file),
 * loads the model bundle when the stage uses one (infer and screener need it; foreground and
 * blur load it when given, to announce its sha256 and, for blur, use a trained blur network),
 * builds the stage's handler (stages/handlers/tiler, foreground, blur, infer, screener, reporter)
 * and runs it on a gs_worker (stages/runtime/worker) connected to the coordinator. It handles
 * SIGTERM and SIGINT (graceful stop: the worker finishes or hands back its work), tells systemd
 * READY=1 once the sockets are up and the model is loaded, and from the worker's once-a-second tick
 * WATCHDOG=1 and a STATUS line with items/s, busy share and queue depth (sd_notify does
 * nothing outside systemd).
 *
 * Exit status: 0 after a clean stop or --help; 2 for a bad command line (message and usage on
 * stderr); 1 for any other failure (a model that does not load: the message names the file;
 * sockets; a refusal by the coordinator).
 */
#ifndef GS_STAGES_RUNTIME_STAGE_RUN_H
#define GS_STAGES_RUNTIME_STAGE_RUN_H

#include "proto/gastroscreen.pb-c.h"

/* Runs the stage executable; returns its exit status. */
int gs_stage_run(Gastroscreen__V1__Stage stage, int argc, char **argv);

#endif
