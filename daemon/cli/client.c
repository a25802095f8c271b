/* client: see client.h. */
#include "daemon/cli/client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/service/config.h"
#include "ops/error.h"

void gs_cli_options_init(gs_cli_options *o)
{
    memset(o, 0, sizeof *o);
    o->timeout_ms = 5000;
}

int gs_cli_option(gs_cli_options *o, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    int is_config = !strcmp(a, "--config"), is_endpoint = !strcmp(a, "--endpoint"),
        is_timeout = !strcmp(a, "--timeout"), is_key = !strcmp(a, "--key"),
        is_server_key = !strcmp(a, "--coordinator-key");
    if (!is_config && !is_endpoint && !is_timeout && !is_key && !is_server_key)
        return 0;
    if (*i + 1 >= argc)
        return gs_error_set("%s needs a value", a);
    const char *v = argv[++*i];
    if (is_key || is_server_key) {
        *(is_key ? &o->key : &o->coordinator_key) = v;
        return 1;
    }
    if (is_config) {
        o->config_path = v;
        return 1;
    }
    if (is_timeout) {
        char *end = NULL;
        errno = 0;
        double s = strtod(v, &end);
        if (errno || end == v || *end || !(s > 0) || s > 86400)
            return gs_error_set("--timeout: '%s' is not a number of seconds in (0, 86400]", v);
        o->timeout_ms = (int)(s * 1000.0 + 0.5);
        if (o->timeout_ms < 1)
            o->timeout_ms = 1;
        return 1;
    }
    const char *eq = strchr(v, '=');
    if (!eq)
        return gs_error_set("--endpoint: '%s' is not NAME=URL (NAME: submit, query, events, "
                            "intake)",
                            v);
    size_t nl = (size_t)(eq - v);
    char *dst = NULL;
    int *set = NULL;
    if (nl == 6 && !strncmp(v, "submit", 6)) {
        dst = o->submit;
        set = &o->submit_set;
    } else if (nl == 5 && !strncmp(v, "query", 5)) {
        dst = o->query;
        set = &o->query_set;
    } else if (nl == 6 && !strncmp(v, "events", 6)) {
        dst = o->events;
        set = &o->events_set;
    } else if (nl == 6 && !strncmp(v, "intake", 6)) {
        dst = o->intake;
        set = &o->intake_set;
    } else {
        return gs_error_set("--endpoint: unknown name in '%s' (submit, query, events, intake)", v);
    }
    if (gs_cli_connect_address(eq + 1, dst, GS_CLI_ENDPOINT_MAX) < 0)
        return gs_error_prefix("--endpoint");
    *set = 1;
    return 1;
}

int gs_cli_connect_address(const char *bind, char *out, size_t n)
{
    if (!bind || !*bind)
        return gs_error_set("empty endpoint");
    if (!strncmp(bind, "inproc://", 9))
        return gs_error_set("'%s' is an in-process endpoint (gastroscreen screen only); give "
                            "the coordinator's tcp:// or ipc:// address",
                            bind);
    static const struct {
        const char *from, *to;
    } wild[] = {{"tcp://*:", "tcp://127.0.0.1:"},
                {"tcp://0.0.0.0:", "tcp://127.0.0.1:"},
                {"tcp://[::]:", "tcp://[::1]:"},
                {"tcp://[*]:", "tcp://[::1]:"}};
    for (size_t k = 0; k < sizeof wild / sizeof *wild; k++) {
        size_t fl = strlen(wild[k].from);
        if (!strncmp(bind, wild[k].from, fl)) {
            int w = snprintf(out, n, "%s%s", wild[k].to, bind + fl);
            if (w < 0 || (size_t)w >= n)
                return gs_error_set("endpoint '%s' is too long", bind);
            return 0;
        }
    }
    int w = snprintf(out, n, "%s", bind);
    if (w < 0 || (size_t)w >= n)
        return gs_error_set("endpoint '%s' is too long", bind);
    return 0;
}

int gs_cli_options_finish(gs_cli_options *o)
{
    int rc = -1;
    gs_config *c = NULL;
    c = gs_config_new();
    if (!c)
        return -1;
    if (o->config_path && gs_config_load(c, o->config_path) < 0)
        goto free_config;
    struct {
        int set;
        char *dst;
        const char *from;
        const char *key;
    } eps[] = {{o->submit_set, o->submit, c->submit, "submit"},
               {o->query_set, o->query, c->query, "query"},
               {o->events_set, o->events, c->events, "events"},
               {o->intake_set, o->intake, c->intake, "intake"}};
    /* Only an announcer uses the intake socket: a coordinator without one (intake = "") must
     * not make the other commands fail. */
    size_t n_eps = o->announcer ? 4 : 3;
    for (size_t k = 0; k < n_eps; k++) {
        if (eps[k].set)
            continue;
        if (gs_cli_connect_address(eps[k].from, eps[k].dst, GS_CLI_ENDPOINT_MAX) < 0) {
            gs_error_prefix("[coordinator] %s", eps[k].key);
            goto free_config;
        }
    }
    /* An announcer's --key is its announcer key; its events socket keeps client_key. */
    gs_security_settings ss = {c->security, c->keys_dir,
                               o->key && !o->announcer ? o->key : c->client_key,
                               o->coordinator_key ? o->coordinator_key : c->coordinator_public};
    const char *addrs[] = {o->submit, o->query, o->events, o->intake};
    if (gs_security_resolve(&o->sec, &ss, GS_SECURITY_CLIENT, "client", addrs, 3, "gastroscreen") <
        0)
        goto free_config;
    ss.own_key = o->key ? o->key : "";
    if (o->announcer && gs_security_resolve(&o->intake_sec, &ss, GS_SECURITY_CLIENT, "announcer",
                                            addrs + 3, 1, "gastroscreen") < 0)
        goto free_config;
    rc = 0;
free_config:
    gs_config_destroy(&c);
    return rc;
}

int gs_cli_request(void *zctx, gs_channel channel, const char *endpoint, const gs_curve_keys *curve,
                   gs_transport **req, const ProtobufCMessage *request, gs_inbound *in,
                   int timeout_ms)
{
    GS_ASSERT(channel == GS_CHANNEL_SUBMIT || channel == GS_CHANNEL_QUERY);
    if (!*req) {
        gs_transport_options topt = {.name = channel == GS_CHANNEL_SUBMIT ? "submit" : "query"};
        *req = gs_transport_new_curve(zctx, channel, ZMQ_REQ, GS_CONNECT, endpoint, &topt, curve);
        if (!*req)
            return gs_error_prefix("cannot connect to the coordinator at %s", endpoint);
    }
    if (gs_transport_send(*req, NULL, request, 0) < 0) {
        gs_error_prefix("sending to the coordinator at %s", endpoint);
        goto drop_socket;
    }
    zmq_pollitem_t item = {.socket = gs_transport_socket(*req), .events = ZMQ_POLLIN};
    int n;
    do
        n = zmq_poll(&item, 1, timeout_ms);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        gs_error_set("polling the coordinator at %s: %s", endpoint, zmq_strerror(errno));
        goto drop_socket;
    }
    if (n == 0) {
        gs_error_set("no reply from the coordinator at %s within %.3g s (is gastroscreend "
                     "running%s?)",
                     endpoint, timeout_ms / 1000.0,
                     curve && !strncmp(endpoint, "tcp://", 6)
                         ? ", and does its keys folder list this client's key in clients/"
                         : "");
        goto drop_socket;
    }
    gs_recv_status st = gs_transport_recv(*req, in, 0);
    if (st == GS_RECV_MESSAGE)
        return 0;
    if (st == GS_RECV_DROPPED)
        gs_error_set("malformed reply from the coordinator at %s (%s)", endpoint,
                     gs_drop_reason_name(in->drop));
    else
        gs_error_prefix("receiving from the coordinator at %s", endpoint);
    gs_inbound_release(in);
drop_socket:
    /* The request is abandoned: do not let the linger hold the exit for a second. */
    zmq_setsockopt(gs_transport_socket(*req), ZMQ_LINGER, &(int){0}, sizeof(int));
    gs_transport_destroy(req);
    return -1;
}
