/*
 * config_schema: the one description of gastroscreen's INI settings (systemd/gastroscreen.conf)
 * and the one reader of the file, shared by gastroscreend (daemon/service/config) and every
 * stage worker (stages/runtime/stage_config), so a key has the same type, default, range and
 * error message in every process that reads the file.
 *
 * The schema is a table of keys, each with its section, name, type, default (written as in the
 * file), range and a one-line doc, indexed by gs_config_key_id. gs_config_values holds the
 * values of one read: every key starts at its default; gs_config_values_load() reads a file
 * over them, checking every line against the schema (an unknown section or key, a key set
 * twice, a value that does not parse or is out of range), then the rules that join keys
 * (blur_min_valid <= blur_sample; stride == tile_size), and records which keys the file set
 * and on which line. Errors read "FILE:LINE: [section] key: what is wrong", with the line of the
 * first bad key (for a rule joining keys, the later line of the two); a line longer than
 * GS_CONFIG_MAX_LINE characters is refused too (inih would cut it).
 *
 * Durations are a number with an optional unit, "500ms", "15s", "5m", "2h", "7d"; a bare number
 * is seconds. A folder list is whitespace-separated absolute folders; inih continuation lines
 * (indented) add more.
 *
 * Use: v = gs_config_values_new(); gs_config_values_load(v, path); read keys with
 * gs_config_values_get() and gs_config_values_is_set(); gs_config_values_destroy(&v).
 * Readers that keep their own struct (gs_config, gs_stage_config) copy the keys they hold
 * and parse command-line overrides with gs_config_schema_parse(), so a flag takes the
 * range of its key.
 */
#ifndef GS_STAGES_RUNTIME_CONFIG_SCHEMA_H
#define GS_STAGES_RUNTIME_CONFIG_SCHEMA_H

#include <stddef.h>
#include <stdint.h>

/* Longest line accepted (inih's line buffer is 200 bytes with the newline and NUL). */
#define GS_CONFIG_MAX_LINE 198

typedef enum {
    GS_CONFIG_STRING,   /* any text, "" included */
    GS_CONFIG_PATH,     /* an absolute path */
    GS_CONFIG_FOLDERS,  /* whitespace-separated absolute folders */
    GS_CONFIG_COUNT,    /* a whole number, min..max */
    GS_CONFIG_NUMBER,   /* a finite number, min..max */
    GS_CONFIG_DURATION, /* a duration, min..max in milliseconds */
} gs_config_type;

/* Every key, in the order of systemd/gastroscreen.conf. */
typedef enum {
    GS_CFG_COORDINATOR_INTAKE,
    GS_CFG_COORDINATOR_INTAKE_CONNECT,
    GS_CFG_COORDINATOR_SUBMIT,
    GS_CFG_COORDINATOR_QUERY,
    GS_CFG_COORDINATOR_EVENTS,
    GS_CFG_COORDINATOR_WORK,
    GS_CFG_COORDINATOR_JOURNAL_DIR,
    GS_CFG_COORDINATOR_SPOOL_DIR,
    GS_CFG_COORDINATOR_METRICS,
    GS_CFG_COORDINATOR_HTTP_TOKEN_FILE,
    GS_CFG_COORDINATOR_WEB_DIR,
    GS_CFG_COORDINATOR_HEARTBEAT_MS,
    GS_CFG_COORDINATOR_LIVENESS,
    GS_CFG_COORDINATOR_MAX_SLIDES_IN_FLIGHT,
    GS_CFG_COORDINATOR_TILES_PER_JOB,
    GS_CFG_COORDINATOR_JOURNAL_RETENTION,
    GS_CFG_COORDINATOR_TILE_STALL_TIMEOUT,
    GS_CFG_COORDINATOR_LOSS_GRACE,
    GS_CFG_COORDINATOR_PLAN_TIMEOUT,
    GS_CFG_COORDINATOR_SCREEN_TIMEOUT,
    GS_CFG_COORDINATOR_REPORT_TIMEOUT,
    GS_CFG_COORDINATOR_TILE_MAX_REQUESTS,
    GS_CFG_COORDINATOR_JOB_MAX_SENDS,
    GS_CFG_COORDINATOR_POISON_LIMIT,
    GS_CFG_COORDINATOR_MAX_ATTEMPTS,
    GS_CFG_COORDINATOR_MAX_ERROR_FRACTION,
    GS_CFG_INTAKE_SLIDE_ROOTS,
    GS_CFG_INTAKE_WATCH_DIR,
    GS_CFG_INTAKE_WATCH_SETTLE,
    GS_CFG_MODEL_BUNDLE,
    GS_CFG_FOREGROUND_THREADS,
    GS_CFG_FOREGROUND_TARGET_MPP,
    GS_CFG_FOREGROUND_TILE_SIZE,
    GS_CFG_FOREGROUND_STRIDE,
    GS_CFG_FOREGROUND_DEFAULT_MPP,
    GS_CFG_FOREGROUND_MIN_TISSUE_FRACTION,
    GS_CFG_FOREGROUND_THUMBNAIL_SIZE,
    GS_CFG_FOREGROUND_MASK_MPP,
    GS_CFG_FOREGROUND_MASK_MAX_DIM,
    GS_CFG_FOREGROUND_MAX_SLIDE_MPX,
    GS_CFG_FOREGROUND_MAX_THUMBNAIL_MPX,
    GS_CFG_FOREGROUND_PLAN_BUDGET,
    GS_CFG_TILER_THREADS,
    GS_CFG_TILER_TILE_HWM,
    GS_CFG_BLUR_THREADS,
    GS_CFG_BLUR_BATCH,
    GS_CFG_BLUR_BLUR_SAMPLE,
    GS_CFG_BLUR_BLUR_MIN_VALID,
    GS_CFG_BLUR_BLUR_SLIDE_FRACTION,
    GS_CFG_BLUR_EVERY_TILE,
    GS_CFG_BLUR_FOCUS_THRESHOLD,
    GS_CFG_BLUR_SPARSE_TISSUE,
    GS_CFG_BLUR_TILE_INBOX,
    GS_CFG_BLUR_ADVERTISE_HOST,
    GS_CFG_INFER_THREADS,
    GS_CFG_INFER_BATCH,
    GS_CFG_INFER_HEATMAP_SIZE,
    GS_CFG_INFER_CONTEXT,
    GS_CFG_INFER_TILE_INBOX,
    GS_CFG_INFER_ADVERTISE_HOST,
    GS_CFG_INFER_PRECISION,
    GS_CFG_SCREENER_THREADS,
    GS_CFG_SCREENER_THRESHOLD,
    GS_CFG_SCREENER_TOP_K,
    GS_CFG_REPORTER_THREADS,
    GS_CFG_REPORTER_REPORT_DIR,
    GS_CFG_SECURITY_SECURITY,
    GS_CFG_SECURITY_KEYS_DIR,
    GS_CFG_SECURITY_COORDINATOR_KEY,
    GS_CFG_SECURITY_COORDINATOR_PUBLIC,
    GS_CFG_SECURITY_WORKER_KEY,
    GS_CFG_SECURITY_CLIENT_KEY,
    GS_CFG_KEY_COUNT
} gs_config_key_id;

/* One key of the schema; static data. */
typedef struct {
    const char *section, *name;
    gs_config_type type;
    const char *def; /* the default, written as in the file */
    double min, max; /* counts and numbers; durations in ms; 0, 0 for text */
    const char *doc; /* one line */
} gs_config_key_info;

/* One parsed value. text is the value as written (for a default, the schema's static text; for
 * a loaded value, owned by the gs_config_values; for gs_config_schema_parse, the caller's
 * text). count, number and ms hold the value of a key of that type and are 0 otherwise. */
typedef struct {
    const char *text;
    uint32_t count;
    double number;
    int64_t ms;
} gs_config_value;

/* The schema's entry for key k (static), or NULL when k is not a key. */
const gs_config_key_info *gs_config_schema_key(gs_config_key_id k);

/* Looks up [section] name. Returns 0 and sets *k, or -1 (no error set) when unknown. */
int gs_config_schema_find(const char *section, const char *name, gs_config_key_id *k);

/* Writes key k's range into buf as the file and the errors write it ("1..1024", "0.05..10",
 * "1s..1d"; "" for text keys). Returns buf. */
char *gs_config_schema_range(gs_config_key_id k, char *buf, size_t size);

/* Parses text as a value of key k, with the checks of a file line but no "[section] key"
 * (the caller names its source: a flag, a line). Returns 0, or -1 with the error set ("0 is
 * out of range 1..1024"). out->text is text itself. */
int gs_config_schema_parse(gs_config_key_id k, const char *text, gs_config_value *out);

/* Key k's default, parsed. The defaults are static and checked by the tests, so this cannot
 * fail; a default that does not parse is a broken invariant (GS_ASSERT). */
gs_config_value gs_config_schema_default(gs_config_key_id k);

/* Parses a duration ("250ms", "15s", "5m", "2h", "7d", or a bare number of seconds) into
 * milliseconds. Returns 0, or -1 with the error set. */
int gs_config_parse_duration(const char *text, int64_t *ms);

typedef struct gs_config_values gs_config_values;

/* Every key at its default, none set. Returns the values (caller owns;
 * gs_config_values_destroy) or NULL with the error set when out of memory. */
gs_config_values *gs_config_values_new(void);

/* Frees the values and sets *v to NULL; NULL and *v == NULL are accepted. */
void gs_config_values_destroy(gs_config_values **v);

/* Reads the file at path over the current values, then checks the rules that join keys.
 * Returns 0, or -1 with the error set ("path:12: [infer] batch: 0 is out of range 1..1024";
 * "path: No such file or directory"). On error some keys may hold the file's values: discard
 * the values. */
int gs_config_values_load(gs_config_values *v, const char *path);

/* Key k's value; owned by v, valid until the next load or the destroy. */
const gs_config_value *gs_config_values_get(const gs_config_values *v, gs_config_key_id k);

/* 1 when a loaded file set key k (the lab chose the value), 0 when it is the default. */
int gs_config_values_is_set(const gs_config_values *v, gs_config_key_id k);

/* The line of the file that set key k (the last one for a continued folder list), or 0 when
 * the key is at its default. */
int gs_config_values_line(const gs_config_values *v, gs_config_key_id k);

#endif
