/*
 * slide_record: a slide's journal record, the JSON object the journal keeps per slide
 * (daemon/service/journal), written at every transition and read back at start. See
 * slide_table_internal.h.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/service/slide_table_internal.h"
#include "ops/error.h"
#include "proto/vocab.h"

char **slide_str_fields(slide *s, char **out[N_STR])
{
    out[0] = &s->path;
    out[1] = &s->external_id;
    out[2] = &s->quickhash;
    out[3] = &s->duplicate_of;
    out[4] = &s->unassessable_reason;
    out[5] = &s->reason;
    out[6] = &s->report_json;
    out[7] = &s->heatmap_png;
    out[8] = &s->regions_geojson;
    out[9] = &s->warnings;
    return out[0];
}

void slide_free(slide *s)
{
    if (!s)
        return;
    char **f[N_STR];
    slide_str_fields(s, f);
    for (int i = 0; i < N_STR; i++)
        free(*f[i]);
    free(s);
}

/* ---- the journal record ---------------------------------------------------------------- */

json_t *slide_record_of(const slide *s)
{
    json_t *r = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s,"
        " s:i, s:i, s:i, s:I, s:I, s:b, s:f, s:f, s:I, s:I, s:I, s:I, s:I}",
        "slide_id", s->id, "path", S(s->path), "external_id", S(s->external_id), "quickhash",
        S(s->quickhash), "duplicate_of", S(s->duplicate_of), "unassessable_reason",
        S(s->unassessable_reason), "reason", S(s->reason), "report_json", S(s->report_json),
        "heatmap_png", S(s->heatmap_png), "regions_geojson", S(s->regions_geojson), "warnings",
        S(s->warnings), "state", (int)s->state, "source", (int)s->source, "verdict",
        (int)s->verdict, "attempt", (json_int_t)s->attempt, "crash_marks",
        (json_int_t)s->crash_marks, "out_of_focus", s->out_of_focus, "score", (double)s->score,
        "blurred_fraction", (double)s->blurred_fraction, "size", (json_int_t)s->size, "mtime_ms",
        (json_int_t)s->mtime_ms, "accepted_unix_ms", (json_int_t)s->accepted_ms, "updated_unix_ms",
        (json_int_t)s->updated_ms, "last_seq", (json_int_t)s->last_seq);
    if (!r)
        return NULL;
    json_t *tiles =
        json_pack("[I, I, I, I, I, I]", (json_int_t)s->tiles.planned, (json_int_t)s->tiles.inferred,
                  (json_int_t)s->tiles.background, (json_int_t)s->tiles.blurry,
                  (json_int_t)s->tiles.error, (json_int_t)s->tiles.rerequested);
    if (!tiles || json_object_set_new(r, "tiles", tiles) != 0 ||
        json_object_set_new(r, "foreground_method", json_integer(s->foreground_method)) != 0 ||
        json_object_set_new(r, "blur_method", json_integer(s->blur_method)) != 0 ||
        json_object_set_new(r, "poison", json_boolean(s->poison)) != 0 ||
        (s->precision[0] && json_object_set_new(r, "precision", json_string(s->precision)) != 0) ||
        (s->threshold_source[0] &&
         (json_object_set_new(r, "threshold", json_real(s->threshold)) != 0 ||
          json_object_set_new(r, "threshold_source", json_string(s->threshold_source)) != 0)) ||
        ((s->file.dev || s->file.ino) &&
         json_object_set_new(r, "file",
                             json_pack("{s:I, s:I, s:I, s:I}", "dev", (json_int_t)s->file.dev,
                                       "ino", (json_int_t)s->file.ino, "size",
                                       (json_int_t)s->file.size, "mtime_ns",
                                       (json_int_t)s->file.mtime_ns)) != 0)) {
        json_decref(r);
        return NULL;
    }
    return r;
}

int slide_precision_ok(const char *p)
{
    if (!p)
        return 1;
    size_t n = strlen(p);
    if (n > GS_SLIDE_PRECISION_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= '0' && p[i] <= '9') || p[i] == '+'))
            return 0;
    return 1;
}

int slide_method_ok(long long m)
{
    return m >= GS_METHOD_UNKNOWN && m <= GS_METHOD_CLASSICAL;
}

char *slide_dup_nonempty(const char *s)
{
    return s && *s ? strdup(s) : NULL;
}

/* Parses a journalled record; returns a new slide or NULL (why in the error). */
slide *slide_of_record(const json_t *r)
{
    slide *s = calloc(1, sizeof *s);
    if (!s) {
        gs_error_set("out of memory");
        return NULL;
    }
    const char *str[N_STR + 1] = {0};
    int state = 0, source = 0, verdict = 0, oof = 0;
    json_int_t attempt = 0, marks = 0, size = 0, mtime = 0, acc = 0, upd = 0, last = 0;
    json_int_t tl[6] = {0};
    double score = 0, blurred = 0;
    if (json_unpack((json_t *)r,
                    "{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s,"
                    " s:i, s:i, s:i, s:I, s:I, s:b, s:F, s:F, s:I, s:I, s:I, s:I, s:I,"
                    " s:[IIIIII]}",
                    "slide_id", &str[10], "path", &str[0], "external_id", &str[1], "quickhash",
                    &str[2], "duplicate_of", &str[3], "unassessable_reason", &str[4], "reason",
                    &str[5], "report_json", &str[6], "heatmap_png", &str[7], "regions_geojson",
                    &str[8], "warnings", &str[9], "state", &state, "source", &source, "verdict",
                    &verdict, "attempt", &attempt, "crash_marks", &marks, "out_of_focus", &oof,
                    "score", &score, "blurred_fraction", &blurred, "size", &size, "mtime_ms",
                    &mtime, "accepted_unix_ms", &acc, "updated_unix_ms", &upd, "last_seq", &last,
                    "tiles", &tl[0], &tl[1], &tl[2], &tl[3], &tl[4], &tl[5]) != 0) {
        gs_error_set("missing or mistyped fields");
        goto fail;
    }
    if (!gs_slide_id_ok(str[10]) || state < GS_SLIDE_ACCEPTED || state > GS_SLIDE_FAILED ||
        source < 0 || source > GS_INTAKE_EMBEDDED || verdict < 0 || verdict > GS_VERDICT_FAILED ||
        attempt < 1 || attempt > UINT32_MAX || marks < 0 || marks > UINT32_MAX ||
        str[0][0] != '/' || last < 0) {
        gs_error_set("a field is out of range");
        goto fail;
    }
    for (int i = 0; i < 6; i++)
        if (tl[i] < 0 || tl[i] > UINT32_MAX) {
            gs_error_set("a tile count is out of range");
            goto fail;
        }
    /* Records journalled before the methods were recorded have neither: unknown, never
     * guessed. */
    json_int_t fm = 0, bm = 0;
    if (json_unpack((json_t *)r, "{s?I, s?I}", "foreground_method", &fm, "blur_method", &bm) != 0 ||
        !slide_method_ok(fm) || !slide_method_ok(bm)) {
        gs_error_set("a method is out of range");
        goto fail;
    }
    s->foreground_method = (gs_slide_method)fm;
    s->blur_method = (gs_slide_method)bm;
    /* Records journalled before the poison flag existed have no "poison" key. For them alone,
     * and only here, the flag comes from the reason, as those builds decided it (PROTOCOL.md
     * §12); a slide they failed as poison stays poison after the upgrade. */
    const json_t *poison = json_object_get(r, "poison");
    if (poison && !json_is_boolean(poison)) {
        gs_error_set("poison is not a boolean");
        goto fail;
    }
    s->poison = poison ? json_is_true(poison) : gs_poison_by_legacy_reason(verdict, str[5]);
    /* The threshold that judged, recorded from SCREENED on; absent in older records. */
    double thr = 0;
    const char *thr_src = "";
    if (json_unpack((json_t *)r, "{s?F, s?s}", "threshold", &thr, "threshold_source", &thr_src) !=
            0 ||
        !(thr >= 0 && thr <= 1) || strlen(thr_src) > GS_SLIDE_SOURCE_MAX) {
        gs_error_set("threshold or its source out of range");
        goto fail;
    }
    s->threshold = (float)thr;
    /* The precision list, journalled from SCREENED on; absent in older records (fp32 ran). */
    const char *prec = "";
    if (json_unpack((json_t *)r, "{s?s}", "precision", &prec) != 0 || !slide_precision_ok(prec)) {
        gs_error_set("precision mistyped or out of range");
        goto fail;
    }
    snprintf(s->precision, sizeof s->precision, "%s", prec);
    /* The file accepted at intake; records of older builds have none (not checked). dev and
     * ino are unsigned on the way in and out: the cast keeps their bits. */
    json_int_t fdev = 0, fino = 0, fsize = 0, fmtime = 0;
    if (json_unpack((json_t *)r, "{s?{s:I, s:I, s:I, s:I}}", "file", "dev", &fdev, "ino", &fino,
                    "size", &fsize, "mtime_ns", &fmtime) != 0) {
        gs_error_set("file identity mistyped");
        goto fail;
    }
    s->file = (gs_slide_file){(uint64_t)fdev, (uint64_t)fino, fsize, fmtime};
    snprintf(s->threshold_source, sizeof s->threshold_source, "%s", thr_src);
    memcpy(s->id, str[10], GS_SLIDE_ID_LEN);
    char **f[N_STR];
    slide_str_fields(s, f);
    for (int i = 0; i < N_STR; i++) {
        *f[i] = slide_dup_nonempty(str[i]);
        if (str[i][0] && !*f[i]) {
            gs_error_set("out of memory");
            goto fail;
        }
    }
    s->state = (gs_slide_state)state;
    s->source = (gs_intake_source)source;
    s->verdict = (gs_verdict_class)verdict;
    s->attempt = (uint32_t)attempt;
    s->crash_marks = (uint32_t)marks;
    s->out_of_focus = oof;
    s->score = (float)score;
    s->blurred_fraction = (float)blurred;
    s->size = size;
    s->mtime_ms = mtime;
    s->accepted_ms = acc;
    s->updated_ms = upd;
    s->last_seq = (uint64_t)last;
    s->tiles = (gs_slide_tiles){(uint32_t)tl[0], (uint32_t)tl[1], (uint32_t)tl[2],
                                (uint32_t)tl[3], (uint32_t)tl[4], (uint32_t)tl[5]};
    return s;
fail:
    slide_free(s);
    return NULL;
}
