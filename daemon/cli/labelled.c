#include "daemon/cli/labelled.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ops/error.h"

void gs_labelled_free(gs_labelled *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->rows[i].reason);
        free(l->rows[i].report);
    }
    free(l->rows);
    gs_labels_free(&l->in);
    memset(l, 0, sizeof *l);
}

int gs_labelled_read(const char *path, const char *ann_dir, gs_labelled *out)
{
    memset(out, 0, sizeof *out);
    if (gs_labels_read(path, ann_dir, &out->in) != 0)
        return -1;
    if (!(out->rows = calloc(out->in.n, sizeof *out->rows))) {
        gs_labels_free(&out->in);
        return gs_error_set("out of memory");
    }
    out->n = out->in.n;
    for (size_t i = 0; i < out->n; i++) {
        const gs_label *g = &out->in.rows[i];
        out->rows[i] = (gs_labelled_slide){.slide = g->slide,
                                           .patient = g->patient,
                                           .annotation = g->annotation,
                                           .positive = g->positive};
    }
    return 0;
}

int gs_labelled_screen(const gs_labelled *l, const char *out, const char *model, const char *config,
                       const char *features_dir)
{
    char reports[PATH_MAX], log[PATH_MAX];
    snprintf(reports, sizeof reports, "%s/reports", out);
    snprintf(log, sizeof log, "%s/screen.log", out);
    size_t argc = 0;
    char **argv = calloc(l->n + 11, sizeof *argv);
    if (!argv)
        return gs_error_set("out of memory");
    argv[argc++] = "gastroscreen";
    argv[argc++] = "screen";
    for (size_t i = 0; i < l->n; i++)
        argv[argc++] = (char *)l->rows[i].slide;
    argv[argc++] = "--out";
    argv[argc++] = reports;
    if (model) {
        argv[argc++] = "--model";
        argv[argc++] = (char *)model;
    }
    if (config) {
        argv[argc++] = "--config";
        argv[argc++] = (char *)config;
    }
    if (features_dir) {
        argv[argc++] = "--features-dir";
        argv[argc++] = (char *)features_dir;
    }
    int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        free(argv);
        return gs_error_set("%s: %s", log, strerror(errno));
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fd, STDOUT_FILENO);
        execv("/proc/self/exe", argv);
        fprintf(stderr, "gastroscreen: cannot run screen: %s\n", strerror(errno));
        _exit(127);
    }
    close(fd);
    free(argv);
    if (pid < 0)
        return gs_error_set("fork: %s", strerror(errno));
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return gs_error_set("waitpid: %s", strerror(errno));
    /* 1 = some slide failed or was not screened: its row says so. */
    if (!WIFEXITED(st) || (WEXITSTATUS(st) != 0 && WEXITSTATUS(st) != 1))
        return gs_error_set("screen stopped (status %d); its lines are in %s", st, log);
    return 0;
}

/* Fills the rows whose slide this report.json is about (the newest report wins). */
static void take_report(gs_labelled *l, const char *path)
{
    json_error_t je;
    json_t *r = json_load_file(path, 0, &je);
    if (!r) {
        fprintf(stderr, "gastroscreen: skipping %s: %s\n", path, je.text);
        return;
    }
    const char *slide = json_string_value(json_object_get(json_object_get(r, "slide"), "path"));
    const char *verdict = json_string_value(json_object_get(r, "verdict"));
    char real[PATH_MAX];
    if (slide && realpath(slide, real))
        slide = real;
    for (size_t i = 0; slide && verdict && i < l->n; i++) {
        gs_labelled_slide *w = &l->rows[i];
        int64_t decided = json_integer_value(json_object_get(r, "decided_unix_ms"));
        if (strcmp(w->slide, slide) || (w->verdict[0] && decided < w->decided))
            continue;
        char *reason = strdup(json_string_value(json_object_get(r, "reason")) ?: "");
        char *report = strdup(path);
        if (!reason || !report) {
            free(reason);
            free(report);
            continue;
        }
        free(w->reason);
        free(w->report);
        w->reason = reason;
        w->report = report;
        snprintf(w->verdict, sizeof w->verdict, "%s", verdict);
        snprintf(w->slide_id, sizeof w->slide_id, "%s",
                 json_string_value(json_object_get(json_object_get(r, "slide"), "id")) ?: "");
        w->score = json_number_value(json_object_get(r, "score"));
        w->threshold = json_number_value(json_object_get(r, "threshold"));
        w->decided = decided;
    }
    json_decref(r);
}

int gs_labelled_read_reports(gs_labelled *l, const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return gs_error_set("%s: %s", dir, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char p[PATH_MAX];
        int k = snprintf(p, sizeof p, "%s/%s/report.json", dir, e->d_name);
        if (k > 0 && (size_t)k < sizeof p && access(p, R_OK) == 0)
            take_report(l, p);
    }
    closedir(d);
    return 0;
}
