/* key_folder: see key_folder.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "stages/runtime/keys.h"
#include "tests/unit/key_folder.h"

char *make_dir(void)
{
    char tmpl[] = "/tmp/gs-keys-XXXXXX";
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    return strdup(d);
}

void rm_rf(const char *d)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
    assert_int_equal(system(cmd), 0);
}

void sub_dir(const char *dir, const char *sub, char *out, size_t n)
{
    snprintf(out, n, "%s/%s", dir, sub);
    mkdir(out, 0755);
}

void write_text(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(path, mode), 0);
}

/* A keys folder with a coordinator pair and, listed: worker "blur1" (blur), worker "tiler1"
 * (tiler), client "alice", announcer "scanner". Unlisted pairs are written to dir/spare. */
void make_folder(keys_folder *k)
{
    memset(k, 0, sizeof *k);
    k->dir = make_dir();
    char pub[41], spare[256];
    sub_dir(k->dir, "workers", k->workers, sizeof k->workers);
    sub_dir(k->dir, "clients", k->clients, sizeof k->clients);
    sub_dir(k->dir, "announcers", k->announcers, sizeof k->announcers);
    sub_dir(k->dir, "spare", spare, sizeof spare);
    assert_int_equal(gs_key_write_pair(k->dir, "coordinator", NULL, k->coord_pub), 0);
    char path[512];
    snprintf(path, sizeof path, "%s/coordinator.key", k->dir);
    assert_int_equal(gs_key_read_secret(path, k->coord_sec, NULL), 0);
    assert_int_equal(gs_key_write_pair(k->workers, "blur1", "blur", pub), 0);
    assert_int_equal(gs_key_write_pair(k->workers, "tiler1", "tiler", pub), 0);
    assert_int_equal(gs_key_write_pair(k->clients, "alice", NULL, pub), 0);
    assert_int_equal(gs_key_write_pair(k->announcers, "scanner", NULL, pub), 0);
    assert_int_equal(gs_key_write_pair(spare, "mallory", NULL, pub), 0);
    /* Secrets do not belong in the listed folders; the keyring reads .pub files only. */
}

void free_folder(keys_folder *k)
{
    rm_rf(k->dir);
    free(k->dir);
}

/* The key pair NAME from DIR (NAME.key), as a client of the coordinator. */

void load_client(client_keys *c, const char *dir, const char *name, const char *server)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s.key", dir, name);
    assert_int_equal(gs_key_read_secret(path, c->sec, c->pub), 0);
    snprintf(c->server, sizeof c->server, "%s", server);
    c->keys = (gs_curve_keys){c->sec, c->pub, c->server};
}
