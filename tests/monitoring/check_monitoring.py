"""The Grafana dashboard, the Prometheus rules and their tests, and the runbook, checked
against each other and against a live /metrics scrape of gastroscreend (scrape.py).

- monitoring/grafana/gastroscreen.json: well-formed JSON, schemaVersion >= 36, a `datasource`
  template variable of type prometheus that every panel and every query uses, unique panel
  ids, panels inside the 24-column grid, a query for every family the dashboard must show;
- monitoring/prometheus/gastroscreen-rules.yml: the expected alerts, each with severity,
  summary, description and a runbook link to a section of monitoring/RUNBOOK.md that exists;
- monitoring/prometheus/gastroscreen-rules.test.yml: a firing and a silent case per alert;
- every metric name in a PromQL expression (dashboard, rules) or in a test's input series
  is a family the live gastroscreend announces (HELP/TYPE; a histogram's _bucket, _sum and
  _count), every label key in a selector is one that family's samples carry, and every
  label value matched with = (or in a test series) is one it serves.

- where promtool is installed, every dashboard query parses as PromQL (Grafana's variables
  replaced by values of their kind, each query checked as a recording rule).

Before all that, the checker is run on a few broken expressions and must find each fault
(so a checker that passes everything fails here).

usage: /usr/bin/python3 check_monitoring.py SOURCE_DIR SCRAPE_FILE
Exit 0: pass; 1: fail.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

ALERTS = {"GastroscreenDown", "GastroscreenNoInferWorkers", "GastroscreenQueueStalled",
          "GastroscreenFailedSlideRatio", "GastroscreenSlowSlides",
          "GastroscreenJournalDegraded", "GastroscreenConnectionsRefused"}
# Families the dashboard must query (the panels the operators asked for).
DASHBOARD_MUST_SHOW = [
    "gastroscreen_intake_total", "gastroscreen_verdicts_total", "gastroscreen_slides_in_flight",
    "gastroscreen_slides_active", "gastroscreen_stage_queue_depth", "gastroscreen_workers",
    "gastroscreen_stage_tiles_per_second", "gastroscreen_slide_duration_seconds_bucket",
    "gastroscreen_tile_round_trip_seconds_bucket", "gastroscreen_messages_malformed_total",
    "gastroscreen_results_ignored_total", "gastroscreen_auth_refused_total",
    "gastroscreen_journal_degraded", "gastroscreen_build_info", "gastroscreen_model_info",
    "gastroscreen_tiles_inferred_total",
]
# Families registered by work that may not be in this tree yet: tolerated when the live daemon
# does not announce them, checked like any other when it does. None today.
PENDING = {}
# Labels Prometheus adds at scrape time, and the histogram bucket bound.
TARGET_LABELS = {"job", "instance"}
HIST_SUFFIXES = ("_bucket", "_sum", "_count")

NAME_RE = re.compile(r"\b(gastroscreen_[a-zA-Z0-9_:]*)\s*(\{[^}]*\})?")
MATCHER_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


class Scrape:
    """Families (name -> type) and the label values their samples carry."""

    def __init__(self, text):
        self.types = {}
        self.labels = {}  # family -> {key -> set(values)}
        self.sampled = set()
        for line in text.splitlines():
            m = re.match(r"^# TYPE (\S+) (\S+)$", line)
            if m:
                self.types[m.group(1)] = m.group(2)
                self.labels.setdefault(m.group(1), {})
                continue
            if not line or line.startswith("#"):
                continue
            m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? \S+$", line)
            if not m:
                raise ValueError("unparsable sample line: %r" % line)
            fam = self.family_of(m.group(1))
            if fam is None:
                raise ValueError("sample %r has no TYPE line" % line)
            self.sampled.add(fam)
            for key, _, value in MATCHER_RE.findall(m.group(2) or ""):
                if key != "le":
                    self.labels[fam].setdefault(key, set()).add(value)

    def family_of(self, name):
        if name in self.types:
            return name
        for suffix in HIST_SUFFIXES:
            base = name[: -len(suffix)]
            if name.endswith(suffix) and self.types.get(base) == "histogram":
                return base
        return None


def check_selector(scrape, where, name, selector, errors, equality_of_all=False):
    """Checks one metric name and its {...} matchers; appends messages to errors."""
    fam = scrape.family_of(name)
    if fam is None:
        if name in PENDING:
            return
        errors.append("%s: %s is not a family gastroscreend serves" % (where, name))
        return
    for key, op, value in MATCHER_RE.findall(selector or ""):
        if key in TARGET_LABELS or key == "__name__":
            continue
        if key == "le":
            if not name.endswith("_bucket"):
                errors.append("%s: le on %s, which has no buckets" % (where, name))
            continue
        served = scrape.labels.get(fam, {})
        if fam not in scrape.sampled:
            continue  # announced with no samples yet: nothing to compare against
        if key not in served:
            errors.append("%s: %s has no label %r (it has %s)" %
                          (where, name, key, sorted(served) or "none"))
            continue
        if (op == "=" or equality_of_all) and "$" not in value and value not in served[key]:
            errors.append("%s: %s{%s=%r}: gastroscreend serves %s=%s" %
                          (where, name, key, value, key, sorted(served[key])))


def check_expr(scrape, where, expr, errors):
    names = NAME_RE.findall(expr)
    if not names and "up{" not in expr:
        errors.append("%s: names no gastroscreen metric: %s" % (where, expr))
    for name, selector in names:
        check_selector(scrape, where, name, selector, errors)


def self_test(scrape):
    """The checker must catch a misspelt family, a wrong label key and a wrong value."""
    broken = [
        'sum(rate(gastroscreen_verdict_total[5m]))',
        'gastroscreen_workers{stages="infer"} == 0',
        'gastroscreen_verdicts_total{class="fail"}',
        'histogram_quantile(0.9, rate(gastroscreen_slide_duration_second_bucket[1h]))',
    ]
    for expr in broken:
        errors = []
        check_expr(scrape, "self-test", expr, errors)
        if not errors:
            return "the checker passed a broken expression: %s" % expr
    errors = []
    check_expr(scrape, "self-test", 'histogram_quantile(0.9, sum by (le) (rate('
               'gastroscreen_slide_duration_seconds_bucket{job="x"}[1h])))', errors)
    if errors:
        return "the checker refused a sound expression: %s" % errors
    return None


# Grafana's variables as a query would see them, for the syntax check.
GRAFANA_VARIABLES = [("$__rate_interval", "2m"), ("$window", "1h"), ("$job", ".+"),
                     ("$instance", ".+")]


def check_promql_syntax(exprs, errors):
    """Parses the dashboard's queries with promtool (as recording rules). Returns a note."""
    promtool = shutil.which("promtool")
    if not promtool:
        return "promtool not found: the dashboard's PromQL syntax was not checked"
    rules = []
    for i, e in enumerate(exprs):
        for var, value in GRAFANA_VARIABLES:
            e = e.replace(var, value)
        if "$" in e:
            errors.append("dashboard: query uses an unknown variable: %s" % e)
        rules.append({"record": "gastroscreen_dashboard:query_%d" % i, "expr": e})
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)
        f.flush()
        r = subprocess.run([promtool, "check", "rules", f.name], capture_output=True,
                           text=True)
    if r.returncode != 0:
        errors.append("dashboard: promtool cannot parse a query:\n" + r.stdout + r.stderr)
    return "promtool parsed the %d dashboard queries" % len(exprs)


def anchor(heading):
    """GitHub's anchor for a Markdown heading."""
    a = heading.strip().lower()
    a = re.sub(r"[^\w\- ]", "", a)
    return a.replace(" ", "-")


def check_dashboard(scrape, path, errors):
    with open(path) as f:
        dash = json.load(f)
    if not isinstance(dash.get("schemaVersion"), int) or dash["schemaVersion"] < 36:
        errors.append("dashboard: schemaVersion %r < 36" % dash.get("schemaVersion"))
    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        errors.append("dashboard: no `datasource` template variable of type prometheus")
    uses = ("${datasource}", "$datasource")
    for name, v in variables.items():
        if v.get("type") == "query" and v.get("datasource", {}).get("uid") not in uses:
            errors.append("dashboard: variable %s does not use $datasource" % name)
    ids, exprs = set(), []
    for p in dash.get("panels", []):
        title = "panel %r" % p.get("title")
        if p.get("id") in ids:
            errors.append("dashboard: %s repeats id %s" % (title, p.get("id")))
        ids.add(p.get("id"))
        g = p.get("gridPos", {})
        if not all(k in g for k in ("x", "y", "w", "h")) or g["x"] + g["w"] > 24:
            errors.append("dashboard: %s has a bad gridPos %r" % (title, g))
        if p.get("type") == "row":
            continue
        if p.get("datasource", {}).get("uid") not in uses:
            errors.append("dashboard: %s does not use $datasource" % title)
        targets = p.get("targets", [])
        if not targets:
            errors.append("dashboard: %s has no query" % title)
        for t in targets:
            if t.get("datasource", {}).get("uid") not in uses:
                errors.append("dashboard: %s query %s does not use $datasource" %
                              (title, t.get("refId")))
            if not t.get("expr"):
                errors.append("dashboard: %s query %s has no expr" % (title, t.get("refId")))
                continue
            exprs.append(t["expr"])
            check_expr(scrape, "dashboard %s" % title, t["expr"], errors)
    shown = {n for e in exprs for n, _ in NAME_RE.findall(e)}
    for name in DASHBOARD_MUST_SHOW:
        if name not in shown:
            errors.append("dashboard: no panel queries %s" % name)
    if not any("histogram_quantile" in e and "slide_duration_seconds_bucket" in e for e in exprs):
        errors.append("dashboard: no slide duration quantile (histogram_quantile)")
    print(check_promql_syntax(exprs, errors))
    return len(exprs)


def check_rules(scrape, rules_path, tests_path, runbook_path, errors):
    with open(rules_path) as f:
        rules = yaml.safe_load(f)
    with open(runbook_path) as f:
        anchors = {anchor(m) for m in re.findall(r"^#+ (.+)$", f.read(), re.M)}
    alerts = {}
    for group in rules.get("groups", []):
        for r in group.get("rules", []):
            if "alert" not in r:
                continue
            name = r["alert"]
            alerts[name] = r
            check_expr(scrape, "rule %s" % name, r["expr"], errors)
            if r.get("labels", {}).get("severity") not in ("critical", "warning"):
                errors.append("rule %s: severity must be critical or warning" % name)
            ann = r.get("annotations", {})
            for key in ("summary", "description", "runbook"):
                if not ann.get(key):
                    errors.append("rule %s: no %s annotation" % (name, key))
            link = ann.get("runbook", "")
            if link != "monitoring/RUNBOOK.md#" + name.lower():
                errors.append("rule %s: runbook link %r" % (name, link))
            if name.lower() not in anchors:
                errors.append("rule %s: RUNBOOK.md has no section '%s'" % (name, name))
    if set(alerts) != ALERTS:
        errors.append("rules: alerts %s, want %s" % (sorted(alerts), sorted(ALERTS)))

    with open(tests_path) as f:
        tests = yaml.safe_load(f)
    if tests.get("rule_files") != [os.path.basename(rules_path)]:
        errors.append("rule tests: rule_files %r" % tests.get("rule_files"))
    fires, silent = set(), set()
    for case in tests.get("tests", []):
        for s in case.get("input_series", []):
            m = re.match(r"^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{.*\})?\s*$", s["series"])
            if not m:
                errors.append("rule tests: unparsable series %r" % s["series"])
                continue
            if m.group(1) != "up":
                check_selector(scrape, "rule test %r" % case.get("name"), m.group(1),
                               m.group(2), errors, equality_of_all=True)
        for t in case.get("alert_rule_test", []):
            (fires if t.get("exp_alerts") else silent).add(t["alertname"])
    for name in sorted(ALERTS):
        if name not in fires:
            errors.append("rule tests: no case where %s fires" % name)
        if name not in silent:
            errors.append("rule tests: no case where %s stays silent" % name)
    return len(alerts)


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    src, scrape_path = sys.argv[1:]
    with open(scrape_path) as f:
        scrape = Scrape(f.read())
    problem = self_test(scrape)
    if problem:
        print("FAIL:", problem)
        return 1
    mon = os.path.join(src, "monitoring")
    errors = []
    n_exprs = check_dashboard(scrape, os.path.join(mon, "grafana", "gastroscreen.json"), errors)
    n_alerts = check_rules(scrape, os.path.join(mon, "prometheus", "gastroscreen-rules.yml"),
                           os.path.join(mon, "prometheus", "gastroscreen-rules.test.yml"),
                           os.path.join(mon, "RUNBOOK.md"), errors)
    for name, kind in PENDING.items():
        if name not in scrape.types:
            print("note: %s (%s) is not served by this gastroscreend; its queries were not "
                  "checked" % (name, kind))
    for e in errors:
        print("FAIL:", e)
    if errors:
        return 1
    print("ok: %d dashboard queries and %d alerts name only the %d families gastroscreend "
          "serves" % (n_exprs, n_alerts, len(scrape.types)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
