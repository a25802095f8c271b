/*
 * log: one log line of a gastroscreen process (the coordinator or a stage worker), sent to the
 * systemd journal with structured fields when stderr is the journal's stream, else written as
 * plain text on stderr.
 *
 * Under systemd, stderr of a service is a stream to journald and systemd sets JOURNAL_STREAM to
 * that stream's "device:inode". Then a line goes out with sd_journal_sendv() carrying MESSAGE,
 * PRIORITY, SYSLOG_IDENTIFIER, STAGE (the pipeline stage: "tiler", ..., "coordinator") and,
 * for a line about one slide, SLIDE_ID, so `journalctl SLIDE_ID=<id>` follows a slide through
 * every process. Anywhere else (a terminal, a test's log file) the line is "<ident>: <message>".
 *
 * Use:
 *     gs_log_line("gastroscreen-infer", "infer", slide_id_or_NULL, GS_LOG_INFO, "job failed");
 *     gs_log_linef("gastroscreend", "coordinator", NULL, GS_LOG_INFO, "%d workers", n);
 * gs_log_format() builds the journal fields without sending them (for tests and for callers
 * with their own transport).
 *
 * Threads: every function may be called from any thread; nothing is shared between calls.
 */
#ifndef GS_STAGES_RUNTIME_LOG_H
#define GS_STAGES_RUNTIME_LOG_H

#include <stddef.h>
#include <sys/uio.h>

/* syslog priorities used by gastroscreen. */
enum { GS_LOG_ERR = 3, GS_LOG_WARNING = 4, GS_LOG_INFO = 6 };

/* Longest message kept (longer ones are cut). */
#define GS_LOG_MESSAGE_MAX 2048

/* The fields of one journal entry: iov[0..n) point into buf. */
typedef struct {
    char buf[GS_LOG_MESSAGE_MAX + 512];
    struct iovec iov[5];
    int n;
} gs_log_record;

/* 1 when stderr is the journal's stream (JOURNAL_STREAM names stderr's device and inode),
 * else 0. */
int gs_log_to_journal(void);

/* Fills *r with "MESSAGE=<message>", "PRIORITY=<priority>", "SYSLOG_IDENTIFIER=<ident>",
 * "STAGE=<stage>" and, when slide_id is neither NULL nor "", "SLIDE_ID=<slide_id>". message is
 * cut at GS_LOG_MESSAGE_MAX bytes, ident, stage and slide_id at 127. NULL ident, stage or
 * message count as "". Returns the number of fields (4 or 5, also in r->n). */
int gs_log_format(gs_log_record *r, const char *ident, const char *stage, const char *slide_id,
                  int priority, const char *message);

/* Copies `in` (NULL counts as "") to out, writing each control character (below 0x20, and
 * 0x7f) as "\xNN" so that no text quoted from a peer can break or forge a log line; cut at
 * cap - 1 bytes, never in the middle of an escape. Returns the length written. */
size_t gs_log_escape(char *out, size_t cap, const char *in);

/* Logs one line (control characters escaped by gs_log_escape): to the journal with the fields of
 * gs_log_format() when gs_log_to_journal(), else "<ident>: <message>\n" on stderr. Errors of the
 * journal are ignored (logging must not fail the caller). */
void gs_log_line(const char *ident, const char *stage, const char *slide_id, int priority,
                 const char *message);

/* gs_log_line() with a printf format for the message. */
void gs_log_linef(const char *ident, const char *stage, const char *slide_id, int priority,
                  const char *fmt, ...) __attribute__((format(printf, 5, 6)));

#endif
