#!/usr/bin/python3
"""Pipeline benchmark: tiles/s of the service as separate processes on loopback (gastroscreend
and one process per stage, infer at batch 4, in the precision --precision names) against the bare multi-task network in one
process (`gastroscreen bench`'s network section, batch 4), in one run, alternating
(pipeline round, network round, pipeline round, ...) so load from elsewhere on the machine
hits both alike. Prints the medians, the ratio (target >= 0.95), each process's CPU seconds
per pipeline round (utime + stime from /proc/PID/stat: where the cores went besides the
network) and each process's peak memory (VmHWM from /proc/PID/status, read while the process
is alive).

Pipeline tiles/s of a round: K copies of the slide are submitted at once; the figure is the
number of tiles the multi-task network inferred divided by the time from the first inferred
tile to the last one (the coordinator's infer round-trip count on /metrics, polled every
0.1 s with one HTTP GET: cheap, unlike starting a `gastroscreen status` per poll), so the
plan and blur check of the first slide and the screen and report of the last, which the bare
network does not do, are left out; the end-to-end figure (submit to last verdict) is printed
too.

The sample slide has 13 tissue tiles, so its per-slide work (plan, blur check, thumbnail,
report) weighs more than on a real biopsy slide; --mosaic N makes, at bench time, a slide of
N x N copies of its pixels (a tiled, zlib-compressed pyramidal TIFF at 0.5 um/px with 4x and
16x levels, tifffile + PIL) so a round's slides have about N*N times the tiles.

Not a ctest (machines are noisy); run by tests/bench/pipeline.sh.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fault"))
import gsproc  # noqa: E402
from gsproc import wait_for  # noqa: E402


def make_mosaic(src, n, dst):
    """n x n copies of src's level-0 pixels as a tiled pyramidal TIFF at 0.5 um/px."""
    import numpy as np
    import tifffile
    from PIL import Image

    rgb = np.asarray(Image.open(src).convert("RGB"))
    level = np.tile(rgb, (n, n, 1))
    full = Image.fromarray(level)
    with tifffile.TiffWriter(dst) as tif:
        for down in (1, 4, 16):
            h, w = level.shape[0] // down, level.shape[1] // down
            img = level if down == 1 else np.asarray(full.resize((w, h), Image.BOX))
            # 20000 px/cm = 0.5 um/px at level 0
            tifffile_res = (20000 / down, 20000 / down)
            tif.write(img, tile=(256, 256), photometric="rgb", compression="zlib",
                      subfiletype=1 if down > 1 else 0,
                      resolution=tifffile_res, resolutionunit="CENTIMETER")
    return dst


def counters(c):
    """(infer tiles recorded, verdicts) from the coordinator's /metrics: one HTTP GET from this
    process, cheap enough to poll often (a `gastroscreen status` call per poll would start a
    process each time, about 12 ms of CPU taken from the pipeline being measured)."""
    text = c.metrics()
    tiles = verdicts = 0
    for line in text.splitlines():
        m = re.match(r'^gastroscreen_tile_round_trip_seconds_count\{stage="infer"\} (\S+)$', line)
        if m:
            tiles = int(float(m.group(1)))
        m = re.match(r'^gastroscreen_verdicts_total\{[^}]*\} (\S+)$', line)
        if m:
            verdicts += int(float(m.group(1)))
    return tiles, verdicts


def pipeline_round(c, procs, src, rnd, k):
    cpu0 = {name: p.cpu_seconds() for name, p in procs}
    ext = os.path.splitext(src)[1]
    paths = [c.add_slide(src, "r%d-%d%s" % (rnd, i, ext)) for i in range(k)]
    tiles0, verdicts0 = counters(c)
    t_submit = time.monotonic()
    ids = list(c.submit(paths).values())
    first = last = None
    seen = tiles0
    deadline = t_submit + 3600
    while True:
        tiles, verdicts = counters(c)
        now = time.monotonic()
        if tiles > seen:
            if first is None:
                first = (now, tiles)
            last = (now, tiles)
            seen = tiles
        if verdicts - verdicts0 >= k:
            t_end = now
            break
        if now > deadline:
            raise gsproc.Timeout("round %d did not finish" % rnd)
        time.sleep(0.1)
    cpu = {name: round(p.cpu_seconds() - cpu0[name], 2) for name, p in procs}
    finals = [c.status(sid)[0] for sid in ids]
    bad = [s for s in finals if s["state"] != "done"]
    if bad:
        raise RuntimeError("round %d: slides not done: %s" % (rnd, bad))
    total = sum(s["tiles"]["inferred"] for s in finals)
    if total != seen - tiles0:
        # The rate counts every infer result recorded; tiles the infer stage found blank
        # (background) would be counted without costing a network run.
        print("note: round %d: %d infer results recorded, %d tiles inferred" %
              (rnd, seen - tiles0, total), flush=True)
    steady = (last[1] - first[1]) / (last[0] - first[0]) if last[0] > first[0] else float("nan")
    return {"tiles": total, "steady_tiles_per_s": steady, "cpu_seconds": cpu,
            "end_to_end_tiles_per_s": total / (t_end - t_submit),
            "seconds": t_end - t_submit}


def network_round(gastroscreen, bundle, repeat, precision):
    argv = [gastroscreen, "bench", "--json", "--model", bundle, "--repeat", str(repeat)]
    if precision:
        argv += ["--precision", precision]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        raise RuntimeError("gastroscreen bench failed: " + r.stderr)
    j = json.loads(r.stdout)
    for row in j["network"]["multitask"]["batches"] if "multitask" in j["network"] else []:
        if row["batch"] == 4:
            return row["tiles_per_s"]
    raise RuntimeError("gastroscreen bench printed no batch-4 multitask row")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--slide", required=True)
    ap.add_argument("--scratch", default="/tmp/gastroscreen-pipeline-bench")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--slides-per-round", type=int, default=2)
    ap.add_argument("--infer-threads", type=int, default=1)
    ap.add_argument("--bench-repeat", type=int, default=3)
    ap.add_argument("--mosaic", type=int, default=1,
                    help="slide of N x N copies of --slide's pixels (default 1: --slide itself)")
    ap.add_argument("--every-tile", type=int, choices=(0, 1), default=1,
                    help="[blur] every_tile: judge every tissue tile's focus in the infer "
                         "workers (1, the default) or only the blur-first sample (0)")
    ap.add_argument("--precision", default="",
                    help="the infer worker's and the bare network's precision (fp32, bf16, "
                         "...; default: the worker's default). Run once per precision to "
                         "compare slides/hour and the infer worker's peak memory")
    a = ap.parse_args()
    if a.mosaic > 1:
        os.makedirs(a.scratch + ".bundle", exist_ok=True)
        a.slide = make_mosaic(a.slide, a.mosaic,
                              os.path.join(a.scratch + ".bundle", "mosaic-%d.tiff" % a.mosaic))
    print("load average at the start (1, 5, 15 min): %.2f %.2f %.2f on %d CPUs" %
          (os.getloadavg() + (os.cpu_count(),)), flush=True)
    c = gsproc.Cluster(a.build, a.bundle, a.scratch, {"max_slides_in_flight": 2}, infer_batch=4,
                       extra_config="[blur]\nevery_tile = %d" % a.every_tile)
    rows, nets = [], []
    try:
        c.start_coordinator()
        ws = {}
        for s in gsproc.STAGES:
            extra = ["--threads", str(a.infer_threads)] if s == "infer" else []
            if s == "infer" and a.precision:
                extra += ["--precision", a.precision]
            ws[s] = c.start_worker(s, 1, extra)
        wait_for("six welcomed workers",
                 lambda: c.coordinator.text().count("welcomed") >= 6, 300)
        procs = [("gastroscreend", c.coordinator)]
        procs += [("gastroscreen-" + s, ws[s]) for s in gsproc.STAGES]
        for rnd in range(a.rounds):
            rows.append(pipeline_round(c, procs, a.slide, rnd, a.slides_per_round))
            print("pipeline round %d: %s" % (rnd, json.dumps(rows[-1])), flush=True)
            nets.append(network_round(c.cli, a.bundle, a.bench_repeat, a.precision))
            print("network round %d: %.3f tiles/s (batch 4)" % (rnd, nets[-1]), flush=True)
        peaks = [(name, p.vmhwm_kb()) for name, p in procs]
    finally:
        c.close()
    steady = statistics.median(r["steady_tiles_per_s"] for r in rows)
    e2e = statistics.median(r["end_to_end_tiles_per_s"] for r in rows)
    per_hour = statistics.median(a.slides_per_round / r["seconds"] * 3600 for r in rows)
    net = statistics.median(nets)
    print()
    print("pipeline (separate processes, loopback tcp, infer batch 4, %d infer thread(s), "
          "%d slide(s) (%s) of %d tiles per round, %d rounds)" %
          (a.infer_threads, a.slides_per_round, os.path.basename(a.slide), rows[0]["tiles"] // a.slides_per_round,
           a.rounds))
    print("  median tiles/s, first to last inferred tile: %.3f" % steady)
    print("  median tiles/s, submit to last verdict:      %.3f" % e2e)
    print("  median slides/hour, submit to last verdict:  %.1f (precision %s)" %
          (per_hour, a.precision or "the worker's default"))
    print("bare multi-task network, one process, batch 4 (gastroscreen bench), median of "
          "rounds: %.3f tiles/s" % net)
    print("ratio pipeline / bare network: %.3f (first-to-last), %.3f (end to end); "
          "target >= 0.95" % (steady / net, e2e / net))
    print("ratio per round (pipeline round i / network round i, first-to-last): %s" %
          ", ".join("%.3f" % (r["steady_tiles_per_s"] / n) for r, n in zip(rows, nets)))
    print("load average at the end (1, 5, 15 min): %.2f %.2f %.2f on %d CPUs" %
          (os.getloadavg() + (os.cpu_count(),)))
    print("per process: median CPU seconds per pipeline round, peak memory (VmHWM):")
    for name, kb in peaks:
        print("  %-24s %7.2f s %8.1f MB" % (
            name, statistics.median(r["cpu_seconds"][name] for r in rows),
            kb / 1024.0 if kb else float("nan")))
    print(json.dumps({"pipeline_rounds": rows, "network_tiles_per_s": nets,
                      "pipeline_median_tiles_per_s": steady,
                      "pipeline_median_end_to_end_tiles_per_s": e2e,
                      "network_median_tiles_per_s": net, "ratio": steady / net,
                      "ratio_end_to_end": e2e / net, "slides_per_hour": per_hour,
                      "precision": a.precision or None,
                      "peak_mb": {n: (kb / 1024.0 if kb else None) for n, kb in peaks}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
