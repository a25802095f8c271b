/* daemon/service/http: routing by longest prefix, GET/HEAD only, refused bodies, the path
 * checks (traversal, encoded NUL, malformed escapes, length), gs_http_reply_file under a root
 * (traversal, symlinks, directories, FIFOs), the token (required off loopback, 401, Bearer,
 * cookie, ?token= redirect), over-long requests and the per-address connection bound, all over
 * real loopback connections with a plain socket client. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "daemon/service/http.h"
#include "ops/error.h"

static const char TOKEN[] = "s3cret-token-0123456789abcdef";

/* ---- a plain client ---- */

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

/* Sends raw bytes, half-closes, reads the whole answer (until the server closes). */
static char *exchange_from(int port, uint32_t from, const char *request, size_t request_len)
{
    int fd = connect_from(port, from);
    size_t off = 0;
    while (off < request_len) {
        ssize_t w = write(fd, request + off, request_len - off);
        if (w <= 0)
            break; /* the server may hang up before reading it all */
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

static char *exchange(int port, const char *request)
{
    return exchange_from(port, INADDR_LOOPBACK, request, strlen(request));
}

/* GET (or another method) of target with extra header lines; returns the whole answer. */
static char *request(int port, const char *method, const char *target, const char *headers)
{
    char req[8192];
    snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%s\r\n", method,
             target, headers ? headers : "");
    return exchange(port, req);
}

static int status_of(const char *answer)
{
    int status = 0;
    if (sscanf(answer, "HTTP/1.1 %d", &status) != 1)
        return 0;
    return status;
}

static int get_status(int port, const char *target)
{
    char *a = request(port, "GET", target, NULL);
    int s = status_of(a);
    free(a);
    return s;
}

static const char *body_of(const char *answer)
{
    const char *b = strstr(answer, "\r\n\r\n");
    return b ? b + 4 : "";
}

/* ---- handlers ---- */

typedef struct {
    char name[16];
    char last_path[GS_HTTP_MAX_PATH + 1];
    char last_q[64];
    int calls;
} echo_state;

/* Answers "<name> <path>" and remembers the path and ?q. */
static int echo(const gs_http_request *rq, gs_http_reply *reply, void *user)
{
    echo_state *e = user;
    e->calls++;
    snprintf(e->last_path, sizeof e->last_path, "%s", gs_http_path(rq));
    const char *q = gs_http_query(rq, "q");
    snprintf(e->last_q, sizeof e->last_q, "%s", q ? q : "(none)");
    char text[GS_HTTP_MAX_PATH + 64];
    snprintf(text, sizeof text, "%s %s", e->name, gs_http_path(rq));
    assert_int_equal(gs_http_reply_header(reply, "Cache-Control", "no-store"), 0);
    assert_int_equal(gs_http_reply_text(reply, 200, text), 0);
    /* exactly one reply */
    assert_int_equal(gs_http_reply_json(reply, 200, "{}"), -1);
    return 0;
}

static int failing(const gs_http_request *rq, gs_http_reply *reply, void *user)
{
    (void)rq;
    (void)reply;
    (void)user;
    return gs_error_set("test: the handler failed on purpose");
}

static int silent(const gs_http_request *rq, gs_http_reply *reply, void *user)
{
    (void)rq;
    (void)reply;
    (void)user;
    return 0;
}

static int bad_header(const gs_http_request *rq, gs_http_reply *reply, void *user)
{
    (void)rq;
    (void)user;
    assert_int_equal(gs_http_reply_header(reply, "X-Split", "a\r\nSet-Cookie: x=1"), -1);
    assert_int_equal(gs_http_reply_header(reply, "Bad Name", "v"), -1);
    return gs_http_reply_json(reply, 200, "{\"ok\":true}");
}

/* Serves files under the root given as user, rel = the path after "/files/". */
static int files(const gs_http_request *rq, gs_http_reply *reply, void *user)
{
    return gs_http_reply_file(reply, user, gs_http_path(rq) + strlen("/files/"), NULL);
}

static gs_http *server(const char *listen, const char *token, unsigned per_ip)
{
    gs_http_options o = {.listen = listen, .token = token, .max_per_ip = per_ip};
    gs_http *h = gs_http_new(&o);
    assert_non_null(h);
    assert_true(gs_http_port(h) > 0);
    return h;
}

/* ---- tests ---- */

static void routes_by_longest_prefix(void **state)
{
    (void)state;
    echo_state root = {.name = "root"}, api = {.name = "api"}, metrics = {.name = "metrics"},
               slides = {.name = "slides"};
    gs_http *h = server("127.0.0.1:0", NULL, 0);
    int port = gs_http_port(h);
    assert_int_equal(gs_http_route(h, "/", echo, &root), 0);
    assert_int_equal(gs_http_route(h, "/api/", echo, &api), 0);
    assert_int_equal(gs_http_route(h, "/metrics", echo, &metrics), 0);
    assert_int_equal(gs_http_route(h, "/api/slides", echo, &slides), 0);
    assert_int_equal(gs_http_route(h, "/api/", echo, &api), -1);
    assert_non_null(strstr(gs_error_get(), "twice"));
    assert_int_equal(gs_http_route(h, "api", echo, &api), -1);
    assert_int_equal(gs_http_route(h, "/fail", failing, NULL), 0);
    assert_int_equal(gs_http_route(h, "/silent", silent, NULL), 0);
    assert_int_equal(gs_http_route(h, "/header", bad_header, NULL), 0);
    assert_int_equal(gs_http_start(h), 0);
    assert_int_equal(gs_http_route(h, "/late", echo, &root), -1);

    char *a = request(port, "GET", "/metrics", NULL);
    assert_int_equal(status_of(a), 200);
    assert_string_equal(body_of(a), "metrics /metrics");
    assert_non_null(strstr(a, "Cache-Control: no-store\r\n"));
    assert_non_null(strstr(a, "X-Content-Type-Options: nosniff\r\n"));
    free(a);
    a = request(port, "GET", "/metricsx", NULL);
    assert_string_equal(body_of(a), "root /metricsx");
    free(a);
    a = request(port, "GET", "/api/slides?q=a%20b%26c", NULL);
    assert_string_equal(body_of(a), "slides /api/slides");
    assert_string_equal(slides.last_q, "a b&c");
    free(a);
    a = request(port, "GET", "/api/throughput", NULL);
    assert_string_equal(body_of(a), "api /api/throughput");
    free(a);
    a = request(port, "GET", "/view/%C3%A9t%C3%A9", NULL);
    assert_string_equal(body_of(a), "root /view/\xc3\xa9t\xc3\xa9");
    free(a);

    /* HEAD: the headers of the GET, no body. */
    a = request(port, "HEAD", "/metrics", NULL);
    assert_int_equal(status_of(a), 200);
    assert_non_null(strstr(a, "Content-Length: 16\r\n"));
    assert_string_equal(body_of(a), "");
    free(a);

    /* A failing handler, a handler without a reply: 500, and the server goes on. */
    assert_int_equal(get_status(port, "/fail"), 500);
    assert_int_equal(get_status(port, "/silent"), 500);
    a = request(port, "GET", "/header", NULL);
    assert_int_equal(status_of(a), 200);
    assert_null(strstr(a, "X-Split"));
    assert_non_null(strstr(a, "Content-Type: application/json\r\n"));
    free(a);
    gs_http_destroy(&h);
    assert_null(h);

    /* Without a "/" route an unrouted path is 404. */
    h = server("127.0.0.1:0", NULL, 0);
    port = gs_http_port(h);
    assert_int_equal(gs_http_route(h, "/metrics", echo, &metrics), 0);
    assert_int_equal(gs_http_start(h), 0);
    assert_int_equal(get_status(port, "/"), 404);
    assert_int_equal(get_status(port, "/other"), 404);
    assert_int_equal(get_status(port, "/metrics"), 200);
    gs_http_destroy(&h);
}

static void get_and_head_only_no_bodies(void **state)
{
    (void)state;
    echo_state root = {.name = "root"};
    gs_http *h = server("127.0.0.1:0", NULL, 0);
    int port = gs_http_port(h);
    assert_int_equal(gs_http_route(h, "/", echo, &root), 0);
    assert_int_equal(gs_http_start(h), 0);
    const char *methods[] = {"POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"};
    for (size_t i = 0; i < sizeof methods / sizeof *methods; i++) {
        char *a = request(port, methods[i], "/", "Content-Length: 3\r\n");
        assert_int_equal(status_of(a), 405);
        assert_non_null(strstr(a, "Allow: GET, HEAD\r\n"));
        free(a);
    }
    char *a = exchange(port, "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                             "Connection: close\r\n\r\nhello");
    assert_int_equal(status_of(a), 413);
    free(a);
    a = exchange(port, "GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                       "Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    assert_int_equal(status_of(a), 413);
    free(a);
    assert_int_equal(root.calls, 0);
    assert_int_equal(get_status(port, "/"), 200);
    assert_int_equal(root.calls, 1);
    gs_http_destroy(&h);
}

static void bad_paths_never_reach_a_handler(void **state)
{
    (void)state;
    echo_state root = {.name = "root"};
    gs_http *h = server("127.0.0.1:0", NULL, 0);
    int port = gs_http_port(h);
    assert_int_equal(gs_http_route(h, "/", echo, &root), 0);
    assert_int_equal(gs_http_start(h), 0);
    const char *bad[] = {"/static/../../etc/passwd",
                         "/static/%2e%2e/%2e%2e/etc/passwd",
                         "/static/%2E%2E%2Fsecret",
                         "/static/..%2fsecret",
                         "/static/a%00.html",
                         "/static/a%zz",
                         "/static/a%2",
                         "/static/a%",
                         "/static//etc/passwd",
                         "/static/%2f%2fetc",
                         "/static/a%5cb",
                         "/static/a%0d%0aSet-Cookie:%20x",
                         "/static/%c0%ae%c0%ae/x",
                         "/static/%ff",
                         "/static/%ed%a0%80"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int s = get_status(port, bad[i]);
        if (s != 400)
            fail_msg("%s answered %d, want 400", bad[i], s);
    }
    assert_int_equal(root.calls, 0);

    char longpath[GS_HTTP_MAX_PATH + 16];
    memset(longpath, 'a', sizeof longpath - 1);
    longpath[0] = '/';
    longpath[sizeof longpath - 1] = '\0';
    assert_int_equal(get_status(port, longpath), 414);
    longpath[GS_HTTP_MAX_PATH] = '\0';
    assert_int_equal(get_status(port, longpath), 200);
    assert_int_equal(root.calls, 1);
    gs_http_destroy(&h);
}

static char *make_tree(void)
{
    char tmpl[] = "/tmp/gs-http-XXXXXX";
    char *dir = mkdtemp(tmpl);
    assert_non_null(dir);
    char *root = malloc(512);
    snprintf(root, 512, "%s/web", dir);
    assert_int_equal(mkdir(root, 0700), 0);
    char p[600], q[600];
    FILE *f;
#define WRITE(rel, text)                                                                           \
    do {                                                                                           \
        snprintf(p, sizeof p, "%s/%s", root, rel);                                                 \
        assert_non_null(f = fopen(p, "w"));                                                        \
        fputs(text, f);                                                                            \
        fclose(f);                                                                                 \
    } while (0)
    WRITE("index.html", "<p>hello</p>");
    WRITE("app.js", "let x = 1;");
    snprintf(p, sizeof p, "%s/sub", root);
    assert_int_equal(mkdir(p, 0700), 0);
    WRITE("sub/style.css", "p {}");
    /* a secret outside the root, and links to it from inside */
    snprintf(p, sizeof p, "%s/secret.txt", dir);
    assert_non_null(f = fopen(p, "w"));
    fputs("SECRET", f);
    fclose(f);
    snprintf(q, sizeof q, "%s/link.txt", root);
    assert_int_equal(symlink(p, q), 0);
    snprintf(q, sizeof q, "%s/inner.html", root);
    assert_int_equal(symlink("index.html", q), 0);
    snprintf(q, sizeof q, "%s/up", root);
    assert_int_equal(symlink(dir, q), 0);
    snprintf(q, sizeof q, "%s/fifo.txt", root);
    assert_int_equal(mkfifo(q, 0600), 0);
    return root;
#undef WRITE
}

static void remove_tree(char *root)
{
    char cmd[700];
    char *slash = strrchr(root, '/');
    *slash = '\0';
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    assert_int_equal(system(cmd), 0);
    free(root);
}

static void reply_file_stays_under_its_root(void **state)
{
    (void)state;
    char *root = make_tree();
    gs_http *h = server("127.0.0.1:0", NULL, 0);
    int port = gs_http_port(h);
    assert_int_equal(gs_http_route(h, "/files/", files, root), 0);
    assert_int_equal(gs_http_start(h), 0);

    char *a = request(port, "GET", "/files/index.html", NULL);
    assert_int_equal(status_of(a), 200);
    assert_non_null(strstr(a, "Content-Type: text/html; charset=utf-8\r\n"));
    assert_string_equal(body_of(a), "<p>hello</p>");
    free(a);
    a = request(port, "GET", "/files/sub/style.css", NULL);
    assert_int_equal(status_of(a), 200);
    assert_non_null(strstr(a, "Content-Type: text/css"));
    assert_string_equal(body_of(a), "p {}");
    free(a);
    a = request(port, "HEAD", "/files/app.js", NULL);
    assert_int_equal(status_of(a), 200);
    assert_non_null(strstr(a, "Content-Length: 10\r\n"));
    assert_non_null(strstr(a, "Content-Type: text/javascript"));
    assert_string_equal(body_of(a), "");
    free(a);
    /* Symlinks (to a file outside, to a file inside, to a folder outside), a folder, a FIFO,
     * a missing file: all 404, and the secret never appears. */
    const char *missing[] = {
        "/files/link.txt", "/files/inner.html", "/files/up/secret.txt", "/files/sub",
        "/files/sub/",     "/files/fifo.txt",   "/files/nope.html",     "/files/"};
    for (size_t i = 0; i < sizeof missing / sizeof *missing; i++) {
        a = request(port, "GET", missing[i], NULL);
        if (status_of(a) != 404)
            fail_msg("%s answered %d, want 404", missing[i], status_of(a));
        assert_null(strstr(a, "SECRET"));
        free(a);
    }
    gs_http_destroy(&h);

    /* Called directly with paths a handler might build: the same refusals. */
    assert_string_equal(gs_http_content_type("a.geojson"), "application/geo+json");
    assert_string_equal(gs_http_content_type("a.JPEG"), "image/jpeg");
    assert_string_equal(gs_http_content_type("a.svg"), "image/svg+xml");
    assert_string_equal(gs_http_content_type("a.json"), "application/json");
    assert_string_equal(gs_http_content_type("a.png"), "image/png");
    assert_string_equal(gs_http_content_type("x.d/noext"), "application/octet-stream");
    remove_tree(root);
}

/* A handler serving rel names directly from a query argument, to reach gs_http_reply_file with
 * paths the URL check would have stopped. */
static int raw_files(const gs_http_request *rq, gs_http_reply *reply, void *user)
{
    const char *rel = gs_http_query(rq, "rel");
    return gs_http_reply_file(reply, user, rel ? rel : "", NULL);
}

static void reply_file_refuses_raw_traversal(void **state)
{
    (void)state;
    char *root = make_tree();
    gs_http *h = server("127.0.0.1:0", NULL, 0);
    int port = gs_http_port(h);
    assert_int_equal(gs_http_route(h, "/raw", raw_files, root), 0);
    assert_int_equal(gs_http_start(h), 0);
    assert_int_equal(get_status(port, "/raw?rel=index.html"), 200);
    const char *bad[] = {"../secret.txt",
                         "sub/../../secret.txt",
                         "/etc/passwd",
                         "./index.html",
                         "sub/./style.css",
                         "sub//style.css",
                         "",
                         "sub/..",
                         "up/secret.txt"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char target[256];
        char enc[200] = {0};
        for (size_t j = 0, k = 0; bad[i][j]; j++, k += 3)
            snprintf(enc + k, sizeof enc - k, "%%%02X", (unsigned char)bad[i][j]);
        snprintf(target, sizeof target, "/raw?rel=%s", enc);
        char *a = request(port, "GET", target, NULL);
        if (status_of(a) != 404)
            fail_msg("rel=%s answered %d, want 404", bad[i], status_of(a));
        assert_null(strstr(a, "SECRET"));
        free(a);
    }
    gs_http_destroy(&h);
    remove_tree(root);
}

static void token_rules(void **state)
{
    (void)state;
    /* Off loopback a token is required; a weak token is refused anywhere. */
    gs_http_options o = {.listen = "0.0.0.0:0"};
    assert_null(gs_http_new(&o));
    assert_non_null(strstr(gs_error_get(), "token"));
    o.listen = "*:0";
    assert_null(gs_http_new(&o));
    o.token = "short";
    o.listen = "127.0.0.1:0";
    assert_null(gs_http_new(&o));
    o.token = "has space in the token value";
    assert_null(gs_http_new(&o));
    o.listen = "0.0.0.0:0";
    o.token = TOKEN;
    gs_http *h = gs_http_new(&o);
    assert_non_null(h);
    assert_int_equal(gs_http_is_loopback(h), 0);
    gs_http_destroy(&h);
    o.listen = "localhost:0";
    o.token = NULL;
    h = gs_http_new(&o);
    assert_non_null(h);
    assert_int_equal(gs_http_is_loopback(h), 1);
    gs_http_destroy(&h);
    o.listen = "127.0.0.1";
    assert_null(gs_http_new(&o));
    o.listen = "127.0.0.1:70000";
    assert_null(gs_http_new(&o));
}

static void token_is_enforced(void **state)
{
    (void)state;
    echo_state root = {.name = "root"};
    gs_http *h = server("127.0.0.1:0", TOKEN, 0);
    int port = gs_http_port(h);
    assert_int_equal(gs_http_route(h, "/", echo, &root), 0);
    assert_int_equal(gs_http_start(h), 0);

    char *a = request(port, "GET", "/api/slides", NULL);
    assert_int_equal(status_of(a), 401);
    assert_non_null(strstr(a, "WWW-Authenticate: Bearer\r\n"));
    free(a);
    assert_int_equal(get_status(port, "/nonexistent/route"), 401);
    char hdr[256];
    snprintf(hdr, sizeof hdr, "Authorization: Bearer %s\r\n", TOKEN);
    a = request(port, "GET", "/api/slides", hdr);
    assert_int_equal(status_of(a), 200);
    free(a);
    snprintf(hdr, sizeof hdr, "Authorization: Bearer %sx\r\n", TOKEN);
    assert_int_equal(status_of(a = request(port, "GET", "/", hdr)), 401);
    free(a);
    snprintf(hdr, sizeof hdr, "Authorization: Basic %s\r\n", TOKEN);
    assert_int_equal(status_of(a = request(port, "GET", "/", hdr)), 401);
    free(a);
    snprintf(hdr, sizeof hdr, "Cookie: other=1; gs_token_%d=%s\r\n", port, TOKEN);
    assert_int_equal(status_of(a = request(port, "GET", "/", hdr)), 200);
    free(a);
    snprintf(hdr, sizeof hdr, "Cookie: gs_token_%d=%.*s\r\n", port, (int)strlen(TOKEN) - 1, TOKEN);
    assert_int_equal(status_of(a = request(port, "GET", "/", hdr)), 401);
    free(a);
    /* Another port's cookie is not this server's token. */
    snprintf(hdr, sizeof hdr, "Cookie: gs_token_%d=%s\r\n", port + 1, TOKEN);
    assert_int_equal(status_of(a = request(port, "GET", "/", hdr)), 401);
    free(a);

    /* ?token= sets the cookie and redirects to the same URL without it. */
    char target[256];
    snprintf(target, sizeof target, "/view/abc?q=1%%202&token=%s&x", TOKEN);
    int calls = root.calls;
    a = request(port, "GET", target, NULL);
    assert_int_equal(status_of(a), 303);
    assert_non_null(strstr(a, "Location: /view/abc?q=1%202&x\r\n"));
    char cookie[256];
    snprintf(cookie, sizeof cookie, "Set-Cookie: gs_token_%d=%s; Path=/; HttpOnly; SameSite=Lax",
             port, TOKEN);
    assert_non_null(strstr(a, cookie));
    assert_int_equal(root.calls, calls);
    free(a);
    snprintf(target, sizeof target, "/?token=%s", TOKEN);
    a = request(port, "GET", target, NULL);
    assert_int_equal(status_of(a), 303);
    assert_non_null(strstr(a, "Location: /\r\n"));
    free(a);
    assert_int_equal(get_status(port, "/?token=wrong-token-0123456789"), 401);
    /* the 401 page never echoes the token */
    a = request(port, "GET", "/?token=wrong-token-0123456789", NULL);
    assert_null(strstr(a, TOKEN));
    free(a);
    gs_http_destroy(&h);
}

static void over_long_requests_are_refused(void **state)
{
    (void)state;
    echo_state root = {.name = "root"};
    gs_http *h = server("127.0.0.1:0", NULL, 0);
    int port = gs_http_port(h);
    assert_int_equal(gs_http_route(h, "/", echo, &root), 0);
    assert_int_equal(gs_http_start(h), 0);
    static char huge[100000];
    /* a huge request line */
    memcpy(huge, "GET /", 5);
    memset(huge + 5, 'a', sizeof huge - 5);
    char *a = exchange_from(port, INADDR_LOOPBACK, huge, sizeof huge);
    assert_true(status_of(a) == 414 || status_of(a) == 0);
    free(a);
    /* a huge header */
    int n = snprintf(huge, sizeof huge, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: ");
    memset(huge + n, 'b', sizeof huge - (size_t)n - 5);
    memcpy(huge + sizeof huge - 5, "\r\n\r\n", 4);
    a = exchange_from(port, INADDR_LOOPBACK, huge, sizeof huge - 1);
    assert_true(status_of(a) == 431 || status_of(a) == 413 || status_of(a) == 0);
    free(a);
    /* garbage */
    for (size_t i = 0; i < 8192; i++)
        huge[i] = (char)(rand() & 0xff);
    free(exchange_from(port, INADDR_LOOPBACK, huge, 8192));
    free(exchange(port, "GET /metr"));
    assert_int_equal(root.calls, 0);
    assert_int_equal(get_status(port, "/"), 200);
    gs_http_destroy(&h);
}

static int still_open(int fd)
{
    char c;
    ssize_t r = recv(fd, &c, 1, MSG_DONTWAIT | MSG_PEEK);
    return r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

/* Idle connections from one address hold at most max_per_ip slots; another address is
 * still served while they are open. */
static void connections_are_bounded(void **state)
{
    (void)state;
    echo_state root = {.name = "root"};
    gs_http *h = server("127.0.0.1:0", NULL, 3);
    int port = gs_http_port(h);
    assert_int_equal(gs_http_route(h, "/", echo, &root), 0);
    assert_int_equal(gs_http_start(h), 0);
    enum { IDLE = 100 };
    int fds[IDLE];
    for (int i = 0; i < IDLE; i++) {
        fds[i] = connect_from(port, INADDR_LOOPBACK);
        assert_int_equal(write(fds[i], "G", 1), 1);
    }
    char *a = exchange_from(port, INADDR_LOOPBACK + 1, "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                            strlen("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert_int_equal(status_of(a), 200);
    free(a);
    int open = 0;
    for (int i = 0; i < IDLE; i++)
        open += still_open(fds[i]);
    assert_true(open >= 1);
    assert_true(open <= 3);
    for (int i = 0; i < IDLE; i++)
        close(fds[i]);
    gs_http_destroy(&h);
}

/* A handler that waits (up to 10 s) for another request's handler to run, and one that runs. */
typedef struct {
    pthread_mutex_t m;
    pthread_cond_t cv;
    int slow_started, fast_done;
} pool_state;

static int slow(const gs_http_request *rq, gs_http_reply *reply, void *user)
{
    (void)rq;
    pool_state *p = user;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&p->m);
    p->slow_started = 1;
    pthread_cond_broadcast(&p->cv);
    while (!p->fast_done && pthread_cond_timedwait(&p->cv, &p->m, &until) == 0)
        ;
    int saw = p->fast_done;
    pthread_mutex_unlock(&p->m);
    return gs_http_reply_text(reply, 200, saw ? "saw fast\n" : "alone\n");
}

static int fast(const gs_http_request *rq, gs_http_reply *reply, void *user)
{
    (void)rq;
    pool_state *p = user;
    pthread_mutex_lock(&p->m);
    p->fast_done = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->m);
    return gs_http_reply_text(reply, 200, "fast\n");
}

static void *slow_client(void *arg)
{
    return request(*(int *)arg, "GET", "/slow", NULL);
}

/* A handler that blocks (a tile read from slow storage) holds up only its own request: another
 * request is answered while it waits. With one handler thread the slow one would wait alone for
 * 10 s and answer "alone". */
static void a_slow_handler_holds_up_only_its_request(void **state)
{
    (void)state;
    pool_state p = {.m = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    gs_http *h = server("127.0.0.1:0", NULL, 0);
    int port = gs_http_port(h);
    assert_int_equal(gs_http_route(h, "/slow", slow, &p), 0);
    assert_int_equal(gs_http_route(h, "/fast", fast, &p), 0);
    assert_int_equal(gs_http_start(h), 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, slow_client, &port), 0);
    pthread_mutex_lock(&p.m);
    while (!p.slow_started)
        pthread_cond_wait(&p.cv, &p.m);
    pthread_mutex_unlock(&p.m);
    char *a = request(port, "GET", "/fast", NULL);
    assert_int_equal(status_of(a), 200);
    free(a);
    void *slow_answer = NULL;
    assert_int_equal(pthread_join(t, &slow_answer), 0);
    assert_string_equal(body_of(slow_answer), "saw fast\n");
    free(slow_answer);
    gs_http_destroy(&h);
}

static void port_in_use_is_an_error(void **state)
{
    (void)state;
    gs_http *h = server("127.0.0.1:0", NULL, 0);
    char listen[32];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", gs_http_port(h));
    gs_http_options o = {.listen = listen};
    assert_null(gs_http_new(&o));
    assert_non_null(strstr(gs_error_get(), "cannot listen"));
    /* never started: destroy still closes the socket */
    gs_http_destroy(&h);
    h = gs_http_new(&o);
    assert_non_null(h);
    gs_http_destroy(&h);
    gs_http_destroy(&h);
}

/* The token file: 0600 or 0400, a regular file, one line of a valid token. */
static void token_file_rules(void **state)
{
    (void)state;
    char dir[] = "/tmp/gs-http-token-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256], link[256], token[GS_HTTP_TOKEN_MAX + 1];
    snprintf(path, sizeof path, "%s/http.token", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "  %s \nsecond line ignored\n", TOKEN);
    fclose(f);
    assert_int_equal(chmod(path, 0644), 0);
    assert_int_equal(gs_http_read_token(path, token, sizeof token), -1);
    assert_non_null(strstr(gs_error_get(), "chmod 600"));
    assert_null(strstr(gs_error_get(), TOKEN));
    assert_int_equal(chmod(path, 0600), 0);
    assert_int_equal(gs_http_read_token(path, token, sizeof token), 0);
    assert_string_equal(token, TOKEN);
    assert_int_equal(chmod(path, 0400), 0);
    assert_int_equal(gs_http_read_token(path, token, sizeof token), 0);
    /* a symlink to it is refused (O_NOFOLLOW), so is a folder, a missing file */
    snprintf(link, sizeof link, "%s/link.token", dir);
    assert_int_equal(symlink(path, link), 0);
    assert_int_equal(gs_http_read_token(link, token, sizeof token), -1);
    assert_int_equal(gs_http_read_token(dir, token, sizeof token), -1);
    snprintf(link, sizeof link, "%s/missing", dir);
    assert_int_equal(gs_http_read_token(link, token, sizeof token), -1);
    /* a weak token is refused with the rule, not the value */
    assert_int_equal(chmod(path, 0600), 0);
    f = fopen(path, "w");
    fputs("tooshort\n", f);
    fclose(f);
    assert_int_equal(gs_http_read_token(path, token, sizeof token), -1);
    assert_non_null(strstr(gs_error_get(), "16..256"));
    assert_null(strstr(gs_error_get(), "tooshort"));
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(routes_by_longest_prefix),
        cmocka_unit_test(get_and_head_only_no_bodies),
        cmocka_unit_test(bad_paths_never_reach_a_handler),
        cmocka_unit_test(reply_file_stays_under_its_root),
        cmocka_unit_test(reply_file_refuses_raw_traversal),
        cmocka_unit_test(token_rules),
        cmocka_unit_test(token_is_enforced),
        cmocka_unit_test(token_file_rules),
        cmocka_unit_test(over_long_requests_are_refused),
        cmocka_unit_test(connections_are_bounded),
        cmocka_unit_test(a_slow_handler_holds_up_only_its_request),
        cmocka_unit_test(port_in_use_is_an_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
