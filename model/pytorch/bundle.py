"""Read and write gastroscreen bundle files (safetensors) with the standard library and torch.

A bundle is one safetensors file holding the weights of the four networks
(DESIGN.md section 7; the contract is documented in model/FORMAT.md):

    bytes 0..7    header length N, unsigned 64-bit little endian
    bytes 8..8+N  JSON object: "__metadata__" (string -> string) and, per tensor,
                  name -> {"dtype": "F32"|"F16"|"BF16", "shape": [...], "data_offsets": [b, e]}
                  (padded with spaces to a multiple of 8 bytes)
    the rest      tensor data, contiguous, little endian, in header order; offsets are
                  relative to the start of this data section

Tensor names are "<network>.<state_dict key>" with network one of multitask, foreground,
blur, screener; num_batches_tracked is never stored. Metadata keys are listed in
METADATA_KEYS; default_metadata() fills them.

Use::

    write_bundle(path, flatten_networks({"blur": sd, ...}), default_metadata(prov))
    tensors, meta = read_bundle(path)        # raises BundleError naming the problem
    nets, meta = load_networks(path)          # eval-mode nn.Modules from networks.py

No safetensors package and no numpy: raw bytes are produced with ctypes.string_at on a
contiguous tensor and parsed with torch.frombuffer.
"""

import ctypes
import datetime
import json
import os
import struct
import sys

import torch

import networks

FORMAT = "gastroscreen-bundle"
FORMAT_VERSION = "1"
TOOL_VERSION = "0.1.0"
HEADER_CAP = 100 * 1024 * 1024

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}

# The metadata contract, in the order the writer emits it.
METADATA_KEYS = (
    "format",
    "format_version",
    "input_colour",
    "input_mean",
    "input_std",
    "target_mpp",
    "tile_size",
    "topk",
    "threshold.screen",
    "threshold.blur",
    "threshold.foreground",
    "activation",
    "bn_eps",
    "provenance.multitask",
    "provenance.foreground",
    "provenance.blur",
    "provenance.screener",
    "created",
    "creator",
)

UNTRAINED = "untrained"


class BundleError(Exception):
    """A bundle file (or the tensors meant for one) is malformed; the message says why."""


def utc_now_iso():
    """Returns the current UTC time as ISO 8601 with a Z suffix, to the second."""
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def default_metadata(provenance, activation="relu", created=None, creator=None):
    """Returns the metadata dict (all values str) in METADATA_KEYS order.

    ``provenance`` maps network name -> text; absent networks get "untrained".
    """
    networks.parse_activation(activation)
    for name, text in provenance.items():
        if name not in networks.NETWORK_NAMES:
            raise BundleError("provenance for unknown network %r" % (name,))
        if not isinstance(text, str) or not text.strip():
            raise BundleError("provenance for %s is empty" % name)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "input_colour": "RGB",
        "input_mean": "0.485,0.456,0.406",
        "input_std": "0.229,0.224,0.225",
        "target_mpp": "0.5",
        "tile_size": "512",
        "topk": "64",
        "threshold.screen": "0.74",
        "threshold.blur": "0.5",
        "threshold.foreground": "0.5",
        "activation": activation,
        "bn_eps": "1e-5",
    }
    for name in networks.NETWORK_NAMES:
        meta["provenance." + name] = provenance.get(name, UNTRAINED)
    meta["created"] = created if created is not None else utc_now_iso()
    meta["creator"] = creator if creator is not None else "gastroscreen export.py " + TOOL_VERSION
    return meta


def tensor_bytes(t, dtype_name):
    """Returns the little-endian bytes of tensor ``t`` converted to dtype ``dtype_name``."""
    if sys.byteorder != "little":
        raise BundleError("bundle writing needs a little-endian host")
    if dtype_name not in DTYPES:
        raise BundleError("unsupported dtype %r" % (dtype_name,))
    c = t.detach().to(device="cpu", dtype=DTYPES[dtype_name]).contiguous()
    n = c.numel() * c.element_size()
    return ctypes.string_at(c.data_ptr(), n) if n else b""


def encode(entries, metadata):
    """Returns the bytes of a safetensors file.

    ``entries`` is a list of (name, dtype string, shape list, raw bytes), written in that
    order; ``metadata`` a dict. No validation: make_bundle.py uses this to write broken
    files on purpose.
    """
    header = {"__metadata__": metadata}
    offset = 0
    for name, dtype, shape, raw in entries:
        header[name] = {
            "dtype": dtype,
            "shape": list(shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(e[3] for e in entries)


def _check_tensor_name(name):
    prefix = name.split(".", 1)[0]
    if "." not in name or prefix not in networks.NETWORK_NAMES:
        raise BundleError(
            "tensor %r: name must start with one of %s followed by '.'"
            % (name, ", ".join(networks.NETWORK_NAMES))
        )
    if name.endswith("num_batches_tracked"):
        raise BundleError("tensor %r: num_batches_tracked is never stored" % name)


def serialize(tensors, metadata, dtype="F32"):
    """Returns the bundle bytes for ``tensors`` (ordered name -> float tensor).

    Raises BundleError on a bad name, a non-floating or non-finite tensor, or metadata that
    is not all strings.
    """
    for k, v in metadata.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise BundleError("metadata %r: keys and values must be strings" % (k,))
    entries = []
    for name, t in tensors.items():
        _check_tensor_name(name)
        if not torch.is_tensor(t) or not t.is_floating_point():
            raise BundleError("tensor %s: not a floating-point tensor" % name)
        if not bool(torch.isfinite(t.float()).all()):
            raise BundleError("tensor %s: contains NaN or Inf" % name)
        entries.append((name, dtype, list(t.shape), tensor_bytes(t, dtype)))
    return encode(entries, metadata)


def write_bundle(path, tensors, metadata, dtype="F32"):
    """Writes the bundle atomically (temporary file, fsync, rename). Raises BundleError/OSError."""
    data = serialize(tensors, metadata, dtype)
    tmp = "%s.tmp.%d" % (path, os.getpid())
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _reject_duplicates(pairs):
    seen = {}
    for k, v in pairs:
        if k in seen:
            raise BundleError("header: duplicate key %r" % (k,))
        seen[k] = v
    return seen


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def parse(data, name="bundle"):
    """Returns (ordered dict name -> tensor in its stored dtype, metadata dict) from bytes.

    Validates what the C reader validates (sizes, JSON, dtypes, shapes, contiguous offsets,
    string metadata) and raises BundleError("<name>: ...") on the first problem.
    """

    def fail(msg):
        raise BundleError("%s: %s" % (name, msg))

    if len(data) < 8:
        fail("file is %d bytes, shorter than the 8-byte header length" % len(data))
    (hlen,) = struct.unpack("<Q", bytes(data[:8]))
    if hlen == 0 or hlen > HEADER_CAP:
        fail("header length %d is 0 or above the %d cap" % (hlen, HEADER_CAP))
    if 8 + hlen > len(data):
        fail("header length %d runs past the end of the %d-byte file" % (hlen, len(data)))
    try:
        header = json.loads(bytes(data[8 : 8 + hlen]).decode("utf-8"),
                            object_pairs_hook=_reject_duplicates)
    except BundleError as e:
        fail(str(e))
    except (UnicodeDecodeError, ValueError) as e:
        fail("header is not valid JSON: %s" % e)
    if not isinstance(header, dict):
        fail("header is not a JSON object")
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        fail("__metadata__ must be an object of strings")
    body = memoryview(data)[8 + hlen :]
    spans = []
    for tname, e in header.items():
        if not tname:
            fail("empty tensor name")
        if not isinstance(e, dict):
            fail("tensor %s: entry is not an object" % tname)
        for field in ("dtype", "shape", "data_offsets"):
            if field not in e:
                fail("tensor %s: missing %s" % (tname, field))
        if e["dtype"] not in DTYPES:
            fail("tensor %s: dtype %r not allowed (F32, F16, BF16 only)" % (tname, e["dtype"]))
        shape = e["shape"]
        if (not isinstance(shape, list) or len(shape) > 8
                or not all(_is_int(d) and d >= 0 for d in shape)):
            fail("tensor %s: shape %r is not a list of at most 8 non-negative ints" % (tname, shape))
        offs = e["data_offsets"]
        if not isinstance(offs, list) or len(offs) != 2 or not all(_is_int(o) for o in offs):
            fail("tensor %s: data_offsets %r is not [begin, end]" % (tname, offs))
        begin, end = offs
        if begin < 0 or begin > end or end > len(body):
            fail("tensor %s: data_offsets [%d, %d] outside the %d-byte data section"
                 % (tname, begin, end, len(body)))
        numel = 1
        for d in shape:
            numel *= d
        esize = torch.empty((), dtype=DTYPES[e["dtype"]]).element_size()
        if numel * esize != end - begin:
            fail("tensor %s: %d bytes for shape %r of %s" % (tname, end - begin, shape, e["dtype"]))
        spans.append((begin, end, tname))
    pos = 0
    for begin, end, tname in sorted(spans):
        if begin != pos:
            fail("tensor %s: data starts at %d, expected %d (gap or overlap)" % (tname, begin, pos))
        pos = end
    if pos != len(body):
        fail("%d bytes of data after the last tensor" % (len(body) - pos))
    tensors = {}
    for tname, e in header.items():
        begin, end = e["data_offsets"]
        dt = DTYPES[e["dtype"]]
        if end > begin:
            # bytearray copy: frombuffer wants a writable buffer and the result must own it.
            flat = torch.frombuffer(bytearray(body[begin:end]), dtype=dt)
        else:
            flat = torch.empty(0, dtype=dt)
        tensors[tname] = flat.reshape(e["shape"])
    return tensors, meta


def read_bundle(path):
    """Returns (tensors, metadata) of the bundle at ``path``; raises BundleError or OSError."""
    with open(path, "rb") as f:
        data = f.read()
    return parse(data, os.path.basename(path))


def flatten_networks(state_dicts):
    """Returns the ordered bundle tensor dict for {network: state_dict}.

    Networks appear in NETWORK_NAMES order; num_batches_tracked is dropped.
    """
    out = {}
    for net in networks.NETWORK_NAMES:
        if net not in state_dicts:
            continue
        for k, v in state_dicts[net].items():
            if k.endswith("num_batches_tracked"):
                continue
            out["%s.%s" % (net, k)] = v
    unknown = set(state_dicts) - set(networks.NETWORK_NAMES)
    if unknown:
        raise BundleError("unknown network(s): %s" % ", ".join(sorted(unknown)))
    return out


def split_networks(tensors):
    """Returns {network: state_dict} from bundle tensor names; BundleError on a bad prefix."""
    out = {}
    for name, t in tensors.items():
        _check_tensor_name(name)
        net, key = name.split(".", 1)
        out.setdefault(net, {})[key] = t
    return out


def check_state_dict(net_name, module, sd):
    """Raises BundleError naming every unexpected, missing or wrong-shape key of ``sd``."""
    want = networks.exported_state(module)
    problems = []
    for k in sd:
        if k not in want:
            problems.append("%s: unexpected key %s" % (net_name, k))
    for k, v in want.items():
        if k not in sd:
            problems.append("%s: missing key %s" % (net_name, k))
        elif list(sd[k].shape) != list(v.shape):
            problems.append("%s: key %s has shape %s, expected %s"
                            % (net_name, k, list(sd[k].shape), list(v.shape)))
    if problems:
        raise BundleError("; ".join(problems))


def parse_floats(text):
    """Returns the comma-separated numbers of a metadata value such as input_mean."""
    return tuple(float(v) for v in text.split(","))


def load_networks(path, names=None):
    """Returns ({network: eval-mode module}, metadata) built from the bundle at ``path``.

    ``names`` restricts to those networks (default: every network present). A requested
    network without tensors is an error. Also checks the metadata keys, format version,
    activation, every key and shape, and that all values are finite (BundleError).
    Weights are converted to float32.
    """
    tensors, meta = read_bundle(path)
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise BundleError("%s: not a %s version %s file (format %r, format_version %r)"
                          % (path, FORMAT, FORMAT_VERSION, meta.get("format"),
                             meta.get("format_version")))
    absent = [k for k in METADATA_KEYS if k not in meta]
    if absent:
        raise BundleError("%s: metadata key(s) missing: %s" % (path, ", ".join(absent)))
    activation = meta["activation"]
    try:
        networks.parse_activation(activation)
    except ValueError as e:
        raise BundleError("%s: metadata %s" % (path, e)) from None
    by_net = split_networks(tensors)
    names = list(by_net) if names is None else list(names)
    nets = {}
    for name in names:
        if name not in by_net:
            raise BundleError("%s: no tensors for network %s (provenance %r)"
                              % (path, name, meta.get("provenance." + name)))
        net = networks.build(name, activation)
        if name == "blur":
            # pool.blur (FORMAT.md): which global pool the blur weights were trained with
            pool = meta.get("pool.blur", "mean")
            if pool not in networks.BLUR_POOLS:
                raise BundleError("%s: metadata pool.blur %r is not one of %s"
                                  % (path, pool, ", ".join(networks.BLUR_POOLS)))
            net = networks.Blur(pool, parse_floats(meta["input_mean"]),
                                parse_floats(meta["input_std"]))
        sd = {k: v.float() for k, v in by_net[name].items()}
        check_state_dict(name, net, sd)
        for k, v in sd.items():
            if not bool(torch.isfinite(v).all()):
                raise BundleError("%s: tensor %s.%s contains NaN or Inf" % (path, name, k))
        net.load_state_dict(sd, strict=False)
        nets[name] = net.eval()
    return nets, meta
