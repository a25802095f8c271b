/*
 * weights: the read-only, fully validated view of a model bundle (a safetensors file).
 *
 * A bundle holds the tensors of all four networks, named "<network>.<state_dict key>"
 * ("multitask.", "foreground.", "blur.", "screener."), plus string metadata (input
 * normalisation, tile size, thresholds, provenance); model/FORMAT.md is the contract.
 * gs_weights_open() maps the file read-only and checks the whole header (size cap, JSON with
 * duplicate keys rejected, dtypes, shapes, offsets covering the data section exactly) before
 * anything is handed out, so a network builder can trust every gs_tensor it gets and only has
 * to check that the shapes are the ones it expects, which gs_weights_get_f32() does while
 * converting to float.
 *
 * Usage:
 *     gs_weights *w = gs_weights_open("bundle.safetensors");
 *     if (!w) { fprintf(stderr, "%s\n", gs_error_get()); ... }
 *     const int64_t shape[2] = {1, 512};
 *     float fc[512];
 *     if (gs_weights_get_f32(w, "multitask.cls.fc.weight", 2, shape, fc) != 0) ...
 *     gs_weights_destroy(&w);
 *
 * A gs_weights is immutable after open, so any number of threads may read it at once.
 * Errors go through ops/error.h and always start with the file name.
 */
#ifndef GS_MODEL_WEIGHTS_H
#define GS_MODEL_WEIGHTS_H

#include <stddef.h>
#include <stdint.h>

typedef struct gs_weights gs_weights;

typedef enum { GS_DTYPE_F32, GS_DTYPE_F16, GS_DTYPE_BF16 } gs_dtype;

enum {
    GS_WEIGHTS_MAX_DIMS = 8,
    /* Cap on the JSON header: a real bundle's header is a few tens of KiB; this only stops a
       corrupt length from making us parse (or allocate for) gigabytes. */
    GS_WEIGHTS_MAX_HEADER = 100 * 1024 * 1024,
};

typedef struct {
    const char *name; /* owned by the gs_weights */
    gs_dtype dtype;
    int ndim;         /* 0..8; 0 is a scalar (one element) */
    int64_t shape[8]; /* entries past ndim are 0 */
    const void *data; /* inside the read-only mapping; valid until destroy; maybe unaligned */
    size_t nbytes;
} gs_tensor;

/* Opens `path`, maps it read-only (PROT_READ, MAP_PRIVATE) and validates the whole file.
   Returns a new gs_weights owned by the caller (free with gs_weights_destroy), or NULL with an
   error naming the file and the problem. */
gs_weights *gs_weights_open(const char *path);

/* Same as gs_weights_open over `len` bytes at `buf`. The bytes are COPIED, so the caller may
   free `buf` as soon as this returns. `name` (copied too) stands for the file in messages.
   Returns a new gs_weights or NULL with an error. */
gs_weights *gs_weights_open_buffer(const void *buf, size_t len, const char *name);

/* Unmaps / frees everything, including all names, tensors and metadata strings handed out,
   and sets *w to NULL. Accepts NULL and a pointer to NULL. */
void gs_weights_destroy(gs_weights **w);

/* Number of tensors in the file. */
size_t gs_weights_count(const gs_weights *w);

/* The i-th tensor in file order, i.e. by position of its data in the file (tensors of zero
   bytes that share a position keep their header order). i must be < count (asserted).
   The tensor is owned by w. */
const gs_tensor *gs_weights_at(const gs_weights *w, size_t i);

/* The tensor named `name`, owned by w, or NULL if there is none (no error is set). */
const gs_tensor *gs_weights_find(const gs_weights *w, const char *name);

/* Number of tensors whose name starts with `prefix` (e.g. "blur."): 0 means that network's
   weights are absent from the bundle. */
size_t gs_weights_count_prefix(const gs_weights *w, const char *prefix);

/* The __metadata__ value for `key` (owned by w), or NULL if the key is absent. */
const char *gs_weights_meta(const gs_weights *w, const char *key);

/* Number of metadata entries, and the i-th key/value in header order (i < count, asserted);
   both strings are owned by w. For listing a bundle's metadata. */
size_t gs_weights_meta_count(const gs_weights *w);
void gs_weights_meta_at(const gs_weights *w, size_t i, const char **key, const char **value);

/* The file name (or the buffer's name) the bundle was opened with; owned by w. */
const char *gs_weights_name(const gs_weights *w);

/* Writes a copy of w to `path`: every tensor byte for byte (same names, dtypes, shapes and
   data, in file order) and w's metadata, except keys starting with `drop_prefix` (NULL: none),
   followed by keys[0..n) = values[0..n) (which must not repeat a kept key). The header is
   written as compact JSON padded with spaces to a multiple of 8 bytes. The file is written to
   path + ".tmp" and renamed over path, so a failure never leaves a half-written bundle. Returns
   0, or -1 with an error naming the path. */
int gs_weights_write_with_meta(const gs_weights *w, const char *path, const char *drop_prefix,
                               const char *const *keys, const char *const *values, size_t n);

/* Checks the gastroscreen bundle contract of model/FORMAT.md on top of the safetensors rules:
   format is "gastroscreen-bundle", format_version is "1" and every required metadata key is
   present. Returns 0, or -1 with an error naming the file and the first missing or wrong key. */
int gs_weights_check_bundle(const gs_weights *w);

/* Looks up `name`, checks that it has exactly `ndim` dimensions equal to `shape`, and converts
   its elements into the caller-owned `dst` (room for the product of `shape` floats). F16 and
   BF16 widen to F32 exactly (subnormals, infinities, NaN payloads kept). Returns 0, or -1 with
   "<file>: tensor <name>: missing" or
   "<file>: tensor <name>: shape [1,256] but expected [1,512]"; dst is untouched on error. */
int gs_weights_get_f32(const gs_weights *w, const char *name, int ndim, const int64_t *shape,
                       float *dst);

/* Converts `count` little-endian elements of `dtype` at `src` (any alignment) to floats.
   Exposed so a caller holding a gs_tensor can convert slices of it. Never fails. */
void gs_weights_to_f32(gs_dtype dtype, const void *src, size_t count, float *dst);

/* "F32", "F16" or "BF16". Static string. */
const char *gs_dtype_name(gs_dtype dtype);

/* Bytes per element: 4, 2 or 2. */
size_t gs_dtype_size(gs_dtype dtype);

#endif
