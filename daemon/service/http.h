/*
 * http: the one small HTTP server of a process (libmicrohttpd), serving read-only pages and JSON
 * to browsers and Prometheus: /metrics, the worklist, the slide viewer. Handlers register
 * under a path prefix; the server does the checks every handler would otherwise repeat.
 *
 * What the server enforces before any handler runs:
 *   - methods: GET and HEAD only (405 with an Allow header otherwise); a request carrying a
 *     body is refused (413); the request line and headers must fit in a small per-connection
 *     buffer (libmicrohttpd answers 414/431 or drops the connection);
 *   - the path: percent-decoded, then it must start with '/', hold no NUL (an encoded %00 or a
 *     malformed escape is refused, never truncated), no "..", no "//", no backslash, only
 *     printable UTF-8, at most GS_HTTP_MAX_PATH bytes (400 or 414 otherwise);
 *   - connections: at most max_connections in all, max_per_ip from one address, an idle one is
 *     closed after timeout_s;
 *   - the token: a listen address that is not loopback needs one (gs_http_new fails without);
 *     with a token set every request needs "Authorization: Bearer TOKEN", the gs_token_<port>
 * cookie, or ?token=TOKEN, which sets the cookie (HttpOnly, SameSite=Strict) and redirects (303) to
 *     the same URL without it, so a person types the link once. 401 otherwise.
 *
 * Routes match by longest prefix: a prefix ending in '/' matches every path below it; another
 * prefix matches the path itself and the paths below it ("/metrics" matches "/metrics" and
 * "/metrics/x", not "/metricsx"); "/" matches everything. No route: 404.
 *
 * Use:
 *     gs_http_options o = {.listen = "127.0.0.1:8080"};
 *     gs_http *h = gs_http_new(&o);                  // binds now: the port is known
 *     gs_http_route(h, "/metrics", metrics_handler, m);
 *     gs_http_start(h);                              // serves from its own threads
 *     ... gs_http_destroy(&h);                       // waits for a handler in progress
 *
 * Threads: handlers run on the server's small pool of threads (4, fewer when max_connections
 * is smaller), so several may run at once, each for its own request: a handler must read its
 * owner's data safely (a lock, a snapshot), never the owner's live structures, and a slow one
 * holds up only its own connection.
 * The request and reply handles are valid only during the handler call.
 */
#ifndef GS_DAEMON_SERVICE_HTTP_H
#define GS_DAEMON_SERVICE_HTTP_H

#include <stddef.h>

typedef struct gs_http gs_http;
typedef struct gs_http_request gs_http_request; /* valid only during the handler call */
typedef struct gs_http_reply gs_http_reply;     /* filled by the handler */

/* Longest decoded path a request may have. */
#define GS_HTTP_MAX_PATH 1024

typedef struct gs_http_options {
    const char *listen; /* "host:port", "[v6]:port", "*:port"; port 0 = pick a free one */
    const char *token;  /* NULL/"" = none; required (start fails) when listen is not loopback */
    unsigned max_connections; /* 0 = default (64) */
    unsigned max_per_ip;      /* 0 = default (16): a browser opens ~6-8 at once */
    unsigned timeout_s;       /* 0 = default (10) */
} gs_http_options;

/* handler: path is the URL path percent-decoded and already checked (see above); the handler
 * answers through reply. Returns 0, or -1: the server answers 500 and logs gs_error_get(). A
 * handler returning 0 without a reply also gets a 500. */
typedef int gs_http_handler(const gs_http_request *rq, gs_http_reply *reply, void *user);

/* Checks the options (a token is 16..256 characters of [A-Za-z0-9._~+/=-]; a non-loopback
 * listen address without one is refused) and binds the address. Returns the server (caller
 * frees with gs_http_destroy) or NULL with the error set. */
gs_http *gs_http_new(const gs_http_options *opt);

/* Stops serving (waiting for a handler in progress), closes the socket, frees; sets *h to NULL.
 * Accepts NULL. */
void gs_http_destroy(gs_http **h);

/* Reads a token file (the first line, surrounding blanks trimmed) into token (cap bytes). The
 * file must be a regular file (not a symlink) that neither group nor others may read or write
 * (0600 or 0400), as the secret key files of stages/runtime/keys, and hold a token that
 * gs_http_new accepts. Returns 0, or -1 with the error set naming the file (never the token). */
int gs_http_read_token(const char *path, char *token, size_t cap);

/* Longest token gs_http_new accepts. */
#define GS_HTTP_TOKEN_MAX 256

/* The bound TCP port (the one picked with port 0). */
int gs_http_port(const gs_http *h);

/* 1 when the bound address is a loopback one (127.0.0.0/8, ::1). */
int gs_http_is_loopback(const gs_http *h);

/* Routes are matched by longest prefix; register before gs_http_start; "/" matches everything.
 * prefix must start with '/'; it is copied. Returns 0, or -1 with the error set (bad prefix,
 * registered twice, already started). */
int gs_http_route(gs_http *h, const char *prefix, gs_http_handler *fn, void *user);

/* Starts serving from the server's own thread. Returns 0 or -1 with the error set. */
int gs_http_start(gs_http *h);

/* The checked, decoded path of the request. */
const char *gs_http_path(const gs_http_request *rq);

/* A decoded query argument (?key=value), or NULL if absent. */
const char *gs_http_query(const gs_http_request *rq, const char *key);

/* Replies (exactly one per handler call; each returns 0, or -1 with the error set: a second
 * reply, out of memory). body is copied. HEAD requests get the headers only. */
int gs_http_reply_bytes(gs_http_reply *r, unsigned status, const char *content_type,
                        const void *body, size_t len);
int gs_http_reply_text(gs_http_reply *r, unsigned status, const char *text); /* text/plain */
int gs_http_reply_json(gs_http_reply *r, unsigned status, const char *json); /* application/json */

/* Add a response header (e.g. Content-Encoding: gzip, Cache-Control) to the reply; before or
 * after the reply call. name must be a header token, value printable (no CR/LF). At most 16.
 * Returns 0 or -1 with the error set. */
int gs_http_reply_header(gs_http_reply *r, const char *name, const char *value);

/* Sends the regular file root/rel: rel must be a relative path without "..", every component
 * opened with O_NOFOLLOW under root (openat), must be a regular file; otherwise 404 (not an
 * error: returns 0). content_type NULL = guessed from the extension (.html .js .css .png .jpeg
 * .jpg .json .geojson .svg .txt; else application/octet-stream). Returns -1 only as the other
 * replies do. */
int gs_http_reply_file(gs_http_reply *r, const char *root, const char *rel,
                       const char *content_type);

/* The content type gs_http_reply_file would guess for a file name. */
const char *gs_http_content_type(const char *name);

#endif
