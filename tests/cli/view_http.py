#!/usr/bin/python3
"""`gastroscreen view` over HTTP, on the sample slide screened by view_setup.sh: the page, the
Deep Zoom XML, tiles (valid JPEGs of the size the geometry gives; 404 out of range or
malformed), the report files (and nothing else of the folder), /api/slides, /static/, and the
refusals: bad and unknown ids, traversal, symbolic links in the web folder, the report folder
and in place of a slide's folder, a file that is not the one the report was made from
(quickhash), a non-loopback address without a token, a token that is
required once set, and a clean exit on SIGTERM.

usage: view_http.py GASTROSCREEN FIXTURE_DIR
"""
import http.client
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from urllib.parse import urlsplit

from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from view_server import ViewServer, slide_id  # noqa: E402

exe, fixture = sys.argv[1], sys.argv[2]
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def get(base, path, headers=None, method="GET"):
    """(status, headers dict, body) of a raw request path (sent as is, no normalising)."""
    u = urlsplit(base)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    c.request(method, path, headers=headers or {})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, body


work = tempfile.mkdtemp(prefix="gs_view_http_")
out = os.path.join(work, "out")
shutil.copytree(os.path.join(fixture, "out"), out, symlinks=True)
web = os.path.join(work, "web")
shutil.copytree(os.path.join(os.environ["GS_SOURCE_DIR"], "web"), web)
sid = slide_id(out)
report = json.load(open(os.path.join(out, sid, "report.json")))

# Links that must not be followed: in the web folder, in the report folder, and a slide-id
# folder that is a link to the real one.
os.symlink("/etc/passwd", os.path.join(web, "passwd.html"))
os.remove(os.path.join(out, sid, "heatmap_overlay.png"))
os.symlink("/etc/hostname", os.path.join(out, sid, "heatmap_overlay.png"))
fake = "0123456789abcdef" if sid != "0123456789abcdef" else "fedcba9876543210"
os.symlink(os.path.join(out, sid), os.path.join(out, fake))
with open(os.path.join(out, sid, "notes.txt"), "w") as f:
    f.write("not a report file\n")

with ViewServer(exe, out, "--web", web) as srv:
    b = srv.base
    s, h, body = get(b, "/view/" + sid)
    check(s == 200 and b"viewer.js" in body and h["content-type"].startswith("text/html"),
          "viewer page: %d %s" % (s, h.get("content-type")))

    s, h, body = get(b, "/slides/%s/slide.dzi" % sid)
    check(s == 200, "dzi status %d" % s)
    img = ET.fromstring(body)
    ns = "{http://schemas.microsoft.com/deepzoom/2008}"
    size = img.find(ns + "Size")
    check(img.tag == ns + "Image" and img.get("TileSize") == "254" and img.get("Overlap") == "1"
          and img.get("Format") == "jpeg", "dzi attributes %s" % img.attrib)
    w, hgt = int(size.get("Width")), int(size.get("Height"))
    check((w, hgt) == (report["slide"]["width"], report["slide"]["height"]),
          "dzi size %dx%d (no bounds on this slide: the level-0 size)" % (w, hgt))

    # Levels: 2220 x 2967 halves to 1 x 1 in 13 levels; level 12 is 9 x 12 tiles of 254.
    top = 12
    cases = {  # (level, col, row): (width, height) = min(254, rest) + overlaps
        (top, 0, 0): (255, 255),
        (top, 1, 1): (256, 256),
        (top, 8, 11): (2220 - 8 * 254 + 1, 2967 - 11 * 254 + 1),
        (top - 1, 4, 5): (1110 - 4 * 254 + 1, 1484 - 5 * 254 + 1),
        (0, 0, 0): (1, 1),
        (3, 0, 0): (5, 6),  # 2220 x 2967 halved (rounding up) 9 times
    }
    for (lv, c, r), want in cases.items():
        s, h, body = get(b, "/slides/%s/slide_files/%d/%d_%d.jpeg" % (sid, lv, c, r))
        ok = s == 200 and h.get("content-type") == "image/jpeg" and body[:2] == b"\xff\xd8"
        check(ok, "tile %d/%d_%d: %d %s" % (lv, c, r, s, h.get("content-type")))
        if ok:
            im = Image.open(io.BytesIO(body))
            im.load()
            check(im.format == "JPEG" and im.size == want,
                  "tile %d/%d_%d: %s %s, want %s" % (lv, c, r, im.format, im.size, want))
    # A tile of the middle of the tissue is not blank.
    s, h, body = get(b, "/slides/%s/slide_files/%d/4_6.jpeg" % (sid, top))
    px = Image.open(io.BytesIO(body)).convert("L")
    check(min(px.getdata()) < 150, "tile 12/4_6 has no tissue")

    for p in ["slide_files/%d/9_0.jpeg" % top, "slide_files/%d/0_12.jpeg" % top,
              "slide_files/13/0_0.jpeg", "slide_files/1/2_0.jpeg", "slide_files/0/0_1.jpeg",
              "slide_files/99999999999/0_0.jpeg", "slide_files/12/0_0.png",
              "slide_files/12/0_0.jpeg.jpeg", "slide_files/12/-1_0.jpeg", "slide_files/12/0x_0.jpeg",
              "slide_files/12/0_0", "slide_files/12", "slide_files/", "slide.dzi/x", "slide",
              "notes.txt", "heatmap_overlay.png", "SLIDE.DZI"]:
        s, _, _ = get(b, "/slides/%s/%s" % (sid, p))
        check(s == 404, "/slides/<id>/%s: %d, want 404" % (p, s))

    for name, ctype in [("report.json", "application/json"), ("regions.geojson", None),
                        ("tiles.geojson.gz", None), ("heatmap.png", "image/png"),
                        ("background_overlay.png", "image/png")]:
        s, h, body = get(b, "/slides/%s/%s" % (sid, name))
        check(s == 200, "report file %s: %d" % (name, s))
        if ctype:
            check(h.get("content-type") == ctype, "%s: %s" % (name, h.get("content-type")))
        check(body == open(os.path.join(out, sid, name), "rb").read(), "%s: not the file" % name)
    s, _, body = get(b, "/slides/%s/report.json" % sid)
    check(json.loads(body)["slide"]["id"] == sid, "report.json of another slide")

    # Ids: the checked form only, and only of a report in OUT_DIR (not through a link).
    for p in ["/view/abc", "/view/" + sid.upper(), "/view/" + sid + "0", "/view/" + sid[:-1],
              "/view/" + sid + "/", "/view/" + sid + "/x", "/view/ffffffffffffffff",
              "/view/" + fake, "/slides/%s/report.json" % fake, "/slides/" + sid,
              "/slides/%s/" % sid, "/slides/ffffffffffffffff/slide.dzi", "/view/", "/view"]:
        s, _, _ = get(b, p)
        check(s in (400, 404), "%s: %d, want 404" % (p, s))

    # Traversal never reaches the filesystem: refused by the server or not found.
    for p in ["/slides/%s/../../../../etc/passwd" % sid, "/slides/%s/%%2e%%2e/report.json" % sid,
              "/static/../../../etc/passwd", "/static/%2e%2e/%2e%2e/etc/passwd",
              "/static/leaflet/../../../../etc/passwd", "/static//etc/passwd",
              "/static/passwd.html", "/static/leaflet/%2fetc%2fpasswd", "/static/..%5c..%5cetc"]:
        s, _, body = get(b, p)
        check(s in (400, 404) and b"root:" not in body, "%s: %d" % (p, s))

    s, h, body = get(b, "/static/leaflet/leaflet.js")
    check(s == 200 and b"Leaflet" in body[:200], "leaflet.js: %d" % s)
    s, _, _ = get(b, "/static/leaflet/images/layers.png")
    check(s == 200, "leaflet image: %d" % s)
    for name in ("viewer.js", "viewer.css"):
        s, _, _ = get(b, "/static/" + name)
        check(s == 200, "/static/%s: %d" % (name, s))

    s, h, body = get(b, "/api/slides")
    check(s == 200 and h.get("content-type", "").startswith("application/json"), "api %d" % s)
    api = json.loads(body)
    check(isinstance(api.get("generated_unix_ms"), int), "generated_unix_ms")
    check(len(api["slides"]) == 1, "api slides %d" % len(api["slides"]))
    e = api["slides"][0]
    keys = {"id", "name", "external_id", "state", "verdict", "score", "threshold", "warnings",
            "reason", "submitted_unix_ms", "decided_unix_ms", "seconds_to_verdict", "untrained",
            "viewer"}
    check(set(e) == keys, "api keys %s" % sorted(set(e) ^ keys))
    check(e["id"] == sid and e["viewer"] == "/view/" + sid and e["state"] == "done"
          and e["name"] == "CMU-1-Small-Region.svs" and e["verdict"] == report["verdict"]
          and e["untrained"] == report["untrained"], "api entry %s" % e)
    for v in ("negative", "positive", "unassessable", "failed", "pending"):
        s, _, body = get(b, "/api/slides?verdict=" + v)
        n = len(json.loads(body)["slides"]) if s == 200 else -1
        check(n == (1 if v == report["verdict"] else 0), "filter %s: %d slides" % (v, n))
    s, _, _ = get(b, "/api/slides?verdict=bogus")
    check(s == 400, "bad filter: %d" % s)

    # Only GET and HEAD.
    s, _, body = get(b, "/slides/%s/slide.dzi" % sid, method="HEAD")
    check(s == 200 and body == b"", "HEAD %d" % s)
    s, _, _ = get(b, "/slides/%s/slide.dzi" % sid, method="DELETE")
    check(s == 405, "DELETE %d" % s)
    status = srv.stop()
    check(status == 0, "exit status after SIGTERM %d" % status)

# More slides than the viewer keeps open (8): each is opened, closed for a newer one and opened
# again, and every tile is still the slide's own.
many = os.path.join(work, "many")
os.makedirs(many)
ids = ["%016x" % (0xa11ce0 + k) for k in range(11)]
for k in ids:
    shutil.copytree(os.path.join(out, sid), os.path.join(many, k), symlinks=True)
    rj = os.path.join(many, k, "report.json")
    r = json.load(open(rj))
    r["slide"]["id"] = k
    json.dump(r, open(rj, "w"))
with ViewServer(exe, many, "--web", web) as srv:
    want = None
    for rnd in range(2):
        for k in ids:
            s, _, body = get(srv.base, "/slides/%s/slide_files/12/4_6.jpeg" % k)
            want = want or body
            check(s == 200 and body == want, "round %d, slide %s: %d" % (rnd, k, s))
    check(srv.stop() == 0, "exit status with many slides")

# The report names the file it was made from by its quickhash: a file at the slide's path that
# is not that one (here: the report altered to expect another) is never drawn under it.
check(isinstance(report["slide"]["quickhash"], str) and len(report["slide"]["quickhash"]) == 64,
      "report.json has no slide quickhash: %s" % report["slide"])
other = os.path.join(work, "other")
os.makedirs(other)
oid = "%016x" % 0xb0b
shutil.copytree(os.path.join(out, sid), os.path.join(other, oid), symlinks=True)
rj = os.path.join(other, oid, "report.json")
r = json.load(open(rj))
r["slide"]["id"] = oid
r["slide"]["quickhash"] = "0" * 64
json.dump(r, open(rj, "w"))
with ViewServer(exe, other, "--web", web) as srv:
    for path in ("/slides/%s/slide.dzi" % oid, "/slides/%s/slide_files/12/4_6.jpeg" % oid):
        s, _, body = get(srv.base, path)
        check(s == 404 and b"cannot be opened" in body, "%s of a replaced file: %d" % (path, s))
    s, _, _ = get(srv.base, "/slides/%s/report.json" % oid)
    check(s == 200, "the report itself is still served: %d" % s)
    check(srv.stop() == 0, "exit status with a replaced file")

# Another address than loopback needs a token.
r = subprocess.run([exe, "view", out, "--listen", "0.0.0.0:0", "--web", web],
                   capture_output=True, text=True, timeout=30)
check(r.returncode == 1 and "token" in r.stderr, "0.0.0.0 without a token: %d %s" %
      (r.returncode, r.stderr))
# With a token, a request without it is refused; with it, answered.
token = "viewer-test-token-0123456789"
tf = os.path.join(work, "token")
with open(tf, "w") as f:
    f.write(token + "\n")
os.chmod(tf, 0o644)
r = subprocess.run([exe, "view", out, "--token-file", tf], capture_output=True, text=True,
                   timeout=30)
check(r.returncode == 1 and "chmod 600" in r.stderr, "a token file others can read: %d %s" %
      (r.returncode, r.stderr))
os.chmod(tf, 0o600)
with ViewServer(exe, out, "--web", web, "--token-file", tf) as srv:
    s, _, _ = get(srv.base, "/slides/%s/slide.dzi" % sid)
    check(s == 401, "no token: %d" % s)
    s, _, _ = get(srv.base, "/slides/%s/slide.dzi" % sid, {"Authorization": "Bearer wrong"})
    check(s == 401, "wrong token: %d" % s)
    s, _, _ = get(srv.base, "/slides/%s/slide.dzi" % sid, {"Authorization": "Bearer " + token})
    check(s == 200, "token: %d" % s)
r = subprocess.run([exe, "view"], capture_output=True, text=True, timeout=30)
check(r.returncode == 2, "no OUT_DIR: %d" % r.returncode)
r = subprocess.run([exe, "view", os.path.join(work, "missing")], capture_output=True, text=True,
                   timeout=30)
check(r.returncode == 1 and "missing" in r.stderr, "missing OUT_DIR: %d" % r.returncode)

shutil.rmtree(work)
if failures:
    print("%d failures" % len(failures))
    sys.exit(1)
print("view over HTTP: all checks passed")
