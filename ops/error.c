#include "ops/error.h"

#include <stdarg.h>
#include <string.h>

enum { GS_ERROR_MAX = 1024 };

static _Thread_local char error_buf[GS_ERROR_MAX];

int gs_error_set(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error_buf, sizeof error_buf, fmt, ap);
    va_end(ap);
    return -1;
}

int gs_error_prefix(const char *fmt, ...)
{
    char prefix[GS_ERROR_MAX];
    char old[GS_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, error_buf, sizeof old);
    /* Assembled by hand: truncation is intended, and snprintf would warn about it. */
    size_t np = strnlen(prefix, GS_ERROR_MAX - 3);
    size_t no = strnlen(old, GS_ERROR_MAX - 3 - np);
    memcpy(error_buf, prefix, np);
    memcpy(error_buf + np, ": ", 2);
    memcpy(error_buf + np + 2, old, no);
    error_buf[np + 2 + no] = '\0';
    return -1;
}

const char *gs_error_get(void)
{
    return error_buf;
}

void gs_error_clear(void)
{
    error_buf[0] = '\0';
}
