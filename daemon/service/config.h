/*
 * config: the settings of gastroscreend and of the in-process stages of the embedded mode, as
 * one struct of plain fields read from the INI file (systemd/gastroscreen.conf is the
 * documented example).
 *
 * The keys, their types, defaults, ranges and the rules joining them are the schema's
 * (stages/runtime/config_schema), which the stage workers read the same file with, so a value
 * gastroscreend accepts is one every worker accepts and the errors read alike: "FILE:LINE:
 * [section] key: what is wrong". Sections: [coordinator] (endpoints, journal, timeouts,
 * limits), [intake] (slide roots, watched folder), [model] (the bundle), [foreground] (the tile
 * plan), [tiler], [blur], [infer], [screener] and [reporter] (threads, batch sizes and each
 * stage's thresholds), [security] (CURVE or off, the keys folder and key files:
 * stages/runtime/keys). Every key has a default, so an empty file is a valid configuration.
 *
 * Use: c = gs_config_new() (defaults); gs_config_load(c, path); read the fields, and
 * gs_config_is_set() to tell a value the lab chose from a default; gs_config_destroy(&c).
 * Fields are plain data owned by the config (strings are never NULL).
 */
#ifndef GS_DAEMON_SERVICE_CONFIG_H
#define GS_DAEMON_SERVICE_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "model/network.h"
#include "stages/runtime/config_schema.h"
#include "stages/runtime/decision.h"

typedef struct {
    /* [coordinator] */
    char *intake, *intake_connect, *submit, *query, *events, *work; /* endpoints */
    char *journal_dir, *spool_dir;
    char *metrics;         /* the HTTP server's listen address, host:port; "" disables it */
    char *http_token_file; /* a file holding the HTTP token ("" = none) */
    char *web_dir;         /* the web pages' folder ("" = the built-in one) */
    uint32_t heartbeat_ms, liveness, max_slides_in_flight, tiles_per_job;
    int64_t journal_retention_ms;
    int64_t tile_stall_timeout_ms, loss_grace_ms;
    int64_t plan_timeout_ms, screen_timeout_ms, report_timeout_ms;
    uint32_t tile_max_requests, job_max_sends, poison_limit, max_attempts;
    double max_error_fraction;
    /* [intake] */
    char **slide_roots;
    size_t n_slide_roots;
    char *watch_dir; /* "" = no watched folder */
    int64_t watch_settle_ms;
    /* [model] */
    char *bundle;
    /* [foreground] */
    uint32_t foreground_threads;
    double target_mpp, default_mpp, min_tissue_fraction, mask_mpp;
    uint32_t tile_size, stride, thumbnail_size, mask_max_dim;
    double max_slide_mpx, max_thumbnail_mpx; /* plan caps */
    int64_t plan_budget_ms;
    /* [tiler] */
    uint32_t tiler_threads, tile_hwm;
    /* [blur] */
    uint32_t blur_threads, blur_batch, blur_sample, blur_min_valid, blur_every_tile;
    double blur_slide_fraction, focus_threshold, sparse_tissue;
    char *blur_tile_inbox, *blur_advertise_host;
    /* [infer] */
    uint32_t infer_threads, infer_batch, heatmap_size, infer_context;
    char *infer_tile_inbox, *infer_advertise_host;
    char *infer_precision; /* "fp32", "bf16", "int8" or "" (model/network.h gs_precision_default) */
    /* [screener] */
    uint32_t screener_threads, top_k;
    double threshold;
    /* [reporter] */
    uint32_t reporter_threads;
    char *report_dir;
    /* [security] (stages/runtime/keys) */
    char *security, *keys_dir, *coordinator_key, *coordinator_public, *worker_key, *client_key;
    /* Keys a loaded file set (gs_config_is_set). */
    unsigned char set[GS_CFG_KEY_COUNT];
} gs_config;

/* A config holding every default. Returns it (caller owns; gs_config_destroy) or NULL with
 * the error set on allocation failure. */
gs_config *gs_config_new(void);

/* Frees the config and sets *c to NULL; NULL and *c == NULL are accepted. */
void gs_config_destroy(gs_config **c);

/* Reads path with the schema (gs_config_values_load: every line, then the rules joining keys,
 * over the defaults) and copies the keys the file sets over the current values. Returns 0, or -1
 * with the error set ("path:12: [infer] batch: 0 is out of range 1..1024"; "path: No such file or
 * directory"). A file that does not load leaves the config unchanged; running out of memory while
 * copying may not: discard the config then. */
int gs_config_load(gs_config *c, const char *path);

/* 1 when a file loaded into c set key k (the lab chose the value), 0 when c holds the default
 * or a value a caller wrote. */
int gs_config_is_set(const gs_config *c, gs_config_key_id k);

/* The screener's threshold and top k that judge, with their sources: the config's [screener]
 * values where the file set them, else the bundle's (model may be NULL: no bundle). */
void gs_config_decision(const gs_config *c, const gs_model *model, gs_decision *d);

/* The checks of the folders a service needs, made once at start (the schema checks each value
 * alone; these look at the file system): no slide root at all is an error (no slide could ever
 * be accepted); a slide root or watch_dir that does not exist (yet: a mount may bring it), a
 * watch_dir outside every slide root (every file in it would be refused), and a report_dir that
 * exists but this process cannot write are warnings, each a line passed to warn(line, ud).
 * Returns 0, or -1 with the error set naming the key. */
int gs_config_check_start(const gs_config *c, void (*warn)(const char *line, void *ud), void *ud);

/* Replaces one of a config's string fields (e.g. &c->journal_dir) with a copy of value, freeing
 * the old one: for callers that override what the file said. Returns 0, or -1 with the error
 * set when out of memory. */
int gs_config_set_string(char **field, const char *value);

#endif
