/*
 * error: the last error message of the calling thread.
 *
 * Every gastroscreen function that can fail on bad input returns 0 / -1 (or NULL) and leaves
 * a human-readable message here, naming the file or message and the cause. Callers read it
 * with gs_error_get() and may add context in front with gs_error_prefix() before returning
 * -1 themselves, so the final message reads like "slide.svs: level 2: Bogus marker length".
 * The buffer is thread-local, so workers never see each other's errors.
 *
 * Broken internal invariants are not errors: GS_ASSERT aborts loudly so a supervisor restarts
 * the process and the work is recovered elsewhere.
 */
#ifndef GS_OPS_ERROR_H
#define GS_OPS_ERROR_H

#include <stdio.h>
#include <stdlib.h>

/* Replaces the thread's message; always returns -1 so callers can `return gs_error_set(..)`. */
int gs_error_set(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Puts "<formatted>: " in front of the current message; returns -1. */
int gs_error_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The current message ("" if none). Owned by the thread; valid until the next set. */
const char *gs_error_get(void);

/* Clears the message. */
void gs_error_clear(void);

#define GS_ASSERT(cond)                                                                      \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #cond);     \
            abort();                                                                         \
        }                                                                                    \
    } while (0)

#endif
