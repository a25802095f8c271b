/*
 * npy: NumPy .npy files (format 1.0), the form every array gastroscreen hands to Python takes:
 * the raw network outputs of `gastroscreen infer --out`, the screener's input matrices of
 * `gastroscreen features` (read by model/pytorch/npy.py and numpy.load).
 *
 * A file is the magic "\x93NUMPY", version 1.0, a little-endian 16-bit header length, a Python
 * dict literal ({'descr': '<f4', 'fortran_order': False, 'shape': (k, 512), }) padded with
 * spaces and a newline so the data starts at a multiple of 64 bytes, then the C-order data.
 * The file is written whole or not at all (stages/runtime/fileio's gs_write_atomic).
 *
 *     long shape[2] = {k, 512};
 *     gs_npy_write("f.npy", "<f4", feat, sizeof(float), 2, shape);
 */
#ifndef GS_STAGES_RUNTIME_NPY_H
#define GS_STAGES_RUNTIME_NPY_H

#include <stddef.h>

/* Writes the ndim-dimensional (1..8) array data (elem bytes per element, the product of shape
 * elements, C order, already in the byte order descr names: "<f4", "|u1", ...) to path. Returns
 * 0, or -1 with the error naming the file. */
int gs_npy_write(const char *path, const char *descr, const void *data, size_t elem, int ndim,
                 const long *shape);

#endif
