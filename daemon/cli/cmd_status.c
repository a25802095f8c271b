/*
 * cmd_status: `gastroscreen status [SLIDE] [--json] [--config FILE] [--endpoint query=URL]
 * [--timeout SECONDS]`, the state of slides as the coordinator's query socket tells it
 * (SlideStateRequest, PROTOCOL.md §11).
 *
 * SLIDE is a slide id (16 hex digits) or a slide path; without it every slide in flight is
 * listed. One line per slide: id, state, attempt, tiles done of planned, the verdict (class
 * and score) once there is one, and the path; for one slide also the verdict's reason,
 * warnings, the methods that judged, each network of the bundle (trained and on what, or
 * untrained), report and model notice. --json prints the same as a JSON array instead.
 */
#include "daemon/cli/commands.h"

#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/cli/client.h"
#include "ops/error.h"
#include "proto/vocab.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: gastroscreen status [SLIDE] [--json] [--config FILE]\n"
               "                           [--endpoint query=URL] [--timeout SECONDS]\n"
               "                           [--key FILE] [--coordinator-key FILE]\n"
               "\n"
               "Shows the state of one slide (SLIDE: slide id or path) or of every slide in\n"
               "flight, as gastroscreend's query socket reports it.\n");
}

/* Checks what the CLI relies on in each SlideStatus. Returns 0 or -1 with the error set. */
static int check_reply(const Gastroscreen__V1__QueryMessage *m)
{
    if (m->body_case == GASTROSCREEN__V1__QUERY_MESSAGE__BODY_ERROR)
        return 0;
    if (m->body_case != GASTROSCREEN__V1__QUERY_MESSAGE__BODY_STATE)
        return gs_error_set("malformed reply: not a SlideStateReply (body %d)", (int)m->body_case);
    for (size_t i = 0; i < m->state->n_slides; i++) {
        const Gastroscreen__V1__SlideStatus *s = m->state->slides[i];
        if (!gs_slide_id_ok(s->slide_id))
            return gs_error_set("malformed reply: slide id '%.64s'", s->slide_id);
        if (s->state < GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_ACCEPTED ||
            s->state > GASTROSCREEN__V1__SLIDE_STATE__SLIDE_STATE_FAILED)
            return gs_error_set("malformed reply: slide %s in state %d", s->slide_id,
                                (int)s->state);
        if (s->verdict &&
            (s->verdict->verdict_class < GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_NEGATIVE ||
             s->verdict->verdict_class > GASTROSCREEN__V1__VERDICT_CLASS__VERDICT_CLASS_FAILED))
            return gs_error_set("malformed reply: slide %s with verdict class %d", s->slide_id,
                                (int)s->verdict->verdict_class);
    }
    return 0;
}

/* name, or "?" for a value this build does not know (check_reply() lets no unknown state or
 * verdict class through; methods are not checked). */
static const char *known(const char *name)
{
    return name ? name : "?";
}

/* A Method's name, or NULL for METHOD_UNSPECIFIED (the stage did not run or its method was not
 * recorded: "-", or null in JSON); "?" for a value this build does not know. */
static const char *method_name(int method)
{
    return method == GASTROSCREEN__V1__METHOD__METHOD_UNSPECIFIED ? NULL
                                                                  : known(gs_method_name(method));
}

static uint32_t tiles_done(const Gastroscreen__V1__TileCounts *t)
{
    return t ? t->inferred + t->background + t->blurry + t->error : 0;
}

static void print_line(const Gastroscreen__V1__SlideStatus *s)
{
    char verdict[64] = "-";
    if (s->verdict)
        snprintf(verdict, sizeof verdict, "%s %.3f",
                 known(gs_verdict_class_name(s->verdict->verdict_class)),
                 (double)s->verdict->score);
    if (*s->duplicate_of)
        snprintf(verdict, sizeof verdict, "dup of %.*s", GS_SLIDE_ID_LEN, s->duplicate_of);
    printf("%-16s  %-12s  %7u  %5u/%-5u  %-22s  %s\n", s->slide_id,
           known(gs_slide_state_name(s->state)), s->attempt, tiles_done(s->tiles),
           s->tiles ? s->tiles->planned : 0, verdict, s->path);
}

static void print_details(const Gastroscreen__V1__SlideStatus *s)
{
    const Gastroscreen__V1__Verdict *v = s->verdict;
    if (!v)
        return;
    if (*v->reason)
        printf("reason: %s\n", v->reason);
    for (size_t i = 0; i < v->n_warnings; i++)
        printf("warning: %s\n", v->warnings[i]);
    const char *fm = method_name(v->foreground_method);
    const char *bm = method_name(v->blur_method);
    printf("methods: tissue plan %s, blur check %s\n", fm ? fm : "-", bm ? bm : "-");
    /* The infer workers' arithmetic; none recorded when no tile was inferred. */
    if (v->model && *v->model->precision)
        printf("precision: %s\n", v->model->precision);
    /* What each of the bundle's networks is: trained (and on what) or not. */
    for (size_t i = 0; v->model && i < v->model->n_networks; i++) {
        const Gastroscreen__V1__NetworkProvenance *n = v->model->networks[i];
        printf("network %s: %s\n", n->network,
               !n->present    ? "absent (untrained)"
               : n->untrained ? "untrained"
                              : n->trained_on);
    }
    if (v->report && *v->report->report_json)
        printf("report: %s\n", v->report->report_json);
    /* The notice is a whole line of its own ("model: untrained — not a diagnosis"). */
    if (v->model && *v->model->notice)
        printf("%s\n", v->model->notice);
    else if (v->model && v->model->untrained)
        printf("model: untrained — not a diagnosis\n");
}

static json_t *status_json(const Gastroscreen__V1__SlideStatus *s)
{
    json_t *o = json_pack("{s:s, s:s, s:i, s:s, s:I}", "slide_id", s->slide_id, "state",
                          known(gs_slide_state_name(s->state)), "attempt", (int)s->attempt, "path",
                          s->path, "accepted_unix_ms", (json_int_t)s->accepted_unix_ms);
    if (!o)
        return NULL;
    if (s->tiles)
        json_object_set_new(o, "tiles",
                            json_pack("{s:i, s:i, s:i, s:i, s:i}", "planned",
                                      (int)s->tiles->planned, "inferred", (int)s->tiles->inferred,
                                      "background", (int)s->tiles->background, "blurry",
                                      (int)s->tiles->blurry, "error", (int)s->tiles->error));
    if (*s->duplicate_of)
        json_object_set_new(o, "duplicate_of", json_string(s->duplicate_of));
    if (s->verdict) {
        const Gastroscreen__V1__Verdict *v = s->verdict;
        json_t *vj = json_pack(
            "{s:s, s:f, s:f, s:s}", "class", known(gs_verdict_class_name(v->verdict_class)),
            "score", (double)v->score, "threshold", (double)v->threshold, "reason", v->reason);
        if (vj) {
            json_t *w = json_array();
            for (size_t i = 0; i < v->n_warnings; i++)
                json_array_append_new(w, json_string(v->warnings[i]));
            json_object_set_new(vj, "warnings", w);
            if (v->model)
                json_object_set_new(vj, "untrained", json_boolean(v->model->untrained));
            /* null: no tile inferred, or a verdict of a build that did not record it (fp32) */
            json_object_set_new(vj, "precision",
                                v->model && *v->model->precision ? json_string(v->model->precision)
                                                                 : json_null());
            const char *fm = method_name(v->foreground_method);
            const char *bm = method_name(v->blur_method);
            json_object_set_new(vj, "methods",
                                json_pack("{s:o, s:o}", "foreground",
                                          fm ? json_string(fm) : json_null(), "blur",
                                          bm ? json_string(bm) : json_null()));
            if (v->report && *v->report->report_json)
                json_object_set_new(vj, "report_json", json_string(v->report->report_json));
            json_t *nets = json_array();
            for (size_t i = 0; nets && v->model && i < v->model->n_networks; i++) {
                const Gastroscreen__V1__NetworkProvenance *n = v->model->networks[i];
                json_array_append_new(nets, json_pack("{s:s, s:b, s:b, s:s}", "network", n->network,
                                                      "present", n->present, "untrained",
                                                      n->untrained, "trained_on", n->trained_on));
            }
            json_object_set_new(vj, "networks", nets);
        }
        json_object_set_new(o, "verdict", vj);
    }
    return o;
}

int gs_cmd_status(int argc, char **argv)
{
    gs_cli_options o;
    gs_cli_options_init(&o);
    const char *slide = NULL;
    int as_json = 0;
    for (int i = 1; i < argc; i++) {
        int r = gs_cli_option(&o, argc, argv, &i);
        if (r < 0) {
            fprintf(stderr, "gastroscreen status: %s\n", gs_error_get());
            return 2;
        }
        if (r > 0)
            continue;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--json")) {
            as_json = 1;
        } else if (argv[i][0] == '-' || slide) {
            fprintf(stderr, "gastroscreen status: unexpected argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        } else {
            slide = argv[i];
        }
    }
    if (gs_cli_options_finish(&o) < 0) {
        fprintf(stderr, "gastroscreen status: %s\n", gs_error_get());
        return 2;
    }

    char path[PATH_MAX] = "";
    Gastroscreen__V1__SlideStateRequest rq = GASTROSCREEN__V1__SLIDE_STATE_REQUEST__INIT;
    if (!slide) {
        rq.in_flight = 1;
    } else if (gs_slide_id_ok(slide)) {
        rq.slide_id = (char *)slide;
    } else {
        if (!realpath(slide, path)) {
            if (slide[0] == '/' || !getcwd(path, sizeof path))
                snprintf(path, sizeof path, "%s", slide);
            else if (strlen(path) + strlen(slide) + 2 < sizeof path)
                strcat(strcat(path, "/"), slide);
        }
        rq.path = path;
    }
    Gastroscreen__V1__QueryMessage msg = GASTROSCREEN__V1__QUERY_MESSAGE__INIT;
    msg.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
    msg.body_case = GASTROSCREEN__V1__QUERY_MESSAGE__BODY_SLIDE_STATE;
    msg.slide_state = &rq;

    int status = 1;
    void *ctx = zmq_ctx_new();
    gs_transport *req = NULL;
    gs_inbound in = {0};
    if (gs_cli_request(ctx, GS_CHANNEL_QUERY, o.query, gs_security_curve(&o.sec), &req, &msg.base,
                       &in, o.timeout_ms) < 0) {
        fprintf(stderr, "gastroscreen status: %s\n", gs_error_get());
        goto close_socket;
    }
    if (check_reply(in.msg.query) < 0) {
        fprintf(stderr, "gastroscreen status: %s\n", gs_error_get());
        goto release_reply;
    }
    if (in.msg.query->body_case == GASTROSCREEN__V1__QUERY_MESSAGE__BODY_ERROR) {
        fprintf(stderr, "gastroscreen status: the coordinator says: %s\n",
                in.msg.query->error->error);
        goto release_reply;
    }
    const Gastroscreen__V1__SlideStateReply *reply = in.msg.query->state;
    if (slide && reply->n_slides == 0) {
        fprintf(stderr, "gastroscreen status: %s: unknown slide\n", slide);
        goto release_reply;
    }
    if (as_json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < reply->n_slides; i++)
            json_array_append_new(arr, status_json(reply->slides[i]));
        json_dumpf(arr, stdout, JSON_INDENT(2));
        printf("\n");
        json_decref(arr);
    } else {
        if (reply->n_slides == 0)
            printf("no slides in flight\n");
        else
            printf("%-16s  %-12s  %7s  %11s  %-22s  %s\n", "SLIDE", "STATE", "ATTEMPT", "TILES",
                   "VERDICT", "PATH");
        for (size_t i = 0; i < reply->n_slides; i++)
            print_line(reply->slides[i]);
        if (slide)
            for (size_t i = 0; i < reply->n_slides; i++)
                print_details(reply->slides[i]);
    }
    status = 0;
release_reply:
    gs_inbound_release(&in);
close_socket:
    gs_transport_destroy(&req);
    zmq_ctx_term(ctx);
    return status;
}
