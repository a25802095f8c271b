#include "stages/runtime/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ops/error.h"

/* Tries before gs_write_atomic gives up on finding a free temporary name: names are unique
 * per process and call, so a clash is a leftover of a crashed process with the same pid. */
#define TMP_NAME_TRIES 100

/* Sets the message "<formatted>: <strerror(errno)>" and gives errno back as the failed call
 * left it (formatting may change errno, and callers tell ENOENT apart). Returns -1. */
__attribute__((format(printf, 1, 2))) static int fail_errno(const char *fmt, ...)
{
    int e = errno;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    gs_error_set("%s: %s", msg, strerror(e));
    errno = e;
    return -1;
}

int gs_mkdir_p(const char *path, mode_t mode)
{
    if (!path || !*path)
        return gs_error_set("cannot create a folder with no name");
    char *buf = strdup(path);
    if (!buf)
        return gs_error_set("%s: out of memory", path);
    int rc = 0;
    /* Every prefix that ends before a '/' (and the whole path) is made in turn; the first
     * character is skipped so that "/" of an absolute path is not a mkdir of "". */
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char saved = *p;
        *p = '\0';
        if (mkdir(buf, mode) != 0 && errno != EEXIST) {
            rc = fail_errno("%s: cannot create folder", buf);
            break;
        }
        *p = saved;
        if (saved == '\0')
            break;
    }
    free(buf);
    if (rc != 0)
        return -1;
    /* EEXIST also means a plain file of that name; only a folder will do. */
    struct stat st;
    if (stat(path, &st) != 0)
        return fail_errno("%s", path);
    if (!S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        return fail_errno("%s: cannot create folder", path);
    }
    return 0;
}

int gs_write_all(int fd, const void *buf, size_t n, const char *name)
{
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            /* write() returning 0 for a non-empty buffer has no errno; call it an I/O error
             * rather than loop forever. */
            if (w == 0)
                errno = EIO;
            return fail_errno("%s: cannot write", name);
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int gs_fsync_parent(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir)
        return gs_error_set("%s: out of memory", path);
    int rc = 0;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        rc = fail_errno("%s: cannot open the folder to fsync it", dir);
    else if (fsync(fd) != 0 && errno != EINVAL)
        rc = fail_errno("%s: cannot fsync the folder", dir);
    if (fd >= 0)
        close(fd);
    free(dir);
    return rc;
}

/* Opens a new temporary file beside path (O_EXCL, so an existing file or symlink of that name
 * is never written through). Returns the descriptor with the name in *tmp (caller frees), or
 * -1 with the error set. */
static int open_tmp(const char *path, char **tmp)
{
    static atomic_uint counter;
    size_t cap = strlen(path) + sizeof ".-9223372036854775808.4294967295" GS_TMP_SUFFIX;
    char *name = malloc(cap);
    if (!name)
        return gs_error_set("%s: out of memory", path);
    for (int i = 0; i < TMP_NAME_TRIES; i++) {
        snprintf(name, cap, "%s.%ld.%u%s", path, (long)getpid(), atomic_fetch_add(&counter, 1),
                 GS_TMP_SUFFIX);
        int fd = open(name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0) {
            *tmp = name;
            return fd;
        }
        if (errno != EEXIST)
            break;
    }
    fail_errno("%s: cannot create a temporary file beside it (%s)", path, name);
    free(name);
    return -1;
}

int gs_write_atomic(const char *path, const void *buf, size_t len, mode_t mode)
{
    if (!path || !*path)
        return gs_error_set("cannot write a file with no name");
    char *tmp = NULL;
    int saved_errno;
    int fd = open_tmp(path, &tmp);
    if (fd < 0)
        return -1;
    if (fchmod(fd, mode) != 0) {
        fail_errno("%s: cannot set permissions", tmp);
        goto fail_close_tmp;
    }
    if (gs_write_all(fd, buf, len, tmp) != 0)
        goto fail_close_tmp;
    /* The data must be on disk before the rename makes it visible, or a crash could leave the
     * name over an empty or partial file. */
    if (fsync(fd) != 0) {
        fail_errno("%s: cannot fsync", tmp);
        goto fail_close_tmp;
    }
    /* close() can report a write error of a network file system that fsync did not. */
    if (close(fd) != 0) {
        fail_errno("%s: cannot write", tmp);
        goto fail_unlink_tmp;
    }
    if (rename(tmp, path) != 0) {
        fail_errno("%s: cannot rename %s into place", path, tmp);
        goto fail_unlink_tmp;
    }
    free(tmp);
    if (gs_fsync_parent(path) != 0)
        return gs_error_prefix("%s: written, but the rename may not survive a crash", path);
    return 0;

fail_close_tmp:
    close(fd);
fail_unlink_tmp:
    saved_errno = errno;
    unlink(tmp);
    free(tmp);
    errno = saved_errno;
    return -1;
}

uint8_t *gs_read_file(const char *path, size_t max_len, size_t *len)
{
    /* Room for max_len bytes, one more to see that a file is too long, and the NUL. */
    if (max_len > SIZE_MAX - 2)
        max_len = SIZE_MAX - 2;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fail_errno("%s", path);
        return NULL;
    }
    uint8_t *buf = NULL;
    int saved_errno;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        fail_errno("%s", path);
        goto fail_close;
    }
    if (S_ISDIR(st.st_mode)) {
        errno = EISDIR;
        fail_errno("%s", path);
        goto fail_close;
    }
    /* The size is only a first guess: a file may grow while it is read (a log being appended
     * to), and /proc files say 0. Reading goes on to the end either way. */
    size_t cap = st.st_size > 0 && (uint64_t)st.st_size <= max_len ? (size_t)st.st_size + 2 : 4096;
    if (cap > max_len + 2)
        cap = max_len + 2;
    size_t n = 0;
    for (;;) {
        if (n + 1 == cap || !buf) {
            size_t ncap = !buf ? cap : cap > (max_len + 2) / 2 ? max_len + 2 : 2 * cap;
            uint8_t *nb = realloc(buf, ncap);
            if (!nb) {
                gs_error_set("%s: out of memory for %zu bytes", path, ncap);
                goto fail_free;
            }
            buf = nb;
            cap = ncap;
        }
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            fail_errno("%s: cannot read", path);
            goto fail_free;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n > max_len) {
            gs_error_set("%s: larger than %zu bytes", path, max_len);
            errno = EFBIG; /* after the message: formatting it may change errno */
            goto fail_free;
        }
    }
    buf[n] = '\0';
    close(fd);
    *len = n;
    return buf;

fail_free:
    free(buf);
fail_close:
    saved_errno = errno;
    close(fd);
    errno = saved_errno;
    return NULL;
}

static int64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t gs_mono_ns(void)
{
    return clock_ns(CLOCK_MONOTONIC);
}

int64_t gs_mono_us(void)
{
    return clock_ns(CLOCK_MONOTONIC) / 1000;
}

int64_t gs_mono_ms(void)
{
    return clock_ns(CLOCK_MONOTONIC) / 1000000;
}

int64_t gs_unix_ms(void)
{
    return clock_ns(CLOCK_REALTIME) / 1000000;
}
