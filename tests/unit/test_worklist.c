/* daemon/service/worklist: the snapshot of a real slide table (a journal in a temporary
 * folder) as the JSON of /api/slides (fields, newest first, filters, untrained) and
 * /api/throughput, the viewer's lookup, copies only when the table changed, and the routes
 * over a loopback HTTP server (pages, static files, a symlink in the web folder). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/service/worklist.h"
#include "ops/error.h"

typedef struct {
    char dir[64];
    gs_journal *j;
    gs_slides *t;
    char done_id[17], pending_id[17], failed_id[17];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/gs_test_worklist_XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    f->j = gs_journal_open(f->dir);
    assert_non_null(f->j);
    gs_slides_options o;
    gs_slides_options_default(&o);
    o.model_bundle = "default.safetensors";
    o.model_sha256 = "ab12";
    o.model_untrained = 1;
    o.model_notice = "model: untrained — not a diagnosis";
    f->t = gs_slides_new(f->j, &o);
    assert_non_null(f->t);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    gs_slides_destroy(&f->t);
    gs_journal_destroy(&f->j);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* Three slides: one screened positive with a report (accepted at t=1000), one failed (t=2000),
 * one still waiting (t=3000). */
static void fill(fixture *f)
{
    int dup = 0;
    assert_int_equal(gs_slides_intake(f->t, "/slides/case-1.svs", 1000, 5000, GS_INTAKE_SUBMIT,
                                      "ACC-1", 1000, f->done_id, &dup, NULL),
                     0);
    assert_int_equal(gs_slides_intake(f->t, "/slides/case-2.svs", 1000, 5000, GS_INTAKE_WATCHED, "",
                                      2000, f->failed_id, &dup, NULL),
                     0);
    assert_int_equal(gs_slides_intake(f->t, "/slides/sub/case-3.svs", 1000, 5000, GS_INTAKE_SUBMIT,
                                      "ACC-3", 3000, f->pending_id, &dup, NULL),
                     0);
    const char *id = f->done_id;
    assert_int_equal(
        gs_slides_planned(f->t, id, 1, "qh", GS_METHOD_CLASSICAL, NULL, 1100, NULL, NULL), 0);
    assert_int_equal(
        gs_slides_blur_checked(f->t, id, 1, 0.1f, GS_METHOD_CLASSICAL, 0, NULL, 1200, NULL), 0);
    assert_int_equal(gs_slides_inferring(f->t, id, 1, 1300, NULL), 0);
    assert_int_equal(gs_slides_screened(f->t, id, 1, 0.9f, 1400, NULL), 0);
    const char *warnings[] = {"3 of 40 tiles blurry", "scanner mpp unknown"};
    gs_slide_report r = {.report_json = "/reports/x/report.json",
                         .heatmap_png = "/reports/x/heatmap.png",
                         .regions_geojson = "/reports/x/regions.geojson",
                         .warnings = warnings,
                         .n_warnings = 2};
    assert_int_equal(gs_slides_reported(f->t, id, 1, &r, 1500, NULL), 0);
    assert_int_equal(gs_slides_done(f->t, id, 1, 3500, NULL), 0);
    assert_int_equal(
        gs_slides_fail(f->t, f->failed_id, 1, "plan: cannot open slide", NULL, 2600, NULL), 0);
}

static json_t *parse(char *text)
{
    assert_non_null(text);
    json_error_t err;
    json_t *v = json_loads(text, 0, &err);
    if (!v)
        fail_msg("not JSON: %s: %s", err.text, text);
    free(text);
    return v;
}

static json_t *slides_of(gs_worklist *w, const char *verdict)
{
    json_t *root = parse(gs_worklist_slides_json(w, verdict, 42));
    assert_int_equal(json_integer_value(json_object_get(root, "generated_unix_ms")), 42);
    return root;
}

static void slides_json_lists_newest_first_with_every_field(void **state)
{
    fixture *f = *state;
    fill(f);
    gs_worklist *w = gs_worklist_new(1);
    assert_non_null(w);
    assert_int_equal(gs_worklist_publish(w, f->t, NULL, 0), 0);
    json_t *root = slides_of(w, NULL);
    json_t *slides = json_object_get(root, "slides");
    assert_int_equal(json_array_size(slides), 3);
    /* newest first */
    assert_string_equal(json_string_value(json_object_get(json_array_get(slides, 0), "id")),
                        f->pending_id);
    assert_string_equal(json_string_value(json_object_get(json_array_get(slides, 1), "id")),
                        f->failed_id);
    json_t *done = json_array_get(slides, 2);
    assert_string_equal(json_string_value(json_object_get(done, "id")), f->done_id);
    assert_string_equal(json_string_value(json_object_get(done, "name")), "case-1.svs");
    assert_string_equal(json_string_value(json_object_get(done, "external_id")), "ACC-1");
    assert_string_equal(json_string_value(json_object_get(done, "state")), "done");
    assert_string_equal(json_string_value(json_object_get(done, "verdict")), "positive");
    assert_true(json_real_value(json_object_get(done, "score")) > 0.89);
    assert_true(json_is_number(json_object_get(done, "threshold")));
    json_t *warnings = json_object_get(done, "warnings");
    assert_int_equal(json_array_size(warnings), 2);
    assert_string_equal(json_string_value(json_array_get(warnings, 1)), "scanner mpp unknown");
    assert_int_equal(json_integer_value(json_object_get(done, "submitted_unix_ms")), 1000);
    assert_int_equal(json_integer_value(json_object_get(done, "decided_unix_ms")), 3500);
    assert_true(json_real_value(json_object_get(done, "seconds_to_verdict")) == 2.5);
    assert_true(json_is_true(json_object_get(done, "untrained")));
    char viewer[32];
    snprintf(viewer, sizeof viewer, "/view/%s", f->done_id);
    assert_string_equal(json_string_value(json_object_get(done, "viewer")), viewer);

    json_t *failed = json_array_get(slides, 1);
    assert_string_equal(json_string_value(json_object_get(failed, "verdict")), "failed");
    assert_string_equal(json_string_value(json_object_get(failed, "reason")),
                        "plan: cannot open slide");
    assert_true(json_is_null(json_object_get(failed, "score")));
    assert_true(json_is_null(json_object_get(failed, "viewer")));

    json_t *pending = json_array_get(slides, 0);
    assert_string_equal(json_string_value(json_object_get(pending, "state")), "accepted");
    assert_true(json_is_null(json_object_get(pending, "verdict")));
    assert_true(json_is_null(json_object_get(pending, "decided_unix_ms")));
    assert_true(json_is_null(json_object_get(pending, "seconds_to_verdict")));
    assert_true(json_is_null(json_object_get(pending, "viewer")));
    json_decref(root);

    /* filters */
    const struct {
        const char *verdict;
        const char *id;
    } filters[] = {{"positive", f->done_id}, {"failed", f->failed_id}, {"pending", f->pending_id}};
    for (size_t i = 0; i < 3; i++) {
        root = slides_of(w, filters[i].verdict);
        slides = json_object_get(root, "slides");
        assert_int_equal(json_array_size(slides), 1);
        assert_string_equal(json_string_value(json_object_get(json_array_get(slides, 0), "id")),
                            filters[i].id);
        json_decref(root);
    }
    root = slides_of(w, "negative");
    assert_int_equal(json_array_size(json_object_get(root, "slides")), 0);
    json_decref(root);
    assert_null(gs_worklist_slides_json(w, "Positive", 0));
    assert_non_null(strstr(gs_error_get(), "unknown verdict"));
    assert_null(gs_worklist_slides_json(w, "", 0));
    gs_worklist_destroy(&w);
    assert_null(w);
}

static void lookup_finds_reported_slides_only(void **state)
{
    fixture *f = *state;
    fill(f);
    gs_worklist *w = gs_worklist_new(0);
    char path[256], dir[256];
    /* nothing published yet */
    assert_int_equal(gs_worklist_lookup(f->done_id, path, sizeof path, dir, sizeof dir, w), -1);
    assert_int_equal(gs_worklist_publish(w, f->t, NULL, 0), 0);
    assert_int_equal(gs_worklist_lookup(f->done_id, path, sizeof path, dir, sizeof dir, w), 0);
    assert_string_equal(path, "/slides/case-1.svs");
    assert_string_equal(dir, "/reports/x");
    assert_int_equal(gs_worklist_lookup(f->pending_id, path, sizeof path, dir, sizeof dir, w), -1);
    assert_int_equal(gs_worklist_lookup(f->failed_id, path, sizeof path, dir, sizeof dir, w), -1);
    assert_int_equal(gs_worklist_lookup("0123456789abcdef", path, sizeof path, dir, sizeof dir, w),
                     -1);
    assert_int_equal(gs_worklist_lookup("../../etc/passwd", path, sizeof path, dir, sizeof dir, w),
                     -1);
    char upper[17];
    for (int i = 0; i < 17; i++)
        upper[i] = (char)(f->done_id[i] >= 'a' ? f->done_id[i] - 32 : f->done_id[i]);
    assert_int_equal(gs_worklist_lookup(upper, path, sizeof path, dir, sizeof dir, w), -1);
    /* a buffer too small is a miss, never a cut path */
    assert_int_equal(gs_worklist_lookup(f->done_id, path, 5, dir, sizeof dir, w), -1);
    /* the untrained flag follows the model */
    json_t *root = slides_of(w, NULL);
    assert_true(json_is_false(
        json_object_get(json_array_get(json_object_get(root, "slides"), 0), "untrained")));
    json_decref(root);
    gs_worklist_destroy(&w);
}

static void publish_copies_changes_and_stats(void **state)
{
    fixture *f = *state;
    gs_worklist *w = gs_worklist_new(0);
    assert_int_equal(gs_worklist_publish(w, f->t, NULL, 0), 0);
    json_t *root = slides_of(w, NULL);
    assert_int_equal(json_array_size(json_object_get(root, "slides")), 0);
    json_decref(root);
    fill(f);
    assert_int_equal(gs_worklist_publish(w, f->t, NULL, 0), 0);
    root = slides_of(w, "pending");
    assert_int_equal(json_array_size(json_object_get(root, "slides")), 1);
    json_decref(root);
    /* a transition shows at the next publish */
    assert_int_equal(gs_slides_fail(f->t, f->pending_id, 1, "timeout", NULL, 4000, NULL), 0);
    root = slides_of(w, "pending");
    assert_int_equal(json_array_size(json_object_get(root, "slides")), 1);
    json_decref(root);
    assert_int_equal(gs_worklist_publish(w, f->t, NULL, 0), 0);
    root = slides_of(w, "pending");
    assert_int_equal(json_array_size(json_object_get(root, "slides")), 0);
    json_decref(root);

    /* throughput: the figures of the last stats, zeros before */
    root = parse(gs_worklist_throughput_json(w, 7));
    assert_int_equal(json_integer_value(json_object_get(root, "slides_in_flight")), 0);
    json_decref(root);
    gs_coordinator_stats s;
    memset(&s, 0, sizeof s);
    s.stage[GASTROSCREEN__V1__STAGE__STAGE_INFER].workers = 3;
    s.stage[GASTROSCREEN__V1__STAGE__STAGE_INFER].queue_depth = 17;
    s.stage[GASTROSCREEN__V1__STAGE__STAGE_INFER].tiles_per_second = 123.5;
    s.slides_in_flight = 5;
    s.slides_active = 2;
    assert_int_equal(gs_worklist_publish(w, NULL, &s, 0), 0);
    root = parse(gs_worklist_throughput_json(w, 7));
    assert_int_equal(json_integer_value(json_object_get(root, "generated_unix_ms")), 7);
    assert_int_equal(json_integer_value(json_object_get(root, "slides_in_flight")), 5);
    assert_int_equal(json_integer_value(json_object_get(root, "slides_waiting")), 3);
    json_t *stages = json_object_get(root, "stages");
    assert_int_equal(json_array_size(stages), 6);
    int seen_infer = 0;
    for (size_t i = 0; i < json_array_size(stages); i++) {
        json_t *st = json_array_get(stages, i);
        if (strcmp(json_string_value(json_object_get(st, "stage")), "infer") != 0)
            continue;
        seen_infer = 1;
        assert_int_equal(json_integer_value(json_object_get(st, "workers")), 3);
        assert_int_equal(json_integer_value(json_object_get(st, "queue_depth")), 17);
        assert_true(json_real_value(json_object_get(st, "tiles_per_second")) == 123.5);
    }
    assert_true(seen_infer);
    json_decref(root);
    gs_worklist_destroy(&w);
}

/* ---- over HTTP ---- */

static char *get(int port, const char *target)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    char req[1024];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                     target);
    assert_int_equal(write(fd, req, (size_t)n), n);
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap);
    ssize_t r;
    while ((r = read(fd, buf + len, cap - len - 1)) > 0)
        len += (size_t)r;
    buf[len] = '\0';
    close(fd);
    return buf;
}

static int status_of(const char *answer)
{
    int s = 0;
    return sscanf(answer, "HTTP/1.1 %d", &s) == 1 ? s : 0;
}

static void routes_serve_pages_and_json(void **state)
{
    fixture *f = *state;
    fill(f);
    char web[128], p[256], secret[256];
    snprintf(web, sizeof web, "%s/web", f->dir);
    assert_int_equal(mkdir(web, 0700), 0);
    snprintf(p, sizeof p, "%s/worklist.html", web);
    FILE *fp = fopen(p, "w");
    fputs("<title>worklist</title>", fp);
    fclose(fp);
    snprintf(p, sizeof p, "%s/style.css", web);
    fp = fopen(p, "w");
    fputs("body{}", fp);
    fclose(fp);
    snprintf(secret, sizeof secret, "%s/secret.txt", f->dir);
    fp = fopen(secret, "w");
    fputs("SECRET", fp);
    fclose(fp);
    snprintf(p, sizeof p, "%s/evil.css", web);
    assert_int_equal(symlink(secret, p), 0);

    gs_worklist *w = gs_worklist_new(1);
    assert_int_equal(gs_worklist_publish(w, f->t, NULL, 0), 0);
    gs_http_options o = {.listen = "127.0.0.1:0"};
    gs_http *h = gs_http_new(&o);
    assert_non_null(h);
    assert_int_equal(gs_worklist_routes(h, w, web), 0);
    assert_int_equal(gs_http_start(h), 0);
    int port = gs_http_port(h);

    char *a = get(port, "/");
    assert_int_equal(status_of(a), 200);
    assert_non_null(strstr(a, "<title>worklist</title>"));
    assert_non_null(strstr(a, "Content-Security-Policy: default-src 'self'"));
    free(a);
    a = get(port, "/static/style.css");
    assert_int_equal(status_of(a), 200);
    assert_non_null(strstr(a, "Content-Type: text/css"));
    free(a);
    a = get(port, "/static/evil.css");
    assert_int_equal(status_of(a), 404);
    assert_null(strstr(a, "SECRET"));
    free(a);
    assert_int_equal(status_of(a = get(port, "/static/nope.js")), 404);
    free(a);
    assert_int_equal(status_of(a = get(port, "/nope")), 404);
    free(a);
    assert_int_equal(status_of(a = get(port, "/api/slidesx")), 404);
    free(a);
    a = get(port, "/api/slides?verdict=positive");
    assert_int_equal(status_of(a), 200);
    assert_non_null(strstr(a, "Content-Type: application/json"));
    assert_non_null(strstr(a, f->done_id));
    assert_null(strstr(a, f->pending_id));
    free(a);
    a = get(port, "/api/slides?verdict=bogus");
    assert_int_equal(status_of(a), 400);
    assert_non_null(strstr(a, "unknown verdict"));
    free(a);
    assert_int_equal(status_of(a = get(port, "/api/throughput")), 200);
    assert_non_null(strstr(a, "\"stages\""));
    free(a);
    if (access(GS_LEAFLET_DIR "/leaflet.js", R_OK) == 0) {
        assert_int_equal(status_of(a = get(port, "/static/leaflet/leaflet.js")), 200);
        free(a);
    }
    gs_http_destroy(&h);
    gs_worklist_destroy(&w);
}

static void web_dir_is_found(void **state)
{
    (void)state;
    assert_string_equal(gs_worklist_web_dir("/srv/web"), "/srv/web");
    const char *d = gs_worklist_web_dir(NULL);
    assert_non_null(d);
    /* this test runs from the build tree: the source tree's web/, which holds the page */
    char page[4200];
    snprintf(page, sizeof page, "%s/worklist.html", d);
    if (access(page, R_OK) != 0)
        fail_msg("no worklist.html in %s", d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(slides_json_lists_newest_first_with_every_field, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(lookup_finds_reported_slides_only, setup, teardown),
        cmocka_unit_test_setup_teardown(publish_copies_changes_and_stats, setup, teardown),
        cmocka_unit_test_setup_teardown(routes_serve_pages_and_json, setup, teardown),
        cmocka_unit_test(web_dir_is_found),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
