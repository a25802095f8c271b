/*
 * Fuzz target for the coordinator as its peers see it: a real gs_coordinator (inproc://
 * endpoints, a journal and spool in the scratch folder, a test clock) gets the input's
 * operations (tests/fuzz/coordinator_ops.h) as messages on its work, submit, query and intake
 * sockets, so that the transport's checks, the hello / ready / heartbeat / goodbye handling,
 * every result handler, submits, queries and announcements all meet hostile contents. Whatever
 * arrives, every step must return 0 (no input may stop the service), and ASan / UBSan / LSan
 * must stay quiet.
 *
 * Each input gets a fresh coordinator (new folder, a slide submitted, job ids from 1), so a
 * crash reproduces from its input alone. The harness's peers drain whatever the coordinator
 * answers, so no queue fills.
 *
 * Built with -fsanitize=fuzzer when GS_FUZZ is on; otherwise linked with tests/fuzz/
 * standalone_main.c, which replays the seed corpus once in every build.
 */
#include "daemon/service/config.h"
#include "daemon/service/coordinator.h"
#include "daemon/service/slide_table.h"
#include "ops/error.h"
#include "tests/fuzz/coordinator_ops.h"
#include "tests/fuzz/fuzz_util.h"

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define PEERS 8
/* Operations per input: keeps one execution short whatever its length. */
#define MAX_OPS 256

typedef struct {
    void *ctx;
    int gen;
    char dir[PATH_MAX];
    int64_t now;
    gs_config *cfg;
    gs_coordinator *c;
    char slide_id[GS_SLIDE_ID_LEN + 1];
    void *peer[PEERS]; /* work DEALERs, connected on first use */
    void *submit, *query, *intake;
} harness;

static harness H;

static int64_t test_clock(void *ud)
{
    return ((harness *)ud)->now;
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void *new_socket(int type, const char *endpoint)
{
    void *s = zmq_socket(H.ctx, type);
    GS_ASSERT(s);
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    int rc;
    /* libFuzzer's timer signal (-timeout) can interrupt a connect: retry, as a caller would. */
    while ((rc = zmq_connect(s, endpoint)) != 0 && errno == EINTR)
        ;
    GS_ASSERT(rc == 0);
    return s;
}

static void write_config(const char *path)
{
    FILE *f = fopen(path, "w");
    GS_ASSERT(f);
    const char *names[] = {"intake", "submit", "query", "events", "work"};
    fprintf(f, "[coordinator]\n");
    for (int i = 0; i < 5; i++)
        fprintf(f, "%s = inproc://fuzz%d-%d-%s\n", names[i], (int)getpid(), H.gen, names[i]);
    fprintf(f, "journal_dir = %s/journal\nspool_dir = %s/spool\nmetrics =\n", H.dir, H.dir);
    /* Short flows: two sample tiles judge the blur check, a few tiles per job. */
    fprintf(f, "tiles_per_job = 4\n");
    fprintf(f, "[intake]\nslide_roots = %s/slides\n", H.dir);
    fprintf(f, "[blur]\nblur_sample = 2\nblur_min_valid = 1\n");
    fprintf(f, "[reporter]\nreport_dir = %s/reports\n", H.dir);
    fprintf(f, "[infer]\nheatmap_size = 4\n");
    GS_ASSERT(fclose(f) == 0);
}

/* Builds the coordinator of one input; 0, or -1 when a bind was interrupted by a signal
 * (libFuzzer's timer), after undoing what it did. */
static int try_start(void)
{
    H.gen++;
    snprintf(H.dir, sizeof H.dir, "%s/run%d", fuzz_scratch(), H.gen);
    GS_ASSERT(mkdir(H.dir, 0700) == 0);
    char p[PATH_MAX + 64];
    snprintf(p, sizeof p, "%s/slides", H.dir);
    GS_ASSERT(mkdir(p, 0700) == 0);
    snprintf(p, sizeof p, "%s/slides/" COP_OTHER_NAME, H.dir);
    FILE *f = fopen(p, "w");
    GS_ASSERT(f && fputs("another slide, for submits and announcements\n", f) >= 0);
    GS_ASSERT(fclose(f) == 0);
    snprintf(p, sizeof p, "%s/slides/" COP_SLIDE_NAME, H.dir);
    f = fopen(p, "w");
    GS_ASSERT(f && fputs("not a slide: the coordinator never opens it\n", f) >= 0);
    GS_ASSERT(fclose(f) == 0);
    char conf[PATH_MAX + 64];
    snprintf(conf, sizeof conf, "%s/gastroscreen.conf", H.dir);
    write_config(conf);
    H.cfg = gs_config_new();
    GS_ASSERT(H.cfg && gs_config_load(H.cfg, conf) == 0);
    gs_coordinator_options o;
    gs_coordinator_options_default(&o);
    o.config = H.cfg;
    o.zmq_ctx = H.ctx;
    o.clock_ms = test_clock;
    o.clock_ud = &H;
    o.quiet = 1;
    Gastroscreen__V1__ModelProvenance mp = GASTROSCREEN__V1__MODEL_PROVENANCE__INIT;
    mp.bundle = "fuzz.safetensors";
    mp.sha256 = COP_MODEL_SHA;
    mp.untrained = 1;
    o.model = &mp;
    H.now = 1000000;
    H.c = gs_coordinator_new(&o);
    if (!H.c) {
        if (strstr(gs_error_get(), zmq_strerror(EINTR))) {
            gs_config_destroy(&H.cfg);
            nftw(H.dir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
            return -1;
        }
        fprintf(stderr, "fuzz_coordinator: %s\n", gs_error_get());
        abort();
    }
    GS_ASSERT(gs_coordinator_intake(H.c, p, GS_INTAKE_SUBMIT, NULL, H.slide_id, NULL) == 0);
    H.submit = new_socket(ZMQ_DEALER, gs_coordinator_endpoint(H.c, GS_CHANNEL_SUBMIT));
    H.query = new_socket(ZMQ_DEALER, gs_coordinator_endpoint(H.c, GS_CHANNEL_QUERY));
    H.intake = new_socket(ZMQ_PUB, gs_coordinator_endpoint(H.c, GS_CHANNEL_INTAKE));
    /* Let the coordinator's SUB attach the publisher and send it the subscription. */
    GS_ASSERT(gs_coordinator_step(H.c, 0) == 0);
    GS_ASSERT(gs_coordinator_step(H.c, 0) == 0);
    return 0;
}

static void start(void)
{
    if (!H.ctx) {
        H.ctx = zmq_ctx_new();
        GS_ASSERT(H.ctx);
    }
    for (int i = 0; i < 100; i++)
        if (try_start() == 0)
            return;
    fprintf(stderr, "fuzz_coordinator: binding interrupted 100 times\n");
    abort();
}

static void stop(void)
{
    for (int i = 0; i < PEERS; i++)
        if (H.peer[i]) {
            zmq_close(H.peer[i]);
            H.peer[i] = NULL;
        }
    zmq_close(H.submit);
    zmq_close(H.query);
    zmq_close(H.intake);
    gs_coordinator_destroy(&H.c);
    gs_config_destroy(&H.cfg);
    nftw(H.dir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Reads and drops whatever is waiting on s (answers, jobs, heartbeats). */
static void drain(void *s)
{
    if (!s)
        return;
    zmq_msg_t m;
    zmq_msg_init(&m);
    while (zmq_msg_recv(&m, s, ZMQ_DONTWAIT) >= 0)
        ;
    zmq_msg_close(&m);
}

static void pump(void)
{
    for (int i = 0; i < 2; i++) {
        if (gs_coordinator_step(H.c, 0) != 0) {
            fprintf(stderr, "fuzz_coordinator: step failed: %s\n", gs_error_get());
            abort();
        }
        for (int p = 0; p < PEERS; p++)
            drain(H.peer[p]);
        drain(H.submit);
        drain(H.query);
    }
}

static void *work_peer(int i)
{
    if (!H.peer[i]) {
        H.peer[i] = new_socket(ZMQ_DEALER, gs_coordinator_endpoint(H.c, GS_CHANNEL_WORK));
        /* A routing id of the harness's choosing, so the same input gives the same peers. */
        char id[16];
        int n = snprintf(id, sizeof id, "peer%d", i);
        zmq_setsockopt(H.peer[i], ZMQ_ROUTING_ID, id, (size_t)n);
    }
    return H.peer[i];
}

static void send_frames(void *s, const void *a, size_t na, const void *b, size_t nb, int two)
{
    if (two) {
        zmq_send(s, a, na, ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_send(s, b, nb, ZMQ_DONTWAIT);
    } else
        zmq_send(s, b, nb, ZMQ_DONTWAIT);
}

/* A path starting with COP_ROOT names a file under the harness's slide root: returns it made
 * absolute (the folder's name is random; caller frees), or NULL for any other path. */
static char *rooted(const char *path)
{
    if (!path || strncmp(path, COP_ROOT, strlen(COP_ROOT)) != 0)
        return NULL;
    size_t len = strlen(H.dir) + strlen(path) + 16;
    char *out = malloc(len);
    GS_ASSERT(out);
    snprintf(out, len, "%s/slides/%s", H.dir, path + strlen(COP_ROOT));
    return out;
}

/* Sends a submit or intake payload, repacked when it names a path under COP_ROOT. */
static void send_with_root(void *s, const char *first, size_t nfirst, uint8_t *p, size_t n,
                           int submit)
{
    uint8_t *out = NULL;
    size_t out_len = 0;
    char **field = NULL;
    ProtobufCMessage *m;
    if (submit) {
        Gastroscreen__V1__SubmitMessage *sm = gastroscreen__v1__submit_message__unpack(NULL, n, p);
        m = sm ? &sm->base : NULL;
        if (sm && sm->body_case == GASTROSCREEN__V1__SUBMIT_MESSAGE__BODY_REQUEST && sm->request)
            field = &sm->request->path;
    } else {
        Gastroscreen__V1__EventMessage *em = gastroscreen__v1__event_message__unpack(NULL, n, p);
        m = em ? &em->base : NULL;
        if (em && em->body_case == GASTROSCREEN__V1__EVENT_MESSAGE__BODY_ARRIVED && em->arrived)
            field = &em->arrived->path;
    }
    char *abs = field ? rooted(*field) : NULL;
    if (abs) {
        char *orig = *field;
        *field = abs;
        out = malloc(protobuf_c_message_get_packed_size(m));
        GS_ASSERT(out);
        out_len = protobuf_c_message_pack(m, out);
        *field = orig; /* the unpacker's string, freed with the message */
        free(abs);
    }
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
    send_frames(s, first, nfirst, out ? out : p, out ? out_len : n, 1);
    free(out);
}

static void run_op(uint8_t op, uint8_t *p, size_t n)
{
    /* Name the harness's slide wherever the seed names the placeholder. */
    for (size_t i = 0; i + GS_SLIDE_ID_LEN <= n; i++)
        if (memcmp(p + i, COP_SLIDE_ID, GS_SLIDE_ID_LEN) == 0)
            memcpy(p + i, H.slide_id, GS_SLIDE_ID_LEN);
    int peer = (op >> 3) & 7;
    switch (op & 7) {
    case COP_WORK:
        send_frames(work_peer(peer), NULL, 0, p, n, 0);
        break;
    case COP_SUBMIT:
        send_with_root(H.submit, "", 0, p, n, 1);
        break;
    case COP_QUERY:
        send_frames(H.query, "", 0, p, n, 1);
        break;
    case COP_INTAKE:
        send_with_root(H.intake, "slide.arrived.", 14, p, n, 0);
        break;
    case COP_SPLIT: {
        size_t cut = n ? p[0] % (n + 1) : 0;
        send_frames(work_peer(peer), p, cut, p + cut, n - cut, 1);
        break;
    }
    default: {
        size_t t = 0;
        while (t < n && p[t])
            t++;
        size_t rest = t < n ? t + 1 : n;
        send_frames(H.intake, p, t, p + rest, n - rest, 1);
        break;
    }
    }
    pump();
}

/* How far the input drove the harness's slide (for checking what a seed reaches). */
static void report(void)
{
    gs_coordinator_stats st;
    gs_coordinator_stats_get(H.c, &st);
    gs_slide_info info;
    const gs_slides *t = gs_coordinator_slides(H.c);
    for (size_t i = 0; i < gs_slides_count(t); i++)
        if (gs_slides_at(t, i, &info) == 0)
            fprintf(stderr, "slide %s state %d attempt %u verdict %d reason '%s'\n", info.slide_id,
                    (int)info.state, info.attempt, (int)info.verdict, info.reason);
    fprintf(stderr,
            "welcomed %llu refused %llu jobs %llu recorded %llu stale %llu dup %llu "
            "malformed work %llu wrong-type work %llu\n",
            (unsigned long long)st.workers_welcomed, (unsigned long long)st.workers_refused,
            (unsigned long long)st.jobs_sent, (unsigned long long)st.tiles_recorded,
            (unsigned long long)st.stale, (unsigned long long)st.duplicates,
            (unsigned long long)st.malformed[GS_COORD_SOCKET_WORK],
            (unsigned long long)st.wrong_type[GS_COORD_SOCKET_WORK]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    start();
    uint8_t *buf = malloc(size ? size : 1);
    GS_ASSERT(buf);
    memcpy(buf, data, size);
    size_t at = 0;
    for (int ops = 0; ops < MAX_OPS && at + 3 <= size; ops++) {
        uint8_t op = buf[at];
        size_t len = (size_t)buf[at + 1] | (size_t)buf[at + 2] << 8;
        at += 3;
        if ((op & 7) == COP_CLOCK) {
            H.now += (int64_t)len * 10;
            pump();
            continue;
        }
        if (len > size - at)
            len = size - at;
        run_op(op, buf + at, len);
        at += len;
    }
    free(buf);
    /* Let time pass: deadlines and liveness run over whatever state the input left. */
    H.now += 600000;
    pump();
    if (getenv("FUZZ_COORDINATOR_VERBOSE"))
        report();
    stop();
    return 0;
}
