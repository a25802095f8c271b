#include "stages/runtime/npy.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/error.h"
#include "stages/runtime/fileio.h"

int gs_npy_write(const char *path, const char *descr, const void *data, size_t elem, int ndim,
                 const long *shape)
{
    if (ndim < 1 || ndim > 8 || !descr || strlen(descr) > 16)
        return gs_error_set("%s: an .npy of %d dimensions or dtype %s", path, ndim,
                            descr ? descr : "(none)");
    char shp[256] = "", dict[384];
    size_t count = 1;
    int off = 0;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return gs_error_set("%s: negative dimension %ld", path, shape[i]);
        off += snprintf(shp + off, sizeof shp - (size_t)off, "%ld,%s", shape[i],
                        i + 1 < ndim ? " " : "");
        count *= (size_t)shape[i];
    }
    if (ndim > 1)
        shp[off - 1] = '\0'; /* "(a, b)" but "(a,)" */
    int len = snprintf(dict, sizeof dict,
                       "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr, shp);
    size_t head = 10 + (size_t)len + 1, pad = (64 - head % 64) % 64;
    size_t total = head + pad + count * elem;
    uint8_t *buf = malloc(total);
    if (!buf)
        return gs_error_set("%s: out of memory for %zu bytes", path, total);
    uint16_t hlen = (uint16_t)((size_t)len + pad + 1);
    const uint8_t magic[10] = {
        0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (uint8_t)(hlen & 0xff), (uint8_t)(hlen >> 8)};
    memcpy(buf, magic, 10);
    memcpy(buf + 10, dict, (size_t)len);
    memset(buf + 10 + len, ' ', pad);
    buf[head + pad - 1] = '\n';
    memcpy(buf + head + pad, data, count * elem);
    int rc = gs_write_atomic(path, buf, total, 0644);
    free(buf);
    return rc;
}
