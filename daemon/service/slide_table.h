/*
 * slide_table: the coordinator's slide table and the slide state machine (PROTOCOL.md §7, §9,
 * §12, §13).
 *
 * Every slide is ACCEPTED -> PLANNED -> BLUR_CHECKED -> INFERRING -> SCREENED -> REPORTED ->
 * DONE, or ends FAILED; the unassessable exits go PLANNED -> REPORTED (plan said no tissue)
 * and BLUR_CHECKED -> REPORTED (out of focus), and a duplicate intake is folded ACCEPTED ->
 * DONE. Each legal transition is one function named after its target, called with the
 * trigger's data. Each journals the slide's new record and its event (the packed
 * EventMessage that the coordinator publishes, with the journal sequence number) through the
 * journal module first, and changes the table only when that succeeded: a transition that
 * the journal did not take never happened.
 *
 * Every transition and result names (slide_id, attempt), the fence. The functions return:
 *   0                 the transition happened (*seq = its journal sequence number);
 *   GS_SLIDES_IGNORED a stale message (unknown or terminal slide, another attempt) or a
 *                     duplicate (the slide is already at or past that state): ignored and
 *                     counted, never an error, since the network delivers such messages;
 *   -1                an illegal transition (the slide is in a state the trigger cannot come
 *                     from: counted, error set) or a journal failure (error set).
 *
 * Intake is idempotent: the same canonical path in flight, or terminal with the same size and
 * mtime, is a duplicate of that slide (journalled as a duplicate `accepted` event); at planning,
 * a slide whose path and quickhash match another slide's is folded into it (DONE with
 * duplicate_of, no verdict of its own). A slide whose workers were lost poison_limit times
 * fails as poison (the verdict's poison flag, and a reason "poison: ..."). After a restart,
 * gs_slides_recover() gives every unfinished slide attempt + 1 (or fails it as poison beyond
 * max_attempts) and gs_slide_next_step() says how it resumes.
 *
 * Use: t = gs_slides_new(journal, &opts) loads the journal's records; gs_slides_recover(t,
 * now) once at start; then the transition functions from the coordinator's loop;
 * gs_slides_destroy(&t). The journal is borrowed and must outlive the table. Not thread-safe.
 */
#ifndef GS_DAEMON_SERVICE_SLIDE_TABLE_H
#define GS_DAEMON_SERVICE_SLIDE_TABLE_H

#include <stddef.h>
#include <stdint.h>

#include "daemon/service/journal.h"
#include "proto/vocab.h"

/* A slide's state (SlideState). The verdict class is gs_verdict_class of proto/vocab. */
typedef enum {
    GS_SLIDE_ACCEPTED = 1,
    GS_SLIDE_PLANNED = 2,
    GS_SLIDE_BLUR_CHECKED = 3,
    GS_SLIDE_INFERRING = 4,
    GS_SLIDE_SCREENED = 5,
    GS_SLIDE_REPORTED = 6,
    GS_SLIDE_DONE = 7,
    GS_SLIDE_FAILED = 8,
} gs_slide_state;
GS_VOCAB_PIN(GS_SLIDE_ACCEPTED, GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_ACCEPTED);
GS_VOCAB_PIN(GS_SLIDE_PLANNED, GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_PLANNED);
GS_VOCAB_PIN(GS_SLIDE_BLUR_CHECKED, GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_BLUR_CHECKED);
GS_VOCAB_PIN(GS_SLIDE_INFERRING, GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_INFERRING);
GS_VOCAB_PIN(GS_SLIDE_SCREENED, GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_SCREENED);
GS_VOCAB_PIN(GS_SLIDE_REPORTED, GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_REPORTED);
GS_VOCAB_PIN(GS_SLIDE_DONE, GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_DONE);
GS_VOCAB_PIN(GS_SLIDE_FAILED, GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_FAILED);

/* Which method made the tissue plan or judged the blur-first sample (Method). UNKNOWN: the
 * stage did not run, or the slide was recorded without it. */
typedef enum {
    GS_METHOD_UNKNOWN = 0,
    GS_METHOD_NETWORK = 1,
    GS_METHOD_CLASSICAL = 2,
} gs_slide_method;
GS_VOCAB_PIN(GS_METHOD_UNKNOWN, GASTROSCREEN__V1__METHOD__METHOD_UNSPECIFIED);
GS_VOCAB_PIN(GS_METHOD_NETWORK, GASTROSCREEN__V1__METHOD__METHOD_NETWORK);
GS_VOCAB_PIN(GS_METHOD_CLASSICAL, GASTROSCREEN__V1__METHOD__METHOD_CLASSICAL);

/* How a slide reached the coordinator (IntakeSource). */
typedef enum {
    GS_INTAKE_ANNOUNCED = 1,
    GS_INTAKE_SUBMIT = 2,
    GS_INTAKE_WATCHED = 3,
    GS_INTAKE_EMBEDDED = 4,
} gs_intake_source;
GS_VOCAB_PIN(GS_INTAKE_ANNOUNCED, GASTROSCREEN__V1__INTAKE_SOURCE__INTAKE_SOURCE_ANNOUNCED);
GS_VOCAB_PIN(GS_INTAKE_SUBMIT, GASTROSCREEN__V1__INTAKE_SOURCE__INTAKE_SOURCE_SUBMIT);
GS_VOCAB_PIN(GS_INTAKE_WATCHED, GASTROSCREEN__V1__INTAKE_SOURCE__INTAKE_SOURCE_WATCHED);
GS_VOCAB_PIN(GS_INTAKE_EMBEDDED, GASTROSCREEN__V1__INTAKE_SOURCE__INTAKE_SOURCE_EMBEDDED);

/* How an unfinished slide resumes after a restart (PROTOCOL.md §12). */
typedef enum {
    GS_STEP_NONE = 0,   /* terminal: nothing to do */
    GS_STEP_PLAN,       /* ACCEPTED: send a PlanJob */
    GS_STEP_BLUR_CHECK, /* PLANNED: the blur check again */
    GS_STEP_INFER,      /* sharp BLUR_CHECKED, INFERRING: adopt the ledger, infer */
    GS_STEP_REPORT,     /* SCREENED, and the unassessable exits: send a ReportJob */
    GS_STEP_COMMIT,     /* REPORTED: journal DONE and publish */
} gs_slide_step;

#define GS_SLIDES_IGNORED 1

typedef struct {
    uint32_t poison_limit;        /* crash marks that fail a slide (3) */
    uint32_t max_attempts;        /* attempts beyond which a restart fails a slide (5) */
    float threshold;              /* positive if score > threshold (0.74) */
    const char *threshold_source; /* where it came from (stages/runtime/decision); static */
    /* Model provenance copied into every verdict (may be NULL = empty). */
    const char *model_bundle, *model_sha256, *model_format_version, *model_trained_on;
    const char *model_notice;
    int model_untrained;
} gs_slides_options;

/* Fills *o with the PROTOCOL.md §15 defaults and no model. */
void gs_slides_options_default(gs_slides_options *o);

/* Tile counts of a slide (TileCounts). */
typedef struct {
    uint32_t planned, inferred, background, blurry, error, rerequested;
} gs_slide_tiles;

/* What the reporter produced, and the summary that goes into the verdict. Strings and
 * warnings are copied; any may be NULL. */
typedef struct {
    const char *report_json, *heatmap_png, *regions_geojson;
    gs_slide_tiles tiles;
    const char *const *warnings; /* one line each */
    size_t n_warnings;
} gs_slide_report;

/* A view of one slide. Strings are table-owned ("" when unset) and valid until the next call
 * that changes the table. */
/* The longest threshold source a record keeps ("bundle", "config", "default":
 * stages/runtime/decision); a table whose options name none records "unknown". */
#define GS_SLIDE_SOURCE_MAX 15
/* Longest precision list a slide records ("bf16+fp32": the distinct precisions of the infer
 * workers behind its INFERRED tiles, joined by "+"). */
#define GS_SLIDE_PRECISION_MAX 31
#define GS_SLIDE_SOURCE_UNKNOWN "unknown"

/* The file accepted at intake, by lstat of the canonical path (PROTOCOL.md §13): the identity
 * every stage that opens the slide checks (SlideIdentity). dev and ino 0: not known (a record
 * of an older build, or a path that could not be stat'ed at intake). */
typedef struct {
    uint64_t dev, ino;
    int64_t size, mtime_ns;
} gs_slide_file;

typedef struct {
    const char *slide_id, *path, *external_id, *quickhash, *duplicate_of;
    const char *unassessable_reason; /* from the plan (no tissue, not brightfield) */
    const char *reason;              /* the verdict's reason, once decided */
    const char *report_json, *heatmap_png, *regions_geojson;
    const char *warnings; /* the verdict's warnings, '\n'-separated */
    gs_slide_state state;
    gs_intake_source source;
    gs_verdict_class verdict;
    uint32_t attempt, crash_marks;
    int out_of_focus;
    int poison; /* FAILED as poison (Verdict.poison); see gs_slides_crash_mark, gs_slides_recover */
    gs_slide_method foreground_method, blur_method; /* journalled with PLANNED, BLUR_CHECKED */
    float score, blurred_fraction;
    /* The threshold that judged the score and where it came from (journalled with SCREENED;
     * threshold_source is "" for a slide not screened, or screened by an older build). */
    float threshold;
    const char *threshold_source;
    /* The multi-task network's precision(s) that inferred the tiles (journalled with
     * SCREENED; "" before, for a slide with no inferred tile, or screened by an older build:
     * ModelProvenance.precision, where empty means fp32). */
    const char *precision;
    gs_slide_tiles tiles;
    int64_t size, mtime_ms, accepted_unix_ms, updated_unix_ms;
    uint64_t last_seq; /* sequence number of its newest event */
    gs_slide_file file;
} gs_slide_info;

/* Counters of ignored and refused messages since the table was created. */
typedef struct {
    uint64_t stale, duplicates, illegal, load_skipped;
    uint64_t rebuilt_events; /* verdict events re-derived from records at recovery */
} gs_slides_stats;

typedef struct gs_slides gs_slides;

/* Loads every slide record of the journal (a record that does not parse is skipped with a
 * warning on stderr and counted in load_skipped). Returns the table (caller owns;
 * gs_slides_destroy) or NULL with the error set. */
gs_slides *gs_slides_new(gs_journal *journal, const gs_slides_options *o);

/* Frees the table and sets *t to NULL; NULL and *t == NULL are accepted. */
void gs_slides_destroy(gs_slides **t);

/* Restart recovery, once after gs_slides_new(): first, each terminal slide whose closing
 * event (verdict, or DONE of a folded duplicate) is missing from the journal's log (a torn or
 * corrupt tail) gets it journalled again from its record, with a new sequence number, a line
 * on stderr and a count in rebuilt_events; then each REPORTED slide gets DONE; every other
 * unfinished slide gets attempt + 1 (journalled and published as state_changed, reason
 * "coordinator restart"), or FAILED as poison when that would exceed max_attempts (never
 * wrapping: an attempt at UINT32_MAX fails too). Returns the number of unfinished slides
 * changed, or -1 on a journal failure (error set). */
int gs_slides_recover(gs_slides *t, int64_t now_unix_ms);

/* Intake of a slide file (PROTOCOL.md §13, rule 1). path must be canonical and absolute (the
 * caller resolved it and checked the roots); size and mtime_ms are from stat. A new slide is
 * ACCEPTED, with the identity of the file at path (gs_slide_file, by lstat: taken here, in the
 * same loop turn as gs_slides_resolve_path); a duplicate journals an `accepted` event with
 * duplicate = true for the existing slide. Writes the slide id into out_id (GS_SLIDE_ID_LEN + 1
 * bytes), *duplicate (may be NULL), *seq (may be NULL). Returns 0 or -1 (bad path, journal
 * failure). */
int gs_slides_intake(gs_slides *t, const char *path, int64_t size, int64_t mtime_ms,
                     gs_intake_source source, const char *external_id, int64_t now_unix_ms,
                     char out_id[GS_SLIDE_ID_LEN + 1], int *duplicate, uint64_t *seq);

/* 1 when real, an already resolved path, is one of the roots (each resolved; a missing root
 * admits nothing) or below one, matching whole path components; else 0. */
int gs_slides_under_roots(const char *const *roots, size_t n_roots, const char *real);

/* Rule 1's first half, before gs_slides_intake(): resolves path (realpath: symlinks, "..")
 * into out (out_len bytes), and checks that it is a regular file under one of the roots
 * (each resolved too; a root matches whole path components, so /srv/slides does not admit
 * /srv/slides2/x). Fills *size and *mtime_ms from stat. Returns 0, or -1 with the error set
 * ("/x.svs: outside the slide roots", "...: No such file or directory", "...: not a regular
 * file"). */
int gs_slides_resolve_path(const char *const *roots, size_t n_roots, const char *path, char *out,
                           size_t out_len, int64_t *size, int64_t *mtime_ms);

/* ACCEPTED -> PLANNED on a PlanResult without error, with the slide's quickhash, the method
 * that made the plan (PlanResult.method; kept in the record and every later Verdict) and,
 * when the plan said so, unassessable_reason (NULL or "" otherwise). If another slide has the
 * same path and quickhash, the slide is folded into it instead: DONE with duplicate_of, and
 * *folded = 1 (may be NULL). A method outside gs_slide_method is an error. */
int gs_slides_planned(gs_slides *t, const char *slide_id, uint32_t attempt, const char *quickhash,
                      gs_slide_method method, const char *unassessable_reason, int64_t now_unix_ms,
                      int *folded, uint64_t *seq);

/* PLANNED -> BLUR_CHECKED when the sample is settled, with the method that judged it
 * (BlurResult.method; GS_METHOD_UNKNOWN when no tile was judged). out_of_focus says the slide
 * ends unassessable, with reason ("out of focus: 27 of 32 sample tiles blurry"). */
int gs_slides_blur_checked(gs_slides *t, const char *slide_id, uint32_t attempt,
                           float blurred_fraction, gs_slide_method method, int out_of_focus,
                           const char *reason, int64_t now_unix_ms, uint64_t *seq);

/* BLUR_CHECKED (sharp enough) -> INFERRING. */
int gs_slides_inferring(gs_slides *t, const char *slide_id, uint32_t attempt, int64_t now_unix_ms,
                        uint64_t *seq);

/* INFERRING -> SCREENED on the ScreenResult: the class is POSITIVE when score > threshold,
 * else NEGATIVE (score must be finite in 0..1). */
int gs_slides_screened(gs_slides *t, const char *slide_id, uint32_t attempt, float score,
                       int64_t now_unix_ms, uint64_t *seq);

/* gs_slides_screened, also journalling the precision list that inferred the slide's tiles
 * (gs_slide_info.precision; NULL or "" = none recorded). A list longer than
 * GS_SLIDE_PRECISION_MAX, or with characters other than [a-z0-9+], is refused (-1). */
int gs_slides_screened_in(gs_slides *t, const char *slide_id, uint32_t attempt, float score,
                          const char *precision, int64_t now_unix_ms, uint64_t *seq);

/* INFERRING -> SCREENED with the class UNASSESSABLE (score 0, out_of_focus set) when, with
 * every tissue tile's focus judged, too much of the slide is blurry; reason says how much. */
int gs_slides_out_of_focus(gs_slides *t, const char *slide_id, uint32_t attempt, const char *reason,
                           int64_t now_unix_ms, uint64_t *seq);

/* -> REPORTED when the report is written: from SCREENED (the screened verdict), from PLANNED
 * with an unassessable_reason, or from an out-of-focus BLUR_CHECKED (UNASSESSABLE). */
int gs_slides_reported(gs_slides *t, const char *slide_id, uint32_t attempt,
                       const gs_slide_report *report, int64_t now_unix_ms, uint64_t *seq);

/* REPORTED -> DONE: journals the verdict (the event is the Verdict to publish). */
int gs_slides_done(gs_slides *t, const char *slide_id, uint32_t attempt, int64_t now_unix_ms,
                   uint64_t *seq);

/* Any non-terminal state -> FAILED with reason; report (may be NULL) gives the report paths,
 * counts and warnings of the failed verdict. Never poison, whatever the reason's words: the
 * table decides poison itself (gs_slides_crash_mark, gs_slides_recover). */
int gs_slides_fail(gs_slides *t, const char *slide_id, uint32_t attempt, const char *reason,
                   const gs_slide_report *report, int64_t now_unix_ms, uint64_t *seq);

/* A worker holding the slide was lost: one crash mark (journalled, not published). At
 * poison_limit marks the slide fails ("poison: 3 workers were lost while holding this
 * slide"), and *seq is that verdict's number; otherwise *seq = 0. */
int gs_slides_crash_mark(gs_slides *t, const char *slide_id, uint32_t attempt, int64_t now_unix_ms,
                         uint64_t *seq);

/* Retention: drops from the journal and the table every terminal slide last changed before
 * now_unix_ms - max_age_ms (gs_journal_retain). *dropped (may be NULL) gets the count.
 * Returns 0 or -1. */
int gs_slides_retain(gs_slides *t, int64_t now_unix_ms, int64_t max_age_ms, size_t *dropped);

/* Checks a message's fence: 0 if (slide_id, attempt) is the current attempt of a slide in
 * flight, else GS_SLIDES_IGNORED (counted as stale). */
int gs_slides_fence(gs_slides *t, const char *slide_id, uint32_t attempt);

/* Fills *info for slide_id; returns 0, or -1 if unknown. */
int gs_slides_get(const gs_slides *t, const char *slide_id, gs_slide_info *info);

/* Fills *info for the slide of a canonical path that answers for it: the one in flight, else
 * the most recently accepted (folded records answer for nothing: their duplicate_of does).
 * Returns 0, or -1 if no slide has that path. */
int gs_slides_get_by_path(const gs_slides *t, const char *path, gs_slide_info *info);

/* The slides in no particular order: count, and *info for index i (0, or -1 out of range). */
size_t gs_slides_count(const gs_slides *t);
int gs_slides_at(const gs_slides *t, size_t i, gs_slide_info *info);

/* Slides not DONE or FAILED. */
size_t gs_slides_in_flight(const gs_slides *t);

/* How the slide resumes after a restart (see gs_slide_step). */
gs_slide_step gs_slide_next_step(const gs_slide_info *info);

void gs_slides_stats_get(const gs_slides *t, gs_slides_stats *s);

#endif
