/*
 * cmd_view: `gastroscreen view OUT_DIR [--listen HOST:PORT] [--token-file FILE] [--web DIR]`,
 * the slide viewer over the reports of an embedded `gastroscreen screen --out OUT_DIR` run.
 *
 * Serves, until SIGINT or SIGTERM, what gastroscreend serves for the slides it screened
 * (daemon/service/viewer): /view/<id> for every OUT_DIR/<id>/report.json, the slide as Deep
 * Zoom tiles (the file report.json names) and the report files; /api/slides in the worklist's
 * shape built from those reports (state "done" or "failed", newest verdict first, ?verdict=
 * filters), "/" (worklist.html) and /static/ (the web pages) and /static/leaflet/ (Debian's
 * libjs-leaflet). It prints the address and one viewer URL per report.
 *
 * Safety as in gastroscreend (daemon/service/http): the default address is 127.0.0.1 with a
 * port picked by the system; any address that is not loopback needs --token-file (a file of
 * mode 0600 holding the token; a browser then opens URL?token=TOKEN once). OUT_DIR/<id> must be a
 * folder (not a symbolic link) and its report.json a regular file; the slide path it names is
 * resolved (a report is the user's own file, not a URL) and opened with the reader's checks.
 *
 * Exit status: 0 after a signal, 1 when OUT_DIR cannot be read or the server cannot start
 * (message on stderr), 2 usage.
 */
#include "daemon/cli/commands.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "daemon/service/http.h"
#include "daemon/service/viewer.h"
#include "daemon/service/worklist.h"
#include "ops/error.h"
#include "proto/vocab.h"

/* Reports listed by /api/slides at most (a folder of more is cut, newest kept). */
#define MAX_REPORTS 10000

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void usage(FILE *f)
{
    fputs("usage: gastroscreen view OUT_DIR [--listen HOST:PORT] [--token-file FILE] [--web DIR]\n"
          "\n"
          "Serves the slide viewer for the reports of 'gastroscreen screen --out OUT_DIR'\n"
          "until interrupted: the slide at every zoom level with the heat map, regions,\n"
          "out-of-focus and background layers, and /api/slides for the worklist page.\n"
          "\n"
          "  --listen HOST:PORT  address (default 127.0.0.1:0, a free port)\n"
          "  --token-file FILE   a file holding the access token; required when HOST is\n"
          "                      not a loopback address\n"
          "  --web DIR           the web pages' folder (default: the built-in one)\n",
          f);
}

/* Reads OUT_DIR/<id>/report.json without following a symbolic link. Returns the JSON (caller
 * decrefs) or NULL. */
static json_t *load_report(const char *out_dir, const char *id)
{
    char dir[PATH_MAX], path[PATH_MAX];
    struct stat st;
    if (snprintf(dir, sizeof dir, "%s/%s", out_dir, id) >= (int)sizeof dir ||
        lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return NULL;
    if (snprintf(path, sizeof path, "%s/report.json", dir) >= (int)sizeof path)
        return NULL;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return NULL;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > (16 << 20)) {
        close(fd);
        return NULL;
    }
    json_error_t e;
    json_t *j = json_loadfd(fd, 0, &e);
    close(fd);
    json_t *slide = json_object_get(j, "slide");
    const char *jid = json_string_value(json_object_get(slide, "id"));
    if (!jid || strcmp(jid, id) != 0) { /* a report copied into another slide's folder */
        json_decref(j);
        return NULL;
    }
    return j;
}

/* gs_viewer_lookup_fn over OUT_DIR (user). */
static int lookup(const char *slide_id, char *slide_path, size_t path_len, char *report_dir,
                  size_t dir_len, void *user)
{
    const char *out_dir = user;
    json_t *j = load_report(out_dir, slide_id);
    const char *path = json_string_value(json_object_get(json_object_get(j, "slide"), "path"));
    char real[PATH_MAX];
    int rc = -1;
    if (path && realpath(path, real) && strlen(real) < path_len &&
        snprintf(report_dir, dir_len, "%s/%s", out_dir, slide_id) < (int)dir_len) {
        memcpy(slide_path, real, strlen(real) + 1);
        rc = 0;
    }
    json_decref(j);
    return rc;
}

static json_t *copy_or_null(json_t *v)
{
    return v ? json_deep_copy(v) : json_null();
}

/* The worklist entry of one report (the /api/slides contract). */
static json_t *entry(const char *id, json_t *r)
{
    json_t *slide = json_object_get(r, "slide");
    const char *path = json_string_value(json_object_get(slide, "path"));
    const char *base = path ? strrchr(path, '/') : NULL;
    const char *verdict = json_string_value(json_object_get(r, "verdict"));
    char viewer[300];
    snprintf(viewer, sizeof viewer, "/view/%.*s", GS_SLIDE_ID_LEN, id);
    json_t *decided = json_object_get(r, "decided_unix_ms");
    json_t *timings = json_object_get(r, "timings");
    double seconds = 0;
    const char *k;
    json_t *t;
    json_object_foreach(timings, k, t) seconds += json_number_value(t);
    int failed = verdict && !strcmp(verdict, "failed");
    return json_pack("{s:s, s:o, s:o, s:s, s:o, s:o, s:o, s:o, s:o, s:n, s:o, s:o, s:b, s:o}", "id",
                     id, "name", path ? json_string(base ? base + 1 : path) : json_null(),
                     "external_id", copy_or_null(json_object_get(slide, "external_id")), "state",
                     failed ? "failed" : "done", "verdict",
                     copy_or_null(json_object_get(r, "verdict")), "score",
                     copy_or_null(json_object_get(r, "score")), "threshold",
                     copy_or_null(json_object_get(r, "threshold")), "warnings",
                     json_is_array(json_object_get(r, "warnings"))
                         ? json_deep_copy(json_object_get(r, "warnings"))
                         : json_array(),
                     "reason", copy_or_null(json_object_get(r, "reason")), "submitted_unix_ms",
                     "decided_unix_ms", copy_or_null(decided), "seconds_to_verdict",
                     json_object_size(timings) ? json_real(seconds) : json_null(), "untrained",
                     json_is_true(json_object_get(r, "untrained")), "viewer",
                     failed ? json_null() : json_string(viewer));
}

static int newest_first(const void *a, const void *b)
{
    json_int_t x = json_integer_value(json_object_get(*(json_t *const *)a, "decided_unix_ms"));
    json_int_t y = json_integer_value(json_object_get(*(json_t *const *)b, "decided_unix_ms"));
    return x < y ? 1 : x > y ? -1 : 0;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int handle_api_slides(const gs_http_request *rq, gs_http_reply *reply, void *user)
{
    const char *out_dir = user;
    const char *filter = gs_http_query(rq, "verdict");
    if (filter && strcmp(filter, "negative") && strcmp(filter, "positive") &&
        strcmp(filter, "unassessable") && strcmp(filter, "failed") && strcmp(filter, "pending"))
        return gs_http_reply_json(reply, 400, "{\"error\": \"unknown verdict filter\"}");
    DIR *d = opendir(out_dir);
    if (!d)
        return gs_error_set("%s: %s", out_dir, strerror(errno));
    json_t **items = calloc(MAX_REPORTS, sizeof *items);
    size_t n = 0;
    struct dirent *de;
    while (items && n < MAX_REPORTS && (de = readdir(d))) {
        if (!gs_slide_id_ok(de->d_name))
            continue;
        json_t *r = load_report(out_dir, de->d_name);
        const char *verdict = json_string_value(json_object_get(r, "verdict"));
        json_t *e =
            r && (!filter || (verdict && !strcmp(filter, verdict))) ? entry(de->d_name, r) : NULL;
        json_decref(r);
        if (e)
            items[n++] = e;
    }
    closedir(d);
    if (!items)
        return gs_error_set("view: out of memory");
    qsort(items, n, sizeof *items, newest_first);
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(list, items[i]);
    free(items);
    json_t *o = json_pack("{s:I, s:o}", "generated_unix_ms", (json_int_t)now_ms(), "slides", list);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!text)
        return gs_error_set("view: cannot build /api/slides");
    int rc = gs_http_reply_json(reply, 200, text);
    free(text);
    return rc;
}

int gs_cmd_view(int argc, char **argv)
{
    static const struct option longopts[] = {{"listen", required_argument, NULL, 'l'},
                                             {"token-file", required_argument, NULL, 't'},
                                             {"web", required_argument, NULL, 'w'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    const char *listen = "127.0.0.1:0", *token_file = NULL, *web = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'l':
            listen = optarg;
            break;
        case 't':
            token_file = optarg;
            break;
        case 'w':
            web = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (argc - optind != 1) {
        usage(stderr);
        return 2;
    }
    int status = 1;
    gs_http *h = NULL;
    gs_viewer *v = NULL;
    char out_dir[PATH_MAX], token[GS_HTTP_TOKEN_MAX + 1] = "";
    if (!realpath(argv[optind], out_dir)) {
        fprintf(stderr, "gastroscreen view: %s: %s\n", argv[optind], strerror(errno));
        return 1;
    }
    DIR *probe = opendir(out_dir);
    if (!probe) {
        fprintf(stderr, "gastroscreen view: %s: %s\n", out_dir, strerror(errno));
        return 1;
    }
    web = gs_worklist_web_dir(web);
    if (token_file && gs_http_read_token(token_file, token, sizeof token) != 0)
        goto report;

    gs_http_options ho = {.listen = listen, .token = token};
    gs_viewer_options vo = {.lookup = lookup, .user = out_dir, .web_dir = web};
    if (!(h = gs_http_new(&ho)) || !(v = gs_viewer_new(&vo)) || gs_viewer_routes(v, h) != 0 ||
        gs_worklist_page_routes(h, web) != 0 ||
        gs_http_route(h, "/api/slides", handle_api_slides, out_dir) != 0)
        goto report;

    /* Signals are blocked until sigsuspend, so one arriving before it is not lost. */
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    if (gs_http_start(h) != 0) {
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        goto report;
    }
    const char *host = gs_http_is_loopback(h) ? "127.0.0.1" : listen;
    char base[300];
    if (gs_http_is_loopback(h) || !strchr(listen, ':'))
        snprintf(base, sizeof base, "http://%s:%d", host, gs_http_port(h));
    else
        snprintf(base, sizeof base, "http://%.*s:%d", (int)(strrchr(listen, ':') - listen), listen,
                 gs_http_port(h));
    printf("gastroscreen view: serving %s at %s/%s\n", out_dir, base,
           token[0] ? " (token required: open a URL with ?token=TOKEN once)" : "");
    struct dirent *de;
    while ((de = readdir(probe)))
        if (gs_slide_id_ok(de->d_name)) {
            json_t *r = load_report(out_dir, de->d_name);
            if (r)
                printf("  %s/view/%s  %s\n", base, de->d_name,
                       json_string_value(json_object_get(json_object_get(r, "slide"), "path")));
            json_decref(r);
        }
    fflush(stdout);
    while (!stop_requested)
        sigsuspend(&old);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    status = 0;

report:
    if (status != 0)
        fprintf(stderr, "gastroscreen view: %s\n", gs_error_get());
    gs_http_destroy(&h);
    gs_viewer_destroy(&v);
    closedir(probe);
    return status;
}
