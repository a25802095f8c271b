/*
 * cmd_top: `gastroscreen top [--once] [--json] [--config FILE] [--endpoint events=URL]
 * [--timeout SECONDS]`, live throughput per stage.
 *
 * Subscribes to `stats.` on the coordinator's events socket: the coordinator publishes its own
 * StageStats (with slides in flight and the newest journal sequence number) once a second and
 * republishes each worker's heartbeat stats as `stats.<stage>.` (PROTOCOL.md §3, §5). top
 * keeps the latest stats of every instance, forgets an instance not heard from for 5 s, and
 * shows per stage: instances, tiles/s (sum), queue depth (sum), busy % (mean over instances),
 * items processed, errors and malformed messages (sums), resident memory (sum); and the slides
 * in flight. It redraws once a second (in place on a terminal).
 *
 * --once collects one heartbeat round (from one coordinator stats event to the next, so every
 * live worker has reported) and prints one frame; --json prints that snapshot as JSON:
 *     {"last_seq": N, "slides_in_flight": N, "coordinator": {...},
 *      "stages": [{"stage": "tiler", "instances": N, "tiles_per_second": X,
 *                  "queue_depth": N, "busy_percent": X, "processed": N, "errors": N,
 *                  "malformed": N, "wrong_type": N, "rss_bytes": N}, ... every stage]}
 */
#include "daemon/cli/commands.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/cli/client.h"
#include "ops/error.h"
#include "stages/runtime/fileio.h"

enum { MAX_INSTANCES = 512, STALE_MS = 5000, N_STAGES = 7 };

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: gastroscreen top [--once] [--json] [--config FILE]\n"
               "                        [--endpoint events=URL] [--timeout SECONDS]\n"
               "                        [--key FILE] [--coordinator-key FILE]\n"
               "\n"
               "Live per-stage throughput of gastroscreend and its workers: tiles/s, queue\n"
               "depth, busy %%, slides in flight. --once prints one snapshot; --json as JSON.\n");
}

typedef struct {
    char id[256];
    int stage;
    double tiles_per_second, busy_fraction;
    uint64_t queue_depth, processed, errors, malformed, wrong_type, rss;
    uint32_t slides_in_flight;
    int64_t seen_ms;
} instance;

typedef struct {
    instance inst[MAX_INSTANCES];
    size_t n;
    uint64_t last_seq;
    int have_coordinator;
} board;

typedef struct {
    int instances;
    double tiles_per_second, busy_sum;
    uint64_t queue_depth, processed, errors, malformed, wrong_type, rss;
} stage_total;

/* Checks a stats event's content. Returns 0 or -1 with the error set. */
static int check_stats(const Gastroscreen__V1__StageStats *s)
{
    if (s->stage < GASTROSCREEN__V1__STAGE__STAGE_TILER ||
        s->stage > GASTROSCREEN__V1__STAGE__STAGE_COORDINATOR)
        return gs_error_set("stats of stage %d", (int)s->stage);
    size_t idl = strlen(s->instance_id);
    if (idl == 0 || idl >= sizeof((instance *)0)->id)
        return gs_error_set("stats with an empty or too long instance id");
    if (!isfinite(s->tiles_per_second) || s->tiles_per_second < 0 || !isfinite(s->busy_fraction) ||
        s->busy_fraction < 0 || s->busy_fraction > 1)
        return gs_error_set("stats of %.64s with tiles/s %g, busy %g", s->instance_id,
                            s->tiles_per_second, s->busy_fraction);
    return 0;
}

static void forget_stale(board *b, int64_t now)
{
    size_t k = 0;
    for (size_t i = 0; i < b->n; i++)
        if (now - b->inst[i].seen_ms <= STALE_MS)
            b->inst[k++] = b->inst[i];
    b->n = k;
}

/* Records one stats event. Returns 1 when it was the coordinator's, 0 otherwise. */
static int record(board *b, const Gastroscreen__V1__EventMessage *e)
{
    const Gastroscreen__V1__StageStats *s = e->stats;
    int64_t now = gs_mono_ms();
    forget_stale(b, now);
    instance *in = NULL;
    for (size_t i = 0; i < b->n && !in; i++)
        if (!strcmp(b->inst[i].id, s->instance_id))
            in = &b->inst[i];
    if (!in) {
        if (b->n == MAX_INSTANCES)
            return 0; /* more workers than anyone runs: the rest are left out */
        in = &b->inst[b->n++];
        snprintf(in->id, sizeof in->id, "%s", s->instance_id);
    }
    in->stage = s->stage;
    in->tiles_per_second = s->tiles_per_second;
    in->busy_fraction = s->busy_fraction;
    in->queue_depth = s->queue_depth;
    in->processed = s->processed;
    in->errors = s->errors;
    in->malformed = s->malformed;
    in->wrong_type = s->wrong_type;
    in->rss = s->rss_bytes;
    in->slides_in_flight = s->slides_in_flight;
    in->seen_ms = now;
    if (s->stage == GASTROSCREEN__V1__STAGE__STAGE_COORDINATOR) {
        b->have_coordinator = 1;
        if (e->last_seq > b->last_seq)
            b->last_seq = e->last_seq;
        return 1;
    }
    return 0;
}

/* Sums per stage (index = the Stage enum value). Returns the slides in flight (newest
 * coordinator's report). */
static uint32_t totals(const board *b, stage_total t[N_STAGES + 1])
{
    memset(t, 0, sizeof(stage_total) * (N_STAGES + 1));
    uint32_t in_flight = 0;
    int64_t newest = -1;
    for (size_t i = 0; i < b->n; i++) {
        const instance *in = &b->inst[i];
        stage_total *s = &t[in->stage];
        s->instances++;
        s->tiles_per_second += in->tiles_per_second;
        s->busy_sum += in->busy_fraction;
        s->queue_depth += in->queue_depth;
        s->processed += in->processed;
        s->errors += in->errors;
        s->malformed += in->malformed;
        s->wrong_type += in->wrong_type;
        s->rss += in->rss;
        if (in->stage == GASTROSCREEN__V1__STAGE__STAGE_COORDINATOR && in->seen_ms > newest) {
            newest = in->seen_ms;
            in_flight = in->slides_in_flight;
        }
    }
    return in_flight;
}

static json_t *snapshot_json(const board *b)
{
    stage_total t[N_STAGES + 1];
    uint32_t in_flight = totals(b, t);
    json_t *stages = json_array();
    json_t *coordinator = NULL;
    for (int st = 1; st <= N_STAGES; st++) {
        const stage_total *s = &t[st];
        json_t *o = json_pack("{s:s, s:i, s:f, s:I, s:f, s:I, s:I, s:I, s:I, s:I}", "stage",
                              gs_stage_name((Gastroscreen__V1__Stage)st), "instances", s->instances,
                              "tiles_per_second", s->tiles_per_second, "queue_depth",
                              (json_int_t)s->queue_depth, "busy_percent",
                              s->instances ? 100.0 * s->busy_sum / s->instances : 0.0, "processed",
                              (json_int_t)s->processed, "errors", (json_int_t)s->errors,
                              "malformed", (json_int_t)s->malformed, "wrong_type",
                              (json_int_t)s->wrong_type, "rss_bytes", (json_int_t)s->rss);
        if (st == GASTROSCREEN__V1__STAGE__STAGE_COORDINATOR)
            coordinator = o;
        else
            json_array_append_new(stages, o);
    }
    return json_pack("{s:I, s:i, s:o, s:o}", "last_seq", (json_int_t)b->last_seq,
                     "slides_in_flight", (int)in_flight, "coordinator", coordinator, "stages",
                     stages);
}

static void print_table(const board *b, const char *endpoint, int tty)
{
    stage_total t[N_STAGES + 1];
    uint32_t in_flight = totals(b, t);
    if (tty)
        printf("\033[H\033[2J");
    printf("gastroscreen top — %s — slides in flight: %u — journal seq %llu\n\n", endpoint,
           in_flight, (unsigned long long)b->last_seq);
    printf("%-12s %5s %10s %7s %7s %12s %8s %9s %9s\n", "STAGE", "INST", "TILES/S", "QUEUE",
           "BUSY%", "PROCESSED", "ERRORS", "MALFORMED", "RSS MiB");
    for (int st = 1; st <= N_STAGES; st++) {
        const stage_total *s = &t[st];
        printf("%-12s %5d %10.1f %7llu %7.1f %12llu %8llu %9llu %9.1f\n",
               gs_stage_name((Gastroscreen__V1__Stage)st), s->instances, s->tiles_per_second,
               (unsigned long long)s->queue_depth,
               s->instances ? 100.0 * s->busy_sum / s->instances : 0.0,
               (unsigned long long)s->processed, (unsigned long long)s->errors,
               (unsigned long long)(s->malformed + s->wrong_type), s->rss / 1048576.0);
    }
    if (!tty)
        printf("\n");
    fflush(stdout);
}

int gs_cmd_top(int argc, char **argv)
{
    gs_cli_options o;
    gs_cli_options_init(&o);
    int once = 0, as_json = 0;
    for (int i = 1; i < argc; i++) {
        int r = gs_cli_option(&o, argc, argv, &i);
        if (r < 0) {
            fprintf(stderr, "gastroscreen top: %s\n", gs_error_get());
            return 2;
        }
        if (r > 0)
            continue;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--once")) {
            once = 1;
        } else if (!strcmp(argv[i], "--json")) {
            as_json = 1;
        } else {
            fprintf(stderr, "gastroscreen top: unexpected argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (as_json && !once) {
        fprintf(stderr, "gastroscreen top: --json needs --once\n");
        return 2;
    }
    if (gs_cli_options_finish(&o) < 0) {
        fprintf(stderr, "gastroscreen top: %s\n", gs_error_get());
        return 2;
    }
    board *b = calloc(1, sizeof *b);
    if (!b) {
        fprintf(stderr, "gastroscreen top: out of memory\n");
        return 1;
    }

    int status = 1;
    void *ctx = zmq_ctx_new();
    gs_transport *sub = gs_transport_new_curve(ctx, GS_CHANNEL_EVENTS, ZMQ_SUB, GS_CONNECT,
                                               o.events, &(gs_transport_options){.name = "events"},
                                               gs_security_curve(&o.sec));
    if (!sub || gs_transport_subscribe(sub, "stats.") < 0) {
        fprintf(stderr, "gastroscreen top: %s\n", gs_error_get());
        goto close_socket;
    }
    struct sigaction sa = {.sa_handler = on_signal}, old_int, old_term;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    stop_requested = 0;
    int tty = isatty(STDOUT_FILENO);
    int coordinator_rounds = 0;
    int64_t last_draw = 0, last_heard = gs_mono_ms();
    status = 0;
    while (!stop_requested) {
        zmq_pollitem_t item = {.socket = gs_transport_socket(sub), .events = ZMQ_POLLIN};
        int n = zmq_poll(&item, 1, 1000);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fprintf(stderr, "gastroscreen top: %s\n", zmq_strerror(errno));
            status = 1;
            break;
        }
        int64_t now = gs_mono_ms();
        if (n > 0) {
            gs_inbound in = {0};
            if (gs_transport_recv(sub, &in, GS_RECV_DONTWAIT) == GS_RECV_MESSAGE) {
                /* Only stats bodies pass the transport's topic check under "stats.". */
                if (in.msg.event->body_case != GASTROSCREEN__V1__EVENT_MESSAGE__BODY_STATS) {
                } else if (check_stats(in.msg.event->stats) < 0)
                    fprintf(stderr, "gastroscreen top: dropping malformed stats: %s\n",
                            gs_error_get());
                else if (record(b, in.msg.event)) {
                    coordinator_rounds++;
                    last_heard = now;
                }
            }
            gs_inbound_release(&in);
        }
        if (!b->have_coordinator && now - last_heard >= o.timeout_ms) {
            fprintf(stderr,
                    "gastroscreen top: no stats from the coordinator at %s within %.3g s (is "
                    "gastroscreend running?)\n",
                    o.events, o.timeout_ms / 1000.0);
            status = 1;
            break;
        }
        if (once) {
            /* From one coordinator stats event to the next every live worker has reported. */
            if (coordinator_rounds >= 2)
                break;
            continue;
        }
        if (b->have_coordinator && now - last_draw >= 1000) {
            forget_stale(b, now);
            print_table(b, o.events, tty);
            last_draw = now;
        }
    }
    if (once && status == 0 && !stop_requested) {
        forget_stale(b, gs_mono_ms());
        if (as_json) {
            json_t *j = snapshot_json(b);
            json_dumpf(j, stdout, JSON_INDENT(2));
            printf("\n");
            json_decref(j);
        } else {
            print_table(b, o.events, 0);
        }
    }
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
close_socket:
    gs_transport_destroy(&sub);
    zmq_ctx_term(ctx);
    free(b);
    return status;
}
