/*
 * journal: the coordinator's crash-safe record of slide state and of the events it publishes.
 *
 * A journal is a folder holding:
 *   - events.log: an append-only log, a record file (stages/runtime/recfile) of kind "JLOG".
 *     Each record is one journalled event: its sequence number, the slide it is about, the
 *     slide's new record (JSON, optional) and an opaque payload (the coordinator puts the
 *     packed EventMessage there). Every record is framed with a length and a CRC-32, appended
 *     and fsynced before the call returns, so a record is the commit point of a transition. A
 *     torn or corrupt record is detected on replay, dropped with a warning, and the log is
 *     rewritten without it; the records after a corrupt one are kept. A log written by a
 *     release before the record files (no file header, a "GSJ1" magic per record) is
 *     converted at open, with a warning.
 *   - <slide_id>.json: the newest record of each slide, written with gs_write_atomic
 *     (stages/runtime/fileio: temporary file, fsync, rename, fsync of the folder), so a file
 *     is either whole or absent. These files make
 *     replay fast and survive compaction of the log; when a log record is newer than the file
 *     (a crash between the two writes), the log record wins and the file is rewritten.
 *   - state.json: the sequence-number floor and the first sequence number from which the log
 *     is complete, written at each compaction so numbers are never reused.
 *   - journal.lock: flock'ed for the life of the journal, with the holder's pid: a second
 *     coordinator on the same folder is refused (it would reuse sequence numbers).
 *   - quarantine/: slide files that failed their checksum (each <slide_id>.json carries a
 *     CRC-32 of its content), kept for an operator and never served. The log's copy of the
 *     record, when it still has one, takes the file's place at replay.
 *
 * A write that fails leaves the journal as it was (the call's -1 means "did not happen") and
 * its errno in gs_journal_write_errno(): a full, read-only or failing folder
 * (gs_journal_errno_is_storage) is a condition the caller can wait out, probing with
 * gs_journal_probe() until the folder takes writes again.
 *
 * Use: j = gs_journal_open(dir) replays the folder (warnings about anything dropped are kept
 * for gs_journal_warning()); read the slides with gs_journal_slide_at(); journal a transition
 * with gs_journal_commit() (the event's sequence number is gs_journal_next_seq() when the
 * payload is built, and is returned); record a change that publishes nothing with
 * gs_journal_put_slide(); answer "events since N" with gs_journal_events_since(); drop old
 * terminal slides with gs_journal_retain(); gs_journal_destroy(&j). Not thread-safe: the
 * coordinator's main loop owns it.
 */
#ifndef GS_DAEMON_SERVICE_JOURNAL_H
#define GS_DAEMON_SERVICE_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "proto/vocab.h"

typedef struct gs_journal gs_journal;

/* One journalled event as kept in memory: payload points into journal-owned memory, valid
 * until the next call that changes the journal. slide_id is "" for an event of no slide. */
typedef struct {
    uint64_t seq;
    const char *slide_id;
    const uint8_t *payload;
    size_t payload_len;
} gs_journal_event;

/* Opens the journal folder dir (created with its parents if missing) and replays it. Torn,
 * corrupt or half-written files are skipped (or removed, for temporary files) and each gives
 * one warning naming the file; they never make the open fail. Returns the journal (caller
 * owns; gs_journal_destroy), or NULL with the error set when dir cannot be created or
 * written, when another process holds the folder's lock ("in use by another coordinator
 * (pid N holds journal.lock)"), when events.log is not a journal log (another file's header,
 * a newer format, a damaged header: it is left for an operator, never read as empty), or on
 * allocation failure. */
gs_journal *gs_journal_open(const char *dir);

/* Closes the journal and sets *j to NULL. NULL and *j == NULL are accepted. */
void gs_journal_destroy(gs_journal **j);

/* The folder the journal was opened on (journal-owned). */
const char *gs_journal_dir(const gs_journal *j);

/* The newest sequence number ever given (0 for a new journal). */
uint64_t gs_journal_last_seq(const gs_journal *j);

/* The sequence number the next gs_journal_commit() will give: gs_journal_last_seq() + 1. */
uint64_t gs_journal_next_seq(const gs_journal *j);

/* Events with a sequence number at or above this are all retained (none compacted away);
 * 1 until the first compaction that dropped events. */
uint64_t gs_journal_complete_from(const gs_journal *j);

/* Warnings of the replay (one per file or log range skipped, removed or repaired), in the
 * order found. Strings are journal-owned. */
size_t gs_journal_warning_count(const gs_journal *j);
const char *gs_journal_warning(const gs_journal *j, size_t i);

/* Slides with a record, in no particular order. gs_journal_slide_at() returns 0 and fills the
 * non-NULL outputs (journal-owned, valid until the journal changes), or -1 if i is out of
 * range. */
size_t gs_journal_slide_count(const gs_journal *j);
int gs_journal_slide_at(const gs_journal *j, size_t i, const char **slide_id, const json_t **record,
                        int *terminal, int64_t *time_unix_ms, uint64_t *seq);

/* The newest record of slide_id (journal-owned), or NULL if it has none. */
const json_t *gs_journal_slide_get(const gs_journal *j, const char *slide_id);

/* Journals one event: appends it to the log with the next sequence number and fsyncs, then,
 * if record is not NULL, writes the slide's record file (write, fsync, rename, fsync folder).
 * slide_id may be NULL only when record is NULL. terminal and time_unix_ms go with the record
 * (retention drops terminal slides by that time). The payload is copied. On success returns 0
 * and the sequence number in *seq (may be NULL); on an I/O error returns -1 with the error
 * set, and the sequence number is not used. */
int gs_journal_commit(gs_journal *j, const char *slide_id, const json_t *record, int terminal,
                      int64_t time_unix_ms, const void *payload, size_t payload_len, uint64_t *seq);

/* Replaces a slide's record without journalling an event (nothing is published, no sequence
 * number is used): the file is written with write, fsync, rename. Returns 0 or -1. */
int gs_journal_put_slide(gs_journal *j, const char *slide_id, const json_t *record, int terminal,
                         int64_t time_unix_ms);

/* Fills out[0..max) with the events whose seq > after_seq, oldest first, and returns how many.
 * The pointers in out are journal-owned (see gs_journal_event). */
size_t gs_journal_events_since(const gs_journal *j, uint64_t after_seq, gs_journal_event *out,
                               size_t max);

/* Drops every terminal slide whose record time is older than now_unix_ms - max_age_ms: its
 * file, and its events from the log (rewritten through a temporary file). The number of
 * slides dropped goes to *dropped (may be NULL). Returns 0, or -1 on an I/O error (the
 * journal stays consistent: dropping is redone at the next call). */
int gs_journal_retain(gs_journal *j, int64_t now_unix_ms, int64_t max_age_ms, size_t *dropped);

/* 1 when the log holds the event of sequence number seq (not compacted, not lost). */
int gs_journal_has_event(const gs_journal *j, uint64_t seq);

/* The errno of the last write that failed (gs_journal_commit, _put_slide, _retain, _probe),
 * or 0 when the last write succeeded. */
int gs_journal_write_errno(const gs_journal *j);

/* 1 when errno e says the folder cannot take writes for now (full, over quota, read-only,
 * failing, no permission), as opposed to a broken journal or a bad call. */
int gs_journal_errno_is_storage(int e);

/* Writes, fsyncs and removes a 64 KiB probe file in the folder: 0 when the folder takes
 * writes again, or -1 with the error set (and gs_journal_write_errno() its errno). */
int gs_journal_probe(gs_journal *j);

/* Fault injection for tests, process-wide: before each write of the journal (what names the
 * file: "events.log", a slide id, "state.json", ".probe"), fn(ud, dir, what) is asked; a
 * non-zero errno makes that write fail as if the system had returned it. NULL removes the
 * hook. Never set outside tests. */
typedef int gs_journal_fault_fn(void *ud, const char *dir, const char *what);
void gs_journal_set_fault_hook(gs_journal_fault_fn *fn, void *ud);

#endif
