#include "proto/vocab.h"

#include <string.h>

int gs_slide_id_ok(const char *s)
{
    /* strnlen: an over-long string from the network is not read to its end. */
    if (!s || strnlen(s, GS_SLIDE_ID_LEN + 1) != GS_SLIDE_ID_LEN)
        return 0;
    for (size_t i = 0; i < GS_SLIDE_ID_LEN; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

/* The tables are indexed by the proto enums' values; index 0, UNSPECIFIED, has no name. */
static const char *const stage_names[] = {
    [GASTROSCREEN__V1__STAGE__STAGE_TILER] = "tiler",
    [GASTROSCREEN__V1__STAGE__STAGE_FOREGROUND] = "foreground",
    [GASTROSCREEN__V1__STAGE__STAGE_BLUR] = "blur",
    [GASTROSCREEN__V1__STAGE__STAGE_INFER] = "infer",
    [GASTROSCREEN__V1__STAGE__STAGE_SCREENER] = "screener",
    [GASTROSCREEN__V1__STAGE__STAGE_REPORTER] = "reporter",
    [GASTROSCREEN__V1__STAGE__STAGE_COORDINATOR] = "coordinator",
};

static const char *const slide_state_names[] = {
    [GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_ACCEPTED] = "accepted",
    [GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_PLANNED] = "planned",
    [GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_BLUR_CHECKED] = "blur_checked",
    [GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_INFERRING] = "inferring",
    [GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_SCREENED] = "screened",
    [GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_REPORTED] = "reported",
    [GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_DONE] = "done",
    [GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_FAILED] = "failed",
};

static const char *const verdict_class_names[] = {
    [GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_NEGATIVE] = "negative",
    [GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_POSITIVE] = "positive",
    [GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_UNASSESSABLE] = "unassessable",
    [GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_FAILED] = "failed",
};

static const char *const method_names[] = {
    [GASTROSCREEN__V1__METHOD__METHOD_NETWORK] = "network",
    [GASTROSCREEN__V1__METHOD__METHOD_CLASSICAL] = "classical",
};

static const char *const tile_outcome_names[] = {
    [GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_INFERRED] = "inferred",
    [GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_BACKGROUND] = "background",
    [GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_BLURRY] = "blurry",
    [GASTROSCREEN__V1__TILE_OUTCOME__TILE_OUTCOME_ERROR] = "error",
};

/* names[value], or NULL out of the table (negative values included). */
#define NAME(names, value)                                                                         \
    ((value) >= 0 && (size_t)(value) < sizeof names / sizeof names[0] ? names[value] : NULL)

const char *gs_stage_name(int stage)
{
    return NAME(stage_names, stage);
}

const char *gs_slide_state_name(int state)
{
    return NAME(slide_state_names, state);
}

const char *gs_verdict_class_name(int verdict)
{
    return NAME(verdict_class_names, verdict);
}

const char *gs_method_name(int method)
{
    return NAME(method_names, method);
}

const char *gs_tile_outcome_name(int tile_outcome)
{
    return NAME(tile_outcome_names, tile_outcome);
}

int gs_poison_by_legacy_reason(int verdict_class, const char *reason)
{
    return verdict_class == GS_VERDICT_FAILED && reason &&
           strncmp(reason, GS_POISON_REASON, sizeof GS_POISON_REASON - 1) == 0;
}

static int take(gs_fence *out, const char *slide_id, uint32_t attempt, uint64_t job_id)
{
    out->slide_id = slide_id;
    out->attempt = attempt;
    out->job_id = job_id;
    return 0;
}

/* Every fenced body has slide_id = 1 and attempt = 2 (PROTOCOL.md §1); these read them from
 * a body that may be NULL, with or without the job_id the body carries. */
#define FENCE(b) ((b) ? take(out, (b)->slide_id, (b)->attempt, 0) : -1)
#define FENCE_JOB(b) ((b) ? take(out, (b)->slide_id, (b)->attempt, (b)->job_id) : -1)

static int work_fence(const Gastroscreen__V1__WorkMessage *m, gs_fence *out)
{
    switch (m->body_case) {
    case GASTROSCREEN__V1__WORK_MESSAGE__BODY_PLAN_JOB:
        return FENCE_JOB(m->plan_job);
    case GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_JOB:
        return FENCE_JOB(m->tile_job);
    case GASTROSCREEN__V1__WORK_MESSAGE__BODY_SCREEN_TASK:
        return FENCE_JOB(m->screen_task);
    case GASTROSCREEN__V1__WORK_MESSAGE__BODY_REPORT_JOB:
        return FENCE_JOB(m->report_job);
    case GASTROSCREEN__V1__WORK_MESSAGE__BODY_PLAN_RESULT:
        return FENCE_JOB(m->plan_result);
    case GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_JOB_DONE:
        return FENCE_JOB(m->tile_job_done);
    case GASTROSCREEN__V1__WORK_MESSAGE__BODY_TILE_RESULT:
        return FENCE(m->tile_result);
    case GASTROSCREEN__V1__WORK_MESSAGE__BODY_BLUR_RESULT:
        return FENCE(m->blur_result);
    case GASTROSCREEN__V1__WORK_MESSAGE__BODY_SCREEN_RESULT:
        return FENCE_JOB(m->screen_result);
    case GASTROSCREEN__V1__WORK_MESSAGE__BODY_REPORT_RESULT:
        return FENCE_JOB(m->report_result);
    default:
        return -1; /* life cycle, or no body */
    }
}

int gs_fence_of(const ProtobufCMessage *message, gs_fence *out)
{
    memset(out, 0, sizeof *out); /* take() fills it only on success */
    if (!message)
        return -1;
    if (message->descriptor == &gastroscreen__v1__work_message__descriptor)
        return work_fence((const Gastroscreen__V1__WorkMessage *)message, out);
    if (message->descriptor == &gastroscreen__v1__tile_message__descriptor) {
        const Gastroscreen__V1__TileMessage *t = (const Gastroscreen__V1__TileMessage *)message;
        return t->body_case == GASTROSCREEN__V1__TILE_MESSAGE__BODY_TILE ? FENCE_JOB(t->tile) : -1;
    }
    return -1;
}

int gs_utf8_ok(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p++;
        int more;
        uint32_t cp, min;
        if (c < 0x80)
            continue;
        if ((c & 0xe0) == 0xc0)
            more = 1, cp = c & 0x1f, min = 0x80;
        else if ((c & 0xf0) == 0xe0)
            more = 2, cp = c & 0x0f, min = 0x800;
        else if ((c & 0xf8) == 0xf0)
            more = 3, cp = c & 0x07, min = 0x10000;
        else
            return 0;
        for (int i = 0; i < more; i++, p++) {
            if ((*p & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (*p & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
    }
    return 1;
}

int gs_wire_str_ok(const char *s, size_t max)
{
    return s && strnlen(s, max + 1) <= max;
}

int gs_fence_ok(const gs_fence *f)
{
    return f && gs_slide_id_ok(f->slide_id) && f->attempt >= 1;
}

int gs_pixel_channels(Gastroscreen__V1__PixelFormat f)
{
    switch (f) {
    case GASTROSCREEN__V1__PIXEL_FORMAT__PIXEL_FORMAT_RGB8:
        return 3;
    case GASTROSCREEN__V1__PIXEL_FORMAT__PIXEL_FORMAT_RGBA8:
        return 4;
    case GASTROSCREEN__V1__PIXEL_FORMAT__PIXEL_FORMAT_GRAY8:
        return 1;
    default:
        return 0;
    }
}
