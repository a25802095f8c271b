/*
 * cmd_submit: `gastroscreen submit PATH... [--external-id ID] [--config FILE]
 * [--endpoint submit=URL] [--timeout SECONDS]`, the reliable intake path (PROTOCOL.md §2, §13).
 *
 * Each PATH (made absolute; symlinks resolved when the file exists here) goes to the
 * coordinator's submit socket as a SubmitRequest; the reply is checked (request id echoed,
 * a known status, a well-formed slide id) and one line per path is printed on stdout:
 * "<slide_id> accepted|duplicate <path>". A refused path is reported on stderr with the
 * coordinator's reason. The coordinator journals an accepted slide before it answers, so an
 * "accepted" line means the slide will get a verdict.
 */
#include "daemon/cli/commands.h"

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
    fprintf(f, "usage: gastroscreen submit PATH... [--external-id ID] [--config FILE]\n"
               "                           [--endpoint submit=URL] [--timeout SECONDS]\n"
               "                           [--key FILE] [--coordinator-key FILE]\n"
               "\n"
               "Submits slides to gastroscreend. Prints '<slide_id> accepted|duplicate <path>'\n"
               "per path; a refused path is reported on stderr with the reason. Exit status 1\n"
               "if any path was refused or the coordinator did not answer.\n");
}

/* The path the coordinator should see: resolved when it exists here, else made absolute
 * (the coordinator may see a file system this host does not). */
static int absolute_path(const char *path, char *out, size_t n)
{
    char resolved[PATH_MAX];
    if (realpath(path, resolved)) {
        if (strlen(resolved) >= n)
            return gs_error_set("%s: path too long", path);
        strcpy(out, resolved);
        return 0;
    }
    if (path[0] == '/') {
        if (strlen(path) >= n)
            return gs_error_set("%s: path too long", path);
        strcpy(out, path);
        return 0;
    }
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd))
        return gs_error_set("%s: cannot get the working directory", path);
    int w = snprintf(out, n, "%s/%s", cwd, path);
    if (w < 0 || (size_t)w >= n)
        return gs_error_set("%s: path too long", path);
    return 0;
}

/* Checks a reply against its request. Returns 0, or -1 with the error set. */
static int check_reply(const Gastroscreen__V1__SubmitMessage *m, const char *request_id)
{
    if (m->body_case != GASTROSCREEN__V1__SUBMIT_MESSAGE__BODY_REPLY)
        return gs_error_set("malformed reply: not a SubmitReply");
    const Gastroscreen__V1__SubmitReply *r = m->reply;
    if (strcmp(r->request_id, request_id) != 0)
        return gs_error_set("malformed reply: request id '%.64s', expected '%s'", r->request_id,
                            request_id);
    switch (r->status) {
    case GASTROSCREEN__V1__SUBMIT_STATUS__SUBMIT_STATUS_ACCEPTED:
    case GASTROSCREEN__V1__SUBMIT_STATUS__SUBMIT_STATUS_DUPLICATE:
        if (!gs_slide_id_ok(r->slide_id))
            return gs_error_set("malformed reply: slide id '%.64s' is not 16 hex digits",
                                r->slide_id);
        return 0;
    case GASTROSCREEN__V1__SUBMIT_STATUS__SUBMIT_STATUS_REJECTED:
        return 0;
    default:
        return gs_error_set("malformed reply: status %d", (int)r->status);
    }
}

int gs_cmd_submit(int argc, char **argv)
{
    gs_cli_options o;
    gs_cli_options_init(&o);
    const char *external_id = "";
    const char **paths = calloc((size_t)argc, sizeof *paths);
    size_t n_paths = 0;
    if (!paths) {
        fprintf(stderr, "gastroscreen submit: out of memory\n");
        return 1;
    }
    int status = 2;
    for (int i = 1; i < argc; i++) {
        int r = gs_cli_option(&o, argc, argv, &i);
        if (r < 0) {
            fprintf(stderr, "gastroscreen submit: %s\n", gs_error_get());
            goto free_paths;
        }
        if (r > 0)
            continue;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            status = 0;
            goto free_paths;
        }
        if (!strcmp(argv[i], "--external-id") && i + 1 < argc) {
            external_id = argv[++i];
            continue;
        }
        if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "gastroscreen submit: unknown option '%s'\n", argv[i]);
            usage(stderr);
            goto free_paths;
        }
        paths[n_paths++] = argv[i];
    }
    if (n_paths == 0) {
        usage(stderr);
        goto free_paths;
    }
    if (gs_cli_options_finish(&o) < 0) {
        fprintf(stderr, "gastroscreen submit: %s\n", gs_error_get());
        goto free_paths;
    }

    status = 0;
    void *ctx = zmq_ctx_new();
    gs_transport *req = NULL;
    for (size_t k = 0; k < n_paths; k++) {
        char path[PATH_MAX], request_id[64];
        if (absolute_path(paths[k], path, sizeof path) < 0) {
            fprintf(stderr, "gastroscreen submit: %s\n", gs_error_get());
            status = 1;
            continue;
        }
        snprintf(request_id, sizeof request_id, "submit-%ld-%zu", (long)getpid(), k);
        Gastroscreen__V1__SubmitRequest rq = GASTROSCREEN__V1__SUBMIT_REQUEST__INIT;
        rq.path = path;
        rq.request_id = request_id;
        rq.external_id = (char *)external_id;
        Gastroscreen__V1__SubmitMessage msg = GASTROSCREEN__V1__SUBMIT_MESSAGE__INIT;
        msg.protocol = GASTROSCREEN__V1__PROTOCOL_VERSION__PROTOCOL_VERSION_1;
        msg.body_case = GASTROSCREEN__V1__SUBMIT_MESSAGE__BODY_REQUEST;
        msg.request = &rq;
        gs_inbound in = {0};
        if (gs_cli_request(ctx, GS_CHANNEL_SUBMIT, o.submit, gs_security_curve(&o.sec), &req,
                           &msg.base, &in, o.timeout_ms) < 0) {
            fprintf(stderr, "gastroscreen submit: %s: %s\n", path, gs_error_get());
            status = 1;
            /* A silent coordinator will not answer the next paths either. */
            if (!strstr(gs_error_get(), "malformed")) {
                for (size_t j = k + 1; j < n_paths; j++)
                    fprintf(stderr, "gastroscreen submit: %s: not submitted\n", paths[j]);
                break;
            }
            continue;
        }
        if (check_reply(in.msg.submit, request_id) < 0) {
            fprintf(stderr, "gastroscreen submit: %s: %s\n", path, gs_error_get());
            status = 1;
        } else if (in.msg.submit->reply->status ==
                   GASTROSCREEN__V1__SUBMIT_STATUS__SUBMIT_STATUS_REJECTED) {
            fprintf(stderr, "gastroscreen submit: %s: refused: %s\n", path,
                    *in.msg.submit->reply->error ? in.msg.submit->reply->error
                                                 : "(no reason given)");
            status = 1;
        } else {
            const Gastroscreen__V1__SubmitReply *r = in.msg.submit->reply;
            printf("%s %s %s\n", r->slide_id,
                   r->status == GASTROSCREEN__V1__SUBMIT_STATUS__SUBMIT_STATUS_ACCEPTED
                       ? "accepted"
                       : "duplicate",
                   path);
            fflush(stdout);
        }
        gs_inbound_release(&in);
    }
    gs_transport_destroy(&req);
    zmq_ctx_term(ctx);
free_paths:
    free(paths);
    return status;
}
