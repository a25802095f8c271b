/*
 * recfile: an append-only file of CRC-checked records, for state that must survive a crash
 * one record at a time (the journal's events.log, a slide's tile ledger, a slide's heatmaps in
 * the spool's heat.bin).
 *
 * On disk, little-endian:
 *   header, GS_RECFILE_HEADER_LEN bytes: "GSRF"; the kind, 4 characters naming what the file
 *     holds ("JLOG"); the version u32 of the payload format (the owner's to interpret); the
 *     crc32 u32 of the 12 bytes before it;
 *   then records: [length u32][crc32 u32][payload, length bytes]. The crc covers the length
 *     field and then the payload, so a damaged length is caught like damaged data.
 * A record is intact when its frame fits in the file and its crc matches. A crash during an
 * append leaves a torn last record; a bad block leaves a corrupt one anywhere.
 *
 * Use: f = gs_recfile_open(path, &opts) creates a missing (or empty) file with its header and
 * refuses, naming the file, one of another kind, of a newer version or with a damaged header.
 * Read with gs_recfile_scan() (the intact prefix: stops at the first torn or corrupt record)
 * or gs_recfile_salvage() (every intact record, skipping damaged ranges). Repair with
 * gs_recfile_cut_tail() (truncate to the intact prefix) or gs_recfile_rewrite() (the intact
 * records a callback keeps, replacing the file atomically). Add records with
 * gs_recfile_append(); gs_recfile_destroy(&f). An append never lands behind damaged bytes:
 * while the file holds any, appends fail until it is cut or rewritten, and a failed append cuts
 * its own partial record off again. Scans read the whole file into memory. One writer per
 * file; not thread-safe.
 *
 * Files written before this module had no header and framed each record as [magic u32]
 * [length u32][payload][crc32 of the payload u32]. When the owner names that magic
 * (opts.legacy_magic), gs_recfile_open() converts such a file: its intact records (found past
 * damage by their magic) are written in this format as version 1 and the file is replaced
 * atomically; gs_recfile_legacy() says how many records were kept and how many bytes dropped.
 */
#ifndef GS_STAGES_RUNTIME_RECFILE_H
#define GS_STAGES_RUNTIME_RECFILE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct gs_recfile gs_recfile;

/* Bytes of the header, and of a record's frame before its payload. */
#define GS_RECFILE_HEADER_LEN 16
#define GS_RECFILE_FRAME_LEN 8

/* The longest payload when the options give none: far above any record gastroscreen writes
 * (a ledger record is about 2 KB), so a longer length is read as damage, not as a request to
 * allocate gigabytes. */
#define GS_RECFILE_MAX_RECORD (64u << 20)

typedef struct {
    const char *kind;      /* exactly 4 characters naming what the file holds */
    uint32_t version;      /* written into a new file; a file with a higher one is refused */
    uint32_t max_record;   /* longest payload (0: GS_RECFILE_MAX_RECORD) */
    uint32_t legacy_magic; /* 0, or the record magic of the header-less framing to convert */
    mode_t mode;           /* permissions of a file created or rewritten here (0: 0640) */
    int create;            /* 1: a missing file is created; 0: it is an error (errno ENOENT) */
} gs_recfile_options;

/* What the last scan found. */
typedef struct {
    uint64_t records;    /* intact records visited */
    uint64_t intact_end; /* offset just past the intact prefix: where the first damage starts */
    uint64_t size;       /* file size */
    uint64_t damaged;    /* bytes in no intact record */
} gs_recfile_scan_info;

/* What a conversion from the header-less framing did at open. */
typedef struct {
    int converted;    /* 1 if the file was in that framing and was converted */
    uint64_t records; /* records carried over */
    uint64_t dropped; /* bytes that were in no intact record (a torn tail, corrupt records) */
} gs_recfile_legacy_info;

/* Called with each intact record: payload (valid during the call) and the offset of its
 * frame. Returns 0 to go on, or -1 with the error set to stop the scan, which then returns
 * -1. */
typedef int (*gs_recfile_visit_fn)(void *ud, const uint8_t *payload, size_t len, uint64_t offset);

/* Called with each damaged range a salvage skips; at_end is 1 when no intact record follows
 * it (a torn tail, most likely). */
typedef void (*gs_recfile_damage_fn)(void *ud, uint64_t offset, uint64_t len, int at_end);

/* Says whether rewrite keeps a record: 1 keep, 0 drop, -1 stop with the error set. */
typedef int (*gs_recfile_keep_fn)(void *ud, const uint8_t *payload, size_t len);

/* Opens path for reading and appending (see the top of this file). Returns the file (caller
 * owns; gs_recfile_destroy) or NULL with the error set naming path; errno is ENOENT when the
 * file is missing and opts->create is 0, and EINVAL when it is there but refused. */
gs_recfile *gs_recfile_open(const char *path, const gs_recfile_options *opts);

/* Closes the file and sets *f to NULL; NULL and *f == NULL are accepted. */
void gs_recfile_destroy(gs_recfile **f);

/* The path it was opened with (recfile-owned). */
const char *gs_recfile_path(const gs_recfile *f);

/* The version in the file's header. */
uint32_t gs_recfile_version(const gs_recfile *f);

/* What the open converted (converted is 0 for a file already in this format). */
void gs_recfile_legacy(const gs_recfile *f, gs_recfile_legacy_info *out);

/* Calls visit (may be NULL) with each record of the intact prefix, in order, and stops at the
 * first torn or corrupt record. info (may be NULL) gets what was found. Returns 0, or -1 with
 * the error set (the file cannot be read, or visit said -1). */
int gs_recfile_scan(gs_recfile *f, gs_recfile_visit_fn visit, void *ud, gs_recfile_scan_info *info);

/* Like gs_recfile_scan, but goes on past damage: after a bad record it looks for the next
 * offset where an intact record starts, calls damage (may be NULL) with the skipped range, and
 * visits every intact record. The file is not changed. Returns 0 or -1 with the error set. */
int gs_recfile_salvage(gs_recfile *f, gs_recfile_visit_fn visit, gs_recfile_damage_fn damage,
                       void *ud, gs_recfile_scan_info *info);

/* Truncates the file to the end of its intact prefix and fsyncs it; *cut (may be NULL) gets
 * the number of bytes cut (0 for an intact file). Returns 0 or -1 with the error set. */
int gs_recfile_cut_tail(gs_recfile *f, uint64_t *cut);

/* Replaces the file (through gs_write_atomic) with its header and the intact records, found
 * as gs_recfile_salvage finds them, for which keep (NULL: keep all) says 1, in order.
 * *kept (may be NULL) gets their number. On -1 (error set) the file is unchanged, or, when
 * only the folder's fsync after the rename failed, replaced and reopened: either way later
 * appends go to the file the path names. */
int gs_recfile_rewrite(gs_recfile *f, gs_recfile_keep_fn keep, void *ud, uint64_t *kept);

/* Appends one record of len bytes (len <= max_record; 0 is allowed), written completely,
 * then fsynced if sync is 1. Returns 0, or -1 with the error set naming the file and the
 * cause (a full disk: ENOSPC; the file size limit: EFBIG), after cutting the partial record
 * off so that the file ends with its last intact record. Fails without writing while the file
 * holds damaged bytes (see gs_recfile_cut_tail, gs_recfile_rewrite). */
int gs_recfile_append(gs_recfile *f, const void *payload, size_t len, int sync);

/* fsyncs the file (appends made with sync 0). Returns 0 or -1 with the error set. */
int gs_recfile_sync(gs_recfile *f);

/* The size of the file, which is where the next record goes once the file is known to be
 * intact (after a scan, cut, rewrite or append). */
uint64_t gs_recfile_end(const gs_recfile *f);

/* Takes back the records appended at or after end (a value of gs_recfile_end()): truncates
 * the file to end and fsyncs it. For an owner whose commit of a record failed after the
 * append. Returns 0 or -1 with the error set. */
int gs_recfile_truncate(gs_recfile *f, uint64_t end);

/* Little-endian fields, as the frames store them and as owners lay out their payloads. */
void gs_le32_put(uint8_t *p, uint32_t v);
uint32_t gs_le32_get(const uint8_t *p);
void gs_le64_put(uint8_t *p, uint64_t v);
uint64_t gs_le64_get(const uint8_t *p);

/* CRC-32 (IEEE 802.3, as zlib's crc32) of n bytes, continuing from crc (start with 0). */
uint32_t gs_crc32(uint32_t crc, const void *data, size_t n);

#endif
