"""A live /metrics scrape of gastroscreend, for the monitoring checks that read it.

Starts gastroscreend on loopback (free ports, a scratch journal and spool, no workers) with the
given bundle, waits for its readiness line, fetches /metrics, stops it with SIGTERM and writes
the text to OUT. On the way it checks what only a live daemon can show: the info series say
this build's version and compiler and the loaded bundle (its file name and the SHA-256 of its bytes, and
untrained="true" exactly when its provenance says untrained), and the response is served with
the Prometheus text content type.

usage: /usr/bin/python3 scrape.py GASTROSCREEND BUNDLE VERSION SCRATCH OUT
Exit 0: pass (OUT written); 1: fail.
"""
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request


def fail(msg, log=None):
    print("FAIL:", msg)
    if log and os.path.exists(log):
        with open(log, errors="replace") as f:
            print("--- gastroscreend log\n" + f.read()[-4000:])
    sys.exit(1)


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def info_labels(text, name):
    """The label set of the one series of an info family, as a dict."""
    lines = [l for l in text.splitlines() if l.startswith(name + "{")]
    if len(lines) != 1:
        fail("want exactly one %s series, got %d" % (name, len(lines)))
    m = re.match(r'^%s\{(.*)\} 1$' % re.escape(name), lines[0])
    if not m:
        fail("%s is not a series of value 1: %s" % (name, lines[0]))
    return dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(1)))


def main():
    if len(sys.argv) != 6:
        print(__doc__)
        return 2
    exe, bundle, version, scratch, out = sys.argv[1:]
    d = os.path.join(os.path.abspath(scratch), "monitoring-scrape")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(os.path.join(d, "slides"))
    port = free_port()
    conf = os.path.join(d, "c.conf")
    with open(conf, "w") as f:
        f.write("[coordinator]\n")
        for key in ("intake", "submit", "query", "events", "work"):
            f.write("%s = tcp://127.0.0.1:*\n" % key)
        f.write("journal_dir = %s/journal\nspool_dir = %s/spool\n" % (d, d))
        f.write("metrics = 127.0.0.1:%d\n" % port)
        f.write("[intake]\nslide_roots = %s/slides\n[model]\nbundle = %s\n" % (d, bundle))
    log = os.path.join(d, "log")
    with open(log, "w") as lf:
        p = subprocess.Popen([exe, "--config", conf], stdout=lf, stderr=subprocess.STDOUT)
    try:
        # Waiting for a log line, not timing anything: the bound is only a safety net.
        deadline = time.monotonic() + 120
        while "coordinator ready" not in open(log, errors="replace").read():
            if p.poll() is not None:
                fail("gastroscreend exited early (status %s)" % p.returncode, log)
            if time.monotonic() > deadline:
                fail("no readiness line", log)
            time.sleep(0.1)
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=30) as r:
                ctype = r.headers.get("Content-Type", "")
                text = r.read().decode("utf-8")
        except OSError as e:
            fail("GET /metrics: %s" % e, log)
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    if p.returncode != 0:
        fail("gastroscreend exit status %s after SIGTERM" % p.returncode, log)
    if not ctype.startswith("text/plain; version=0.0.4"):
        fail("Content-Type %r is not the Prometheus text format" % ctype)

    build = info_labels(text, "gastroscreen_build_info")
    if build.get("version") != version:
        fail("gastroscreen_build_info version %r, the build says %r" % (build.get("version"),
                                                                         version))
    if not re.match(r"^(gcc|clang) \d+\.\d+\.\d+$|^unknown$", build.get("compiler", "")):
        fail("gastroscreen_build_info compiler label %r is not 'gcc|clang X.Y.Z'" % build)
    model = info_labels(text, "gastroscreen_model_info")
    with open(bundle, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    if model.get("sha256") != sha:
        fail("gastroscreen_model_info sha256 %r, the bundle's is %s" % (model.get("sha256"), sha))
    if model.get("bundle") != os.path.basename(bundle):
        fail("gastroscreen_model_info bundle %r, want %r" % (model.get("bundle"),
                                                            os.path.basename(bundle)))
    said_untrained = "untrained" in model.get("trained_on", "")
    if model.get("untrained") != ("true" if said_untrained else "false"):
        fail("gastroscreen_model_info untrained=%r but trained_on=%r" %
             (model.get("untrained"), model.get("trained_on")))
    with open(out, "w") as f:
        f.write(text)
    print("scraped %d lines; build %s; model %s (untrained=%s)" %
          (len(text.splitlines()), build, model.get("bundle"), model.get("untrained")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
