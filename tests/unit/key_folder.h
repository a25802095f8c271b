/*
 * key_folder: a keys folder for tests of CURVE sockets (stages/runtime/keys): a temporary
 * folder with a coordinator key pair and, listed, worker "blur1" (roles blur), worker "tiler1"
 * (roles tiler), client "alice" and announcer "scanner"; an unlisted pair "mallory" waits in
 * DIR/spare. Every helper fails the test on error.
 */
#ifndef GS_TESTS_UNIT_KEY_FOLDER_H
#define GS_TESTS_UNIT_KEY_FOLDER_H

#include <stddef.h>
#include <sys/types.h>

#include "stages/runtime/transport.h"

typedef struct {
    char *dir;
    char workers[256], clients[256], announcers[256];
    char coord_pub[41], coord_sec[41];
} keys_folder;

/* A key pair read from DIR/NAME.key, as a client of the server key `server`. */
typedef struct {
    char pub[41], sec[41], server[41];
    gs_curve_keys keys;
} client_keys;

/* A new temporary folder (caller frees the string and removes it with rm_rf). */
char *make_dir(void);
void rm_rf(const char *d);
/* mkdir DIR/SUB (0755), path into out. */
void sub_dir(const char *dir, const char *sub, char *out, size_t n);
void write_text(const char *path, const char *text, mode_t mode);

void make_folder(keys_folder *k);
void free_folder(keys_folder *k);
void load_client(client_keys *c, const char *dir, const char *name, const char *server);

#endif
