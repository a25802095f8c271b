"""Minimal .npy (NumPy format 1.0/2.0) reader and writer on the standard library and torch.

The mirror's scripts exchange arrays with the C tests and CLI as .npy files but must not
depend on numpy. Only what they need is supported: C-order arrays of uint8 ('|u1'),
float32 ('<f4') and float64 ('<f8'); Fortran order and other dtypes raise ValueError.

    t = read_npy("tile.npy")          # torch tensor (uint8 / float32 / float64), owns its data
    write_npy("out.npy", tensor)      # always written as little-endian float32
"""

import ast
import ctypes
import struct

import torch

MAGIC = b"\x93NUMPY"
_DESCR = {"|u1": torch.uint8, "<u1": torch.uint8, "<f4": torch.float32, "<f8": torch.float64}


def read_npy(path):
    """Returns the array in ``path`` as a new torch tensor; ValueError if unsupported."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:6] != MAGIC or len(data) < 10:
        raise ValueError("%s: not a .npy file" % path)
    major = data[6]
    if major == 1:
        (hlen,) = struct.unpack("<H", data[8:10])
        start = 10
    elif major in (2, 3):
        (hlen,) = struct.unpack("<I", data[8:12])
        start = 12
    else:
        raise ValueError("%s: .npy version %d not supported" % (path, major))
    try:
        header = ast.literal_eval(data[start:start + hlen].decode("latin1"))
    except (ValueError, SyntaxError) as e:
        raise ValueError("%s: bad .npy header: %s" % (path, e)) from None
    if not isinstance(header, dict) or header.get("descr") not in _DESCR:
        raise ValueError("%s: dtype %r not supported (uint8, float32, float64 only)"
                         % (path, header.get("descr") if isinstance(header, dict) else None))
    if header.get("fortran_order"):
        raise ValueError("%s: Fortran-order arrays not supported" % path)
    shape = tuple(header["shape"])
    dtype = _DESCR[header["descr"]]
    numel = 1
    for d in shape:
        numel *= d
    esize = torch.empty((), dtype=dtype).element_size()
    body = data[start + hlen:]
    if len(body) != numel * esize:
        raise ValueError("%s: %d data bytes for shape %s" % (path, len(body), shape))
    if numel == 0:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(bytearray(body), dtype=dtype).reshape(shape)


def write_npy(path, t):
    """Writes tensor ``t`` to ``path`` as a C-order little-endian float32 .npy (version 1.0)."""
    c = t.detach().to(device="cpu", dtype=torch.float32).contiguous()
    shape = tuple(c.shape)
    # Python tuple syntax: "()", "(5,)", "(2, 3)".
    shape_text = "(%s,)" % shape[0] if len(shape) == 1 else str(shape)
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': %s, }" % shape_text
    pad = -(len(MAGIC) + 4 + len(header) + 1) % 64
    header = (header + " " * pad + "\n").encode("latin1")
    n = c.numel() * 4
    with open(path, "wb") as f:
        f.write(MAGIC + b"\x01\x00" + struct.pack("<H", len(header)) + header)
        if n:
            f.write(ctypes.string_at(c.data_ptr(), n))
