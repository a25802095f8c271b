#include "stages/runtime/keys.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "ops/error.h"
#include "proto/vocab.h"
#include "stages/runtime/log.h"

/* Longest line of a key file worth reading: "roles = " and the six stage names fit easily. */
#define KEY_LINE_MAX 512
/* Refused peers remembered so that each is logged once; past this, refusals are still
 * counted but only the first line about the overflow is logged (an attacker cycling keys
 * must not grow memory or the log without bound). */
#define REFUSED_SEEN_MAX 4096
/* The handler thread wakes at least this often to see a SIGHUP reload request. */
#define WAKE_MS 500

static const char *const kind_names[GS_KEY_KIND_COUNT] = {"worker", "client", "announcer"};
static const char *const kind_folders[GS_KEY_KIND_COUNT] = {"workers", "clients", "announcers"};

const char *gs_key_kind_name(gs_key_kind k)
{
    return (unsigned)k < GS_KEY_KIND_COUNT ? kind_names[k] : "unknown";
}

/* ---- key files ------------------------------------------------------------------------- */

int gs_key_generate(char public_key[GS_KEY_Z85_LEN + 1], char secret_key[GS_KEY_Z85_LEN + 1])
{
    if (zmq_curve_keypair(public_key, secret_key) < 0)
        return gs_error_set("cannot make a CURVE key pair: %s (is libzmq built with CURVE?)",
                            zmq_strerror(errno));
    return 0;
}

void gs_key_fingerprint(const char *z85, char out[9])
{
    snprintf(out, 9, "%.8s", z85 ? z85 : "");
}

int gs_key_parse_roles(const char *text, unsigned *roles)
{
    *roles = 0;
    for (const char *p = text; *p;) {
        p += strspn(p, " \t,");
        size_t n = strcspn(p, " \t,");
        if (n == 0)
            break;
        int found = 0;
        for (int st = GASTROSCREEN__V1__STAGE__STAGE_TILER;
             st <= GASTROSCREEN__V1__STAGE__STAGE_REPORTER && !found; st++) {
            const char *name = gs_stage_name(st);
            if (name && strlen(name) == n && !strncmp(name, p, n)) {
                *roles |= 1u << st;
                found = 1;
            }
        }
        if (!found)
            return gs_error_set("unknown role '%.*s' (roles are tiler foreground blur infer "
                                "screener reporter)",
                                (int)(n > 64 ? 64 : n), p);
        p += n;
    }
    return 0;
}

static int z85_ok(const char *s)
{
    uint8_t bin[32];
    return strlen(s) == GS_KEY_Z85_LEN && zmq_z85_decode(bin, s) != NULL;
}

/* Splits "name = value" (spaces around both trimmed, in place). 0, or -1 when not of that
 * form. */
static int split_line(char *line, char **name, char **value)
{
    char *eq = strchr(line, '=');
    if (!eq)
        return -1;
    *eq = '\0';
    char *n = line + strspn(line, " \t");
    char *end = eq;
    while (end > n && (end[-1] == ' ' || end[-1] == '\t'))
        *--end = '\0';
    char *v = eq + 1;
    v += strspn(v, " \t");
    end = v + strlen(v);
    while (end > v && isspace((unsigned char)end[-1]))
        *--end = '\0';
    *name = n;
    *value = v;
    return 0;
}

/* Reads the key file at path: `field` = Z85 key (required), and `roles` when roles is not
 * NULL. fd is an open descriptor of the file. */
static int read_key_file(int fd, const char *path, const char *field, char key[GS_KEY_Z85_LEN + 1],
                         unsigned *roles)
{
    FILE *f = fdopen(fd, "r");
    if (!f) {
        close(fd);
        return gs_error_set("%s: %s", path, strerror(errno));
    }
    char line[KEY_LINE_MAX];
    int lineno = 0, rc = -1, have_key = 0, have_roles = 0;
    if (roles)
        *roles = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            gs_error_set("%s:%d: line too long", path, lineno);
            goto close_file;
        }
        char *p = line + strspn(line, " \t\r\n");
        if (!*p || *p == '#')
            continue;
        char *name, *value;
        if (split_line(p, &name, &value) < 0) {
            gs_error_set("%s:%d: expected 'name = value'", path, lineno);
            goto close_file;
        }
        if (!strcmp(name, field)) {
            if (have_key++ || !z85_ok(value)) {
                gs_error_set("%s:%d: %s", path, lineno,
                             have_key > 1 ? "key given twice" : "not a 40-character Z85 key");
                goto close_file;
            }
            snprintf(key, GS_KEY_Z85_LEN + 1, "%s", value);
        } else if (roles && !strcmp(name, "roles")) {
            if (have_roles++ || gs_key_parse_roles(value, roles) < 0) {
                if (have_roles > 1)
                    gs_error_set("roles given twice");
                gs_error_prefix("%s:%d", path, lineno);
                goto close_file;
            }
        } else if (!strcmp(name, "roles")) {
            gs_error_set("%s:%d: roles are for worker keys (workers/) only", path, lineno);
            goto close_file;
        } else {
            gs_error_set("%s:%d: unknown name '%.64s'", path, lineno, name);
            goto close_file;
        }
    }
    if (ferror(f)) {
        gs_error_set("%s: %s", path, strerror(errno));
        goto close_file;
    }
    if (!have_key) {
        gs_error_set("%s: no '%s = KEY' line", path, field);
        goto close_file;
    }
    rc = 0;
close_file:
    fclose(f);
    return rc;
}

int gs_key_read_public(const char *path, char public_key[GS_KEY_Z85_LEN + 1], unsigned *roles)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        int e = errno;
        gs_error_set("%s: %s", path, strerror(e));
        errno = e; /* ENOENT tells gs_security_resolve the key is missing, not bad */
        return -1;
    }
    if (read_key_file(fd, path, "public", public_key, roles) < 0) {
        errno = EINVAL;
        return -1;
    }
    return 0;
}

int gs_key_read_secret(const char *path, char secret_key[GS_KEY_Z85_LEN + 1],
                       char public_key[GS_KEY_Z85_LEN + 1])
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        gs_error_set("%s: %s", path, strerror(e));
        errno = e;
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        gs_error_set("%s: not a regular file", path);
        errno = EINVAL;
        return -1;
    }
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        close(fd);
        gs_error_set("%s: secret key file is readable by group or others (mode %03o); refusing "
                     "it: chmod 600 %s",
                     path, (unsigned)(st.st_mode & 0777), path);
        errno = EPERM;
        return -1;
    }
    if (read_key_file(fd, path, "secret", secret_key, NULL) < 0) {
        errno = EINVAL;
        return -1;
    }
    char pub[GS_KEY_Z85_LEN + 1];
    if (zmq_curve_public(pub, secret_key) < 0) {
        gs_error_set("%s: cannot derive the public key: %s", path, zmq_strerror(errno));
        errno = EINVAL;
        return -1;
    }
    if (public_key)
        memcpy(public_key, pub, sizeof pub);
    return 0;
}

static int name_ok(const char *name)
{
    if (!name[0] || strlen(name) > 128 || name[0] == '.')
        return 0;
    for (const char *p = name; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '_' && *p != '-')
            return 0;
    return 1;
}

/* Writes text to path (mode, exclusive creation when excl) through a temporary file so a
 * crash never leaves half a key. */
static int write_file(const char *path, const char *text, mode_t mode, int excl)
{
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return gs_error_set("%s: path too long", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0)
        return gs_error_set("%s: %s", tmp, strerror(errno));
    size_t len = strlen(text);
    /* fchmod: the umask must not widen nor narrow what the caller asked for. */
    if (fchmod(fd, mode) < 0 || write(fd, text, len) != (ssize_t)len || fsync(fd) < 0) {
        gs_error_set("%s: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        return -1;
    }
    close(fd);
    int rc = excl ? link(tmp, path) : rename(tmp, path);
    if (rc < 0) {
        gs_error_set("%s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    if (excl)
        unlink(tmp);
    return 0;
}

int gs_key_write_pair(const char *dir, const char *name, const char *roles,
                      char public_key[GS_KEY_Z85_LEN + 1])
{
    if (!name_ok(name))
        return gs_error_set("key name '%.64s': use letters, digits, '.', '_' and '-'", name);
    unsigned bits = 0;
    if (roles && roles[0] && gs_key_parse_roles(roles, &bits) < 0)
        return -1;
    char pub[GS_KEY_Z85_LEN + 1], sec[GS_KEY_Z85_LEN + 1];
    if (gs_key_generate(pub, sec) < 0)
        return -1;
    char pub_path[4096], sec_path[4096], text[KEY_LINE_MAX + 256];
    if (snprintf(pub_path, sizeof pub_path, "%s/%s.pub", dir, name) >= (int)sizeof pub_path ||
        snprintf(sec_path, sizeof sec_path, "%s/%s.key", dir, name) >= (int)sizeof sec_path)
        return gs_error_set("%s: path too long", dir);
    snprintf(text, sizeof text,
             "# gastroscreen secret key %s: keep it on this node only, mode 0600\nsecret = %s\n",
             name, sec);
    if (write_file(sec_path, text, 0600, 1) < 0)
        return -1;
    snprintf(text, sizeof text, "# gastroscreen public key %s\npublic = %s\n%s%s%s", name, pub,
             roles && roles[0] ? "roles = " : "", roles && roles[0] ? roles : "",
             roles && roles[0] ? "\n" : "");
    if (write_file(pub_path, text, 0644, 0) < 0) {
        unlink(sec_path);
        return -1;
    }
    memset(sec, 0, sizeof sec);
    memset(text, 0, sizeof text);
    memcpy(public_key, pub, sizeof pub);
    return 0;
}

/* ---- the keys folder ------------------------------------------------------------------- */

typedef struct {
    uint8_t key[32];
    gs_key_kind kind;
    unsigned roles;
    char name[129];
} ring_entry;

struct gs_keyring {
    ring_entry *e;
    size_t n, cap;
    size_t count[GS_KEY_KIND_COUNT];
};

void gs_keyring_destroy(gs_keyring **k)
{
    if (!k || !*k)
        return;
    free((*k)->e);
    free(*k);
    *k = NULL;
}

static int ring_add(gs_keyring *k, const char *path, const char *name, gs_key_kind kind,
                    const char *z85, unsigned roles)
{
    ring_entry add = {.kind = kind, .roles = roles};
    zmq_z85_decode(add.key, z85);
    for (size_t i = 0; i < k->n; i++)
        if (!memcmp(k->e[i].key, add.key, sizeof add.key))
            return gs_error_set("%s: the same key as %s %s", path, gs_key_kind_name(k->e[i].kind),
                                k->e[i].name);
    if (k->n == k->cap) {
        size_t cap = k->cap ? 2 * k->cap : 16;
        ring_entry *e = realloc(k->e, cap * sizeof *e);
        if (!e)
            return gs_error_set("out of memory reading the keys folder");
        k->e = e;
        k->cap = cap;
    }
    snprintf(add.name, sizeof add.name, "%s", name);
    k->e[k->n++] = add;
    k->count[kind]++;
    return 0;
}

static int load_kind(gs_keyring *k, const char *dir, gs_key_kind kind)
{
    char folder[4096];
    if (snprintf(folder, sizeof folder, "%s/%s", dir, kind_folders[kind]) >= (int)sizeof folder)
        return gs_error_set("%s: path too long", dir);
    DIR *d = opendir(folder);
    if (!d)
        return errno == ENOENT ? 0 : gs_error_set("%s: %s", folder, strerror(errno));
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d))) {
        size_t len = strlen(de->d_name);
        if (de->d_name[0] == '.' || len <= 4 || strcmp(de->d_name + len - 4, ".pub"))
            continue;
        char path[4400], name[129], z85[GS_KEY_Z85_LEN + 1];
        snprintf(path, sizeof path, "%s/%s", folder, de->d_name);
        snprintf(name, sizeof name, "%.*s", (int)(len - 4), de->d_name);
        unsigned roles = 0;
        if (!name_ok(name))
            rc = gs_error_set("%s: key name: use letters, digits, '.', '_' and '-'", path);
        else if (gs_key_read_public(path, z85, kind == GS_KEY_WORKER ? &roles : NULL) < 0)
            rc = -1;
        else
            rc = ring_add(k, path, name, kind, z85, roles);
    }
    closedir(d);
    return rc;
}

gs_keyring *gs_keyring_load(const char *dir)
{
    struct stat st;
    if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
        gs_error_set("keys folder %s: %s", dir, errno ? strerror(errno) : "not a folder");
        return NULL;
    }
    gs_keyring *k = calloc(1, sizeof *k);
    if (!k) {
        gs_error_set("out of memory reading the keys folder");
        return NULL;
    }
    for (int kind = 0; kind < GS_KEY_KIND_COUNT; kind++)
        if (load_kind(k, dir, (gs_key_kind)kind) < 0) {
            gs_keyring_destroy(&k);
            return NULL;
        }
    return k;
}

size_t gs_keyring_count(const gs_keyring *k, gs_key_kind kind)
{
    return (unsigned)kind < GS_KEY_KIND_COUNT ? k->count[kind] : 0;
}

int gs_keyring_find(const gs_keyring *k, const uint8_t key[32], gs_key_kind *kind,
                    const char **name, unsigned *roles)
{
    for (size_t i = 0; i < k->n; i++)
        if (!memcmp(k->e[i].key, key, 32)) {
            if (kind)
                *kind = k->e[i].kind;
            if (name)
                *name = k->e[i].name;
            if (roles)
                *roles = k->e[i].roles;
            return 0;
        }
    return -1;
}

/* ---- the ZAP handler ------------------------------------------------------------------- */

/* The domains of PROTOCOL.md §2 the handler knows, as gs_transport names them. */
enum { DOM_WORK, DOM_TILES, DOM_INTAKE, DOM_SUBMIT, DOM_QUERY, DOM_EVENTS, DOM_COUNT };
static const char *const domain_names[DOM_COUNT] = {"work",   "tiles", "intake",
                                                    "submit", "query", "events"};

static int domain_index(const char *d)
{
    for (int i = 0; i < DOM_COUNT; i++)
        if (!strcmp(d, domain_names[i]))
            return i;
    return -1;
}

struct gs_zap {
    void *zctx, *rep, *control_out;
    char control[64];
    char dir[4096], ident[64];
    pthread_t thread;
    int thread_started;
    pthread_mutex_t lock; /* guards ring and seen */
    gs_keyring *ring;
    atomic_uint_fast64_t refused[DOM_COUNT + 1]; /* + unknown domains */
    atomic_uint_fast64_t reloads;
    uint64_t *seen; /* hashes of refused (address, key) pairs logged */
    size_t n_seen;
    int seen_full_logged;
    unsigned reload_gen; /* the SIGHUP generation last acted on */
};

static atomic_uint sighup_gen;

static void on_sighup(int sig)
{
    (void)sig;
    atomic_fetch_add(&sighup_gen, 1);
}

void gs_zap_reload_on_sighup(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sighup;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGHUP, &sa, NULL);
}

int gs_zap_reload(gs_zap *z)
{
    gs_keyring *fresh = gs_keyring_load(z->dir);
    if (!fresh) {
        gs_error_prefix("keys not reloaded, the old keys stay in force");
        gs_log_linef(z->ident, NULL, NULL, GS_LOG_ERR, "%s", gs_error_get());
        return -1;
    }
    pthread_mutex_lock(&z->lock);
    gs_keyring *old = z->ring;
    z->ring = fresh;
    /* New keys may have been listed for peers refused before: log their refusals again. */
    z->n_seen = 0;
    z->seen_full_logged = 0;
    pthread_mutex_unlock(&z->lock);
    gs_keyring_destroy(&old);
    atomic_fetch_add(&z->reloads, 1);
    gs_log_linef(z->ident, NULL, NULL, GS_LOG_INFO,
                 "keys reloaded from %s: %zu workers, %zu clients, %zu announcers", z->dir,
                 gs_keyring_count(fresh, GS_KEY_WORKER), gs_keyring_count(fresh, GS_KEY_CLIENT),
                 gs_keyring_count(fresh, GS_KEY_ANNOUNCER));
    return 0;
}

uint64_t gs_zap_refused(const gs_zap *z, const char *domain)
{
    int i = domain_index(domain);
    return atomic_load(&z->refused[i < 0 ? DOM_COUNT : i]);
}

uint64_t gs_zap_reloads(const gs_zap *z)
{
    return atomic_load(&z->reloads);
}

int gs_zap_worker_roles(gs_zap *z, const char *user_id, unsigned *roles)
{
    static const char prefix[] = "worker:";
    if (strncmp(user_id, prefix, sizeof prefix - 1))
        return -1;
    const char *name = user_id + sizeof prefix - 1;
    int rc = -1;
    pthread_mutex_lock(&z->lock);
    for (size_t i = 0; i < z->ring->n; i++)
        if (z->ring->e[i].kind == GS_KEY_WORKER && !strcmp(z->ring->e[i].name, name)) {
            *roles = z->ring->e[i].roles;
            rc = 0;
            break;
        }
    pthread_mutex_unlock(&z->lock);
    return rc;
}

/* FNV-1a over the address and the key: a refused peer's identity in the "logged once" set. */
static uint64_t peer_hash(const char *address, const uint8_t *key, size_t key_len)
{
    uint64_t h = 1469598103934665603ULL;
    for (const char *p = address; *p; p++)
        h = (h ^ (uint8_t)*p) * 1099511628211ULL;
    for (size_t i = 0; i < key_len; i++)
        h = (h ^ key[i]) * 1099511628211ULL;
    return h;
}

/* Counts a refusal and logs it the first time this (address, key) is refused. Called with
 * the lock held. */
static void refuse_locked(gs_zap *z, int dom, const char *address, const uint8_t *key,
                          size_t key_len, const char *why)
{
    atomic_fetch_add(&z->refused[dom < 0 ? DOM_COUNT : dom], 1);
    uint64_t h = peer_hash(address, key, key_len);
    for (size_t i = 0; i < z->n_seen; i++)
        if (z->seen[i] == h)
            return;
    if (z->n_seen == REFUSED_SEEN_MAX) {
        if (!z->seen_full_logged)
            gs_log_linef(z->ident, NULL, NULL, GS_LOG_WARNING,
                         "%d peers refused: further refused peers are counted, not logged",
                         REFUSED_SEEN_MAX);
        z->seen_full_logged = 1;
        return;
    }
    z->seen[z->n_seen++] = h;
    char z85[GS_KEY_Z85_LEN + 1] = "", fp[9];
    if (key_len == 32)
        zmq_z85_encode(z85, key, 32);
    gs_key_fingerprint(z85, fp);
    char dom_text[40];
    snprintf(dom_text, sizeof dom_text, "%s", dom >= 0 ? domain_names[dom] : "unknown");
    gs_log_linef(z->ident, NULL, NULL, GS_LOG_WARNING,
                 "refused a connection on the %s socket from %.64s, key %s: %s", dom_text, address,
                 fp[0] ? fp : "(none)", why);
}

/* Decides one ZAP request; writes the status code and the user id. */
static void decide(gs_zap *z, const char *domain, const char *address, const char *mechanism,
                   const uint8_t *key, size_t key_len, const char **status, char *user_id,
                   size_t user_len)
{
    int dom = domain_index(domain);
    const char *why = NULL;
    gs_key_kind kind = GS_KEY_KIND_COUNT;
    const char *name = NULL;
    unsigned roles = 0;
    pthread_mutex_lock(&z->lock);
    if (strcmp(mechanism, "CURVE") || key_len != 32)
        why = "not a CURVE client";
    else if (dom < 0)
        why = "unknown ZAP domain";
    else if (gs_keyring_find(z->ring, key, &kind, &name, &roles) < 0)
        why = "key not listed in the keys folder";
    else if ((dom == DOM_WORK || dom == DOM_TILES) ? kind != GS_KEY_WORKER
             : dom == DOM_INTAKE                   ? kind != GS_KEY_ANNOUNCER
                                                   : kind != GS_KEY_CLIENT)
        why = kind == GS_KEY_WORKER      ? "a worker key may open only the work socket and tile "
                                           "inboxes"
              : kind == GS_KEY_ANNOUNCER ? "an announcer key may open only the intake socket"
                                         : "a client key may open only submit, query and events";
    else if (dom == DOM_TILES && !(roles & (1u << GASTROSCREEN__V1__STAGE__STAGE_TILER)))
        why = "a worker key without the tiler role may not send tiles";
    if (why) {
        refuse_locked(z, dom, address, key, key_len, why);
        *status = "400";
        user_id[0] = '\0';
    } else {
        *status = "200";
        snprintf(user_id, user_len, "%s:%s", gs_key_kind_name(kind), name);
    }
    pthread_mutex_unlock(&z->lock);
}

/* Copies frame i of a request into a NUL-terminated buffer. */
static void frame_text(zmq_msg_t *f, char *buf, size_t n)
{
    size_t len = zmq_msg_size(f);
    if (len >= n)
        len = n - 1;
    memcpy(buf, zmq_msg_data(f), len);
    buf[len] = '\0';
}

/* RFC 27: [version][request id][domain][address][identity][mechanism][credentials...] ->
 * [version][request id][status code][status text][user id][metadata]. */
static void serve_request(gs_zap *z)
{
    enum { MAX_PARTS = 8 };
    zmq_msg_t part[MAX_PARTS];
    int n = 0, more = 1;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        /* The first frame without waiting: zmq_poll may wake with nothing to read, and a
         * blocked thread would not hear gs_zap_destroy. The rest of a message is there. */
        if (zmq_msg_recv(&m, z->rep, n == 0 ? ZMQ_DONTWAIT : 0) < 0) {
            zmq_msg_close(&m);
            goto close_parts;
        }
        more = zmq_msg_more(&m);
        if (n < MAX_PARTS)
            part[n++] = m;
        else
            zmq_msg_close(&m);
    }
    char version[8] = "", domain[64], address[128], mechanism[16], user_id[160] = "";
    const char *status = "400";
    /* A REP must answer every request it read, or it takes no other: a short one (libzmq
     * never sends it) is refused too. */
    if (n >= 6) {
        frame_text(&part[0], version, sizeof version);
        frame_text(&part[2], domain, sizeof domain);
        frame_text(&part[3], address, sizeof address);
        frame_text(&part[5], mechanism, sizeof mechanism);
        const uint8_t *key = n > 6 ? zmq_msg_data(&part[6]) : NULL;
        size_t key_len = n > 6 ? zmq_msg_size(&part[6]) : 0;
        if (!strcmp(version, "1.0"))
            decide(z, domain, address, mechanism, key, key_len, &status, user_id, sizeof user_id);
    }
    const char *text = status[0] == '2' ? "OK" : "refused";
    zmq_send(z->rep, "1.0", 3, ZMQ_SNDMORE);
    if (n >= 2)
        zmq_send(z->rep, zmq_msg_data(&part[1]), zmq_msg_size(&part[1]), ZMQ_SNDMORE);
    else
        zmq_send(z->rep, "", 0, ZMQ_SNDMORE);
    zmq_send(z->rep, status, 3, ZMQ_SNDMORE);
    zmq_send(z->rep, text, strlen(text), ZMQ_SNDMORE);
    zmq_send(z->rep, user_id, strlen(user_id), ZMQ_SNDMORE);
    zmq_send(z->rep, "", 0, 0);
close_parts:
    for (int i = 0; i < n; i++)
        zmq_msg_close(&part[i]);
}

static void *zap_thread(void *arg)
{
    gs_zap *z = arg;
    void *control = zmq_socket(z->zctx, ZMQ_PAIR);
    if (!control || zmq_connect(control, z->control) < 0) {
        gs_log_linef(z->ident, NULL, NULL, GS_LOG_ERR, "ZAP handler: control socket: %s",
                     zmq_strerror(errno));
        if (control)
            zmq_close(control);
        return NULL;
    }
    for (;;) {
        zmq_pollitem_t items[2] = {{z->rep, 0, ZMQ_POLLIN, 0}, {control, 0, ZMQ_POLLIN, 0}};
        int rc = zmq_poll(items, 2, WAKE_MS);
        if (rc < 0 && errno != EINTR)
            break;
        unsigned gen = atomic_load(&sighup_gen);
        if (gen != z->reload_gen) {
            z->reload_gen = gen;
            gs_zap_reload(z);
        }
        if (rc > 0 && (items[1].revents & ZMQ_POLLIN))
            break;
        if (rc > 0 && (items[0].revents & ZMQ_POLLIN))
            serve_request(z);
    }
    zmq_close(control);
    return NULL;
}

gs_zap *gs_zap_new(void *zctx, const char *keys_dir, const char *ident)
{
    gs_zap *z = calloc(1, sizeof *z);
    if (!z) {
        gs_error_set("out of memory for the ZAP handler");
        return NULL;
    }
    z->zctx = zctx;
    snprintf(z->dir, sizeof z->dir, "%s", keys_dir);
    snprintf(z->ident, sizeof z->ident, "%s", ident ? ident : "gastroscreen");
    snprintf(z->control, sizeof z->control, "inproc://gs-zap-control-%p", (void *)z);
    z->reload_gen = atomic_load(&sighup_gen);
    pthread_mutex_init(&z->lock, NULL);
    if (!(z->seen = calloc(REFUSED_SEEN_MAX, sizeof *z->seen))) {
        gs_error_set("out of memory for the ZAP handler");
        goto free_handler;
    }
    if (!(z->ring = gs_keyring_load(keys_dir)))
        goto free_handler;
    z->rep = zmq_socket(zctx, ZMQ_REP);
    z->control_out = zmq_socket(zctx, ZMQ_PAIR);
    int linger = 0;
    if (!z->rep || !z->control_out ||
        zmq_setsockopt(z->rep, ZMQ_LINGER, &linger, sizeof linger) < 0 ||
        zmq_setsockopt(z->control_out, ZMQ_LINGER, &linger, sizeof linger) < 0 ||
        zmq_bind(z->control_out, z->control) < 0) {
        gs_error_set("ZAP handler: %s", zmq_strerror(errno));
        goto close_sockets;
    }
    if (zmq_bind(z->rep, "inproc://zeromq.zap.01") < 0) {
        gs_error_set("ZAP handler: cannot bind inproc://zeromq.zap.01: %s (another handler in "
                     "this context?)",
                     zmq_strerror(errno));
        goto close_sockets;
    }
    if (pthread_create(&z->thread, NULL, zap_thread, z) != 0) {
        gs_error_set("ZAP handler: cannot start its thread");
        goto close_sockets;
    }
    z->thread_started = 1;
    return z;

close_sockets:
    if (z->rep)
        zmq_close(z->rep);
    if (z->control_out)
        zmq_close(z->control_out);
free_handler:
    gs_keyring_destroy(&z->ring);
    free(z->seen);
    pthread_mutex_destroy(&z->lock);
    free(z);
    return NULL;
}

void gs_zap_destroy(gs_zap **zp)
{
    if (!zp || !*zp)
        return;
    gs_zap *z = *zp;
    if (z->thread_started) {
        zmq_send(z->control_out, "", 0, 0);
        pthread_join(z->thread, NULL);
    }
    zmq_close(z->rep);
    zmq_close(z->control_out);
    gs_keyring_destroy(&z->ring);
    free(z->seen);
    pthread_mutex_destroy(&z->lock);
    free(z);
    *zp = NULL;
}

/* ---- CURVE or plain -------------------------------------------------------------------- */

int gs_endpoint_is_local(const char *ep)
{
    if (!strncmp(ep, "ipc://", 6) || !strncmp(ep, "inproc://", 9))
        return 1;
    if (strncmp(ep, "tcp://", 6))
        return 0;
    const char *host = ep + 6;
    static const char *const loopback[] = {"127.0.0.1:", "[::1]:", "localhost:"};
    for (size_t i = 0; i < sizeof loopback / sizeof loopback[0]; i++)
        if (!strncmp(host, loopback[i], strlen(loopback[i])))
            return 1;
    return 0;
}

/* Fills path with `given`, or DIR/NAME when given is "". */
static int key_path(char *path, size_t n, const char *given, const char *dir, const char *name)
{
    int len =
        given && given[0] ? snprintf(path, n, "%s", given) : snprintf(path, n, "%s/%s", dir, name);
    if (len < 0 || (size_t)len >= n)
        return gs_error_set("key file path too long");
    return 0;
}

int gs_security_resolve(gs_security *s, const gs_security_settings *set, gs_security_role role,
                        const char *default_own, const char *const *endpoints, size_t n,
                        const char *ident)
{
    memset(s, 0, sizeof *s);
    if (!strcmp(set->mode, "off")) {
        gs_log_linef(ident, NULL, NULL, GS_LOG_WARNING,
                     "[security] security = off: every socket is plain, unauthenticated and "
                     "unencrypted; anyone who reaches its ports can submit, read verdicts and "
                     "act as a worker");
        return 0;
    }
    if (strcmp(set->mode, "curve"))
        return gs_error_set("[security] security: '%.32s' is neither curve nor off", set->mode);
    char own[4200], server[4200], own_name[160];
    snprintf(own_name, sizeof own_name, "%s.key", default_own);
    if (key_path(own, sizeof own, set->own_key, set->keys_dir, own_name) < 0 ||
        key_path(server, sizeof server, set->server, set->keys_dir, "coordinator.pub") < 0)
        return -1;
    int missing = 0;
    if (gs_key_read_secret(own, s->secret, s->public_key) < 0) {
        if (errno != ENOENT)
            return -1;
        missing = 1;
    } else if (role == GS_SECURITY_CLIENT && gs_key_read_public(server, s->server, NULL) < 0) {
        /* gs_key_read_public sets errno from open(). */
        if (errno != ENOENT)
            return -1;
        missing = 1;
    }
    if (!missing) {
        s->curve = 1;
        return 0;
    }
    char why[512];
    snprintf(why, sizeof why, "%s", gs_error_get());
    for (size_t i = 0; i < n; i++)
        if (endpoints[i] && endpoints[i][0] && !gs_endpoint_is_local(endpoints[i]))
            return gs_error_set("%s is not a loopback or ipc:// address and [security] security "
                                "= curve, but the keys are missing (%s); make them with "
                                "`gastroscreen keygen` (README, Running the service) or set "
                                "[security] security = off",
                                endpoints[i], why);
    memset(s, 0, sizeof *s);
    gs_error_clear();
    gs_log_linef(ident, NULL, NULL, GS_LOG_INFO,
                 "no CURVE keys (%s): loopback and ipc:// sockets run plain", why);
    return 0;
}

const gs_curve_keys *gs_security_curve(gs_security *s)
{
    if (!s || !s->curve)
        return NULL;
    s->keys.secret = s->secret;
    s->keys.public_key = s->public_key;
    s->keys.server = s->server[0] ? s->server : NULL;
    return &s->keys;
}
