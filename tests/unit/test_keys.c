/* keys: key files (format, modes, a secret readable by others refused), the keys folder, the
 * ZAP handler over real CURVE sockets on tcp://127.0.0.1 (which key opens which socket, the
 * User-Id, refusals counted, reload), the CURVE-or-plain choice, and that the bytes on the
 * wire are not plaintext (a relay between client and server records them). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "ops/error.h"
#include "stages/runtime/keys.h"
#include "stages/runtime/transport.h"
#include "tests/unit/key_folder.h"
#include "tests/unit/tcp_relay.h"

/* Generous: only guards against a hang; a healthy run never waits this long. */
#define WAIT_MS 10000

static const gs_transport_options quiet = {0, NULL, 1};

/* ---- key files ------------------------------------------------------------------------- */

static void test_key_files(void **state)
{
    (void)state;
    char *d = make_dir();
    char pub[41], pub2[41], sec[41], derived[41], path[512];
    unsigned roles = 99;
    assert_int_equal(gs_key_write_pair(d, "node2", "blur infer", pub), 0);
    struct stat st;
    snprintf(path, sizeof path, "%s/node2.key", d);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(gs_key_read_secret(path, sec, derived), 0);
    assert_string_equal(derived, pub);
    snprintf(path, sizeof path, "%s/node2.pub", d);
    assert_int_equal(gs_key_read_public(path, pub2, &roles), 0);
    assert_string_equal(pub2, pub);
    assert_int_equal(roles, (1u << GASTROSCREEN__V1__STAGE__STAGE_BLUR) |
                                (1u << GASTROSCREEN__V1__STAGE__STAGE_INFER));
    /* An existing secret is never overwritten. */
    assert_int_equal(gs_key_write_pair(d, "node2", NULL, pub2), -1);
    assert_int_equal(gs_key_write_pair(d, "../evil", NULL, pub2), -1);
    assert_int_equal(gs_key_write_pair(d, "x", "blur nosuchstage", pub2), -1);
    assert_non_null(strstr(gs_error_get(), "nosuchstage"));

    /* A secret readable by the group is refused, whatever is in it. */
    snprintf(path, sizeof path, "%s/node2.key", d);
    assert_int_equal(chmod(path, 0640), 0);
    assert_int_equal(gs_key_read_secret(path, sec, NULL), -1);
    assert_int_equal(errno, EPERM);
    assert_non_null(strstr(gs_error_get(), "readable by group or others"));
    snprintf(path, sizeof path, "%s/missing.key", d);
    assert_int_equal(gs_key_read_secret(path, sec, NULL), -1);
    assert_int_equal(errno, ENOENT);

    /* Bad public files: a short key, an unknown line, no key. */
    snprintf(path, sizeof path, "%s/bad.pub", d);
    write_text(path, "public = abc\n", 0644);
    assert_int_equal(gs_key_read_public(path, pub2, NULL), -1);
    assert_non_null(strstr(gs_error_get(), "bad.pub:1"));
    write_text(path, "# comment\n\npublic = rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7\nhost = x\n",
               0644);
    assert_int_equal(gs_key_read_public(path, pub2, NULL), -1);
    assert_non_null(strstr(gs_error_get(), "bad.pub:4"));
    write_text(path, "# nothing\n", 0644);
    assert_int_equal(gs_key_read_public(path, pub2, NULL), -1);
    /* roles are read for worker keys only (a caller passing roles NULL). */
    write_text(path, "public = rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7\nroles = blur\n", 0644);
    assert_int_equal(gs_key_read_public(path, pub2, NULL), -1);
    assert_non_null(strstr(gs_error_get(), "worker keys"));
    assert_int_equal(gs_key_read_public(path, pub2, &roles), 0);
    assert_int_equal(roles, 1u << GASTROSCREEN__V1__STAGE__STAGE_BLUR);
    assert_int_equal(gs_key_parse_roles("tiler, reporter", &roles), 0);
    assert_int_equal(roles, (1u << GASTROSCREEN__V1__STAGE__STAGE_TILER) |
                                (1u << GASTROSCREEN__V1__STAGE__STAGE_REPORTER));
    char fp[9];
    gs_key_fingerprint(pub, fp);
    assert_int_equal(strlen(fp), 8);
    assert_memory_equal(fp, pub, 8);
    rm_rf(d);
    free(d);
}

/* ---- the keys folder ------------------------------------------------------------------- */

static void test_keyring(void **state)
{
    (void)state;
    keys_folder k;
    make_folder(&k);
    gs_keyring *r = gs_keyring_load(k.dir);
    assert_non_null(r);
    assert_int_equal(gs_keyring_count(r, GS_KEY_WORKER), 2);
    assert_int_equal(gs_keyring_count(r, GS_KEY_CLIENT), 1);
    assert_int_equal(gs_keyring_count(r, GS_KEY_ANNOUNCER), 1);
    client_keys c;
    load_client(&c, k.workers, "blur1", k.coord_pub);
    uint8_t bin[32];
    zmq_z85_decode(bin, c.pub);
    gs_key_kind kind;
    const char *name;
    unsigned roles;
    assert_int_equal(gs_keyring_find(r, bin, &kind, &name, &roles), 0);
    assert_int_equal(kind, GS_KEY_WORKER);
    assert_string_equal(name, "blur1");
    assert_int_equal(roles, 1u << GASTROSCREEN__V1__STAGE__STAGE_BLUR);
    load_client(&c, k.dir, "spare/mallory", k.coord_pub);
    zmq_z85_decode(bin, c.pub);
    assert_int_equal(gs_keyring_find(r, bin, NULL, NULL, NULL), -1);
    gs_keyring_destroy(&r);
    assert_null(r);

    /* The same key in two folders, a bad file: the folder does not load at all. */
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cp '%s/alice.pub' '%s/alice.pub'", k.clients, k.announcers);
    assert_int_equal(system(cmd), 0);
    assert_null(gs_keyring_load(k.dir));
    assert_non_null(strstr(gs_error_get(), "the same key"));
    snprintf(cmd, sizeof cmd, "%s/alice.pub", k.announcers);
    unlink(cmd);
    snprintf(cmd, sizeof cmd, "%s/broken.pub", k.workers);
    write_text(cmd, "public = short\n", 0644);
    assert_null(gs_keyring_load(k.dir));
    assert_non_null(strstr(gs_error_get(), "broken.pub"));
    unlink(cmd);
    /* A missing subfolder is an empty one; a missing folder is an error. */
    rmdir(k.announcers);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", k.announcers);
    assert_int_equal(system(cmd), 0);
    r = gs_keyring_load(k.dir);
    assert_non_null(r);
    assert_int_equal(gs_keyring_count(r, GS_KEY_ANNOUNCER), 0);
    gs_keyring_destroy(&r);
    assert_null(gs_keyring_load("/nonexistent/keys"));
    free_folder(&k);
}

/* ---- ZAP over CURVE sockets ------------------------------------------------------------ */

/* Waits until the handler has refused more than `before` connections on `domain`. */
static void wait_refused(gs_zap *z, const char *domain, uint64_t before)
{
    for (int i = 0; i < WAIT_MS / 10 && gs_zap_refused(z, domain) <= before; i++)
        usleep(10 * 1000);
    assert_true(gs_zap_refused(z, domain) > before);
}

/* Waits for one message. zmq_poll may wake for a socket with nothing to read (it also wakes
 * for ZeroMQ's internal commands), so an empty receive waits again. */
static gs_recv_status recv_wait(gs_transport *t, gs_inbound *in)
{
    for (int i = 0; i < WAIT_MS / 10; i++) {
        zmq_pollitem_t it = {gs_transport_socket(t), 0, ZMQ_POLLIN, 0};
        zmq_poll(&it, 1, 10);
        gs_recv_status st = gs_transport_recv(t, in, GS_RECV_DONTWAIT);
        if (st != GS_RECV_EMPTY)
            return st;
        gs_inbound_release(in);
    }
    fail_msg("no message within %d ms", WAIT_MS);
    return GS_RECV_ERROR;
}

static void make_hello(Gastroscreen__V1__WorkMessage *env, Gastroscreen__V1__WorkerHello *h,
                       const char *id)
{
    gastroscreen__v1__work_message__init(env);
    gastroscreen__v1__worker_hello__init(h);
    h->worker_id = (char *)id;
    h->stage = GASTROSCREEN__V1__STAGE__STAGE_BLUR;
    h->tile_inbox = "tcp://node7:41234";
    env->protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    env->body_case = GASTROSCREEN__V1__WORK_MESSAGE__BODY_HELLO;
    env->hello = h;
}

/* A DEALER with `keys` sends a hello to the work ROUTER: 1 when it arrives (user_id copied
 * out), 0 when the handler refused the connection. A `listed` key waits for the hello only: a
 * refused client of an earlier call may still be raising the refusal count. */
static int try_work(void *ctx, gs_zap *z, gs_transport *router, const gs_curve_keys *keys,
                    int listed, char *user_id, size_t n)
{
    uint64_t before = gs_zap_refused(z, "work");
    gs_transport *d = gs_transport_new_curve(ctx, GS_CHANNEL_WORK, ZMQ_DEALER, GS_CONNECT,
                                             gs_transport_endpoint(router), &quiet, keys);
    assert_non_null(d);
    Gastroscreen__V1__WorkMessage env;
    Gastroscreen__V1__WorkerHello h;
    make_hello(&env, &h, "blur.1@node7:1");
    /* IMMEDIATE: a send waits for a connection that completed its handshake; a refused one
     * never does, so the hello is sent without waiting until it goes. */
    int sent = 0, got = 0, after_refusal = -1;
    for (int i = 0; i < WAIT_MS / 10 && !got && after_refusal < 50; i++) {
        if (!sent)
            sent = gs_transport_send(d, NULL, &env.base, GS_SEND_DONTWAIT) == 0;
        zmq_pollitem_t it = {gs_transport_socket(router), 0, ZMQ_POLLIN, 0};
        zmq_poll(&it, 1, 10);
        gs_inbound in;
        if (gs_transport_recv(router, &in, GS_RECV_DONTWAIT) == GS_RECV_MESSAGE) {
            snprintf(user_id, n, "%s", in.from.user_id);
            got = 1;
        }
        gs_inbound_release(&in);
        if (!listed && after_refusal < 0 && gs_zap_refused(z, "work") > before)
            after_refusal = 0;
        if (after_refusal >= 0)
            after_refusal++;
    }
    if (!got && after_refusal < 0)
        fail_msg("neither a hello nor a refusal");
    gs_transport_destroy(&d);
    return got;
}

static void test_zap_work_socket(void **state)
{
    (void)state;
    keys_folder k;
    make_folder(&k);
    void *ctx = zmq_ctx_new();
    gs_zap *z = gs_zap_new(ctx, k.dir, "test");
    assert_non_null(z);
    gs_curve_keys server = {k.coord_sec, NULL, NULL};
    gs_transport *router = gs_transport_new_curve(ctx, GS_CHANNEL_WORK, ZMQ_ROUTER, GS_BIND,
                                                  "tcp://127.0.0.1:*", &quiet, &server);
    assert_non_null(router);
    assert_true(gs_transport_is_curve(router));
    char uid[128];
    client_keys c;
    load_client(&c, k.workers, "blur1", k.coord_pub);
    assert_int_equal(try_work(ctx, z, router, &c.keys, 1, uid, sizeof uid), 1);
    assert_string_equal(uid, "worker:blur1");
    unsigned roles = 0;
    assert_int_equal(gs_zap_worker_roles(z, uid, &roles), 0);
    assert_int_equal(roles, 1u << GASTROSCREEN__V1__STAGE__STAGE_BLUR);
    assert_int_equal(gs_zap_worker_roles(z, "client:alice", &roles), -1);
    assert_int_equal(gs_zap_refused(z, "work"), 0);

    /* A client key, an announcer key and an unlisted key cannot open the work socket. */
    load_client(&c, k.clients, "alice", k.coord_pub);
    assert_int_equal(try_work(ctx, z, router, &c.keys, 0, uid, sizeof uid), 0);
    load_client(&c, k.announcers, "scanner", k.coord_pub);
    assert_int_equal(try_work(ctx, z, router, &c.keys, 0, uid, sizeof uid), 0);
    load_client(&c, k.dir, "spare/mallory", k.coord_pub);
    assert_int_equal(try_work(ctx, z, router, &c.keys, 0, uid, sizeof uid), 0);

    /* A reload lists mallory as a worker: admitted without a restart. A broken folder does not
     * reload and the keys in force stay. */
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cp '%s/spare/mallory.pub' '%s/'", k.dir, k.workers);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(gs_zap_reload(z), 0);
    assert_int_equal(gs_zap_reloads(z), 1);
    assert_int_equal(try_work(ctx, z, router, &c.keys, 1, uid, sizeof uid), 1);
    assert_string_equal(uid, "worker:mallory");
    snprintf(cmd, sizeof cmd, "%s/broken.pub", k.workers);
    write_text(cmd, "public = short\n", 0644);
    assert_int_equal(gs_zap_reload(z), -1);
    assert_int_equal(try_work(ctx, z, router, &c.keys, 1, uid, sizeof uid), 1);

    gs_transport_destroy(&router);
    gs_zap_destroy(&z);
    assert_null(z);
    zmq_ctx_term(ctx);
    free_folder(&k);
}

/* Each socket admits its own kind of key: tilers (not other workers) on a tile inbox, clients
 * (not workers) on events, announcers (not clients) on intake. */
static void test_zap_domains(void **state)
{
    (void)state;
    keys_folder k;
    make_folder(&k);
    void *ctx = zmq_ctx_new();
    gs_zap *z = gs_zap_new(ctx, k.dir, "test");
    assert_non_null(z);
    gs_curve_keys server = {k.coord_sec, NULL, NULL};
    gs_transport *pull = gs_transport_new_curve(ctx, GS_CHANNEL_TILES, ZMQ_PULL, GS_BIND,
                                                "tcp://127.0.0.1:*", &quiet, &server);
    gs_transport *pub = gs_transport_new_curve(ctx, GS_CHANNEL_EVENTS, ZMQ_PUB, GS_BIND,
                                               "tcp://127.0.0.1:*", &quiet, &server);
    gs_transport *intake = gs_transport_new_curve(ctx, GS_CHANNEL_INTAKE, ZMQ_SUB, GS_BIND,
                                                  "tcp://127.0.0.1:*", &quiet, &server);
    assert_non_null(pull);
    assert_non_null(pub);
    assert_non_null(intake);

    /* Tiles: blur1 (no tiler role) refused, tiler1 admitted. */
    client_keys c;
    load_client(&c, k.workers, "blur1", k.coord_pub);
    gs_transport *push = gs_transport_new_curve(ctx, GS_CHANNEL_TILES, ZMQ_PUSH, GS_CONNECT,
                                                gs_transport_endpoint(pull), &quiet, &c.keys);
    assert_non_null(push);
    wait_refused(z, "tiles", 0);
    gs_transport_destroy(&push);
    load_client(&c, k.workers, "tiler1", k.coord_pub);
    push = gs_transport_new_curve(ctx, GS_CHANNEL_TILES, ZMQ_PUSH, GS_CONNECT,
                                  gs_transport_endpoint(pull), &quiet, &c.keys);
    Gastroscreen__V1__TileMessage tm = GASTROSCREEN__V1__TILE_MESSAGE__INIT;
    Gastroscreen__V1__TileHeader th = GASTROSCREEN__V1__TILE_HEADER__INIT;
    tm.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    tm.body_case = GASTROSCREEN__V1__TILE_MESSAGE__BODY_TILE;
    tm.tile = &th;
    th.slide_id = "0123456789abcdef";
    th.width = th.height = 4;
    th.channels = 3;
    th.pixel_format = GASTROSCREEN__V1__PIXEL_FORMAT__PIXEL_FORMAT_RGB8;
    uint8_t px[48] = {0};
    assert_int_equal(gs_transport_send_tile(push, &tm, px, sizeof px, NULL, NULL, 0), 0);
    gs_inbound in;
    assert_int_equal(recv_wait(pull, &in), GS_RECV_MESSAGE);
    assert_string_equal(in.from.user_id, "worker:tiler1");
    gs_inbound_release(&in);
    gs_transport_destroy(&push);

    /* Events: a worker key is refused, a client key admitted (its SUB gets events). */
    load_client(&c, k.workers, "tiler1", k.coord_pub);
    gs_transport *sub = gs_transport_new_curve(ctx, GS_CHANNEL_EVENTS, ZMQ_SUB, GS_CONNECT,
                                               gs_transport_endpoint(pub), &quiet, &c.keys);
    assert_non_null(sub);
    wait_refused(z, "events", 0);
    gs_transport_destroy(&sub);

    /* Intake: an announcer's PUB is admitted, a client's refused. */
    load_client(&c, k.clients, "alice", k.coord_pub);
    gs_transport *ann = gs_transport_new_curve(ctx, GS_CHANNEL_INTAKE, ZMQ_PUB, GS_CONNECT,
                                               gs_transport_endpoint(intake), &quiet, &c.keys);
    wait_refused(z, "intake", 0);
    gs_transport_destroy(&ann);
    assert_int_equal(gs_zap_refused(z, "query"), 0);

    gs_transport_destroy(&pull);
    gs_transport_destroy(&pub);
    gs_transport_destroy(&intake);
    gs_zap_destroy(&z);
    zmq_ctx_term(ctx);
    free_folder(&k);
}

/* One PUSH reaches a plain inbox, a CURVE inbox and another plain one: the security is chosen
 * per connection (a tiler whose route mixes inboxes of several keys). */
static void test_push_mixes_connections(void **state)
{
    (void)state;
    keys_folder k;
    make_folder(&k);
    void *ctx = zmq_ctx_new();
    gs_zap *z = gs_zap_new(ctx, k.dir, "test");
    gs_curve_keys server = {k.coord_sec, NULL, NULL};
    gs_transport *pulls[3];
    for (int i = 0; i < 3; i++) {
        pulls[i] = gs_transport_new_curve(ctx, GS_CHANNEL_TILES, ZMQ_PULL, GS_BIND,
                                          "tcp://127.0.0.1:*", &quiet, i == 1 ? &server : NULL);
        assert_non_null(pulls[i]);
    }
    client_keys c;
    load_client(&c, k.workers, "tiler1", k.coord_pub);
    gs_transport *push = gs_transport_new(ctx, GS_CHANNEL_TILES, ZMQ_PUSH, GS_CONNECT,
                                          gs_transport_endpoint(pulls[0]), &quiet);
    assert_non_null(push);
    assert_int_equal(gs_transport_connect_curve(push, gs_transport_endpoint(pulls[1]), &c.keys), 0);
    assert_true(gs_transport_is_curve(push));
    assert_int_equal(gs_transport_connect_curve(push, gs_transport_endpoint(pulls[2]), NULL), 0);
    assert_false(gs_transport_is_curve(push));
    Gastroscreen__V1__TileMessage tm = GASTROSCREEN__V1__TILE_MESSAGE__INIT;
    Gastroscreen__V1__TileHeader th = GASTROSCREEN__V1__TILE_HEADER__INIT;
    tm.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    tm.body_case = GASTROSCREEN__V1__TILE_MESSAGE__BODY_TILE;
    tm.tile = &th;
    th.slide_id = "0123456789abcdef";
    th.width = th.height = 2;
    th.channels = 3;
    th.pixel_format = GASTROSCREEN__V1__PIXEL_FORMAT__PIXEL_FORMAT_RGB8;
    uint8_t px[12] = {0};
    int got[3] = {0};
    for (int i = 0; i < WAIT_MS && !(got[0] && got[1] && got[2]); i++) {
        gs_transport_send_tile(push, &tm, px, sizeof px, NULL, NULL, GS_SEND_DONTWAIT);
        for (int p = 0; p < 3; p++) {
            gs_inbound in;
            if (gs_transport_recv(pulls[p], &in, GS_RECV_DONTWAIT) == GS_RECV_MESSAGE) {
                got[p]++;
                assert_string_equal(in.from.user_id, p == 1 ? "worker:tiler1" : "");
            }
            gs_inbound_release(&in);
        }
        usleep(1000);
    }
    assert_true(got[0] && got[1] && got[2]);
    assert_int_equal(gs_zap_refused(z, "tiles"), 0);
    gs_transport_destroy(&push);
    for (int i = 0; i < 3; i++)
        gs_transport_destroy(&pulls[i]);
    gs_zap_destroy(&z);
    zmq_ctx_term(ctx);
    free_folder(&k);
}

/* ---- CURVE or plain -------------------------------------------------------------------- */

static void test_security_resolve(void **state)
{
    (void)state;
    assert_true(gs_endpoint_is_local("ipc:///run/x.sock"));
    assert_true(gs_endpoint_is_local("inproc://x"));
    assert_true(gs_endpoint_is_local("tcp://127.0.0.1:5554"));
    assert_true(gs_endpoint_is_local("tcp://[::1]:5554"));
    assert_true(gs_endpoint_is_local("tcp://localhost:5554"));
    assert_false(gs_endpoint_is_local("tcp://*:5554"));
    assert_false(gs_endpoint_is_local("tcp://10.0.0.2:5554"));
    assert_false(gs_endpoint_is_local("tcp://127.0.0.1.evil.org:5554"));

    char *d = make_dir();
    gs_security s;
    gs_security_settings set = {"curve", d, "", ""};
    const char *local[] = {"tcp://127.0.0.1:5554", "ipc:///run/gs.sock"};
    const char *open_eps[] = {"tcp://127.0.0.1:5554", "tcp://*:5551"};
    /* No keys: loopback runs plain, an address off the host refuses to start. */
    assert_int_equal(
        gs_security_resolve(&s, &set, GS_SECURITY_SERVER, "coordinator", local, 2, "t"), 0);
    assert_int_equal(s.curve, 0);
    assert_null(gs_security_curve(&s));
    assert_int_equal(
        gs_security_resolve(&s, &set, GS_SECURITY_SERVER, "coordinator", open_eps, 2, "t"), -1);
    assert_non_null(strstr(gs_error_get(), "tcp://*:5551"));
    assert_non_null(strstr(gs_error_get(), "coordinator.key"));
    /* security = off: plain everywhere. */
    gs_security_settings off = {"off", d, "", ""};
    assert_int_equal(
        gs_security_resolve(&s, &off, GS_SECURITY_SERVER, "coordinator", open_eps, 2, "t"), 0);
    assert_int_equal(s.curve, 0);
    gs_security_settings bad = {"maybe", d, "", ""};
    assert_int_equal(
        gs_security_resolve(&s, &bad, GS_SECURITY_SERVER, "coordinator", local, 2, "t"), -1);

    /* With keys: CURVE, also on loopback; a client needs the coordinator's public key too. */
    char pub[41];
    assert_int_equal(gs_key_write_pair(d, "coordinator", NULL, pub), 0);
    assert_int_equal(gs_key_write_pair(d, "node", "infer", pub), 0);
    assert_int_equal(
        gs_security_resolve(&s, &set, GS_SECURITY_SERVER, "coordinator", open_eps, 2, "t"), 0);
    assert_int_equal(s.curve, 1);
    const gs_curve_keys *ck = gs_security_curve(&s);
    assert_non_null(ck);
    assert_int_equal(strlen(ck->secret), 40);
    assert_null(ck->server);
    assert_int_equal(gs_security_resolve(&s, &set, GS_SECURITY_CLIENT, "node", open_eps, 2, "t"),
                     0);
    assert_int_equal(s.curve, 1);
    assert_non_null(gs_security_curve(&s)->server);
    assert_string_equal(s.public_key, pub);
    /* A secret others can read is refused even on loopback. */
    char path[512];
    snprintf(path, sizeof path, "%s/node.key", d);
    assert_int_equal(chmod(path, 0644), 0);
    assert_int_equal(gs_security_resolve(&s, &set, GS_SECURITY_CLIENT, "node", local, 2, "t"), -1);
    assert_non_null(strstr(gs_error_get(), "readable by group or others"));
    rm_rf(d);
    free(d);
}

/* ---- the bytes on the wire ------------------------------------------------------------- */

/* A tiler's PUSH sends a tile (slide id, 64 KiB of one pixel value) through the relay to a
 * tile inbox, once plain and once with CURVE: the plain capture must show the slide id and the
 * pixel run (the relay really records the traffic), the CURVE one neither. */
static void send_through_relay(int curve, relay *r)
{
    keys_folder k;
    make_folder(&k);
    void *ctx = zmq_ctx_new();
    gs_zap *z = curve ? gs_zap_new(ctx, k.dir, "test") : NULL;
    gs_curve_keys server = {k.coord_sec, NULL, NULL};
    gs_transport *pull =
        gs_transport_new_curve(ctx, GS_CHANNEL_TILES, ZMQ_PULL, GS_BIND, "tcp://127.0.0.1:*",
                               &quiet, curve ? &server : NULL);
    assert_non_null(pull);
    char ep[128];
    relay_start(r, gs_transport_endpoint(pull), ep, sizeof ep);
    client_keys c;
    load_client(&c, k.workers, "tiler1", k.coord_pub);
    gs_transport *push = gs_transport_new_curve(ctx, GS_CHANNEL_TILES, ZMQ_PUSH, GS_CONNECT, ep,
                                                &quiet, curve ? &c.keys : NULL);
    assert_non_null(push);
    Gastroscreen__V1__TileMessage tm = GASTROSCREEN__V1__TILE_MESSAGE__INIT;
    Gastroscreen__V1__TileHeader th = GASTROSCREEN__V1__TILE_HEADER__INIT;
    tm.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    tm.body_case = GASTROSCREEN__V1__TILE_MESSAGE__BODY_TILE;
    tm.tile = &th;
    th.slide_id = "5ecre75l1de1d000";
    th.width = th.height = 128;
    th.channels = 4;
    th.pixel_format = GASTROSCREEN__V1__PIXEL_FORMAT__PIXEL_FORMAT_RGBA8;
    size_t npx = 128 * 128 * 4;
    uint8_t *px = malloc(npx);
    memset(px, 0xC7, npx);
    assert_int_equal(gs_transport_send_tile(push, &tm, px, npx, NULL, NULL, 0), 0);
    gs_inbound in;
    assert_int_equal(recv_wait(pull, &in), GS_RECV_MESSAGE);
    assert_int_equal(in.pixels_len, npx);
    assert_string_equal(in.msg.tile->tile->slide_id, "5ecre75l1de1d000");
    gs_inbound_release(&in);
    free(px);
    gs_transport_destroy(&push);
    gs_transport_destroy(&pull);
    relay_stop(r);
    gs_zap_destroy(&z);
    zmq_ctx_term(ctx);
    free_folder(&k);
}

static void test_wire_not_plaintext(void **state)
{
    (void)state;
    relay r;
    send_through_relay(0, &r);
    assert_true(relay_contains(&r, "5ecre75l1de1d000", 16));
    assert_true(relay_longest_run(&r, 0xC7) >= 65536);
    free(r.seen);

    send_through_relay(1, &r);
    assert_true(r.n_seen > 65536); /* the tile went through the relay */
    assert_false(relay_contains(&r, "5ecre75l1de1d000", 16));
    assert_false(relay_contains(&r, "tiles", 5)); /* not even the ZAP domain */
    assert_true(relay_longest_run(&r, 0xC7) < 16);
    free(r.seen);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_files),
        cmocka_unit_test(test_keyring),
        cmocka_unit_test(test_zap_work_socket),
        cmocka_unit_test(test_zap_domains),
        cmocka_unit_test(test_security_resolve),
        cmocka_unit_test(test_wire_not_plaintext),
        cmocka_unit_test(test_push_mixes_connections),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
