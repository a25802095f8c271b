/*
 * fileio: how gastroscreen creates folders, replaces files, reads them, and reads the clocks.
 *
 * A file that must survive a crash whole (a report, a journal's slide record, a slide's plan)
 * is written with gs_write_atomic(): the bytes go to a temporary file beside the target (same
 * folder, so the rename never crosses file systems), are fsynced, renamed over the target, and
 * the folder is fsynced so that the rename itself is on disk. After a crash the target is the
 * old file or the new one, never a mix. A crash can leave the temporary file behind; its name
 * is the target's followed by ".<pid>.<n>" and GS_TMP_SUFFIX, so a module that owns a folder
 * removes leftovers by that suffix when it starts. gs_mkdir_p() creates a folder and its
 * missing parents; gs_read_file() reads a whole file, refusing one larger than the caller's
 * cap; gs_write_all() writes a buffer to an open file whatever the size of each write().
 *
 * Every function that can fail returns 0 / -1 (or NULL) with the message set (ops/error.h):
 * the path and the system's text for errno. errno is kept as the failing call left it, so a
 * caller can tell a missing file (ENOENT) from the other failures.
 *
 * Clocks: gs_mono_*() measure durations and deadlines (CLOCK_MONOTONIC: any origin, never
 * jumps); gs_unix_ms() is for times that are stored or shown (CLOCK_REALTIME, milliseconds
 * since 1970).
 */
#ifndef GS_STAGES_RUNTIME_FILEIO_H
#define GS_STAGES_RUNTIME_FILEIO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The last characters of every temporary file gs_write_atomic() makes. */
#define GS_TMP_SUFFIX ".tmp"

/* Creates the folder path and its missing parents with permissions mode (less the umask).
 * An existing folder is success; an existing file that is not a folder is an error. Returns 0
 * or -1 with the message naming the part of the path that could not be made. */
int gs_mkdir_p(const char *path, mode_t mode);

/* Replaces (or creates) path with len bytes of buf: temporary file in the same folder, write
 * everything, fsync, rename over path, fsync of the folder. The file gets exactly mode (the
 * umask does not apply: a report is meant to be readable whatever the process's umask). On
 * any error the temporary file is removed and the old file, if any, is left as it was; the
 * one exception is a failed fsync of the folder after the rename, which returns -1 with the
 * new file in place (it is whole, but the rename may not survive a power cut). Returns 0 or
 * -1 with the error set. */
int gs_write_atomic(const char *path, const void *buf, size_t len, mode_t mode);

/* Reads the whole file path into a malloc'd buffer (caller frees) with one NUL byte after the
 * data, so text can be parsed in place; *len gets the size without the NUL. A file longer
 * than max_len bytes is refused (errno EFBIG). Returns the buffer or NULL with the error set
 * (errno ENOENT for a missing file). */
uint8_t *gs_read_file(const char *path, size_t max_len, size_t *len);

/* Writes all n bytes of buf to fd, retrying short writes and EINTR. name is the file's name
 * for the message. Returns 0 or -1 with the error set and errno from the failing write()
 * (ENOSPC, EFBIG, EIO...). */
int gs_write_all(int fd, const void *buf, size_t n, const char *name);

/* fsyncs the folder that holds path (the part before the last '/', or "." without one), so a
 * file created, renamed or removed there stays so after a crash. File systems that cannot
 * fsync a folder (EINVAL) count as success. Returns 0 or -1 with the error set. */
int gs_fsync_parent(const char *path);

/* Monotonic clock in nanoseconds, microseconds and milliseconds (any origin). */
int64_t gs_mono_ns(void);
int64_t gs_mono_us(void);
int64_t gs_mono_ms(void);

/* Wall-clock time in milliseconds since 1970-01-01 UTC. */
int64_t gs_unix_ms(void);

#endif
