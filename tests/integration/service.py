"""The screening service as separate processes on loopback, as it is deployed (one process per
stage, talking over TCP), under garbage input and faulty slides.

Starts gastroscreend and one gastroscreen-<stage> worker of each stage, plus a second infer
worker, with free loopback ports, a scratch journal and a slide root holding copies of
tests/data slides and an out-of-focus slide made here (the sample slide's pixels blurred into
a tiled TIFF with tifffile). Then:
  1. garbage bytes and envelopes of the wrong type go to every bound socket (the coordinator's
     intake, submit, query and work, and the blur and infer workers' tile inboxes);
  2. service_probe announces the N slides with `slide.arrived.` and a subscriber counts the
     verdicts: exactly one per slide (it keeps listening after the last one);
  3. checks: the sample slide is screened (negative/positive, tiles inferred); both infer
     workers processed tiles; the two corrupt slides are `failed` with a reason; the slide
     without tissue is unassessable; the out-of-focus slide is unassessable with no tile
     inferred and no INFERRING state (the multi-task network never ran on it); the garbage
     was counted per socket (/metrics, and the workers' stats for the tile inboxes) while the
     service kept working.
Every wait is bounded; every child is killed on exit (atexit, SIGTERM/SIGINT handlers).

usage: /usr/bin/python3 service.py BUILD_DIR TEST_DATA SCRATCH BOUND_SECONDS
Exit 0: pass; 1: fail; 77: skipped (a Python module for making the blurred slide is missing).
"""
import atexit
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

STAGES = ("tiler", "foreground", "blur", "infer", "screener", "reporter")
children = []


def kill_children():
    for p in children:
        if p.poll() is None:
            p.kill()
    for p in children:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def on_signal(sig, frame):
    kill_children()
    sys.exit(1)


atexit.register(kill_children)
signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGINT, on_signal)


def fail(msg, logs=None):
    print("FAIL:", msg)
    for path in logs or []:
        print("---", path)
        try:
            with open(path, errors="replace") as f:
                print(f.read()[-4000:])
        except OSError:
            pass
    sys.exit(1)


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def wait_for(what, cond, bound, logs):
    deadline = time.monotonic() + bound
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            fail("gave up after %ds waiting for %s" % (bound, what), logs)
        time.sleep(0.2)


def make_blurred(src, dst):
    """The sample slide's pixels, Gaussian-blurred, as a tiled TIFF at 0.5 um/px."""
    tool = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools",
                        "make_defocused_slide.py")
    subprocess.run(["/usr/bin/python3", tool, src, dst, "--from", "0"], check=True)


def metrics(port):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        m = re.match(r'^(gastroscreen_[a-z_]+)(\{[^}]*\})? ([0-9.eE+-]+)$', line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def main():
    if len(sys.argv) != 5:
        print(__doc__)
        return 2
    build, data, scratch = (os.path.abspath(a) for a in sys.argv[1:4])
    bound = int(sys.argv[4])
    try:
        import numpy  # noqa: F401
        import scipy  # noqa: F401
        import tifffile  # noqa: F401
        from PIL import Image  # noqa: F401
    except ImportError as e:
        print("SKIP: cannot make the out-of-focus slide: %s (python3-tifffile, python3-pil, "
              "python3-scipy)" % e)
        return 77
    d = os.path.join(scratch, "service")
    shutil.rmtree(d, ignore_errors=True)
    slides = os.path.join(d, "slides")
    for sub in ("slides", "journal", "spool", "reports", "logs"):
        os.makedirs(os.path.join(d, sub))
    slides = os.path.realpath(slides)
    files = {
        "sample": ("CMU-1-Small-Region.svs", "sample.svs"),
        "no_tissue": ("small.svs", "no-tissue.svs"),
        "broken": ("corrupt/broken.svs", "broken.svs"),
        "unopenable": ("corrupt/unopenable.tiff", "unopenable.tiff"),
    }
    path = {}
    for key, (src, name) in files.items():
        path[key] = os.path.join(slides, name)
        shutil.copyfile(os.path.join(data, src), path[key])
    path["blurred"] = os.path.join(slides, "blurred.tiff")
    make_blurred(os.path.join(data, "CMU-1-Small-Region.svs"), path["blurred"])

    p_intake, p_submit, p_query, p_events, p_work, p_metrics = free_ports(6)
    ep = lambda p: "tcp://127.0.0.1:%d" % p  # noqa: E731
    conf = os.path.join(d, "gastroscreen.conf")
    with open(conf, "w") as f:
        f.write("""[coordinator]
intake = {intake}
submit = {submit}
query = {query}
events = {events}
work = {work}
journal_dir = {d}/journal
spool_dir = {d}/spool
metrics = 127.0.0.1:{metrics}
[intake]
slide_roots = {slides}
[model]
bundle = {bundle}
[blur]
blur_min_valid = 4
[infer]
threads = 1
batch = 2
[reporter]
report_dir = {d}/reports
""".format(intake=ep(p_intake), submit=ep(p_submit), query=ep(p_query), events=ep(p_events),
           work=ep(p_work), d=d, metrics=p_metrics, slides=slides,
           bundle=os.path.join(build, "model", "default.safetensors")))

    logs = []

    def start(name, argv):
        log = os.path.join(d, "logs", name + ".log")
        logs.append(log)
        f = open(log, "w")
        p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT)
        children.append(p)
        return p, log

    coord, coord_log = start("gastroscreend",
                             [os.path.join(build, "daemon", "gastroscreend"), "--config", conf])
    wait_for("gastroscreend ready", lambda: "coordinator ready" in open(coord_log).read(), 120,
             logs)
    inbox_logs = {}
    for stage in STAGES + ("infer",):
        argv = [os.path.join(build, "stages", "gastroscreen-" + stage), "--config", conf]
        instance = "2" if stage == "infer" and "infer" in inbox_logs else "1"
        argv += ["--instance", instance]
        if stage in ("blur", "infer"):
            argv += ["--tile-inbox", "tcp://127.0.0.1:*", "--advertise-host", "127.0.0.1"]
        _, log = start("%s-%s" % (stage, instance), argv)
        if stage in ("blur", "infer"):
            inbox_logs.setdefault(stage, []).append(log)

    def welcomed():
        m = metrics(p_metrics)
        return all(m.get('gastroscreen_workers{stage="%s"}' % s, 0) >= (2 if s == "infer" else 1)
                   for s in STAGES)
    wait_for("every worker welcomed", welcomed, 180, logs)

    # 1. Garbage on every bound socket.
    probe = os.path.join(build, "tests", "service_probe")
    targets = [("intake", ep(p_intake)), ("submit", ep(p_submit)), ("query", ep(p_query)),
               ("work", ep(p_work))]
    for stage, stage_logs in inbox_logs.items():
        for log in stage_logs:
            m = re.search(r"tile inbox (tcp://\S+)", open(log).read())
            if not m:
                fail("no tile inbox line in " + log, logs)
            targets.append(("tiles", m.group(1)))
    for kind, endpoint in targets:
        r = subprocess.run([probe, "garbage", kind, endpoint], timeout=60)
        if r.returncode != 0:
            fail("garbage to %s %s: exit %d" % (kind, endpoint, r.returncode), logs)

    def counted():
        m = metrics(p_metrics)
        return all(m.get('gastroscreen_messages_malformed_total{socket="%s"}' % s, 0) +
                   m.get('gastroscreen_messages_wrong_type_total{socket="%s"}' % s, 0) > 0
                   for s in ("intake", "submit", "query", "work")) and m
    m = wait_for("the garbage counted on every coordinator socket", counted, 60, logs)
    for s in ("intake", "submit", "query", "work"):
        print("socket %s: malformed %d, wrong type %d" % (
            s, m.get('gastroscreen_messages_malformed_total{socket="%s"}' % s, 0),
            m.get('gastroscreen_messages_wrong_type_total{socket="%s"}' % s, 0)))
    if m.get('gastroscreen_messages_wrong_type_total{socket="work"}', 0) < 1:
        fail("a wrong-type envelope on work was not counted as such", logs)
    for p in children:
        if p.poll() is not None:
            fail("a process exited after the garbage (%s)" % p.args[0], logs)

    # 2. N slides announced -> exactly N verdicts.
    order = ["sample", "blurred", "no_tissue", "broken", "unopenable"]
    r = subprocess.run([probe, "announce", ep(p_intake), ep(p_events), str(bound), "5"] +
                       [path[k] for k in order], capture_output=True, text=True,
                       timeout=bound + 60)
    print(r.stdout)
    if r.returncode != 0:
        fail("not every slide got a verdict:\n" + r.stdout + r.stderr, logs)
    verdicts = [ln.split(" ", 3) for ln in r.stdout.splitlines() if ln.startswith("verdict ")]
    if len(verdicts) != len(order):
        fail("%d verdicts for %d slides" % (len(verdicts), len(order)), logs)
    got = {}
    for _, p, cls, rest in verdicts:
        if p in got:
            fail("two verdicts for " + p, logs)
        inferred = int(re.match(r"inferred=(\d+)", rest).group(1))
        reason = rest.split("reason=", 1)[1]
        got[p] = (cls, inferred, reason)
    states = {ln.split(" ")[1]: (ln.split(" ") + [""])[2] for ln in r.stdout.splitlines()
              if ln.startswith("states ")}
    workers = [ln.split(" ") for ln in r.stdout.splitlines() if ln.startswith("worker ")]

    cls, inferred, _ = got[path["sample"]]
    if cls not in ("VERDICT_CLASS_NEGATIVE", "VERDICT_CLASS_POSITIVE") or inferred < 1:
        fail("the sample slide: %s with %d tiles inferred" % (cls, inferred), logs)
    for k in ("broken", "unopenable"):
        cls, _, reason = got[path[k]]
        if cls != "VERDICT_CLASS_FAILED" or not reason.strip():
            fail("%s: %s, reason '%s'" % (k, cls, reason), logs)
    if got[path["no_tissue"]][0] != "VERDICT_CLASS_UNASSESSABLE":
        fail("the slide without tissue: " + got[path["no_tissue"]][0], logs)
    cls, inferred, reason = got[path["blurred"]]
    if cls != "VERDICT_CLASS_UNASSESSABLE" or "focus" not in reason or inferred != 0:
        fail("the out-of-focus slide: %s, %d inferred, reason '%s'" % (cls, inferred, reason),
             logs)
    if "INFERRING" in states.get(path["blurred"], ""):
        fail("the out-of-focus slide went through INFERRING: " + states[path["blurred"]], logs)

    # report.json names every method that judged the slide (the default bundle's foreground
    # and blur networks are trained here: network plan and blur check, each with its own
    # provenance); the out-of-focus slide never met the multi-task network or the screener,
    # the sample slide met both.
    reports = {}
    for rj in glob.glob(os.path.join(d, "reports", "*", "report.json")):
        with open(rj) as f:
            rep = json.load(f)
        reports[rep["slide"]["path"]] = rep
    for k, want in (("blurred", ["foreground", "blur"]),
                    ("sample", ["foreground", "blur", "multitask", "screener"])):
        rep = reports.get(path[k])
        if rep is None:
            fail("no report.json for the %s slide (have %s)" % (k, sorted(reports)), logs)
        models = rep["models"]
        names = [e["network"] for e in models]
        methods = [e["method"] for e in models]
        print("%s report models: %s" % (k, ", ".join("%s=%s" % e for e in zip(names, methods))))
        if names != want or not all(e["method"] == "network" and e["sha256"] for e in models) or \
                not all(e["trained_on"].startswith("trained by gastroscreen learn_") and
                        not e["untrained"] for e in models[:2]) or \
                not all(e["untrained"] for e in models[2:]):
            fail("the %s slide's report.json models: %s" % (k, models), logs)

    infer_workers = [w for w in workers if w[1] == "infer"]
    busy = [w for w in infer_workers if int(w[3].split("=")[1]) > 0]
    if len(infer_workers) != 2 or len(busy) != 2:
        fail("both infer workers should have processed tiles: %s" % infer_workers, logs)
    for stage in ("blur", "infer"):
        if not all(int(w[4].split("=")[1]) > 0 for w in workers if w[1] == stage):
            fail("garbage on a %s tile inbox was not counted: %s" % (stage, workers), logs)

    # The coordinator's count agrees: one verdict per slide, nothing more.
    m = metrics(p_metrics)
    total = sum(v for k, v in m.items() if k.startswith("gastroscreen_verdicts_total"))
    if total != len(order):
        fail("gastroscreen_verdicts_total sums to %d, expected %d" % (total, len(order)), logs)
    # And the histograms: one slide duration per verdict, infer round trips observed (each
    # +Inf bucket is cumulative and equals its _count).
    if m.get("gastroscreen_slide_duration_seconds_count") != len(order) or \
            m.get('gastroscreen_slide_duration_seconds_bucket{le="+Inf"}') != len(order):
        fail("gastroscreen_slide_duration_seconds counts %s, expected %d" %
             ({k: v for k, v in m.items() if k.startswith("gastroscreen_slide_duration")},
              len(order)), logs)
    infer_rtt = m.get('gastroscreen_tile_round_trip_seconds_count{stage="infer"}', 0)
    if infer_rtt < 1 or m.get('gastroscreen_tile_round_trip_seconds_bucket'
                               '{stage="infer",le="+Inf"}') != infer_rtt:
        fail("gastroscreen_tile_round_trip_seconds{stage=\"infer\"} counts %s" %
             {k: v for k, v in m.items() if k.startswith("gastroscreen_tile_round")}, logs)

    # Clean stop of everything.
    for p in children:
        p.send_signal(signal.SIGTERM)
    for p in children:
        try:
            rc = p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            fail("%s did not stop on SIGTERM" % p.args[0], logs)
        if rc != 0:
            fail("%s exited %d after SIGTERM" % (p.args[0], rc), logs)
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
