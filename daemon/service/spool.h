/*
 * spool: the coordinator's per-slide working folder on disk (PROTOCOL.md §8, §12).
 *
 * The spool is a folder with one sub-folder per slide in flight, named by the slide id:
 *   - plan.pb:    the slide's PlanResult as the foreground worker sent it, written whole or not
 *                 at all (temporary file, fsync, rename, fsync of the folder) before PLANNED is
 *                 journalled, since the record refers to it and a restart plans nothing again;
 *   - ledger.bin: the tile ledger's outcome file (written by daemon/service/ledger; the spool
 *                 only names it and removes it);
 *   - heat.bin:   the heatmaps of the inferred tiles, appended as results arrive: a record file
 *                 (stages/runtime/recfile) of kind HEAT, version 1, one record per tile
 *                 [tile index u32 LE][map bytes], not fsynced one by one. After a crash the
 *                 intact records are read back and the first torn or corrupt one is cut off
 *                 with everything after it. A heat.bin of an earlier build (no header; records
 *                 [index][CRC-32][map] in host order) is converted when its slide is adopted.
 * A slide's folder goes when its verdict does (gs_spool_retire), or, for a slide failed as
 * poison, moves to poison/<slide id> for an operator to look at (gs_spool_poison).
 *
 * Nothing here knows the coordinator: every function takes the spool and a slide id
 * (gs_slide_id_ok, proto/vocab; anything else is refused, so a name can never leave the folder
 * or name poison/). Functions return 0 / a pointer, or -1 / NULL with the
 * error set (ops/error.h) naming the file.
 *
 * Use:
 *     gs_spool *s = gs_spool_new(cfg->spool_dir);
 *     gs_spool_plan_write(s, id, plan, &copy);  ...  plan = gs_spool_plan_read(s, id);
 *     gs_spool_heat *h = gs_spool_heat_open(s, id, map_bytes, adopt, on_record, ud);
 *     gs_spool_heat_append(h, index, map);  ...  gs_spool_heat_destroy(&h);
 *     gs_spool_retire(s, id);  or  gs_spool_poison(s, id);
 *     gs_spool_destroy(&s);
 * Not thread-safe: one thread (the coordinator's loop) owns a spool and its heat files.
 */
#ifndef GS_DAEMON_SERVICE_SPOOL_H
#define GS_DAEMON_SERVICE_SPOOL_H

#include <stddef.h>
#include <stdint.h>

#include "proto/gastroscreen.pb-c.h"

typedef struct gs_spool gs_spool;

/* Opens the spool at dir, creating the folder and its parents (mode 0750) when missing.
 * Returns the spool (caller owns; gs_spool_destroy) or NULL with the error set. */
gs_spool *gs_spool_new(const char *dir);

/* Frees the spool (the folder stays); sets *s to NULL. Accepts NULL. */
void gs_spool_destroy(gs_spool **s);

/* The spool's folder, as given to gs_spool_new. Spool-owned. */
const char *gs_spool_dir(const gs_spool *s);

/* The path of the slide's ledger file (for gs_ledger_attach_file / gs_ledger_adopt_file) in
 * out (n bytes; PATH_MAX is always enough). Returns 0, or -1 with the error set for a bad
 * slide id or a path longer than n. */
int gs_spool_ledger_path(const gs_spool *s, const char *slide, char *out, size_t n);

/* Writes plan as the slide's plan.pb, creating the slide's folder, so that the file is the
 * new plan whole or the old one (or none) after a crash. When written is not NULL, *written
 * receives the plan unpacked from the very bytes written (caller frees it with
 * gastroscreen__v1__plan_result__free_unpacked); *written must be NULL or an earlier plan,
 * which is freed and replaced. Returns 0, or -1 with the error set (*written unchanged). */
int gs_spool_plan_write(const gs_spool *s, const char *slide,
                        const Gastroscreen__V1__PlanResult *plan,
                        Gastroscreen__V1__PlanResult **written);

/* Reads the slide's plan.pb. Returns the plan (caller frees it with
 * gastroscreen__v1__plan_result__free_unpacked), or NULL with the error set when the file is
 * missing, unreadable, or not a plan with a tile grid. */
Gastroscreen__V1__PlanResult *gs_spool_plan_read(const gs_spool *s, const char *slide);

/* An open heat.bin of one slide. */
typedef struct gs_spool_heat gs_spool_heat;

/* Called by gs_spool_heat_open for each intact record, oldest first; map (map_bytes bytes)
 * is valid during the call only. A later record of the same index follows an earlier one. */
typedef void gs_spool_heat_record(void *ud, uint32_t index, const uint8_t *map);

/* Opens the slide's heat.bin for records of map_bytes bytes of heatmap each (the slide's
 * folder must exist: gs_spool_plan_write makes it). adopt = 0 starts the file afresh; adopt =
 * 1 (a restart) hands every intact record to on_record (may be NULL), then cuts the file after
 * the last of them, so a torn tail or a corrupt record and whatever follows it is gone before
 * anything is appended. Returns the open file (caller owns; gs_spool_heat_destroy) or NULL
 * with the error set. */
gs_spool_heat *gs_spool_heat_open(const gs_spool *s, const char *slide, size_t map_bytes, int adopt,
                                  gs_spool_heat_record *on_record, void *ud);

/* Appends one record (map: map_bytes bytes) and flushes it to the kernel (no fsync). Returns
 * 0, or -1 with the error set (a full disk, say): gs_recfile_append has cut the partial record
 * off again, so the file still ends with its last intact record and the records before it
 * stay readable (when even that cut fails, every later append fails too). */
int gs_spool_heat_append(gs_spool_heat *h, uint32_t index, const uint8_t *map);

/* Closes the file (it stays on disk); sets *h to NULL. Accepts NULL. */
void gs_spool_heat_destroy(gs_spool_heat **h);

/* Removes the slide's folder and the files the spool and the ledger put there. A slide
 * without a folder is not an error. Returns 0, or -1 with the error set when the folder is
 * still there (a file of someone else's in it): harmless, the folder is only left over. */
int gs_spool_retire(const gs_spool *s, const char *slide);

/* Moves the slide's folder to poison/<slide> in the spool (creating poison/), whole, for an
 * operator to look at. A slide without a folder is not an error and creates nothing. Returns
 * 0, or -1 with the error set when it cannot be moved (poison/<slide> is already there and
 * not empty, say); the folder then stays where it was. */
int gs_spool_poison(const gs_spool *s, const char *slide);

#endif
