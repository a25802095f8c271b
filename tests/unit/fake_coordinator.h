/*
 * fake_coordinator: what the worker tests share: a fake coordinator (a ROUTER in the test
 * thread, over inproc:// or tcp loopback) that expects, sends and answers the work protocol
 * (hello / welcome / ready, jobs), test handlers, and a real gs_worker started in a thread of
 * its own. Every wait is a generous upper bound (WAIT_MS) against hangs, never a timing
 * assertion.
 */
#ifndef GS_TESTS_UNIT_FAKE_COORDINATOR_H
#define GS_TESTS_UNIT_FAKE_COORDINATOR_H

#include <signal.h>
#include <stdint.h>

#include "stages/runtime/transport.h"
#include "stages/runtime/worker.h"

#define WAIT_MS 15000

typedef struct {
    void *ctx;
    gs_transport *router;
    gs_peer peer;
    int heartbeats;
    uint64_t last_progress;
    uint64_t last_malformed, last_wrong_type, last_processed;
    size_t last_in_hand;
    uint64_t last_in_hand_job;
    char id[64]; /* coordinator_id once welcomed: then it heartbeats like a real one */
    int silent;  /* 1: never heartbeat (the worker must notice the silence) */
    int64_t next_beat_ms;
} coord;

typedef struct {
    gs_worker *w;
    int rc;
    char error[512];
} runner;

extern const gs_transport_options fake_quiet;
extern int omp_seen;
extern volatile sig_atomic_t stop_flag;

int64_t ms_now(void);
void coord_open(coord *c, const char *ep);
void coord_close(coord *c);
/* Receives until a message with `body` arrives (heartbeats are noted on the way); the caller
 * releases *in. Fails the test after WAIT_MS. */
const Gastroscreen__V1__WorkMessage *coord_expect(coord *c, int body, gs_inbound *in);
void coord_send(coord *c, Gastroscreen__V1__WorkMessage *m);
void coord_welcome(coord *c, int accepted, const char *reason, const char *id, int hb_ms,
                   int liveness);
void coord_plan_job(coord *c, const char *slide_id, uint64_t job_id);
/* Hello -> welcome -> ready; returns the free slots announced. */
uint32_t coord_handshake_stage(coord *c, const char *id, int hb_ms, int liveness,
                               Gastroscreen__V1__Stage stage);
uint32_t coord_handshake(coord *c, const char *id, int hb_ms, int liveness);
int echo_handler(gs_worker_job *job, void *ud);
int omp_handler(gs_worker_job *job, void *ud);
void *read_omp_default(void *p);
/* Works until told to stop, then hands back three "tiles". */
int slow_handler(gs_worker_job *job, void *ud);
void *run_worker(void *p);
gs_worker *start_stage_worker(const char *ep, void *ctx, Gastroscreen__V1__Stage stage,
                              gs_worker_handler *h, void *ud, int threads, runner *r,
                              pthread_t *th);
gs_worker *start_worker(const char *ep, void *ctx, gs_worker_handler *h, int threads, runner *r,
                        pthread_t *th);

#endif
