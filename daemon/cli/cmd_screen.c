/*
 * cmd_screen: `gastroscreen screen SLIDE... [--model BUNDLE] [--out DIR] [--config FILE]
 * [--verbose] [--features-dir DIR]`, the whole service in one process (daemon/cli/embedded: the
 * coordinator and one worker of each stage as threads over inproc://, the same code as
 * gastroscreend and the stage executables).
 *
 * Each SLIDE is submitted; the journal and spool live in a temporary folder removed at exit,
 * so every run screens its slides afresh. Reports go to DIR/<slide_id>/ (report.json,
 * heatmap.png, regions.geojson; DIR defaults to ./gastroscreen-reports). While it runs, a
 * progress bar is drawn on stderr when stderr is a terminal. One line per slide is printed on
 * stdout as each verdict arrives (slides that cannot be submitted come first, as
 * "PATH: not screened: REASON"):
 *     PATH: CLASS score S threshold T report FOLDER[; reason: R][; warning: W]...
 *           [; model: untrained ...]
 * CLASS is negative, positive, unassessable or failed; S is "-" when there is no score; the
 * notice "model: untrained — not a diagnosis" ends every line when the bundle's multi-task
 * network or screener is untrained.
 *
 * The bundle: --model BUNDLE; else [model] bundle of --config FILE when the file sets it; else
 * the first that exists of <exe>/../model/default.safetensors (the build tree: made by the
 * default build, model/bundle.cmake), <exe>/../share/gastroscreen/default.safetensors (an
 * install under a prefix) and /usr/share/gastroscreen/default.safetensors. --config supplies
 * threads, batches, thresholds and timeouts (its endpoints, folders and slide roots are
 * replaced: the slide roots become the folders of the given slides).
 *
 * With --features-dir DIR each slide's screener input, the top-k feature matrix exactly as the
 * ScreenTask carries it, is also written to DIR/<slide id>.npy (`gastroscreen features` uses it
 * to make the screener's training set).
 *
 * Exit status: 0 when every slide got a negative, positive or unassessable verdict; 1 when
 * any slide FAILED (a lab wants to hear about those), could not be submitted (missing, not a
 * file), or the service could not start or stopped (interrupted by SIGINT / SIGTERM); 2 on a
 * usage error.
 */
#include "daemon/cli/commands.h"

#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/service/config.h"
#include "daemon/cli/embedded.h"
#include "daemon/cli/default_bundle.h"
#include "model/network.h"
#include "model/weights.h"
#include "ops/error.h"
#include "stages/runtime/fileio.h"

#define DEFAULT_OUT "gastroscreen-reports"

static volatile sig_atomic_t g_interrupted;

static void on_signal(int sig)
{
    (void)sig;
    g_interrupted = 1;
}

static void usage(FILE *f)
{
    fputs("usage: gastroscreen screen SLIDE... [--model BUNDLE] [--out DIR] [--config FILE]\n"
          "                          [--verbose] [--features-dir DIR] [--precision P]\n"
          "Screens each slide with the coordinator and one worker of each stage running as\n"
          "threads of this process; prints one verdict line per slide:\n"
          "  PATH: CLASS score S threshold T report FOLDER[; reason: ...][; warning: ...]\n"
          "        [; model: untrained ...]\n"
          "  --model BUNDLE  model bundle; default: [model] bundle of --config, else the first\n"
          "                  of <exe>/../model/default.safetensors (build tree),\n"
          "                  <exe>/../share/gastroscreen/default.safetensors and\n"
          "                  /usr/share/gastroscreen/default.safetensors\n"
          "  --out DIR       reports go to DIR/<slide id>/ (default ./" DEFAULT_OUT ")\n"
          "  --config FILE   threads, batches, thresholds, timeouts (INI; see\n"
          "                  systemd/gastroscreen.conf); endpoints and folders are ignored\n"
          "  --verbose       log lines of the coordinator and the workers on stderr\n"
          "  --features-dir DIR  also write each slide's screener input (top-k features,\n"
          "                  k x 512 float32) as DIR/<slide id>.npy (`gastroscreen features`)\n"
          "  --precision P   the multi-task network's arithmetic, fp32, bf16 or int8 (from a\n"
          "                  bundle made by `gastroscreen calibrate`); default: [infer]\n"
          "                  precision of --config, else the fastest this CPU runs natively\n"
          "                  whose accuracy budget the bundle records as met (`gastroscreen\n"
          "                  calibrate` measures it), else fp32 (bf16 on a CPU without\n"
          "                  native bf16 runs fp32, int8 without VNNI or ranges runs bf16 or\n"
          "                  fp32, said once on stderr)\n"
          "Exit status: 0 when every slide got a negative, positive or unassessable verdict;\n"
          "1 when any slide failed or could not be submitted, or the service failed; 2 on a\n"
          "usage error.\n",
          f);
}

/* The bundle to load per the lookup order above, into out. Returns 0, or -1 with
 * the error naming what was tried. */
static int find_model(const char *given, const gs_config *cfg, char *out, size_t len)
{
    if (given) {
        snprintf(out, len, "%s", given);
        return 0;
    }
    if (gs_config_is_set(cfg, GS_CFG_MODEL_BUNDLE)) {
        snprintf(out, len, "%s", cfg->bundle);
        return 0;
    }
    return gs_default_bundle_find(out, len);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

/* One slide of the command line. */
typedef struct {
    const char *arg;
    char id[GS_SLIDE_ID_LEN + 1];
    int submitted, reported;
    gs_verdict_class verdict;
} slide_entry;

/* Prints the verdict line of a terminal slide (info), following a folded duplicate to the
 * slide that answers for it. */
static void print_verdict(const gs_embedded *e, const slide_entry *s, const gs_slide_info *info)
{
    gs_slide_info own = *info;
    const gs_slide_info *v = info;
    gs_slide_info other;
    if (info->duplicate_of && info->duplicate_of[0] &&
        gs_slides_get(gs_embedded_slides(e), info->duplicate_of, &other) == 0)
        v = &other;
    char score[32] = "-";
    if (v->verdict == GS_VERDICT_NEGATIVE || v->verdict == GS_VERDICT_POSITIVE)
        snprintf(score, sizeof score, "%.4f", v->score);
    char folder[PATH_MAX + 32];
    if (v->report_json && v->report_json[0]) {
        char tmp[PATH_MAX];
        snprintf(tmp, sizeof tmp, "%s", v->report_json);
        snprintf(folder, sizeof folder, "%s", dirname(tmp));
    } else {
        snprintf(folder, sizeof folder, "-");
    }
    /* "none": a folded duplicate whose slide is gone has no verdict of its own. */
    const char *cls = gs_verdict_class_name(v->verdict);
    printf("%s: %s score %s threshold %.4f report %s", s->arg, cls ? cls : "none", score,
           gs_embedded_decision(e)->threshold, folder);
    if (v != info)
        printf("; duplicate of %s", own.duplicate_of);
    if (v->reason && v->reason[0])
        printf("; reason: %s", v->reason);
    /* Warnings change what the verdict means ("partially out of focus: ..."): on the line. */
    for (const char *w = v->warnings; w && *w;) {
        size_t n = strcspn(w, "\n");
        printf("; warning: %.*s", (int)n, w);
        w += n + (w[n] == '\n');
    }
    const gs_provenance *p = gs_embedded_provenance(e);
    if (p->notice[0])
        printf("; %s", p->notice);
    printf("\n");
    fflush(stdout);
}

/* Draws "[#####     ] 1/3 slides, 120/400 tiles" over the previous one. */
static void draw_progress(const gs_embedded *e, const slide_entry *s, size_t n)
{
    size_t done = 0;
    uint64_t tiles = 0, planned = 0;
    for (size_t i = 0; i < n; i++) {
        if (!s[i].submitted || s[i].reported) {
            done++;
            continue;
        }
        gs_slide_info info;
        if (gs_slides_get(gs_embedded_slides(e), s[i].id, &info) != 0)
            continue;
        planned += info.tiles.planned;
        tiles += info.tiles.inferred + info.tiles.background + info.tiles.error;
    }
    double frac = (double)done / (double)n;
    if (planned > 0)
        frac += (double)(tiles > planned ? planned : tiles) / (double)planned / (double)n;
    int width = 30, fill = (int)(frac * width + 0.5);
    char bar[64];
    for (int i = 0; i < width; i++)
        bar[i] = i < fill ? '#' : ' ';
    bar[width] = '\0';
    fprintf(stderr, "\r\033[K[%s] %zu/%zu slides, %llu/%llu tiles", bar, done, n,
            (unsigned long long)tiles, (unsigned long long)planned);
    fflush(stderr);
}

/* Sets the slide roots to the folders of the slides that exist (a missing slide is refused at
 * submission with its own message). */
static int set_roots(gs_config *cfg, const slide_entry *s, size_t n)
{
    for (size_t i = 0; i < cfg->n_slide_roots; i++)
        free(cfg->slide_roots[i]);
    free(cfg->slide_roots);
    cfg->n_slide_roots = 0;
    if (!(cfg->slide_roots = calloc(n + 1, sizeof *cfg->slide_roots))) {
        gs_error_set("out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        char real[PATH_MAX];
        if (!realpath(s[i].arg, real))
            continue;
        const char *dir = dirname(real);
        int seen = 0;
        for (size_t j = 0; j < cfg->n_slide_roots && !seen; j++)
            seen = !strcmp(cfg->slide_roots[j], dir);
        if (seen)
            continue;
        if (!(cfg->slide_roots[cfg->n_slide_roots] = strdup(dir))) {
            gs_error_set("out of memory");
            return -1;
        }
        cfg->n_slide_roots++;
    }
    return 0;
}

int gs_cmd_screen(int argc, char **argv)
{
    const char *model_arg = NULL, *out_arg = DEFAULT_OUT, *config_path = NULL, *features_dir = NULL;
    int quiet = 1, have_precision = 0;
    gs_precision precision = GS_PRECISION_FP32;
    static const struct option opts[] = {{"model", required_argument, NULL, 'm'},
                                         {"out", required_argument, NULL, 'o'},
                                         {"config", required_argument, NULL, 'c'},
                                         {"verbose", no_argument, NULL, 'v'},
                                         {"features-dir", required_argument, NULL, 'F'},
                                         {"precision", required_argument, NULL, 'P'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    optind = 1;
    int ch;
    while ((ch = getopt_long(argc, argv, "m:o:c:vh", opts, NULL)) != -1) {
        switch (ch) {
        case 'F':
            features_dir = optarg;
            break;
        case 'P':
            if (gs_precision_parse(optarg, &precision)) {
                fprintf(stderr, "gastroscreen screen: --precision: %s\n", gs_error_get());
                return 2;
            }
            have_precision = 1;
            break;
        case 'm':
            model_arg = optarg;
            break;
        case 'o':
            out_arg = optarg;
            break;
        case 'c':
            config_path = optarg;
            break;
        case 'v':
            quiet = 0;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "gastroscreen screen: no slide given\n");
        usage(stderr);
        return 2;
    }
    size_t n = (size_t)(argc - optind);
    int rc = 1, service_error = 1;
    char tmp[PATH_MAX] = "";
    gs_config *cfg = NULL;
    gs_embedded *e = NULL;
    slide_entry *slides = calloc(n, sizeof *slides);
    if (!slides) {
        gs_error_set("out of memory");
        goto report;
    }
    for (size_t i = 0; i < n; i++)
        slides[i].arg = argv[optind + (int)i];

    if (!(cfg = gs_config_new()))
        goto report;
    if (config_path && gs_config_load(cfg, config_path) != 0)
        goto report;
    char model[PATH_MAX];
    if (find_model(model_arg, cfg, model, sizeof model) != 0)
        goto report;
    if (!have_precision && cfg->infer_precision[0]) {
        if (gs_precision_parse(cfg->infer_precision, &precision) != 0)
            goto report;
        have_precision = 1;
    }
    if (!have_precision) {
        /* The bundle's metadata says which budgets it met; its tensors are mapped, not read. */
        gs_weights *w = gs_weights_open(model);
        if (!w)
            goto report;
        precision = gs_precision_default(w);
        gs_weights_destroy(&w);
    }
    char why[160];
    precision = gs_precision_usable(precision, why, sizeof why);
    if (why[0])
        fprintf(stderr, "gastroscreen screen: %s\n", why);
    if (gs_mkdir_p(out_arg, 0755) != 0)
        goto report;
    char out_real[PATH_MAX];
    if (!realpath(out_arg, out_real)) {
        gs_error_set("%s: %s", out_arg, strerror(errno));
        goto report;
    }
    const char *tmpdir = getenv("TMPDIR");
    snprintf(tmp, sizeof tmp, "%s/gastroscreen-screen-XXXXXX",
             tmpdir && tmpdir[0] ? tmpdir : "/tmp");
    if (!mkdtemp(tmp)) {
        gs_error_set("%s: %s", tmp, strerror(errno));
        tmp[0] = '\0';
        goto report;
    }
    char journal[PATH_MAX + 16], spool[PATH_MAX + 16];
    snprintf(journal, sizeof journal, "%s/journal", tmp);
    snprintf(spool, sizeof spool, "%s/spool", tmp);
    if (gs_config_set_string(&cfg->journal_dir, journal) ||
        gs_config_set_string(&cfg->spool_dir, spool) ||
        gs_config_set_string(&cfg->report_dir, out_real) ||
        gs_config_set_string(&cfg->watch_dir, "") || set_roots(cfg, slides, n))
        goto report;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (features_dir && gs_mkdir_p(features_dir, 0755) != 0)
        goto report;
    gs_embedded_options eo = {.config = cfg,
                              .model_path = model,
                              .quiet = quiet,
                              .features_dir = features_dir,
                              .precision = precision};
    if (!(e = gs_embedded_new(&eo)))
        goto report;

    size_t pending = 0;
    int not_submitted = 0;
    for (size_t i = 0; i < n; i++) {
        if (gs_embedded_submit(e, slides[i].arg, slides[i].id, NULL) != 0) {
            printf("%s: not screened: %s\n", slides[i].arg, gs_error_get());
            not_submitted = 1;
            continue;
        }
        slides[i].submitted = 1;
        pending++;
    }
    fflush(stdout);
    int tty = isatty(STDERR_FILENO);
    int64_t drawn = 0;
    int service_failed = 0;
    while (pending > 0 && !g_interrupted) {
        if (gs_embedded_step(e, 100) != 0) {
            service_failed = 1;
            break;
        }
        for (size_t i = 0; i < n; i++) {
            slide_entry *s = &slides[i];
            gs_slide_info info;
            if (!s->submitted || s->reported ||
                gs_slides_get(gs_embedded_slides(e), s->id, &info) != 0)
                continue;
            if (info.state != GS_SLIDE_DONE && info.state != GS_SLIDE_FAILED)
                continue;
            if (tty)
                fprintf(stderr, "\r\033[K");
            print_verdict(e, s, &info);
            s->reported = 1;
            s->verdict = info.verdict;
            pending--;
            drawn = 0;
        }
        if (tty && pending > 0 && gs_mono_ms() - drawn >= 200) {
            draw_progress(e, slides, n);
            drawn = gs_mono_ms();
        }
    }
    if (tty)
        fprintf(stderr, "\r\033[K");
    if (service_failed)
        goto report;
    if (g_interrupted) {
        gs_error_set("interrupted with %zu slide%s unfinished", pending, pending == 1 ? "" : "s");
        goto report;
    }
    service_error = 0;
    rc = not_submitted ? 1 : 0;
    for (size_t i = 0; i < n; i++)
        if (slides[i].submitted && slides[i].verdict == GS_VERDICT_FAILED)
            rc = 1;
    {
        gs_coordinator_stats st;
        gs_coordinator_stats_get(gs_embedded_coordinator(e), &st);
        fprintf(stderr, "gastroscreen screen: %zu slide%s, %llu tiles recorded; reports in %s\n", n,
                n == 1 ? "" : "s", (unsigned long long)st.tiles_recorded, out_real);
    }

report:
    if (service_error)
        fprintf(stderr, "gastroscreen screen: %s\n", gs_error_get());
    gs_embedded_destroy(&e);
    gs_config_destroy(&cfg);
    if (tmp[0])
        nftw(tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(slides);
    return rc;
}
