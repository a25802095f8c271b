/*
 * fuzz_util: what the fuzz targets share: one scratch folder per process (made on first use
 * under $TMPDIR, else /dev/shm or /tmp, removed with everything in it at exit) so that no input
 * can make a target write anywhere else, and writing an input into a file there for readers
 * that take a path.
 *
 *     const char *p = fuzz_write_input("in.ini", data, size);   // "<scratch>/in.ini"
 */
#ifndef GS_TESTS_FUZZ_FUZZ_UTIL_H
#define GS_TESTS_FUZZ_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* The scratch folder (process-owned; aborts when it cannot be made). */
const char *fuzz_scratch(void);

/* Writes data to <scratch>/name (replacing it) and returns that path (a static buffer, valid
 * until the next call). Aborts on an I/O error: that is the harness failing, not the code. */
const char *fuzz_write_input(const char *name, const uint8_t *data, size_t size);

#endif
