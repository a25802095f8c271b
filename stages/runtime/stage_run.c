#include "stages/runtime/stage_run.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <zmq.h>

#include "model/network.h"
#include "ops/error.h"
#include "stages/runtime/decision.h"
#include "stages/runtime/keys.h"
#include "stages/handlers/blur.h"
#include "stages/handlers/foreground.h"
#include "stages/handlers/infer.h"
#include "stages/runtime/log.h"
#include "stages/runtime/provenance.h"
#include "stages/handlers/reporter.h"
#include "stages/handlers/screener.h"
#include "stages/runtime/stage_config.h"
#include "stages/handlers/tiler.h"
#include "stages/runtime/worker.h"

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static void on_tick(const Gastroscreen__V1__StageStats *st, void *ud)
{
    (void)ud;
    sd_notifyf(0, "WATCHDOG=1\nSTATUS=%.1f items/s, busy %.0f%%, queue %u, processed %llu",
               st->tiles_per_second, st->busy_fraction * 100, st->queue_depth,
               (unsigned long long)st->processed);
}

/* A line of the stage process (stages/runtime/log: under journald with STAGE=name). */
static void log_stage(const char *name, int priority, const char *msg)
{
    char ident[64];
    snprintf(ident, sizeof ident, "gastroscreen-%s", name);
    gs_log_line(ident, name, NULL, priority, msg);
}

static int fail(const char *name)
{
    log_stage(name, GS_LOG_ERR, gs_error_get());
    return 1;
}

/* The infer worker's precision: [infer] precision or --precision, else the fastest this CPU runs
 * natively whose budget the bundle records as met (gs_precision_default); bf16 on a CPU without
 * it runs fp32 after one warning line. Returns 0 or -1 with the error set. */
static int apply_precision(const char *name, const gs_stage_config *c, gs_model *m)
{
    gs_precision asked = gs_precision_default(gs_model_weights(m));
    if (c->precision[0] && gs_precision_parse(c->precision, &asked))
        return -1;
    char why[160];
    gs_precision run = gs_precision_usable(asked, why, sizeof why);
    if (why[0])
        log_stage(name, GS_LOG_WARNING, why);
    return gs_model_set_precision(m, run);
}

int gs_stage_run(Gastroscreen__V1__Stage stage, int argc, char **argv)
{
    const char *name = gs_stage_name(stage);
    gs_stage_config c;
    gs_model_thresholds bundle_thresholds;
    gs_decision decision;
    gs_stage_config_default(&c, stage);
    int help = 0;
    if (gs_stage_config_args(&c, argc, argv, &help) < 0) {
        fprintf(stderr, "gastroscreen-%s: %s\n", name, gs_error_get());
        gs_stage_config_usage(stage, stderr);
        return 2;
    }
    if (help) {
        gs_stage_config_usage(stage, stdout);
        return 0;
    }
    int needs_model = stage == GASTROSCREEN__V1__STAGE__STAGE_INFER ||
                      stage == GASTROSCREEN__V1__STAGE__STAGE_SCREENER;
    int uses_model = needs_model || stage == GASTROSCREEN__V1__STAGE__STAGE_BLUR ||
                     stage == GASTROSCREEN__V1__STAGE__STAGE_FOREGROUND;
    if (needs_model && !c.model[0]) {
        log_stage(name, GS_LOG_ERR, "no model: give --model BUNDLE or [model] bundle");
        return 2;
    }

    int rc = 1;
    gs_model *m = NULL;
    gs_provenance prov;
    void *zctx = NULL;
    gs_tiler_stage *tiler = NULL;
    gs_blur_stage *blur = NULL;
    gs_infer_stage *infer = NULL;
    gs_screener_stage *screener = NULL;
    gs_worker *w = NULL;
    gs_foreground_options fg;
    gs_foreground_net *fg_net = NULL;
    gs_reporter_options rep;

    if (uses_model && c.model[0]) {
        /* Only the stage's own networks are built: the multi-task network alone is ~77 MB of
           folded weights a blur, screener or foreground process would never run. The others
           are still checked by name and shape, and their provenance is kept. */
        gs_net_id net = gs_provenance_stage_net(stage);
        /* The infer worker also judges every tile's focus, with the blur network (72 MMAC
           per tile against the multi-task network's 28.6 GMAC) when the bundle's is trained. */
        const gs_net_id built[] = {net, GS_NET_BLUR};
        size_t n_built = stage == GASTROSCREEN__V1__STAGE__STAGE_INFER ? 2 : 1;
        if (!(m = gs_model_load_nets(c.model, built, n_built)))
            return fail(name); /* the message starts with the file name */
        if (stage == GASTROSCREEN__V1__STAGE__STAGE_INFER && apply_precision(name, &c, m)) {
            rc = fail(name);
            goto free_model;
        }
        if (gs_provenance_init(&prov, c.model, m, &net, 1) < 0) {
            rc = fail(name);
            goto free_model;
        }
    }
    if (!(zctx = zmq_ctx_new())) {
        gs_error_set("zmq_ctx_new failed");
        rc = fail(name);
        goto free_model;
    }

    /* PROTOCOL.md §2: CURVE to the coordinator unless [security] says off; without keys only
     * a loopback or ipc:// coordinator is reached (plain). */
    int tile_stage = stage == GASTROSCREEN__V1__STAGE__STAGE_BLUR ||
                     stage == GASTROSCREEN__V1__STAGE__STAGE_INFER;
    gs_security sec;
    gs_security_settings ss = {c.security, c.keys_dir, c.worker_key, c.coordinator_public};
    const char *eps[] = {c.work, tile_stage ? c.tile_inbox : NULL};
    gs_zap *zap = NULL;
    if (gs_security_resolve(&sec, &ss, GS_SECURITY_CLIENT, "node", eps, 2, name) < 0) {
        rc = fail(name);
        goto term_ctx;
    }
    /* A CURVE tile inbox admits tiler keys only: the handler must run before it binds. Its
     * unit reloads the keys with SIGHUP; without keys the signal is caught and does nothing
     * (its default would end the worker, and systemd counts that as a clean exit). */
    if (tile_stage)
        gs_zap_reload_on_sighup();
    if (sec.curve && tile_stage && !(zap = gs_zap_new(zctx, c.keys_dir, name))) {
        rc = fail(name);
        goto term_ctx;
    }

    gs_worker_config wc;
    gs_worker_config_default(&wc);
    wc.curve = gs_security_curve(&sec);
    wc.stage = stage;
    wc.work_endpoint = c.work;
    wc.instance = c.instance;
    wc.threads = c.threads;
    wc.omp_threads = gs_worker_omp_threads(stage, c.threads);
    wc.batch_size = c.batch;
    wc.heartbeat_ms = c.heartbeat_ms;
    wc.liveness = c.liveness;
    wc.model = m ? &prov.msg : NULL;
    wc.on_tick = on_tick;
    wc.stop = &stop_flag;
    wc.zmq_ctx = zctx;
    const char *sha = m ? prov.sha256 : NULL;
    switch (stage) {
    case GASTROSCREEN__V1__STAGE__STAGE_TILER:
        if (!(tiler = gs_tiler_stage_new(zctx, c.threads, c.tile_hwm)))
            goto report;
        gs_tiler_stage_set_curve(tiler, wc.curve);
        wc.handler = gs_tiler_handle;
        wc.handler_ud = tiler;
        break;
    case GASTROSCREEN__V1__STAGE__STAGE_FOREGROUND:
        /* The bundle's network when it is trained, the classical mask otherwise (or with no
         * bundle); only the foreground network was built above, so this stays small. */
        if (gs_foreground_options_for_model(&fg, m, &fg_net) < 0)
            goto report;
        fg.tissue.mask_mpp = c.mask_mpp;
        fg.tissue.mask_max_dim = c.mask_max_dim;
        fg.tissue.max_level0_pixels = (int64_t)(c.max_slide_mpx * 1e6);
        fg.tissue.max_thumbnail_source_pixels = (int64_t)(c.max_thumbnail_mpx * 1e6);
        fg.plan_budget_s = (double)c.plan_budget_ms / 1000.0;
        wc.handler = gs_foreground_handle;
        wc.handler_ud = &fg;
        break;
    case GASTROSCREEN__V1__STAGE__STAGE_BLUR:
        if (!(blur = gs_blur_stage_new(m, c.threads, sha)))
            goto report;
        wc.handler = gs_blur_handle;
        wc.handler_ud = blur;
        break;
    case GASTROSCREEN__V1__STAGE__STAGE_INFER:
        if (!(infer = gs_infer_stage_new(m, c.threads, c.batch, sha)))
            goto report;
        wc.handler = gs_infer_handle;
        wc.handler_ud = infer;
        break;
    case GASTROSCREEN__V1__STAGE__STAGE_SCREENER:
        /* The bundle's topk unless the config set top_k: the coordinator resolves the rows it
         * sends the same way (stages/runtime/decision). */
        bundle_thresholds = gs_model_get_thresholds(m);
        gs_decision_resolve(&decision, &bundle_thresholds, 0, 0, (uint32_t)c.top_k,
                            gs_stage_config_is_set(&c, GS_CFG_SCREENER_TOP_K));
        if (!(screener = gs_screener_stage_new(m, c.threads, (int)decision.top_k, &prov.msg)))
            goto report;
        wc.handler = gs_screener_handle;
        wc.handler_ud = screener;
        break;
    case GASTROSCREEN__V1__STAGE__STAGE_REPORTER:
        gs_reporter_options_default(&rep);
        rep.report_dir = c.report_dir;
        wc.handler = gs_reporter_handle;
        wc.handler_ud = &rep;
        break;
    default:
        gs_error_set("stage %d has no executable", (int)stage);
        goto report;
    }
    if (stage == GASTROSCREEN__V1__STAGE__STAGE_BLUR ||
        stage == GASTROSCREEN__V1__STAGE__STAGE_INFER) {
        wc.tile_inbox_bind = c.tile_inbox;
        wc.advertise_host = c.advertise_host[0] ? c.advertise_host : NULL;
        wc.inbox_curve = sec.curve;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    if (!(w = gs_worker_new(&wc)))
        goto report;
    if (stage == GASTROSCREEN__V1__STAGE__STAGE_BLUR ||
        stage == GASTROSCREEN__V1__STAGE__STAGE_INFER) {
        char msg[GS_LOG_MESSAGE_MAX + 1];
        snprintf(msg, sizeof msg, "tile inbox %s", gs_worker_tile_inbox(w));
        log_stage(name, GS_LOG_INFO, msg);
    }
    sd_notifyf(0, "READY=1\nSTATUS=connecting to %s", c.work);
    if (gs_worker_run(w) == 0)
        rc = 0;
    sd_notify(0, "STOPPING=1");

report:
    if (rc != 0)
        fail(name);
    gs_worker_destroy(&w);
    gs_tiler_stage_destroy(&tiler);
    gs_blur_stage_destroy(&blur);
    gs_infer_stage_destroy(&infer);
    gs_screener_stage_destroy(&screener);
    gs_foreground_net_destroy(&fg_net);
term_ctx:
    gs_zap_destroy(&zap);
    zmq_ctx_term(zctx);
free_model:
    gs_model_destroy(&m);
    return rc;
}
