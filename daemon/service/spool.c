#include "daemon/service/spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ops/error.h"
#include "proto/vocab.h"
#include "stages/runtime/fileio.h"
#include "stages/runtime/recfile.h"

#define PLAN_FILE "plan.pb"
#define LEDGER_FILE "ledger.bin"
#define HEAT_FILE "heat.bin"
#define POISON_DIR "poison"

/* heat.bin is a record file (stages/runtime/recfile) of kind HEAT; a version-1 record is
 * [tile index u32 LE][map]. */
#define HEAT_KIND "HEAT"
#define HEAT_VERSION 1
#define HEAT_INDEX_LEN 4
/* Files of earlier builds: no header, records [index u32][CRC-32 of index and map u32][map] in
 * host byte order, read once and converted when a slide is adopted after an upgrade. */
#define HEAT_LEGACY_HEAD 8
/* 1 GiB: four million 16 x 16 heatmaps, far beyond any slide's tiles. */
#define HEAT_LEGACY_MAX (1u << 30)

/* A plan of the largest slides is a few MB (one small record per tile); more is not a plan. */
#define PLAN_FILE_MAX (256u << 20)

/* Room for "/<slide>/<file>.tmp" after the spool folder, so that a path built from a valid id
 * never needs checking for length below. */
#define SLIDE_PATH_ROOM 128

struct gs_spool {
    char dir[PATH_MAX - SLIDE_PATH_ROOM];
};

struct gs_spool_heat {
    gs_recfile *f;
    size_t map_bytes;
    uint8_t *rec; /* one record's payload: index + map */
};

/* <spool>/<slide>[/<file>] in out. The spool folder's length is bounded at gs_spool_new and
 * the id's by gs_slide_id_ok (which also keeps a name from leaving the spool or naming
 * poison/), so only a caller's short buffer can make this fail. */
static int slide_path(const gs_spool *s, const char *slide, const char *file, char *out, size_t n)
{
    if (!gs_slide_id_ok(slide))
        return gs_error_set("spool: \"%.*s\" is not a slide id", GS_SLIDE_ID_LEN + 1,
                            slide ? slide : "");
    if ((size_t)snprintf(out, n, "%s/%s%s%s", s->dir, slide, file ? "/" : "", file ? file : "") >=
        n)
        return gs_error_set("%s/%s: path too long", s->dir, slide);
    return 0;
}

gs_spool *gs_spool_new(const char *dir)
{
    gs_spool *s = calloc(1, sizeof *s);
    if (!s) {
        gs_error_set("spool: out of memory");
        return NULL;
    }
    if (!dir || !dir[0]) {
        gs_error_set("spool: no folder given");
        goto free_spool;
    }
    if ((size_t)snprintf(s->dir, sizeof s->dir, "%s", dir) >= sizeof s->dir) {
        gs_error_set("%s: path too long for a spool", dir);
        goto free_spool;
    }
    if (gs_mkdir_p(s->dir, 0750) != 0)
        goto free_spool;
    return s;

free_spool:
    free(s);
    return NULL;
}

void gs_spool_destroy(gs_spool **s)
{
    if (!s || !*s)
        return;
    free(*s);
    *s = NULL;
}

const char *gs_spool_dir(const gs_spool *s)
{
    return s->dir;
}

int gs_spool_ledger_path(const gs_spool *s, const char *slide, char *out, size_t n)
{
    return slide_path(s, slide, LEDGER_FILE, out, n);
}

int gs_spool_plan_write(const gs_spool *s, const char *slide,
                        const Gastroscreen__V1__PlanResult *plan,
                        Gastroscreen__V1__PlanResult **written)
{
    char dir[PATH_MAX], path[PATH_MAX];
    if (slide_path(s, slide, NULL, dir, sizeof dir) != 0 ||
        slide_path(s, slide, PLAN_FILE, path, sizeof path) != 0)
        return -1;
    size_t len = gastroscreen__v1__plan_result__get_packed_size(plan);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return gs_error_set("%s: out of memory", path);
    gastroscreen__v1__plan_result__pack(plan, buf);
    int w = gs_mkdir_p(dir, 0750) == 0 ? gs_write_atomic(path, buf, len, 0640) : -1;
    if (w == 0 && written) {
        Gastroscreen__V1__PlanResult *copy = gastroscreen__v1__plan_result__unpack(NULL, len, buf);
        if (!copy) {
            w = gs_error_set("%s: out of memory", path);
        } else {
            /* A plan taken again (its first PLANNED could not be journalled) replaces the
             * copy of the first. */
            if (*written)
                gastroscreen__v1__plan_result__free_unpacked(*written, NULL);
            *written = copy;
        }
    }
    free(buf);
    return w;
}

Gastroscreen__V1__PlanResult *gs_spool_plan_read(const gs_spool *s, const char *slide)
{
    char path[PATH_MAX];
    if (slide_path(s, slide, PLAN_FILE, path, sizeof path) != 0)
        return NULL;
    size_t len = 0;
    uint8_t *buf = gs_read_file(path, PLAN_FILE_MAX, &len);
    if (!buf)
        return NULL;
    Gastroscreen__V1__PlanResult *plan = gastroscreen__v1__plan_result__unpack(NULL, len, buf);
    free(buf);
    if (!plan || !plan->grid) {
        if (plan)
            gastroscreen__v1__plan_result__free_unpacked(plan, NULL);
        gs_error_set("%s: the plan does not unpack", path);
        return NULL;
    }
    return plan;
}

typedef struct {
    gs_spool_heat *h;
    gs_spool_heat_record *on_record;
    void *ud;
    const char *path;
} heat_scan;

static int heat_visit(void *ud, const uint8_t *payload, size_t len, uint64_t offset)
{
    heat_scan *hs = ud;
    if (len != HEAT_INDEX_LEN + hs->h->map_bytes)
        return gs_error_set("%s: record at %llu holds %zu bytes, not a %zu-byte heatmap", hs->path,
                            (unsigned long long)offset, len, hs->h->map_bytes);
    if (hs->on_record)
        hs->on_record(hs->ud, gs_le32_get(payload), payload + HEAT_INDEX_LEN);
    return 0;
}

/* Reads an earlier build's heat.bin (see HEAT_LEGACY_HEAD): every record up to the first torn
 * or corrupt one is copied into *recs (caller frees) as a version-1 payload, for the caller to
 * append to the new file. Returns how many, or -1 with the error set: also for a file that is
 * a record file after all (of a newer version, or damaged), which is not ours to rewrite. */
static long heat_legacy_load(const char *path, size_t map_bytes, uint8_t **recs)
{
    size_t len = 0;
    uint8_t *buf = gs_read_file(path, HEAT_LEGACY_MAX, &len);
    if (!buf)
        return -1;
    if (len >= 4 && !memcmp(buf, "GSRF", 4)) {
        free(buf);
        return gs_error_set("%s: a heat map file this build cannot read", path);
    }
    size_t rec = HEAT_LEGACY_HEAD + map_bytes, n = 0;
    *recs = malloc((len / rec + 1) * (HEAT_INDEX_LEN + map_bytes));
    if (!*recs) {
        free(buf);
        return gs_error_set("%s: out of memory", path);
    }
    for (size_t off = 0; off + rec <= len; off += rec, n++) {
        uint32_t idx, crc;
        memcpy(&idx, buf + off, sizeof idx);
        memcpy(&crc, buf + off + sizeof idx, sizeof crc);
        if (crc != gs_crc32(gs_crc32(0, &idx, sizeof idx), buf + off + HEAT_LEGACY_HEAD, map_bytes))
            break;
        uint8_t *out = *recs + n * (HEAT_INDEX_LEN + map_bytes);
        gs_le32_put(out, idx);
        memcpy(out + HEAT_INDEX_LEN, buf + off + HEAT_LEGACY_HEAD, map_bytes);
    }
    free(buf);
    return (long)n;
}

/* Converts an earlier build's heat.bin at path into a record file, atomically: the intact
 * records go into a temporary record file that replaces path only once it is on disk, so a
 * crash leaves either file whole. Returns 0 or -1 with the error set. */
static int heat_convert(const char *path, size_t map_bytes, const gs_recfile_options *o)
{
    uint8_t *recs = NULL;
    long n = heat_legacy_load(path, map_bytes, &recs);
    if (n < 0)
        return -1;
    char tmp[PATH_MAX + 16];
    snprintf(tmp, sizeof tmp, "%s.convert" GS_TMP_SUFFIX, path);
    unlink(tmp);
    int rc = -1;
    gs_recfile *f = gs_recfile_open(tmp, o);
    if (!f)
        goto free_recs;
    for (long i = 0; i < n; i++)
        if (gs_recfile_append(f, recs + (size_t)i * (HEAT_INDEX_LEN + map_bytes),
                              HEAT_INDEX_LEN + map_bytes, 0) != 0)
            goto close_tmp;
    if (gs_recfile_sync(f) != 0)
        goto close_tmp;
    if (rename(tmp, path) != 0) {
        gs_error_set("%s: cannot rename %s into place: %s", path, tmp, strerror(errno));
        goto close_tmp;
    }
    rc = gs_fsync_parent(path);
close_tmp:
    gs_recfile_destroy(&f);
    if (rc != 0)
        unlink(tmp);
free_recs:
    free(recs);
    return rc;
}

/* heat.bin is not fsynced record by record (as the ledger file): after a crash the intact
 * records give back the heatmaps of the tiles the ledger adopts, and a torn tail is cut before
 * appending (gs_recfile_cut_tail), or every record after it would be unreadable too. */
gs_spool_heat *gs_spool_heat_open(const gs_spool *s, const char *slide, size_t map_bytes, int adopt,
                                  gs_spool_heat_record *on_record, void *ud)
{
    char path[PATH_MAX];
    gs_spool_heat *h = calloc(1, sizeof *h);
    if (!h) {
        gs_error_set("spool: out of memory");
        return NULL;
    }
    h->map_bytes = map_bytes;
    if (slide_path(s, slide, HEAT_FILE, path, sizeof path) != 0)
        goto free_heat;
    if (!(h->rec = malloc(HEAT_INDEX_LEN + map_bytes))) {
        gs_error_set("%s: out of memory", path);
        goto free_heat;
    }
    if (!adopt)
        unlink(path);
    gs_recfile_options o = {.kind = HEAT_KIND,
                            .version = HEAT_VERSION,
                            .max_record = (uint32_t)(HEAT_INDEX_LEN + map_bytes),
                            .create = 1};
    h->f = gs_recfile_open(path, &o);
    if (!h->f && adopt && errno == EINVAL) {
        /* Not a record file: an earlier build's heat.bin, converted once. */
        if (heat_convert(path, map_bytes, &o) != 0)
            goto free_heat;
        h->f = gs_recfile_open(path, &o);
    }
    if (!h->f)
        goto free_heat;
    heat_scan hs = {.h = h, .on_record = on_record, .ud = ud, .path = path};
    if (adopt && gs_recfile_scan(h->f, heat_visit, &hs, NULL) != 0)
        goto close_file;
    if (gs_recfile_cut_tail(h->f, NULL) != 0)
        goto close_file;
    return h;

close_file:
    gs_recfile_destroy(&h->f);
free_heat:
    free(h->rec);
    free(h);
    return NULL;
}

int gs_spool_heat_append(gs_spool_heat *h, uint32_t index, const uint8_t *map)
{
    gs_le32_put(h->rec, index);
    memcpy(h->rec + HEAT_INDEX_LEN, map, h->map_bytes);
    return gs_recfile_append(h->f, h->rec, HEAT_INDEX_LEN + h->map_bytes, 0);
}

void gs_spool_heat_destroy(gs_spool_heat **h)
{
    if (!h || !*h)
        return;
    gs_recfile_destroy(&(*h)->f);
    free((*h)->rec);
    free(*h);
    *h = NULL;
}

int gs_spool_retire(const gs_spool *s, const char *slide)
{
    char dir[PATH_MAX], path[PATH_MAX];
    if (slide_path(s, slide, NULL, dir, sizeof dir) != 0)
        return -1;
    struct stat st;
    if (stat(dir, &st) != 0)
        return 0;
    static const char *const files[] = {PLAN_FILE, LEDGER_FILE, HEAT_FILE};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        if (slide_path(s, slide, files[i], path, sizeof path) == 0)
            unlink(path);
    /* Temporary files of an atomic write that a crash interrupted (gs_write_atomic names them
     * <file>.<pid>.<n>.tmp). */
    DIR *d = opendir(dir);
    if (d) {
        size_t sl = strlen(GS_TMP_SUFFIX);
        for (struct dirent *e; (e = readdir(d)) != NULL;) {
            size_t n = strlen(e->d_name);
            if (n > sl && !strcmp(e->d_name + n - sl, GS_TMP_SUFFIX) &&
                (size_t)snprintf(path, sizeof path, "%s/%s", dir, e->d_name) < sizeof path)
                unlink(path);
        }
        closedir(d);
    }
    if (rmdir(dir) != 0)
        return gs_error_set("%s: %s", dir, strerror(errno));
    return 0;
}

int gs_spool_poison(const gs_spool *s, const char *slide)
{
    char dir[PATH_MAX], path[PATH_MAX];
    if (slide_path(s, slide, NULL, dir, sizeof dir) != 0)
        return -1;
    struct stat st;
    if (stat(dir, &st) != 0)
        return 0;
    snprintf(path, sizeof path, "%s/" POISON_DIR, s->dir);
    if (mkdir(path, 0750) != 0 && errno != EEXIST)
        return gs_error_set("%s: %s", path, strerror(errno));
    snprintf(path, sizeof path, "%s/" POISON_DIR "/%s", s->dir, slide);
    if (rename(dir, path) != 0)
        return gs_error_set("%s: %s", path, strerror(errno));
    return 0;
}
