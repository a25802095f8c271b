#!/usr/bin/python3
"""Load benchmark: a burst of N small real slides against gastroscreend with separate stage
processes on loopback, for several N in turn (default 100 then 500), each in a fresh scratch
folder and a fresh set of processes.

For each N: N hard links (copies where links fail) of small real slides go into the slide root
under distinct names (tests/data/small.svs, a real 16 x 16 px Aperio crop that is opened,
planned and reported unassessable by the foreground, plan and reporter processes; with
--screened-every K, every K-th is CMU-1-Small-Region.svs, 13 tissue tiles screened all the
way through blur check, inference and screener, minutes per slide on a loaded machine), a `gastroscreen watch --since 0` subscriber starts, all N paths are
submitted at once (one `gastroscreen submit` call), and the run waits for N verdict lines.
Then it checks that exactly N distinct slides have a verdict, none twice, both on the live
subscriber and on a second `watch --since 0` replaying the journal, and that no slide is left
in flight; and it reads each process's peak resident memory (VmHWM, /proc/PID/status) while
the process is still alive.

At the end a table puts each process's peak beside N, with the growth per slide from the
smallest N to the largest. A stage worker holds one slide's work at a time, so its peak must
not depend on N: the run fails (exit 1) when a worker's peak at the largest N exceeds the one
at the smallest by more than 25 % + 8 MB. The coordinator keeps every slide's record and
events in memory until journal_retention drops them, a few kB per slide: its growth per slide
is printed, not bounded here.

Not a ctest (it takes minutes and the machine is shared); run by tests/bench/load.sh.
"""
import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fault"))
import gsproc  # noqa: E402
from gsproc import wait_for  # noqa: E402
from fault import verdict_lines  # noqa: E402

COORD_SETTINGS = {"heartbeat_ms": 1000, "liveness": 10}


class Failure(Exception):
    pass


def burst(a, n):
    root = os.path.join(a.scratch, "n%d" % n)
    c = gsproc.Cluster(a.build, a.bundle, root, COORD_SETTINGS)
    try:
        c.start_coordinator()
        ws = {s: c.start_worker(s, 1) for s in gsproc.STAGES}
        wait_for("six welcomed workers", lambda: c.coordinator.text().count("welcomed") >= 6, 300)
        paths = []
        for i in range(n):
            # Every screened_every-th slide is one with tissue, screened all the way (blur
            # check, inference, screener); the others are planned and reported unassessable.
            src = a.screened_slide if a.screened_every and i % a.screened_every == 0 else a.slide
            dst = os.path.join(root, "slides", "s%04d%s" % (i, os.path.splitext(src)[1]))
            try:
                os.link(src, dst)
            except OSError:
                c.add_slide(src, os.path.basename(dst))
            paths.append(dst)
        argv = [c.cli, "watch", "--since", "0", "--timeout", "600", "--config", c.config,
                "--endpoint", "events=" + c.ep["events"], "--endpoint", "query=" + c.ep["query"]]
        live = gsproc.Proc("watch", argv, c.log("watch"))
        c.procs.append(live)
        t0 = time.monotonic()
        ids = c.submit(paths)
        t_submit = time.monotonic() - t0
        if len(set(ids.values())) != n:
            raise Failure("%d slide ids for %d paths" % (len(set(ids.values())), n))
        wait_for("%d verdict lines" % n, lambda: len(verdict_lines(live.text())) >= n,
                 a.timeout_per_slide * n, poll=1.0)
        elapsed = time.monotonic() - t0
        time.sleep(3)  # a duplicate would come right after
        procs = [("gastroscreend", c.coordinator)] + [("gastroscreen-" + s, ws[s])
                                                      for s in gsproc.STAGES]
        peaks = {name: p.vmhwm_kb() for name, p in procs}
        live.term()
        lines = verdict_lines(live.text())
        seen = [sid for sid, _ in lines]
        want = set(ids.values())
        dup = sorted({s for s in seen if seen.count(s) > 1})
        if set(seen) != want or dup:
            raise Failure("live subscriber: %d verdicts for %d slides, duplicated %s, unknown %s,"
                          " missing %d" % (len(seen), n, dup[:5], sorted(set(seen) - want)[:5],
                                           len(want - set(seen))))
        w = c.start_watch()
        wait_for("the replay's %d verdict lines" % n, lambda: len(verdict_lines(w.text())) >= n,
                 300)
        time.sleep(3)
        w.term()
        replay = [sid for sid, _ in verdict_lines(w.text())]
        if sorted(replay) != sorted(want):
            raise Failure("replay: %d verdict lines for %d slides" % (len(replay), n))
        in_flight = c.status()
        if in_flight:
            raise Failure("%d slides still in flight" % len(in_flight))
        classes = {}
        for _, cls in lines:
            classes[cls] = classes.get(cls, 0) + 1
        return {"slides": n, "verdicts": len(lines), "duplicates": len(dup),
                "classes": classes, "submit_s": round(t_submit, 2),
                "seconds": round(elapsed, 1), "slides_per_s": round(n / elapsed, 3),
                "journal_bytes": sum(os.path.getsize(os.path.join(dp, f))
                                     for dp, _, fs in os.walk(os.path.join(root, "journal"))
                                     for f in fs),
                "vmhwm_kb": peaks}
    finally:
        c.close()


def main():
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--slide", default=os.path.join(src, "tests", "data", "small.svs"))
    ap.add_argument("--screened-slide",
                    default=os.path.join(src, "tests", "data", "CMU-1-Small-Region.svs"))
    ap.add_argument("--screened-every", type=int, default=0,
                    help="every K-th slide of a burst is --screened-slide (default 0: none)")
    ap.add_argument("--counts", default="100,500", help="comma-separated burst sizes")
    ap.add_argument("--scratch", default="/tmp/gastroscreen-load-bench")
    ap.add_argument("--timeout-per-slide", type=float, default=30.0)
    a = ap.parse_args()
    a.slide = os.path.abspath(a.slide)
    a.screened_slide = os.path.abspath(a.screened_slide)
    counts = [int(x) for x in a.counts.split(",")]
    print("load average at the start (1, 5, 15 min): %.2f %.2f %.2f on %d CPUs" %
          (os.getloadavg() + (os.cpu_count(),)), flush=True)
    rows = []
    try:
        for n in counts:
            rows.append(burst(a, n))
            print("burst of %d: %s" % (n, json.dumps(rows[-1])), flush=True)
    except (Failure, gsproc.Timeout, RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        print("FAIL: %s" % e)
        return 1
    print()
    print("peak resident memory (VmHWM, kB) per process; slides: %s%s:" %
          (os.path.basename(a.slide), ", every %d-th %s" % (a.screened_every,
                                                            os.path.basename(a.screened_slide))
           if a.screened_every else ""))
    names = list(rows[0]["vmhwm_kb"])
    print("  %-22s %s %s" % ("process", " ".join("%10s" % ("N=%d" % r["slides"]) for r in rows),
                            "  kB/slide"))
    ok = True
    lo, hi = rows[0], rows[-1]
    for name in names:
        a_kb, b_kb = lo["vmhwm_kb"][name], hi["vmhwm_kb"][name]
        per = (b_kb - a_kb) / max(1, hi["slides"] - lo["slides"])
        flag = ""
        if name != "gastroscreend" and b_kb > a_kb * 1.25 + 8192:
            ok = False
            flag = "  <- grows with N"
        print("  %-22s %s %9.2f%s" % (name, " ".join("%10d" % r["vmhwm_kb"][name] for r in rows),
                                      per, flag))
    print("every burst: exactly N verdicts, none duplicated, none left in flight")
    print("stage workers' peaks independent of N (<= 25 %% + 8 MB from N=%d to N=%d): %s" %
          (lo["slides"], hi["slides"], "yes" if ok else "NO"))
    print("load average at the end (1, 5, 15 min): %.2f %.2f %.2f on %d CPUs" %
          (os.getloadavg() + (os.cpu_count(),)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
