/*
 * config: the settings of gastroscreend and its stage workers, read from an INI file (inih).
 *
 * One file serves every process of a lab server (systemd/gastroscreen.conf is the documented
 * example). Sections: [coordinator] (endpoints, journal, timeouts, limits), [intake] (slide
 * roots, watched folder), [model] (the bundle), [foreground] (the tile plan), [tiler],
 * [blur], [infer], [screener] and [reporter] (threads, batch sizes and each stage's
 * thresholds). Every key has a default (PROTOCOL.md §15, except where the code in the tree
 * decides: the tissue plan's min_tissue_fraction 0.25 and mask at 4 um/px up to 4096 px, as
 * stages/slide/tissue.h), so an empty file is a valid configuration.
 *
 * Durations are written as a number with an optional unit: "500ms", "15s", "5m", "2h", "7d";
 * a bare number is seconds. slide_roots is a whitespace-separated list of absolute folders
 * (inih continuation lines may add more). An unknown section or key, a key set twice, a value
 * that is not a number where one is expected or is outside its range is an error naming the
 * file, the line and the key, and the load fails; so is a line longer than
 * GS_CONFIG_MAX_LINE characters (inih would cut it).
 *
 * Use: c = gs_config_new() (defaults); gs_config_load(c, path); read the fields;
 * gs_config_destroy(&c). Fields are plain data owned by the config (strings are never NULL).
 */
#ifndef GS_DAEMON_SERVICE_CONFIG_H
#define GS_DAEMON_SERVICE_CONFIG_H

#include <stddef.h>
#include <stdint.h>

/* Longest line accepted (inih's line buffer is 200 bytes with the newline and NUL). */
#define GS_CONFIG_MAX_LINE 198

typedef struct {
    /* [coordinator] */
    char *intake, *intake_connect, *submit, *query, *events, *work; /* endpoints */
    char *journal_dir, *spool_dir;
    char *metrics; /* listen address of /metrics, host:port; "" disables it */
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
    /* [tiler] */
    uint32_t tiler_threads, tile_hwm;
    /* [blur] */
    uint32_t blur_threads, blur_batch, blur_sample, blur_min_valid;
    double blur_slide_fraction, focus_threshold;
    char *blur_tile_inbox, *blur_advertise_host;
    /* [infer] */
    uint32_t infer_threads, infer_batch, heatmap_size;
    char *infer_tile_inbox, *infer_advertise_host;
    /* [screener] */
    uint32_t screener_threads, top_k;
    double threshold;
    /* [reporter] */
    uint32_t reporter_threads;
    char *report_dir;
} gs_config;

/* A config holding every default. Returns it (caller owns; gs_config_destroy) or NULL with
 * the error set on allocation failure. */
gs_config *gs_config_new(void);

/* Frees the config and sets *c to NULL; NULL and *c == NULL are accepted. */
void gs_config_destroy(gs_config **c);

/* Reads path over the current values. Returns 0, or -1 with the error set ("path:12:
 * [infer] batch: 0 is out of range 1..1024"; "path: No such file or directory"). On error
 * the config may hold some of the file's values: discard it. */
int gs_config_load(gs_config *c, const char *path);

/* Replaces one of a config's string fields (e.g. &c->journal_dir) with a copy of value, freeing
 * the old one: for callers that override what the file said. Returns 0, or -1 with the error
 * set when out of memory. */
int gs_config_set_string(char **field, const char *value);

/* The known keys, for documentation checks: gs_config_key() returns 0 and the section and key
 * names (static strings) of key i, or -1 when i is out of range. */
size_t gs_config_key_count(void);
int gs_config_key(size_t i, const char **section, const char **key);

/* Parses a duration ("250ms", "15s", "5m", "2h", "7d", or a bare number of seconds) into
 * milliseconds. Returns 0, or -1 with the error set. */
int gs_config_parse_duration(const char *text, int64_t *ms);

#endif
