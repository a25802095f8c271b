/*
 * http: see http.h. The socket is bound by gs_http_new itself (so the port is known before the
 * routes are registered) and handed to libmicrohttpd at gs_http_start. Percent-decoding is ours
 * (MHD_OPTION_UNESCAPE_CALLBACK) so that an encoded NUL or a malformed escape becomes a byte the
 * path check refuses instead of silently cutting the path short.
 */
#include "daemon/service/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <microhttpd.h>

#include "ops/error.h"
#include "stages/runtime/log.h"

#define DEFAULT_MAX_CONNECTIONS 64u
#define DEFAULT_MAX_PER_IP 16u
#define DEFAULT_TIMEOUT_S 10u
#define HTTP_THREADS 4u /* handler threads (MHD thread pool) */
/* The request line and every header must fit in this per-connection buffer: a browser's
 * requests take 1-2 KiB, and a bound keeps a garbage client from holding much memory. */
#define CONNECTION_MEMORY (32u * 1024u)
#define MAX_HEADERS 16
#define TOKEN_MIN 16
#define TOKEN_MAX GS_HTTP_TOKEN_MAX
/* The byte a refused escape (%00, %zz, a lone %) decodes to: a control character, which the
 * path check refuses and no token or argument compares equal to. */
#define BAD_ESCAPE '\x01'

typedef struct {
    char *prefix;
    size_t len;
    gs_http_handler *fn;
    void *user;
} route;

struct gs_http {
    int fd; /* the bound socket until gs_http_start hands it to the daemon */
    int family;
    int port;
    int loopback;
    char *token;
    unsigned max_connections, max_per_ip, timeout_s;
    route *routes;
    size_t n_routes;
    struct MHD_Daemon *daemon;
};

struct gs_http_request {
    struct MHD_Connection *c;
    const char *path;
};

struct gs_http_reply {
    int done;
    unsigned status;
    char *content_type;
    char *body;
    size_t len;
    int fd; /* a file reply: its descriptor (owned) and size */
    uint64_t size;
    char *header_name[MAX_HEADERS], *header_value[MAX_HEADERS];
    size_t n_headers;
};

/* ---- addresses ---- */

/* Splits "host:port" / "[v6]:port" / "*:port" and resolves it for listening. Returns 0 and
 * the address (caller frees with freeaddrinfo), or -1 with the error set. */
static int resolve_listen(const char *listen, struct addrinfo **out)
{
    char host[256];
    const char *colon = strrchr(listen, ':');
    if (!colon || !colon[1])
        return gs_error_set("http: listen address '%s' is not host:port", listen);
    size_t hlen = (size_t)(colon - listen);
    const char *h = listen;
    if (hlen >= 2 && h[0] == '[' && h[hlen - 1] == ']') {
        h++;
        hlen -= 2;
    }
    if (hlen >= sizeof host)
        return gs_error_set("http: host in '%s' is too long", listen);
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    char *end = NULL;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (errno || *end || port < 0 || port > 65535)
        return gs_error_set("http: bad port in '%s'", listen);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    int any = hlen == 0 || !strcmp(host, "*");
    if (any)
        hints.ai_family = AF_INET;
    int rc = getaddrinfo(any ? NULL : host, colon + 1, &hints, out);
    if (rc != 0)
        return gs_error_set("http: cannot resolve '%s': %s", listen, gai_strerror(rc));
    return 0;
}

static int is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(a))
            return 1;
        return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127;
    }
    return 0;
}

static int token_ok(const char *t)
{
    size_t n = strlen(t);
    if (n < TOKEN_MIN || n > TOKEN_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = t[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr("._~+/=-", c)))
            return 0;
    }
    return 1;
}

int gs_http_read_token(const char *path, char *token, size_t cap)
{
    GS_ASSERT(path && token && cap > 0);
    token[0] = '\0';
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return gs_error_set("%s: cannot open the HTTP token file: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return gs_error_set("%s: the HTTP token file is not a regular file", path);
    }
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        close(fd);
        return gs_error_set("%s: the HTTP token file is readable or writable by group or others "
                            "(mode %03o); refusing it: chmod 600 %s",
                            path, (unsigned)(st.st_mode & 0777), path);
    }
    char buf[TOKEN_MAX + 64];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n < 0)
        return gs_error_set("%s: cannot read the HTTP token file: %s", path, strerror(errno));
    buf[n] = '\0';
    char *line_end = strpbrk(buf, "\r\n");
    if (line_end)
        *line_end = '\0';
    char *start = buf;
    while (*start == ' ' || *start == '\t')
        start++;
    size_t len = strlen(start);
    while (len && (start[len - 1] == ' ' || start[len - 1] == '\t'))
        start[--len] = '\0';
    int ok = token_ok(start) && len < cap;
    if (ok)
        memcpy(token, start, len + 1);
    memset(buf, 0, sizeof buf);
    if (!ok)
        return gs_error_set("%s: the HTTP token must be one line of %d..%d characters of "
                            "[A-Za-z0-9._~+/=-] (e.g. openssl rand -hex 32)",
                            path, TOKEN_MIN, TOKEN_MAX);
    return 0;
}

gs_http *gs_http_new(const gs_http_options *opt)
{
    GS_ASSERT(opt);
    if (!opt->listen || !*opt->listen) {
        gs_error_set("http: no listen address");
        return NULL;
    }
    const char *token = opt->token && *opt->token ? opt->token : NULL;
    if (token && !token_ok(token)) {
        gs_error_set("http: the token must be %d..%d characters of [A-Za-z0-9._~+/=-]", TOKEN_MIN,
                     TOKEN_MAX);
        return NULL;
    }
    gs_http *h = calloc(1, sizeof *h);
    if (!h) {
        gs_error_set("http: out of memory");
        return NULL;
    }
    h->fd = -1;
    h->max_connections = opt->max_connections ? opt->max_connections : DEFAULT_MAX_CONNECTIONS;
    h->max_per_ip = opt->max_per_ip ? opt->max_per_ip : DEFAULT_MAX_PER_IP;
    h->timeout_s = opt->timeout_s ? opt->timeout_s : DEFAULT_TIMEOUT_S;
    if (token && !(h->token = strdup(token))) {
        gs_error_set("http: out of memory");
        goto fail_free;
    }
    struct addrinfo *ai = NULL;
    if (resolve_listen(opt->listen, &ai) < 0)
        goto fail_free;
    h->loopback = is_loopback(ai->ai_addr);
    if (!h->loopback && !token) {
        gs_error_set("http: %s is not a loopback address: serving it needs a token "
                     "(http_token_file), or bind 127.0.0.1",
                     opt->listen);
        goto fail_addr;
    }
    h->family = ai->ai_family;
    h->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (h->fd < 0) {
        gs_error_set("http: socket: %s", strerror(errno));
        goto fail_addr;
    }
    int one = 1;
    setsockopt(h->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(h->fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(h->fd, 64) < 0) {
        gs_error_set("http: cannot listen on %s: %s", opt->listen, strerror(errno));
        goto fail_socket;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(h->fd, (struct sockaddr *)&ss, &sl) == 0)
        h->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    freeaddrinfo(ai);
    return h;

fail_socket:
    close(h->fd);
fail_addr:
    freeaddrinfo(ai);
fail_free:
    free(h->token);
    free(h);
    return NULL;
}

void gs_http_destroy(gs_http **ph)
{
    if (!ph || !*ph)
        return;
    gs_http *h = *ph;
    if (h->daemon)
        MHD_stop_daemon(h->daemon); /* closes the listening socket it was given */
    else if (h->fd >= 0)
        close(h->fd);
    for (size_t i = 0; i < h->n_routes; i++)
        free(h->routes[i].prefix);
    free(h->routes);
    if (h->token) {
        memset(h->token, 0, strlen(h->token));
        free(h->token);
    }
    free(h);
    *ph = NULL;
}

int gs_http_port(const gs_http *h)
{
    return h ? h->port : 0;
}

int gs_http_is_loopback(const gs_http *h)
{
    return h ? h->loopback : 0;
}

int gs_http_route(gs_http *h, const char *prefix, gs_http_handler *fn, void *user)
{
    GS_ASSERT(h && fn);
    if (h->daemon)
        return gs_error_set("http: route %s registered after the start", prefix ? prefix : "");
    if (!prefix || prefix[0] != '/')
        return gs_error_set("http: route prefix '%s' must start with '/'", prefix ? prefix : "");
    for (size_t i = 0; i < h->n_routes; i++)
        if (!strcmp(h->routes[i].prefix, prefix))
            return gs_error_set("http: route %s registered twice", prefix);
    route *grown = realloc(h->routes, (h->n_routes + 1) * sizeof *grown);
    if (!grown)
        return gs_error_set("http: out of memory");
    h->routes = grown;
    route *r = &h->routes[h->n_routes];
    if (!(r->prefix = strdup(prefix)))
        return gs_error_set("http: out of memory");
    r->len = strlen(prefix);
    r->fn = fn;
    r->user = user;
    h->n_routes++;
    return 0;
}

static const route *find_route(const gs_http *h, const char *path)
{
    const route *best = NULL;
    for (size_t i = 0; i < h->n_routes; i++) {
        const route *r = &h->routes[i];
        if (strncmp(path, r->prefix, r->len) != 0)
            continue;
        char next = path[r->len];
        if (r->prefix[r->len - 1] != '/' && next != '\0' && next != '/')
            continue;
        if (!best || r->len > best->len)
            best = r;
    }
    return best;
}

/* ---- the request checks ---- */

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* libmicrohttpd's unescape callback, for the path and every query argument: decodes %XX in
 * place; %00 and malformed escapes become BAD_ESCAPE. Returns the new length. */
static size_t unescape(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls;
    (void)c;
    char *w = s;
    for (const char *r = s; *r; r++) {
        if (*r != '%') {
            *w++ = *r;
            continue;
        }
        int hi = r[1] ? hex_value(r[1]) : -1;
        int lo = hi >= 0 && r[2] ? hex_value(r[2]) : -1;
        if (hi < 0 || lo < 0) {
            *w++ = BAD_ESCAPE;
            continue;
        }
        int v = hi * 16 + lo;
        *w++ = v == 0 ? BAD_ESCAPE : (char)v;
        r += 2;
    }
    *w = '\0';
    return (size_t)(w - s);
}

/* 1 when s is valid UTF-8 without control characters (C0, DEL, C1). */
static int printable_utf8(const unsigned char *s)
{
    while (*s) {
        unsigned c = *s;
        if (c < 0x80) {
            if (c < 0x20 || c == 0x7f)
                return 0;
            s++;
            continue;
        }
        int n = (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2 : (c & 0xf8) == 0xf0 ? 3 : -1;
        if (n < 0)
            return 0;
        uint32_t cp = c & (0x3fu >> n);
        for (int i = 1; i <= n; i++) {
            if ((s[i] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i] & 0x3fu);
        }
        static const uint32_t min_cp[] = {0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) ||
            (cp >= 0x80 && cp < 0xa0))
            return 0;
        s += n + 1;
    }
    return 1;
}

/* The checks of http.h on a decoded path: 0 when it may reach a handler, else the status. */
static unsigned check_path(const char *p)
{
    size_t n = strlen(p);
    if (n > GS_HTTP_MAX_PATH)
        return MHD_HTTP_URI_TOO_LONG;
    if (p[0] != '/' || strstr(p, "..") || strstr(p, "//") || strchr(p, '\\') ||
        !printable_utf8((const unsigned char *)p))
        return MHD_HTTP_BAD_REQUEST;
    return 0;
}

/* Compares without an early exit, so the time taken does not tell how much of a guess was
 * right. */
static int same_secret(const char *a, const char *b)
{
    if (!a || !b)
        return 0;
    size_t na = strlen(a), nb = strlen(b);
    unsigned char diff = na != nb;
    for (size_t i = 0; i < na; i++)
        diff |= (unsigned char)a[i] ^ (unsigned char)b[i % (nb ? nb : 1)];
    return diff == 0 && nb > 0;
}

/* ---- responses ---- */

static void security_headers(struct MHD_Response *r)
{
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "X-Frame-Options", "DENY");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
}

static enum MHD_Result answer(struct MHD_Connection *c, unsigned status, const char *text,
                              const char *hname, const char *hvalue)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
    security_headers(r);
    if (hname)
        MHD_add_response_header(r, hname, hvalue);
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

/* Appends s percent-encoded (every byte but the unreserved ones and, in a path, '/'). */
static size_t encode(char *out, size_t cap, size_t at, const char *s, int path)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        int plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    strchr("-._~", c) || (path && c == '/');
        if (plain && c) {
            if (at + 1 < cap)
                out[at] = (char)c;
            at++;
        } else {
            if (at + 3 < cap) {
                out[at] = '%';
                out[at + 1] = hex[c >> 4];
                out[at + 2] = hex[c & 15];
            }
            at += 3;
        }
    }
    if (at < cap)
        out[at] = '\0';
    return at;
}

typedef struct {
    char *buf;
    size_t cap, at;
} query_builder;

static enum MHD_Result add_query(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *value)
{
    (void)kind;
    query_builder *q = cls;
    if (!strcmp(key, "token"))
        return MHD_YES;
    if (q->at < q->cap)
        q->buf[q->at] = q->at ? '&' : '?';
    q->at++;
    q->at = encode(q->buf, q->cap, q->at, key, 0);
    if (value) {
        if (q->at < q->cap)
            q->buf[q->at] = '=';
        q->at++;
        q->at = encode(q->buf, q->cap, q->at, value, 0);
    }
    return MHD_YES;
}

/* The ?token= answer: the cookie, and a redirect to the same URL without the token. */
/* The token cookie's name: "gs_token_<port>". Browsers send a host's cookies to every port of
 * it, so a per-port name keeps gastroscreend and a `gastroscreen view` on one host from
 * overwriting each other's token, and a token from being taken for another server's. */
static void cookie_name(const gs_http *h, char *out, size_t cap)
{
    snprintf(out, cap, "gs_token_%d", h->port);
}

static enum MHD_Result redirect_with_cookie(const gs_http *h, struct MHD_Connection *c,
                                            const char *path)
{
    char location[3 * GS_HTTP_MAX_PATH + 4096];
    size_t at = encode(location, sizeof location, 0, path, 1);
    char query[4096];
    query_builder q = {query, sizeof query, 0};
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, add_query, &q);
    if (q.at >= sizeof query || at + q.at + 1 >= sizeof location)
        return answer(c, MHD_HTTP_URI_TOO_LONG, "request too long\n", NULL, NULL);
    memcpy(location + at, query, q.at);
    location[at + q.at] = '\0';
    char cookie[TOKEN_MAX + 80], name[32];
    cookie_name(h, name, sizeof name);
    /* Lax: a link to a page opened from a mail or another site still carries it (GET only is
     * served, so Lax gives a cross-site form nothing to act on). */
    snprintf(cookie, sizeof cookie, "%s=%s; Path=/; HttpOnly; SameSite=Lax", name, h->token);
    struct MHD_Response *r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    security_headers(r);
    MHD_add_response_header(r, MHD_HTTP_HEADER_LOCATION, location);
    MHD_add_response_header(r, MHD_HTTP_HEADER_SET_COOKIE, cookie);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_SEE_OTHER, r);
    MHD_destroy_response(r);
    memset(cookie, 0, sizeof cookie);
    return ret;
}

static void reply_free(gs_http_reply *r)
{
    free(r->content_type);
    free(r->body);
    if (r->fd >= 0)
        close(r->fd);
    for (size_t i = 0; i < r->n_headers; i++) {
        free(r->header_name[i]);
        free(r->header_value[i]);
    }
}

/* Queues what the handler put in the reply. */
static enum MHD_Result send_reply(struct MHD_Connection *c, gs_http_reply *rp)
{
    struct MHD_Response *r;
    if (rp->fd >= 0) {
        r = MHD_create_response_from_fd64(rp->size, rp->fd);
        if (r)
            rp->fd = -1; /* the response closes it */
    } else {
        r = MHD_create_response_from_buffer(rp->len, rp->body ? rp->body : (void *)"",
                                            rp->body ? MHD_RESPMEM_MUST_FREE
                                                     : MHD_RESPMEM_PERSISTENT);
        if (r)
            rp->body = NULL;
    }
    if (!r)
        return MHD_NO;
    security_headers(r);
    if (rp->content_type)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, rp->content_type);
    for (size_t i = 0; i < rp->n_headers; i++)
        MHD_add_response_header(r, rp->header_name[i], rp->header_value[i]);
    enum MHD_Result ret = MHD_queue_response(c, rp->status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)version;
    (void)upload_data;
    gs_http *h = cls;
    static int seen;
    if (*con_cls && *upload_data_size) {
        /* Body bytes after the refusal was queued: drop them. */
        *upload_data_size = 0;
        return MHD_YES;
    }
    *con_cls = &seen;
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return answer(c, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET and HEAD\n", MHD_HTTP_HEADER_ALLOW,
                      "GET, HEAD");
    const char *length =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING) ||
        (length && strcmp(length, "0") != 0))
        return answer(c, MHD_HTTP_CONTENT_TOO_LARGE, "no request body accepted\n", NULL, NULL);
    unsigned bad = check_path(url);
    if (bad)
        return answer(c, bad, bad == MHD_HTTP_URI_TOO_LONG ? "path too long\n" : "bad path\n", NULL,
                      NULL);
    if (h->token) {
        const char *auth =
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
        const char *query = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "token");
        char name[32];
        cookie_name(h, name, sizeof name);
        int ok = (auth && !strncmp(auth, "Bearer ", 7) && same_secret(auth + 7, h->token)) ||
                 same_secret(MHD_lookup_connection_value(c, MHD_COOKIE_KIND, name), h->token);
        if (query && same_secret(query, h->token))
            return redirect_with_cookie(h, c, url);
        if (!ok)
            return answer(c, MHD_HTTP_UNAUTHORIZED,
                          "a token is needed: open the link with ?token=... once, or send "
                          "Authorization: Bearer ...\n",
                          MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    }
    const route *rt = find_route(h, url);
    if (!rt)
        return answer(c, MHD_HTTP_NOT_FOUND, "not found\n", NULL, NULL);
    gs_http_request rq = {c, url};
    gs_http_reply rp = {.fd = -1};
    int rc = rt->fn(&rq, &rp, rt->user);
    enum MHD_Result ret;
    if (rc != 0 || !rp.done) {
        gs_log_linef("http", "http", NULL, GS_LOG_ERR, "%s %s: %s", method, url,
                     rc != 0 ? gs_error_get() : "the handler gave no reply");
        ret = answer(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal error\n", NULL, NULL);
    } else {
        ret = send_reply(c, &rp);
    }
    reply_free(&rp);
    return ret;
}

int gs_http_start(gs_http *h)
{
    GS_ASSERT(h);
    if (h->daemon)
        return gs_error_set("http: already started");
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO;
    if (h->family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* A pool, so that one slow handler (a tile of a slide on slow storage) does not hold up
     * /metrics and the worklist: handlers lock what they share. MHD splits the connection limit
     * between the threads, so never more threads than connections. */
    unsigned pool = h->max_connections < HTTP_THREADS ? h->max_connections : HTTP_THREADS;
    h->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, h, MHD_OPTION_THREAD_POOL_SIZE,
                                 pool, MHD_OPTION_LISTEN_SOCKET, h->fd, MHD_OPTION_CONNECTION_LIMIT,
                                 h->max_connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
                                 h->max_per_ip, MHD_OPTION_CONNECTION_TIMEOUT, h->timeout_s,
                                 MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONNECTION_MEMORY,
                                 MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL, MHD_OPTION_END);
    if (!h->daemon)
        return gs_error_set("http: cannot start serving on port %d", h->port);
    h->fd = -1; /* the daemon owns it now */
    return 0;
}

/* ---- what handlers call ---- */

const char *gs_http_path(const gs_http_request *rq)
{
    GS_ASSERT(rq);
    return rq->path;
}

const char *gs_http_query(const gs_http_request *rq, const char *key)
{
    GS_ASSERT(rq && key);
    return MHD_lookup_connection_value(rq->c, MHD_GET_ARGUMENT_KIND, key);
}

static int reply_start(gs_http_reply *r, unsigned status, const char *content_type)
{
    GS_ASSERT(r);
    if (r->done)
        return gs_error_set("http: a second reply to one request");
    if (status < 100 || status > 599)
        return gs_error_set("http: bad status %u", status);
    if (content_type && !(r->content_type = strdup(content_type)))
        return gs_error_set("http: out of memory");
    r->status = status;
    r->done = 1;
    return 0;
}

int gs_http_reply_bytes(gs_http_reply *r, unsigned status, const char *content_type,
                        const void *body, size_t len)
{
    GS_ASSERT(body || !len);
    char *copy = NULL;
    if (len && !(copy = malloc(len)))
        return gs_error_set("http: out of memory");
    if (reply_start(r, status, content_type) < 0) {
        free(copy);
        return -1;
    }
    if (len)
        memcpy(copy, body, len);
    r->body = copy;
    r->len = len;
    return 0;
}

int gs_http_reply_text(gs_http_reply *r, unsigned status, const char *text)
{
    return gs_http_reply_bytes(r, status, "text/plain; charset=utf-8", text, strlen(text));
}

int gs_http_reply_json(gs_http_reply *r, unsigned status, const char *json)
{
    return gs_http_reply_bytes(r, status, "application/json", json, strlen(json));
}

int gs_http_reply_header(gs_http_reply *r, const char *name, const char *value)
{
    GS_ASSERT(r && name && value);
    if (r->n_headers == MAX_HEADERS)
        return gs_error_set("http: more than %d headers", MAX_HEADERS);
    if (!*name)
        return gs_error_set("http: empty header name");
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-'))
            return gs_error_set("http: bad header name '%s'", name);
    for (const char *p = value; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return gs_error_set("http: header %s: control character in the value", name);
    char *n = strdup(name), *v = strdup(value);
    if (!n || !v) {
        free(n);
        free(v);
        return gs_error_set("http: out of memory");
    }
    r->header_name[r->n_headers] = n;
    r->header_value[r->n_headers] = v;
    r->n_headers++;
    return 0;
}

const char *gs_http_content_type(const char *name)
{
    static const struct {
        const char *ext, *type;
    } types[] = {{".html", "text/html; charset=utf-8"},
                 {".js", "text/javascript; charset=utf-8"},
                 {".css", "text/css; charset=utf-8"},
                 {".png", "image/png"},
                 {".jpeg", "image/jpeg"},
                 {".jpg", "image/jpeg"},
                 {".json", "application/json"},
                 {".geojson", "application/geo+json"},
                 {".svg", "image/svg+xml"},
                 {".txt", "text/plain; charset=utf-8"},
                 {".dzi", "application/xml"},
                 {".xml", "application/xml"}};
    const char *dot = name ? strrchr(name, '.') : NULL;
    if (dot && !strchr(dot, '/'))
        for (size_t i = 0; i < sizeof types / sizeof *types; i++)
            if (!strcasecmp(dot, types[i].ext))
                return types[i].type;
    return "application/octet-stream";
}

/* Opens root/rel without following a symlink anywhere below root. Returns the descriptor of a
 * regular file (and its size), or -1 (missing, a symlink, a directory, a bad path). */
static int open_under(const char *root, const char *rel, uint64_t *size)
{
    if (!root || !rel || !*rel || rel[0] == '/' || strlen(rel) > GS_HTTP_MAX_PATH)
        return -1;
    char copy[GS_HTTP_MAX_PATH + 1];
    strcpy(copy, rel);
    int dir = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0)
        return -1;
    char *save = NULL;
    char *part = strtok_r(copy, "/", &save);
    int fd = -1;
    /* A trailing or doubled '/' would be skipped by strtok_r: refuse them instead. */
    if (rel[strlen(rel) - 1] == '/' || strstr(rel, "//") || strchr(rel, '\\'))
        part = NULL;
    while (part) {
        char *next = strtok_r(NULL, "/", &save);
        if (!strcmp(part, ".") || !strcmp(part, ".."))
            break;
        int flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | (next ? O_DIRECTORY : O_NONBLOCK);
        int child = openat(dir, part, flags);
        close(dir);
        dir = -1;
        if (child < 0)
            break;
        if (!next) {
            fd = child;
            break;
        }
        dir = child;
        part = next;
    }
    if (dir >= 0)
        close(dir);
    if (fd < 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return -1;
    }
    /* Regular reads from here on: O_NONBLOCK only kept a FIFO from blocking the open. */
    fcntl(fd, F_SETFL, 0);
    *size = (uint64_t)st.st_size;
    return fd;
}

int gs_http_reply_file(gs_http_reply *r, const char *root, const char *rel,
                       const char *content_type)
{
    GS_ASSERT(r);
    uint64_t size = 0;
    int fd = open_under(root, rel, &size);
    if (fd < 0)
        return gs_http_reply_text(r, MHD_HTTP_NOT_FOUND, "not found\n");
    if (reply_start(r, MHD_HTTP_OK, content_type ? content_type : gs_http_content_type(rel)) < 0) {
        close(fd);
        return -1;
    }
    r->fd = fd;
    r->size = size;
    return 0;
}
