/*
 * journal_ops: the input format of fuzz_journal, shared with the seed writer (fuzz_seeds.c).
 * An input is a sequence of operations, each
 *     [op: 1 byte][len: 2 bytes, little-endian][payload: len bytes (fewer at the end)]
 * building a journal folder before it is opened, by op % 5:
 *     JOP_RECORD  append the payload to events.log as one intact record (right length and
 *                 CRC: what the journal reads inside a record is fuzzed, not the framing);
 *     JOP_RAW     append the payload to events.log as raw bytes (torn and corrupt records,
 *                 damaged headers; the file starts with nothing when this comes first);
 *     JOP_STATE   write the payload as state.json;
 *     JOP_SLIDE_A write it as JOP_ID_A.json, JOP_SLIDE_B as JOP_ID_B.json (slide records).
 */
#ifndef GS_TESTS_FUZZ_JOURNAL_OPS_H
#define GS_TESTS_FUZZ_JOURNAL_OPS_H

enum { JOP_RECORD = 0, JOP_RAW, JOP_STATE, JOP_SLIDE_A, JOP_SLIDE_B };

#define JOP_ID_A "0123456789abcdef"
#define JOP_ID_B "fedcba9876543210"

/* events.log's record file kind and version (daemon/service/journal.c). */
#define JOP_LOG_KIND "JLOG"
#define JOP_LOG_VERSION 1

#endif
