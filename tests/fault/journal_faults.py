#!/usr/bin/python3
"""Journal fault tests with real processes on loopback (ctest label fault).

usage: journal_faults.py CASE --build DIR --bundle FILE --data DIR --scratch DIR

CASE is one of
  damaged   three slides screened, gastroscreend stopped, then its journal damaged: a byte
            flipped in events.log's first record, its tail torn, one <id>.json hand-edited.
            Restarted, it must start, say what it dropped (log), serve every slide with the
            verdict it had, and `watch --since 0` must show each verdict exactly once (the
            torn-off verdict rebuilt from the slide's record);
  lock      a second gastroscreend on the same journal folder refuses to start, naming the
            folder and the pid of the first, and the first is unharmed;
  readonly  the journal folder becomes unwritable (chattr +i under root, chmod 0500
            otherwise; skipped with a message when neither stops writes) while a slide is
            in flight: gastroscreend keeps running, a new submit is refused with the reason
            (to `submit` and in the log), /metrics says degraded; when the folder is writable
            again the slide in flight ends with one verdict and new slides are taken again.

Exit status: 0 pass, 1 fail, 77 skipped (ctest SKIP_RETURN_CODE).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gsproc  # noqa: E402
from gsproc import wait_for  # noqa: E402
from fault import Failure, check, verdict_lines, check_once_each, wait_terminal, metric  # noqa

SLIDE = "small.svs"
COORD_SETTINGS = {"heartbeat_ms": 1000, "liveness": 5, "max_slides_in_flight": 2}
SKIP = 77


def replay(c, n):
    """Verdict lines of a fresh `watch --since 0` (a replay of the journal)."""
    w = c.start_watch()
    wait_for("%d replayed verdict lines" % n, lambda: len(verdict_lines(w.text())) >= n, 120)
    time.sleep(3)  # a duplicate would come in the same catch-up or right after
    w.term()
    return verdict_lines(w.text())


def screened(c, a, names):
    paths = [c.add_slide(os.path.join(a.data, SLIDE), n) for n in names]
    ids = c.submit(paths)
    states = wait_terminal(c, list(ids.values()))
    return {sid: states[sid]["verdict"]["class"] for sid in ids.values()}


def flip_byte(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x5A]))


def case_damaged(c, a):
    c.start_coordinator()
    c.start_all_workers()
    classes = screened(c, a, ["d1.svs", "d2.svs", "d3.svs"])
    ids = list(classes)
    print("journal: verdicts before the damage: %s" % classes, flush=True)
    check(c.coordinator.term() == 0, "gastroscreend did not stop cleanly")
    jdir = os.path.join(c.root, "journal")
    log = os.path.join(jdir, "events.log")
    size = os.path.getsize(log)
    # The record file's header is 16 bytes, each record framed by 8: byte 40 is inside the
    # first record's payload (an `accepted` event; the slide's file keeps its state).
    flip_byte(log, 40)
    os.truncate(log, size - 7)  # the tail torn: the last verdict's record
    # A hand-edited record: the first slide's reason changed. The file fails its checksum.
    edited = os.path.join(jdir, ids[0] + ".json")
    with open(edited) as f:
        text = f.read()
    check("score" in text, "no score in %s" % edited)
    with open(edited, "w") as f:
        f.write(text.replace('"reason":"', '"reason":"edited ', 1))
    c.start_coordinator()
    log_text = c.coordinator.text()
    for line in log_text.splitlines():
        if "journal" in line or "re-derived" in line:
            print("journal: restart said: %s" % line.strip(), flush=True)
    check("events.log: dropped" in log_text, "no line about the dropped log bytes:\n" + log_text)
    check("checksum mismatch" in log_text and ids[0] in log_text,
          "no line naming the edited slide file:\n" + log_text)
    check(os.path.isfile(os.path.join(jdir, "quarantine", ids[0] + ".json")),
          "the edited file is not in quarantine/")
    states = wait_terminal(c, ids)
    for sid in ids:
        v = states[sid]["verdict"]
        check(v["class"] == classes[sid], "slide %s: %s after the restart, %s before" %
              (sid, v["class"], classes[sid]))
        check(not (v.get("reason") or "").startswith("edited"),
              "slide %s: the edited record was served: %s" % (sid, v))
    check_once_each("replay after the damage", replay(c, len(ids)), ids)


def case_lock(c, a):
    first = c.start_coordinator()
    second = gsproc.Proc("gastroscreend-2", [c.gastroscreend, "--config", c.config],
                         c.log("gastroscreend-2"))
    c.procs.append(second)
    wait_for("the second gastroscreend to exit", lambda: not second.alive(), 60)
    out = second.text()
    check(second.p.returncode != 0, "the second gastroscreend exited 0:\n" + out)
    jdir = os.path.join(c.root, "journal")
    check("in use by another coordinator" in out and jdir in out and
          ("pid %d" % first.pid) in out,
          "the refusal does not name the folder and the pid %d:\n%s" % (first.pid, out))
    check(first.alive(), "the first gastroscreend died")
    c.start_all_workers()
    classes = screened(c, a, ["l1.svs"])
    check_once_each("replay", replay(c, 1), list(classes))


def freeze(path):
    """Makes the folder refuse new files; returns how to undo it, or None if nothing does."""
    if os.geteuid() == 0:
        if shutil.which("chattr") and subprocess.run(
                ["chattr", "+i", path], capture_output=True).returncode == 0:
            undo = ["chattr", "-i", path]
        else:
            return None
    else:
        os.chmod(path, 0o500)
        undo = None
    probe = os.path.join(path, ".gs-freeze-probe")
    try:
        open(probe, "w").close()
        os.unlink(probe)
        ok = False
    except OSError:
        ok = True

    def thaw():
        if undo:
            subprocess.run(undo, check=True)
        else:
            os.chmod(path, 0o750)
    if not ok:
        thaw()
        return None
    return thaw


def case_readonly(c, a):
    c.start_coordinator()
    c.start_all_workers()
    wait_for("six welcomed workers", lambda: c.coordinator.text().count("welcomed") >= 6, 300)
    jdir = os.path.join(c.root, "journal")
    first = c.add_slide(os.path.join(a.data, SLIDE), "r1.svs")
    second = c.add_slide(os.path.join(a.data, SLIDE), "r2.svs")
    live = c.start_watch()
    ids = c.submit([first])
    sid = ids[first]
    thaw = freeze(jdir)
    if thaw is None:
        print("SKIP: nothing here makes a folder unwritable without a mount (not root: chmod "
              "did not stop writes; root: chattr +i unavailable on this file system)")
        return SKIP
    try:
        rc, out, err = c.run_cli(["submit", second, "--config", c.config,
                                  "--endpoint", "submit=" + c.ep["submit"]])
        check(rc != 0 and "refused" in err and "cannot be written" in err and jdir in err,
              "submit into an unwritable journal: rc %d, out %r, err %r" % (rc, out, err))
        print("journal: submit refused: %s" % err.strip(), flush=True)
        wait_for("the degraded gauge", lambda: metric(c, "gastroscreen_journal_degraded") == 1,
                 60)
        log_text = c.coordinator.text()
        check("degraded mode" in log_text, "no log line on entering degraded mode")
        time.sleep(3)
        check(c.coordinator.alive(), "gastroscreend exited with the journal unwritable")
        s = c.status(sid)
        check(s and s[0]["state"] not in ("done", "failed") or
              sid in [x for x, _ in verdict_lines(live.text())],
              "slide %s ended without a published verdict: %s" % (sid, s))
    finally:
        thaw()
    wait_for("degraded mode to end", lambda: metric(c, "gastroscreen_journal_degraded") == 0, 60)
    check("can be written again" in c.coordinator.text(), "no log line on leaving degraded mode")
    ids2 = c.submit([second])
    all_ids = [sid, ids2[second]]
    wait_terminal(c, all_ids)
    wait_for("two live verdict lines", lambda: len(verdict_lines(live.text())) >= 2, 120)
    time.sleep(2)
    live.term()
    check_once_each("live subscriber", verdict_lines(live.text()), all_ids)
    check_once_each("replay", replay(c, 2), all_ids)
    check(metric(c, 'gastroscreen_intake_total{outcome="refused"}') == 1,
          "refused intakes not counted")
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("case", choices=("damaged", "lock", "readonly"))
    ap.add_argument("--build", required=True)
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--scratch", required=True)
    a = ap.parse_args()
    os.makedirs(a.scratch, exist_ok=True)
    root = tempfile.mkdtemp(prefix="journal-%s-" % a.case, dir=a.scratch)
    c = gsproc.Cluster(a.build, a.bundle, root, COORD_SETTINGS)
    t0 = time.monotonic()
    rc = 0
    try:
        rc = {"damaged": case_damaged, "lock": case_lock, "readonly": case_readonly}[a.case](
            c, a) or 0
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
    if rc == 0:
        print("PASS: %s (%.0f s)" % (a.case, time.monotonic() - t0))
    return rc


if __name__ == "__main__":
    sys.exit(main())
