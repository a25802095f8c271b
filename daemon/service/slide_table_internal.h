/*
 * slide_table_internal: what daemon/service/slide_table.c (the table and its transitions) and
 * daemon/service/slide_record.c (a slide's journal record, as JSON) share. Private to those
 * two files; everything else uses slide_table.h.
 */
#ifndef GS_DAEMON_SERVICE_SLIDE_TABLE_INTERNAL_H
#define GS_DAEMON_SERVICE_SLIDE_TABLE_INTERNAL_H

#include <jansson.h>

#include "daemon/service/slide_table.h"

/* String fields are NULL when unset; the record and the views show them as "". */
typedef struct {
    char id[GS_SLIDE_ID_LEN + 1];
    char *path, *external_id, *quickhash, *duplicate_of, *unassessable_reason, *reason;
    char *report_json, *heatmap_png, *regions_geojson, *warnings;
    gs_slide_state state;
    gs_intake_source source;
    gs_verdict_class verdict;
    uint32_t attempt, crash_marks;
    int out_of_focus;
    int poison; /* FAILED as poison (PROTOCOL.md §12) */
    gs_slide_method foreground_method, blur_method;
    float score, blurred_fraction;
    /* What judged the score (set at SCREENED; source "" before, or in older records). */
    float threshold;
    char threshold_source[GS_SLIDE_SOURCE_MAX + 1];
    char precision[GS_SLIDE_PRECISION_MAX + 1]; /* set at SCREENED; "" before or in older records */
    gs_slide_tiles tiles;
    int64_t size, mtime_ms, accepted_ms, updated_ms;
    uint64_t last_seq;
    gs_slide_file file; /* the record's "file"; absent in older records (all 0) */
} slide;

/* The string fields, so that copying and freeing never forgets one. */
#define N_STR 10

/* Points out[0..N_STR) at the slide's string fields; returns out[0]. */
char **slide_str_fields(slide *s, char **out[N_STR]);

/* Frees a slide and its strings. Accepts NULL. */
void slide_free(slide *s);

/* "" for NULL: the record and the views show unset strings as empty. */
static inline const char *S(const char *s)
{
    return s ? s : "";
}

/* 1 when p is a precision list a record may hold: "" or up to GS_SLIDE_PRECISION_MAX of
 * [a-z0-9+]. */
int slide_precision_ok(const char *p);

/* 1 when m is a gs_slide_method a record may hold. */
int slide_method_ok(long long m);

/* A malloc'd copy of s, or NULL when s is empty (or out of memory: the caller tells by s). */
char *slide_dup_nonempty(const char *s);

/* The slide's journal record (a new JSON object, caller decrefs), or NULL when out of memory. */
json_t *slide_record_of(const slide *s);

/* A slide read back from its journal record (caller frees with slide_free), or NULL with the
 * error set naming what is wrong. Records of older builds load with what they lack unknown. */
slide *slide_of_record(const json_t *r);

#endif
