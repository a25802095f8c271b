#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/service/spool.h"
#include "ops/error.h"
#include "stages/runtime/fileio.h"
#include "stages/runtime/recfile.h"

/* The spool as a crash leaves it, without a coordinator: files written, cut short or damaged
 * by hand, then opened again. */

static const char *ID = "00000000000000aa";
#define MAP 16 /* a 4 x 4 heatmap */
/* heat.bin: the record file's header, then per tile a frame (length, CRC) and the payload
 * [index u32 LE][map]. */
#define HDR GS_RECFILE_HEADER_LEN
#define REC (GS_RECFILE_FRAME_LEN + 4 + MAP)
/* An earlier build's record: [index][CRC-32 of index and map][map], host order, no header. */
#define OLD_REC (8 + MAP)

typedef struct {
    char dir[64];
    char spool[128];
    gs_spool *s;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/gs_test_spool_XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    /* a folder below one that does not exist yet: gs_spool_new makes both */
    snprintf(f->spool, sizeof f->spool, "%s/var/spool", f->dir);
    f->s = gs_spool_new(f->spool);
    assert_non_null(f->s);
    assert_string_equal(gs_spool_dir(f->s), f->spool);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    gs_spool_destroy(&f->s);
    assert_null(f->s);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static void path_of(const fixture *f, const char *rel, char *out, size_t n)
{
    snprintf(out, n, "%s/%s", f->spool, rel);
}

static int exists(const fixture *f, const char *rel)
{
    char p[PATH_MAX];
    path_of(f, rel, p, sizeof p);
    return access(p, F_OK) == 0;
}

static long size_of(const fixture *f, const char *rel)
{
    char p[PATH_MAX];
    struct stat st;
    path_of(f, rel, p, sizeof p);
    assert_int_equal(stat(p, &st), 0);
    return (long)st.st_size;
}

/* Files of the folder rel whose names end in GS_TMP_SUFFIX (left by an atomic write). */
static int tmp_files(const fixture *f, const char *rel)
{
    char p[PATH_MAX];
    path_of(f, rel, p, sizeof p);
    DIR *d = opendir(p);
    assert_non_null(d);
    int n = 0;
    size_t sl = strlen(GS_TMP_SUFFIX);
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        size_t len = strlen(e->d_name);
        n += len > sl && !strcmp(e->d_name + len - sl, GS_TMP_SUFFIX);
    }
    closedir(d);
    return n;
}

static void put_file(const fixture *f, const char *rel, const void *data, size_t n)
{
    char p[PATH_MAX];
    path_of(f, rel, p, sizeof p);
    FILE *fp = fopen(p, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, n, fp), n);
    assert_int_equal(fclose(fp), 0);
}

static void cut_file(const fixture *f, const char *rel, long len)
{
    char p[PATH_MAX];
    path_of(f, rel, p, sizeof p);
    assert_int_equal(truncate(p, len), 0);
}

static void flip_byte(const fixture *f, const char *rel, long at)
{
    char p[PATH_MAX];
    path_of(f, rel, p, sizeof p);
    FILE *fp = fopen(p, "r+b");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, at, SEEK_SET), 0);
    int c = fgetc(fp);
    assert_true(c != EOF);
    assert_int_equal(fseek(fp, at, SEEK_SET), 0);
    assert_int_equal(fputc(c ^ 0x40, fp), c ^ 0x40);
    assert_int_equal(fclose(fp), 0);
}

/* A plan with every part the coordinator reads back after a restart. */
typedef struct {
    Gastroscreen__V1__PlanResult p;
    Gastroscreen__V1__TileGrid g;
    Gastroscreen__V1__SlideFacts facts;
    Gastroscreen__V1__PlannedTile t[3], *pt[3];
    char *warn[1];
} plan_buf;

static void make_plan(plan_buf *b, uint32_t tile_size)
{
    b->p = (Gastroscreen__V1__PlanResult)GASTROSCREEN__V1__PLAN_RESULT__INIT;
    b->g = (Gastroscreen__V1__TileGrid)GASTROSCREEN__V1__TILE_GRID__INIT;
    b->facts = (Gastroscreen__V1__SlideFacts)GASTROSCREEN__V1__SLIDE_FACTS__INIT;
    b->g.tile_size = tile_size;
    b->g.level_downsample = 4.0;
    b->facts.quickhash = "qh-1234";
    b->facts.width = 40000;
    for (int i = 0; i < 3; i++) {
        b->t[i] = (Gastroscreen__V1__PlannedTile)GASTROSCREEN__V1__PLANNED_TILE__INIT;
        b->t[i].x0 = 1000 * i;
        b->t[i].y0 = 7;
        b->t[i].tissue_fraction = 0.25f * (float)i;
        b->pt[i] = &b->t[i];
    }
    b->warn[0] = "no mpp: the default was used";
    b->p.slide_id = (char *)ID;
    b->p.attempt = 2;
    b->p.grid = &b->g;
    b->p.facts = &b->facts;
    b->p.n_tiles = 3;
    b->p.tiles = b->pt;
    b->p.n_warnings = 1;
    b->p.warnings = b->warn;
    b->p.method = GASTROSCREEN__V1__METHOD__METHOD_CLASSICAL;
}

static void same_plan(const Gastroscreen__V1__PlanResult *a, const Gastroscreen__V1__PlanResult *b)
{
    assert_non_null(a);
    assert_non_null(a->grid);
    assert_non_null(a->facts);
    assert_string_equal(a->slide_id, b->slide_id);
    assert_int_equal(a->attempt, b->attempt);
    assert_int_equal(a->grid->tile_size, b->grid->tile_size);
    assert_true(a->grid->level_downsample == b->grid->level_downsample);
    assert_string_equal(a->facts->quickhash, b->facts->quickhash);
    assert_int_equal(a->facts->width, b->facts->width);
    assert_int_equal(a->method, b->method);
    assert_int_equal(a->n_tiles, b->n_tiles);
    for (size_t i = 0; i < a->n_tiles; i++) {
        assert_int_equal(a->tiles[i]->x0, b->tiles[i]->x0);
        assert_int_equal(a->tiles[i]->y0, b->tiles[i]->y0);
        assert_true(a->tiles[i]->tissue_fraction == b->tiles[i]->tissue_fraction);
    }
    assert_int_equal(a->n_warnings, b->n_warnings);
    assert_string_equal(a->warnings[0], b->warnings[0]);
}

static void plan_written_then_read_back(void **state)
{
    fixture *f = *state;
    plan_buf b;
    make_plan(&b, 512);
    Gastroscreen__V1__PlanResult *written = NULL;
    assert_int_equal(gs_spool_plan_write(f->s, ID, &b.p, &written), 0);
    same_plan(written, &b.p);
    gastroscreen__v1__plan_result__free_unpacked(written, NULL);
    assert_true(exists(f, "00000000000000aa/plan.pb"));
    assert_int_equal(tmp_files(f, "00000000000000aa"), 0);

    /* what a restarted coordinator reads */
    Gastroscreen__V1__PlanResult *r = gs_spool_plan_read(f->s, ID);
    same_plan(r, &b.p);
    gastroscreen__v1__plan_result__free_unpacked(r, NULL);

    /* a second write replaces the plan whole */
    plan_buf b2;
    make_plan(&b2, 256);
    assert_int_equal(gs_spool_plan_write(f->s, ID, &b2.p, NULL), 0);
    r = gs_spool_plan_read(f->s, ID);
    same_plan(r, &b2.p);
    gastroscreen__v1__plan_result__free_unpacked(r, NULL);
}

static void plan_missing_or_damaged_is_an_error(void **state)
{
    fixture *f = *state;
    gs_error_clear();
    assert_null(gs_spool_plan_read(f->s, ID));
    assert_non_null(strstr(gs_error_get(), "00000000000000aa/plan.pb"));

    plan_buf b;
    make_plan(&b, 512);
    assert_int_equal(gs_spool_plan_write(f->s, ID, &b.p, NULL), 0);
    /* cut inside the last field (a warning): what is left does not unpack */
    long len = size_of(f, "00000000000000aa/plan.pb");
    cut_file(f, "00000000000000aa/plan.pb", len - 3);
    gs_error_clear();
    assert_null(gs_spool_plan_read(f->s, ID));
    assert_non_null(strstr(gs_error_get(), "does not unpack"));

    /* a plan without a grid cannot be tiled: refused as well */
    b.p.grid = NULL;
    assert_int_equal(gs_spool_plan_write(f->s, ID, &b.p, NULL), 0);
    assert_null(gs_spool_plan_read(f->s, ID));
}

/* Collects what gs_spool_heat_open hands back. */
typedef struct {
    uint32_t idx[16];
    uint8_t map[16][MAP];
    size_t n;
} seen;

static void collect(void *ud, uint32_t index, const uint8_t *map)
{
    seen *s = ud;
    assert_true(s->n < 16);
    s->idx[s->n] = index;
    memcpy(s->map[s->n], map, MAP);
    s->n++;
}

static void map_of(uint32_t idx, uint8_t *map)
{
    for (int k = 0; k < MAP; k++)
        map[k] = (uint8_t)(idx * 31 + (uint32_t)k);
}

/* heat.bin of n records for tiles 10, 11, ... written by a first coordinator. */
static void write_heat(fixture *f, uint32_t n)
{
    plan_buf b;
    make_plan(&b, 512);
    assert_int_equal(gs_spool_plan_write(f->s, ID, &b.p, NULL), 0); /* makes the folder */
    gs_spool_heat *h = gs_spool_heat_open(f->s, ID, MAP, 0, collect, NULL);
    assert_non_null(h);
    uint8_t map[MAP];
    for (uint32_t i = 0; i < n; i++) {
        map_of(10 + i, map);
        assert_int_equal(gs_spool_heat_append(h, 10 + i, map), 0);
    }
    gs_spool_heat_destroy(&h);
    assert_null(h);
    assert_int_equal(size_of(f, "00000000000000aa/heat.bin"), HDR + (long)n * REC);
}

static void expect_records(const seen *s, uint32_t first, size_t n)
{
    assert_int_equal(s->n, n);
    uint8_t map[MAP];
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(s->idx[i], first + i);
        map_of(first + (uint32_t)i, map);
        assert_memory_equal(s->map[i], map, MAP);
    }
}

/* heat.bin on disk: a record file of kind HEAT, version 1, records [index u32 LE][map]
 * (stages/runtime/recfile frames them): the format the next coordinator must read. */
static void heat_format_on_disk(void **state)
{
    fixture *f = *state;
    write_heat(f, 2);
    char p[PATH_MAX];
    path_of(f, "00000000000000aa/heat.bin", p, sizeof p);
    uint8_t raw[HDR + 2 * REC];
    FILE *fp = fopen(p, "rb");
    assert_non_null(fp);
    assert_int_equal(fread(raw, 1, sizeof raw, fp), sizeof raw);
    fclose(fp);
    assert_memory_equal(raw, "GSRFHEAT", 8);
    assert_int_equal(gs_le32_get(raw + 8), 1);
    for (uint32_t i = 0; i < 2; i++) {
        const uint8_t *r = raw + HDR + i * REC;
        uint8_t map[MAP];
        map_of(10 + i, map);
        assert_int_equal(gs_le32_get(r), 4 + MAP);
        assert_int_equal(gs_le32_get(r + 4), gs_crc32(gs_crc32(0, r, 4), r + 8, 4 + MAP));
        assert_int_equal(gs_le32_get(r + 8), 10 + i);
        assert_memory_equal(r + 12, map, MAP);
    }
}

/* A heat.bin an earlier build wrote (no header, host order, its own CRC) is read when its
 * slide is adopted after an upgrade, up to a torn tail, and converted; appends follow. */
static void heat_old_format_is_converted(void **state)
{
    fixture *f = *state;
    plan_buf b;
    make_plan(&b, 512);
    assert_int_equal(gs_spool_plan_write(f->s, ID, &b.p, NULL), 0);
    uint8_t old[3 * OLD_REC];
    for (uint32_t i = 0; i < 3; i++) {
        uint8_t *r = old + i * OLD_REC;
        uint32_t idx = 10 + i;
        map_of(idx, r + 8);
        uint32_t crc = gs_crc32(gs_crc32(0, &idx, 4), r + 8, MAP);
        memcpy(r, &idx, 4);
        memcpy(r + 4, &crc, 4);
    }
    /* two whole records and a torn third */
    put_file(f, "00000000000000aa/heat.bin", old, 2 * OLD_REC + 5);

    seen s = {0};
    gs_spool_heat *h = gs_spool_heat_open(f->s, ID, MAP, 1, collect, &s);
    if (!h)
        fail_msg("%s", gs_error_get());
    expect_records(&s, 10, 2);
    uint8_t map[MAP];
    map_of(12, map);
    assert_int_equal(gs_spool_heat_append(h, 12, map), 0);
    gs_spool_heat_destroy(&h);
    assert_int_equal(size_of(f, "00000000000000aa/heat.bin"), HDR + 3 * REC);

    memset(&s, 0, sizeof s);
    h = gs_spool_heat_open(f->s, ID, MAP, 1, collect, &s);
    assert_non_null(h);
    expect_records(&s, 10, 3);
    gs_spool_heat_destroy(&h);
}

/* A crash in the middle of an append: the whole records come back, the torn one is cut off,
 * and a record appended afterwards is readable after the next restart. */
static void heat_torn_tail_is_cut(void **state)
{
    fixture *f = *state;
    write_heat(f, 5);
    cut_file(f, "00000000000000aa/heat.bin", HDR + 4 * REC + 5);

    seen s = {0};
    gs_spool_heat *h = gs_spool_heat_open(f->s, ID, MAP, 1, collect, &s);
    assert_non_null(h);
    expect_records(&s, 10, 4);
    assert_int_equal(size_of(f, "00000000000000aa/heat.bin"), HDR + 4 * REC);
    uint8_t map[MAP];
    map_of(14, map);
    assert_int_equal(gs_spool_heat_append(h, 14, map), 0);
    gs_spool_heat_destroy(&h);

    memset(&s, 0, sizeof s);
    h = gs_spool_heat_open(f->s, ID, MAP, 1, collect, &s);
    assert_non_null(h);
    expect_records(&s, 10, 5);
    gs_spool_heat_destroy(&h);
    assert_int_equal(size_of(f, "00000000000000aa/heat.bin"), HDR + 5 * REC);
}

/* A damaged record ends what can be trusted: the records before it come back, it and every
 * record after it are cut (they could not be told from garbage once one is misread). */
static void heat_flipped_byte_cuts_from_there(void **state)
{
    fixture *f = *state;
    write_heat(f, 5);
    flip_byte(f, "00000000000000aa/heat.bin", HDR + 2 * REC + 12 + 3); /* record 2's map */

    seen s = {0};
    gs_spool_heat *h = gs_spool_heat_open(f->s, ID, MAP, 1, collect, &s);
    assert_non_null(h);
    expect_records(&s, 10, 2);
    gs_spool_heat_destroy(&h);
    assert_int_equal(size_of(f, "00000000000000aa/heat.bin"), HDR + 2 * REC);

    /* a damaged index is caught the same way */
    flip_byte(f, "00000000000000aa/heat.bin", HDR + 1 * REC + 8);
    memset(&s, 0, sizeof s);
    h = gs_spool_heat_open(f->s, ID, MAP, 1, collect, &s);
    assert_non_null(h);
    expect_records(&s, 10, 1);
    gs_spool_heat_destroy(&h);
    assert_int_equal(size_of(f, "00000000000000aa/heat.bin"), HDR + 1 * REC);
}

/* A slide planned afresh (not adopted) starts an empty heat.bin whatever was there. */
static void heat_fresh_open_discards(void **state)
{
    fixture *f = *state;
    write_heat(f, 3);
    seen s = {0};
    gs_spool_heat *h = gs_spool_heat_open(f->s, ID, MAP, 0, collect, &s);
    assert_non_null(h);
    assert_int_equal(s.n, 0);
    assert_int_equal(size_of(f, "00000000000000aa/heat.bin"), HDR);
    gs_spool_heat_destroy(&h);

    /* no folder (no plan yet): an error naming the file, nothing created */
    gs_error_clear();
    assert_null(gs_spool_heat_open(f->s, "00000000000000bb", MAP, 1, collect, &s));
    assert_non_null(strstr(gs_error_get(), "00000000000000bb/heat.bin"));
    assert_false(exists(f, "00000000000000bb"));
}

static void retire_removes_the_folder(void **state)
{
    fixture *f = *state;
    write_heat(f, 2);
    char ledger[PATH_MAX];
    assert_int_equal(gs_spool_ledger_path(f->s, ID, ledger, sizeof ledger), 0);
    char want[PATH_MAX];
    path_of(f, "00000000000000aa/ledger.bin", want, sizeof want);
    assert_string_equal(ledger, want);
    put_file(f, "00000000000000aa/ledger.bin", "L", 1);
    put_file(f, "00000000000000aa/plan.pb.77.0.tmp", "T", 1); /* a crash inside a plan write */
    assert_true(exists(f, "00000000000000aa/plan.pb"));

    assert_int_equal(gs_spool_retire(f->s, ID), 0);
    assert_false(exists(f, "00000000000000aa"));
    assert_false(exists(f, "poison"));
    /* twice, or a slide that never had a folder: nothing to do */
    assert_int_equal(gs_spool_retire(f->s, ID), 0);
    assert_int_equal(gs_spool_retire(f->s, "00000000000000bb"), 0);

    /* a file the spool does not know of stays, and so does its folder */
    write_heat(f, 1);
    put_file(f, "00000000000000aa/core", "C", 1);
    assert_int_equal(gs_spool_retire(f->s, ID), -1);
    assert_true(exists(f, "00000000000000aa/core"));
    assert_false(exists(f, "00000000000000aa/heat.bin"));
}

static void poison_moves_the_folder_whole(void **state)
{
    fixture *f = *state;
    /* nothing spooled: nothing moved, no poison/ made */
    assert_int_equal(gs_spool_poison(f->s, ID), 0);
    assert_false(exists(f, "poison"));

    write_heat(f, 2);
    put_file(f, "00000000000000aa/ledger.bin", "L", 1);
    assert_int_equal(gs_spool_poison(f->s, ID), 0);
    assert_false(exists(f, "00000000000000aa"));
    assert_true(exists(f, "poison/00000000000000aa/plan.pb"));
    assert_true(exists(f, "poison/00000000000000aa/ledger.bin"));
    assert_int_equal(size_of(f, "poison/00000000000000aa/heat.bin"), HDR + 2 * REC);

    /* poisoned again (a later attempt) while the first is still kept: left in place */
    write_heat(f, 1);
    gs_error_clear();
    assert_int_equal(gs_spool_poison(f->s, ID), -1);
    assert_non_null(strstr(gs_error_get(), "poison/00000000000000aa"));
    assert_true(exists(f, "00000000000000aa/heat.bin"));
    assert_int_equal(size_of(f, "poison/00000000000000aa/heat.bin"), HDR + 2 * REC);
}

static void names_cannot_leave_the_spool(void **state)
{
    fixture *f = *state;
    char p[PATH_MAX];
    const char *bad[] = {"",
                         "../x",
                         "a/b",
                         ".",
                         "..",
                         "a b",
                         "poison",
                         "00000000000000AA",
                         "00000000000000a",
                         "00000000000000aaa"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(gs_spool_ledger_path(f->s, bad[i], p, sizeof p), -1);
        assert_int_equal(gs_spool_retire(f->s, bad[i]), -1);
        assert_int_equal(gs_spool_poison(f->s, bad[i]), -1);
        assert_null(gs_spool_plan_read(f->s, bad[i]));
    }
    assert_int_equal(gs_spool_ledger_path(f->s, ID, p, sizeof p), 0);
    /* a buffer too short for the path is an error, not a truncated path */
    assert_int_equal(gs_spool_ledger_path(f->s, ID, p, 8), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(plan_written_then_read_back, setup, teardown),
        cmocka_unit_test_setup_teardown(plan_missing_or_damaged_is_an_error, setup, teardown),
        cmocka_unit_test_setup_teardown(heat_format_on_disk, setup, teardown),
        cmocka_unit_test_setup_teardown(heat_old_format_is_converted, setup, teardown),
        cmocka_unit_test_setup_teardown(heat_torn_tail_is_cut, setup, teardown),
        cmocka_unit_test_setup_teardown(heat_flipped_byte_cuts_from_there, setup, teardown),
        cmocka_unit_test_setup_teardown(heat_fresh_open_discards, setup, teardown),
        cmocka_unit_test_setup_teardown(retire_removes_the_folder, setup, teardown),
        cmocka_unit_test_setup_teardown(poison_moves_the_folder_whole, setup, teardown),
        cmocka_unit_test_setup_teardown(names_cannot_leave_the_spool, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
