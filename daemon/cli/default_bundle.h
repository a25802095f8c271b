/*
 * default_bundle: where the `gastroscreen` commands find the model bundle the build or the
 * install provides when none is named.
 *
 * The lookup order is the first readable file of <exe>/../model/default.safetensors (the
 * build tree: made by the default build, model/bundle.cmake),
 * <exe>/../share/gastroscreen/default.safetensors (an install under a prefix) and
 * /usr/share/gastroscreen/default.safetensors, where <exe> is the folder of the running
 * executable. `screen` consults it after --model and the config's [model] bundle; `bench`
 * after --model.
 *
 *     char path[PATH_MAX];
 *     if (gs_default_bundle_find(path, sizeof path) != 0)
 *         fprintf(stderr, "%s\n", gs_error_get());
 */
#ifndef GS_DAEMON_CLI_DEFAULT_BUNDLE_H
#define GS_DAEMON_CLI_DEFAULT_BUNDLE_H

#include <stddef.h>

/* Writes the real path of the first default bundle that exists into out (len bytes).
 * Returns 0, or -1 with the error naming every place looked at. */
int gs_default_bundle_find(char *out, size_t len);

#endif
