/* recfile: round trip; the header (kind, version, damage) and files that are not record files
 * refused naming the file; a torn tail at every byte offset of the last record (the intact
 * prefix comes back, appends refuse until the tail is cut, then an append reads back); a
 * flipped byte in a record's length, crc or payload (a scan stops there, a salvage skips it,
 * a rewrite drops it); a failed append at the file size limit (-1 with the cause, the file
 * still ends with its last intact record); conversion of files in the header-less framing
 * written before the module. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ops/error.h"
#include "stages/runtime/fileio.h"
#include "stages/runtime/recfile.h"

/* The record magic of the header-less framing in the tests ("GSL1", the ledger's). */
#define LEGACY_MAGIC 0x314c5347u

static char root[64];
static int file_no;

static int setup(void **state)
{
    (void)state;
    snprintf(root, sizeof root, "/tmp/gs_test_recfile_XXXXXX");
    return mkdtemp(root) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    return system(cmd) == 0 ? 0 : -1;
}

/* The number of files in folder whose name ends in GS_TMP_SUFFIX (gs_write_atomic's
 * temporary files), or -1 when the folder cannot be read. */
static int count_tmp_files(const char *folder)
{
    DIR *d = opendir(folder);
    if (!d)
        return -1;
    size_t sl = strlen(GS_TMP_SUFFIX);
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        size_t len = strlen(e->d_name);
        if (len >= sl && !strcmp(e->d_name + len - sl, GS_TMP_SUFFIX))
            n++;
    }
    closedir(d);
    return n;
}

/* A path no earlier test used. */
static void new_path(char *out, size_t n)
{
    snprintf(out, n, "%s/f%d.rec", root, file_no++);
}

static gs_recfile_options opts(void)
{
    return (gs_recfile_options){.kind = "TEST", .version = 1, .create = 1};
}

static gs_recfile_options legacy_opts(void)
{
    gs_recfile_options o = opts();
    o.legacy_magic = LEGACY_MAGIC;
    return o;
}

enum { MAX_RECS = 16, MAX_LEN = 512 };

/* What a scan visited. */
typedef struct {
    size_t n;
    size_t len[MAX_RECS];
    uint8_t data[MAX_RECS][MAX_LEN];
    uint64_t offset[MAX_RECS];
    size_t n_damage;
    uint64_t damage_at[MAX_RECS], damage_len[MAX_RECS];
    int damage_at_end[MAX_RECS];
} seen;

static int collect(void *ud, const uint8_t *payload, size_t len, uint64_t offset)
{
    seen *s = ud;
    assert_true(s->n < MAX_RECS && len <= MAX_LEN);
    s->len[s->n] = len;
    s->offset[s->n] = offset;
    memcpy(s->data[s->n], payload, len);
    s->n++;
    return 0;
}

static void damaged(void *ud, uint64_t offset, uint64_t len, int at_end)
{
    seen *s = ud;
    assert_true(s->n_damage < MAX_RECS);
    s->damage_at[s->n_damage] = offset;
    s->damage_len[s->n_damage] = len;
    s->damage_at_end[s->n_damage] = at_end;
    s->n_damage++;
}

static void assert_record(const seen *s, size_t i, const void *data, size_t len)
{
    assert_true(i < s->n);
    assert_int_equal(s->len[i], len);
    assert_memory_equal(s->data[i], data, len);
}

static off_t size_of(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

static uint8_t *read_all(const char *path, size_t *n)
{
    uint8_t *buf = gs_read_file(path, 1 << 20, n);
    assert_non_null(buf);
    return buf;
}

static void write_raw(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* One record of the header-less framing, as the ledger and the journal wrote them before the
 * record files: [magic][length][payload][crc32 of payload], little-endian. Returns its size. */
static size_t legacy_record(uint8_t *out, uint32_t magic, const char *payload)
{
    uint32_t n = (uint32_t)strlen(payload);
    put32(out, magic);
    put32(out + 4, n);
    memcpy(out + 8, payload, n);
    put32(out + 8 + n, gs_crc32(0, payload, n));
    return 12 + (size_t)n;
}

/* A file of the three records r0, r1, r2; start[i] is where record i begins, start[3] the end. */
static const char *const R[3] = {"first record", "", "the third and last record, 40 bytes long"};

static void make_three(const char *path, uint64_t start[4])
{
    gs_recfile_options o = opts();
    gs_recfile *f = gs_recfile_open(path, &o);
    assert_non_null(f);
    for (int i = 0; i < 3; i++) {
        start[i] = gs_recfile_end(f);
        assert_int_equal(gs_recfile_append(f, R[i], strlen(R[i]), i == 2), 0);
    }
    start[3] = gs_recfile_end(f);
    gs_recfile_destroy(&f);
    assert_null(f);
    assert_int_equal(size_of(path), (off_t)start[3]);
}

static void little_endian_fields(void **state)
{
    (void)state;
    uint8_t b[8];
    gs_le32_put(b, 0x04030201u);
    assert_memory_equal(b, "\x01\x02\x03\x04", 4);
    assert_int_equal(gs_le32_get(b), 0x04030201u);
    gs_le64_put(b, 0x0807060504030201ull);
    assert_memory_equal(b, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
    assert_true(gs_le64_get(b) == 0x0807060504030201ull);
}

static void crc_is_zlibs(void **state)
{
    (void)state;
    /* The standard check value of CRC-32/ISO-HDLC, whole and in two parts. */
    assert_int_equal(gs_crc32(0, "123456789", 9), 0xcbf43926u);
    assert_int_equal(gs_crc32(gs_crc32(0, "1234", 4), "56789", 5), 0xcbf43926u);
    assert_int_equal(gs_crc32(0x1234, NULL, 0), 0x1234);
}

static void round_trip(void **state)
{
    (void)state;
    char p[128];
    new_path(p, sizeof p);
    uint8_t big[300];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 7);
    gs_recfile_options o = opts();
    o.mode = 0600;
    gs_recfile *f = gs_recfile_open(p, &o);
    assert_non_null(f);
    assert_string_equal(gs_recfile_path(f), p);
    assert_int_equal(gs_recfile_version(f), 1);
    assert_int_equal(gs_recfile_end(f), GS_RECFILE_HEADER_LEN);
    assert_int_equal(gs_recfile_append(f, "", 0, 0), 0);
    assert_int_equal(gs_recfile_append(f, "a", 1, 1), 0);
    assert_int_equal(gs_recfile_append(f, big, sizeof big, 0), 0);
    assert_int_equal(gs_recfile_sync(f), 0);
    gs_recfile_destroy(&f);
    gs_recfile_destroy(&f); /* NULL is accepted */

    /* The header as documented: "GSRF", the kind, the version, the crc of the 12 bytes. */
    size_t n = 0;
    uint8_t *raw = read_all(p, &n);
    assert_int_equal(n, GS_RECFILE_HEADER_LEN + 3 * GS_RECFILE_FRAME_LEN + 0 + 1 + sizeof big);
    assert_memory_equal(raw, "GSRFTEST\x01\x00\x00\x00", 12);
    uint8_t crc[4];
    put32(crc, gs_crc32(0, raw, 12));
    assert_memory_equal(raw + 12, crc, 4);
    /* The second record: length 1, crc of the length field and the payload, the payload. */
    const uint8_t *r1 = raw + GS_RECFILE_HEADER_LEN + GS_RECFILE_FRAME_LEN;
    assert_memory_equal(r1, "\x01\x00\x00\x00", 4);
    put32(crc, gs_crc32(gs_crc32(0, r1, 4), "a", 1));
    assert_memory_equal(r1 + 4, crc, 4);
    assert_int_equal(r1[8], 'a');
    free(raw);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);

    f = gs_recfile_open(p, &o);
    assert_non_null(f);
    seen s = {0};
    gs_recfile_scan_info info;
    assert_int_equal(gs_recfile_scan(f, collect, &s, &info), 0);
    assert_int_equal(s.n, 3);
    assert_record(&s, 0, "", 0);
    assert_record(&s, 1, "a", 1);
    assert_record(&s, 2, big, sizeof big);
    assert_int_equal(s.offset[0], GS_RECFILE_HEADER_LEN);
    assert_int_equal(info.records, 3);
    assert_int_equal(info.size, n);
    assert_int_equal(info.intact_end, n);
    assert_int_equal(info.damaged, 0);
    /* Appending after a reopen, without a scan first, goes after the last record. */
    gs_recfile_destroy(&f);
    f = gs_recfile_open(p, &o);
    assert_int_equal(gs_recfile_append(f, "four", 4, 1), 0);
    memset(&s, 0, sizeof s);
    assert_int_equal(gs_recfile_scan(f, collect, &s, NULL), 0);
    assert_int_equal(s.n, 4);
    assert_record(&s, 3, "four", 4);
    gs_recfile_destroy(&f);
}

static void header_and_foreign_files_are_refused(void **state)
{
    (void)state;
    char p[128];
    new_path(p, sizeof p);
    gs_recfile_options o = opts();
    gs_recfile *f = gs_recfile_open(p, &o);
    assert_non_null(f);
    gs_recfile_destroy(&f);

    /* Another kind. */
    gs_recfile_options other = opts();
    other.kind = "OTHR";
    gs_error_clear();
    assert_null(gs_recfile_open(p, &other));
    assert_non_null(strstr(gs_error_get(), p));
    assert_non_null(strstr(gs_error_get(), "\"TEST\""));
    assert_non_null(strstr(gs_error_get(), "\"OTHR\""));

    /* A newer version than this reader knows. */
    char newer[128];
    new_path(newer, sizeof newer);
    gs_recfile_options v2 = opts();
    v2.version = 2;
    f = gs_recfile_open(newer, &v2);
    assert_non_null(f);
    assert_int_equal(gs_recfile_version(f), 2);
    gs_recfile_destroy(&f);
    assert_null(gs_recfile_open(newer, &o));
    assert_non_null(strstr(gs_error_get(), newer));
    assert_non_null(strstr(gs_error_get(), "newer"));
    /* An older one is opened; the owner reads its version. */
    f = gs_recfile_open(p, &v2);
    assert_non_null(f);
    assert_int_equal(gs_recfile_version(f), 1);
    gs_recfile_destroy(&f);

    /* A damaged header (the version's bytes): refused, not taken for another version. */
    int fd = open(p, O_RDWR);
    assert_int_equal(pwrite(fd, "\x09", 1, 9), 1);
    close(fd);
    assert_null(gs_recfile_open(p, &o));
    assert_non_null(strstr(gs_error_get(), p));
    assert_non_null(strstr(gs_error_get(), "damaged"));

    /* Not a record file at all, and one too short to say: refused naming the file, never
     * read as an empty file. */
    char foreign[128];
    new_path(foreign, sizeof foreign);
    write_raw(foreign, "hello, I am a text file\n", 24);
    gs_recfile_options lo = legacy_opts();
    errno = ENOENT; /* a stale errno must not make it look missing */
    assert_null(gs_recfile_open(foreign, &lo));
    assert_int_equal(errno, EINVAL);
    assert_non_null(strstr(gs_error_get(), foreign));
    assert_non_null(strstr(gs_error_get(), "not a \"TEST\" record file"));
    assert_int_equal(size_of(foreign), 24);
    write_raw(foreign, "GS", 2);
    assert_null(gs_recfile_open(foreign, &o));
    assert_non_null(strstr(gs_error_get(), foreign));

    /* Missing without create: ENOENT. An empty file becomes a new one. */
    char missing[128];
    new_path(missing, sizeof missing);
    gs_recfile_options no_create = opts();
    no_create.create = 0;
    assert_null(gs_recfile_open(missing, &no_create));
    assert_int_equal(errno, ENOENT);
    assert_non_null(strstr(gs_error_get(), missing));
    write_raw(missing, "", 0);
    f = gs_recfile_open(missing, &no_create);
    assert_non_null(f);
    gs_recfile_destroy(&f);
    assert_int_equal(size_of(missing), GS_RECFILE_HEADER_LEN);

    /* A device is not replaced by a record file. */
    assert_null(gs_recfile_open("/dev/null", &o));
    assert_non_null(strstr(gs_error_get(), "/dev/null"));
    struct stat st;
    assert_int_equal(stat("/dev/null", &st), 0);
    assert_true(S_ISCHR(st.st_mode));

    /* Options that do not make a record file. */
    gs_recfile_options bad = opts();
    bad.kind = "TOOLONG";
    assert_null(gs_recfile_open(p, &bad));
    bad = opts();
    bad.version = 0;
    assert_null(gs_recfile_open(p, &bad));
}

static void torn_tail_at_every_offset_is_cut(void **state)
{
    (void)state;
    char ref[128], p[128];
    new_path(ref, sizeof ref);
    new_path(p, sizeof p);
    uint64_t start[4];
    make_three(ref, start);
    size_t n = 0;
    uint8_t *full = read_all(ref, &n);
    for (uint64_t cut = start[2] + 1; cut < start[3]; cut++) {
        write_raw(p, full, (size_t)cut);
        gs_recfile_options o = opts();
        gs_recfile *f = gs_recfile_open(p, &o);
        assert_non_null(f);
        seen s = {0};
        gs_recfile_scan_info info;
        assert_int_equal(gs_recfile_scan(f, collect, &s, &info), 0);
        assert_int_equal(s.n, 2);
        assert_record(&s, 0, R[0], strlen(R[0]));
        assert_record(&s, 1, R[1], strlen(R[1]));
        assert_int_equal(info.intact_end, start[2]);
        assert_int_equal(info.size, cut);
        assert_int_equal(info.damaged, cut - start[2]);
        /* Nothing goes behind the torn record. */
        gs_error_clear();
        assert_int_equal(gs_recfile_append(f, "x", 1, 0), -1);
        assert_non_null(strstr(gs_error_get(), p));
        assert_int_equal(size_of(p), (off_t)cut);
        uint64_t cut_bytes = 0;
        assert_int_equal(gs_recfile_cut_tail(f, &cut_bytes), 0);
        assert_int_equal(cut_bytes, cut - start[2]);
        assert_int_equal(size_of(p), (off_t)start[2]);
        assert_int_equal(gs_recfile_append(f, "after the cut", 13, 1), 0);
        gs_recfile_destroy(&f);

        f = gs_recfile_open(p, &o);
        memset(&s, 0, sizeof s);
        assert_int_equal(gs_recfile_scan(f, collect, &s, &info), 0);
        assert_int_equal(s.n, 3);
        assert_record(&s, 2, "after the cut", 13);
        assert_int_equal(info.damaged, 0);
        assert_int_equal(gs_recfile_cut_tail(f, &cut_bytes), 0);
        assert_int_equal(cut_bytes, 0);
        gs_recfile_destroy(&f);
    }
    free(full);
}

/* Flips one byte of record 1 at offset within it, then checks what scan, salvage and rewrite
 * make of the file. */
static void flip_in_middle_record(size_t at)
{
    char p[128];
    new_path(p, sizeof p);
    uint64_t start[4];
    make_three(p, start);
    /* Record 1 is empty; a flip at 8 or beyond would be in record 2. */
    assert_true(at < start[2] - start[1]);
    int fd = open(p, O_RDWR);
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, (off_t)(start[1] + at)), 1);
    b ^= 0x10;
    assert_int_equal(pwrite(fd, &b, 1, (off_t)(start[1] + at)), 1);
    close(fd);

    gs_recfile_options o = opts();
    gs_recfile *f = gs_recfile_open(p, &o);
    assert_non_null(f);
    seen s = {0};
    gs_recfile_scan_info info;
    assert_int_equal(gs_recfile_scan(f, collect, &s, &info), 0);
    assert_int_equal(s.n, 1);
    assert_int_equal(info.intact_end, start[1]);
    assert_int_equal(info.damaged, start[3] - start[1]);

    memset(&s, 0, sizeof s);
    assert_int_equal(gs_recfile_salvage(f, collect, damaged, &s, &info), 0);
    assert_int_equal(s.n, 2);
    assert_record(&s, 0, R[0], strlen(R[0]));
    assert_record(&s, 1, R[2], strlen(R[2]));
    assert_int_equal(s.offset[1], start[2]);
    assert_int_equal(s.n_damage, 1);
    assert_int_equal(s.damage_at[0], start[1]);
    assert_int_equal(s.damage_len[0], start[2] - start[1]);
    assert_int_equal(s.damage_at_end[0], 0);
    assert_int_equal(info.records, 2);
    assert_int_equal(info.damaged, start[2] - start[1]);

    assert_int_equal(gs_recfile_append(f, "x", 1, 0), -1);
    uint64_t kept = 0;
    assert_int_equal(gs_recfile_rewrite(f, NULL, NULL, &kept), 0);
    assert_int_equal(kept, 2);
    assert_int_equal(gs_recfile_append(f, "x", 1, 0), 0);
    gs_recfile_destroy(&f);
    f = gs_recfile_open(p, &o);
    memset(&s, 0, sizeof s);
    assert_int_equal(gs_recfile_scan(f, collect, &s, &info), 0);
    assert_int_equal(s.n, 3);
    assert_record(&s, 1, R[2], strlen(R[2]));
    assert_record(&s, 2, "x", 1);
    assert_int_equal(info.damaged, 0);
    gs_recfile_destroy(&f);
}

static void flipped_length_crc_or_payload_stops_the_scan(void **state)
{
    (void)state;
    flip_in_middle_record(0); /* the length */
    flip_in_middle_record(3); /* the length's high byte */
    flip_in_middle_record(5); /* the crc */

    /* The payload: record 0 is the one with bytes to flip. */
    char p[128];
    new_path(p, sizeof p);
    uint64_t start[4];
    make_three(p, start);
    int fd = open(p, O_RDWR);
    assert_int_equal(pwrite(fd, "#", 1, (off_t)start[0] + GS_RECFILE_FRAME_LEN + 3), 1);
    close(fd);
    gs_recfile_options o = opts();
    gs_recfile *f = gs_recfile_open(p, &o);
    seen s = {0};
    gs_recfile_scan_info info;
    assert_int_equal(gs_recfile_scan(f, collect, &s, &info), 0);
    assert_int_equal(s.n, 0);
    assert_int_equal(info.intact_end, GS_RECFILE_HEADER_LEN);
    memset(&s, 0, sizeof s);
    assert_int_equal(gs_recfile_salvage(f, collect, damaged, &s, NULL), 0);
    assert_int_equal(s.n, 2);
    assert_record(&s, 0, R[1], 0);
    assert_int_equal(s.damage_at[0], start[0]);
    /* cut_tail keeps only the intact prefix: here, nothing. */
    uint64_t cut = 0;
    assert_int_equal(gs_recfile_cut_tail(f, &cut), 0);
    assert_int_equal(cut, start[3] - start[0]);
    gs_recfile_destroy(&f);

    /* Damage in the last record: the salvage says no intact record follows it. */
    new_path(p, sizeof p);
    make_three(p, start);
    fd = open(p, O_RDWR);
    assert_int_equal(pwrite(fd, "#", 1, (off_t)start[3] - 1), 1);
    close(fd);
    f = gs_recfile_open(p, &o);
    memset(&s, 0, sizeof s);
    assert_int_equal(gs_recfile_salvage(f, collect, damaged, &s, NULL), 0);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.n_damage, 1);
    assert_int_equal(s.damage_at_end[0], 1);
    gs_recfile_destroy(&f);
}

static int keep_nonempty(void *ud, const uint8_t *payload, size_t len)
{
    (void)payload;
    (*(int *)ud)++;
    return len > 0;
}

static int stop_at_second(void *ud, const uint8_t *payload, size_t len, uint64_t offset)
{
    (void)payload, (void)len, (void)offset;
    if (++*(int *)ud == 2)
        return gs_error_set("enough");
    return 0;
}

static void rewrite_keeps_what_the_owner_keeps(void **state)
{
    (void)state;
    char p[128];
    new_path(p, sizeof p);
    uint64_t start[4];
    make_three(p, start);
    assert_int_equal(chmod(p, 0604), 0);
    gs_recfile_options o = opts();
    gs_recfile *f = gs_recfile_open(p, &o);
    int asked = 0;
    uint64_t kept = 0;
    assert_int_equal(gs_recfile_rewrite(f, keep_nonempty, &asked, &kept), 0);
    assert_int_equal(asked, 3);
    assert_int_equal(kept, 2);
    assert_int_equal(gs_recfile_end(f), start[3] - GS_RECFILE_FRAME_LEN);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0604);
    seen s = {0};
    assert_int_equal(gs_recfile_scan(f, collect, &s, NULL), 0);
    assert_int_equal(s.n, 2);
    assert_record(&s, 1, R[2], strlen(R[2]));
    /* A visitor that stops the scan makes it fail with its message. */
    int visits = 0;
    gs_error_clear();
    assert_int_equal(gs_recfile_scan(f, stop_at_second, &visits, NULL), -1);
    assert_string_equal(gs_error_get(), "enough");
    gs_recfile_destroy(&f);
    /* No temporary file is left in the folder. */
    assert_int_equal(count_tmp_files(root), 0);
}

static void truncate_takes_back_an_append(void **state)
{
    (void)state;
    char p[128];
    new_path(p, sizeof p);
    gs_recfile_options o = opts();
    gs_recfile *f = gs_recfile_open(p, &o);
    assert_int_equal(gs_recfile_append(f, "kept", 4, 1), 0);
    uint64_t end = gs_recfile_end(f);
    assert_int_equal(gs_recfile_append(f, "taken back", 10, 1), 0);
    assert_int_equal(gs_recfile_truncate(f, end), 0);
    assert_int_equal(gs_recfile_end(f), end);
    assert_int_equal(gs_recfile_truncate(f, end + 1), -1);
    assert_int_equal(gs_recfile_truncate(f, 3), -1);
    assert_int_equal(gs_recfile_append(f, "next", 4, 1), 0);
    seen s = {0};
    assert_int_equal(gs_recfile_scan(f, collect, &s, NULL), 0);
    assert_int_equal(s.n, 2);
    assert_record(&s, 1, "next", 4);
    /* A record longer than the options allow is refused before anything is written. */
    gs_recfile_destroy(&f);
    o.max_record = 8;
    f = gs_recfile_open(p, &o);
    assert_int_equal(gs_recfile_append(f, "123456789", 9, 0), -1);
    assert_non_null(strstr(gs_error_get(), p));
    gs_recfile_destroy(&f);
}

static void full_disk_append_fails_and_keeps_the_records(void **state)
{
    (void)state;
    char p[128];
    new_path(p, sizeof p);
    uint64_t start[4];
    make_three(p, start);
    gs_recfile_options o = opts();
    gs_recfile *f = gs_recfile_open(p, &o);
    assert_non_null(f);
    uint8_t big[200];
    memset(big, 'b', sizeof big);

    /* The file size limit stops the write part way, as a full disk does; with SIGXFSZ
     * ignored, write() says EFBIG. */
    struct rlimit saved, small;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &saved), 0);
    small.rlim_cur = (rlim_t)start[3] + 20;
    small.rlim_max = saved.rlim_max;
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
    gs_error_clear();
    int rc = gs_recfile_append(f, big, sizeof big, 1);
    int e = errno;
    int rc2 = gs_recfile_append(f, big, sizeof big, 0);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &saved), 0);
    signal(SIGXFSZ, old_handler);
    assert_int_equal(rc, -1);
    assert_int_equal(rc2, -1);
    assert_int_equal(e, EFBIG);
    assert_non_null(strstr(gs_error_get(), p));
    assert_non_null(strstr(gs_error_get(), strerror(EFBIG)));
    /* The partial record was cut off: the file ends with the last intact record. */
    assert_int_equal(size_of(p), (off_t)start[3]);
    assert_int_equal(gs_recfile_end(f), start[3]);
    seen s = {0};
    gs_recfile_scan_info info;
    assert_int_equal(gs_recfile_scan(f, collect, &s, &info), 0);
    assert_int_equal(s.n, 3);
    assert_int_equal(info.damaged, 0);
    /* With room again, appends go on after the intact records. */
    assert_int_equal(gs_recfile_append(f, big, sizeof big, 1), 0);
    gs_recfile_destroy(&f);
    f = gs_recfile_open(p, &o);
    memset(&s, 0, sizeof s);
    assert_int_equal(gs_recfile_scan(f, collect, &s, &info), 0);
    assert_int_equal(s.n, 4);
    assert_record(&s, 3, big, sizeof big);
    assert_int_equal(info.damaged, 0);
    gs_recfile_destroy(&f);
}

static void header_less_files_are_converted(void **state)
{
    (void)state;
    char p[128];
    new_path(p, sizeof p);
    /* Two intact records and the first 7 bytes of a third: a torn append of the old code. */
    uint8_t raw[256], third[64];
    size_t n = legacy_record(raw, LEGACY_MAGIC, "alpha");
    n += legacy_record(raw + n, LEGACY_MAGIC, "beta, longer");
    legacy_record(third, LEGACY_MAGIC, "gamma");
    memcpy(raw + n, third, 7);
    write_raw(p, raw, n + 7);

    /* Without the owner naming the old magic the file is refused, and left alone. */
    gs_recfile_options o = opts();
    assert_null(gs_recfile_open(p, &o));
    assert_non_null(strstr(gs_error_get(), p));
    assert_int_equal(size_of(p), (off_t)(n + 7));

    gs_recfile_options lo = legacy_opts();
    gs_recfile *f = gs_recfile_open(p, &lo);
    assert_non_null(f);
    gs_recfile_legacy_info li;
    gs_recfile_legacy(f, &li);
    assert_int_equal(li.converted, 1);
    assert_int_equal(li.records, 2);
    assert_int_equal(li.dropped, 7);
    assert_int_equal(gs_recfile_version(f), 1);
    seen s = {0};
    gs_recfile_scan_info info;
    assert_int_equal(gs_recfile_scan(f, collect, &s, &info), 0);
    assert_int_equal(s.n, 2);
    assert_record(&s, 0, "alpha", 5);
    assert_record(&s, 1, "beta, longer", 12);
    assert_int_equal(info.damaged, 0);
    assert_int_equal(gs_recfile_append(f, "delta", 5, 1), 0);
    gs_recfile_destroy(&f);
    size_t got = 0;
    uint8_t *now = read_all(p, &got);
    assert_memory_equal(now, "GSRFTEST", 8);
    free(now);
    /* Converted once: the next open reads the new format. */
    f = gs_recfile_open(p, &lo);
    gs_recfile_legacy(f, &li);
    assert_int_equal(li.converted, 0);
    memset(&s, 0, sizeof s);
    assert_int_equal(gs_recfile_scan(f, collect, &s, NULL), 0);
    assert_int_equal(s.n, 3);
    assert_record(&s, 2, "delta", 5);
    gs_recfile_destroy(&f);

    /* A corrupt record in the middle (and one at the very start, so the file no longer
     * begins with the magic): every intact record is carried over. */
    new_path(p, sizeof p);
    size_t a = legacy_record(raw, LEGACY_MAGIC, "one");
    size_t b = legacy_record(raw + a, LEGACY_MAGIC, "two");
    size_t c = legacy_record(raw + a + b, LEGACY_MAGIC, "three");
    size_t d = legacy_record(raw + a + b + c, LEGACY_MAGIC, "four");
    raw[0] ^= 0xff;         /* record "one": its magic */
    raw[a + b + 9] ^= 0x01; /* record "three": its payload */
    write_raw(p, raw, a + b + c + d);
    f = gs_recfile_open(p, &lo);
    assert_non_null(f);
    gs_recfile_legacy(f, &li);
    assert_int_equal(li.converted, 1);
    assert_int_equal(li.records, 2);
    assert_int_equal(li.dropped, a + c);
    memset(&s, 0, sizeof s);
    assert_int_equal(gs_recfile_scan(f, collect, &s, NULL), 0);
    assert_int_equal(s.n, 2);
    assert_record(&s, 0, "two", 3);
    assert_record(&s, 1, "four", 4);
    gs_recfile_destroy(&f);

    /* The old code's torn first record, shorter than a magic: an empty new file. */
    new_path(p, sizeof p);
    write_raw(p, raw + a, 3);
    f = gs_recfile_open(p, &lo);
    assert_non_null(f);
    gs_recfile_legacy(f, &li);
    assert_int_equal(li.converted, 1);
    assert_int_equal(li.records, 0);
    assert_int_equal(li.dropped, 3);
    gs_recfile_destroy(&f);
    assert_int_equal(size_of(p), GS_RECFILE_HEADER_LEN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(little_endian_fields),
        cmocka_unit_test(crc_is_zlibs),
        cmocka_unit_test(round_trip),
        cmocka_unit_test(header_and_foreign_files_are_refused),
        cmocka_unit_test(torn_tail_at_every_offset_is_cut),
        cmocka_unit_test(flipped_length_crc_or_payload_stops_the_scan),
        cmocka_unit_test(rewrite_keeps_what_the_owner_keeps),
        cmocka_unit_test(truncate_takes_back_an_append),
        cmocka_unit_test(full_disk_append_fails_and_keeps_the_records),
        cmocka_unit_test(header_less_files_are_converted),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
