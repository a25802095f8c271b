/*
 * coordinator_world: the harness test_coordinator drives the coordinator with: a coordinator
 * over inproc:// in a scratch folder, fake workers (stages/runtime/transport DEALERs) that
 * answer each job the way the test's behaviour flags say, a subscriber on the events socket,
 * and a test clock, so liveness, loss grace and deadlines are reached by advancing the clock,
 * never by sleeping.
 *
 *     world w;
 *     world_init(&w);  ... set behaviour flags ...
 *     start_with_workers(&w);
 *     submit(&w, w.slide, id, NULL);
 *     assert_int_equal(run_until(&w, is_terminal, id), 0);
 *     world_stop(&w); world_free(&w);
 */
#ifndef GS_TESTS_UNIT_COORDINATOR_WORLD_H
#define GS_TESTS_UNIT_COORDINATOR_WORLD_H

#include <limits.h>
#include <stdint.h>

#include "daemon/service/config.h"
#include "daemon/service/coordinator.h"
#include "daemon/service/metrics.h"
#include "daemon/service/slide_table.h"
#include "proto/gastroscreen.pb-c.h"
#include "stages/runtime/transport.h"

#define N_TILES 40 /* every 10th is background: 36 to infer */
#define N_INFER 36
#define MAX_FAKES 12

typedef struct {
    gs_transport *t;
    int stage;
    char id[64];
    char inbox[64];
    int welcomed, refused;
    int dead;           /* sends nothing, answers nothing; tiles routed to it vanish */
    uint32_t tiles_got; /* tiles routed to it as a sink */
    int64_t last_hb;
} fake;

typedef struct {
    char dir[256], slide[PATH_MAX], conf[PATH_MAX];
    void *ctx;
    gs_config *cfg;
    gs_coordinator *c;
    int gen;
    int64_t now;
    fake f[MAX_FAKES];
    size_t nf;
    gs_transport *sub;
    /* behaviour */
    int all_blurry, duplicate_results, stale_results;
    int plan_error;    /* the foreground answers every plan with an error */
    int goodbye_plans; /* the next foreground given a plan hands it back and leaves */
    int swallow_plans; /* a foreground given a plan vanishes with it (a crash) */
    int watch;         /* the config has a watched folder */
    int hang_plans;    /* a foreground given a plan keeps heartbeating and never answers */
    int infer_budget;  /* >= 0: infer results answered before the sinks go quiet; -1 = all */
    float screen_score;
    int blur_method; /* Method the fake blur workers name (classical by default) */
    /* The precision infer workers added from now on name in their hello (NULL: none) */
    const char *infer_precision;
    char report_precision[32];  /* model.precision in the last ReportJob's verdict */
    char verdict_precision[32]; /* model.precision in the last published verdict */
    /* > 0: the fake infer workers answer BLURRY for tiles whose index is a multiple of it */
    int infer_blurry_mod;
    int infer_judge_focus; /* the last InferJob asked to judge focus */
    /* the focus rules handed to the coordinator at start (NULL: none, it resolves its own) */
    const gs_decision *decision;
    /* sparse_tissue of the last BlurJob / InferJob */
    float blur_job_sparse, infer_job_sparse;
    /* the sparse-tissue rule in the last ReportJob's verdict */
    float report_sparse, report_sparse_classical;
    char report_sparse_source[16];
    int hold_screen;       /* the screener keeps its ScreenTask unanswered: */
    uint64_t held_job;     /*   its job id, */
    uint32_t held_attempt; /*   attempt */
    fake *held_by;         /*   and the fake holding it */
    size_t report_n_warnings;
    char report_warning[256];     /* the last ReportJob verdict's first warning */
    uint32_t report_blurry_tiles; /* BLURRY tiles in the last ReportJob */
    /* observations */
    uint32_t infer_tile_jobs, blur_tile_jobs, infer_results;
    uint32_t screen_k;
    int screen_sorted;
    int report_class;
    uint32_t report_blur_judged;
    int report_fg_method, report_blur_method;   /* Method in the last ReportJob's verdict */
    int verdict_fg_method, verdict_blur_method; /* Method in the last published verdict */
    int report_heat_ok; /* every INFERRED tile of the last report job had its own heatmap */
    int verdict_events, accepted_events;
    char verdict_topic[256];
    uint32_t rr;
    /* the SlideIdentity of the last PlanJob and TileJob (0 / "" when absent) */
    uint64_t plan_inode, tile_inode;
    int64_t plan_size;
    char plan_quickhash[64], tile_quickhash[64];
} world;

/* A condition run_until() waits for. */
typedef int predicate(world *w, const char *id);

/* world_init makes the scratch folder and a slide file; world_start writes the config and starts
 * the coordinator (again after world_stop: a restart over the same folder); world_free stops
 * and removes the folder. */
void world_start(world *w);
void world_stop(world *w);
void world_init(world *w);
void world_free(world *w);
/* Adds a fake worker of a stage (connects and says hello with that model sha256; "" = a hello
 * without a model), under a worker id of its own or (fake_add_as) the id given. */
fake *fake_add(world *w, int stage, const char *sha256);
fake *fake_add_as(world *w, int stage, const char *sha256, const char *id);
/* Sends a work message from the fake's DEALER (the protocol version is filled in). */
void fake_send(fake *f, Gastroscreen__V1__WorkMessage *m);
/* One round: the coordinator steps, every fake answers what it got. Returns messages handled. */
int pump(world *w);
/* Pumps until pred holds; when nothing moves, the test clock advances half a second. */
int run_until(world *w, predicate *pred, const char *id);
/* Predicates: the slide is DONE or FAILED; the fake worker id was welcomed; a verdict event
 * for the slide was received. */
int is_terminal(world *w, const char *id);
int welcomed(world *w, const char *id);
int has_verdict_event(world *w, const char *id);
gs_slide_info slide_info(world *w, const char *id);
/* Submits a path over the submit socket (REQ) and returns the reply's status. */
int submit(world *w, const char *path, char id[GS_SLIDE_ID_LEN + 1], uint64_t *seq);
/* One query over a REQ; the reply is returned unpacked (caller frees). */
Gastroscreen__V1__QueryMessage *query(world *w, Gastroscreen__V1__QueryMessage *m);
Gastroscreen__V1__QueryMessage *events_since(world *w, uint64_t after, uint32_t max);
/* Verdict events of slide id in the journal (via the query socket). */
int journal_verdicts(world *w, const char *id);
/* Starts the coordinator with one fake worker of every stage, all welcomed. */
void start_with_workers(world *w);
/* Observations in a histogram of the stats (n_bounds + 1 buckets). */
uint64_t hist_count(const gs_metrics_hist *h, size_t n_bounds);

#endif
