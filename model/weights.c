#include "model/weights.h"

#include "ops/error.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct gs_weights {
    char *name; /* the path or the caller's name: first word of every message */
    const uint8_t *bytes;
    size_t len;
    bool mapped; /* munmap when true, free when false */
    /* Kept alive for the object's whole life: tensor names and metadata strings point into
       it, which saves copying a few hundred strings. */
    json_t *header;
    json_t *meta; /* borrowed from header; NULL when the file has no __metadata__ */
    gs_tensor *tensors;
    size_t count;
    size_t *by_name; /* indices into tensors, sorted by name, for bsearch */
};

/* Every gastroscreen bundle must carry these (model/FORMAT.md, "Metadata"). */
static const char *const required_meta[] = {
    "format",
    "format_version",
    "input_colour",
    "input_mean",
    "input_std",
    "target_mpp",
    "tile_size",
    "topk",
    "threshold.screen",
    "threshold.blur",
    "threshold.foreground",
    "activation",
    "bn_eps",
    "provenance.multitask",
    "provenance.foreground",
    "provenance.blur",
    "provenance.screener",
    "created",
    "creator",
};

const char *gs_dtype_name(gs_dtype dtype)
{
    switch (dtype) {
    case GS_DTYPE_F32:
        return "F32";
    case GS_DTYPE_F16:
        return "F16";
    case GS_DTYPE_BF16:
        return "BF16";
    }
    GS_ASSERT(!"unknown gs_dtype");
    return NULL;
}

size_t gs_dtype_size(gs_dtype dtype)
{
    switch (dtype) {
    case GS_DTYPE_F32:
        return 4;
    case GS_DTYPE_F16:
    case GS_DTYPE_BF16:
        return 2;
    }
    GS_ASSERT(!"unknown gs_dtype");
    return 0;
}

static int parse_dtype(const char *s, gs_dtype *out)
{
    static const gs_dtype all[] = {GS_DTYPE_F32, GS_DTYPE_F16, GS_DTYPE_BF16};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        if (strcmp(s, gs_dtype_name(all[i])) == 0) {
            *out = all[i];
            return 0;
        }
    }
    return -1;
}

/* Writes "[a,b,c]" into buf (truncated if it must be). */
static void format_shape(char *buf, size_t size, int ndim, const int64_t *shape)
{
    size_t used = 0;
    int n = snprintf(buf, size, "[");
    for (int i = 0; i < ndim && n >= 0; i++) {
        used += (size_t)n;
        if (used >= size)
            return;
        n = snprintf(buf + used, size - used, "%s%lld", i ? "," : "", (long long)shape[i]);
    }
    if (n < 0)
        return;
    used += (size_t)n;
    if (used < size)
        snprintf(buf + used, size - used, "]");
}

/* Little-endian loads from possibly unaligned bytes: the data section starts at 8 + N, and N
   is whatever the writer chose, so nothing here may be read through a float pointer. */
static uint32_t load_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint16_t load_le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static float bits_to_float(uint32_t bits)
{
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* IEEE binary16 -> binary32 bit pattern; every half value is exactly representable. */
static uint32_t half_to_single_bits(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    if (exp == 0x1f) /* inf, or NaN with its payload kept */
        return sign | 0xff << 23 | mant << 13;
    if (exp != 0)
        return sign | (exp - 15 + 127) << 23 | mant << 13;
    if (mant == 0)
        return sign;
    /* Subnormal: mant * 2^-24. Shift until the implicit bit appears; each shift halves the
       exponent the value would have as a normal number. */
    int e = -14;
    while (!(mant & 0x400)) {
        mant <<= 1;
        e--;
    }
    return sign | (uint32_t)(e + 127) << 23 | (mant & 0x3ff) << 13;
}

void gs_weights_to_f32(gs_dtype dtype, const void *src, size_t count, float *dst)
{
    const uint8_t *p = src;
    switch (dtype) {
    case GS_DTYPE_F32:
        for (size_t i = 0; i < count; i++)
            dst[i] = bits_to_float(load_le32(p + 4 * i));
        return;
    case GS_DTYPE_F16:
        for (size_t i = 0; i < count; i++)
            dst[i] = bits_to_float(half_to_single_bits(load_le16(p + 2 * i)));
        return;
    case GS_DTYPE_BF16:
        /* bfloat16 is the top half of a binary32. */
        for (size_t i = 0; i < count; i++)
            dst[i] = bits_to_float((uint32_t)load_le16(p + 2 * i) << 16);
        return;
    }
    GS_ASSERT(!"unknown gs_dtype");
}

/* ---- header validation ------------------------------------------------------------------ */

/* The header entry being parsed, with the bits needed to check coverage afterwards. */
typedef struct {
    gs_tensor t;
    uint64_t begin, end; /* relative to the start of the data section */
    size_t order;        /* header position, to keep sorting stable */
} entry;

static int parse_shape(const char *tname, json_t *jshape, gs_tensor *t)
{
    if (!json_is_array(jshape))
        return gs_error_set("tensor %s: shape is not an array", tname);
    size_t n = json_array_size(jshape);
    if (n > GS_WEIGHTS_MAX_DIMS)
        return gs_error_set("tensor %s: shape has %zu dimensions, more than %d", tname, n,
                            GS_WEIGHTS_MAX_DIMS);
    t->ndim = (int)n;
    for (size_t i = 0; i < n; i++) {
        json_t *d = json_array_get(jshape, i);
        if (!json_is_integer(d))
            return gs_error_set("tensor %s: shape[%zu] is not an integer", tname, i);
        json_int_t v = json_integer_value(d);
        if (v < 0)
            return gs_error_set("tensor %s: shape[%zu] is negative (%lld)", tname, i, (long long)v);
        t->shape[i] = (int64_t)v;
    }
    /* The byte count must fit a size_t (and an int64 for offsets), or a later product would
       wrap and a tiny data range would pass for a huge tensor. */
    uint64_t nbytes = gs_dtype_size(t->dtype);
    for (int i = 0; i < t->ndim; i++) {
        if (__builtin_mul_overflow(nbytes, (uint64_t)t->shape[i], &nbytes) ||
            nbytes > (uint64_t)INT64_MAX || nbytes > (uint64_t)SIZE_MAX) {
            char s[256];
            format_shape(s, sizeof s, t->ndim, t->shape);
            return gs_error_set("tensor %s: shape %s of %s overflows the byte count", tname, s,
                                gs_dtype_name(t->dtype));
        }
    }
    t->nbytes = (size_t)nbytes;
    return 0;
}

static int parse_offsets(const char *tname, json_t *joff, uint64_t data_len, entry *e)
{
    json_t *jb = json_array_get(joff, 0), *je = json_array_get(joff, 1);
    if (!json_is_array(joff) || json_array_size(joff) != 2 || !json_is_integer(jb) ||
        !json_is_integer(je))
        return gs_error_set("tensor %s: data_offsets is not [begin,end] with two integers", tname);
    json_int_t b = json_integer_value(jb), en = json_integer_value(je);
    if (b < 0 || en < 0)
        return gs_error_set("tensor %s: data_offsets [%lld,%lld] has a negative offset", tname,
                            (long long)b, (long long)en);
    if (b > en)
        return gs_error_set("tensor %s: data_offsets [%lld,%lld] has begin > end", tname,
                            (long long)b, (long long)en);
    if ((uint64_t)en > data_len)
        return gs_error_set("tensor %s: data_offsets [%lld,%lld] end beyond the data section "
                            "(%llu bytes)",
                            tname, (long long)b, (long long)en, (unsigned long long)data_len);
    if ((uint64_t)(en - b) != e->t.nbytes) {
        char s[256];
        format_shape(s, sizeof s, e->t.ndim, e->t.shape);
        return gs_error_set("tensor %s: data_offsets [%lld,%lld] hold %llu bytes but shape %s "
                            "of %s needs %zu (size mismatch)",
                            tname, (long long)b, (long long)en, (unsigned long long)(en - b), s,
                            gs_dtype_name(e->t.dtype), e->t.nbytes);
    }
    e->begin = (uint64_t)b;
    e->end = (uint64_t)en;
    return 0;
}

static int parse_entry(const char *tname, json_t *jt, uint64_t data_len, entry *e)
{
    if (tname[0] == '\0')
        return gs_error_set("a tensor has an empty name");
    if (!json_is_object(jt))
        return gs_error_set("tensor %s: entry is not an object", tname);
    json_t *jdtype = json_object_get(jt, "dtype");
    json_t *jshape = json_object_get(jt, "shape");
    json_t *joff = json_object_get(jt, "data_offsets");
    if (!jdtype)
        return gs_error_set("tensor %s: missing dtype", tname);
    if (!jshape)
        return gs_error_set("tensor %s: missing shape", tname);
    if (!joff)
        return gs_error_set("tensor %s: missing data_offsets", tname);
    if (!json_is_string(jdtype))
        return gs_error_set("tensor %s: dtype is not a string", tname);
    if (parse_dtype(json_string_value(jdtype), &e->t.dtype) != 0)
        return gs_error_set("tensor %s: unknown dtype \"%s\" (this format allows only F32, "
                            "F16, BF16)",
                            tname, json_string_value(jdtype));
    if (parse_shape(tname, jshape, &e->t) != 0)
        return -1;
    if (parse_offsets(tname, joff, data_len, e) != 0)
        return -1;
    e->t.name = tname;
    return 0;
}

static int check_metadata(json_t *meta)
{
    if (!json_is_object(meta))
        return gs_error_set("__metadata__ is not an object");
    const char *key;
    json_t *value;
    json_object_foreach(meta, key, value)
    {
        if (!json_is_string(value))
            return gs_error_set("__metadata__ key \"%s\": value is not a string", key);
    }
    return 0;
}

static int compare_by_begin(const void *pa, const void *pb)
{
    const entry *a = pa, *b = pb;
    if (a->begin != b->begin)
        return a->begin < b->begin ? -1 : 1;
    /* Zero-byte tensors share their begin with the next one: put them first, in header
       order, so the contiguity walk below sees each range once. */
    if (a->end != b->end)
        return a->end < b->end ? -1 : 1;
    return a->order < b->order ? -1 : a->order > b->order;
}

/* The data section must be exactly the concatenation of the tensors: a gap is bytes nobody
   accounts for (a truncated or spliced file), an overlap lets two tensors alias. */
static int check_coverage(const entry *sorted, size_t n, uint64_t data_len)
{
    uint64_t pos = 0;
    const char *prev = NULL;
    for (size_t i = 0; i < n; i++) {
        const entry *e = &sorted[i];
        if (e->begin > pos) {
            if (!prev)
                return gs_error_set("gap of %llu bytes at the start of the data section, "
                                    "before tensor %s",
                                    (unsigned long long)e->begin, e->t.name);
            return gs_error_set("gap of %llu bytes between tensor %s (ends at %llu) and "
                                "tensor %s (begins at %llu)",
                                (unsigned long long)(e->begin - pos), prev, (unsigned long long)pos,
                                e->t.name, (unsigned long long)e->begin);
        }
        if (e->begin < pos)
            return gs_error_set("tensors %s and %s overlap (%s ends at %llu, %s begins at %llu)",
                                prev, e->t.name, prev, (unsigned long long)pos, e->t.name,
                                (unsigned long long)e->begin);
        pos = e->end;
        prev = e->t.name;
    }
    if (pos != data_len) {
        if (!prev)
            return gs_error_set("gap: data section has %llu bytes but no tensors",
                                (unsigned long long)data_len);
        return gs_error_set("gap of %llu bytes after the last tensor %s (data section ends at "
                            "%llu)",
                            (unsigned long long)(data_len - pos), prev,
                            (unsigned long long)data_len);
    }
    return 0;
}

static int compare_by_name(const void *pa, const void *pb, void *ctx)
{
    const gs_tensor *t = ctx;
    return strcmp(t[*(const size_t *)pa].name, t[*(const size_t *)pb].name);
}

/* Parses and validates w->bytes[0..len), filling header, meta, tensors, by_name. On error
   returns -1 with the message (without the file name) set; the caller frees what was filled. */
static int parse(gs_weights *w)
{
    if (w->len < 8)
        return gs_error_set("file is %zu bytes, shorter than the 8-byte header length", w->len);
    uint64_t hlen = (uint64_t)load_le32(w->bytes) | (uint64_t)load_le32(w->bytes + 4) << 32;
    if (hlen == 0)
        return gs_error_set("header length is 0");
    if (hlen > GS_WEIGHTS_MAX_HEADER)
        return gs_error_set("header length %llu exceeds the cap of %d bytes",
                            (unsigned long long)hlen, GS_WEIGHTS_MAX_HEADER);
    if (hlen > w->len - 8)
        return gs_error_set("header length %llu runs beyond the end of the file (%zu bytes)",
                            (unsigned long long)hlen, w->len);
    const uint8_t *data = w->bytes + 8 + hlen;
    uint64_t data_len = w->len - 8 - hlen;

    json_error_t jerr;
    w->header = json_loadb((const char *)w->bytes + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!w->header)
        return gs_error_set("header is not valid JSON: %s (line %d, column %d)", jerr.text,
                            jerr.line, jerr.column);
    if (!json_is_object(w->header))
        return gs_error_set("header is not a JSON object");

    size_t n = json_object_size(w->header);
    w->meta = json_object_get(w->header, "__metadata__");
    if (w->meta) {
        if (check_metadata(w->meta) != 0)
            return -1;
        n--;
    }

    entry *entries = calloc(n ? n : 1, sizeof *entries);
    if (!entries)
        return gs_error_set("out of memory for %zu tensor entries", n);
    int rc = -1;
    size_t k = 0;
    const char *key;
    json_t *value;
    json_object_foreach(w->header, key, value)
    {
        if (strcmp(key, "__metadata__") == 0)
            continue;
        GS_ASSERT(k < n);
        entries[k].order = k;
        if (parse_entry(key, value, data_len, &entries[k]) != 0)
            goto free_entries;
        k++;
    }
    GS_ASSERT(k == n);
    qsort(entries, n, sizeof *entries, compare_by_begin);
    if (check_coverage(entries, n, data_len) != 0)
        goto free_entries;

    w->tensors = calloc(n ? n : 1, sizeof *w->tensors);
    w->by_name = calloc(n ? n : 1, sizeof *w->by_name);
    if (!w->tensors || !w->by_name) {
        gs_error_set("out of memory for %zu tensors", n);
        goto free_entries;
    }
    for (size_t i = 0; i < n; i++) {
        w->tensors[i] = entries[i].t;
        w->tensors[i].data = data + entries[i].begin;
        w->by_name[i] = i;
    }
    w->count = n;
    /* Names are unique (JSON_REJECT_DUPLICATES), so the order is total. */
    qsort_r(w->by_name, n, sizeof *w->by_name, compare_by_name, w->tensors);
    rc = 0;

free_entries:
    free(entries);
    return rc;
}

static gs_weights *weights_new(const char *name)
{
    gs_weights *w = calloc(1, sizeof *w);
    if (!w) {
        gs_error_set("%s: out of memory", name);
        return NULL;
    }
    w->name = strdup(name);
    if (!w->name) {
        free(w);
        gs_error_set("%s: out of memory", name);
        return NULL;
    }
    return w;
}

void gs_weights_destroy(gs_weights **pw)
{
    if (!pw || !*pw)
        return;
    gs_weights *w = *pw;
    free(w->by_name);
    free(w->tensors);
    json_decref(w->header);
    if (w->mapped)
        munmap((void *)w->bytes, w->len);
    else
        free((void *)w->bytes);
    free(w->name);
    free(w);
    *pw = NULL;
}

gs_weights *gs_weights_open_buffer(const void *buf, size_t len, const char *name)
{
    GS_ASSERT(buf || len == 0);
    GS_ASSERT(name);
    gs_weights *w = weights_new(name);
    if (!w)
        return NULL;
    /* Copied so the fuzzer's and tests' buffers may go away, and so that an overread shows up
       under ASan exactly at the end of the input. */
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy) {
        gs_error_set("%s: out of memory for %zu bytes", name, len);
        goto destroy_weights;
    }
    if (len)
        memcpy(copy, buf, len);
    w->bytes = copy;
    w->len = len;
    w->mapped = false;
    if (parse(w) != 0) {
        gs_error_prefix("%s", name);
        goto destroy_weights;
    }
    return w;

destroy_weights:
    gs_weights_destroy(&w);
    return NULL;
}

gs_weights *gs_weights_open(const char *path)
{
    GS_ASSERT(path);
    gs_weights *w = weights_new(path);
    if (!w)
        return NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        gs_error_set("%s: cannot open: %s", path, strerror(errno));
        goto destroy_weights;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        gs_error_set("%s: cannot stat: %s", path, strerror(errno));
        goto close_fd;
    }
    if (!S_ISREG(st.st_mode)) {
        gs_error_set("%s: not a regular file", path);
        goto close_fd;
    }
    if ((uint64_t)st.st_size < 8) {
        /* Checked before mapping because mmap refuses an empty file; same words as parse(). */
        gs_error_set("%s: file is %lld bytes, shorter than the 8-byte header length", path,
                     (long long)st.st_size);
        goto close_fd;
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        gs_error_set("%s: file too large to map", path);
        goto close_fd;
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        gs_error_set("%s: cannot map: %s", path, strerror(errno));
        goto close_fd;
    }
    w->bytes = map;
    w->len = (size_t)st.st_size;
    w->mapped = true;
    close(fd);
    if (parse(w) != 0) {
        gs_error_prefix("%s", path);
        goto destroy_weights;
    }
    return w;

close_fd:
    close(fd);
destroy_weights:
    gs_weights_destroy(&w);
    return NULL;
}

size_t gs_weights_count(const gs_weights *w)
{
    return w->count;
}

const gs_tensor *gs_weights_at(const gs_weights *w, size_t i)
{
    GS_ASSERT(i < w->count);
    return &w->tensors[i];
}

const gs_tensor *gs_weights_find(const gs_weights *w, const char *name)
{
    size_t lo = 0, hi = w->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const gs_tensor *t = &w->tensors[w->by_name[mid]];
        int c = strcmp(name, t->name);
        if (c == 0)
            return t;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

size_t gs_weights_count_prefix(const gs_weights *w, const char *prefix)
{
    size_t n = 0, plen = strlen(prefix);
    for (size_t i = 0; i < w->count; i++)
        n += strncmp(w->tensors[i].name, prefix, plen) == 0;
    return n;
}

const char *gs_weights_meta(const gs_weights *w, const char *key)
{
    if (!w->meta)
        return NULL;
    /* Validated at open: every value is a string. */
    return json_string_value(json_object_get(w->meta, key));
}

size_t gs_weights_meta_count(const gs_weights *w)
{
    return w->meta ? json_object_size(w->meta) : 0;
}

void gs_weights_meta_at(const gs_weights *w, size_t i, const char **key, const char **value)
{
    GS_ASSERT(i < gs_weights_meta_count(w));
    /* Linear walk: only used for listing, and jansson keeps insertion order. */
    size_t k = 0;
    const char *jkey;
    json_t *jvalue;
    json_object_foreach(w->meta, jkey, jvalue)
    {
        if (k++ == i) {
            *key = jkey;
            *value = json_string_value(jvalue);
            return;
        }
    }
    GS_ASSERT(!"metadata index beyond the object");
}

int gs_weights_check_bundle(const gs_weights *w)
{
    for (size_t i = 0; i < sizeof required_meta / sizeof required_meta[0]; i++) {
        if (!gs_weights_meta(w, required_meta[i]))
            return gs_error_set("%s: not a gastroscreen bundle: metadata key %s is missing",
                                w->name, required_meta[i]);
    }
    const char *format = gs_weights_meta(w, "format");
    if (strcmp(format, "gastroscreen-bundle") != 0)
        return gs_error_set("%s: not a gastroscreen bundle: format is \"%s\"", w->name, format);
    const char *version = gs_weights_meta(w, "format_version");
    if (strcmp(version, "1") != 0)
        return gs_error_set("%s: unsupported format_version \"%s\" (this build reads 1)", w->name,
                            version);
    return 0;
}

int gs_weights_get_f32(const gs_weights *w, const char *name, int ndim, const int64_t *shape,
                       float *dst)
{
    GS_ASSERT(ndim >= 0 && ndim <= GS_WEIGHTS_MAX_DIMS);
    const gs_tensor *t = gs_weights_find(w, name);
    if (!t)
        return gs_error_set("%s: tensor %s: missing", w->name, name);
    bool same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = t->shape[i] == shape[i];
    if (!same) {
        char got[256], want[256];
        format_shape(got, sizeof got, t->ndim, t->shape);
        format_shape(want, sizeof want, ndim, shape);
        return gs_error_set("%s: tensor %s: shape %s but expected %s", w->name, name, got, want);
    }
    gs_weights_to_f32(t->dtype, t->data, t->nbytes / gs_dtype_size(t->dtype), dst);
    return 0;
}

const char *gs_weights_name(const gs_weights *w)
{
    return w->name;
}

int gs_weights_write_with_meta(const gs_weights *w, const char *path, const char *drop_prefix,
                               const char *const *keys, const char *const *values, size_t n)
{
    json_t *root = json_object(), *meta = json_object();
    char *text = NULL, *tmp = NULL;
    FILE *f = NULL;
    int rc = -1;
    size_t plen = drop_prefix ? strlen(drop_prefix) : 0;
    if (!root || !meta) {
        gs_error_set("%s: out of memory", path);
        goto done;
    }
    for (size_t i = 0; i < gs_weights_meta_count(w); i++) {
        const char *k, *v;
        gs_weights_meta_at(w, i, &k, &v);
        if (plen && !strncmp(k, drop_prefix, plen))
            continue;
        if (json_object_set_new(meta, k, json_string(v))) {
            gs_error_set("%s: metadata %s: out of memory", path, k);
            goto done;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (json_object_get(meta, keys[i])) {
            gs_error_set("%s: metadata key %s written twice", path, keys[i]);
            goto done;
        }
        if (json_object_set_new(meta, keys[i], json_string(values[i]))) {
            gs_error_set("%s: metadata %s: out of memory", path, keys[i]);
            goto done;
        }
    }
    if (json_object_set(root, "__metadata__", meta))
        goto oom;
    /* File order: each tensor begins where the previous one ends. */
    size_t off = 0;
    for (size_t i = 0; i < w->count; i++) {
        const gs_tensor *t = &w->tensors[i];
        json_t *shape = json_array(), *e = NULL;
        for (int d = 0; shape && d < t->ndim; d++)
            if (json_array_append_new(shape, json_integer(t->shape[d])))
                goto oom_shape;
        e = shape ? json_pack("{s:s, s:O, s:[I,I]}", "dtype", gs_dtype_name(t->dtype), "shape",
                              shape, "data_offsets", (json_int_t)off, (json_int_t)(off + t->nbytes))
                  : NULL;
        json_decref(shape);
        if (!e || json_object_set_new(root, t->name, e))
            goto oom;
        off += t->nbytes;
        continue;
    oom_shape:
        json_decref(shape);
        goto oom;
    }
    text = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    if (!text)
        goto oom;
    size_t hlen = strlen(text), padded = (hlen + 7) / 8 * 8;
    tmp = malloc(strlen(path) + 5);
    if (!tmp)
        goto oom;
    sprintf(tmp, "%s.tmp", path);
    f = fopen(tmp, "wb");
    if (!f) {
        gs_error_set("%s: cannot create: %s", tmp, strerror(errno));
        goto done;
    }
    uint8_t le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    int ok = fwrite(le, 1, 8, f) == 8 && fwrite(text, 1, hlen, f) == hlen;
    for (size_t i = hlen; ok && i < padded; i++)
        ok = fputc(' ', f) != EOF;
    for (size_t i = 0; ok && i < w->count; i++)
        ok = fwrite(w->tensors[i].data, 1, w->tensors[i].nbytes, f) == w->tensors[i].nbytes;
    /* On disk before the rename, or a crash could leave an empty file under the final name. */
    if (ok && (fflush(f) != 0 || fsync(fileno(f)) != 0))
        ok = 0;
    if (fclose(f) != 0)
        ok = 0;
    f = NULL;
    if (!ok) {
        gs_error_set("%s: write failed: %s", tmp, strerror(errno));
        unlink(tmp);
        goto done;
    }
    if (rename(tmp, path) != 0) {
        gs_error_set("%s: cannot rename %s over it: %s", path, tmp, strerror(errno));
        unlink(tmp);
        goto done;
    }
    rc = 0;
    goto done;
oom:
    gs_error_set("%s: out of memory", path);
done:
    if (f)
        fclose(f);
    free(tmp);
    free(text);
    json_decref(meta);
    json_decref(root);
    return rc;
}
