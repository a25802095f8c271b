"""Real gastroscreen processes on loopback, for the fault tests and the pipeline benchmark.

A Cluster owns a scratch folder (config, journal, spool, slides, reports, logs), free
loopback ports for the coordinator's five endpoints, and every child process it starts; close()
kills what is left (SIGKILL), and an atexit hook and SIGTERM/SIGINT handlers make sure no
child outlives the script. Every wait is bounded: wait_for() polls a condition until a deadline
and raises Timeout with what it was waiting for.
"""
import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

STAGES = ("tiler", "foreground", "blur", "infer", "screener", "reporter")
MODEL_STAGES = ("foreground", "blur", "infer", "screener")
TERMINAL = ("DONE", "FAILED")


class Timeout(Exception):
    pass


def free_ports(n):
    """n distinct TCP ports free on 127.0.0.1 right now (bound by the kernel, then released)."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def wait_for(what, cond, timeout, poll=0.2):
    """Polls cond() until it returns a true value (returned) or timeout seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise Timeout("gave up after %ds waiting for %s" % (timeout, what))
        time.sleep(poll)


_live = []


def _kill_all():
    for p in list(_live):
        if p.poll() is None:
            try:
                p.kill()
                p.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass


def _on_signal(sig, frame):
    _kill_all()
    sys.exit(128 + sig)


atexit.register(_kill_all)
signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGINT, _on_signal)


class Proc:
    def __init__(self, name, argv, log_path, env=None):
        self.name, self.argv, self.log_path = name, argv, log_path
        self.log = open(log_path, "ab")
        self.p = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                  stdin=subprocess.DEVNULL)
        _live.append(self.p)
        self.pid = self.p.pid

    def alive(self):
        return self.p.poll() is None

    def kill9(self):
        os.kill(self.pid, signal.SIGKILL)
        self.p.wait(timeout=30)

    def term(self, timeout=30):
        if self.alive():
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=10)
        return self.p.returncode

    def text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def cpu_seconds(self):
        """User + system CPU time the live process has used so far, or None once it is gone."""
        try:
            with open("/proc/%d/stat" % self.pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        # utime and stime are fields 14 and 15 of proc(5); fields[0] here is field 3.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def vmhwm_kb(self):
        """Peak resident set (VmHWM) of the live process in kB, or None once it is gone."""
        try:
            with open("/proc/%d/status" % self.pid) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None


class Cluster:
    """The coordinator, stage workers and CLI calls of one test, in scratch folder `root`."""

    def __init__(self, build, bundle, root, coord_settings=None, infer_batch=4, quiet=False,
                 extra_config=""):
        self.build, self.bundle, self.root = build, bundle, root
        self.gastroscreend = os.path.join(build, "daemon", "gastroscreend")
        self.cli = os.path.join(build, "daemon", "gastroscreen")
        for exe in [self.gastroscreend, self.cli] + [self.stage_exe(s) for s in STAGES]:
            if not os.access(exe, os.X_OK):
                raise RuntimeError("not built: " + exe)
        shutil.rmtree(root, ignore_errors=True)
        for d in ("slides", "journal", "spool", "reports", "logs"):
            os.makedirs(os.path.join(root, d))
        ports = free_ports(6)
        names = ("intake", "submit", "query", "events", "work")
        self.ep = {n: "tcp://127.0.0.1:%d" % p for n, p in zip(names, ports)}
        self.metrics_port = ports[5]
        self.infer_batch = infer_batch
        self.quiet = quiet
        self.procs = []
        self.coordinator = None
        self.config = os.path.join(root, "gastroscreen.conf")
        lines = ["[coordinator]"]
        lines += ["%s = %s" % (n, self.ep[n]) for n in names]
        lines += ["journal_dir = " + os.path.join(root, "journal"),
                  "spool_dir = " + os.path.join(root, "spool"),
                  "metrics = 127.0.0.1:%d" % self.metrics_port]
        for k, v in (coord_settings or {}).items():
            lines.append("%s = %s" % (k, v))
        lines += ["[intake]", "slide_roots = " + os.path.join(root, "slides"),
                  "[model]", "bundle = " + bundle,
                  # The coordinator names each slide's report folder from this key.
                  "[reporter]", "report_dir = " + os.path.join(root, "reports")]
        if extra_config:  # more sections, e.g. "[blur]\nevery_tile = 0"
            lines.append(extra_config)
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.counter = 0

    def stage_exe(self, stage):
        return os.path.join(self.build, "stages", "gastroscreen-" + stage)

    def log(self, name):
        self.counter += 1
        return os.path.join(self.root, "logs", "%02d-%s.log" % (self.counter, name))

    def start_coordinator(self):
        argv = [self.gastroscreend, "--config", self.config]
        self.coordinator = Proc("gastroscreend", argv, self.log("gastroscreend"))
        self.procs.append(self.coordinator)
        c = self.coordinator
        wait_for("gastroscreend's ready line",
                 lambda: "coordinator ready" in c.text() or not c.alive() and
                 self._fail("gastroscreend exited early", c), 120)
        return c

    def start_worker(self, stage, instance, extra=()):
        argv = [self.stage_exe(stage), "--coordinator", self.ep["work"],
                "--instance", str(instance), "--heartbeat-ms", "1000"]
        if stage in MODEL_STAGES:
            argv += ["--model", self.bundle]
        if stage in ("blur", "infer"):
            argv += ["--tile-inbox", "tcp://127.0.0.1:*", "--advertise-host", "127.0.0.1"]
        if stage == "infer":
            argv += ["--batch", str(self.infer_batch)]
        if stage == "reporter":
            argv += ["--report-dir", os.path.join(self.root, "reports")]
        argv += list(extra)
        p = Proc("%s.%s" % (stage, instance), argv, self.log("%s-%s" % (stage, instance)))
        self.procs.append(p)
        return p

    def start_all_workers(self, infer_workers=1):
        ws = {}
        for s in STAGES:
            for i in range(1, (infer_workers if s == "infer" else 1) + 1):
                ws["%s.%d" % (s, i)] = self.start_worker(s, i)
        return ws

    def add_slide(self, src, name):
        """Copies src into the slide root (a copy, not a link: the identity is the real path)."""
        dst = os.path.join(self.root, "slides", name)
        shutil.copyfile(src, dst)
        return dst

    def run_cli(self, args, timeout=60):
        r = subprocess.run([self.cli] + args, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        return r.returncode, r.stdout, r.stderr

    def submit(self, paths):
        rc, out, err = self.run_cli(["submit"] + list(paths) + ["--config", self.config,
                                                               "--endpoint",
                                                               "submit=" + self.ep["submit"]])
        if rc != 0:
            raise RuntimeError("submit failed (%d): %s%s" % (rc, out, err))
        ids = {}
        for line in out.splitlines():
            sid, status, path = line.split(" ", 2)
            if status != "accepted":
                raise RuntimeError("submit: " + line)
            ids[path] = sid
        if len(ids) != len(paths):
            raise RuntimeError("submit printed %d lines for %d paths: %s" %
                               (len(ids), len(paths), out))
        return ids

    def status(self, slide=None):
        """The coordinator's answer to a state query (list of dicts), or None without one."""
        args = ["status"] + ([slide] if slide else []) + [
            "--json", "--timeout", "3", "--config", self.config,
            "--endpoint", "query=" + self.ep["query"]]
        try:
            rc, out, err = self.run_cli(args, timeout=30)
        except subprocess.TimeoutExpired:
            return None
        if rc != 0:
            return None
        return json.loads(out)

    def start_watch(self):
        argv = [self.cli, "watch", "--since", "0", "--timeout", "60", "--config", self.config,
                "--endpoint", "events=" + self.ep["events"],
                "--endpoint", "query=" + self.ep["query"]]
        p = Proc("watch", argv, self.log("watch"))
        self.procs.append(p)
        return p

    def metrics(self):
        import urllib.request
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.metrics_port,
                                        timeout=5) as r:
                return r.read().decode()
        except OSError:
            return ""

    def _fail(self, msg, p):
        raise RuntimeError("%s; its log:\n%s" % (msg, p.text()))

    def close(self):
        for p in reversed(self.procs):
            if p.alive():
                p.p.kill()
                p.p.wait(timeout=10)
