/*
 * Fuzz target for the coordinator's restart: the input builds a journal folder
 * (tests/fuzz/journal_ops.h: events.log records, raw damage, state.json, slide record files)
 * and the harness opens it the way gs_coordinator_new does: gs_journal_open (replay, repair),
 * gs_slides_new (every slide record read back through slide_record) and gs_slides_recover,
 * then reads every slide and every event. Damaged, hand-edited or hostile files must give
 * warnings or a refusal naming the journal, never a crash, a leak or UB.
 *
 * Each input gets a fresh folder in the scratch folder, removed afterwards.
 *
 * Built with -fsanitize=fuzzer when GS_FUZZ is on; otherwise linked with tests/fuzz/
 * standalone_main.c, which replays the seed corpus once in every build.
 */
#include "daemon/service/journal.h"
#include "daemon/service/slide_table.h"
#include "ops/error.h"
#include "stages/runtime/recfile.h"
#include "tests/fuzz/fuzz_util.h"
#include "tests/fuzz/journal_ops.h"

#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void write_file(const char *dir, const char *name, const uint8_t *p, size_t n, int append)
{
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, append ? "ab" : "wb");
    GS_ASSERT(f);
    GS_ASSERT(n == 0 || fwrite(p, 1, n, f) == n);
    GS_ASSERT(fclose(f) == 0);
}

static void append_record(const char *dir, const uint8_t *p, size_t n)
{
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/events.log", dir);
    gs_recfile_options o = {.kind = JOP_LOG_KIND, .version = JOP_LOG_VERSION, .create = 1};
    gs_recfile *f = gs_recfile_open(path, &o);
    /* Raw bytes before may have damaged the header or left damage the append refuses to
     * write behind: then the record goes in as raw bytes, framed by hand. */
    if (f && gs_recfile_append(f, p, n, 0) == 0) {
        gs_recfile_destroy(&f);
        return;
    }
    gs_recfile_destroy(&f);
    uint8_t frame[GS_RECFILE_FRAME_LEN];
    gs_le32_put(frame, (uint32_t)n);
    gs_le32_put(frame + 4, gs_crc32(gs_crc32(0, frame, 4), p, n));
    write_file(dir, "events.log", frame, sizeof frame, 1);
    write_file(dir, "events.log", p, n, 1);
}

static void read_back(gs_journal *j)
{
    for (size_t i = 0; i < gs_journal_warning_count(j); i++)
        GS_ASSERT(gs_journal_warning(j, i) != NULL);
    for (size_t i = 0; i < gs_journal_slide_count(j); i++) {
        const char *id;
        const json_t *rec;
        int terminal;
        int64_t t;
        uint64_t seq;
        GS_ASSERT(gs_journal_slide_at(j, i, &id, &rec, &terminal, &t, &seq) == 0);
        GS_ASSERT(gs_journal_slide_get(j, id) == rec);
    }
    gs_journal_event ev[64];
    size_t n = gs_journal_events_since(j, 0, ev, 64);
    for (size_t i = 0; i < n; i++)
        GS_ASSERT(ev[i].seq <= gs_journal_last_seq(j) && ev[i].slide_id);

    gs_slides_options o;
    gs_slides_options_default(&o);
    gs_slides *t = gs_slides_new(j, &o);
    if (!t)
        return;
    if (gs_slides_recover(t, 2000000000000) == 0) {
        for (size_t i = 0; i < gs_slides_count(t); i++) {
            gs_slide_info info;
            GS_ASSERT(gs_slides_at(t, i, &info) == 0);
            GS_ASSERT(gs_slide_id_ok(info.slide_id));
            gs_slide_info again;
            GS_ASSERT(gs_slides_get(t, info.slide_id, &again) == 0);
        }
    }
    gs_slides_destroy(&t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int gen;
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/journal%d", fuzz_scratch(), ++gen);
    GS_ASSERT(mkdir(dir, 0700) == 0);
    size_t at = 0;
    while (at + 3 <= size) {
        uint8_t op = data[at];
        size_t len = (size_t)data[at + 1] | (size_t)data[at + 2] << 8;
        at += 3;
        if (len > size - at)
            len = size - at;
        const uint8_t *p = data + at;
        at += len;
        switch (op % 5) {
        case JOP_RECORD:
            append_record(dir, p, len);
            break;
        case JOP_RAW:
            write_file(dir, "events.log", p, len, 1);
            break;
        case JOP_STATE:
            write_file(dir, "state.json", p, len, 0);
            break;
        case JOP_SLIDE_A:
            write_file(dir, JOP_ID_A ".json", p, len, 0);
            break;
        default:
            write_file(dir, JOP_ID_B ".json", p, len, 0);
            break;
        }
    }
    gs_journal *j = gs_journal_open(dir);
    if (j) {
        read_back(j);
        gs_journal_destroy(&j);
    } else
        GS_ASSERT(gs_error_get()[0] != '\0');
    nftw(dir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}
