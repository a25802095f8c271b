/*
 * labels: a lab's slide list with labels, LABELS.csv, as `eval` and `dataset` read it.
 *
 * RFC 4180 CSV: a header row, commas, fields in double quotes where they hold a comma, a quote
 * ("" inside quotes) or a line break. Columns by name, in any order: `slide` (the slide file; a
 * relative path is relative to the CSV's folder), `label` (`positive` or `negative`),
 * `patient` (an id; splits keep a patient's slides together), optional `annotation` (a QuPath
 * GeoJSON file, relative as `slide`); other columns are ignored. A slide without an
 * annotation entry takes ANN_DIR/<slide stem>.geojson when the caller gives ANN_DIR and that
 * file exists. Errors name the file and line: a missing column, a label other than the two, an
 * empty slide, a slide listed twice, a field over 4095 bytes.
 *
 *     gs_labels l;
 *     if (gs_labels_read("labels.csv", NULL, &l) != 0) ... gs_error_get() ...
 *     for (size_t i = 0; i < l.n; i++) use(l.rows[i].slide, l.rows[i].positive);
 *     gs_labels_free(&l);
 */
#ifndef GS_DAEMON_CLI_LABELS_H
#define GS_DAEMON_CLI_LABELS_H

#include <stddef.h>

typedef struct {
    char *slide;      /* resolved (absolute) when the file exists, else as written */
    char *patient;    /* may be "" */
    int positive;     /* 1 positive, 0 negative */
    char *annotation; /* resolved path, or NULL when the slide has none */
} gs_label;

typedef struct {
    gs_label *rows;
    size_t n, cap;
    int annotations; /* some slide has an annotation */
} gs_labels;

/* Reads the CSV at path into *out (ann_dir may be NULL). Returns 0 with at least one row, or
 * -1 with the error (then *out is empty). The caller frees with gs_labels_free. */
int gs_labels_read(const char *path, const char *ann_dir, gs_labels *out);
void gs_labels_free(gs_labels *l);

/* Writes v as one CSV field into out (cap bytes): as it is, or in double quotes with its quotes
 * doubled when it holds a comma, a quote or a line break, as the reader above reads it back.
 * Returns 0, or -1 with the error when out is too small. */
int gs_csv_field(const char *v, char *out, size_t cap);

#endif
