#include "daemon/cli/labels.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ops/error.h"

#define MAX_FIELD 4096

void gs_labels_free(gs_labels *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->rows[i].slide);
        free(l->rows[i].patient);
        free(l->rows[i].annotation);
    }
    free(l->rows);
    memset(l, 0, sizeof *l);
}

/* Reads one CSV record of f into fields (at most max, each < MAX_FIELD bytes). Returns the
 * number of fields, 0 at the end of the file, or -1 with the error (line counts lines). */
static int csv_record(FILE *f, char fields[][MAX_FIELD], int max, const char *file, int *line)
{
    int n = 0, c, quoted = 0, any = 0;
    size_t len = 0;
    (*line)++;
    for (;;) {
        c = fgetc(f);
        if (c == EOF && !any && n == 0 && len == 0)
            return 0;
        if (quoted) {
            if (c == EOF)
                return gs_error_set("%s:%d: a quoted field runs to the end of the file", file,
                                    *line);
            if (c == '"') {
                int d = fgetc(f);
                if (d != '"') {
                    quoted = 0;
                    if (d != EOF)
                        ungetc(d, f);
                    continue;
                }
            }
            if (c == '\n')
                (*line)++;
        } else if (c == '"' && len == 0) {
            quoted = 1;
            any = 1;
            continue;
        } else if (c == ',' || c == '\n' || c == EOF || c == '\r') {
            if (c == '\r') {
                int d = fgetc(f);
                if (d != '\n' && d != EOF)
                    ungetc(d, f);
                c = '\n';
            }
            if (n >= max)
                return gs_error_set("%s:%d: more than %d fields", file, *line, max);
            fields[n][len] = '\0';
            n++;
            len = 0;
            if (c != ',')
                return n;
            any = 1;
            continue;
        }
        any = 1;
        if (len + 1 >= MAX_FIELD)
            return gs_error_set("%s:%d: a field longer than %d bytes", file, *line, MAX_FIELD - 1);
        if (n >= max)
            return gs_error_set("%s:%d: more than %d fields", file, *line, max);
        fields[n][len++] = (char)c;
    }
}

/* `dir/name` or name when absolute, resolved when it exists; NULL when out of memory. */
static char *resolve(const char *dir, const char *name)
{
    char given[PATH_MAX + MAX_FIELD], real[PATH_MAX];
    if (name[0] == '/')
        snprintf(given, sizeof given, "%s", name);
    else
        snprintf(given, sizeof given, "%s/%s", dir, name);
    return strdup(realpath(given, real) ? real : given);
}

int gs_labels_read(const char *path, const char *ann_dir, gs_labels *out)
{
    enum { MAX_COLS = 32 };
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "r");
    if (!f)
        return gs_error_set("%s: %s", path, strerror(errno));
    char(*fields)[MAX_FIELD] = malloc(sizeof(char[MAX_COLS][MAX_FIELD]));
    char copy[PATH_MAX], dir[PATH_MAX];
    snprintf(copy, sizeof copy, "%s", path);
    snprintf(dir, sizeof dir, "%s", dirname(copy));
    int line = 0, rc = -1;
    int col_slide = -1, col_label = -1, col_patient = -1, col_ann = -1;
    if (!fields) {
        gs_error_set("out of memory");
        goto close_file;
    }
    int n = csv_record(f, fields, MAX_COLS, path, &line);
    if (n <= 0) {
        if (n == 0)
            gs_error_set("%s: empty (a header row slide,label,patient is needed)", path);
        goto close_file;
    }
    for (int i = 0; i < n; i++) {
        const char *h = fields[i];
        int *slot = !strcmp(h, "slide")        ? &col_slide
                    : !strcmp(h, "label")      ? &col_label
                    : !strcmp(h, "patient")    ? &col_patient
                    : !strcmp(h, "annotation") ? &col_ann
                                               : NULL;
        if (slot && *slot >= 0) {
            gs_error_set("%s:1: column %s twice", path, h);
            goto close_file;
        }
        if (slot)
            *slot = i;
    }
    if (col_slide < 0 || col_label < 0 || col_patient < 0) {
        gs_error_set("%s:1: the header needs the columns slide, label and patient", path);
        goto close_file;
    }
    while ((n = csv_record(f, fields, MAX_COLS, path, &line)) > 0) {
        if (n == 1 && fields[0][0] == '\0')
            continue; /* a blank line */
        int need = col_slide > col_label ? col_slide : col_label;
        need = col_patient > need ? col_patient : need;
        if (n <= need) {
            gs_error_set("%s:%d: %d fields, the header has more", path, line, n);
            goto close_file;
        }
        const char *lab = fields[col_label];
        if (strcmp(lab, "positive") && strcmp(lab, "negative")) {
            gs_error_set("%s:%d: label \"%.64s\" is neither positive nor negative", path, line,
                         lab);
            goto close_file;
        }
        if (!fields[col_slide][0]) {
            gs_error_set("%s:%d: empty slide path", path, line);
            goto close_file;
        }
        char *slide = resolve(dir, fields[col_slide]);
        if (!slide) {
            gs_error_set("out of memory");
            goto close_file;
        }
        for (size_t i = 0; i < out->n; i++)
            if (!strcmp(out->rows[i].slide, slide)) {
                gs_error_set("%s:%d: slide %s is listed twice", path, line, slide);
                free(slide);
                goto close_file;
            }
        if (out->n == out->cap) {
            size_t cap = out->cap ? 2 * out->cap : 64;
            gs_label *grown = realloc(out->rows, cap * sizeof *grown);
            if (!grown) {
                gs_error_set("out of memory");
                goto close_file;
            }
            out->rows = grown;
            out->cap = cap;
        }
        gs_label *r = &out->rows[out->n];
        memset(r, 0, sizeof *r);
        r->slide = slide;
        r->patient = strdup(fields[col_patient]);
        out->n++;
        if (!r->patient) {
            gs_error_set("out of memory");
            goto close_file;
        }
        r->positive = !strcmp(lab, "positive");
        /* The annotation: the column's, else --annotations DIR/<slide stem>.geojson if it is
         * there. */
        if (col_ann >= 0 && n > col_ann && fields[col_ann][0]) {
            if (!(r->annotation = resolve(dir, fields[col_ann]))) {
                gs_error_set("out of memory");
                goto close_file;
            }
        } else if (ann_dir) {
            char stem[MAX_FIELD], cand[PATH_MAX + MAX_FIELD];
            const char *base = strrchr(slide, '/');
            snprintf(stem, sizeof stem, "%s", base ? base + 1 : slide);
            char *dot = strrchr(stem, '.');
            if (dot && dot != stem)
                *dot = '\0';
            snprintf(cand, sizeof cand, "%s/%s.geojson", ann_dir, stem);
            if (access(cand, R_OK) == 0 && !(r->annotation = strdup(cand))) {
                gs_error_set("out of memory");
                goto close_file;
            }
        }
        out->annotations |= r->annotation != NULL;
    }
    if (n < 0)
        goto close_file;
    if (out->n == 0) {
        gs_error_set("%s: no slides below the header", path);
        goto close_file;
    }
    rc = 0;
close_file:
    free(fields);
    fclose(f);
    if (rc != 0)
        gs_labels_free(out);
    return rc;
}

int gs_csv_field(const char *v, char *out, size_t cap)
{
    int quote = strpbrk(v, ",\"\n\r") != NULL;
    size_t need = strlen(v) + 1 + (quote ? 2 : 0);
    for (const char *p = v; quote && *p; p++)
        need += *p == '"';
    if (need > cap)
        return gs_error_set("a CSV field of %zu bytes does not fit in %zu", need, cap);
    size_t n = 0;
    if (quote)
        out[n++] = '"';
    for (const char *p = v; *p; p++) {
        if (*p == '"')
            out[n++] = '"';
        out[n++] = *p;
    }
    if (quote)
        out[n++] = '"';
    out[n] = '\0';
    return 0;
}
