#include "daemon/service/spool.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/service/journal.h"
#include "ops/error.h"

#define PLAN_FILE "plan.pb"
#define LEDGER_FILE "ledger.bin"
#define HEAT_FILE "heat.bin"
#define POISON_DIR "poison"

/* A heat.bin record starts with the tile index and the CRC-32 of the index and the map. */
#define HEAT_HEAD (2 * sizeof(uint32_t))

/* Room for "/<slide>/<file>.tmp" after the spool folder, so that a path built from a valid id
 * never needs checking for length below. */
#define SLIDE_PATH_ROOM (2 * GS_SPOOL_NAME_MAX)

struct gs_spool {
    char dir[PATH_MAX - SLIDE_PATH_ROOM];
};

struct gs_spool_heat {
    FILE *f;
    size_t map_bytes;
    char path[PATH_MAX];
};

static int mkdir_p(const char *path)
{
    char tmp[PATH_MAX];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s", path) >= sizeof tmp)
        return gs_error_set("%s: path too long", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(tmp, 0750) != 0 && errno != EEXIST)
            return gs_error_set("%s: %s", tmp, strerror(errno));
        *p = '/';
    }
    if (mkdir(tmp, 0750) != 0 && errno != EEXIST)
        return gs_error_set("%s: %s", tmp, strerror(errno));
    return 0;
}

/* write, fsync, rename, fsync folder: the file is whole or absent. */
static int write_atomic(const char *dir, const char *path, const void *buf, size_t len)
{
    char tmp[PATH_MAX + 8];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp)
        return gs_error_set("%s: path too long", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0)
        return gs_error_set("%s: %s", tmp, strerror(errno));
    const uint8_t *p = buf;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            int e = errno;
            close(fd);
            unlink(tmp);
            return gs_error_set("%s: %s", tmp, strerror(e));
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        int e = errno;
        unlink(tmp);
        return gs_error_set("%s: %s", tmp, strerror(e));
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return gs_error_set("%s: %s", path, strerror(e));
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        gs_error_set("%s: %s", path, strerror(errno));
        return NULL;
    }
    uint8_t *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : 65536;
            uint8_t *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                gs_error_set("%s: out of memory", path);
                return NULL;
            }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0)
            break;
    }
    fclose(f);
    *len = n;
    return buf;
}

/* A slide id becomes a folder name: nothing that could climb out of the spool or into
 * poison/ by accident. */
static int name_ok(const char *slide)
{
    if (!slide || !slide[0] || strnlen(slide, GS_SPOOL_NAME_MAX + 1) > GS_SPOOL_NAME_MAX)
        return 0;
    for (const char *p = slide; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              *p == '-' || *p == '_'))
            return 0;
    return 1;
}

/* <spool>/<slide>[/<file>] in out. The spool folder's length is bounded at gs_spool_new and
 * the id's by name_ok, so only a caller's short buffer can make this fail. */
static int slide_path(const gs_spool *s, const char *slide, const char *file, char *out, size_t n)
{
    if (!name_ok(slide))
        return gs_error_set("spool: \"%.*s\" is not a slide id", GS_SPOOL_NAME_MAX,
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
    if (mkdir_p(s->dir) != 0)
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
    int w = mkdir_p(dir) == 0 ? write_atomic(dir, path, buf, len) : -1;
    if (w == 0 && written) {
        *written = gastroscreen__v1__plan_result__unpack(NULL, len, buf);
        if (!*written)
            w = gs_error_set("%s: out of memory", path);
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
    uint8_t *buf = read_file(path, &len);
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

/* heat.bin is not fsynced record by record (as the ledger file): after a crash the intact
 * records give back the heatmaps of the tiles the ledger adopts, and a torn tail must be cut
 * before appending, or every record after it would be unreadable too. */
gs_spool_heat *gs_spool_heat_open(const gs_spool *s, const char *slide, size_t map_bytes, int adopt,
                                  gs_spool_heat_record *on_record, void *ud)
{
    gs_spool_heat *h = calloc(1, sizeof *h);
    if (!h) {
        gs_error_set("spool: out of memory");
        return NULL;
    }
    h->map_bytes = map_bytes;
    if (slide_path(s, slide, HEAT_FILE, h->path, sizeof h->path) != 0)
        goto free_heat;
    if (!adopt)
        unlink(h->path);
    h->f = fopen(h->path, "a+b");
    if (!h->f) {
        gs_error_set("%s: %s", h->path, strerror(errno));
        goto free_heat;
    }
    size_t rec = HEAT_HEAD + map_bytes;
    uint8_t *buf = malloc(rec);
    if (!buf) {
        gs_error_set("%s: out of memory", h->path);
        goto close_file;
    }
    long good = 0;
    if (adopt) {
        rewind(h->f);
        while (fread(buf, 1, rec, h->f) == rec) {
            uint32_t idx, crc;
            memcpy(&idx, buf, sizeof idx);
            memcpy(&crc, buf + sizeof idx, sizeof crc);
            uint32_t want =
                gs_journal_crc32(gs_journal_crc32(0, buf, sizeof idx), buf + HEAT_HEAD, map_bytes);
            if (crc != want)
                break;
            good += (long)rec;
            if (on_record)
                on_record(ud, idx, buf + HEAT_HEAD);
        }
    }
    free(buf);
    fflush(h->f);
    if (ftruncate(fileno(h->f), good) != 0) {
        gs_error_set("%s: %s", h->path, strerror(errno));
        goto close_file;
    }
    fseek(h->f, 0, SEEK_END);
    return h;

close_file:
    fclose(h->f);
free_heat:
    free(h);
    return NULL;
}

int gs_spool_heat_append(gs_spool_heat *h, uint32_t index, const uint8_t *map)
{
    uint32_t crc = gs_journal_crc32(gs_journal_crc32(0, &index, sizeof index), map, h->map_bytes);
    if (fwrite(&index, sizeof index, 1, h->f) != 1 || fwrite(&crc, sizeof crc, 1, h->f) != 1 ||
        fwrite(map, 1, h->map_bytes, h->f) != h->map_bytes || fflush(h->f) != 0)
        return gs_error_set("%s: %s", h->path, strerror(errno));
    return 0;
}

void gs_spool_heat_destroy(gs_spool_heat **h)
{
    if (!h || !*h)
        return;
    fclose((*h)->f);
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
    static const char *const files[] = {PLAN_FILE, PLAN_FILE ".tmp", LEDGER_FILE, HEAT_FILE};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        if (slide_path(s, slide, files[i], path, sizeof path) == 0)
            unlink(path);
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
