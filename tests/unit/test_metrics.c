/* daemon/service/metrics: registry rules, the text format parsed back line by line, and /metrics
 * over a loopback HTTP connection (a plain socket client), including garbage requests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon/service/metrics.h"
#include "ops/error.h"

static const double bounds[] = {0.01, 0.1, 1.0, 10.0};

typedef struct {
    int slides, inflight, latency;
    double done_positive, done_negative;
    gs_metrics_hist infer, tiler;
    int calls;
} fake_owner;

static void collect(gs_metrics_sink *sink, void *user)
{
    fake_owner *o = user;
    o->calls++;
    assert_int_equal(gs_metrics_sample(sink, o->slides, "positive", o->done_positive), 0);
    assert_int_equal(gs_metrics_sample(sink, o->slides, "nega\"tive\\\n", o->done_negative), 0);
    assert_int_equal(gs_metrics_sample(sink, o->inflight, NULL, 2), 0);
    assert_int_equal(
        gs_metrics_sample_histogram(sink, o->latency, "infer", o->infer.counts, o->infer.sum), 0);
    assert_int_equal(
        gs_metrics_sample_histogram(sink, o->latency, "tiler", o->tiler.counts, o->tiler.sum), 0);
    /* Mistakes are refused and left out of the output. */
    assert_int_equal(gs_metrics_sample(sink, o->slides, NULL, 1), -1);
    assert_int_equal(gs_metrics_sample(sink, o->inflight, "x", 1), -1);
    assert_int_equal(gs_metrics_sample(sink, o->latency, "x", 1), -1);
    assert_int_equal(gs_metrics_sample(sink, o->slides, "x", -1), -1);
    assert_int_equal(gs_metrics_sample(sink, 99, NULL, 1), -1);
}

static gs_metrics *make_registry(const char *listen, fake_owner *o)
{
    gs_metrics *m = gs_metrics_new(listen);
    assert_non_null(m);
    memset(o, 0, sizeof *o);
    o->slides =
        gs_metrics_counter(m, "gastroscreen_slides_done_total", "Slides with a verdict.", "class");
    o->inflight = gs_metrics_gauge(m, "gastroscreen_slides_in_flight",
                                   "Slides accepted\nand not terminal.", NULL);
    o->latency = gs_metrics_histogram(m, "gastroscreen_stage_seconds", "Per-item latency.", "stage",
                                      bounds, 4);
    assert_true(o->slides >= 0 && o->inflight >= 0 && o->latency >= 0);
    o->done_positive = 3;
    o->done_negative = 12345678901.0;
    const double infer_values[] = {0.005, 0.05, 0.05, 0.5, 5, 50, 50};
    for (size_t i = 0; i < sizeof infer_values / sizeof *infer_values; i++)
        gs_metrics_hist_observe(&o->infer, bounds, 4, infer_values[i]);
    gs_metrics_hist_observe(&o->tiler, bounds, 4, 0.1); /* on a bound: le is inclusive */
    gs_metrics_hist_observe(&o->tiler, bounds, 4, NAN);
    gs_metrics_set_collector(m, collect, o);
    return m;
}

/* One parsed sample line. */
typedef struct {
    char name[128];
    char labels[256]; /* raw text between the braces */
    double value;
} line_sample;

static int parse_sample(const char *line, line_sample *s)
{
    memset(s, 0, sizeof *s);
    size_t n = strcspn(line, "{ ");
    if (n == 0 || n >= sizeof s->name)
        return -1;
    memcpy(s->name, line, n);
    const char *p = line + n;
    if (*p == '{') {
        /* Find the closing brace outside quotes, honouring escapes. */
        const char *q = p + 1;
        int quoted = 0;
        for (; *q && (quoted || *q != '}'); q++) {
            if (*q == '\\' && quoted && q[1])
                q++;
            else if (*q == '"')
                quoted = !quoted;
        }
        if (*q != '}' || (size_t)(q - p - 1) >= sizeof s->labels)
            return -1;
        memcpy(s->labels, p + 1, (size_t)(q - p - 1));
        p = q + 1;
    }
    if (*p != ' ')
        return -1;
    p++;
    if (!strcmp(p, "+Inf"))
        s->value = INFINITY;
    else {
        char *end = NULL;
        s->value = strtod(p, &end);
        if (end == p || *end)
            return -1;
    }
    return 0;
}

/* Finds the sample with this name and exact label text in the rendered lines. */
static int find(char **lines, size_t n, const char *name, const char *labels, double *value)
{
    for (size_t i = 0; i < n; i++) {
        line_sample s;
        if (lines[i][0] == '#' || parse_sample(lines[i], &s) < 0)
            continue;
        if (!strcmp(s.name, name) && !strcmp(s.labels, labels)) {
            *value = s.value;
            return 0;
        }
    }
    return -1;
}

static size_t split_lines(char *text, char ***out)
{
    size_t n = 0, cap = 16;
    char **lines = malloc(cap * sizeof *lines);
    for (char *save = NULL, *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        if (n == cap)
            lines = realloc(lines, (cap *= 2) * sizeof *lines);
        lines[n++] = l;
    }
    *out = lines;
    return n;
}

static void check_exposition(char *text)
{
    size_t len = strlen(text);
    assert_true(len > 0 && text[len - 1] == '\n');
    char **lines = NULL;
    size_t n = split_lines(text, &lines);

    /* Every line is a comment with HELP/TYPE, or a sample that parses; every sample's family
     * was announced by TYPE before it. */
    char typed[8][128];
    size_t n_typed = 0;
    for (size_t i = 0; i < n; i++) {
        if (lines[i][0] == '#') {
            char kind[8], name[128];
            assert_int_equal(sscanf(lines[i], "# %7s %127s", kind, name), 2);
            assert_true(!strcmp(kind, "HELP") || !strcmp(kind, "TYPE"));
            assert_true(!strchr(lines[i], '\r'));
            if (!strcmp(kind, "TYPE")) {
                assert_true(n_typed < 8);
                strcpy(typed[n_typed++], name);
                /* HELP comes right before TYPE. */
                assert_true(i > 0 && !strncmp(lines[i - 1], "# HELP ", 7));
            }
            continue;
        }
        line_sample s;
        assert_int_equal(parse_sample(lines[i], &s), 0);
        assert_true(!strncmp(s.name, "gastroscreen_", 13));
        int announced = 0;
        for (size_t t = 0; t < n_typed; t++)
            if (!strncmp(s.name, typed[t], strlen(typed[t])))
                announced = 1;
        assert_true(announced);
    }
    assert_int_equal(n_typed, 3);

    double v = 0;
    assert_int_equal(find(lines, n, "gastroscreen_slides_done_total", "class=\"positive\"", &v), 0);
    assert_true(v == 3);
    /* A label value with a quote, a backslash and a newline comes out escaped. */
    assert_int_equal(
        find(lines, n, "gastroscreen_slides_done_total", "class=\"nega\\\"tive\\\\\\n\"", &v), 0);
    assert_true(v == 12345678901.0);
    assert_int_equal(find(lines, n, "gastroscreen_slides_in_flight", "", &v), 0);
    assert_true(v == 2);

    /* Histogram: cumulative buckets ending in +Inf equal to _count, and _sum. */
    const char *les[] = {"0.01", "0.1", "1", "10", "+Inf"};
    const double infer_expected[] = {1, 3, 4, 5, 7};
    double previous = 0;
    for (size_t b = 0; b < 5; b++) {
        char labels[64];
        snprintf(labels, sizeof labels, "stage=\"infer\",le=\"%s\"", les[b]);
        assert_int_equal(find(lines, n, "gastroscreen_stage_seconds_bucket", labels, &v), 0);
        assert_true(v == infer_expected[b]);
        assert_true(v >= previous);
        previous = v;
    }
    assert_int_equal(find(lines, n, "gastroscreen_stage_seconds_count", "stage=\"infer\"", &v), 0);
    assert_true(v == 7);
    assert_int_equal(find(lines, n, "gastroscreen_stage_seconds_sum", "stage=\"infer\"", &v), 0);
    assert_true(fabs(v - 105.605) < 1e-9);
    assert_int_equal(
        find(lines, n, "gastroscreen_stage_seconds_bucket", "stage=\"tiler\",le=\"0.01\"", &v), 0);
    assert_true(v == 0);
    assert_int_equal(
        find(lines, n, "gastroscreen_stage_seconds_bucket", "stage=\"tiler\",le=\"0.1\"", &v), 0);
    assert_true(v == 1);
    assert_int_equal(find(lines, n, "gastroscreen_stage_seconds_count", "stage=\"tiler\"", &v), 0);
    assert_true(v == 1);
    /* The refused samples are absent. */
    assert_int_equal(find(lines, n, "gastroscreen_slides_done_total", "class=\"x\"", &v), -1);
    /* The help's newline is escaped, so it stayed on its line. */
    int help_seen = 0;
    for (size_t i = 0; i < n; i++)
        if (!strcmp(lines[i], "# HELP gastroscreen_slides_in_flight Slides accepted\\nand not "
                              "terminal."))
            help_seen = 1;
    assert_true(help_seen);
    free(lines);
}

static void render_parses_back(void **state)
{
    (void)state;
    fake_owner o;
    gs_metrics *m = make_registry(NULL, &o);
    assert_int_equal(gs_metrics_port(m), 0);
    size_t len = 0;
    char *text = gs_metrics_render(m, &len);
    assert_non_null(text);
    assert_int_equal(len, strlen(text));
    assert_int_equal(o.calls, 1);
    check_exposition(text);
    free(text);
    gs_metrics_destroy(&m);
    assert_null(m);
    gs_metrics_destroy(&m);
}

static void registration_rules(void **state)
{
    (void)state;
    gs_metrics *m = gs_metrics_new("");
    assert_non_null(m);
    assert_int_equal(gs_metrics_counter(m, "slides_total", "", NULL), -1);
    assert_non_null(strstr(gs_error_get(), "gastroscreen_"));
    assert_int_equal(gs_metrics_counter(m, "gastroscreen_slides", "", NULL), -1);
    assert_non_null(strstr(gs_error_get(), "_total"));
    assert_int_equal(gs_metrics_gauge(m, "gastroscreen_bad-name", "", NULL), -1);
    assert_int_equal(gs_metrics_gauge(m, "gastroscreen_depth", "", "le"), -1);
    assert_int_equal(gs_metrics_gauge(m, "gastroscreen_depth", "", "9stage"), -1);
    assert_int_equal(gs_metrics_gauge(m, "gastroscreen_depth", "", "stage"), 0);
    assert_int_equal(gs_metrics_gauge(m, "gastroscreen_depth", "", NULL), -1);
    assert_non_null(strstr(gs_error_get(), "twice"));
    const double unordered[] = {1, 0.5};
    const double inf[] = {1, INFINITY};
    assert_int_equal(gs_metrics_histogram(m, "gastroscreen_h_seconds", "", NULL, unordered, 2), -1);
    assert_int_equal(gs_metrics_histogram(m, "gastroscreen_h_seconds", "", NULL, inf, 2), -1);
    assert_int_equal(gs_metrics_histogram(m, "gastroscreen_h_seconds", "", NULL, bounds, 0), -1);
    assert_int_equal(gs_metrics_histogram(m, "gastroscreen_h_seconds", "", NULL, bounds,
                                          GS_METRICS_MAX_BUCKETS + 1),
                     -1);
    assert_int_equal(gs_metrics_histogram(m, "gastroscreen_h_seconds", "", NULL, bounds, 4), 1);
    /* Without a collector: headers only, no samples. */
    char *text = gs_metrics_render(m, NULL);
    assert_non_null(text);
    assert_string_equal(text, "# HELP gastroscreen_depth \n# TYPE gastroscreen_depth gauge\n"
                              "# HELP gastroscreen_h_seconds \n"
                              "# TYPE gastroscreen_h_seconds histogram\n");
    free(text);
    gs_metrics_destroy(&m);

    assert_null(gs_metrics_new("no-port"));
    assert_null(gs_metrics_new("127.0.0.1:99999"));
}

/* An info family renders its one constant series with every label, escaped, whether or not a
 * collector runs, and refuses samples and malformed registrations. */
static int info_id;
static int info_sample_rc;

static void collect_info(gs_metrics_sink *sink, void *user)
{
    (void)user;
    info_sample_rc = gs_metrics_sample(sink, info_id, NULL, 2);
}

static void info_families(void **state)
{
    (void)state;
    gs_metrics *m = gs_metrics_new("");
    assert_non_null(m);
    const char *keys[] = {"version", "note", "version"};
    const char *values[] = {"0.1.0", "a \"b\"\\c\nd", "x"};
    assert_int_equal(gs_metrics_info(m, "gastroscreen_build", "", keys, values, 1), -1);
    assert_non_null(strstr(gs_error_get(), "_info"));
    assert_int_equal(gs_metrics_info(m, "gastroscreen_build_info", "", keys, values, 0), -1);
    assert_int_equal(gs_metrics_info(m, "gastroscreen_build_info", "", keys, values, 3), -1);
    assert_non_null(strstr(gs_error_get(), "repeated"));
    const char *le[] = {"le"};
    assert_int_equal(gs_metrics_info(m, "gastroscreen_build_info", "", le, values, 1), -1);
    const char *no_value[] = {NULL};
    assert_int_equal(gs_metrics_info(m, "gastroscreen_build_info", "", keys, no_value, 1), -1);
    assert_int_equal(gs_metrics_info(m, "gastroscreen_build-x_info", "", keys, values, 1), -1);

    info_id = gs_metrics_info(m, "gastroscreen_build_info", "Build identity", keys, values, 2);
    assert_int_equal(info_id, 0);
    assert_int_equal(gs_metrics_info(m, "gastroscreen_build_info", "", keys, values, 1), -1);
    assert_non_null(strstr(gs_error_get(), "twice"));
    const char *expected = "# HELP gastroscreen_build_info Build identity\n"
                           "# TYPE gastroscreen_build_info gauge\n"
                           "gastroscreen_build_info{version=\"0.1.0\","
                           "note=\"a \\\"b\\\"\\\\c\\nd\"} 1\n";
    char *text = gs_metrics_render(m, NULL);
    assert_non_null(text);
    assert_string_equal(text, expected);
    free(text);
    /* With a collector that tries to sample it: refused, and the series is still there once. */
    info_sample_rc = 0;
    gs_metrics_set_collector(m, collect_info, NULL);
    text = gs_metrics_render(m, NULL);
    assert_int_equal(info_sample_rc, -1);
    assert_non_null(strstr(gs_error_get(), "info family"));
    assert_string_equal(text, expected);
    free(text);
    gs_metrics_destroy(&m);
}

/* Sends raw bytes to 127.0.0.1:port, half-closes, reads the whole answer (until the server
 * closes). Returns a malloc'd NUL-terminated answer. */
/* A TCP connection to 127.0.0.1:port from the loopback address `from` (127.0.0.x). */
static int connect_from(int port, uint32_t from)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in src = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(from)};
    assert_int_equal(bind(fd, (struct sockaddr *)&src, sizeof src), 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

static char *http_exchange_from(int port, uint32_t from, const char *request, size_t request_len)
{
    int fd = connect_from(port, from);
    size_t off = 0;
    while (off < request_len) {
        ssize_t w = write(fd, request + off, request_len - off);
        if (w <= 0)
            break; /* the server may hang up on garbage before reading it all */
        off += (size_t)w;
    }
    shutdown(fd, SHUT_WR);
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 1024 > cap)
            buf = realloc(buf, cap *= 2);
        ssize_t r = read(fd, buf + len, cap - len - 1);
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    buf[len] = '\0';
    close(fd);
    return buf;
}

static char *http_exchange(int port, const char *request, size_t request_len)
{
    return http_exchange_from(port, INADDR_LOOPBACK, request, request_len);
}

/* 1 while the server has not closed fd (no EOF or error waiting on it). */
static int still_open(int fd)
{
    char c;
    ssize_t r = recv(fd, &c, 1, MSG_DONTWAIT | MSG_PEEK);
    return r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

/* Many idle connections from one host (a slow-loris client) cannot keep the scraper on another
 * host out: one address holds a few slots, the others are closed at once. */
static void idle_connections_cannot_lock_out_a_scraper(void **state)
{
    (void)state;
    fake_owner o;
    gs_metrics *m = make_registry("127.0.0.1:0", &o);
    int port = gs_metrics_port(m);
    enum { IDLE = 200 };
    int fds[IDLE];
    for (int i = 0; i < IDLE; i++) {
        fds[i] = connect_from(port, INADDR_LOOPBACK);
        assert_int_equal(write(fds[i], "G", 1), 1); /* a request begun, never finished */
    }
    const char get[] = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    char *reply = http_exchange_from(port, INADDR_LOOPBACK + 1, get, strlen(get));
    assert_true(!strncmp(reply, "HTTP/1.1 200", 12));
    free(reply);
    /* The scraper was answered while the slow client still held connections, so it was not
     * served merely because the idle ones had timed out. */
    int open = 0;
    for (int i = 0; i < IDLE; i++)
        open += still_open(fds[i]);
    assert_true(open >= 1);
    assert_true(open <= 16);
    for (int i = 0; i < IDLE; i++)
        close(fds[i]);
    gs_metrics_destroy(&m);
}

static void http_serves_metrics_and_survives_garbage(void **state)
{
    (void)state;
    fake_owner o;
    gs_metrics *m = make_registry("127.0.0.1:0", &o);
    int port = gs_metrics_port(m);
    assert_true(port > 0);

    const char get[] = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    char *reply = http_exchange(port, get, strlen(get));
    assert_true(!strncmp(reply, "HTTP/1.1 200", 12));
    assert_non_null(strstr(reply, "Content-Type: " GS_METRICS_CONTENT_TYPE "\r\n"));
    char *body = strstr(reply, "\r\n\r\n");
    assert_non_null(body);
    check_exposition(body + 4);
    free(reply);

    const char other[] = "GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    reply = http_exchange(port, other, strlen(other));
    assert_true(!strncmp(reply, "HTTP/1.1 404", 12));
    free(reply);

    const char post[] = "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                        "Connection: close\r\n\r\nabc";
    reply = http_exchange(port, post, strlen(post));
    assert_true(!strncmp(reply, "HTTP/1.1 405", 12));
    free(reply);

    /* Garbage: random bytes, a huge header line, a truncated request. None may take the
     * server down. */
    char junk[8192];
    srand(7);
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (char)(rand() & 0xff);
    free(http_exchange(port, junk, sizeof junk));
    char huge[100000];
    memcpy(huge, "GET /", 5);
    memset(huge + 5, 'a', sizeof huge - 5);
    free(http_exchange(port, huge, sizeof huge));
    free(http_exchange(port, "GET /metr", 9));
    free(http_exchange(port, "\r\n\r\n", 4));

    int calls_before = o.calls;
    reply = http_exchange(port, get, strlen(get));
    assert_true(!strncmp(reply, "HTTP/1.1 200", 12));
    assert_int_equal(o.calls, calls_before + 1);
    free(reply);

    /* The port is taken now: a second server on it fails with a message. */
    char listen[32];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    assert_null(gs_metrics_new(listen));
    assert_non_null(strstr(gs_error_get(), "cannot listen"));
    gs_metrics_destroy(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(render_parses_back),
        cmocka_unit_test(registration_rules),
        cmocka_unit_test(info_families),
        cmocka_unit_test(http_serves_metrics_and_survives_garbage),
        cmocka_unit_test(idle_connections_cannot_lock_out_a_scraper),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
