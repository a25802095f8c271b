#include "stages/runtime/transport.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/error.h"
#include "proto/vocab.h"
#include "stages/runtime/fileio.h"

/* PROTOCOL.md §2: requests to the coordinator are small; a reply (EventsSinceReply with 1000
 * events) or a job (a ReportJob with every tile summary) is not. */
#define REQUEST_MAX_BYTES (64 * 1024)
#define REPLY_MAX_BYTES (64 * 1024 * 1024)
#define EVENT_MAX_BYTES (1024 * 1024)
#define WORK_MAX_BYTES (64 * 1024 * 1024)
#define TILE_MAX_BYTES (8 * 1024 * 1024)
#define LOG_INTERVAL_NS (10LL * 1000 * 1000 * 1000)
/* Frames kept of one multipart message; the longest valid layout has three. */
#define MAX_FRAMES 3

struct gs_transport {
    void *sock;
    gs_channel channel;
    int type;
    gs_transport_mode mode;
    char endpoint[1024];
    char name[64];
    int quiet;
    int curve; /* CURVE keys set on the socket (tcp:// endpoints only) */
    int curve_server;
    gs_transport_counters counters;
    /* Rate limit of drop log lines: last line time and drops since, per reason. */
    int64_t last_log_ns[GS_DROP_COUNT];
    uint64_t suppressed[GS_DROP_COUNT];
};

static const char *const channel_names[GS_CHANNEL_COUNT] = {"work",   "tiles",  "events",
                                                            "intake", "submit", "query"};

const char *gs_drop_reason_name(gs_drop_reason r)
{
    static const char *const names[GS_DROP_COUNT] = {"frames", "unpack", "protocol",
                                                     "pixels", "topic",  "wrong-type"};
    return (unsigned)r < GS_DROP_COUNT ? names[r] : "unknown";
}

static const ProtobufCMessageDescriptor *channel_descriptor(gs_channel c)
{
    switch (c) {
    case GS_CHANNEL_WORK:
        return &gastroscreen__v1__work_message__descriptor;
    case GS_CHANNEL_TILES:
        return &gastroscreen__v1__tile_message__descriptor;
    case GS_CHANNEL_EVENTS:
    case GS_CHANNEL_INTAKE:
        return &gastroscreen__v1__event_message__descriptor;
    case GS_CHANNEL_SUBMIT:
        return &gastroscreen__v1__submit_message__descriptor;
    case GS_CHANNEL_QUERY:
        return &gastroscreen__v1__query_message__descriptor;
    case GS_CHANNEL_COUNT:
        break;
    }
    GS_ASSERT(!"unknown channel");
    return NULL;
}

static int type_fits_channel(gs_channel c, int type)
{
    switch (c) {
    case GS_CHANNEL_WORK:
        return type == ZMQ_ROUTER || type == ZMQ_DEALER;
    case GS_CHANNEL_TILES:
        return type == ZMQ_PUSH || type == ZMQ_PULL;
    case GS_CHANNEL_EVENTS:
    case GS_CHANNEL_INTAKE:
        return type == ZMQ_PUB || type == ZMQ_SUB;
    case GS_CHANNEL_SUBMIT:
    case GS_CHANNEL_QUERY:
        return type == ZMQ_ROUTER || type == ZMQ_REQ;
    case GS_CHANNEL_COUNT:
        break;
    }
    return 0;
}

static int64_t max_message_bytes(gs_channel c, int type)
{
    switch (c) {
    case GS_CHANNEL_WORK:
        return WORK_MAX_BYTES;
    case GS_CHANNEL_TILES:
        return TILE_MAX_BYTES;
    case GS_CHANNEL_INTAKE:
        return REQUEST_MAX_BYTES;
    case GS_CHANNEL_EVENTS:
        return EVENT_MAX_BYTES;
    case GS_CHANNEL_SUBMIT:
    case GS_CHANNEL_QUERY:
        return type == ZMQ_ROUTER ? REQUEST_MAX_BYTES : REPLY_MAX_BYTES;
    case GS_CHANNEL_COUNT:
        break;
    }
    return REQUEST_MAX_BYTES;
}

static int default_hwm(gs_channel c)
{
    if (c == GS_CHANNEL_TILES)
        return 8;
    if (c == GS_CHANNEL_EVENTS)
        return 10000;
    return 1000;
}

static int set_int(gs_transport *t, int option, int value, const char *what)
{
    if (zmq_setsockopt(t->sock, option, &value, sizeof value) < 0)
        return gs_error_set("%s: setting %s: %s", t->name, what, zmq_strerror(errno));
    return 0;
}

static int set_text(gs_transport *t, int option, const char *value, const char *what)
{
    /* Z85 keys go in with their NUL (41 bytes); ZeroMQ takes 32 bytes as binary. */
    size_t len = option == ZMQ_ZAP_DOMAIN ? strlen(value) : strlen(value) + 1;
    if (zmq_setsockopt(t->sock, option, value, len) < 0)
        return gs_error_set("%s: setting %s: %s", t->name, what, zmq_strerror(errno));
    return 0;
}

static int key_ok(const char *z85)
{
    return z85 && strlen(z85) == 40;
}

/* PROTOCOL.md §2: a binding socket is the CURVE server and names its channel as ZAP domain,
 * so the handler (stages/runtime/keys) can admit only the keys of this channel; a connecting
 * one is a client. */
static int apply_curve(gs_transport *t, const gs_curve_keys *k)
{
    if (t->mode == GS_BIND) {
        if (!key_ok(k->secret))
            return gs_error_set("%s: CURVE server without a secret key", t->name);
        t->curve_server = 1;
        if (set_int(t, ZMQ_CURVE_SERVER, 1, "ZMQ_CURVE_SERVER") < 0 ||
            set_text(t, ZMQ_CURVE_SECRETKEY, k->secret, "ZMQ_CURVE_SECRETKEY") < 0 ||
            set_text(t, ZMQ_ZAP_DOMAIN, channel_names[t->channel], "ZMQ_ZAP_DOMAIN") < 0)
            return -1;
    } else {
        if (!key_ok(k->secret) || !key_ok(k->public_key) || !key_ok(k->server))
            return gs_error_set("%s: CURVE client without its key pair and the server's key",
                                t->name);
        if (set_text(t, ZMQ_CURVE_SERVERKEY, k->server, "ZMQ_CURVE_SERVERKEY") < 0 ||
            set_text(t, ZMQ_CURVE_PUBLICKEY, k->public_key, "ZMQ_CURVE_PUBLICKEY") < 0 ||
            set_text(t, ZMQ_CURVE_SECRETKEY, k->secret, "ZMQ_CURVE_SECRETKEY") < 0)
            return -1;
    }
    t->curve = 1;
    return 0;
}

static int apply_options(gs_transport *t, const char *endpoint, int hwm)
{
    int64_t maxmsg = max_message_bytes(t->channel, t->type);
    if (set_int(t, ZMQ_LINGER, 1000, "ZMQ_LINGER") < 0 ||
        set_int(t, ZMQ_SNDHWM, hwm, "ZMQ_SNDHWM") < 0 ||
        set_int(t, ZMQ_RCVHWM, hwm, "ZMQ_RCVHWM") < 0 ||
        set_int(t, ZMQ_RECONNECT_IVL, 100, "ZMQ_RECONNECT_IVL") < 0 ||
        set_int(t, ZMQ_RECONNECT_IVL_MAX, 5000, "ZMQ_RECONNECT_IVL_MAX") < 0)
        return -1;
    if (zmq_setsockopt(t->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) < 0)
        return gs_error_set("%s: setting ZMQ_MAXMSGSIZE: %s", t->name, zmq_strerror(errno));
    /* Dead tcp links must be torn down; inproc and ipc peers die with their host. ZMTP
     * heartbeats do it on every channel but the tiles: an inbox at its high-water mark stops
     * reading its tcp stream on purpose (back-pressure), so the PINGs behind the tiles went
     * unanswered, the link timed out and the tiles in the kernel's buffers were lost (PROTOCOL.md
     * §2, §10). Tile links use the kernel's keepalive probes, which the peer's kernel answers. */
    int tcp = !strncmp(endpoint, "tcp://", 6);
    if (tcp && t->channel == GS_CHANNEL_TILES &&
        (set_int(t, ZMQ_TCP_KEEPALIVE, 1, "ZMQ_TCP_KEEPALIVE") < 0 ||
         set_int(t, ZMQ_TCP_KEEPALIVE_IDLE, 10, "ZMQ_TCP_KEEPALIVE_IDLE") < 0 ||
         set_int(t, ZMQ_TCP_KEEPALIVE_INTVL, 5, "ZMQ_TCP_KEEPALIVE_INTVL") < 0 ||
         set_int(t, ZMQ_TCP_KEEPALIVE_CNT, 3, "ZMQ_TCP_KEEPALIVE_CNT") < 0))
        return -1;
    if (tcp && t->channel != GS_CHANNEL_TILES &&
        (set_int(t, ZMQ_HEARTBEAT_IVL, 1000, "ZMQ_HEARTBEAT_IVL") < 0 ||
         set_int(t, ZMQ_HEARTBEAT_TIMEOUT, 5000, "ZMQ_HEARTBEAT_TIMEOUT") < 0 ||
         set_int(t, ZMQ_HEARTBEAT_TTL, 10000, "ZMQ_HEARTBEAT_TTL") < 0))
        return -1;
    if (t->type == ZMQ_ROUTER && set_int(t, ZMQ_ROUTER_MANDATORY, 1, "ZMQ_ROUTER_MANDATORY") < 0)
        return -1;
    if (t->mode == GS_CONNECT && (t->type == ZMQ_PUSH || t->type == ZMQ_DEALER) &&
        set_int(t, ZMQ_IMMEDIATE, 1, "ZMQ_IMMEDIATE") < 0)
        return -1;
    return 0;
}

gs_transport *gs_transport_new(void *zctx, gs_channel channel, int zmq_type, gs_transport_mode mode,
                               const char *endpoint, const gs_transport_options *opt)
{
    return gs_transport_new_curve(zctx, channel, zmq_type, mode, endpoint, opt, NULL);
}

gs_transport *gs_transport_new_curve(void *zctx, gs_channel channel, int zmq_type,
                                     gs_transport_mode mode, const char *endpoint,
                                     const gs_transport_options *opt, const gs_curve_keys *curve)
{
    GS_ASSERT(zctx && endpoint);
    if ((unsigned)channel >= GS_CHANNEL_COUNT) {
        gs_error_set("unknown channel %d", (int)channel);
        return NULL;
    }
    if (!type_fits_channel(channel, zmq_type)) {
        gs_error_set("%s: socket type %d is not used on this channel", channel_names[channel],
                     zmq_type);
        return NULL;
    }
    if (strlen(endpoint) >= sizeof((gs_transport *)0)->endpoint) {
        gs_error_set("%s: endpoint too long", channel_names[channel]);
        return NULL;
    }
    gs_transport *t = calloc(1, sizeof *t);
    if (!t) {
        gs_error_set("out of memory for a transport");
        return NULL;
    }
    t->channel = channel;
    t->type = zmq_type;
    t->mode = mode;
    t->quiet = opt && opt->quiet;
    snprintf(t->name, sizeof t->name, "%s", opt && opt->name ? opt->name : channel_names[channel]);
    t->sock = zmq_socket(zctx, zmq_type);
    if (!t->sock) {
        gs_error_set("%s: zmq_socket: %s", t->name, zmq_strerror(errno));
        goto free_transport;
    }
    if (apply_options(t, endpoint, opt && opt->hwm > 0 ? opt->hwm : default_hwm(channel)) < 0)
        goto close_socket;
    if (curve && !strncmp(endpoint, "tcp://", 6) && apply_curve(t, curve) < 0)
        goto close_socket;
    if (mode == GS_BIND) {
        if (zmq_bind(t->sock, endpoint) < 0) {
            gs_error_set("%s: cannot bind %s: %s", t->name, endpoint, zmq_strerror(errno));
            goto close_socket;
        }
        size_t len = sizeof t->endpoint;
        if (zmq_getsockopt(t->sock, ZMQ_LAST_ENDPOINT, t->endpoint, &len) < 0 || len == 0)
            snprintf(t->endpoint, sizeof t->endpoint, "%s", endpoint);
    } else {
        if (zmq_connect(t->sock, endpoint) < 0) {
            gs_error_set("%s: cannot connect to %s: %s", t->name, endpoint, zmq_strerror(errno));
            goto close_socket;
        }
        snprintf(t->endpoint, sizeof t->endpoint, "%s", endpoint);
    }
    return t;

close_socket:
    zmq_close(t->sock);
free_transport:
    free(t);
    return NULL;
}

void gs_transport_destroy(gs_transport **t)
{
    if (!t || !*t)
        return;
    zmq_close((*t)->sock);
    free(*t);
    *t = NULL;
}

void *gs_transport_socket(gs_transport *t)
{
    return t->sock;
}

const char *gs_transport_endpoint(const gs_transport *t)
{
    return t->endpoint;
}

int gs_transport_connect(gs_transport *t, const char *endpoint)
{
    if (zmq_connect(t->sock, endpoint) < 0)
        return gs_error_set("%s: cannot connect to %s: %s", t->name, endpoint, zmq_strerror(errno));
    return 0;
}

int gs_transport_connect_curve(gs_transport *t, const char *endpoint, const gs_curve_keys *keys)
{
    if (t->mode == GS_BIND || t->curve_server)
        return gs_error_set("%s: a CURVE server socket connects with its own keys", t->name);
    if (keys && !strncmp(endpoint, "tcp://", 6)) {
        if (apply_curve(t, keys) < 0)
            return -1;
    } else if (t->curve) {
        /* CURVE_SERVER = 0 puts the socket's mechanism back to NULL for the next connection. */
        if (set_int(t, ZMQ_CURVE_SERVER, 0, "ZMQ_CURVE_SERVER") < 0)
            return -1;
        t->curve = 0;
    }
    return gs_transport_connect(t, endpoint);
}

int gs_transport_is_curve(const gs_transport *t)
{
    return t->curve;
}

int gs_transport_disconnect(gs_transport *t, const char *endpoint)
{
    if (zmq_disconnect(t->sock, endpoint) < 0)
        return gs_error_set("%s: cannot disconnect from %s: %s", t->name, endpoint,
                            zmq_strerror(errno));
    return 0;
}

int gs_transport_subscribe(gs_transport *t, const char *prefix)
{
    if (t->type != ZMQ_SUB)
        return gs_error_set("%s: subscribe on a socket that is not SUB", t->name);
    if (zmq_setsockopt(t->sock, ZMQ_SUBSCRIBE, prefix, strlen(prefix)) < 0)
        return gs_error_set("%s: subscribe '%s': %s", t->name, prefix, zmq_strerror(errno));
    return 0;
}

const gs_transport_counters *gs_transport_counters_get(const gs_transport *t)
{
    return &t->counters;
}

/* ---- topics ---------------------------------------------------------------------------- */

/* The topic's last segment is the name of an enum value (proto/vocab); a value without a name
 * (UNSPECIFIED, or unknown to this build) has no topic. */
static int named_segment(const char *name, const char *what, int value, const char **seg)
{
    if (!name)
        return gs_error_set("%s value %d has no topic", what, value);
    *seg = name;
    return 0;
}

int gs_event_topic(const Gastroscreen__V1__EventMessage *e, char *buf, size_t n)
{
    const char *head = NULL, *seg = NULL;
    int rc = 0;
    switch (e->body_case) {
    case GASTROSCREEN__V1__EVENT_MESSAGE__BODY_ARRIVED:
        head = "slide.arrived";
        break;
    case GASTROSCREEN__V1__EVENT_MESSAGE__BODY_ACCEPTED:
        head = "slide.accepted";
        break;
    case GASTROSCREEN__V1__EVENT_MESSAGE__BODY_STATE_CHANGED:
        head = "slide.state";
        rc = e->state_changed ? named_segment(gs_slide_state_name(e->state_changed->to),
                                              "SlideState", e->state_changed->to, &seg)
                              : gs_error_set("state_changed without content");
        break;
    case GASTROSCREEN__V1__EVENT_MESSAGE__BODY_VERDICT:
        head = "slide.verdict";
        rc = e->verdict ? named_segment(gs_verdict_class_name(e->verdict->verdict_class),
                                        "VerdictClass", e->verdict->verdict_class, &seg)
                        : gs_error_set("verdict without content");
        break;
    case GASTROSCREEN__V1__EVENT_MESSAGE__BODY_STATS:
        head = "stats";
        rc = e->stats
                 ? named_segment(gs_stage_name(e->stats->stage), "Stage", e->stats->stage, &seg)
                 : gs_error_set("stats without content");
        break;
    default:
        return gs_error_set("event without a body has no topic");
    }
    if (rc < 0)
        return -1;
    int len = seg ? snprintf(buf, n, "%s.%s.", head, seg) : snprintf(buf, n, "%s.", head);
    if (len < 0 || (size_t)len >= n)
        return gs_error_set("topic buffer too small");
    return 0;
}

/* ---- sending --------------------------------------------------------------------------- */

static int send_failed(gs_transport *t, const char *what)
{
    int e = errno;
    t->counters.send_failed++;
    gs_error_set("%s: sending %s: %s", t->name, what, zmq_strerror(e));
    errno = e;
    return -1;
}

/* Sends the frames that go before the envelope: routing id (+ delimiter) or topic. */
static int send_prefix(gs_transport *t, const gs_peer *to, const ProtobufCMessage *env, int zflags)
{
    if (t->type == ZMQ_ROUTER) {
        GS_ASSERT(to && to->len > 0 && to->len <= sizeof to->id);
        if (zmq_send(t->sock, to->id, to->len, zflags | ZMQ_SNDMORE) < 0)
            return send_failed(t, "routing id");
        if (t->channel != GS_CHANNEL_WORK && zmq_send(t->sock, "", 0, ZMQ_SNDMORE) < 0)
            return send_failed(t, "delimiter");
    } else if (t->type == ZMQ_PUB) {
        char topic[256];
        if (gs_event_topic((const Gastroscreen__V1__EventMessage *)env, topic, sizeof topic) < 0)
            return gs_error_prefix("%s", t->name);
        if (zmq_send(t->sock, topic, strlen(topic), zflags | ZMQ_SNDMORE) < 0)
            return send_failed(t, "topic");
    }
    return 0;
}

/* Packs the envelope into a malloc'd buffer (at least 1 byte so malloc never returns NULL
 * for a legitimately empty message); NULL when out of memory. */
static uint8_t *pack_envelope(gs_transport *t, const ProtobufCMessage *env, size_t *len)
{
    GS_ASSERT(env && env->descriptor == channel_descriptor(t->channel));
    *len = protobuf_c_message_get_packed_size(env);
    uint8_t *buf = malloc(*len ? *len : 1);
    if (!buf) {
        gs_error_set("%s: out of memory packing %zu bytes", t->name, *len);
        return NULL;
    }
    size_t packed = protobuf_c_message_pack(env, buf);
    GS_ASSERT(packed == *len);
    return buf;
}

int gs_transport_send(gs_transport *t, const gs_peer *to, const ProtobufCMessage *envelope,
                      int flags)
{
    GS_ASSERT(t->type != ZMQ_SUB && t->type != ZMQ_PULL);
    GS_ASSERT(t->channel != GS_CHANNEL_TILES);
    size_t len;
    uint8_t *buf = pack_envelope(t, envelope, &len);
    if (!buf)
        return -1;
    int zflags = (flags & GS_SEND_DONTWAIT) ? ZMQ_DONTWAIT : 0;
    int rc = send_prefix(t, to, envelope, zflags);
    /* After the first frame of a multipart message is accepted the rest cannot hit the HWM. */
    if (rc == 0 &&
        zmq_send(t->sock, buf, len, t->type == ZMQ_ROUTER || t->type == ZMQ_PUB ? 0 : zflags) < 0)
        rc = send_failed(t, "envelope");
    free(buf);
    if (rc == 0)
        t->counters.sent++;
    return rc;
}

int gs_transport_send_packed(gs_transport *t, const gs_peer *to, const void *buf, size_t len,
                             int flags)
{
    GS_ASSERT(t->type == ZMQ_DEALER || t->type == ZMQ_ROUTER || t->type == ZMQ_REQ);
    int zflags = (flags & GS_SEND_DONTWAIT) ? ZMQ_DONTWAIT : 0;
    if (send_prefix(t, to, NULL, zflags) < 0)
        return -1;
    if (zmq_send(t->sock, buf, len, t->type == ZMQ_ROUTER ? 0 : zflags) < 0)
        return send_failed(t, "envelope");
    t->counters.sent++;
    return 0;
}

/* Zero-copy hand-over: ZeroMQ calls this when the frame is closed. `cancelled` is set by a
 * failed send, in which case the caller keeps the pixels. */
typedef struct {
    gs_pixels_free_fn *fn;
    void *hint;
    int cancelled;
} pixels_owner;

static void release_pixels(void *data, void *hint)
{
    pixels_owner *o = hint;
    if (!o->cancelled)
        o->fn(data, o->hint);
    free(o);
}

int gs_transport_send_tile(gs_transport *t, const Gastroscreen__V1__TileMessage *message,
                           void *pixels, size_t len, gs_pixels_free_fn *free_fn, void *hint,
                           int flags)
{
    GS_ASSERT(t->channel == GS_CHANNEL_TILES && t->type == ZMQ_PUSH);
    size_t hlen;
    uint8_t *buf = pack_envelope(t, &message->base, &hlen);
    if (!buf)
        return -1;
    int rc = -1;
    zmq_msg_t frame;
    pixels_owner *owner = NULL;
    if (free_fn) {
        owner = malloc(sizeof *owner);
        if (!owner) {
            gs_error_set("%s: out of memory", t->name);
            goto free_header;
        }
        *owner = (pixels_owner){free_fn, hint, 0};
        if (zmq_msg_init_data(&frame, pixels, len, release_pixels, owner) < 0) {
            free(owner);
            send_failed(t, "pixels");
            goto free_header;
        }
    } else if (zmq_msg_init_size(&frame, len) < 0) {
        send_failed(t, "pixels");
        goto free_header;
    } else if (len) {
        memcpy(zmq_msg_data(&frame), pixels, len);
    }
    if (zmq_send(t->sock, buf, hlen,
                 ZMQ_SNDMORE | ((flags & GS_SEND_DONTWAIT) ? ZMQ_DONTWAIT : 0)) < 0) {
        send_failed(t, "tile header");
        goto close_frame;
    }
    if (zmq_msg_send(&frame, t->sock, 0) < 0) {
        send_failed(t, "pixels");
        goto close_frame;
    }
    t->counters.sent++;
    rc = 0;
    goto free_header; /* the frame now belongs to ZeroMQ */

close_frame:
    if (owner)
        owner->cancelled = 1;
    zmq_msg_close(&frame);
free_header:
    free(buf);
    return rc;
}

/* ---- receiving ------------------------------------------------------------------------- */

static void peer_hex(const gs_peer *p, char *buf, size_t n)
{
    size_t k = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < p->len && k + 3 <= n; i++, k += 2)
        snprintf(buf + k, n - k, "%02x", p->id[i]);
}

static gs_recv_status drop(gs_transport *t, gs_inbound *in, gs_drop_reason r, const char *detail)
{
    t->counters.dropped[r]++;
    if (r == GS_DROP_WRONG_TYPE)
        t->counters.wrong_type++;
    else
        t->counters.malformed++;
    in->drop = r;
    if (!t->quiet) {
        int64_t now = gs_mono_ns();
        if (t->last_log_ns[r] == 0 || now - t->last_log_ns[r] >= LOG_INTERVAL_NS) {
            char peer[2 * sizeof in->from.id + 1];
            peer_hex(&in->from, peer, sizeof peer);
            fprintf(stderr,
                    "gastroscreen: warning: %s socket: dropped a %s message%s%s: %s"
                    " (%" PRIu64 " more dropped for this reason since the last line)\n",
                    t->name, gs_drop_reason_name(r), peer[0] ? " from peer " : "", peer, detail,
                    t->suppressed[r]);
            t->last_log_ns[r] = now;
            t->suppressed[r] = 0;
        } else {
            t->suppressed[r]++;
        }
    }
    gs_error_set("%s: dropped a %s message: %s", t->name, gs_drop_reason_name(r), detail);
    return GS_RECV_DROPPED;
}

void gs_inbound_release(gs_inbound *in)
{
    if (in->msg.base)
        protobuf_c_message_free_unpacked(in->msg.base, NULL);
    if (in->has_pixel_frame_)
        zmq_msg_close(&in->pixel_frame_);
    memset(in, 0, sizeof *in);
}

static int expected_frames(const gs_transport *t)
{
    switch (t->channel) {
    case GS_CHANNEL_WORK:
        return t->type == ZMQ_ROUTER ? 2 : 1;
    case GS_CHANNEL_TILES:
        return 2;
    case GS_CHANNEL_EVENTS:
    case GS_CHANNEL_INTAKE:
        return 2;
    case GS_CHANNEL_SUBMIT:
    case GS_CHANNEL_QUERY:
        return t->type == ZMQ_ROUTER ? 3 : 1;
    case GS_CHANNEL_COUNT:
        break;
    }
    return 1;
}

/* The envelope's protocol and body case; every envelope starts with the same two fields. */
static void envelope_head(const gs_inbound *in, int *protocol, int *body)
{
    switch (in->channel) {
    case GS_CHANNEL_WORK:
        *protocol = (int)in->msg.work->protocol;
        *body = (int)in->msg.work->body_case;
        return;
    case GS_CHANNEL_TILES:
        *protocol = (int)in->msg.tile->protocol;
        *body = (int)in->msg.tile->body_case;
        return;
    case GS_CHANNEL_EVENTS:
    case GS_CHANNEL_INTAKE:
        *protocol = (int)in->msg.event->protocol;
        *body = (int)in->msg.event->body_case;
        return;
    case GS_CHANNEL_SUBMIT:
        *protocol = (int)in->msg.submit->protocol;
        *body = (int)in->msg.submit->body_case;
        return;
    case GS_CHANNEL_QUERY:
        *protocol = (int)in->msg.query->protocol;
        *body = (int)in->msg.query->body_case;
        return;
    case GS_CHANNEL_COUNT:
        break;
    }
    GS_ASSERT(!"unknown channel");
}

/* 1 if `body` is carried by this socket in the receiving direction (PROTOCOL.md §4). */
static int body_allowed(const gs_transport *t, int body)
{
    switch (t->channel) {
    case GS_CHANNEL_WORK:
        if (t->type == ZMQ_ROUTER) /* the coordinator hears life cycle and results */
            return body == 400 || body == 402 || body == 403 || body == 405 ||
                   (body >= 420 && body <= 425);
        return body == 401 || body == 404 || (body >= 410 && body <= 413);
    case GS_CHANNEL_TILES:
        return body == GASTROSCREEN__V1__TILE_MESSAGE__BODY_TILE;
    case GS_CHANNEL_INTAKE:
        return body == GASTROSCREEN__V1__EVENT_MESSAGE__BODY_ARRIVED;
    case GS_CHANNEL_EVENTS:
        return body >= GASTROSCREEN__V1__EVENT_MESSAGE__BODY_ACCEPTED &&
               body <= GASTROSCREEN__V1__EVENT_MESSAGE__BODY_STATS;
    case GS_CHANNEL_SUBMIT:
        return body == (t->type == ZMQ_ROUTER ? GASTROSCREEN__V1__SUBMIT_MESSAGE__BODY_REQUEST
                                              : GASTROSCREEN__V1__SUBMIT_MESSAGE__BODY_REPLY);
    case GS_CHANNEL_QUERY:
        if (t->type == ZMQ_ROUTER)
            return body == GASTROSCREEN__V1__QUERY_MESSAGE__BODY_EVENTS_SINCE ||
                   body == GASTROSCREEN__V1__QUERY_MESSAGE__BODY_SLIDE_STATE;
        return body >= GASTROSCREEN__V1__QUERY_MESSAGE__BODY_EVENTS &&
               body <= GASTROSCREEN__V1__QUERY_MESSAGE__BODY_ERROR;
    case GS_CHANNEL_COUNT:
        break;
    }
    return 0;
}

/* 1 when every string field of m and of the messages it holds is UTF-8, as proto3 requires
 * of `string` (protobuf-c does not check; PROTOCOL.md §14 step 2). Only a oneof's set member
 * is looked at: the others share its storage. */
static int strings_utf8(const ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        const char *base = (const char *)m;
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF &&
            *(const uint32_t *)(base + f->quantifier_offset) != f->id)
            continue;
        size_t n = 1;
        void *const *items = (void *const *)(base + f->offset);
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            n = *(const size_t *)(base + f->quantifier_offset);
            items = *(void *const *const *)(base + f->offset);
        }
        for (size_t k = 0; k < n; k++) {
            if (!items[k])
                continue;
            if (f->type == PROTOBUF_C_TYPE_STRING ? !gs_utf8_ok(items[k]) : !strings_utf8(items[k]))
                return 0;
        }
    }
    return 1;
}

/* Checks the pixel frame against the header (PROTOCOL.md §3 "Pixels"). */
static gs_recv_status check_pixels(gs_transport *t, gs_inbound *in)
{
    const Gastroscreen__V1__TileHeader *h = in->msg.tile->tile;
    char detail[160];
    if (!h)
        return drop(t, in, GS_DROP_WRONG_TYPE, "tile body without content");
    int c = gs_pixel_channels(h->pixel_format);
    if (c == 0 || (uint32_t)c != h->channels) {
        snprintf(detail, sizeof detail, "pixel format %d with %" PRIu32 " channels",
                 (int)h->pixel_format, h->channels);
        return drop(t, in, GS_DROP_PIXELS, detail);
    }
    /* 2^31 x 2^31 x 4 wraps to 0 in 64 bits: the product must not overflow into a match. */
    uint64_t want;
    int overflow = __builtin_mul_overflow((uint64_t)h->width, (uint64_t)h->height, &want) ||
                   __builtin_mul_overflow(want, (uint64_t)h->channels, &want);
    if (overflow || h->width == 0 || h->height == 0 || want != in->pixels_len) {
        snprintf(detail, sizeof detail,
                 "%" PRIu32 "x%" PRIu32 "x%" PRIu32 " header with a %zu-byte pixel frame", h->width,
                 h->height, h->channels, in->pixels_len);
        return drop(t, in, GS_DROP_PIXELS, detail);
    }
    return GS_RECV_MESSAGE;
}

gs_recv_status gs_transport_recv(gs_transport *t, gs_inbound *in, int flags)
{
    GS_ASSERT(t->type != ZMQ_PUB && t->type != ZMQ_PUSH);
    memset(in, 0, sizeof *in);
    in->channel = t->channel;
    zmq_msg_t frames[MAX_FRAMES];
    int kept = 0, total = 0, more;
    char detail[160];
    do {
        zmq_msg_t part;
        zmq_msg_init(&part);
        int zflags = (total == 0 && (flags & GS_RECV_DONTWAIT)) ? ZMQ_DONTWAIT : 0;
        if (zmq_msg_recv(&part, t->sock, zflags) < 0) {
            int e = errno;
            zmq_msg_close(&part);
            for (int i = 0; i < kept; i++)
                zmq_msg_close(&frames[i]);
            errno = e;
            if (total == 0 && e == EAGAIN)
                return GS_RECV_EMPTY;
            gs_error_set("%s: receive: %s", t->name, zmq_strerror(e));
            return GS_RECV_ERROR;
        }
        more = zmq_msg_more(&part);
        if (kept < MAX_FRAMES)
            frames[kept++] = part;
        else
            zmq_msg_close(&part);
        total++;
    } while (more);

    gs_recv_status st = GS_RECV_MESSAGE;
    int want = expected_frames(t);
    /* The ZAP handler's name for the connection (stages/runtime/keys); NULL on plain ones. */
    const char *uid = zmq_msg_gets(&frames[kept - 1], "User-Id");
    if (uid)
        snprintf(in->from.user_id, sizeof in->from.user_id, "%s", uid);
    int env_at = 0;
    if (t->type == ZMQ_ROUTER) {
        /* Routing id first, so that even a malformed request can be answered. */
        size_t rl = zmq_msg_size(&frames[0]);
        if (rl > 0 && rl <= sizeof in->from.id) {
            memcpy(in->from.id, zmq_msg_data(&frames[0]), rl);
            in->from.len = rl;
        }
        env_at = want - 1;
        if (total == want && want == 3 && zmq_msg_size(&frames[1]) != 0)
            in->from.len = 0; /* no delimiter: cannot answer */
    } else if (t->type == ZMQ_SUB) {
        env_at = 1;
    }
    if (total != want || (t->type == ZMQ_ROUTER && in->from.len == 0)) {
        snprintf(detail, sizeof detail, "%d frames, expected %d", total, want);
        st = drop(t, in, GS_DROP_FRAMES, detail);
        goto close_frames;
    }
    if (t->type == ZMQ_SUB) {
        size_t tl = zmq_msg_size(&frames[0]);
        if (tl == 0 || tl >= sizeof in->topic || memchr(zmq_msg_data(&frames[0]), 0, tl)) {
            st = drop(t, in, GS_DROP_FRAMES, "bad topic frame");
            goto close_frames;
        }
        memcpy(in->topic, zmq_msg_data(&frames[0]), tl);
        in->topic[tl] = '\0';
    }

    in->msg.base =
        protobuf_c_message_unpack(channel_descriptor(t->channel), NULL,
                                  zmq_msg_size(&frames[env_at]), zmq_msg_data(&frames[env_at]));
    if (!in->msg.base) {
        snprintf(detail, sizeof detail, "%zu bytes that do not unpack as %s",
                 zmq_msg_size(&frames[env_at]), channel_descriptor(t->channel)->short_name);
        st = drop(t, in, GS_DROP_UNPACK, detail);
        goto close_frames;
    }
    if (!strings_utf8(in->msg.base)) {
        snprintf(detail, sizeof detail, "a %s with a string that is not UTF-8",
                 channel_descriptor(t->channel)->short_name);
        st = drop(t, in, GS_DROP_UNPACK, detail);
        goto close_frames;
    }
    int protocol, body;
    envelope_head(in, &protocol, &body);
    if (protocol != GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1) {
        snprintf(detail, sizeof detail, "protocol version %d", protocol);
        st = drop(t, in, GS_DROP_PROTOCOL, detail);
        goto close_frames;
    }
    if (!body_allowed(t, body)) {
        snprintf(detail, sizeof detail, "body %d is not carried here in this direction", body);
        st = drop(t, in, GS_DROP_WRONG_TYPE, detail);
        goto close_frames;
    }
    if (t->type == ZMQ_SUB) {
        char topic[256];
        if (gs_event_topic(in->msg.event, topic, sizeof topic) < 0 || strcmp(topic, in->topic)) {
            snprintf(detail, sizeof detail, "topic '%.100s' does not match the body", in->topic);
            st = drop(t, in, GS_DROP_TOPIC, detail);
            goto close_frames;
        }
    }
    if (t->channel == GS_CHANNEL_TILES) {
        in->pixel_frame_ = frames[1];
        in->has_pixel_frame_ = 1;
        kept = 1; /* frames[1] now belongs to *in */
        in->pixels = zmq_msg_data(&in->pixel_frame_);
        in->pixels_len = zmq_msg_size(&in->pixel_frame_);
        st = check_pixels(t, in);
    }

close_frames:
    for (int i = 0; i < kept; i++)
        zmq_msg_close(&frames[i]);
    if (st == GS_RECV_MESSAGE) {
        t->counters.received++;
    } else if (in->msg.base) {
        protobuf_c_message_free_unpacked(in->msg.base, NULL);
        in->msg.base = NULL;
    }
    if (st != GS_RECV_MESSAGE && in->has_pixel_frame_) {
        zmq_msg_close(&in->pixel_frame_);
        in->has_pixel_frame_ = 0;
        in->pixels = NULL;
        in->pixels_len = 0;
    }
    return st;
}
