/*
 * uuid5: name-based UUIDs (RFC 4122 §4.3, version 5, SHA-1) for the features of the report's
 * GeoJSON files, so a region or a heat-map cell keeps its id when the same report is written
 * again and QuPath, which keys objects by their "id", sees the same object rather than a copy.
 *
 * The id of a feature is gs_uuid5(GS_UUID5_NAMESPACE, "<slide id>/region/<n>") (see
 * stages/slide/report_files for the names used). SHA-1 is computed here (RFC 3174) because no
 * library the project links offers it; it serves as a naming function, not for security.
 *
 * Use: char id[GS_UUID_STR]; gs_uuid5(GS_UUID5_NAMESPACE, "0123abcd.../region/1", id);
 */
#ifndef GS_STAGES_SLIDE_UUID5_H
#define GS_STAGES_SLIDE_UUID5_H

#include <stddef.h>
#include <stdint.h>

/* Bytes of a UUID string with its NUL: 8-4-4-4-12 lower-case hex digits. */
#define GS_UUID_STR 37

/* The namespace of every gastroscreen feature id, drawn once at random and fixed: changing it
 * changes every id already imported into a QuPath project. */
#define GS_UUID5_NAMESPACE "6789bdd7-0e14-42e2-a92a-f09e95af40f4"

/* SHA-1 (RFC 3174, Nettle) of `len` bytes at data; writes 20 bytes into digest. */
void gs_sha1(const void *data, size_t len, uint8_t digest[20]);

/* The version-5 UUID of name (a NUL-terminated UTF-8 string) in the namespace `ns` (a UUID
 * string, either case) as lower-case text into out. Returns 0, or -1 with the message set
 * when ns is not a UUID string. */
int gs_uuid5(const char *ns, const char *name, char out[GS_UUID_STR]);

#endif
