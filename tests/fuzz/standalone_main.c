/*
 * standalone_main: the main() every fuzz target gets when it is not built with libFuzzer
 * (tests/cmake/fuzz.cmake, GS_FUZZ off: the gcc release build). It runs every file named on
 * the command line, or found in a named directory, once through LLVMFuzzerTestOneInput, so
 * each target compiles in every build and its seed corpus (including the reproducers of
 * every fixed crash) is replayed as a regression test. It fails when nothing ran: an empty
 * corpus would otherwise pass without testing anything.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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
    if (!buf) {
        fclose(f);
        fprintf(stderr, "%s: out of memory\n", path);
        return -1;
    }
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
    return ran > 0 ? 0 : 1;
}
