#include "stages/runtime/recfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "ops/error.h"
#include "stages/runtime/fileio.h"

/* The first bytes of every record file, whatever its kind. */
static const char MAGIC[] = "GSRF";
#define KIND_LEN (sizeof MAGIC - 1)
/* Where the header's fields are: magic, kind, then these two. */
#define VERSION_AT (2 * KIND_LEN)
#define HEADER_CRC_AT (VERSION_AT + 4)
/* In a record's frame: the length, then its crc. */
#define FRAME_CRC_AT 4
#define DEFAULT_MODE 0640

/* The header-less framing before this module: [magic][length][payload][crc32 of payload]. Its
 * payloads are what version 1 of each owner's format holds. */
#define LEGACY_PAYLOAD_AT 8
#define LEGACY_FRAME_LEN (LEGACY_PAYLOAD_AT + 4)
#define LEGACY_VERSION 1

struct gs_recfile {
    char *path;
    int fd;
    char kind[KIND_LEN];
    uint32_t version;
    uint32_t max_record;
    uint64_t size;       /* the file's size as this writer last saw or left it */
    int intact;          /* 1 once the whole file is known to hold only intact records */
    uint64_t intact_end; /* end of the intact prefix, from the last scan */
    gs_recfile_legacy_info legacy;
};

uint32_t gs_crc32(uint32_t crc, const void *data, size_t n)
{
    /* zlib answers a NULL buffer with the initial value, not with crc. */
    if (n == 0)
        return crc;
    return (uint32_t)crc32_z(crc, data, n);
}

void gs_le32_put(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

uint32_t gs_le32_get(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void gs_le64_put(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

uint64_t gs_le64_get(const uint8_t *p)
{
    return (uint64_t)gs_le32_get(p) | (uint64_t)gs_le32_get(p + 4) << 32;
}

static uint32_t record_crc(const uint8_t *len_field, const void *payload, size_t len)
{
    return gs_crc32(gs_crc32(0, len_field, sizeof(uint32_t)), payload, len);
}

/* 1 if an intact record starts at p (avail bytes to the end of the file), its payload length
 * in *len. */
static int frame_ok(const uint8_t *p, size_t avail, uint32_t max_record, uint32_t *len)
{
    if (avail < GS_RECFILE_FRAME_LEN)
        return 0;
    uint32_t n = gs_le32_get(p);
    if (n > max_record || n > avail - GS_RECFILE_FRAME_LEN)
        return 0;
    if (record_crc(p, p + GS_RECFILE_FRAME_LEN, n) != gs_le32_get(p + FRAME_CRC_AT))
        return 0;
    *len = n;
    return 1;
}

/* Where the next intact record starts at or after from, or n if none does. Without a record
 * magic this tries every offset, but a length beyond the file is rejected before any crc is
 * computed, and damage is rare. */
static size_t next_intact(const uint8_t *buf, size_t n, size_t from, uint32_t max_record)
{
    uint32_t len;
    for (size_t p = from; p + GS_RECFILE_FRAME_LEN <= n; p++)
        if (frame_ok(buf + p, n - p, max_record, &len))
            return p;
    return n;
}

static int legacy_ok(const uint8_t *p, size_t avail, uint32_t magic, uint32_t max_record,
                     uint32_t *len)
{
    if (avail < LEGACY_FRAME_LEN || gs_le32_get(p) != magic)
        return 0;
    uint32_t n = gs_le32_get(p + sizeof(uint32_t)); /* after the magic */
    if (n > max_record || n > avail - LEGACY_FRAME_LEN)
        return 0;
    if (gs_crc32(0, p + LEGACY_PAYLOAD_AT, n) != gs_le32_get(p + LEGACY_PAYLOAD_AT + n))
        return 0;
    *len = n;
    return 1;
}

static size_t legacy_next(const uint8_t *buf, size_t n, size_t from, uint32_t magic,
                          uint32_t max_record)
{
    uint32_t len;
    for (size_t p = from; p + LEGACY_FRAME_LEN <= n; p++)
        if (legacy_ok(buf + p, n - p, magic, max_record, &len))
            return p;
    return n;
}

/* Is buf[0..n) a file in the header-less framing? It is when it starts with the record magic
 * (or, shorter than one, with the beginning of it: a torn first record), or when it is not a
 * record file and an intact old record is found further on (the first one was damaged). */
static int legacy_detect(const uint8_t *buf, size_t n, uint32_t magic, uint32_t max_record)
{
    uint8_t m[4];
    gs_le32_put(m, magic);
    if (n < sizeof m)
        return memcmp(buf, m, n) == 0;
    if (memcmp(buf, m, sizeof m) == 0)
        return 1;
    return memcmp(buf, MAGIC, KIND_LEN) != 0 && legacy_next(buf, n, 0, magic, max_record) < n;
}

/* Reads the whole file into a malloc'd buffer (caller frees). Returns 0 or -1 with the error
 * set. */
static int load(const gs_recfile *f, uint8_t **out, size_t *n)
{
    struct stat st;
    if (fstat(f->fd, &st) != 0)
        return gs_error_set("%s: %s", f->path, strerror(errno));
    size_t size = (size_t)st.st_size;
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return gs_error_set("%s: out of memory for %zu bytes", f->path, size);
    size_t got = 0;
    while (got < size) {
        ssize_t r = pread(f->fd, buf + got, size - got, (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            gs_error_set("%s: cannot read: %s", f->path, strerror(errno));
            free(buf);
            return -1;
        }
        if (r == 0)
            break; /* shrunk meanwhile: what was read is the file */
        got += (size_t)r;
    }
    *out = buf;
    *n = got;
    return 0;
}

static void put_header(uint8_t *h, const char *kind, uint32_t version)
{
    memcpy(h, MAGIC, KIND_LEN);
    memcpy(h + KIND_LEN, kind, KIND_LEN);
    gs_le32_put(h + VERSION_AT, version);
    gs_le32_put(h + HEADER_CRC_AT, gs_crc32(0, h, HEADER_CRC_AT));
}

/* The permissions of the open file, for a rewrite that replaces it. */
static mode_t file_mode(const gs_recfile *f)
{
    struct stat st;
    return fstat(f->fd, &st) == 0 ? st.st_mode & 07777 : DEFAULT_MODE;
}

/* Writes the intact old-framing records of buf[0..n) in this format to f->path, replacing the
 * file. Returns 0 or -1 with the error set. */
static int legacy_convert(gs_recfile *f, const uint8_t *buf, size_t n, uint32_t magic)
{
    /* A record shrinks by LEGACY_FRAME_LEN - GS_RECFILE_FRAME_LEN bytes, so the header plus
     * n bytes always hold the result. */
    uint8_t *out = malloc(GS_RECFILE_HEADER_LEN + n);
    if (!out)
        return gs_error_set("%s: out of memory to convert it", f->path);
    put_header(out, f->kind, LEGACY_VERSION);
    size_t w = GS_RECFILE_HEADER_LEN, o = 0;
    while (o < n) {
        uint32_t len;
        if (!legacy_ok(buf + o, n - o, magic, f->max_record, &len)) {
            size_t next = legacy_next(buf, n, o + 1, magic, f->max_record);
            f->legacy.dropped += next - o;
            o = next;
            continue;
        }
        gs_le32_put(out + w, len);
        const uint8_t *payload = buf + o + LEGACY_PAYLOAD_AT;
        memcpy(out + w + GS_RECFILE_FRAME_LEN, payload, len);
        gs_le32_put(out + w + FRAME_CRC_AT, record_crc(out + w, payload, len));
        w += GS_RECFILE_FRAME_LEN + len;
        o += LEGACY_FRAME_LEN + len;
        f->legacy.records++;
    }
    int rc = gs_write_atomic(f->path, out, w, file_mode(f));
    free(out);
    if (rc != 0)
        return gs_error_prefix("%s: cannot convert it from the header-less format", f->path);
    f->legacy.converted = 1;
    return 0;
}

/* For a file that exists but is not one to open: errno EINVAL, so that no caller takes it for
 * a missing file (ENOENT) from whatever the last system call left. Returns -1. */
static int refuse(void)
{
    errno = EINVAL;
    return -1;
}

/* Checks the header of an opened file against the options; converts a file in the old
 * framing (then *reopen is set: the file at path was replaced). Returns 0 or -1 with the
 * error set. */
static int check_header(gs_recfile *f, const gs_recfile_options *o, int *reopen)
{
    *reopen = 0;
    uint8_t h[GS_RECFILE_HEADER_LEN];
    ssize_t got = pread(f->fd, h, sizeof h, 0);
    if (got < 0)
        return gs_error_set("%s: cannot read: %s", f->path, strerror(errno));
    size_t n = (size_t)got;
    if (n >= KIND_LEN && memcmp(h, MAGIC, KIND_LEN) == 0) {
        if (n < sizeof h || gs_crc32(0, h, HEADER_CRC_AT) != gs_le32_get(h + HEADER_CRC_AT)) {
            gs_error_set("%s: damaged record-file header", f->path);
            return refuse();
        }
        if (memcmp(h + KIND_LEN, o->kind, KIND_LEN) != 0) {
            gs_error_set("%s: a record file of kind \"%.4s\", not \"%.4s\"", f->path,
                         (const char *)h + KIND_LEN, o->kind);
            return refuse();
        }
        f->version = gs_le32_get(h + VERSION_AT);
        if (f->version > o->version) {
            gs_error_set("%s: format version %u is newer than this build reads (%u)", f->path,
                         f->version, o->version);
            return refuse();
        }
        return 0;
    }
    if (o->legacy_magic) {
        uint8_t *buf = NULL;
        size_t size = 0;
        if (load(f, &buf, &size) != 0)
            return -1;
        int rc = 1;
        if (legacy_detect(buf, size, o->legacy_magic, f->max_record)) {
            rc = legacy_convert(f, buf, size, o->legacy_magic);
            *reopen = rc == 0;
        }
        free(buf);
        if (rc <= 0)
            return rc;
    }
    gs_error_set("%s: not a \"%.4s\" record file (it starts with %02x %02x %02x %02x)", f->path,
                 o->kind, n > 0 ? h[0] : 0, n > 1 ? h[1] : 0, n > 2 ? h[2] : 0, n > 3 ? h[3] : 0);
    return refuse();
}

/* Opens f->path, creating it (or filling an empty file) with a header if asked. Returns 0 or
 * -1 with the error set. */
static int open_fd(gs_recfile *f, const gs_recfile_options *o)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        f->fd = open(f->path, O_RDWR | O_CLOEXEC);
        if (f->fd < 0 && !(errno == ENOENT && o->create)) {
            int e = errno;
            gs_error_set("%s: %s", f->path, strerror(e));
            errno = e;
            return -1;
        }
        struct stat st;
        if (f->fd >= 0 && fstat(f->fd, &st) != 0)
            return gs_error_set("%s: %s", f->path, strerror(errno));
        /* A device or a pipe would be "empty" below and replaced by a new file. */
        if (f->fd >= 0 && !S_ISREG(st.st_mode)) {
            gs_error_set("%s: not a regular file", f->path);
            return refuse();
        }
        /* An empty file is what the owner's release before this module left before its first
         * record: nothing to keep, so it is made a new file like a missing one. The header
         * goes in atomically, so no crash leaves half a header. */
        if (f->fd >= 0 && st.st_size > 0) {
            f->size = (uint64_t)st.st_size;
            return 0;
        }
        if (attempt > 0)
            break;
        mode_t mode = o->mode ? o->mode : DEFAULT_MODE;
        if (f->fd >= 0) {
            mode = st.st_mode & 07777;
            close(f->fd);
            f->fd = -1;
        }
        uint8_t h[GS_RECFILE_HEADER_LEN];
        put_header(h, o->kind, o->version);
        if (gs_write_atomic(f->path, h, sizeof h, mode) != 0)
            return -1;
    }
    gs_error_set("%s: empty right after it was created", f->path);
    return refuse();
}

gs_recfile *gs_recfile_open(const char *path, const gs_recfile_options *o)
{
    if (!path || !*path || !o || !o->kind || strlen(o->kind) != KIND_LEN || o->version < 1) {
        gs_error_set("%s: a record file needs a path, a kind of %zu characters and a version",
                     path ? path : "(null)", KIND_LEN);
        return NULL;
    }
    int saved_errno;
    gs_recfile *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        gs_error_set("%s: out of memory", path);
        free(f);
        return NULL;
    }
    f->fd = -1;
    memcpy(f->kind, o->kind, KIND_LEN);
    f->max_record = o->max_record ? o->max_record : GS_RECFILE_MAX_RECORD;
    int reopen = 0;
    if (open_fd(f, o) != 0 || check_header(f, o, &reopen) != 0)
        goto fail;
    if (reopen) {
        close(f->fd);
        f->fd = -1;
        if (open_fd(f, o) != 0 || check_header(f, o, &reopen) != 0)
            goto fail;
    }
    f->intact = f->size == GS_RECFILE_HEADER_LEN;
    f->intact_end = GS_RECFILE_HEADER_LEN;
    return f;

fail:
    saved_errno = errno;
    gs_recfile_destroy(&f);
    errno = saved_errno;
    return NULL;
}

void gs_recfile_destroy(gs_recfile **fp)
{
    if (!fp || !*fp)
        return;
    gs_recfile *f = *fp;
    if (f->fd >= 0)
        close(f->fd);
    free(f->path);
    free(f);
    *fp = NULL;
}

const char *gs_recfile_path(const gs_recfile *f)
{
    return f->path;
}

uint32_t gs_recfile_version(const gs_recfile *f)
{
    return f->version;
}

void gs_recfile_legacy(const gs_recfile *f, gs_recfile_legacy_info *out)
{
    *out = f->legacy;
}

/* The one reading loop: visits the intact records from the header on; with salvage set it
 * goes on past damage, else it stops at the first. Updates what f knows of the file. */
static int walk(gs_recfile *f, int salvage, gs_recfile_visit_fn visit, gs_recfile_damage_fn damage,
                void *ud, gs_recfile_scan_info *info)
{
    if (f->fd < 0)
        return gs_error_set("%s: not open (an earlier rewrite failed)", f->path);
    uint8_t *buf = NULL;
    size_t n = 0;
    if (load(f, &buf, &n) != 0)
        return -1;
    if (n < GS_RECFILE_HEADER_LEN) {
        free(buf);
        return gs_error_set("%s: shorter than its header (%zu bytes)", f->path, n);
    }
    gs_recfile_scan_info in = {0};
    int damaged = 0;
    size_t o = GS_RECFILE_HEADER_LEN;
    while (o < n) {
        uint32_t len;
        if (frame_ok(buf + o, n - o, f->max_record, &len)) {
            if (visit && visit(ud, buf + o + GS_RECFILE_FRAME_LEN, len, o) != 0) {
                free(buf);
                return -1;
            }
            in.records++;
            o += GS_RECFILE_FRAME_LEN + len;
            continue;
        }
        if (!damaged)
            in.intact_end = o;
        damaged = 1;
        if (!salvage) {
            in.damaged = n - o;
            break;
        }
        size_t next = next_intact(buf, n, o + 1, f->max_record);
        if (damage)
            damage(ud, o, next - o, next == n);
        in.damaged += next - o;
        o = next;
    }
    free(buf);
    if (!damaged)
        in.intact_end = n;
    in.size = n;
    f->size = n;
    f->intact = !damaged;
    f->intact_end = in.intact_end;
    if (info)
        *info = in;
    return 0;
}

int gs_recfile_scan(gs_recfile *f, gs_recfile_visit_fn visit, void *ud, gs_recfile_scan_info *info)
{
    return walk(f, 0, visit, NULL, ud, info);
}

int gs_recfile_salvage(gs_recfile *f, gs_recfile_visit_fn visit, gs_recfile_damage_fn damage,
                       void *ud, gs_recfile_scan_info *info)
{
    return walk(f, 1, visit, damage, ud, info);
}

int gs_recfile_cut_tail(gs_recfile *f, uint64_t *cut)
{
    if (cut)
        *cut = 0;
    /* A fresh scan, not the last one: the intact prefix is what counts, whatever a salvage
     * found after it. */
    if (walk(f, 0, NULL, NULL, NULL, NULL) != 0)
        return -1;
    if (f->intact)
        return 0;
    if (ftruncate(f->fd, (off_t)f->intact_end) != 0 || fsync(f->fd) != 0)
        return gs_error_set("%s: cannot cut the damaged tail at offset %llu: %s", f->path,
                            (unsigned long long)f->intact_end, strerror(errno));
    if (cut)
        *cut = f->size - f->intact_end;
    f->size = f->intact_end;
    f->intact = 1;
    return 0;
}

typedef struct {
    gs_recfile_keep_fn keep;
    void *ud;
    uint8_t *out;
    size_t w, cap;
    uint64_t kept;
    const char *path;
} rewrite_ctx;

static int rewrite_visit(void *ud, const uint8_t *payload, size_t len, uint64_t offset)
{
    (void)offset;
    rewrite_ctx *c = ud;
    int k = c->keep ? c->keep(c->ud, payload, len) : 1;
    if (k < 0)
        return -1;
    if (k == 0)
        return 0;
    if (c->cap - c->w < GS_RECFILE_FRAME_LEN + len)
        return gs_error_set("%s: grew while it was rewritten", c->path);
    gs_le32_put(c->out + c->w, (uint32_t)len);
    gs_le32_put(c->out + c->w + FRAME_CRC_AT, record_crc(c->out + c->w, payload, len));
    memcpy(c->out + c->w + GS_RECFILE_FRAME_LEN, payload, len);
    c->w += GS_RECFILE_FRAME_LEN + len;
    c->kept++;
    return 0;
}

int gs_recfile_rewrite(gs_recfile *f, gs_recfile_keep_fn keep, void *ud, uint64_t *kept)
{
    if (f->fd < 0)
        return gs_error_set("%s: not open (an earlier rewrite failed)", f->path);
    struct stat st;
    if (fstat(f->fd, &st) != 0)
        return gs_error_set("%s: %s", f->path, strerror(errno));
    /* Kept records are as long as they are in the file, so its size bounds the new one (a
     * file that grows meanwhile, against the one-writer rule, fails the rewrite). */
    size_t cap =
        (size_t)st.st_size > GS_RECFILE_HEADER_LEN ? (size_t)st.st_size : GS_RECFILE_HEADER_LEN;
    rewrite_ctx c = {.keep = keep, .ud = ud, .out = malloc(cap), .cap = cap, .path = f->path};
    if (!c.out)
        return gs_error_set("%s: out of memory to rewrite it", f->path);
    put_header(c.out, f->kind, f->version);
    c.w = GS_RECFILE_HEADER_LEN;
    int rc = -1;
    if (walk(f, 1, rewrite_visit, NULL, &c, NULL) != 0)
        goto out_free;
    int unsynced = 0;
    if (gs_write_atomic(f->path, c.out, c.w, st.st_mode & 07777) != 0) {
        /* gs_write_atomic fails after the rename too (the folder's fsync): then the path is
         * the new file already, and appends must not go on into the unlinked old one. */
        struct stat now;
        if (stat(f->path, &now) != 0 || now.st_ino == st.st_ino)
            goto out_free;
        unsynced = 1;
    }
    /* The old descriptor now refers to the replaced file: appends must go to the new one. */
    close(f->fd);
    f->fd = open(f->path, O_RDWR | O_CLOEXEC);
    if (f->fd < 0) {
        gs_error_set("%s: cannot reopen after the rewrite: %s", f->path, strerror(errno));
        goto out_free;
    }
    f->size = c.w;
    f->intact = 1;
    f->intact_end = c.w;
    if (kept)
        *kept = c.kept;
    rc = unsynced ? -1 : 0; /* the message of gs_write_atomic stands */
out_free:
    free(c.out);
    return rc;
}

int gs_recfile_append(gs_recfile *f, const void *payload, size_t len, int sync)
{
    if (f->fd < 0)
        return gs_error_set("%s: not open (an earlier rewrite failed)", f->path);
    if (len > f->max_record)
        return gs_error_set("%s: a record of %zu bytes is longer than the %u allowed", f->path, len,
                            f->max_record);
    if (!f->intact) {
        if (walk(f, 0, NULL, NULL, NULL, NULL) != 0)
            return -1;
        if (!f->intact)
            return gs_error_set("%s: %llu bytes of damaged records at offset %llu: cut or "
                                "rewrite the file before appending",
                                f->path, (unsigned long long)(f->size - f->intact_end),
                                (unsigned long long)f->intact_end);
    }
    uint8_t *frame = malloc(GS_RECFILE_FRAME_LEN + len);
    if (!frame)
        return gs_error_set("%s: out of memory for a record of %zu bytes", f->path, len);
    gs_le32_put(frame, (uint32_t)len);
    if (len)
        memcpy(frame + GS_RECFILE_FRAME_LEN, payload, len);
    gs_le32_put(frame + FRAME_CRC_AT, record_crc(frame, frame + GS_RECFILE_FRAME_LEN, len));
    int rc = 0;
    if (lseek(f->fd, (off_t)f->size, SEEK_SET) < 0 ||
        gs_write_all(f->fd, frame, GS_RECFILE_FRAME_LEN + len, f->path) != 0 ||
        (sync && fsync(f->fd) != 0))
        rc = -1;
    free(frame);
    if (rc == 0) {
        f->size += GS_RECFILE_FRAME_LEN + len;
        return 0;
    }
    int e = errno;
    gs_error_set("%s: cannot append a record of %zu bytes: %s", f->path, len, strerror(e));
    /* Whatever part of the record reached the file must go, or the next append would land
     * behind a torn record that every scan stops at. A record whose fsync failed goes too:
     * the caller is told it did not happen, and so it must not reappear at the next open. */
    if (ftruncate(f->fd, (off_t)f->size) != 0) {
        f->intact = 0;
        gs_error_set("%s: cannot append a record of %zu bytes: %s; nor cut off what was "
                     "written: %s",
                     f->path, len, strerror(e), strerror(errno));
    }
    errno = e;
    return -1;
}

int gs_recfile_sync(gs_recfile *f)
{
    if (f->fd >= 0 && fsync(f->fd) != 0)
        return gs_error_set("%s: fsync: %s", f->path, strerror(errno));
    return 0;
}

uint64_t gs_recfile_end(const gs_recfile *f)
{
    return f->size;
}

int gs_recfile_truncate(gs_recfile *f, uint64_t end)
{
    if (f->fd < 0)
        return gs_error_set("%s: not open (an earlier rewrite failed)", f->path);
    if (end < GS_RECFILE_HEADER_LEN || end > f->size)
        return gs_error_set("%s: cannot truncate to %llu bytes (the file has %llu)", f->path,
                            (unsigned long long)end, (unsigned long long)f->size);
    if (ftruncate(f->fd, (off_t)end) != 0 || fsync(f->fd) != 0)
        return gs_error_set("%s: cannot truncate to %llu bytes: %s", f->path,
                            (unsigned long long)end, strerror(errno));
    f->size = end;
    return 0;
}
