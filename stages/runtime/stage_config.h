/*
 * stage_config: the settings of one stage worker process, from its command line and,
 * optionally, the shared INI file (systemd/gastroscreen.conf).
 *
 * The file is read with the schema every process shares (stages/runtime/config_schema), so
 * a worker checks the whole file as gastroscreend does (an unknown key, a value out of range,
 * keys that contradict each other: "FILE:LINE: [section] key: ...") and keeps what a worker
 * of its stage needs: [coordinator] work, heartbeat_ms, liveness; [model] bundle (stages that
 * run a network); and from the stage's own section threads, batch, tile_inbox and
 * advertise_host (blur, infer), tile_hwm (tiler), mask_mpp, mask_max_dim, max_slide_mpx,
 * max_thumbnail_mpx and plan_budget (foreground),
 * top_k (screener), report_dir (reporter). Stages must not depend on daemon/ (ops <- model
 * <- stages <- daemon), which is why this struct is not daemon/service/config's.
 *
 * The coordinator's `work` key is its bind address; a bind to every interface (host "*", tcp)
 * is read as "tcp://localhost:PORT" (a worker on the coordinator's host); on another node set
 * --coordinator or write the coordinator's host in the file. The tiler and the reporter run
 * no network: they ignore [model] bundle and refuse --model. Unlike gastroscreend, a worker
 * assumes no bundle: without --model or [model] bundle in its file it loads none (foreground
 * and blur run without one; infer and screener refuse to start).
 *
 * Flags (gs_stage_config_args) override the file and take the range of their key: --config
 * FILE, --coordinator ENDPOINT, --instance NAME (alias --id), --threads N, --batch N, --model
 * FILE, --tile-inbox ENDPOINT, --advertise-host HOST, --tile-hwm N, --top-k N, --report-dir DIR,
 * --heartbeat-ms N, --keys-dir DIR, --key FILE (this worker's secret key), --coordinator-key FILE
 * (the coordinator's public key), --help. [security] decides CURVE to the coordinator
 * (stages/runtime/keys). Use: gs_stage_config_default(&c, stage);
 * gs_stage_config_args(&c, argc, argv, &help); read the fields. The struct holds no memory
 * to free.
 */
#ifndef GS_STAGES_RUNTIME_STAGE_CONFIG_H
#define GS_STAGES_RUNTIME_STAGE_CONFIG_H

#include <stdio.h>

#include "proto/gastroscreen.pb-c.h"
#include "stages/runtime/config_schema.h"

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
    double max_slide_mpx;     /* foreground: plan cap, megapixels at level 0 */
    double max_thumbnail_mpx; /* foreground: plan cap, megapixels of the thumbnail source */
    int64_t plan_budget_ms;   /* foreground: time budget of a plan */
    int top_k;                /* screener: rows of the screener matrix */
    char report_dir[4096];    /* reporter: folder for jobs without out_dir */
    char precision[8];        /* infer: "fp32", "bf16" or "" (the CPU's best) */
    int heartbeat_ms, liveness;
    /* [security] (stages/runtime/keys): curve | off, the keys folder (workers/NAME.pub of the
     * tilers allowed into a tile inbox), this worker's secret key file and the coordinator's
     * public key file ("" = the folder's node.key and coordinator.pub). */
    char security[16];
    char keys_dir[4096], worker_key[4096], coordinator_public[4096];
    /* Keys the file or a flag set (gs_stage_config_is_set). */
    unsigned char set[GS_CFG_KEY_COUNT];
} gs_stage_config;

/* Fills *c with the schema's defaults for `stage` (work tcp://localhost:5554, the stage
 * section's threads and batch; batch 1 for a stage without one) and no model. */
void gs_stage_config_default(gs_stage_config *c, Gastroscreen__V1__Stage stage);

/* Reads the file at path (every key checked, gs_config_values_load) and copies the keys of
 * the stage it sets over *c. Returns 0, or -1 with the error ("path:12: [infer] batch: 0 is
 * out of range 1..1024", "path: No such file or directory"). */
int gs_stage_config_load(gs_stage_config *c, const char *path);

/* 1 when the file or a flag set key k (the lab chose the value), 0 when it is the default. */
int gs_stage_config_is_set(const gs_stage_config *c, gs_config_key_id k);

/* Applies the command line (argv[0] is the program). --config is read first wherever it
 * appears, then the other flags in order. Sets *help to 1 when --help was given (nothing else
 * is checked then). Returns 0, or -1 with the error naming the bad flag or value. */
int gs_stage_config_args(gs_stage_config *c, int argc, char **argv, int *help);

/* Writes the usage text of the stage's executable to f. */
void gs_stage_config_usage(Gastroscreen__V1__Stage stage, FILE *f);

#endif
