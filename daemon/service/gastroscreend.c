/*
 * gastroscreend: the coordinator daemon (PROTOCOL.md). A thin main over daemon/service/coordinator:
 * reads the config (--config FILE), loads the model bundle (its sha256 is what workers must
 * match, its provenance goes into every verdict), binds the endpoints, serves /metrics, the
 * worklist page and its JSON and the slide viewer on one HTTP port (daemon/service/http,
 * daemon/service/worklist: the slide table is copied into the worklist's snapshot from the
 * loop's tick, which also tells daemon/service/viewer where each slide and report is), tells
 * systemd READY=1 once the sockets are up and the model is loaded, then runs the loop until
 * SIGTERM / SIGINT, sending STATUS (one line with throughput) and WATCHDOG=1 (when
 * WATCHDOG_USEC is set) from the loop once a second.
 *
 * Exit status: 0 after a clean stop or --help; 2 for a bad command line; 1 otherwise.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "daemon/service/config.h"
#include "daemon/service/coordinator.h"
#include "daemon/service/http.h"
#include "daemon/service/metrics.h"
#include "daemon/service/viewer.h"
#include "daemon/service/worklist.h"
#include "model/network.h"
#include "ops/error.h"
#include "stages/runtime/fileio.h"
#include "stages/runtime/log.h"
#include "stages/runtime/keys.h"
#include "stages/runtime/provenance.h"

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static void usage(FILE *f)
{
    fputs("usage: gastroscreend [--config FILE] [--model BUNDLE] [--quiet]\n"
          "  --config FILE   settings (INI; systemd/gastroscreen.conf documents every key);\n"
          "                  default /etc/gastroscreen/gastroscreen.conf if it exists\n"
          "  --model BUNDLE  the model bundle, overriding [model] bundle\n"
          "  --quiet         no log lines about workers and slides\n",
          f);
}

/* The coordinator's sockets as ZAP domains, the label of gastroscreen_auth_refused_total. */
static const char *const AUTH_ENDPOINTS[] = {"work", "submit", "query", "events", "intake"};

typedef struct {
    gs_coordinator *c;
    gs_zap *zap;
    gs_worklist *worklist; /* NULL without the HTTP server */
    gs_viewer *viewer;     /* the slide viewer's routes (with the worklist) */
    int fam_auth;
    int watchdog;
    int fam_inferred;
    int fam_slides, fam_verdicts, fam_malformed, fam_wrong, fam_ignored, fam_tiles, fam_jobs,
        fam_workers_ev, fam_workers, fam_tps, fam_busy, fam_queue, fam_seq, fam_poison,
        fam_slide_secs, fam_tile_secs, fam_degraded;
    int fam_in_flight, fam_active;
} daemon_state;

static void on_tick(const gs_coordinator_stats *s, void *ud)
{
    daemon_state *d = ud;
    const gs_coordinator_stage_stats *infer = &s->stage[GASTROSCREEN__V1__STAGE__STAGE_INFER];
    sd_notifyf(
        0,
        "STATUS=%u slides in flight, %.1f tiles/s (infer %.1f tiles/s, %u workers), "
        "%llu verdicts",
        s->slides_in_flight, s->tiles_per_second, infer->tiles_per_second, infer->workers,
        (unsigned long long)(s->verdicts[1] + s->verdicts[2] + s->verdicts[3] + s->verdicts[4]));
    if (d->watchdog)
        sd_notify(0, "WATCHDOG=1");
    /* The loop's thread, between messages: the one place the slide table may be read. */
    if (d->worklist &&
        gs_worklist_publish(d->worklist, gs_coordinator_slides(d->c), s, gs_unix_ms()) != 0)
        gs_log_line("gastroscreend", "coordinator", NULL, GS_LOG_WARNING, gs_error_get());
}

static void collect(gs_metrics_sink *k, void *ud)
{
    daemon_state *d = ud;
    gs_coordinator_stats s;
    gs_coordinator_stats_get(d->c, &s);
    gs_metrics_sample(k, d->fam_slides, "accepted", (double)s.slides_accepted);
    gs_metrics_sample(k, d->fam_slides, "duplicate", (double)s.intake_duplicates);
    gs_metrics_sample(k, d->fam_slides, "rejected", (double)s.intake_rejected);
    gs_metrics_sample(k, d->fam_slides, "refused", (double)s.intake_refused);
    gs_metrics_sample(k, d->fam_degraded, NULL, (double)s.journal_degraded);
    for (int v = GS_VERDICT_NEGATIVE; v <= GS_VERDICT_FAILED; v++)
        gs_metrics_sample(k, d->fam_verdicts, gs_verdict_class_name(v), (double)s.verdicts[v]);
    gs_metrics_sample(k, d->fam_poison, "poison", (double)s.failed_poison);
    gs_metrics_sample(k, d->fam_poison, "other",
                      (double)(s.verdicts[GS_VERDICT_FAILED] - s.failed_poison));
    for (int i = 0; i < GS_COORD_SOCKET_COUNT; i++) {
        gs_metrics_sample(k, d->fam_malformed, gs_coord_socket_name(i), (double)s.malformed[i]);
        gs_metrics_sample(k, d->fam_wrong, gs_coord_socket_name(i), (double)s.wrong_type[i]);
    }
    gs_metrics_sample(k, d->fam_ignored, "stale", (double)s.stale);
    gs_metrics_sample(k, d->fam_ignored, "duplicate", (double)s.duplicates);
    gs_metrics_sample(k, d->fam_ignored, "refused", (double)s.results_refused);
    gs_metrics_sample(k, d->fam_tiles, "recorded", (double)s.tiles_recorded);
    gs_metrics_sample(k, d->fam_tiles, "rerequested", (double)s.tiles_rerequested);
    for (size_t i = 0; i < s.n_inferred; i++)
        gs_metrics_sample(k, d->fam_inferred, s.inferred[i].precision, (double)s.inferred[i].tiles);
    gs_metrics_sample(k, d->fam_jobs, "sent", (double)s.jobs_sent);
    gs_metrics_sample(k, d->fam_jobs, "resent", (double)s.jobs_resent);
    gs_metrics_sample(k, d->fam_workers_ev, "welcomed", (double)s.workers_welcomed);
    gs_metrics_sample(k, d->fam_workers_ev, "refused", (double)s.workers_refused);
    gs_metrics_sample(k, d->fam_workers_ev, "lost", (double)s.workers_lost);
    gs_metrics_sample(k, d->fam_workers_ev, "goodbye", (double)s.workers_goodbye);
    gs_metrics_sample(k, d->fam_in_flight, NULL, (double)s.slides_in_flight);
    gs_metrics_sample(k, d->fam_active, NULL, (double)s.slides_active);
    for (int st = GASTROSCREEN__V1__STAGE__STAGE_TILER;
         st <= GASTROSCREEN__V1__STAGE__STAGE_COORDINATOR; st++) {
        const char *name = gs_stage_name(st);
        gs_metrics_sample(k, d->fam_workers, name, (double)s.stage[st].workers);
        gs_metrics_sample(k, d->fam_tps, name, s.stage[st].tiles_per_second);
        gs_metrics_sample(k, d->fam_busy, name, s.stage[st].busy_fraction);
        gs_metrics_sample(k, d->fam_queue, name, (double)s.stage[st].queue_depth);
    }
    gs_metrics_sample(k, d->fam_seq, NULL, (double)s.last_seq);
    for (size_t i = 0; i < sizeof AUTH_ENDPOINTS / sizeof AUTH_ENDPOINTS[0]; i++)
        gs_metrics_sample(k, d->fam_auth, AUTH_ENDPOINTS[i],
                          d->zap ? (double)gs_zap_refused(d->zap, AUTH_ENDPOINTS[i]) : 0.0);
    gs_metrics_sample_histogram(k, d->fam_slide_secs, NULL, s.slide_seconds.counts,
                                s.slide_seconds.sum);
    gs_metrics_sample_histogram(k, d->fam_tile_secs,
                                gs_stage_name(GASTROSCREEN__V1__STAGE__STAGE_BLUR),
                                s.tile_seconds[0].counts, s.tile_seconds[0].sum);
    gs_metrics_sample_histogram(k, d->fam_tile_secs,
                                gs_stage_name(GASTROSCREEN__V1__STAGE__STAGE_INFER),
                                s.tile_seconds[1].counts, s.tile_seconds[1].sum);
}

static int register_metrics(gs_metrics *m, daemon_state *d)
{
    const double *slide_b, *tile_b;
    size_t n_slide_b = gs_coordinator_slide_bounds(&slide_b);
    size_t n_tile_b = gs_coordinator_tile_bounds(&tile_b);
    if ((d->fam_slides = gs_metrics_counter(m, "gastroscreen_intake_total",
                                            "Slide intakes by outcome", "outcome")) < 0 ||
        (d->fam_verdicts = gs_metrics_counter(m, "gastroscreen_verdicts_total",
                                              "Verdicts published by class", "class")) < 0 ||
        (d->fam_poison = gs_metrics_counter(m, "gastroscreen_slides_failed_total",
                                            "Slides failed, poison or other reasons", "reason")) <
            0 ||
        (d->fam_malformed = gs_metrics_counter(m, "gastroscreen_messages_malformed_total",
                                               "Malformed messages dropped", "socket")) < 0 ||
        (d->fam_wrong = gs_metrics_counter(m, "gastroscreen_messages_wrong_type_total",
                                           "Messages of the wrong type dropped", "socket")) < 0 ||
        (d->fam_ignored =
             gs_metrics_counter(m, "gastroscreen_results_ignored_total",
                                "Results ignored: stale or duplicate (fence, ledger), or refused "
                                "(not from the worker the job or tile was sent to)",
                                "reason")) < 0 ||
        (d->fam_tiles = gs_metrics_counter(m, "gastroscreen_tiles_total",
                                           "Tile outcomes recorded and re-requests sent", "kind")) <
            0 ||
        (d->fam_inferred = gs_metrics_counter(
             m, "gastroscreen_tiles_inferred_total",
             "Tiles inferred, by the multi-task network's precision on the infer worker",
             "precision")) < 0 ||
        (d->fam_jobs = gs_metrics_counter(m, "gastroscreen_jobs_total", "Jobs sent to workers",
                                          "kind")) < 0 ||
        (d->fam_workers_ev = gs_metrics_counter(m, "gastroscreen_worker_events_total",
                                                "Worker life-cycle events", "event")) < 0 ||
        (d->fam_in_flight = gs_metrics_gauge(
             m, "gastroscreen_slides_in_flight",
             "Slides accepted and without a verdict, incl. those waiting for a slot", NULL)) < 0 ||
        (d->fam_active =
             gs_metrics_gauge(m, "gastroscreen_slides_active",
                              "Slides being worked on (at most max_slides_in_flight)", NULL)) < 0 ||
        (d->fam_workers =
             gs_metrics_gauge(m, "gastroscreen_workers", "Live workers per stage", "stage")) < 0 ||
        (d->fam_tps = gs_metrics_gauge(m, "gastroscreen_stage_tiles_per_second",
                                       "Items per second over the last 10 s", "stage")) < 0 ||
        (d->fam_busy = gs_metrics_gauge(m, "gastroscreen_stage_busy_ratio",
                                        "Mean busy share of the stage's workers", "stage")) < 0 ||
        (d->fam_queue = gs_metrics_gauge(m, "gastroscreen_stage_queue_depth",
                                         "Items received and not finished", "stage")) < 0 ||
        (d->fam_seq = gs_metrics_gauge(m, "gastroscreen_journal_last_seq",
                                       "Newest journal sequence number", NULL)) < 0 ||
        (d->fam_degraded = gs_metrics_gauge(
             m, "gastroscreen_journal_degraded",
             "1 while the journal folder cannot be written (new slides refused)", NULL)) < 0 ||
        (d->fam_auth =
             gs_metrics_counter(m, "gastroscreen_auth_refused_total",
                                "Connections refused by the key check (ZAP)", "endpoint")) < 0 ||
        (d->fam_slide_secs = gs_metrics_histogram(
             m, "gastroscreen_slide_duration_seconds",
             "Seconds from a slide's acceptance to its verdict", NULL, slide_b, n_slide_b)) < 0 ||
        (d->fam_tile_secs =
             gs_metrics_histogram(m, "gastroscreen_tile_round_trip_seconds",
                                  "Seconds from a tile's request to the result that recorded it",
                                  "stage", tile_b, n_tile_b)) < 0)
        return -1;
    gs_metrics_set_collector(m, collect, d);
    return 0;
}

/* The compiler that built this binary, for gastroscreen_build_info ("gcc 12.2.0"), from the
 * version macros: clang's __clang_version__ ends in a space and gcc's __VERSION__ lacks the
 * name. */
#define GS_STRINGIFY_(x) #x
#define GS_STRINGIFY(x) GS_STRINGIFY_(x)
#define GS_DOTTED(a, b, c) GS_STRINGIFY(a) "." GS_STRINGIFY(b) "." GS_STRINGIFY(c)
#if defined(__clang__)
#define GS_COMPILER "clang " GS_DOTTED(__clang_major__, __clang_minor__, __clang_patchlevel__)
#elif defined(__GNUC__)
#define GS_COMPILER "gcc " GS_DOTTED(__GNUC__, __GNUC_MINOR__, __GNUC_PATCHLEVEL__)
#else
#define GS_COMPILER "unknown"
#endif

/* gastroscreen_build_info and gastroscreen_model_info: constant series that say which build
 * and which model bundle produced the other numbers, so a dashboard shows them and an alert
 * or a query can join on them (a changed sha256 after a restart marks a model change). */
static int register_info_metrics(gs_metrics *m, const gs_provenance *prov)
{
    const char *build_keys[] = {"version", "compiler"};
    const char *build_values[] = {GS_VERSION, GS_COMPILER};
    const char *model_keys[] = {"bundle", "sha256", "format_version", "untrained", "trained_on"};
    const char *model_values[] = {prov->bundle, prov->sha256, prov->format_version,
                                  prov->notice[0] ? "true" : "false", prov->trained_on};
    if (gs_metrics_info(m, "gastroscreen_build_info", "The gastroscreend build (always 1)",
                        build_keys, build_values, sizeof build_keys / sizeof *build_keys) < 0 ||
        gs_metrics_info(m, "gastroscreen_model_info",
                        "The model bundle the coordinator loaded (always 1); untrained=\"true\" "
                        "when the multi-task or the screener network has no trained weights",
                        model_keys, model_values, sizeof model_keys / sizeof *model_keys) < 0)
        return -1;
    return 0;
}

/* The one HTTP server ([coordinator] metrics: its listen address, "" = none): /metrics, the
 * worklist page, its JSON and assets, and the viewer of every reported slide. Off loopback it needs
 * [coordinator] http_token_file, and says so in the log (where the token is, never the token). */
static int start_http(const gs_config *cfg, gs_metrics *metrics, daemon_state *d, int untrained,
                      gs_http **out)
{
    if (!cfg->metrics[0])
        return 0;
    char token[GS_HTTP_TOKEN_MAX + 1] = "";
    if (cfg->http_token_file[0] && gs_http_read_token(cfg->http_token_file, token, sizeof token))
        return gs_error_prefix("[coordinator] http_token_file");
    gs_http_options o = {.listen = cfg->metrics, .token = token};
    gs_http *h = gs_http_new(&o);
    int has_token = token[0] != '\0';
    memset(token, 0, sizeof token);
    if (!h)
        return gs_error_prefix("[coordinator] metrics");
    const char *web_dir = gs_worklist_web_dir(cfg->web_dir);
    if (!(d->worklist = gs_worklist_new(untrained)) ||
        gs_worklist_publish(d->worklist, gs_coordinator_slides(d->c), NULL, gs_unix_ms()) != 0 ||
        gs_worklist_routes(h, d->worklist, web_dir) != 0 ||
        !(d->viewer = gs_viewer_new(&(gs_viewer_options){
              .lookup = gs_worklist_lookup, .user = d->worklist, .web_dir = web_dir})) ||
        gs_viewer_routes(d->viewer, h) != 0 ||
        gs_http_route(h, "/metrics", gs_metrics_serve, metrics) != 0 || gs_http_start(h) != 0) {
        gs_http_destroy(&h);
        return -1;
    }
    if (gs_http_is_loopback(h))
        gs_log_linef("gastroscreend", "coordinator", NULL, GS_LOG_INFO,
                     "web pages and /metrics on http://%s/ (loopback only%s); pages from %s",
                     cfg->metrics, has_token ? ", token required" : "", web_dir);
    else
        gs_log_linef("gastroscreend", "coordinator", NULL, GS_LOG_WARNING,
                     "web pages and /metrics on %s, reachable from other hosts: every request "
                     "needs the token in %s (a browser opens http://HOST:%d/?token=TOKEN once; "
                     "Prometheus sends it as a bearer token); pages from %s",
                     cfg->metrics, cfg->http_token_file, gs_http_port(h), web_dir);
    *out = h;
    return 0;
}

/* A warning about the settings at start, in the log like every other line. */
static void warn_line(const char *line, void *ud)
{
    (void)ud;
    gs_log_line("gastroscreend", "coordinator", NULL, GS_LOG_WARNING, line);
}

int main(int argc, char **argv)
{
    const char *config_path = NULL, *model_path = NULL;
    int quiet = 0;
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"model", required_argument, NULL, 'm'},
                                         {"quiet", no_argument, NULL, 'q'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "c:m:qh", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            config_path = optarg;
            break;
        case 'm':
            model_path = optarg;
            break;
        case 'q':
            quiet = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "gastroscreend: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    int rc = 1;
    gs_config *cfg = gs_config_new();
    gs_model *model = NULL;
    gs_coordinator *c = NULL;
    gs_metrics *metrics = NULL;
    gs_http *http = NULL;
    void *zctx = NULL;
    gs_zap *zap = NULL;
    gs_security sec;
    daemon_state d = {0};
    if (!cfg)
        goto out;
    if (!config_path && access("/etc/gastroscreen/gastroscreen.conf", R_OK) == 0)
        config_path = "/etc/gastroscreen/gastroscreen.conf";
    if (config_path && gs_config_load(cfg, config_path) != 0)
        goto out;
    if (gs_config_check_start(cfg, warn_line, NULL) != 0)
        goto out;
    const char *bundle = model_path ? model_path : cfg->bundle;
    /* The coordinator runs no network: it needs the bundle's provenance and that the bundle is
     * sound (names, shapes, metadata), not folded weights. */
    model = gs_model_load_nets(bundle, NULL, 0);
    if (!model)
        goto out;
    gs_provenance prov;
    const gs_net_id nets[] = {GS_NET_MULTITASK, GS_NET_SCREENER};
    if (gs_provenance_init(&prov, bundle, model, nets, 2) != 0)
        goto out;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    gs_decision decision;
    gs_config_decision(cfg, model, &decision);

    /* PROTOCOL.md §2: CURVE on the tcp:// sockets, and the ZAP handler running before any of
     * them binds (without it libzmq would admit every client key). */
    gs_security_settings ss = {cfg->security, cfg->keys_dir, cfg->coordinator_key, ""};
    const char *eps[] = {cfg->work, cfg->submit, cfg->query, cfg->events, cfg->intake};
    if (gs_security_resolve(&sec, &ss, GS_SECURITY_SERVER, "coordinator", eps,
                            sizeof eps / sizeof eps[0], "gastroscreend") != 0)
        goto out;
    if (!(zctx = zmq_ctx_new())) {
        gs_error_set("zmq_ctx_new: %s", zmq_strerror(errno));
        goto out;
    }
    if (sec.curve) {
        if (!(zap = gs_zap_new(zctx, cfg->keys_dir, "gastroscreend")))
            goto out;
        gs_zap_reload_on_sighup();
    }

    gs_coordinator_options o;
    gs_coordinator_options_default(&o);
    o.zmq_ctx = zctx;
    o.curve = gs_security_curve(&sec);
    o.zap = zap;
    o.config = cfg;
    o.model = &prov.msg;
    o.decision = &decision;
    o.on_tick = on_tick;
    o.tick_ud = &d;
    o.stop = &g_stop;
    o.quiet = quiet;
    c = gs_coordinator_new(&o);
    if (!c)
        goto out;
    d.c = c;
    d.zap = zap;
    uint64_t usec = 0;
    d.watchdog = sd_watchdog_enabled(0, &usec) > 0;
    metrics = gs_metrics_new(NULL);
    if (!metrics || register_info_metrics(metrics, &prov) != 0 ||
        register_metrics(metrics, &d) != 0 ||
        start_http(cfg, metrics, &d, prov.notice[0] != '\0', &http) != 0)
        goto out;
    if (!quiet)
        fprintf(stderr,
                "gastroscreend: coordinator %s: work %s, events %s, query %s, submit %s; model "
                "%s (%s); %s%s%s\n",
                "ready", gs_coordinator_endpoint(c, GS_CHANNEL_WORK),
                gs_coordinator_endpoint(c, GS_CHANNEL_EVENTS),
                gs_coordinator_endpoint(c, GS_CHANNEL_QUERY),
                gs_coordinator_endpoint(c, GS_CHANNEL_SUBMIT), prov.bundle, prov.sha256,
                sec.curve ? "CURVE on tcp sockets, keys reloaded on SIGHUP" : "plain sockets",
                prov.notice[0] ? "; " : "", prov.notice);
    sd_notify(0, "READY=1");
    rc = gs_coordinator_run(c) == 0 ? 0 : 1;
    sd_notify(0, "STOPPING=1");

out:
    if (rc != 0 && gs_error_get()[0])
        fprintf(stderr, "gastroscreend: %s\n", gs_error_get());
    gs_http_destroy(&http); /* first: its handlers read the registry and the worklist */
    gs_metrics_destroy(&metrics);
    gs_viewer_destroy(&d.viewer);
    gs_worklist_destroy(&d.worklist);
    gs_coordinator_destroy(&c);
    gs_zap_destroy(&zap);
    if (zctx)
        zmq_ctx_term(zctx);
    gs_model_destroy(&model);
    gs_config_destroy(&cfg);
    return rc;
}
