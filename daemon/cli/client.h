/*
 * client: what the client commands (`gastroscreen submit|watch|status|top`) share: the
 * coordinator's endpoints as seen from a client, and a request/reply exchange with a timeout.
 *
 * Endpoints come from the [coordinator] section of the config file (--config FILE, the same
 * file gastroscreend reads; without it the built-in defaults), then from --endpoint NAME=URL
 * flags (NAME: submit, query, events, intake), which win. The config holds the coordinator's
 * *bind* addresses (host "*" in tcp://HOST:5551); a client connects to the same port on the
 * local host ("tcp://127.0.0.1:5551"), so a bind wildcard is turned into the loopback address;
 * on another host, give the coordinator's address with --endpoint or in the file.
 *
 * A REQ socket that never gets an answer is stuck for good (the REQ state machine waits
 * forever), so gs_cli_request() polls with the timeout and, when it expires or the reply is
 * malformed, closes the socket: the caller gets -1 with a message naming the endpoint and
 * saying whether the coordinator is silent or answered garbage, and recreates the socket for
 * the next request.
 *
 * Use:
 *     gs_cli_options o;
 *     gs_cli_options_init(&o);
 *     for (i = 1; i < argc; i++) { int r = gs_cli_option(&o, argc, argv, &i); ... }
 *     if (gs_cli_options_finish(&o) < 0) ... ;
 *     gs_transport *req = NULL;
 *     gs_inbound in = {0};
 *     if (gs_cli_request(ctx, GS_CHANNEL_QUERY, o.query, &req, &msg.base, &in, o.timeout_ms)...
 */
#ifndef GS_DAEMON_CLI_CLIENT_H
#define GS_DAEMON_CLI_CLIENT_H

#include <stddef.h>

#include "stages/runtime/keys.h"
#include "stages/runtime/transport.h"

#define GS_CLI_ENDPOINT_MAX 512

typedef struct {
    const char *config_path; /* --config, or NULL */
    char submit[GS_CLI_ENDPOINT_MAX], query[GS_CLI_ENDPOINT_MAX], events[GS_CLI_ENDPOINT_MAX];
    char intake[GS_CLI_ENDPOINT_MAX];                  /* filled only for an announcer */
    int submit_set, query_set, events_set, intake_set; /* given by --endpoint */
    /* Set before gs_cli_options_finish by `gastroscreen announce`: the intake endpoint is
     * filled too and gets its own keys, intake_sec (the coordinator admits an announcer key,
     * listed in keys/announcers/, on intake only): --key FILE or KEYS_DIR/announcer.key;
     * sec keeps the client key (client_key) for the events socket. */
    int announcer;
    gs_security intake_sec;
    int timeout_ms;                    /* --timeout SECONDS, default 5 s */
    const char *key, *coordinator_key; /* --key FILE, --coordinator-key FILE, or NULL */
    /* CURVE or plain (stages/runtime/keys), from the config's [security]: the client key
     * (client_key, default KEYS_DIR/client.key) and the coordinator's public key; set by
     * gs_cli_options_finish. Pass gs_security_curve(&o.sec) to the sockets. */
    gs_security sec;
} gs_cli_options;

/* Defaults: no config, endpoints unset, timeout 5 s. */
void gs_cli_options_init(gs_cli_options *o);

/* If argv[*i] is one of the shared options (--config FILE, --endpoint NAME=URL,
 * --timeout SECONDS, --key FILE: this client's secret key, --coordinator-key FILE: the
 * coordinator's public key; both override [security]), consumes it (and its value: *i is advanced
 * past it) and returns 1; returns 0 when it is not one of them, -1 with the error set for a bad or
 * missing value. */
int gs_cli_option(gs_cli_options *o, int argc, char **argv, int *i);

/* Fills the endpoints not given by --endpoint from the config file (or the defaults), turns
 * bind addresses into connect addresses and decides CURVE or plain (o->sec; without keys only
 * loopback and ipc:// endpoints are reached, plain). Returns 0, or -1 with the error set (the
 * config does not load, an inproc:// endpoint, which only exists inside one process). */
int gs_cli_options_finish(gs_cli_options *o);

/* Writes the address a client connects to for a coordinator bind address into out:
 * host "*" and "tcp://0.0.0.0:P" become "tcp://127.0.0.1:P", "tcp://[::]:P" becomes
 * "tcp://[::1]:P"; anything else is copied. Returns 0, or -1 with the error set (inproc://,
 * empty, too long). */
int gs_cli_connect_address(const char *bind, char *out, size_t n);

/* Sends `request` (an envelope of `channel`: GS_CHANNEL_SUBMIT or GS_CHANNEL_QUERY) over the
 * REQ socket *req (created and connected to endpoint when *req is NULL, with CURVE when curve
 * is not NULL) and waits up to
 * timeout_ms for the reply, which is left in *in (released by the caller with
 * gs_inbound_release, as for gs_transport_recv). Returns 0 with a valid envelope in *in, or
 * -1 with the error set ("no reply from the coordinator at E within 5 s (is gastroscreend
 * running?)", "malformed reply from E: ...") and *req destroyed and NULL. */
int gs_cli_request(void *zctx, gs_channel channel, const char *endpoint, const gs_curve_keys *curve,
                   gs_transport **req, const ProtobufCMessage *request, gs_inbound *in,
                   int timeout_ms);

#endif
