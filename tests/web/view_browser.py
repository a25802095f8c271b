#!/usr/bin/python3
"""The slide viewer in a real browser: headless Chromium (Debian's chromium) opens
/view/<id> of the sample slide screened by tests/cli/view_setup.sh, served by
`gastroscreen view`, and the screenshots are judged by their pixels:

  - with every layer hidden (the page's own checkboxes, clicked by ?hide= once the first tiles
    have loaded), the map shows the slide: H&E pink and purple over a white background, not a
    blank map or an error page;
  - with the heat map shown at full opacity, the same area is covered by the heat map's
    colours (blue through red) that the slide alone never has: the overlay toggles; the
    background layer, switched on (?show=), greys the non-tissue tiles;
  - the page's DOM after its scripts ran: ready, no error shown, the untrained banner shown
    exactly when report.json says the model is untrained;
  - the worklist page ("/") after its script ran: the slide's row with its viewer link, the
    count, the untrained banner as report.json says, and a screenshot that is a page of text.

Exit 77 (ctest SKIP_RETURN_CODE) only when no chromium is installed. The screenshots stay in
FIXTURE_DIR/screenshots for people to look at.

usage: view_browser.py GASTROSCREEN FIXTURE_DIR
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

from PIL import Image

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "cli"))
from view_server import ViewServer, slide_id  # noqa: E402

exe, fixture = sys.argv[1], sys.argv[2]
chromium = shutil.which("chromium") or shutil.which("chromium-browser")
if not chromium:
    print("SKIP: chromium is not installed (Debian package 'chromium'; .ci/packages.txt lists "
          "it): the viewer was not tested in a browser")
    sys.exit(77)

W, H = 1200, 900
out = os.path.join(fixture, "out")
shots = os.path.join(fixture, "screenshots")
os.makedirs(shots, exist_ok=True)
sid = slide_id(out)
report = json.load(open(os.path.join(out, sid, "report.json")))
profile = tempfile.mkdtemp(prefix="gs_chromium_")
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def chromium_run(*args):
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--user-data-dir=" + profile, "--window-size=%d,%d" % (W, H),
           "--virtual-time-budget=15000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def screenshot(url, name):
    path = os.path.join(shots, name)
    if os.path.exists(path):
        os.remove(path)
    r = chromium_run("--screenshot=" + path, url)
    check(os.path.exists(path), "no screenshot of %s: %s" % (url, r.stderr[-2000:]))
    return Image.open(path).convert("RGB") if os.path.exists(path) else None


def map_pixels(img):
    """The map's pixels: below the header, left of the layer panel (web/viewer.css)."""
    return list(img.crop((0, 130, 900, H)).getdata())


def is_tissue(p):  # H&E: pink (eosin) to purple (haematoxylin), darker than glass
    r, g, b = p
    return min(p) < 225 and r > g + 15 and b > g + 5


def is_heat(p):  # gs_heatmap_colour: blue, cyan, green, yellow, red, saturated
    r, g, b = p
    return max(p) - min(p) > 140 and not (r > g + 15 and b > g + 5 and r > 150)


with ViewServer(exe, out, "--web", os.path.join(here, "..", "..", "web")) as srv:
    page = "%s/view/%s" % (srv.base, sid)
    slide_only = screenshot(page + "?hide=heatmap,regions,focus", "slide_only.png")
    with_heat = screenshot(page + "?hide=regions,focus&opacity=100", "heatmap.png")
    default = screenshot(page, "default.png")
    background = screenshot(page + "?hide=heatmap,regions,focus&show=background",
                            "background.png")
    dom = chromium_run("--dump-dom", page + "?hide=heatmap").stdout
    bad = screenshot("%s/view/ffffffffffffffff" % srv.base, "unknown_id.png")
    # The worklist page over the same server: its script fetched /api/slides and drew the row.
    worklist_dom = chromium_run("--dump-dom", srv.base + "/").stdout
    worklist = screenshot(srv.base + "/", "worklist.png")

name = os.path.basename(report["slide"]["path"])
check(name in worklist_dom, "the worklist does not list %s" % name)
check('<a href="/view/%s">open</a>' % sid in worklist_dom, "no viewer link on the worklist")
check(">1 slide<" in worklist_dom, "the worklist's count is not 1 slide")
check(('id="untrained" class="banner" hidden' in worklist_dom) != bool(report["untrained"]),
      "worklist's untrained banner vs report.json")
if worklist:
    px = list(worklist.getdata())
    ink = sum(1 for p in px if max(p) < 100) / len(px)
    print("worklist: %.2f%% dark (text) pixels" % (100 * ink))
    check(0.002 < ink < 0.5, "the worklist screenshot is blank or not a page")

check('data-ready="1"' in dom, "the page never became ready (tiles not loaded?)")
check('id="error" class="error" hidden' in dom, "the page shows an error")
check('id="untrained" class="banner" hidden' in dom if not report["untrained"]
      else 'id="untrained" class="banner">' in dom, "untrained banner vs report.json")
check(report["verdict"] in dom, "verdict not on the page")

if slide_only and with_heat and default:
    a, b = map_pixels(slide_only), map_pixels(with_heat)
    n = len(a)
    tissue = sum(map(is_tissue, a)) / n
    white = sum(1 for p in a if min(p) > 235) / n
    heat_a = sum(map(is_heat, a)) / n
    heat_b = sum(map(is_heat, b)) / n
    tissue_b = sum(map(is_tissue, b)) / n
    print("slide only: tissue %.1f%%, white %.1f%%, heat colours %.2f%%" %
          (100 * tissue, 100 * white, 100 * heat_a))
    print("heat map at full opacity: tissue %.1f%%, heat colours %.1f%%" %
          (100 * tissue_b, 100 * heat_b))
    check(tissue > 0.03, "no slide in the map (tissue %.2f%%)" % (100 * tissue))
    check(white > 0.5, "the map is not mostly glass and page background")
    check(heat_a < 0.002, "heat colours although the heat map is hidden")
    check(heat_b > 0.02, "the heat map does not show when toggled on")
    check(tissue_b < tissue / 2, "the heat map does not cover the tissue")
    # The default view (heat map at half opacity) differs from both.
    c = map_pixels(default)
    check(sum(map(is_heat, c)) / n > 0.005, "default view shows no heat map")
if slide_only and background and report["tiles"]["background"] > 0:
    # The background layer greys the non-tissue tiles (GS_REPORT_BACKGROUND_RGB at 45%).
    a, g = map_pixels(slide_only), map_pixels(background)
    changed = sum(1 for p, q in zip(a, g) if sum(abs(x - y) for x, y in zip(p, q)) > 60)
    grey = sum(1 for q in g if max(q) - min(q) < 12 and 120 < q[0] < 200) / len(g)
    print("background layer: %.1f%% of the map greyed" % (100 * grey))
    check(changed / len(a) > 0.01 and grey > 0.01, "the background layer does not show")
if bad:
    # An unknown id is the server's 404 text, not a viewer page.
    px = list(bad.getdata())
    check(sum(map(is_tissue, px)) / len(px) < 0.001, "an unknown id shows a slide")

shutil.rmtree(profile, ignore_errors=True)
if failures:
    print("%d failures; screenshots in %s" % (len(failures), shots))
    sys.exit(1)
print("viewer in chromium: slide shown, heat map toggles; screenshots in " + shots)
