/*
 * vocab: the protocol's vocabulary, written once for every process that speaks it.
 *
 * proto/gastroscreen.proto declares the messages; proto/PROTOCOL.md gives the rules. What the
 * generated code leaves to each receiver lives here: the form of a slide id (PROTOCOL.md §1,
 * "Identifiers"), the fence of a job or result (§1, "The fence"; §9), the names of enum values
 * as topics and people read them (§3, "Topics"), the channels of a pixel format (§3,
 * "Pixels"), how to read a poison verdict written before Verdict.poison existed (§12), and
 * gs_verdict_class, the one C enum of verdict classes, with GS_VOCAB_PIN that ties every such
 * C mirror of a proto enum to the schema. Stages, the coordinator and the CLI use these
 * instead of keeping their own copies, so that a change to the vocabulary is made here and in
 * PROTOCOL.md and nowhere else.
 *
 * Use: gs_slide_id_ok(id) before an id from the network names a file, a topic or a journal
 * record; gs_fence_of(&envelope->base, &f) for the (slide_id, attempt) of any WorkMessage or
 * TileMessage, then gs_fence_ok(&f) for §14 step 6; gs_stage_name(stage) and the other names,
 * with the caller choosing what to print for a value that has none. Every function is pure and
 * thread-safe and allocates nothing; returned strings are static. This module depends on the
 * generated code only: stages and daemon include it, never the other way round.
 */
#ifndef GS_PROTO_VOCAB_H
#define GS_PROTO_VOCAB_H

#include <stddef.h>
#include <stdint.h>

#include "proto/gastroscreen.pb-c.h"

/* Pins an enumerator of a C enum to the proto enum value it mirrors (one per enumerator, next
 * to the C enum), so that code may cast between the two and a renumbering in the schema
 * fails the build instead of converting silently. */
#define GS_VOCAB_PIN(c_value, proto_value)                                                         \
    _Static_assert((int)(c_value) == (int)(proto_value), #c_value " mirrors " #proto_value)

/* The class of a slide's verdict (VerdictClass; PROTOCOL.md §6), under short names for the
 * slide table, the coordinator and report files; NONE while the slide has none. */
typedef enum {
    GS_VERDICT_NONE = 0,
    GS_VERDICT_NEGATIVE = 1,
    GS_VERDICT_POSITIVE = 2,
    GS_VERDICT_UNASSESSABLE = 3,
    GS_VERDICT_FAILED = 4,
} gs_verdict_class;
GS_VOCAB_PIN(GS_VERDICT_NONE, GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_UNSPECIFIED);
GS_VOCAB_PIN(GS_VERDICT_NEGATIVE, GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_NEGATIVE);
GS_VOCAB_PIN(GS_VERDICT_POSITIVE, GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_POSITIVE);
GS_VOCAB_PIN(GS_VERDICT_UNASSESSABLE, GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_UNASSESSABLE);
GS_VOCAB_PIN(GS_VERDICT_FAILED, GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_FAILED);

/* Length of a slide id without the NUL: the coordinator draws 64 random bits per slide and
 * writes them as lower-case hex, so that an id is safe in topics, file names and journald
 * fields (PROTOCOL.md §1, "Identifiers"). */
#define GS_SLIDE_ID_LEN 16

/* Floats in a tile's feature (TileResult.feature, ScreenTask rows): the multi-task network's
 * 512-d feature (PROTOCOL.md §6). */
#define GS_FEATURE_DIM 512

/* 1 when s is a slide id: exactly GS_SLIDE_ID_LEN characters, each 0-9 or a-f (upper case is
 * not an id). 0 otherwise, and for NULL. */
int gs_slide_id_ok(const char *s);

/* The fence of one job or result as the message carries it, not yet checked. */
typedef struct {
    const char *slide_id; /* borrowed from the message: valid while the message is */
    uint32_t attempt;     /* 0 when not set */
    /* Not part of the fence, but carried beside it by jobs, PlanResult, TileJobDone,
     * ScreenResult, ReportResult and TileHeader (its TileJob); 0 for the others. */
    uint64_t job_id;
} gs_fence;

/* Takes the fence out of message, a WorkMessage or a TileMessage envelope (pass &env->base):
 * the fence of its job or result body, or of its TileHeader. Returns 0 with *out filled, or
 * -1 with *out zeroed when the envelope carries no fence: a life-cycle body (hello, ready,
 * heartbeats, welcome, goodbye), no body, a body case whose message is NULL, another
 * envelope type, or message NULL. */
int gs_fence_of(const ProtobufCMessage *message, gs_fence *out);

/* 1 when s, a string field of a message from the network, is present and at most max bytes
 * long (read no further than max + 1 bytes). */
int gs_wire_str_ok(const char *s, size_t max);

/* 1 when s (NUL-terminated) is well-formed UTF-8: no overlong forms, surrogates or code points
 * past U+10FFFF. What jansson accepts, so a string that passes can always be journalled; the
 * transport drops wire messages with other strings, intake refuses such paths. */
int gs_utf8_ok(const char *s);

/* 1 when a fence is well-formed (PROTOCOL.md §14, step 6): gs_slide_id_ok(slide_id) and
 * attempt >= 1. Whether it is the slide's current attempt is the receiver's question (§9). */
int gs_fence_ok(const gs_fence *f);

/* Lower-case names of enum values without their prefix (STAGE_TILER -> "tiler",
 * SLIDE_STATE_BLUR_CHECKED -> "blur_checked", METHOD_CLASSICAL -> "classical"): the words of
 * topics (PROTOCOL.md §3, "Topics"), worker ids, log fields, metric labels, the CLI's output and
 * report.json. Each takes a value of its proto enum, or of the C enum pinned to it, and returns
 * a static string; NULL for UNSPECIFIED (0) and for values this build does not know, so that
 * each caller decides what such a value prints as. */
const char *gs_stage_name(int stage);               /* Stage */
const char *gs_slide_state_name(int state);         /* SlideState */
const char *gs_verdict_class_name(int verdict);     /* VerdictClass */
const char *gs_method_name(int method);             /* Method */
const char *gs_tile_outcome_name(int tile_outcome); /* TileOutcome */

/* BlurJob/InferJob.sparse_tissue, the blur network's sparse-tissue rule a job asks for
 * (PROTOCOL.md §6): GS_BLUR_SPARSE_BUNDLE (0, what a sender that predates the field sends) =
 * the worker's bundle's threshold.blur_sparse_tissue; a negative value (GS_BLUR_SPARSE_OFF) =
 * the rule is off; a share in (0, 1] = that share instead of the bundle's; anything else (NaN,
 * above 1) is read as 0. */
#define GS_BLUR_SPARSE_BUNDLE 0.0
#define GS_BLUR_SPARSE_OFF (-1.0)

/* The word that begins the reason of a poison verdict ("poison: 3 workers were lost ..."), for
 * people; programs read Verdict.poison (PROTOCOL.md §12). */
#define GS_POISON_REASON "poison"

/* 1 when a verdict recorded before Verdict.poison existed was poison, by the rule the builds
 * of that time used: class FAILED and a reason beginning with GS_POISON_REASON. Only for a
 * record written without the flag (PROTOCOL.md §12); a record with the flag is answered by
 * it. 0 otherwise, and for a NULL reason. */
int gs_poison_by_legacy_reason(int verdict_class, const char *reason);

/* Channels of a pixel frame in format f, one byte each (PROTOCOL.md §3, "Pixels"): 3 for
 * RGB8, 4 for RGBA8, 1 for GRAY8; 0 for UNSPECIFIED and for values this build does not know,
 * which make a tile malformed. */
int gs_pixel_channels(Gastroscreen__V1__PixelFormat f);

#endif
