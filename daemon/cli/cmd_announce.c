/*
 * cmd_announce: `gastroscreen announce PATH... [--connect|--bind ENDPOINT] [--external-id ID]
 * [--announcer NAME] [--config FILE] [--endpoint events=URL] [--timeout SECONDS]`, the
 * best-effort intake path of a scanner or a lab system (PROTOCOL.md §2, §13).
 *
 * Each PATH (resolved with realpath: an announcement names a file the coordinator reads on
 * this host's file system) is published as a `slide.arrived.` event on an intake PUB, which
 * connects to the coordinator's intake socket (the config's [coordinator] intake, --endpoint
 * intake=URL or --connect) or, with --bind, binds for a coordinator that names it in
 * intake_connect. The acknowledgement is the coordinator's `slide.accepted.` event on its
 * events socket, matched by path (and external id when one is given).
 *
 * PUB/SUB loses what is sent before a subscription reaches the publisher, in both directions:
 * so the events SUB is subscribed first and the announcements wait until it hears the
 * coordinator's once-a-second stats event (from then on no acknowledgement can be missed, and
 * a "duplicate" printed is a real one, not the echo of a first "accepted" we did not hear);
 * and every announcement not yet acknowledged is published again after 500 ms, then at
 * doubling intervals up to 4 s (the intake is idempotent: a repeat is folded into the same
 * slide). The coordinator acknowledges nothing
 * for a path it refuses (outside the slide roots, not a regular file), it only logs it: the
 * timeout message names the likely causes.
 *
 * Output, one line per PATH: "PATH: accepted as SLIDE_ID" / "PATH: duplicate of SLIDE_ID" on
 * stdout; "PATH: no acknowledgement within N s (...)" or "PATH: cannot resolve: ..." on
 * stderr. Exit status 0 when every slide was acknowledged, 1 otherwise, 2 for a usage error.
 * With CURVE the announcement goes out with the announcer key (--key, default
 * KEYS_DIR/announcer.key; the coordinator lists its public key in keys/announcers/) and the
 * acknowledgement is read with the client key (client_key, listed in keys/clients/): the
 * coordinator admits an announcer key on its intake socket only.
 */
#include "daemon/cli/commands.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "daemon/cli/client.h"
#include "ops/error.h"
#include "proto/vocab.h"

/* An unacknowledged announcement is published again after 500 ms, then at doubling intervals
 * up to 4 s: the early repeats beat the PUB's slow join, the later ones are for a coordinator
 * that starts meanwhile, and each repeat of a refused path is a line in the coordinator's
 * log. */
enum { REPEAT_FIRST_MS = 500, REPEAT_MAX_MS = 4000 };

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: gastroscreen announce PATH... [--connect ENDPOINT | --bind ENDPOINT]\n"
        "                             [--external-id ID] [--announcer NAME]\n"
        "                             [--config FILE] [--endpoint events=URL]\n"
        "                             [--timeout SECONDS] [--key FILE] [--coordinator-key FILE]\n"
        "\n"
        "Publishes a slide.arrived. event per path, as a scanner would, and waits for\n"
        "gastroscreend's slide.accepted. acknowledgement (default 30 s). Prints\n"
        "'PATH: accepted as ID' or 'PATH: duplicate of ID'; exit status 1 if a path\n"
        "was not acknowledged. --connect names the coordinator's intake socket (default:\n"
        "the config's [coordinator] intake); --bind binds the publisher instead, for a\n"
        "coordinator whose intake_connect names it. --external-id needs a single PATH.\n"
        "With CURVE, --key (default KEYS_DIR/announcer.key) must be listed in the\n"
        "coordinator's keys/announcers/, and client_key in keys/clients/ (for the events).\n");
}

typedef struct {
    const char *arg; /* as given */
    char path[PATH_MAX];
    int resolved, acknowledged;
} announcement;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int publish(gs_transport *pub, const char *path, const char *announcer,
                   const char *external_id)
{
    Gastroscreen__V1__SlideArrived a = GASTROSCREEN__V1__SLIDE_ARRIVED__INIT;
    a.path = (char *)path;
    a.announcer = (char *)announcer;
    a.external_id = (char *)external_id;
    Gastroscreen__V1__EventMessage ev = GASTROSCREEN__V1__EVENT_MESSAGE__INIT;
    ev.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    ev.time_unix_ms = (int64_t)time(NULL) * 1000;
    ev.body_case = GASTROSCREEN__V1__EVENT_MESSAGE__BODY_ARRIVED;
    ev.arrived = &a;
    /* A PUB never blocks the announcer: at the high-water mark the next round repeats it. */
    if (gs_transport_send(pub, NULL, &ev.base, GS_SEND_DONTWAIT) < 0 && errno != EAGAIN)
        return -1;
    return 0;
}

/* Marks and prints the announcement a slide.accepted. event acknowledges, if any. Returns 1
 * when it acknowledged one. */
static int on_accepted(announcement *as, size_t n, const Gastroscreen__V1__SlideAccepted *acc,
                       const char *external_id)
{
    if (!gs_slide_id_ok(acc->slide_id))
        return 0;
    for (size_t k = 0; k < n; k++) {
        announcement *a = &as[k];
        if (!a->resolved || a->acknowledged || strcmp(a->path, acc->path) != 0)
            continue;
        if (external_id[0] && strcmp(external_id, acc->external_id) != 0)
            continue;
        a->acknowledged = 1;
        printf("%s: %s %s\n", a->path, acc->duplicate ? "duplicate of" : "accepted as",
               acc->slide_id);
        fflush(stdout);
        return 1;
    }
    return 0;
}

int gs_cmd_announce(int argc, char **argv)
{
    gs_cli_options o;
    gs_cli_options_init(&o);
    o.timeout_ms = 30000;
    o.announcer = 1;
    const char *external_id = "", *connect_ep = NULL, *bind_ep = NULL;
    char host[256] = "";
    const char *announcer_name = NULL;
    announcement *as = calloc((size_t)argc, sizeof *as);
    size_t n = 0;
    if (!as) {
        fprintf(stderr, "gastroscreen announce: out of memory\n");
        return 1;
    }
    int status = 2;
    for (int i = 1; i < argc; i++) {
        int r = gs_cli_option(&o, argc, argv, &i);
        if (r < 0) {
            fprintf(stderr, "gastroscreen announce: %s\n", gs_error_get());
            goto free_announcements;
        }
        if (r > 0)
            continue;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            status = 0;
            goto free_announcements;
        }
        const char **value = !strcmp(argv[i], "--external-id") ? &external_id
                             : !strcmp(argv[i], "--connect")   ? &connect_ep
                             : !strcmp(argv[i], "--bind")      ? &bind_ep
                             : !strcmp(argv[i], "--announcer") ? &announcer_name
                                                               : NULL;
        if (value) {
            if (i + 1 >= argc) {
                fprintf(stderr, "gastroscreen announce: %s needs a value\n", argv[i]);
                goto free_announcements;
            }
            *value = argv[++i];
            continue;
        }
        if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "gastroscreen announce: unknown option '%s'\n", argv[i]);
            usage(stderr);
            goto free_announcements;
        }
        as[n++].arg = argv[i];
    }
    if (n == 0) {
        usage(stderr);
        goto free_announcements;
    }
    if (connect_ep && bind_ep) {
        fprintf(stderr, "gastroscreen announce: give --connect or --bind, not both\n");
        goto free_announcements;
    }
    if (external_id[0] && n > 1) {
        fprintf(stderr,
                "gastroscreen announce: --external-id names one slide; it was given with %zu "
                "paths (announce them one at a time)\n",
                n);
        goto free_announcements;
    }
    if (connect_ep) {
        if (gs_cli_connect_address(connect_ep, o.intake, sizeof o.intake) < 0) {
            fprintf(stderr, "gastroscreen announce: --connect: %s\n", gs_error_get());
            goto free_announcements;
        }
        o.intake_set = 1;
    } else if (bind_ep) {
        /* Kept as given: a bind address, checked by gs_cli_options_finish like the others. */
        if (snprintf(o.intake, sizeof o.intake, "%s", bind_ep) >= (int)sizeof o.intake) {
            fprintf(stderr, "gastroscreen announce: --bind: endpoint too long\n");
            goto free_announcements;
        }
        o.intake_set = 1;
    }
    if (gs_cli_options_finish(&o) < 0) {
        fprintf(stderr, "gastroscreen announce: %s\n", gs_error_get());
        goto free_announcements;
    }
    if (bind_ep && o.intake_sec.curve && !strncmp(bind_ep, "tcp://", 6)) {
        /* A bound PUB would be a CURVE server here, but the coordinator connecting to it is
         * the server of the intake domain: the roles do not fit gs_transport. */
        fprintf(stderr, "gastroscreen announce: --bind on tcp:// with CURVE keys is not "
                        "supported; bind an ipc:// endpoint or connect to the coordinator\n");
        goto free_announcements;
    }
    if (!announcer_name) {
        if (gethostname(host, sizeof host - 1) < 0 || !host[0])
            snprintf(host, sizeof host, "gastroscreen-announce");
        announcer_name = host;
    }

    status = 0;
    size_t pending = 0;
    for (size_t k = 0; k < n; k++) {
        if (!realpath(as[k].arg, as[k].path)) {
            fprintf(stderr, "gastroscreen announce: %s: cannot resolve the path: %s\n", as[k].arg,
                    strerror(errno));
            status = 1;
            continue;
        }
        as[k].resolved = 1;
        pending++;
    }
    if (pending == 0)
        goto free_announcements;

    void *ctx = zmq_ctx_new();
    gs_transport *pub = NULL;
    gs_transport *sub = gs_transport_new_curve(ctx, GS_CHANNEL_EVENTS, ZMQ_SUB, GS_CONNECT,
                                               o.events, &(gs_transport_options){.name = "events"},
                                               gs_security_curve(&o.sec));
    if (!sub || gs_transport_subscribe(sub, "slide.accepted.") < 0 ||
        gs_transport_subscribe(sub, "stats.coordinator.") < 0) {
        fprintf(stderr, "gastroscreen announce: %s\n", gs_error_get());
        status = 1;
        goto close_sockets;
    }
    pub = gs_transport_new_curve(ctx, GS_CHANNEL_INTAKE, ZMQ_PUB, bind_ep ? GS_BIND : GS_CONNECT,
                                 o.intake, &(gs_transport_options){.name = "intake"},
                                 bind_ep ? NULL : gs_security_curve(&o.intake_sec));
    if (!pub) {
        fprintf(stderr, "gastroscreen announce: %s\n", gs_error_get());
        status = 1;
        goto close_sockets;
    }

    int64_t deadline = now_ms() + o.timeout_ms, next_send = 0, repeat_ms = REPEAT_FIRST_MS;
    int heard = 0; /* the SUB heard the coordinator: its subscriptions are in place */
    while (pending > 0) {
        int64_t t = now_ms();
        if (t >= deadline)
            break;
        if (heard && t >= next_send) {
            for (size_t k = 0; k < n; k++)
                if (as[k].resolved && !as[k].acknowledged &&
                    publish(pub, as[k].path, announcer_name, external_id) < 0)
                    fprintf(stderr, "gastroscreen announce: %s: %s\n", as[k].path, gs_error_get());
            next_send = t + repeat_ms;
            repeat_ms = repeat_ms * 2 > REPEAT_MAX_MS ? REPEAT_MAX_MS : repeat_ms * 2;
        }
        int64_t until = heard && next_send < deadline ? next_send : deadline;
        zmq_pollitem_t item = {.socket = gs_transport_socket(sub), .events = ZMQ_POLLIN};
        int rc = zmq_poll(&item, 1, (long)(until - t));
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc < 0) {
            fprintf(stderr, "gastroscreen announce: %s\n", zmq_strerror(errno));
            break;
        }
        if (rc == 0)
            continue;
        gs_inbound in = {0};
        if (gs_transport_recv(sub, &in, GS_RECV_DONTWAIT) == GS_RECV_MESSAGE) {
            heard = 1;
            const Gastroscreen__V1__EventMessage *e = in.msg.event;
            if (e->body_case == GASTROSCREEN__V1__EVENT_MESSAGE__BODY_ACCEPTED &&
                on_accepted(as, n, e->accepted, external_id))
                pending--;
        }
        gs_inbound_release(&in);
    }
    for (size_t k = 0; k < n; k++) {
        if (!as[k].resolved || as[k].acknowledged)
            continue;
        status = 1;
        fprintf(stderr,
                "gastroscreen announce: %s: no acknowledgement within %.3g s (is gastroscreend "
                "running, is this path under its slide_roots, is this key listed in "
                "keys/announcers/?)\n",
                as[k].path, o.timeout_ms / 1000.0);
    }
    if (!heard)
        fprintf(stderr,
                "gastroscreen announce: nothing heard from the coordinator's events socket at "
                "%s, so nothing was announced\n",
                o.events);

close_sockets:
    /* Unacknowledged announcements are abandoned: do not let the linger hold the exit. */
    if (pub)
        zmq_setsockopt(gs_transport_socket(pub), ZMQ_LINGER, &(int){0}, sizeof(int));
    gs_transport_destroy(&pub);
    gs_transport_destroy(&sub);
    zmq_ctx_term(ctx);
free_announcements:
    free(as);
    return status;
}
