/*
 * stage_config: the settings of one stage worker process, from its command line and,
 * optionally, the shared INI file (systemd/gastroscreen.conf, parsed with inih).
 *
 * Stages must not depend on daemon/ (layering ops <- model <- stages <- daemon), so this is
 * not daemon/service/config: it reads only what a worker of one stage needs, with the same key
 * names as daemon/service/config.c: [coordinator] work, heartbeat_ms, liveness; [model] bundle; and
 * the stage's own section: threads, batch (blur, infer), tile_inbox and advertise_host (blur,
 * infer), tile_hwm (tiler), mask_mpp and mask_max_dim (foreground), top_k (screener),
 * report_dir (reporter). Other sections and keys belong to other processes and are skipped
 * here (daemon/service/config validates the whole file for gastroscreend). A value that does not
 * parse or is out of range is an error naming the file, the line and the key.
 *
 * The coordinator's `work` key is its bind address; a bind to every interface (host "*", tcp)
 * is read as "tcp://localhost:PORT" (a worker on the coordinator's host); on another node set
 * --coordinator or write the coordinator's host in the file. The tiler and the reporter run
 * no network: they ignore [model] bundle and refuse --model.
 *
 * Flags (gs_stage_config_args) override the file: --config FILE, --coordinator ENDPOINT,
 * --instance NAME (alias --id), --threads N, --batch N, --model FILE, --tile-inbox ENDPOINT,
 * --advertise-host HOST, --tile-hwm N, --top-k N, --report-dir DIR, --heartbeat-ms N,
 * --help. Use: gs_stage_config_default(&c, stage); gs_stage_config_args(&c, argc, argv, &help);
 * ...; gs_stage_config_free(&c).
 */
#ifndef GS_STAGES_RUNTIME_STAGE_CONFIG_H
#define GS_STAGES_RUNTIME_STAGE_CONFIG_H

#include <stdio.h>

#include "proto/gastroscreen.pb-c.h"

typedef struct {
    Gastroscreen__V1__Stage stage;
    char work[1024];          /* coordinator `work` endpoint to connect to */
    char instance[64];        /* systemd instance ("1") */
    char model[4096];         /* bundle path; "" = none */
    int threads, batch;       /* handler threads; tiles per batch (blur, infer) */
    char tile_inbox[1024];    /* blur / infer: where to bind the tile inbox */
    char advertise_host[256]; /* blur / infer: host tilers reach; "" = this host's name */
    int tile_hwm;             /* tiler: tile PUSH high-water mark (4..16) */
    double mask_mpp;          /* foreground: tissue mask resolution, um/px */
    int mask_max_dim;         /* foreground: cap on the mask's longer side */
    int top_k;                /* screener: rows of the screener matrix */
    char report_dir[4096];    /* reporter: folder for jobs without out_dir */
    int heartbeat_ms, liveness;
} gs_stage_config;

/* Fills *c with the defaults of `stage` (daemon/service/config.c's: work tcp://localhost:5554,
 * threads 1 (tiler 2, infer 2), batch 8 for blur and 4 for infer, tile_inbox on every interface,
 * any port,
 * tile_hwm 8, top_k 64, report_dir /var/lib/gastroscreen/reports, heartbeat 1000 ms,
 * liveness 5, no model). */
void gs_stage_config_default(gs_stage_config *c, Gastroscreen__V1__Stage stage);

/* Reads the file at path over *c. Returns 0, or -1 with the error ("path:12: [infer] batch:
 * 0 is out of range 1..1024", "path: No such file or directory"). */
int gs_stage_config_load(gs_stage_config *c, const char *path);

/* Applies the command line (argv[0] is the program). --config is read first wherever it
 * appears, then the other flags in order. Sets *help to 1 when --help was given (nothing else
 * is checked then). Returns 0, or -1 with the error naming the bad flag or value. */
int gs_stage_config_args(gs_stage_config *c, int argc, char **argv, int *help);

/* Writes the usage text of the stage's executable to f. */
void gs_stage_config_usage(Gastroscreen__V1__Stage stage, FILE *f);

#endif
