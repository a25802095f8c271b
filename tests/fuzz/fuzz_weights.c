/*
 * Fuzz target for model/weights: any byte string given to gs_weights_open_buffer must either
 * be rejected with a message naming the input, or yield tensors that can all be read back
 * through gs_weights_get_f32 without touching memory outside the input (ASan checks that,
 * since open_buffer reads from its own exact-size copy).
 *
 * Built with -fsanitize=fuzzer when GS_FUZZ is on; otherwise GS_FUZZ_STANDALONE adds a main()
 * that runs every file named on the command line (or found in a named directory) once, so the
 * target compiles and the seed corpus is replayed in every build.
 */
#include "model/weights.h"
#include "ops/error.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void read_every_tensor(const gs_weights *w)
{
    size_t n = gs_weights_count(w);
    for (size_t i = 0; i < n; i++) {
        const gs_tensor *t = gs_weights_at(w, i);
        GS_ASSERT(t->name && t->name[0]);
        GS_ASSERT(gs_weights_find(w, t->name) == t);
        GS_ASSERT(t->ndim >= 0 && t->ndim <= GS_WEIGHTS_MAX_DIMS);
        size_t esize = gs_dtype_size(t->dtype);
        GS_ASSERT(t->nbytes % esize == 0);
        size_t count = t->nbytes / esize;
        float *dst = malloc(count ? count * sizeof *dst : 1);
        GS_ASSERT(dst);
        GS_ASSERT(gs_weights_get_f32(w, t->name, t->ndim, t->shape, dst) == 0);
        /* A wrong rank must be refused, not read. */
        if (t->ndim < GS_WEIGHTS_MAX_DIMS) {
            int64_t longer[GS_WEIGHTS_MAX_DIMS] = {0};
            memcpy(longer, t->shape, (size_t)t->ndim * sizeof longer[0]);
            longer[t->ndim] = 1;
            GS_ASSERT(gs_weights_get_f32(w, t->name, t->ndim + 1, longer, dst) == -1);
        }
        free(dst);
    }
    size_t m = gs_weights_meta_count(w);
    for (size_t i = 0; i < m; i++) {
        const char *key, *value;
        gs_weights_meta_at(w, i, &key, &value);
        GS_ASSERT(gs_weights_meta(w, key) == value);
    }
    if (gs_weights_check_bundle(w) != 0)
        GS_ASSERT(strncmp(gs_error_get(), "fuzz: ", 6) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gs_weights *w = gs_weights_open_buffer(data, size, "fuzz");
    if (!w) {
        GS_ASSERT(strncmp(gs_error_get(), "fuzz: ", 6) == 0);
        return 0;
    }
    read_every_tensor(w);
    gs_weights_destroy(&w);
    GS_ASSERT(w == NULL);
    return 0;
}

#ifdef GS_FUZZ_STANDALONE
#include <dirent.h>
#include <stdio.h>
#include <sys/stat.h>

/* Runs one file through the target; returns 1 if it was run, 0 if skipped, -1 on I/O error. */
static int run_file(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
        return 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return -1;
    }
    size_t len = (size_t)st.st_size;
    uint8_t *buf = malloc(len ? len : 1);
    GS_ASSERT(buf);
    int rc = fread(buf, 1, len, f) == len ? 1 : -1;
    fclose(f);
    if (rc == 1)
        LLVMFuzzerTestOneInput(buf, len);
    else
        fprintf(stderr, "%s: short read\n", path);
    free(buf);
    return rc;
}

int main(int argc, char **argv)
{
    size_t ran = 0;
    for (int i = 1; i < argc; i++) {
        DIR *d = opendir(argv[i]);
        if (!d) {
            int rc = run_file(argv[i]);
            if (rc < 0)
                return 1;
            ran += (size_t)rc;
            continue;
        }
        struct dirent *de;
        while ((de = readdir(d))) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", argv[i], de->d_name);
            int rc = run_file(path);
            if (rc < 0) {
                closedir(d);
                return 1;
            }
            ran += (size_t)rc;
        }
        closedir(d);
    }
    printf("%s: ran %zu inputs\n", argv[0], ran);
    /* An empty corpus would make this test pass without testing anything. */
    return ran > 0 ? 0 : 1;
}
#endif
