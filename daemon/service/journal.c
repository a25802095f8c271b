#include "daemon/service/journal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ops/error.h"
#include "stages/runtime/fileio.h"
#include "stages/runtime/recfile.h"

/* events.log is a record file (stages/runtime/recfile) of kind "JLOG". A record's payload,
 * little-endian: [seq u64][slide_id 16 bytes, NUL-padded][time_unix_ms i64][flags u8]
 * [record_len u32][record JSON][payload]. Releases before the record files framed the same
 * bodies as [magic "GSJ1"][body_len u32][body][crc32(body) u32] with no file header; such a
 * log is converted when the journal opens, so a journal with slides in flight survives the
 * upgrade. */
#define LOG_KIND "JLOG"
#define LOG_VERSION 1
#define LOG_LEGACY_MAGIC 0x314a5347u /* "GSJ1" */
/* A log record's body: seq u64, slide id (GS_SLIDE_ID_LEN bytes, zeros for none), time u64,
 * flags u8, the slide record's length u32; then the record and the event payload. */
#define LOG_AT_ID 8
#define LOG_AT_TIME (LOG_AT_ID + GS_SLIDE_ID_LEN)
#define LOG_AT_FLAGS (LOG_AT_TIME + 8)
#define LOG_AT_REC_LEN (LOG_AT_FLAGS + 1)
#define LOG_BODY_FIXED (LOG_AT_REC_LEN + 4)
#define LOG_BODY_MAX (64u << 20) /* a length beyond this is corruption, not a record */
#define FLAG_RECORD 1u
#define FLAG_TERMINAL 2u
/* The journal's files are the service's own: the group may read them, nobody else. */
#define FILE_MODE 0640
#define DIR_MODE 0750
/* A slide file is a few KB of JSON; one near this size is not a journal file. */
#define FILE_MAX (16u << 20)
/* Held (flock) for the life of the journal, with the holder's pid in it: two coordinators on
 * one folder would hand out the same sequence numbers. */
#define LOCK_NAME "journal.lock"
/* Where a slide file that fails its checksum goes: kept for an operator, never served. */
#define QUARANTINE_DIR "quarantine"
/* The probe written while the folder is unwritable: big enough that a disk with room for it
 * has room for a burst of transitions (a slide file is a few KB), small enough to be free. */
#define PROBE_NAME ".probe"
#define PROBE_BYTES (64u << 10)
/* Sequence numbers go into JSON as signed 64-bit integers: none is given past this. */
#define SEQ_MAX ((uint64_t)INT64_MAX)

typedef struct {
    char id[GS_SLIDE_ID_LEN + 1];
    json_t *record;
    int terminal;
    int64_t time_ms;
    uint64_t seq; /* sequence number of the log record this record came with */
    int restored; /* replay took the record from the log: the file is rewritten after it */
} slide_entry;

typedef struct {
    uint64_t seq;
    char id[GS_SLIDE_ID_LEN + 1];
    uint8_t *payload;
    size_t len;
} event_entry;

struct gs_journal {
    char *dir;
    int dir_fd;
    gs_recfile *log;
    uint64_t last_seq;
    uint64_t complete_from;
    slide_entry *slides;
    size_t n_slides, cap_slides;
    event_entry *events;
    size_t n_events, cap_events;
    char **warnings;
    size_t n_warnings;
    int lock_fd;
    int write_errno;       /* errno of the last failed write, 0 after a good one */
    size_t legacy_records; /* slide files without a checksum (earlier releases) */
};

/* The process-wide fault injection of the write path (tests only; see the header). */
static gs_journal_fault_fn *fault_fn;
static void *fault_ud;

void gs_journal_set_fault_hook(gs_journal_fault_fn *fn, void *ud)
{
    fault_fn = fn;
    fault_ud = ud;
}

/* Asks the fault hook about a write of `what`; when it injects an errno, sets the error as the
 * real failure would and returns -1 with errno set. */
static int injected_fault(gs_journal *j, const char *what)
{
    int e = fault_fn ? fault_fn(fault_ud, j->dir, what) : 0;
    if (!e)
        return 0;
    gs_error_set("journal %s: %s: cannot write: %s", j->dir, what, strerror(e));
    errno = e;
    return -1;
}

/* Remembers how the write path last ended (errno at the failure, or 0), so the caller can
 * tell a full or read-only folder from a broken journal. Returns rc. */
static int note_write(gs_journal *j, int rc, int err)
{
    j->write_errno = rc == 0 ? 0 : (err ? err : EIO);
    return rc;
}

/* Warnings are kept for the caller and printed, so an operator sees them in the journal of
 * systemd even when the caller does not forward them. */
__attribute__((format(printf, 2, 3))) static void warn(gs_journal *j, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(stderr, "journal %s: warning: %s\n", j->dir, buf);
    char **w = realloc(j->warnings, (j->n_warnings + 1) * sizeof *w);
    if (!w)
        return;
    j->warnings = w;
    w[j->n_warnings] = strdup(buf);
    if (w[j->n_warnings])
        j->n_warnings++;
}

/* The path of a file of the journal's folder. Returns 0, or -1 with the error set when it
 * does not fit. */
static int path_of(const gs_journal *j, const char *name, char *out, size_t n)
{
    if ((size_t)snprintf(out, n, "%s/%s", j->dir, name) >= n)
        return gs_error_set("journal %s: %s: path too long", j->dir, name);
    return 0;
}

/* Writes buf to the folder's file name through gs_write_atomic, so that after a crash the
 * file is either the old one or the new one, never a mix. */
static int write_atomic(gs_journal *j, const char *name, const void *buf, size_t n)
{
    char path[PATH_MAX];
    if (path_of(j, name, path, sizeof path) != 0)
        return -1;
    if (gs_write_atomic(path, buf, n, FILE_MODE) != 0) {
        int e = errno; /* the caller tells a full disk from the errno */
        gs_error_prefix("journal %s", j->dir);
        errno = e;
        return -1;
    }
    return 0;
}

static slide_entry *find_slide(const gs_journal *j, const char *id)
{
    for (size_t i = 0; i < j->n_slides; i++)
        if (strcmp(j->slides[i].id, id) == 0)
            return &j->slides[i];
    return NULL;
}

/* Installs (a reference to) record as slide id's newest record. */
static int set_slide(gs_journal *j, const char *id, json_t *record, int terminal, int64_t time_ms,
                     uint64_t seq)
{
    slide_entry *e = find_slide(j, id);
    if (!e) {
        if (j->n_slides == j->cap_slides) {
            size_t cap = j->cap_slides ? 2 * j->cap_slides : 64;
            slide_entry *s = realloc(j->slides, cap * sizeof *s);
            if (!s)
                return gs_error_set("journal %s: out of memory", j->dir);
            j->slides = s;
            j->cap_slides = cap;
        }
        e = &j->slides[j->n_slides++];
        memset(e, 0, sizeof *e);
        memcpy(e->id, id, GS_SLIDE_ID_LEN);
    }
    json_incref(record);
    json_decref(e->record);
    e->record = record;
    e->terminal = terminal;
    e->time_ms = time_ms;
    e->seq = seq;
    return 0;
}

static int add_event(gs_journal *j, uint64_t seq, const char *id, const void *payload, size_t len)
{
    if (j->n_events == j->cap_events) {
        size_t cap = j->cap_events ? 2 * j->cap_events : 256;
        event_entry *e = realloc(j->events, cap * sizeof *e);
        if (!e)
            return gs_error_set("journal %s: out of memory", j->dir);
        j->events = e;
        j->cap_events = cap;
    }
    event_entry *e = &j->events[j->n_events];
    memset(e, 0, sizeof *e);
    e->seq = seq;
    if (id)
        memcpy(e->id, id, strnlen(id, GS_SLIDE_ID_LEN));
    e->payload = malloc(len ? len : 1);
    if (!e->payload)
        return gs_error_set("journal %s: out of memory", j->dir);
    if (len)
        memcpy(e->payload, payload, len);
    e->len = len;
    j->n_events++;
    return 0;
}

/* The checksum of a slide file's envelope: CRC-32 of its compact JSON with sorted keys and
 * without the checksum itself, so a file read back and dumped again gives the same bytes
 * (jansson writes reals with 17 digits, which read back exactly). Returns 0 and the
 * checksum as 8 hex digits in out, or -1 (out of memory). */
static int envelope_crc(const json_t *env, char out[9])
{
    char *text = json_dumps(env, JSON_COMPACT | JSON_SORT_KEYS);
    if (!text)
        return -1;
    snprintf(out, 9, "%08x", (unsigned)gs_crc32(0, text, strlen(text)));
    free(text);
    return 0;
}

/* The slide file: an envelope around the caller's record, so replay knows which log records
 * are newer (seq) and retention knows what it may drop (terminal, time), with a checksum so
 * an edited or damaged file is never served. */
static int write_slide_file(gs_journal *j, const char *id, const json_t *record, int terminal,
                            int64_t time_ms, uint64_t seq)
{
    json_t *env =
        json_pack("{s:s, s:I, s:b, s:I, s:O}", "slide_id", id, "seq", (json_int_t)seq, "terminal",
                  terminal, "time_unix_ms", (json_int_t)time_ms, "record", record);
    char crc[9];
    char *text = NULL;
    if (env && envelope_crc(env, crc) == 0 &&
        json_object_set_new(env, "crc32", json_string(crc)) == 0)
        text = json_dumps(env, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(env);
    if (!text)
        return gs_error_set("journal %s: cannot encode the record of %s", j->dir, id);
    char name[64];
    snprintf(name, sizeof name, "%s.json", id);
    int rc = write_atomic(j, name, text, strlen(text));
    free(text);
    return rc;
}

/* Moves a slide file that failed its checksum to quarantine/ (replacing an older copy there),
 * so it is neither served nor read again. Returns 0, or -1 with errno set. */
static int quarantine(gs_journal *j, const char *name)
{
    if (mkdirat(j->dir_fd, QUARANTINE_DIR, DIR_MODE) != 0 && errno != EEXIST)
        return -1;
    char dst[128];
    snprintf(dst, sizeof dst, "%s/%s", QUARANTINE_DIR, name);
    if (renameat(j->dir_fd, name, j->dir_fd, dst) != 0)
        return -1;
    return fsync(j->dir_fd) != 0 && errno != EINVAL ? -1 : 0;
}

static int write_state_file(gs_journal *j)
{
    json_t *st = json_pack("{s:I, s:I}", "last_seq", (json_int_t)j->last_seq, "complete_from",
                           (json_int_t)j->complete_from);
    char *text = st ? json_dumps(st, JSON_COMPACT) : NULL;
    json_decref(st);
    if (!text)
        return gs_error_set("journal %s: cannot encode state.json", j->dir);
    int rc = write_atomic(j, "state.json", text, strlen(text));
    free(text);
    return rc;
}

/* Reads a whole file of the folder into a malloc'd buffer (NUL-terminated, *n without it).
 * Returns NULL with the error set and errno from the failure (callers tell a missing file by
 * ENOENT). */
static uint8_t *read_file_at(gs_journal *j, const char *name, size_t *n)
{
    char path[PATH_MAX];
    if (path_of(j, name, path, sizeof path) != 0)
        return NULL;
    return gs_read_file(path, FILE_MAX, n);
}

/* One parsed log record, pointing into the record's payload. */
typedef struct {
    uint64_t seq;
    char id[GS_SLIDE_ID_LEN + 1];
    int64_t time_ms;
    unsigned flags;
    const uint8_t *rec;
    size_t rec_len;
    const uint8_t *payload;
    size_t payload_len;
} log_record;

/* Parses the payload b[0..body_len) of an intact log record. Returns 0, or -1 when it is
 * malformed (the crc held, so this is a record no release wrote). */
static int parse_record(const uint8_t *b, size_t body_len, log_record *r)
{
    if (body_len < LOG_BODY_FIXED)
        return -1;
    memset(r, 0, sizeof *r);
    r->seq = gs_le64_get(b);
    memcpy(r->id, b + LOG_AT_ID, GS_SLIDE_ID_LEN);
    r->time_ms = (int64_t)gs_le64_get(b + LOG_AT_TIME);
    r->flags = b[LOG_AT_FLAGS];
    r->rec_len = gs_le32_get(b + LOG_AT_REC_LEN);
    if (r->seq == 0 || r->rec_len > body_len - LOG_BODY_FIXED)
        return -1;
    if (r->id[0] && !gs_slide_id_ok(r->id))
        return -1;
    if ((r->flags & FLAG_RECORD) && !r->id[0])
        return -1;
    r->rec = b + LOG_BODY_FIXED;
    r->payload = r->rec + r->rec_len;
    r->payload_len = body_len - LOG_BODY_FIXED - r->rec_len;
    return 0;
}

static int replay_slide_files(gs_journal *j)
{
    int fd = dup(j->dir_fd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return gs_error_set("journal %s: cannot list: %s", j->dir, strerror(errno));
    }
    rewinddir(d);
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *name = de->d_name;
        size_t len = strlen(name);
        if (name[0] == '.' || strcmp(name, "events.log") == 0 || strcmp(name, "state.json") == 0 ||
            strcmp(name, LOCK_NAME) == 0 || strcmp(name, QUARANTINE_DIR) == 0)
            continue;
        if (len > sizeof GS_TMP_SUFFIX - 1 &&
            strcmp(name + len - (sizeof GS_TMP_SUFFIX - 1), GS_TMP_SUFFIX) == 0) {
            /* A temporary file is a write that never reached its rename: the previous
             * version of the file (or the log record) is the truth. */
            unlinkat(j->dir_fd, name, 0);
            warn(j, "%s: removed a half-written temporary file", name);
            continue;
        }
        char id[GS_SLIDE_ID_LEN + 1] = {0};
        if (len != GS_SLIDE_ID_LEN + sizeof ".json" - 1 ||
            strcmp(name + GS_SLIDE_ID_LEN, ".json") ||
            (memcpy(id, name, GS_SLIDE_ID_LEN), !gs_slide_id_ok(id))) {
            warn(j, "%s: ignored: not a journal file", name);
            continue;
        }
        size_t n = 0;
        uint8_t *text = read_file_at(j, name, &n);
        if (!text) {
            warn(j, "%s: skipped: %s", name, gs_error_get());
            continue;
        }
        json_error_t jerr;
        json_t *env = json_loadb((const char *)text, n, JSON_REJECT_DUPLICATES, &jerr);
        free(text);
        const char *sid = NULL;
        json_int_t seq = 0, time_ms = 0;
        int terminal = 0;
        json_t *record = NULL;
        if (!env) {
            warn(j, "%s: skipped: not JSON (%s)", name, jerr.text);
            continue;
        }
        /* The checksum: a file that fails it was edited or damaged, and its verdict cannot be
         * trusted. It goes to quarantine/; the log's copy of the record, when the log still
         * has one, brings the slide back below (replay_record). */
        const json_t *crc = json_object_get(env, "crc32");
        if (!crc) {
            j->legacy_records++;
        } else {
            char want[9];
            json_t *bare = json_copy(env);
            int ok = bare && json_is_string(crc) && json_object_del(bare, "crc32") == 0 &&
                     envelope_crc(bare, want) == 0 && strcmp(want, json_string_value(crc)) == 0;
            json_decref(bare);
            if (!ok) {
                json_decref(env);
                if (quarantine(j, name) == 0)
                    warn(j, "%s: checksum mismatch: moved to %s/, not served", name,
                         QUARANTINE_DIR);
                else
                    warn(j, "%s: checksum mismatch: not served (cannot move it to %s/: %s)", name,
                         QUARANTINE_DIR, strerror(errno));
                continue;
            }
        }
        if (json_unpack(env, "{s:s, s:I, s:b, s:I, s:o}", "slide_id", &sid, "seq", &seq, "terminal",
                        &terminal, "time_unix_ms", &time_ms, "record", &record) != 0 ||
            strcmp(sid, id) != 0 || seq < 0 || !json_is_object(record)) {
            warn(j, "%s: skipped: not a slide record", name);
            json_decref(env);
            continue;
        }
        int rc = set_slide(j, id, record, terminal, time_ms, (uint64_t)seq);
        json_decref(env);
        if (rc != 0) {
            closedir(d);
            return -1;
        }
        if ((uint64_t)seq > j->last_seq)
            j->last_seq = (uint64_t)seq;
    }
    closedir(d);
    return 0;
}

/* What rewrite_log keeps of the intact records: those that parse, in increasing seq (what
 * replay takes), and that keep (NULL: all) says yes to. */
typedef struct {
    gs_journal *j;
    int (*keep)(gs_journal *, const log_record *);
    uint64_t prev;
} rewrite_ctx;

static int rewrite_keep(void *ud, const uint8_t *payload, size_t len)
{
    rewrite_ctx *c = ud;
    log_record r;
    if (parse_record(payload, len, &r) != 0 || r.seq <= c->prev)
        return 0;
    c->prev = r.seq;
    return !c->keep || c->keep(c->j, &r);
}

/* Rewrites events.log with the records rewrite_keep keeps, replacing it atomically; appends
 * go on in the new file. */
static int rewrite_log(gs_journal *j, int (*keep)(gs_journal *, const log_record *))
{
    rewrite_ctx c = {j, keep, 0};
    if (gs_recfile_rewrite(j->log, rewrite_keep, &c, NULL) != 0)
        return gs_error_prefix("journal %s", j->dir);
    return 0;
}

typedef struct {
    gs_journal *j;
    uint64_t prev;
    int repaired; /* something was dropped: the log is rewritten without it */
} replay_ctx;

static void replay_damage(void *ud, uint64_t offset, uint64_t len, int at_end)
{
    replay_ctx *c = ud;
    warn(c->j, "events.log: dropped %llu bytes at offset %llu (%s record)", (unsigned long long)len,
         (unsigned long long)offset, at_end ? "torn last" : "corrupt");
    c->repaired = 1;
}

static int replay_record(void *ud, const uint8_t *payload, size_t len, uint64_t offset)
{
    replay_ctx *c = ud;
    gs_journal *j = c->j;
    log_record r;
    if (parse_record(payload, len, &r) != 0) {
        warn(j, "events.log: dropped a malformed record at offset %llu",
             (unsigned long long)offset);
        c->repaired = 1;
        return 0;
    }
    if (r.seq <= c->prev) {
        warn(j, "events.log: dropped a record with seq %llu after seq %llu",
             (unsigned long long)r.seq, (unsigned long long)c->prev);
        c->repaired = 1;
        return 0;
    }
    c->prev = r.seq;
    if (r.seq > j->last_seq)
        j->last_seq = r.seq;
    if (add_event(j, r.seq, r.id, r.payload, r.payload_len) != 0)
        return -1;
    if (!(r.flags & FLAG_RECORD))
        return 0;
    slide_entry *e = find_slide(j, r.id);
    if (e && e->seq >= r.seq)
        return 0;
    /* The log record is newer than the slide file: the process died between the two
     * writes (or the file was lost). The log is the commit point, so it wins. */
    json_error_t jerr;
    json_t *record = json_loadb((const char *)r.rec, r.rec_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!record || !json_is_object(record)) {
        warn(j, "events.log: seq %llu: slide %s: unreadable record", (unsigned long long)r.seq,
             r.id);
        json_decref(record);
        return 0;
    }
    int rc = set_slide(j, r.id, record, !!(r.flags & FLAG_TERMINAL), r.time_ms, r.seq);
    json_decref(record);
    if (rc != 0)
        return -1;
    /* The file is written once the whole log is read (restore_slide_files), from the newest
     * of the slide's records: one write and one line per slide, not per record. */
    find_slide(j, r.id)->restored = 1;
    return 0;
}

/* Rewrites the file of every slide whose newest record came from the log. */
static int restore_slide_files(gs_journal *j)
{
    for (size_t i = 0; i < j->n_slides; i++) {
        slide_entry *e = &j->slides[i];
        if (!e->restored)
            continue;
        e->restored = 0;
        if (write_slide_file(j, e->id, e->record, e->terminal, e->time_ms, e->seq) != 0)
            return -1;
        warn(j, "%s.json: restored from events.log seq %llu", e->id, (unsigned long long)e->seq);
    }
    return 0;
}

/* Opens events.log (created if missing, converted if an earlier release wrote it) and
 * replays every intact record; a log that is not a journal log fails the open. */
static int replay_log(gs_journal *j)
{
    char path[PATH_MAX];
    if (path_of(j, "events.log", path, sizeof path) != 0)
        return -1;
    gs_recfile_options o = {.kind = LOG_KIND,
                            .version = LOG_VERSION,
                            .max_record = LOG_BODY_MAX,
                            .legacy_magic = LOG_LEGACY_MAGIC,
                            .mode = FILE_MODE,
                            .create = 1};
    j->log = gs_recfile_open(path, &o);
    if (!j->log)
        return gs_error_prefix("journal %s", j->dir);
    gs_recfile_legacy_info li;
    gs_recfile_legacy(j->log, &li);
    if (li.converted)
        warn(j,
             "events.log: converted from the format of earlier releases (%llu records kept, "
             "%llu damaged bytes dropped)",
             (unsigned long long)li.records, (unsigned long long)li.dropped);
    replay_ctx c = {j, 0, 0};
    if (gs_recfile_salvage(j->log, replay_record, replay_damage, &c, NULL) != 0 ||
        restore_slide_files(j) != 0)
        return -1;
    return c.repaired ? rewrite_log(j, NULL) : 0;
}

static void replay_state_file(gs_journal *j)
{
    size_t n = 0;
    uint8_t *text = read_file_at(j, "state.json", &n);
    if (!text) {
        if (errno != ENOENT)
            warn(j, "state.json: skipped: %s", gs_error_get());
        return;
    }
    json_error_t jerr;
    json_t *st = json_loadb((const char *)text, n, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    json_int_t last = 0, from = 0;
    if (!st || json_unpack(st, "{s:I, s:I}", "last_seq", &last, "complete_from", &from) != 0 ||
        last < 0 || from < 1) {
        warn(j, "state.json: skipped: not a journal state");
    } else {
        if ((uint64_t)last > j->last_seq)
            j->last_seq = (uint64_t)last;
        j->complete_from = (uint64_t)from;
    }
    json_decref(st);
}

/* Takes the folder's lock file (flock, released by the kernel when the process dies, so a
 * crashed coordinator never leaves it stale) and writes our pid into it for the next one to
 * name. Returns 0, or -1 with the error naming the folder and, when known, the holder. */
static int lock_folder(gs_journal *j)
{
    j->lock_fd = openat(j->dir_fd, LOCK_NAME, O_RDWR | O_CREAT | O_CLOEXEC, FILE_MODE);
    if (j->lock_fd < 0)
        return gs_error_set("journal %s: cannot open %s: %s", j->dir, LOCK_NAME, strerror(errno));
    if (flock(j->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        char buf[32] = "";
        ssize_t n = pread(j->lock_fd, buf, sizeof buf - 1, 0);
        long pid = n > 0 ? strtol(buf, NULL, 10) : 0;
        if (e != EWOULDBLOCK)
            return gs_error_set("journal %s: cannot lock %s: %s", j->dir, LOCK_NAME, strerror(e));
        if (pid > 0)
            return gs_error_set("journal %s: in use by another coordinator (pid %ld holds %s)",
                                j->dir, pid, LOCK_NAME);
        return gs_error_set("journal %s: in use by another coordinator (it holds %s)", j->dir,
                            LOCK_NAME);
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    /* The pid is only for the message above: failing to write it is no reason to stop. */
    if (ftruncate(j->lock_fd, 0) == 0 && pwrite(j->lock_fd, pid, (size_t)n, 0) != n)
        warn(j, "%s: cannot write our pid: %s", LOCK_NAME, strerror(errno));
    return 0;
}

gs_journal *gs_journal_open(const char *dir)
{
    if (!dir || !*dir) {
        gs_error_set("journal: no folder given");
        return NULL;
    }
    if (gs_mkdir_p(dir, DIR_MODE) != 0) {
        gs_error_prefix("journal %s", dir);
        return NULL;
    }
    gs_journal *j = calloc(1, sizeof *j);
    if (!j) {
        gs_error_set("journal %s: out of memory", dir);
        return NULL;
    }
    j->complete_from = 1;
    j->lock_fd = -1;
    j->dir = strdup(dir);
    j->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (!j->dir || j->dir_fd < 0) {
        gs_error_set("journal %s: cannot open the folder: %s", dir, strerror(errno));
        goto fail;
    }
    /* A real write, not access(): root passes access() on a read-only mount. */
    int probe = openat(j->dir_fd, PROBE_NAME, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (probe < 0) {
        gs_error_set("journal %s: not writable: %s", dir, strerror(errno));
        goto fail;
    }
    close(probe);
    unlinkat(j->dir_fd, PROBE_NAME, 0);
    if (lock_folder(j) != 0)
        goto fail;

    replay_state_file(j);
    if (replay_slide_files(j) != 0 || replay_log(j) != 0)
        goto fail;
    if (j->legacy_records)
        warn(j,
             "%zu slide files carry no checksum (written by an earlier release): loaded as they "
             "are; each gets one at its next change",
             j->legacy_records);
    return j;
fail:
    gs_journal_destroy(&j);
    return NULL;
}

void gs_journal_destroy(gs_journal **jp)
{
    if (!jp || !*jp)
        return;
    gs_journal *j = *jp;
    gs_recfile_destroy(&j->log);
    if (j->lock_fd >= 0)
        close(j->lock_fd); /* releases the flock */
    if (j->dir_fd >= 0)
        close(j->dir_fd);
    for (size_t i = 0; i < j->n_slides; i++)
        json_decref(j->slides[i].record);
    for (size_t i = 0; i < j->n_events; i++)
        free(j->events[i].payload);
    for (size_t i = 0; i < j->n_warnings; i++)
        free(j->warnings[i]);
    free(j->slides);
    free(j->events);
    free(j->warnings);
    free(j->dir);
    free(j);
    *jp = NULL;
}

const char *gs_journal_dir(const gs_journal *j)
{
    return j->dir;
}

uint64_t gs_journal_last_seq(const gs_journal *j)
{
    return j->last_seq;
}

uint64_t gs_journal_next_seq(const gs_journal *j)
{
    return j->last_seq + 1;
}

uint64_t gs_journal_complete_from(const gs_journal *j)
{
    return j->complete_from;
}

size_t gs_journal_warning_count(const gs_journal *j)
{
    return j->n_warnings;
}

const char *gs_journal_warning(const gs_journal *j, size_t i)
{
    return i < j->n_warnings ? j->warnings[i] : NULL;
}

size_t gs_journal_slide_count(const gs_journal *j)
{
    return j->n_slides;
}

int gs_journal_slide_at(const gs_journal *j, size_t i, const char **slide_id, const json_t **record,
                        int *terminal, int64_t *time_unix_ms, uint64_t *seq)
{
    if (i >= j->n_slides)
        return -1;
    const slide_entry *e = &j->slides[i];
    if (slide_id)
        *slide_id = e->id;
    if (record)
        *record = e->record;
    if (terminal)
        *terminal = e->terminal;
    if (time_unix_ms)
        *time_unix_ms = e->time_ms;
    if (seq)
        *seq = e->seq;
    return 0;
}

const json_t *gs_journal_slide_get(const gs_journal *j, const char *slide_id)
{
    const slide_entry *e = slide_id ? find_slide(j, slide_id) : NULL;
    return e ? e->record : NULL;
}

int gs_journal_commit(gs_journal *j, const char *slide_id, const json_t *record, int terminal,
                      int64_t time_unix_ms, const void *payload, size_t payload_len, uint64_t *seq)
{
    if (slide_id && !gs_slide_id_ok(slide_id))
        return gs_error_set("journal %s: bad slide id", j->dir);
    if (record && (!slide_id || !json_is_object(record)))
        return gs_error_set("journal %s: a record needs a slide id and a JSON object", j->dir);
    char *text = record ? json_dumps(record, JSON_COMPACT) : NULL;
    if (record && !text)
        return gs_error_set("journal %s: cannot encode the record of %s", j->dir, slide_id);
    size_t rec_len = text ? strlen(text) : 0;
    size_t body_len = LOG_BODY_FIXED + rec_len + payload_len;
    uint8_t *b = NULL;
    if (body_len > LOG_BODY_MAX) {
        gs_error_set("journal %s: record of %zu bytes is too large", j->dir, body_len);
        goto fail;
    }
    b = calloc(1, body_len);
    if (!b) {
        gs_error_set("journal %s: out of memory", j->dir);
        goto fail;
    }
    if (j->last_seq >= SEQ_MAX) {
        gs_error_set("journal %s: sequence numbers exhausted (last %llu)", j->dir,
                     (unsigned long long)j->last_seq);
        goto fail;
    }
    uint64_t s = j->last_seq + 1;
    gs_le64_put(b, s);
    if (slide_id)
        memcpy(b + LOG_AT_ID, slide_id, GS_SLIDE_ID_LEN);
    gs_le64_put(b + LOG_AT_TIME, (uint64_t)time_unix_ms);
    b[LOG_AT_FLAGS] = (uint8_t)((record ? FLAG_RECORD : 0) | (terminal ? FLAG_TERMINAL : 0));
    gs_le32_put(b + LOG_AT_REC_LEN, (uint32_t)rec_len);
    if (rec_len)
        memcpy(b + LOG_BODY_FIXED, text, rec_len);
    if (payload_len)
        memcpy(b + LOG_BODY_FIXED + rec_len, payload, payload_len);

    /* A failed append cuts its partial record off itself (recfile), so the next append does
     * not follow garbage. */
    uint64_t end = gs_recfile_end(j->log);
    if (injected_fault(j, "events.log") != 0) {
        note_write(j, -1, errno);
        goto fail;
    }
    if (gs_recfile_append(j->log, b, body_len, 1) != 0) {
        note_write(j, -1, errno);
        gs_error_prefix("journal %s", j->dir);
        goto fail;
    }
    /* The slide file goes before the in-memory state changes. If it cannot be written, the
     * appended record is cut off again, so the caller's -1 means "did not happen" both now
     * and after a restart; only a crash between the two writes leaves the log record alone,
     * and replay then restores the file from it. */
    if (record && (injected_fault(j, slide_id) != 0 ||
                   write_slide_file(j, slide_id, record, terminal, time_unix_ms, s) != 0)) {
        note_write(j, -1, errno);
        char why[1024];
        snprintf(why, sizeof why, "%s", gs_error_get());
        if (gs_recfile_truncate(j->log, end) != 0) {
            warn(j, "events.log: cannot cut a record whose slide file failed: %s", gs_error_get());
            gs_error_set("%s", why);
        }
        goto fail;
    }
    if (add_event(j, s, slide_id, payload, payload_len) != 0)
        goto fail;
    j->last_seq = s;
    note_write(j, 0, 0);
    if (record && set_slide(j, slide_id, (json_t *)record, terminal, time_unix_ms, s) != 0)
        goto fail;
    free(b);
    free(text);
    if (seq)
        *seq = s;
    return 0;
fail:
    free(b);
    free(text);
    return -1;
}

int gs_journal_put_slide(gs_journal *j, const char *slide_id, const json_t *record, int terminal,
                         int64_t time_unix_ms)
{
    if (!gs_slide_id_ok(slide_id) || !json_is_object(record))
        return gs_error_set("journal %s: bad slide id or record", j->dir);
    slide_entry *e = find_slide(j, slide_id);
    /* Keeping the seq of the last log record makes the file win over that record at replay,
     * since it is the newer of the two. */
    uint64_t seq = e ? e->seq : 0;
    if (injected_fault(j, slide_id) != 0 ||
        write_slide_file(j, slide_id, record, terminal, time_unix_ms, seq) != 0)
        return note_write(j, -1, errno);
    note_write(j, 0, 0);
    return set_slide(j, slide_id, (json_t *)record, terminal, time_unix_ms, seq);
}

size_t gs_journal_events_since(const gs_journal *j, uint64_t after_seq, gs_journal_event *out,
                               size_t max)
{
    /* Events are in seq order: binary search for the first one after after_seq. */
    size_t lo = 0, hi = j->n_events;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (j->events[mid].seq <= after_seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t k = 0;
    for (size_t i = lo; i < j->n_events && k < max; i++, k++) {
        out[k].seq = j->events[i].seq;
        out[k].slide_id = j->events[i].id;
        out[k].payload = j->events[i].payload;
        out[k].payload_len = j->events[i].len;
    }
    return k;
}

static int keep_unless_dropped(gs_journal *j, const log_record *r)
{
    return !r->id[0] || find_slide(j, r->id) != NULL;
}

int gs_journal_retain(gs_journal *j, int64_t now_unix_ms, int64_t max_age_ms, size_t *dropped)
{
    size_t n_drop = 0;
    uint64_t max_dropped_seq = 0;
    char(*ids)[GS_SLIDE_ID_LEN + 1] = NULL;
    for (size_t i = 0; i < j->n_slides; i++)
        if (j->slides[i].terminal && j->slides[i].time_ms < now_unix_ms - max_age_ms)
            n_drop++;
    if (dropped)
        *dropped = n_drop;
    if (n_drop == 0)
        return 0;
    /* Before anything changes in memory: a retention refused now is redone at the next call. */
    if (injected_fault(j, "state.json") != 0) {
        if (dropped)
            *dropped = 0;
        return note_write(j, -1, errno);
    }
    ids = malloc(n_drop * sizeof *ids);
    if (!ids)
        return gs_error_set("journal %s: out of memory", j->dir);
    size_t k = 0, w = 0;
    for (size_t i = 0; i < j->n_slides; i++) {
        slide_entry *e = &j->slides[i];
        if (e->terminal && e->time_ms < now_unix_ms - max_age_ms) {
            memcpy(ids[k++], e->id, sizeof ids[0]);
            json_decref(e->record);
        } else {
            j->slides[w++] = *e;
        }
    }
    j->n_slides = w;
    w = 0;
    for (size_t i = 0; i < j->n_events; i++) {
        event_entry *e = &j->events[i];
        if (e->id[0] && !find_slide(j, e->id)) {
            if (e->seq > max_dropped_seq)
                max_dropped_seq = e->seq;
            free(e->payload);
        } else {
            j->events[w++] = *e;
        }
    }
    j->n_events = w;
    if (max_dropped_seq + 1 > j->complete_from)
        j->complete_from = max_dropped_seq + 1;
    /* Order matters: state.json first (the seq floor survives even if every event goes),
     * then the log without the slides, then the files; a crash in between leaves files whose
     * slide has no events, which replay reads like any other record and the next retention
     * drops again. */
    int rc = write_state_file(j);
    if (rc == 0)
        rc = rewrite_log(j, keep_unless_dropped);
    for (size_t i = 0; rc == 0 && i < n_drop; i++) {
        char name[64];
        snprintf(name, sizeof name, "%s.json", ids[i]);
        if (unlinkat(j->dir_fd, name, 0) != 0 && errno != ENOENT)
            rc = gs_error_set("journal %s: %s: %s", j->dir, name, strerror(errno));
    }
    if (rc == 0 && fsync(j->dir_fd) != 0)
        rc = gs_error_set("journal %s: fsync folder: %s", j->dir, strerror(errno));
    note_write(j, rc, errno);
    free(ids);
    return rc;
}

int gs_journal_has_event(const gs_journal *j, uint64_t seq)
{
    size_t lo = 0, hi = j->n_events;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (j->events[mid].seq < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < j->n_events && j->events[lo].seq == seq;
}

int gs_journal_write_errno(const gs_journal *j)
{
    return j->write_errno;
}

int gs_journal_errno_is_storage(int e)
{
    switch (e) {
    case ENOSPC:
    case EDQUOT:
    case EROFS:
    case EIO:
    case EACCES:
    case EPERM:
    case EFBIG:
        return 1;
    default:
        return 0;
    }
}

int gs_journal_probe(gs_journal *j)
{
    if (injected_fault(j, PROBE_NAME) != 0)
        return note_write(j, -1, errno);
    uint8_t *buf = calloc(1, PROBE_BYTES);
    if (!buf)
        return gs_error_set("journal %s: out of memory", j->dir);
    int fd = openat(j->dir_fd, PROBE_NAME, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int rc = -1, e = 0;
    if (fd < 0) {
        e = errno;
    } else {
        /* posix_fallocate sees a full disk even where write() would land in a cache. */
        int fe = posix_fallocate(fd, 0, PROBE_BYTES);
        if (fe == EOPNOTSUPP || fe == EINVAL)
            fe = 0;
        if (fe != 0)
            e = fe;
        else if (gs_write_all(fd, buf, PROBE_BYTES, PROBE_NAME) != 0 || fsync(fd) != 0)
            e = errno ? errno : EIO;
        else
            rc = 0;
        close(fd);
        unlinkat(j->dir_fd, PROBE_NAME, 0);
    }
    free(buf);
    if (rc != 0)
        gs_error_set("journal %s: cannot write: %s", j->dir, strerror(e));
    return note_write(j, rc, e);
}
