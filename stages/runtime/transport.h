/*
 * transport: the ZeroMQ sockets of gastroscreen, their options, framing and validation.
 *
 * Every socket of proto/PROTOCOL.md §2 is a gs_transport: a ZeroMQ socket of one channel
 * (work, tiles, events, intake, submit, query), created with the options the protocol table
 * gives that channel (linger, message size cap, high-water marks, ZMTP heartbeats on tcp://
 * but kernel keepalives on tile links, reconnect back-off, ROUTER_MANDATORY, IMMEDIATE on
 * connecting PUSH/DEALER), bound or connected to an endpoint string (tcp://, ipc://, inproc://).
 *
 * Sending packs the channel's envelope and adds the frames of PROTOCOL.md §3 around it: the
 * routing id on a ROUTER (plus the empty delimiter on submit/query), the topic on a PUB
 * (derived from the event's body), the raw pixel frame after a TileMessage (copied, or handed
 * over zero-copy with a free function).
 *
 * Receiving reads one whole multipart message and checks it in the order of PROTOCOL.md §14,
 * steps 1-5: frame count and sizes, the envelope unpacks, protocol version 1, a body this
 * socket carries in this direction, the topic agrees with the body, and for tiles the pixel
 * frame holds exactly width * height * channels bytes with channels agreeing with the format.
 * A message that fails is dropped: counted under its reason in gs_transport_counters and
 * logged to stderr at most once per reason every 10 s (with the number suppressed), so garbage
 * cannot flood the log. Nothing on the wire can crash the receiver or desynchronise the socket.
 * Content checks that need the message's meaning (fences, ledgers) belong to the receiver.
 *
 * Use:
 *     gs_transport *t = gs_transport_new(ctx, GS_CHANNEL_WORK, ZMQ_DEALER, GS_CONNECT,
 *                                        "tcp://coord:5554", NULL);
 *     gs_transport_send(t, NULL, &env.base, 0);
 *     gs_inbound in;
 *     if (gs_transport_recv(t, &in, 0) == GS_RECV_MESSAGE) { use in.msg.work; }
 *     gs_inbound_release(&in);
 *     gs_transport_destroy(&t);
 *
 * A gs_transport is used by one thread at a time, like the ZeroMQ socket inside it.
 */
#ifndef GS_STAGES_RUNTIME_TRANSPORT_H
#define GS_STAGES_RUNTIME_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#include "proto/gastroscreen.pb-c.h"
#include "proto/vocab.h"

typedef enum {
    GS_CHANNEL_WORK = 0, /* WorkMessage: coordinator ROUTER, workers DEALER */
    GS_CHANNEL_TILES,    /* TileMessage + pixels: tiler PUSH, blur/infer PULL */
    GS_CHANNEL_EVENTS,   /* [topic][EventMessage]: coordinator PUB, subscribers SUB */
    GS_CHANNEL_INTAKE,   /* [topic][EventMessage{arrived}]: announcers PUB, coordinator SUB */
    GS_CHANNEL_SUBMIT,   /* SubmitMessage: coordinator ROUTER, clients REQ */
    GS_CHANNEL_QUERY,    /* QueryMessage: coordinator ROUTER, clients REQ */
    GS_CHANNEL_COUNT
} gs_channel;

typedef enum { GS_BIND = 0, GS_CONNECT = 1 } gs_transport_mode;

/* Why a received message was dropped. Every reason but WRONG_TYPE is "malformed". */
typedef enum {
    GS_DROP_FRAMES = 0, /* another number of frames than §3 says, or a bad routing/topic frame */
    GS_DROP_UNPACK,     /* the envelope does not unpack (garbage, truncation) or holds a
                           string that is not UTF-8 */
    GS_DROP_PROTOCOL,   /* protocol is not PROTOCOL_VERSION_1 */
    GS_DROP_PIXELS,     /* pixel frame size or channels disagree with the tile header */
    GS_DROP_TOPIC,      /* the topic frame disagrees with the event's body */
    GS_DROP_WRONG_TYPE, /* no body (another envelope type), or one not carried this way */
    GS_DROP_COUNT
} gs_drop_reason;

/* "frames", "unpack", "protocol", "pixels", "topic", "wrong-type". */
const char *gs_drop_reason_name(gs_drop_reason r);

/* Cumulative counts of one transport since it was created. */
typedef struct {
    uint64_t received;               /* valid messages handed to the caller */
    uint64_t sent;                   /* messages sent whole */
    uint64_t send_failed;            /* sends refused (HWM with DONTWAIT, vanished peer) */
    uint64_t dropped[GS_DROP_COUNT]; /* received messages dropped, per reason */
    uint64_t malformed;              /* sum of dropped[] except GS_DROP_WRONG_TYPE */
    uint64_t wrong_type;             /* dropped[GS_DROP_WRONG_TYPE] */
} gs_transport_counters;

/* CURVE keys of one socket (Z85 text, 40 characters each). A socket that binds is a CURVE
 * server: it uses `secret` and names its channel as ZAP domain (stages/runtime/keys runs the
 * handler). A socket that connects is a client: `secret`, `public_key` and the server's public
 * key `server`. Applied to tcp:// endpoints only; ipc:// and inproc:// sockets stay plain. */
typedef struct {
    const char *secret, *public_key, *server;
} gs_curve_keys;

typedef struct {
    int hwm;          /* SNDHWM = RCVHWM; 0 = the channel's default (tiles 8, events 10000,
                         others 1000) */
    const char *name; /* socket name in log lines; NULL = the channel name */
    int quiet;        /* 1: count drops but log nothing (tests that send floods of garbage) */
} gs_transport_options;

/* A ROUTER peer: the routing id ZeroMQ gave it (at most 255 bytes), and on a received
 * message the ZAP User-Id of its connection ("worker:node2"; "" on a plain socket). */
typedef struct {
    uint8_t id[255];
    size_t len;
    char user_id[128];
} gs_peer;

typedef struct gs_transport gs_transport;

/* Creates a socket of `zmq_type` for `channel` in the ZeroMQ context `zctx`, sets the options
 * of PROTOCOL.md §2 and binds or connects it to `endpoint`. The type must be one the channel
 * uses (work: ROUTER/DEALER, tiles: PUSH/PULL, events and intake: PUB/SUB, submit and query:
 * ROUTER/REQ). opt may be NULL. Returns the transport (caller frees with
 * gs_transport_destroy), or NULL with the error (bad type, bad endpoint, address in use). */
gs_transport *gs_transport_new(void *zctx, gs_channel channel, int zmq_type, gs_transport_mode mode,
                               const char *endpoint, const gs_transport_options *opt);

/* gs_transport_new with CURVE on a tcp:// endpoint when curve is not NULL (gs_curve_keys:
 * server when binding, client when connecting; PROTOCOL.md §2 says where plain is allowed).
 * The keys are copied into the socket. */
gs_transport *gs_transport_new_curve(void *zctx, gs_channel channel, int zmq_type,
                                     gs_transport_mode mode, const char *endpoint,
                                     const gs_transport_options *opt, const gs_curve_keys *curve);

/* Closes the socket (linger 1 s) and frees the transport; sets *t to NULL. Accepts NULL. */
void gs_transport_destroy(gs_transport **t);

/* The ZeroMQ socket, for zmq_poll. Owned by the transport. */
void *gs_transport_socket(gs_transport *t);

/* The endpoint actually bound or connected (for "tcp://127.0.0.1:*" the port chosen by the
 * system, e.g. "tcp://127.0.0.1:41234"). Owned by the transport. */
const char *gs_transport_endpoint(const gs_transport *t);

/* Connects the socket to one more endpoint (a SUB to several publishers, a tiler's PUSH to one
 * more tile inbox), or disconnects it from one. Return 0, or -1 with the error. */
int gs_transport_connect(gs_transport *t, const char *endpoint);

/* Like gs_transport_connect, choosing the security of this one connection: a CURVE client with
 * `keys` (own pair and that server's public key) when keys is not NULL and the endpoint is
 * tcp://, else plain. ZeroMQ copies the options into each connection as it is made, so one
 * socket can reach servers of several keys and plain ones: a tiler's PUSH and its inboxes.
 * Returns 0 or -1 with the error. */
int gs_transport_connect_curve(gs_transport *t, const char *endpoint, const gs_curve_keys *keys);

/* 1 when the socket's latest bind or connect used CURVE (a tcp:// endpoint with keys). */
int gs_transport_is_curve(const gs_transport *t);
int gs_transport_disconnect(gs_transport *t, const char *endpoint);

/* SUB only: receive messages whose topic starts with `prefix` ("" = everything). 0 / -1. */
int gs_transport_subscribe(gs_transport *t, const char *prefix);

/* The counters; owned by the transport, updated by every send and receive. */
const gs_transport_counters *gs_transport_counters_get(const gs_transport *t);

/* Send flags. */
enum { GS_SEND_DONTWAIT = 1 };

/* Sends one envelope of the channel's type (`envelope` points at its ProtobufCMessage base;
 * sending another type is a broken invariant). `to` is required on a ROUTER and ignored
 * elsewhere; a PUB's topic frame comes from the event's body (gs_event_topic). Blocks at the
 * high-water mark unless GS_SEND_DONTWAIT. Returns 0, or -1 with errno (EAGAIN at the HWM,
 * EHOSTUNREACH for a vanished ROUTER peer, ETERM, EINTR) and the error message set; nothing
 * was sent then. */
int gs_transport_send(gs_transport *t, const gs_peer *to, const ProtobufCMessage *envelope,
                      int flags);

/* Like gs_transport_send for an envelope already packed into `buf` (len bytes), e.g. by
 * another thread; the caller vouches that the bytes are an envelope of the channel's type.
 * Not for PUB (the topic comes from the unpacked event) nor tiles. Returns 0 or -1 as
 * gs_transport_send. */
int gs_transport_send_packed(gs_transport *t, const gs_peer *to, const void *buf, size_t len,
                             int flags);

/* Called by ZeroMQ (from its I/O thread: must be thread-safe) when it is done with pixels. */
typedef void gs_pixels_free_fn(void *pixels, void *hint);

/* Tiles only (PUSH): sends [TileMessage][pixels]. With free_fn NULL the pixels are copied and
 * stay the caller's. With free_fn, they are handed over without a copy when the send succeeds
 * (free_fn(pixels, hint) runs once ZeroMQ is done); when it fails they stay the caller's.
 * Returns 0, or -1 as gs_transport_send. */
int gs_transport_send_tile(gs_transport *t, const Gastroscreen__V1__TileMessage *message,
                           void *pixels, size_t len, gs_pixels_free_fn *free_fn, void *hint,
                           int flags);

/* One received message. The fields are valid until gs_inbound_release(). */
typedef struct {
    gs_channel channel;
    union {
        ProtobufCMessage *base;
        Gastroscreen__V1__WorkMessage *work;
        Gastroscreen__V1__TileMessage *tile;
        Gastroscreen__V1__EventMessage *event;
        Gastroscreen__V1__SubmitMessage *submit;
        Gastroscreen__V1__QueryMessage *query;
    } msg;                 /* NULL unless GS_RECV_MESSAGE */
    gs_peer from;          /* ROUTER: the sender, also set for a dropped message when the
                              routing frames were intact (from.len > 0), so submit/query
                              can answer a REJECTED / QueryError */
    char topic[256];       /* SUB: the topic frame, NUL-terminated */
    const uint8_t *pixels; /* tiles: the pixel frame, read in place */
    size_t pixels_len;
    gs_drop_reason drop; /* GS_RECV_DROPPED: why */
    /* private */
    zmq_msg_t pixel_frame_;
    int has_pixel_frame_;
} gs_inbound;

typedef enum {
    GS_RECV_ERROR = -1,  /* socket error: errno (EINTR, ETERM) and the error message set */
    GS_RECV_EMPTY = 0,   /* GS_RECV_DONTWAIT and nothing waiting */
    GS_RECV_MESSAGE = 1, /* a valid message in *in */
    GS_RECV_DROPPED = 2, /* a message arrived and was dropped (counted, logged); in->drop */
} gs_recv_status;

enum { GS_RECV_DONTWAIT = 1 };

/* Receives and checks one message into *in (which the caller must release with
 * gs_inbound_release() after every call, whatever the status). Blocks unless
 * GS_RECV_DONTWAIT. Returns a gs_recv_status. */
gs_recv_status gs_transport_recv(gs_transport *t, gs_inbound *in, int flags);

/* Frees the unpacked envelope and closes the pixel frame; leaves *in empty. Safe to call on an
 * inbound that holds nothing, and twice. */
void gs_inbound_release(gs_inbound *in);

/* Writes the topic PROTOCOL.md §3 gives an event ("slide.verdict.positive.", "stats.infer.";
 * the names are proto/vocab's) into buf. Returns 0, or -1 with the error when the event has no
 * body, an enum out of range or buf is too small. */
int gs_event_topic(const Gastroscreen__V1__EventMessage *event, char *buf, size_t n);

#endif
