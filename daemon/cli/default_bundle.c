#include "daemon/cli/default_bundle.h"

#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "ops/error.h"

int gs_default_bundle_find(char *out, size_t len)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    char tried[3][PATH_MAX + 64];
    size_t n_tried = 0;
    if (n > 0) {
        exe[n] = '\0';
        char *dir = dirname(exe);
        snprintf(tried[n_tried++], sizeof tried[0], "%s/../model/default.safetensors", dir);
        snprintf(tried[n_tried++], sizeof tried[0], "%s/../share/gastroscreen/default.safetensors",
                 dir);
    }
    snprintf(tried[n_tried++], sizeof tried[0], "/usr/share/gastroscreen/default.safetensors");
    for (size_t i = 0; i < n_tried; i++) {
        char real[PATH_MAX];
        if (access(tried[i], R_OK) == 0 && realpath(tried[i], real)) {
            snprintf(out, len, "%s", real);
            return 0;
        }
    }
    return gs_error_set("no model bundle: give --model BUNDLE (looked for %s%s%s%s%s)", tried[0],
                        n_tried > 1 ? ", " : "", n_tried > 1 ? tried[1] : "",
                        n_tried > 2 ? ", " : "", n_tried > 2 ? tried[2] : "");
}
