"""The HTTP surface of a real gastroscreend, as a browser or a curl user meets it.

gastroscreend with its six stage workers on loopback (tests/fault/gsproc.Cluster) screens the
bundled sample slide (tissue: a positive or negative verdict with a score) and a slide without
tissue (unassessable), with web_dir pointing at a copy of web/ that holds two symlinks out.
Then every endpoint: the worklist page and its assets (CSP, types), /api/slides (fields, the
submitted ids, newest first, verdicts, scores, viewer links, untrained as /metrics says,
filters, a bad filter), the viewer of the sample (page, report, .dzi, a tile, 404s),
/api/throughput (six stages with workers), /metrics on the same port (with the infer worker,
run with --precision bf16, counted under its precision: bf16, or fp32 after its logged
fallback on a CPU without bf16; the same precision in report.json and the status query),
404s, traversal attempts (.., %2e%2e, encoded slashes and NUL, the symlinks), HEAD, 405 for
other methods, a request body, an over-long path and header. A second gastroscreend bound to
0.0.0.0 shows the token rules: no start without http_token_file or with a 0644 one, a log line
naming the file and never the token, 401 without it, Bearer, the ?token= redirect and cookie.

usage: web_gastroscreend.py --build DIR --bundle FILE --data DIR --source DIR --scratch DIR
Every wait is bounded (a deadline, not a timing assertion).
"""
import argparse
import http.client
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "fault"))
import gsproc  # noqa: E402
from gsproc import wait_for  # noqa: E402

SLIDE = "CMU-1-Small-Region.svs"
BLANK = "small.svs"
SLIDE_TIMEOUT = 1800  # the sanitize build runs the network several times slower
TOKEN = "web-test-token-0123456789abcdef0123"


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def raw(port, request, host="127.0.0.1"):
    """Sends request bytes as they are (no client normalising the path); returns (status,
    headers text, body bytes); status 0 when the server hung up without an answer."""
    s = socket.create_connection((host, port), timeout=30)
    try:
        try:
            s.sendall(request)
        except OSError:
            pass
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    if not data.startswith(b"HTTP/1.1 "):
        return 0, "", b""
    head, _, body = data.partition(b"\r\n\r\n")
    return int(data[9:12]), head.decode("latin-1"), body


def get(port, target, method="GET", headers=""):
    req = "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%s\r\n" % (method, target, headers)
    return raw(port, req.encode("latin-1"))


def header(head, name):
    for line in head.split("\r\n")[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == name.lower():
            return v.strip()
    return None


def api(port, path, token=None):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path))
    if token:
        req.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=30) as r:
        check(r.headers["Content-Type"] == "application/json", (path, r.headers))
        check(r.headers["Cache-Control"] == "no-store", (path, r.headers))
        return json.loads(r.read())


def api_any(port, path):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=30) as r:
        return json.loads(r.read())


def pages(port, web):
    status, head, body = get(port, "/")
    check(status == 200, "/: %d" % status)
    check(header(head, "Content-Type") == "text/html; charset=utf-8", head)
    check("default-src 'self'" in (header(head, "Content-Security-Policy") or ""), head)
    check(header(head, "X-Content-Type-Options") == "nosniff", head)
    check(b"/static/worklist.js" in body and b"not a diagnosis" in body, body[:300])
    for name, ctype in (("worklist.js", "text/javascript; charset=utf-8"),
                        ("style.css", "text/css; charset=utf-8")):
        status, head, body = get(port, "/static/" + name)
        check(status == 200, "/static/%s: %d" % (name, status))
        check(header(head, "Content-Type") == ctype, head)
        with open(os.path.join(web, name), "rb") as f:
            check(body == f.read(), "/static/%s differs from the file" % name)
    if os.path.exists("/usr/share/javascript/leaflet/leaflet.js"):
        status, head, _ = get(port, "/static/leaflet/leaflet.js")
        check(status == 200, "/static/leaflet/leaflet.js: %d" % status)
    # HEAD: the GET's headers, no body
    status, head, body = get(port, "/static/style.css", "HEAD")
    check(status == 200 and body == b"", (status, body[:50]))
    check(header(head, "Content-Length") == str(os.path.getsize(os.path.join(web, "style.css"))),
          head)
    status, _, body = get(port, "/api/slides", "HEAD")
    check(status == 200 and body == b"", "HEAD /api/slides: %d" % status)
    print("web: pages, assets, HEAD ok", flush=True)


def refusals(port):
    for target in ("/nope", "/static/nope.js", "/static/", "/api/nothing", "/api/slidesx",
                   "/worklist.js", "/static/evil.css", "/static/etc/passwd",
                   "/static/etc/hostname"):
        status, _, body = get(port, target)
        check(status == 404, "%s: %d, want 404" % (target, status))
        check(b"root:" not in body, "%s leaked a file" % target)
    for target in ("/static/../../../../etc/passwd", "/static/%2e%2e/%2e%2e/etc/passwd",
                   "/static/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd", "/static/..%2f..%2fetc%2fpasswd",
                   "/static/style.css%00.js", "/static/%00", "/static//etc/passwd",
                   "/static/%5c..%5cetc", "/static/%c0%ae%c0%ae/etc/passwd", "/%zz",
                   "/static/.%2e/.%2e/etc/passwd"):
        status, _, body = get(port, target)
        check(status == 400, "%s: %d, want 400" % (target, status))
        check(b"root:" not in body, "%s leaked a file" % target)
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        status, head, _ = get(port, "/api/slides", method, "Content-Length: 0\r\n")
        check(status == 405, "%s: %d, want 405" % (method, status))
        check(header(head, "Allow") == "GET, HEAD", head)
    status, _, _ = raw(port, b"GET /api/slides HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                             b"Connection: close\r\n\r\nbody")
    check(status == 413, "a GET with a body: %d, want 413" % status)
    status, _, _ = get(port, "/" + "a" * 1100)
    check(status == 414, "a 1101-byte path: %d, want 414" % status)
    status, _, _ = get(port, "/" + "a" * 200000)
    check(status in (0, 414), "a 200 kB path: %d" % status)
    status, _, _ = get(port, "/", headers="X-Big: %s\r\n" % ("b" * 100000))
    check(status in (0, 413, 431), "a 100 kB header: %d" % status)
    status, _, _ = get(port, "/api/throughput")
    check(status == 200, "the server stopped answering after the refusals: %d" % status)
    print("web: 404, traversal, 405, 413, 414, 431 ok", flush=True)


def ran_precision(infer):
    """What an infer worker asked for bf16 runs: bf16, or fp32 after its one fallback line."""
    return "fp32" if "no native bf16" in infer.text() else "bf16"


def precision_recorded(c, port, sample, blank, want):
    """The infer worker's precision in the sample's report.json (the multi-task entry only),
    in the status query of both slides (none for the one without inferred tiles), and on
    /metrics as the label of the tiles it inferred."""
    rep = api_any(port, "/slides/%s/report.json" % sample)
    by_net = {m["network"]: m for m in rep["models"]}
    check(by_net["multitask"]["precision"] == want, (want, by_net))
    check(all(m["precision"] is None for n, m in by_net.items() if n != "multitask"), by_net)
    st = c.status(sample)[0]
    check(st["verdict"]["precision"] == want, (want, st))
    st = c.status(blank)[0]
    check(st["verdict"]["precision"] is None, st)
    metrics = c.metrics()
    line = [l for l in metrics.splitlines() if l.startswith("gastroscreen_tiles_inferred_total{")]
    check(len(line) == 1 and line[0].startswith(
        'gastroscreen_tiles_inferred_total{precision="%s"} ' % want) and
        float(line[0].split()[-1]) == rep["tiles"]["inferred"], (want, line, rep["tiles"]))
    print("web: precision %s in report.json, status and /metrics" % want, flush=True)


def worklist(c, port, ids, infer):
    sample, blank = ids[SLIDE], ids[BLANK]

    def decided():
        d = api(port, "/api/slides")
        by_id = {s["id"]: s for s in d["slides"]}
        if all(by_id.get(i, {}).get("verdict") for i in (sample, blank)):
            return d
        return None
    d = wait_for("both verdicts on /api/slides", decided, SLIDE_TIMEOUT, poll=2.0)
    slides = d["slides"]
    check(isinstance(d["generated_unix_ms"], int), d)
    check(len(slides) == 2, slides)
    times = [s["submitted_unix_ms"] for s in slides]
    check(times == sorted(times, reverse=True), "not newest first: %s" % times)
    by_id = {s["id"]: s for s in slides}
    metrics = c.metrics()
    untrained = 'untrained="true"' in metrics
    check("gastroscreen_model_info{" in metrics, "no model info on /metrics")
    fields = {"id", "name", "external_id", "state", "verdict", "score", "threshold", "warnings",
              "reason", "submitted_unix_ms", "decided_unix_ms", "seconds_to_verdict",
              "untrained", "viewer"}
    for s in slides:
        check(fields <= set(s), "missing fields: %s" % (fields - set(s)))
        check(s["state"] == "done", s)
        check(s["viewer"] == "/view/" + s["id"], s)
        check(s["untrained"] is untrained, (s, untrained))
        check(isinstance(s["warnings"], list), s)
        check(s["seconds_to_verdict"] >= 0 and
              s["decided_unix_ms"] >= s["submitted_unix_ms"], s)
    a = by_id[sample]
    check(a["name"] == SLIDE, a)
    check(a["verdict"] in ("positive", "negative"), a)
    check(0.0 <= a["score"] <= 1.0 and isinstance(a["threshold"], float), a)
    check((a["score"] > a["threshold"]) == (a["verdict"] == "positive"), a)
    b = by_id[blank]
    check(b["name"] == BLANK and b["verdict"] == "unassessable" and b["score"] is None, b)
    check("no tissue" in (b["reason"] or ""), b)
    # The same verdicts as the coordinator's state query.
    for sid in (sample, blank):
        st = c.status(sid)[0]
        check(st["verdict"]["class"] == by_id[sid]["verdict"], (st, by_id[sid]))

    for verdict, want in (("unassessable", [blank]), (a["verdict"], [sample]), ("pending", []),
                          ("failed", [])):
        got = [s["id"] for s in api(port, "/api/slides?verdict=" + verdict)["slides"]]
        check(got == want, "?verdict=%s: %s, want %s" % (verdict, got, want))
    status, _, body = get(port, "/api/slides?verdict=bogus")
    check(status == 400 and b"unknown verdict" in body, (status, body))

    # The viewer of a screened slide on the same port: its page, the report it draws from, the
    # slide's Deep Zoom description and a tile of the top level (a JPEG); an unknown id is 404.
    status, head, body = get(port, a["viewer"])
    check(status == 200 and b"viewer.js" in body, (status, body[:200]))
    rep = api_any(port, "/slides/%s/report.json" % sample)
    check(rep["slide"]["id"] == sample and rep["verdict"] == a["verdict"], rep)
    status, head, body = get(port, "/slides/%s/slide.dzi" % sample)
    check(status == 200 and b'TileSize="254"' in body, (status, body[:300]))
    top = 12  # ceil(log2(2967)): the level of the full-resolution tiles
    status, head, body = get(port, "/slides/%s/slide_files/%d/0_0.jpeg" % (sample, top))
    check(status == 200 and body[:3] == b"\xff\xd8\xff", (status, head))
    for bad in ("/slides/%s/slide_files/%d/99_0.jpeg" % (sample, top), "/view/0123456789abcdef",
                "/slides/0123456789abcdef/slide.dzi", "/slides/%s/../../etc/passwd" % sample):
        status, _, _ = get(port, bad)
        check(status in (400, 404), "%s: %d" % (bad, status))

    t = api(port, "/api/throughput")
    stages = {s["stage"]: s for s in t["stages"]}
    check(set(stages) == {"foreground", "tiler", "blur", "infer", "screener", "reporter"}, t)
    for s in stages.values():
        check(s["workers"] == 1, "one worker per stage: %s" % t)
        check(isinstance(s["queue_depth"], int) and isinstance(s["tiles_per_second"], float), s)
    check(t["slides_in_flight"] == 0 and t["slides_waiting"] == 0, t)
    status, head, body = get(port, "/metrics")
    check(status == 200 and body.startswith(b"# HELP gastroscreen_"), (status, body[:80]))
    precision_recorded(c, port, sample, blank, ran_precision(infer))
    print("web: worklist %s %s (score %.3f), %s unassessable; filters, throughput ok" %
          (sample, a["verdict"], a["score"], blank), flush=True)


def token_server(build, bundle, scratch):
    """A coordinator without workers bound to 0.0.0.0: the token rules."""
    c = gsproc.Cluster(build, bundle, os.path.join(scratch, "token"), quiet=True)
    port = c.metrics_port
    token_file = os.path.join(c.root, "http.token")
    with open(c.config) as f:
        conf = f.read()

    def configure(extra):
        with open(c.config, "w") as f:
            f.write(conf.replace("metrics = 127.0.0.1:%d" % port,
                                 "metrics = 0.0.0.0:%d%s" % (port, extra)))

    def refused_start(why):
        r = subprocess.run([c.gastroscreend, "--config", c.config], capture_output=True,
                           text=True, timeout=120, stdin=subprocess.DEVNULL)
        check(r.returncode == 1, "%s: exit %d" % (why, r.returncode))
        return r.stderr

    configure("")
    err = refused_start("0.0.0.0 without a token")
    check("token" in err and "0.0.0.0" in err, err)
    with open(token_file, "w") as f:
        f.write(TOKEN + "\n")
    os.chmod(token_file, 0o644)
    configure("\nhttp_token_file = " + token_file)
    err = refused_start("a 0644 token file")
    check("chmod 600" in err and TOKEN not in err, err)
    os.chmod(token_file, stat.S_IRUSR | stat.S_IWUSR)
    try:
        p = c.start_coordinator()
        wait_for("the token line", lambda: token_file in p.text(), 60)
        check(TOKEN not in p.text(), "the token is in the log")
        check("needs the token" in p.text(), p.text())
        status, head, _ = get(port, "/api/slides")
        check(status == 401 and header(head, "WWW-Authenticate") == "Bearer", (status, head))
        check(get(port, "/metrics")[0] == 401, "/metrics without the token")
        check(get(port, "/static/../x")[0] == 400, "a bad path is refused before the token")
        check(get(port, "/", headers="Authorization: Bearer %sx\r\n" % TOKEN)[0] == 401,
              "a wrong token")
        d = api(port, "/api/slides", TOKEN)
        check(d["slides"] == [], d)
        check(get(port, "/metrics", headers="Authorization: Bearer %s\r\n" % TOKEN)[0] == 200,
              "/metrics with the token")
        status, head, _ = get(port, "/?token=" + TOKEN + "&x=1")
        check(status == 303 and header(head, "Location") == "/?x=1", (status, head))
        cookie = header(head, "Set-Cookie")
        check(cookie and cookie.startswith("gs_token_%d=%s;" % (port, TOKEN)) and "HttpOnly" in cookie,
              head)
        check(get(port, "/", headers="Cookie: gs_token_%d=%s\r\n" % (port, TOKEN))[0] == 200, "cookie")
        check(get(port, "/?token=wrong-wrong-wrong-wrong")[0] == 401, "a wrong ?token=")
        # Reachable on the host's other addresses too (0.0.0.0), still with the token.
        addrs = [a[4][0] for a in socket.getaddrinfo(socket.gethostname(), port, socket.AF_INET)
                 if not a[4][0].startswith("127.")]
        if addrs:
            check(raw(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                      addrs[0])[0] == 401, "no token from " + addrs[0])
        print("web: token rules on 0.0.0.0 ok", flush=True)
    finally:
        c.close()


def main():
    ap = argparse.ArgumentParser()
    for a in ("--build", "--bundle", "--data", "--source", "--scratch"):
        ap.add_argument(a, required=True)
    args = ap.parse_args()
    for f in (args.bundle, os.path.join(args.data, SLIDE), os.path.join(args.data, BLANK)):
        if not os.path.exists(f):
            print("SKIP: %s does not exist" % f)
            return 77
    scratch = os.path.abspath(args.scratch)
    shutil.rmtree(scratch, ignore_errors=True)
    os.makedirs(scratch)
    # A copy of web/ with a symlink to a file outside and one to a folder outside.
    web = os.path.join(scratch, "web")
    shutil.copytree(os.path.join(args.source, "web"), web)
    os.symlink("/etc/passwd", os.path.join(web, "evil.css"))
    os.symlink("/etc", os.path.join(web, "etc"))
    c = gsproc.Cluster(args.build, args.bundle, os.path.join(scratch, "main"), quiet=True,
                       coord_settings={"web_dir": web})
    try:
        p = c.start_coordinator()
        port = c.metrics_port
        check("web pages and /metrics on http://127.0.0.1:%d/ (loopback only" % port in p.text(),
              p.text())
        d = api(port, "/api/slides")
        check(d["slides"] == [], d)
        pages(port, web)
        refusals(port)
        # The infer worker in bf16: its precision must reach the records (one worker per stage).
        workers = {s: c.start_worker(s, 1, ("--precision", "bf16") if s == "infer" else ())
                   for s in gsproc.STAGES}
        ids = c.submit([c.add_slide(os.path.join(args.data, SLIDE), SLIDE),
                        c.add_slide(os.path.join(args.data, BLANK), BLANK)])
        ids = {os.path.basename(k): v for k, v in ids.items()}
        worklist(c, port, ids, workers["infer"])
    finally:
        c.close()
    token_server(args.build, args.bundle, scratch)
    shutil.rmtree(scratch, ignore_errors=True)
    print("ok: the worklist, its JSON, the pages and the HTTP refusals of gastroscreend")
    return 0


if __name__ == "__main__":
    sys.exit(main())
