/*
 * keys: CURVE key files, the keys folder of the nodes allowed to connect, the ZAP handler
 * that admits only them, and the choice between CURVE and plain sockets (PROTOCOL.md §2).
 *
 * Key files hold Z85 text (40 characters for 32 bytes). NAME.pub holds the public key and,
 * for a worker, the stage roles it may take; NAME.key holds the secret key and must be
 * readable by its owner only (mode 0600: a secret file readable by group or others is
 * refused, never used). The format of both, '#' lines being comments:
 *
 *     node2.pub:  # gastroscreen public key node2
 *                 public = rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7
 *                 roles = blur infer
 *     node2.key:  # gastroscreen secret key node2
 *                 secret = JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6
 *
 * `roles` (worker keys only) lists stage names (tiler foreground blur infer screener
 * reporter); a worker key without the line may take no stage.
 *
 * The keys folder (default /etc/gastroscreen/keys) holds workers/NAME.pub (stage workers),
 * clients/NAME.pub (gastroscreen submit, status, watch, top) and announcers/NAME.pub (publishers of
 * slide.arrived. on the intake socket); a missing subfolder is an empty one. gs_keyring_load
 * reads it whole or not at all, so a bad file never leaves half a folder in force.
 *
 * The ZAP handler (ZeroMQ RFC 27) is a thread of the process answering on
 * inproc://zeromq.zap.01 of one ZeroMQ context. It must run before any CURVE server socket
 * of that context binds: without a handler libzmq admits every client key. A CURVE server
 * socket names its channel as its ZAP domain (gs_transport does so), and the handler admits:
 *
 *     work                   worker keys               (any role; the hello is checked
 *                                                       against the roles by the coordinator)
 *     tiles                  worker keys with the tiler role
 *     intake                 announcer keys
 *     submit, query, events  client keys
 *
 * and refuses everything else (unknown keys, another kind of key, another mechanism than
 * CURVE). An admitted connection carries the User-Id "worker:NAME", "client:NAME" or
 * "announcer:NAME" (NAME: the .pub file's name), which gs_transport_recv reports in
 * gs_peer.user_id. Refusals are counted per domain and each refused peer (address and key)
 * is logged once. gs_zap_reload() re-reads the folder: a folder that does not load keeps the
 * old keys and says why. Connections already admitted stay open after a reload (ZAP runs at
 * the handshake only).
 *
 * Use (a server process):
 *     gs_security sec;
 *     if (gs_security_resolve(&sec, &settings, GS_SECURITY_SERVER, endpoints, n, "gastroscreend"))
 *         fail;
 *     gs_zap *zap = sec.curve ? gs_zap_new(ctx, settings.keys_dir, "gastroscreend") : NULL;
 *     gs_zap_reload_on_sighup();
 *     ... gs_transport_new_curve(..., &opt, gs_security_curve(&sec));
 *     gs_zap_destroy(&zap);  (before zmq_ctx_term)
 */
#ifndef GS_STAGES_RUNTIME_KEYS_H
#define GS_STAGES_RUNTIME_KEYS_H

#include <stddef.h>
#include <stdint.h>

#include "stages/runtime/transport.h"

/* Characters of a Z85 key (32 bytes); buffers hold one more for the NUL. */
#define GS_KEY_Z85_LEN 40

/* ---- key files ------------------------------------------------------------------------- */

/* A new key pair (zmq_curve_keypair) as Z85 text. Returns 0, or -1 with the error set. */
int gs_key_generate(char public_key[GS_KEY_Z85_LEN + 1], char secret_key[GS_KEY_Z85_LEN + 1]);

/* Writes DIR/NAME.pub (mode 0644, with `roles = ROLES` when roles is neither NULL nor "") and
 * DIR/NAME.key (mode 0600, created exclusively: an existing secret is never overwritten) for a
 * new pair, and copies the public key to public_key. NAME is letters, digits, '.', '_', '-'.
 * Returns 0, or -1 with the error naming the file (nothing is left half written). */
int gs_key_write_pair(const char *dir, const char *name, const char *roles,
                      char public_key[GS_KEY_Z85_LEN + 1]);

/* Reads a public key file. *roles (may be NULL) gets the bit (1u << stage) of each stage of
 * its `roles` line (0 without one). Returns 0, or -1 with the error naming the file and line. */
int gs_key_read_public(const char *path, char public_key[GS_KEY_Z85_LEN + 1], unsigned *roles);

/* Reads a secret key file and derives its public key (public_key may be NULL). Refuses a file
 * group or others may read. Returns 0, or -1 with errno ENOENT when the file does not exist
 * (the caller may run without keys then), another errno otherwise, and the error set. */
int gs_key_read_secret(const char *path, char secret_key[GS_KEY_Z85_LEN + 1],
                       char public_key[GS_KEY_Z85_LEN + 1]);

/* Parses "blur infer" / "blur,infer" into stage bits. Returns 0, or -1 with the error naming
 * the unknown word. */
int gs_key_parse_roles(const char *text, unsigned *roles);

/* The first 8 characters of a Z85 key, to name a key in log lines without printing it. */
void gs_key_fingerprint(const char *z85, char out[9]);

/* ---- the keys folder ------------------------------------------------------------------- */

typedef enum { GS_KEY_WORKER = 0, GS_KEY_CLIENT, GS_KEY_ANNOUNCER, GS_KEY_KIND_COUNT } gs_key_kind;

/* "worker", "client", "announcer"; the folders are their plurals. */
const char *gs_key_kind_name(gs_key_kind k);

typedef struct gs_keyring gs_keyring;

/* Reads every DIR/{workers,clients,announcers}/NAME.pub. Returns the keyring (caller frees with
 * gs_keyring_destroy), or NULL with the error naming the folder or the first bad file (one
 * key listed twice included). */
gs_keyring *gs_keyring_load(const char *dir);

/* Frees the keyring and sets *k to NULL. Accepts NULL. */
void gs_keyring_destroy(gs_keyring **k);

/* Keys of one kind. */
size_t gs_keyring_count(const gs_keyring *k, gs_key_kind kind);

/* Looks up a 32-byte public key: 0 with *kind, name (owned by the keyring) and *roles set, or
 * -1 when it is not listed. Any out pointer may be NULL. */
int gs_keyring_find(const gs_keyring *k, const uint8_t key[32], gs_key_kind *kind,
                    const char **name, unsigned *roles);

/* ---- the ZAP handler ------------------------------------------------------------------- */

typedef struct gs_zap gs_zap;

/* Loads the keys folder and starts the handler thread on zctx's inproc://zeromq.zap.01.
 * `ident` names the process in log lines. Returns the handler (gs_zap_destroy), or NULL with
 * the error set (the folder does not load, another handler is bound in zctx). */
gs_zap *gs_zap_new(void *zctx, const char *keys_dir, const char *ident);

/* Stops the thread, closes its socket and frees the handler; call it before zmq_ctx_term of
 * its context. Sets *z to NULL; accepts NULL. */
void gs_zap_destroy(gs_zap **z);

/* Re-reads the keys folder now. Returns 0 when the new keys are in force, or -1 with the error
 * set and logged, the old keys staying in force. Any thread. */
int gs_zap_reload(gs_zap *z);

/* Installs a SIGHUP handler that makes every gs_zap of the process reload its folder (within
 * a second: the handler threads look at the flag when they wake). */
void gs_zap_reload_on_sighup(void);

/* Connections refused on ZAP domain `domain` ("work", "query", ...) since the start. Any
 * thread. */
uint64_t gs_zap_refused(const gs_zap *z, const char *domain);

/* Reloads done (successful ones) since the start, for tests and logs. */
uint64_t gs_zap_reloads(const gs_zap *z);

/* The stage roles of the worker key named by a User-Id "worker:NAME" in the keys now in force:
 * returns 0 with *roles set, or -1 when user_id names no listed worker key. Any thread. */
int gs_zap_worker_roles(gs_zap *z, const char *user_id, unsigned *roles);

/* ---- CURVE or plain -------------------------------------------------------------------- */

/* The [security] settings of the config file (config_schema). */
typedef struct {
    const char *mode;     /* "curve" or "off" */
    const char *keys_dir; /* the keys folder */
    const char *own_key;  /* this process's secret key file; "" = DIR/<default_own>.key */
    const char *server;   /* connecting sides: the coordinator's public key file; "" =
                             DIR/coordinator.pub */
} gs_security_settings;

typedef enum { GS_SECURITY_SERVER = 0, GS_SECURITY_CLIENT = 1 } gs_security_role;

typedef struct {
    int curve; /* 1: CURVE on tcp:// endpoints; 0: every socket plain */
    char secret[GS_KEY_Z85_LEN + 1], public_key[GS_KEY_Z85_LEN + 1];
    char server[GS_KEY_Z85_LEN + 1]; /* clients: the coordinator's public key */
    gs_curve_keys keys;              /* private: see gs_security_curve */
} gs_security;

/* The keys for gs_transport_options.curve (pointing into *s: valid while s is), or NULL when
 * s runs plain (s NULL included). */
const gs_curve_keys *gs_security_curve(gs_security *s);

/* 1 when an endpoint may run without CURVE: ipc://, inproc://, or tcp:// on 127.0.0.1,
 * [::1] or localhost. */
int gs_endpoint_is_local(const char *endpoint);

/* Decides how this process's sockets run. mode "off": plain, with a warning logged (every
 * start). mode "curve": the own secret key file (own_key, or KEYS_DIR/<default_own>.key) and,
 * for a client, the server's public key are read; when they load, CURVE on every tcp://
 * endpoint; when a file does not exist and every endpoint is local, plain with a note; else
 * (a non-local endpoint without its keys, or a key file that exists but does not load) -1
 * with the error naming the endpoint and the file. `ident` names the process in log lines.
 * Returns 0 or -1. */
int gs_security_resolve(gs_security *s, const gs_security_settings *set, gs_security_role role,
                        const char *default_own, const char *const *endpoints, size_t n,
                        const char *ident);

#endif
