/*
 * intake: how slides reach the coordinator (PROTOCOL.md §2, §13).
 *
 * Three doors, one rule. A gs_intake owns the coordinator's intake SUB socket (bound, and
 * optionally connected to announcers that bind their own PUB; it takes `slide.arrived.`
 * events), the submit ROUTER (SubmitRequest -> SubmitReply) and an optional watched folder,
 * where a file is taken only once its size and mtime have not changed for watch_settle. Every
 * path goes through gs_slides_resolve_path() against the slide roots before the coordinator
 * sees it; a path outside the roots, missing or not a regular file is rejected (a REJECTED
 * reply on submit, a counted log line for an announcement). An accepted path is handed to the
 * accept callback, which journals the intake (gs_slides_intake) before returning, so a
 * SubmitReply is only ever sent after the ACCEPTED record is on disk. A path the callback
 * refuses (the journal cannot be written now) is answered REJECTED with the callback's reason
 * on submit, logged for an announcement, left in the watched folder for a later scan (the
 * callback counts it); it never stops the intake.
 *
 * Use: in = gs_intake_new(&opts); add gs_intake_poll_items() to the loop's zmq_poll;
 * call gs_intake_handle(in, now) each iteration (it drains both sockets without blocking and
 * scans the watched folder when due); gs_intake_destroy(&in). Not thread-safe: the
 * coordinator's loop owns it.
 */
#ifndef GS_DAEMON_SERVICE_INTAKE_H
#define GS_DAEMON_SERVICE_INTAKE_H

#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#include "daemon/service/slide_table.h"
#include "stages/runtime/transport.h"

/* Journals the intake of a resolved, canonical path (gs_slides_intake's contract): writes the
 * slide id into out_id, *duplicate and *seq. Returns 0, or -1 with the error set. */
typedef int gs_intake_accept_fn(void *ud, const char *path, int64_t size, int64_t mtime_ms,
                                gs_intake_source source, const char *external_id,
                                char out_id[GS_SLIDE_ID_LEN + 1], int *duplicate, uint64_t *seq);

typedef struct {
    void *zmq_ctx;              /* required */
    const char *intake;         /* SUB bind endpoint; NULL or "" = no intake socket */
    const char *intake_connect; /* whitespace-separated PUB endpoints to connect; may be NULL */
    const char *submit;         /* ROUTER bind endpoint; NULL or "" = no submit socket */
    const char *const *roots;   /* slide roots (absolute folders) */
    size_t n_roots;
    const char *watch_dir; /* NULL or "" = no watched folder */
    int64_t watch_settle_ms;
    gs_intake_accept_fn *accept; /* required */
    void *accept_ud;
    int quiet;                  /* no log lines */
    const gs_curve_keys *curve; /* CURVE server keys of tcp:// sockets; NULL = plain */
} gs_intake_options;

/* Counters since creation (socket-level drops are in the transports' own counters). */
typedef struct {
    uint64_t announced, submitted, watched; /* intakes accepted (new or duplicate) per door */
    uint64_t rejected;                      /* paths refused (roots, missing, not a file) */
    /* per socket, incl. the transport's framing checks and the content checks here */
    uint64_t intake_malformed, intake_wrong_type, submit_malformed, submit_wrong_type;
} gs_intake_counters;

typedef struct gs_intake gs_intake;

/* Binds / connects the sockets. Returns the intake (caller owns; gs_intake_destroy) or NULL
 * with the error set (bad endpoint, address in use). */
gs_intake *gs_intake_new(const gs_intake_options *o);

/* Closes the sockets and frees; sets *in to NULL. NULL and *in == NULL are accepted. */
void gs_intake_destroy(gs_intake **in);

/* Appends ZMQ_POLLIN items for the intake's sockets to items[0..max) and returns how many. */
size_t gs_intake_poll_items(gs_intake *in, zmq_pollitem_t *items, size_t max);

/* Drains both sockets without blocking (each request answered or dropped) and scans the
 * watched folder when due (every quarter of watch_settle, at most once a second). now_ms is
 * a monotonic clock. Returns the number of paths accepted (a refusal by the accept callback
 * is answered and counted, not an error). */
int gs_intake_handle(gs_intake *in, int64_t now_ms);

/* Resolves path against the roots and accepts it: the embedded mode's door. Returns 0 (out_id
 * etc. filled), or -1 with the error set (rejected path, journal failure). */
int gs_intake_path(gs_intake *in, const char *path, gs_intake_source source,
                   const char *external_id, char out_id[GS_SLIDE_ID_LEN + 1], int *duplicate,
                   uint64_t *seq);

/* The endpoint actually bound ("" when the socket is absent). Intake-owned. */
const char *gs_intake_submit_endpoint(const gs_intake *in);
const char *gs_intake_intake_endpoint(const gs_intake *in);

void gs_intake_counters_get(const gs_intake *in, gs_intake_counters *c);

#endif
