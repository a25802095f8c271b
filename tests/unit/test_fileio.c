/* fileio: mkdir -p of nested, existing and impossible paths; atomic writes that create,
 * replace, apply the mode exactly and leave no temporary file, and that leave the old file
 * alone when they fail (a rename onto a folder, the file size limit); whole-file reads with a
 * cap and errors naming the file; writes to /dev/full returning ENOSPC; the clocks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ops/error.h"
#include "stages/runtime/fileio.h"

static char root[64];

static int setup(void **state)
{
    (void)state;
    snprintf(root, sizeof root, "/tmp/gs_test_fileio_XXXXXX");
    return mkdtemp(root) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    return system(cmd) == 0 ? 0 : -1;
}

static void path_of(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", root, name);
}

/* How many entries folder dir holds besides "." and "..", counting only names that contain
 * `containing` when it is not NULL. */
static int count_entries(const char *dir, const char *containing)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0 &&
            (!containing || strstr(e->d_name, containing)))
            n++;
    closedir(d);
    return n;
}

static void mkdir_p_makes_nested_and_accepts_existing(void **state)
{
    (void)state;
    char p[256];
    path_of(p, sizeof p, "a/b/c");
    assert_int_equal(gs_mkdir_p(p, 0750), 0);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    /* Again, and with a trailing slash and a doubled one: nothing to do. */
    assert_int_equal(gs_mkdir_p(p, 0750), 0);
    path_of(p, sizeof p, "a//b/c/");
    assert_int_equal(gs_mkdir_p(p, 0750), 0);
    path_of(p, sizeof p, "a/b/d/");
    assert_int_equal(gs_mkdir_p(p, 0750), 0);
    path_of(p, sizeof p, "a/b/d");
    assert_int_equal(stat(p, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
}

static void mkdir_p_through_a_file_names_it(void **state)
{
    (void)state;
    char file[256], p[300];
    path_of(file, sizeof file, "plain");
    assert_int_equal(gs_write_atomic(file, "x", 1, 0644), 0);
    /* A folder under a regular file cannot be made, even by root. */
    snprintf(p, sizeof p, "%s/sub/deeper", file);
    gs_error_clear();
    assert_int_equal(gs_mkdir_p(p, 0750), -1);
    assert_non_null(strstr(gs_error_get(), "plain/sub"));
    assert_non_null(strstr(gs_error_get(), strerror(ENOTDIR)));
    /* The file itself is not a folder either. */
    assert_int_equal(gs_mkdir_p(file, 0750), -1);
    assert_non_null(strstr(gs_error_get(), file));
    assert_int_equal(gs_mkdir_p("", 0750), -1);
}

static void write_atomic_creates_and_replaces(void **state)
{
    (void)state;
    char dir[256], p[300];
    path_of(dir, sizeof dir, "atomic");
    assert_int_equal(gs_mkdir_p(dir, 0750), 0);
    snprintf(p, sizeof p, "%s/report.json", dir);
    assert_int_equal(gs_write_atomic(p, "first version", 13, 0644), 0);
    size_t n = 0;
    uint8_t *buf = gs_read_file(p, 1024, &n);
    assert_non_null(buf);
    assert_int_equal(n, 13);
    assert_string_equal((char *)buf, "first version");
    free(buf);

    /* The mode is applied exactly, whatever the umask. */
    mode_t old_mask = umask(077);
    assert_int_equal(gs_write_atomic(p, "v2", 2, 0644), 0);
    umask(old_mask);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0644);
    buf = gs_read_file(p, 1024, &n);
    assert_non_null(buf);
    assert_int_equal(n, 2);
    assert_memory_equal(buf, "v2", 2);
    free(buf);
    /* An empty file is a file. */
    assert_int_equal(gs_write_atomic(p, NULL, 0, 0600), 0);
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_size, 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    /* No temporary file is left beside it. */
    assert_int_equal(count_entries(dir, NULL), 1);
    assert_int_equal(count_entries(dir, GS_TMP_SUFFIX), 0);
}

static void write_atomic_failure_keeps_the_old_file(void **state)
{
    (void)state;
    char dir[256], p[300];
    path_of(dir, sizeof dir, "keep");
    assert_int_equal(gs_mkdir_p(dir, 0750), 0);

    /* A missing folder: the message names the path and the cause. */
    snprintf(p, sizeof p, "%s/missing/file", dir);
    gs_error_clear();
    assert_int_equal(gs_write_atomic(p, "x", 1, 0644), -1);
    assert_non_null(strstr(gs_error_get(), p));
    assert_non_null(strstr(gs_error_get(), strerror(ENOENT)));

    /* The rename fails (the target is a folder that is not empty): the temporary goes. */
    snprintf(p, sizeof p, "%s/target", dir);
    char inner[400];
    snprintf(inner, sizeof inner, "%s/inner", p);
    assert_int_equal(gs_mkdir_p(inner, 0750), 0);
    assert_int_equal(gs_write_atomic(p, "x", 1, 0644), -1);
    assert_non_null(strstr(gs_error_get(), p));
    assert_int_equal(count_entries(dir, GS_TMP_SUFFIX), 0);

    /* The write fails halfway (the file size limit, as a full disk would): the old file
     * stays as it was and no temporary is left. */
    snprintf(p, sizeof p, "%s/old.json", dir);
    assert_int_equal(gs_write_atomic(p, "old content", 11, 0644), 0);
    static uint8_t big[64 * 1024];
    memset(big, 'n', sizeof big);
    struct rlimit saved, small = {.rlim_cur = 4096};
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &saved), 0);
    small.rlim_max = saved.rlim_max;
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
    gs_error_clear();
    int rc = gs_write_atomic(p, big, sizeof big, 0644);
    int e = errno;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &saved), 0);
    signal(SIGXFSZ, old_handler);
    assert_int_equal(rc, -1);
    assert_int_equal(e, EFBIG);
    assert_non_null(strstr(gs_error_get(), strerror(EFBIG)));
    assert_non_null(strstr(gs_error_get(), "old.json"));
    size_t n = 0;
    uint8_t *buf = gs_read_file(p, 1024, &n);
    assert_non_null(buf);
    assert_int_equal(n, 11);
    assert_memory_equal(buf, "old content", 11);
    free(buf);
    assert_int_equal(count_entries(dir, GS_TMP_SUFFIX), 0);
}

static void write_all_to_dev_full_is_enospc(void **state)
{
    (void)state;
    int fd = open("/dev/full", O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        skip();
    gs_error_clear();
    assert_int_equal(gs_write_all(fd, "record", 6, "/dev/full"), -1);
    assert_int_equal(errno, ENOSPC);
    assert_non_null(strstr(gs_error_get(), "/dev/full"));
    assert_non_null(strstr(gs_error_get(), strerror(ENOSPC)));
    close(fd);
}

static void read_file_errors_name_the_file(void **state)
{
    (void)state;
    char p[256];
    path_of(p, sizeof p, "no-such-file.json");
    size_t n = 99;
    gs_error_clear();
    assert_null(gs_read_file(p, 1024, &n));
    assert_int_equal(errno, ENOENT);
    assert_non_null(strstr(gs_error_get(), p));
    assert_non_null(strstr(gs_error_get(), strerror(ENOENT)));

    /* The cap: exactly max_len bytes is fine, one more is refused. */
    path_of(p, sizeof p, "ten");
    assert_int_equal(gs_write_atomic(p, "0123456789", 10, 0644), 0);
    uint8_t *buf = gs_read_file(p, 10, &n);
    assert_non_null(buf);
    assert_int_equal(n, 10);
    assert_int_equal(buf[10], 0);
    free(buf);
    assert_null(gs_read_file(p, 9, &n));
    assert_int_equal(errno, EFBIG);
    assert_non_null(strstr(gs_error_get(), p));

    /* An empty file reads as zero bytes; a folder is an error. */
    path_of(p, sizeof p, "empty");
    assert_int_equal(gs_write_atomic(p, "", 0, 0644), 0);
    buf = gs_read_file(p, 10, &n);
    assert_non_null(buf);
    assert_int_equal(n, 0);
    free(buf);
    assert_null(gs_read_file(root, 10, &n));
    assert_non_null(strstr(gs_error_get(), root));

    /* A file whose size stat does not know (/proc) is read to its end. */
    buf = gs_read_file("/proc/self/status", 1 << 20, &n);
    assert_non_null(buf);
    assert_true(n > 0);
    assert_non_null(strstr((char *)buf, "Name:"));
    free(buf);
}

static void fsync_parent_of_files(void **state)
{
    (void)state;
    char p[256];
    path_of(p, sizeof p, "any-file");
    assert_int_equal(gs_fsync_parent(p), 0);
    assert_int_equal(gs_fsync_parent("relative-name"), 0);
    path_of(p, sizeof p, "missing-folder/file");
    assert_int_equal(gs_fsync_parent(p), -1);
    assert_non_null(strstr(gs_error_get(), "missing-folder"));
}

static void clocks_agree(void **state)
{
    (void)state;
    int64_t ms = gs_mono_ms(), us = gs_mono_us(), ns = gs_mono_ns();
    assert_true(ms <= us / 1000);
    assert_true(us <= ns / 1000);
    assert_true(gs_mono_ms() >= ms);
    /* The wall clock is the one time() reads (a second of slack for the tick between). */
    time_t before = time(NULL);
    int64_t unix_ms = gs_unix_ms();
    time_t after = time(NULL);
    assert_true(unix_ms / 1000 >= (int64_t)before - 1);
    assert_true(unix_ms / 1000 <= (int64_t)after);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(mkdir_p_makes_nested_and_accepts_existing),
        cmocka_unit_test(mkdir_p_through_a_file_names_it),
        cmocka_unit_test(write_atomic_creates_and_replaces),
        cmocka_unit_test(write_atomic_failure_keeps_the_old_file),
        cmocka_unit_test(write_all_to_dev_full_is_enospc),
        cmocka_unit_test(read_file_errors_name_the_file),
        cmocka_unit_test(fsync_parent_of_files),
        cmocka_unit_test(clocks_agree),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
