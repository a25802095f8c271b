#!/usr/bin/python3
"""Which file the service reads, and how long one slide may hold it (ctest label fault).

usage: paths.py CASE --build DIR --bundle FILE --data DIR --scratch DIR

CASE is one of
  refuse   a FIFO and a folder under the slide root are refused by `submit` with the reason,
           and the service goes on (nothing blocks on the FIFO);
  swap     a slide's folder is swapped for a symbolic link out of the slide roots after
           intake: the slide fails naming it, and the file outside the roots is never planned;
  replace  a slide is replaced by another file after PLANNED: its tiles are refused and the
           slide fails naming the change;
  huge     a slide declaring 200000 x 200000 px with a single level (a small sparse TIFF) and
           a small slide: the big one fails with the plan cap's reason and the small one still
           gets its verdict.

Real processes on loopback (tests/fault/gsproc). Every wait is bounded by a generous safety
net, never a timing. Exit status: 0 pass, 1 fail.
"""
import argparse
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gsproc  # noqa: E402
from gsproc import wait_for  # noqa: E402

SLIDE = "CMU-1-Small-Region.svs"
OTHER = "small.svs"
SLIDE_TIMEOUT = 1200


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def state_of(c, sid):
    st = c.status(sid)
    return st[0] if st else None


def wait_state(c, sid, states):
    return wait_for("slide %s in %s" % (sid, "/".join(states)),
                    lambda: (lambda s: s if s and s["state"] in states else None)(
                        state_of(c, sid)), SLIDE_TIMEOUT, poll=0.5)


def reason(s):
    r = (s.get("verdict") or {}).get("reason", "")
    print("paths: slide %s %s: %s" % (s.get("slide_id"), s.get("state"), r), flush=True)
    return r


def submit_refused(c, path):
    """The reason `submit` printed for a refused path (its exit status must be 1)."""
    rc, out, err = c.run_cli(["submit", path, "--config", c.config,
                              "--endpoint", "submit=" + c.ep["submit"]])
    check(rc == 1 and "refused" in err, "submit %s: rc %d, %s%s" % (path, rc, out, err))
    return err


def case_refuse(c, a):
    c.start_coordinator()
    fifo = os.path.join(c.root, "slides", "fifo.svs")
    os.mkfifo(fifo)
    folder = os.path.join(c.root, "slides", "folder.svs")
    os.mkdir(folder)
    for p in (fifo, folder):
        err = submit_refused(c, p)
        check("not a regular file" in err, "submit %s: %s" % (p, err))
    # The coordinator did not block on the FIFO: it still takes a real slide.
    c.start_all_workers()
    path = c.add_slide(os.path.join(a.data, OTHER), "ok.svs")
    sid = list(c.submit([path]).values())[0]
    s = wait_state(c, sid, ("done", "failed"))
    check(s["state"] == "done", "a plain slide after the refusals: %s" % s)


def case_swap(c, a):
    c.start_coordinator()
    inside = os.path.join(c.root, "slides", "case")
    outside = os.path.join(c.root, "outside")
    os.makedirs(inside)
    os.makedirs(outside)
    path = os.path.join(inside, "a.svs")
    shutil.copyfile(os.path.join(a.data, SLIDE), path)
    shutil.copyfile(os.path.join(a.data, OTHER), os.path.join(outside, "a.svs"))
    sid = list(c.submit([path]).values())[0]
    # Accepted (journalled) with no worker yet; now the folder becomes a link out of the roots.
    os.rename(inside, inside + ".old")
    os.symlink(outside, inside)
    c.start_all_workers()
    s = wait_state(c, sid, ("done", "failed"))
    check(s["state"] == "failed", "slide behind a swapped link: %s" % s)
    check("not a canonical path" in reason(s) and outside in reason(s),
          "reason does not name the link: %r" % reason(s))
    # Refused before OpenSlide opened it: no plan, so no tile of it was ever read.
    check((s.get("tiles") or {}).get("planned", 0) == 0, "a plan was made: %s" % s)


def case_replace(c, a):
    c.start_coordinator()
    c.start_worker("foreground", 1)
    path = c.add_slide(os.path.join(a.data, SLIDE), "r.svs")
    sid = list(c.submit([path]).values())[0]
    wait_state(c, sid, ("planned",))
    # Replaced by another slide (a new file renamed over the path) before any tile is read.
    tmp = path + ".tmp"
    shutil.copyfile(os.path.join(a.data, OTHER), tmp)
    os.rename(tmp, path)
    for stage in ("tiler", "blur", "infer", "screener", "reporter"):
        c.start_worker(stage, 1)
    s = wait_state(c, sid, ("done", "failed"))
    check(s["state"] == "failed", "slide replaced after PLANNED: %s" % s)
    check("slide file changed after intake" in reason(s),
          "reason does not name the change: %r" % reason(s))


def write_sparse_tiff(path, side, tile=256):
    """A classic tiled RGB TIFF declaring side x side pixels, single level, with only its first
    tile stored (the others have offset and size 0: absent). A few MB on disk."""
    across = (side + tile - 1) // tile
    n = across * across
    tile_bytes = tile * tile * 3
    SHORT, LONG = 3, 4
    ifd_at = 8
    n_tags = 11
    data_at = ifd_at + 2 + n_tags * 12 + 4
    bps_at = data_at
    offsets_at = bps_at + 8
    counts_at = offsets_at + 4 * n
    pixels_at = counts_at + 4 * n
    tags = [(256, LONG, 1, side), (257, LONG, 1, side), (258, SHORT, 3, bps_at),
            (259, SHORT, 1, 1), (262, SHORT, 1, 2), (277, SHORT, 1, 3), (284, SHORT, 1, 1),
            (322, LONG, 1, tile), (323, LONG, 1, tile), (324, LONG, n, offsets_at),
            (325, LONG, n, counts_at)]
    with open(path, "wb") as f:
        f.write(b"II*\0" + struct.pack("<I", ifd_at))
        f.write(struct.pack("<H", n_tags))
        for tag, typ, count, value in tags:
            if typ == SHORT and count == 1:
                f.write(struct.pack("<HHIHH", tag, typ, count, value, 0))
            else:
                f.write(struct.pack("<HHII", tag, typ, count, value))
        f.write(struct.pack("<I", 0))
        f.write(struct.pack("<HHHH", 8, 8, 8, 0))
        f.write(struct.pack("<I", pixels_at) + b"\0" * (4 * (n - 1)))
        f.write(struct.pack("<I", tile_bytes) + b"\0" * (4 * (n - 1)))
        f.write(bytes([200]) * tile_bytes)


def case_huge(c, a):
    c.start_coordinator()
    c.start_all_workers()
    huge = os.path.join(c.root, "slides", "huge.tiff")
    write_sparse_tiff(huge, 200000)
    small = c.add_slide(os.path.join(a.data, OTHER), "small.svs")
    ids = c.submit([huge, small])
    s = wait_state(c, ids[huge], ("done", "failed"))
    check(s["state"] == "failed" and "too large to plan" in reason(s),
          "the 200000 x 200000 slide: %s" % s)
    s = wait_state(c, ids[small], ("done", "failed"))
    check(s["state"] == "done", "the small slide behind it: %s" % s)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("case", choices=("refuse", "swap", "replace", "huge"))
    ap.add_argument("--build", required=True)
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--scratch", required=True)
    a = ap.parse_args()
    os.makedirs(a.scratch, exist_ok=True)
    root = tempfile.mkdtemp(prefix="paths-%s-" % a.case, dir=a.scratch)
    c = gsproc.Cluster(a.build, a.bundle, root)
    t0 = time.monotonic()
    try:
        {"refuse": case_refuse, "swap": case_swap, "replace": case_replace,
         "huge": case_huge}[a.case](c, a)
    except (Failure, gsproc.Timeout, RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        c.close()
        print("FAIL: %s" % e)
        for p in c.procs:
            print("---- %s (%s) log, last 40 lines:" % (p.name, p.log_path))
            print("\n".join(p.text().splitlines()[-40:]))
        print("(scratch folder kept: %s)" % root)
        return 1
    c.close()
    shutil.rmtree(root, ignore_errors=True)
    print("PASS: %s (%.0f s)" % (a.case, time.monotonic() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
