#include "stages/runtime/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

#include "ops/error.h"

int gs_log_to_journal(void)
{
    const char *e = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2 || fstat(STDERR_FILENO, &st) != 0)
        return 0;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

/* Appends "KEY=value" (value cut at max bytes) at *used in r->buf as the next field. */
static void field(gs_log_record *r, size_t *used, const char *key, const char *value, size_t max)
{
    size_t cap = sizeof r->buf - *used;
    int n = snprintf(r->buf + *used, cap, "%s=%.*s", key, (int)max, value ? value : "");
    /* The buffer is sized for every field at its maximum: a cut here is a broken invariant. */
    GS_ASSERT(n >= 0 && (size_t)n < cap);
    r->iov[r->n].iov_base = r->buf + *used;
    r->iov[r->n].iov_len = (size_t)n;
    r->n++;
    *used += (size_t)n + 1;
}

int gs_log_format(gs_log_record *r, const char *ident, const char *stage, const char *slide_id,
                  int priority, const char *message)
{
    size_t used = 0;
    char prio[16];
    snprintf(prio, sizeof prio, "%d", priority);
    r->n = 0;
    field(r, &used, "MESSAGE", message, GS_LOG_MESSAGE_MAX);
    field(r, &used, "PRIORITY", prio, sizeof prio);
    field(r, &used, "SYSLOG_IDENTIFIER", ident, 127);
    field(r, &used, "STAGE", stage, 127);
    if (slide_id && slide_id[0])
        field(r, &used, "SLIDE_ID", slide_id, 127);
    return r->n;
}

size_t gs_log_escape(char *out, size_t cap, const char *in)
{
    GS_ASSERT(cap > 0);
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)(in ? in : ""); *p; p++) {
        if (*p >= 0x20 && *p != 0x7f) {
            if (n + 1 >= cap)
                break;
            out[n++] = (char)*p;
        } else {
            if (n + 4 >= cap)
                break;
            snprintf(out + n, 5, "\\x%02x", *p);
            n += 4;
        }
    }
    out[n] = 0;
    return n;
}

void gs_log_line(const char *ident, const char *stage, const char *slide_id, int priority,
                 const char *message)
{
    /* Messages quote what peers sent (worker ids, errors, paths): a newline in one must not
     * start a line of its own in a text log. */
    char esc[GS_LOG_MESSAGE_MAX + 1];
    gs_log_escape(esc, sizeof esc, message);
    message = esc;
    if (gs_log_to_journal()) {
        gs_log_record r;
        gs_log_format(&r, ident, stage, slide_id, priority, message);
        sd_journal_sendv(r.iov, r.n);
        return;
    }
    fprintf(stderr, "%s: %s\n", ident ? ident : "", message ? message : "");
}

void gs_log_linef(const char *ident, const char *stage, const char *slide_id, int priority,
                  const char *fmt, ...)
{
    char msg[GS_LOG_MESSAGE_MAX + 1];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    gs_log_line(ident, stage, slide_id, priority, msg);
}
