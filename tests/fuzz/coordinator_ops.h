/*
 * coordinator_ops: the input format of fuzz_coordinator, shared with the seed writer
 * (seeds_coordinator.c). An input is a sequence of operations, each
 *     [op: 1 byte][len: 2 bytes, little-endian][payload: len bytes (fewer at the end)]
 * where op & 7 says what the harness does with the payload:
 *     COP_WORK    send it on the coordinator's work socket from DEALER peer (op >> 3) & 7;
 *     COP_SUBMIT  send it on the submit socket as a REQ would ([empty][payload]);
 *     COP_QUERY   the same on the query socket;
 *     COP_INTAKE  publish it on the intake socket under the topic "slide.arrived.";
 *     COP_CLOCK   advance the coordinator's clock by len x 10 ms (no payload);
 *     COP_SPLIT   send it on the work socket from peer (op >> 3) & 7 as two frames, split at
 *                 the byte the payload's first byte names (frame-count checks);
 *     COP_TOPIC   publish it on the intake socket with the topic the payload starts with (up
 *                 to the first NUL), the rest as the message.
 * Before sending, every occurrence of COP_SLIDE_ID in the payload is replaced by the id of the
 * slide the harness submitted (ids are random per run), so seeds can name that slide, and a
 * submitted or announced path starting with COP_ROOT is made absolute under the harness's
 * slide root. Job ids
 * are the coordinator's counter from 1, the same in every run.
 */
#ifndef GS_TESTS_FUZZ_COORDINATOR_OPS_H
#define GS_TESTS_FUZZ_COORDINATOR_OPS_H

enum { COP_WORK = 0, COP_SUBMIT, COP_QUERY, COP_INTAKE, COP_CLOCK, COP_SPLIT, COP_TOPIC };

/* Stands for the harness's slide id in a payload: a well-formed id (GS_SLIDE_ID_LEN hex). */
#define COP_SLIDE_ID "5eed5eed5eed5eed"

/* The harness's slide, in its slide root, and another file there that no one has submitted
 * yet (for submit and intake seeds). */
#define COP_SLIDE_NAME "a.svs"
#define COP_OTHER_NAME "b.svs"

/* A path in a SubmitRequest or SlideArrived that starts with COP_ROOT is taken as relative to
 * the harness's slide root (whose name is random): "@/a.svs" names the harness's slide. */
#define COP_ROOT "@/"

/* The model sha256 the harness's coordinator expects of workers. */
#define COP_MODEL_SHA "aaaa"

#endif
