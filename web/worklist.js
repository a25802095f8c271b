// The worklist page: polls /api/slides and /api/throughput every 2 s and redraws the tables.
// Every value from the server goes in with textContent (slide names are file names a scanner
// chose), never as HTML.
"use strict";

const POLL_MS = 2000;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function fmtTime(ms) {
  if (ms === null || ms === undefined) return "";
  const d = new Date(ms);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
         `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function fmtSeconds(s) {
  if (s === null || s === undefined) return "";
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${(s / 3600).toFixed(1)} h`;
}

function setStatus(text, bad) {
  const s = document.getElementById("status");
  s.textContent = text;
  s.className = bad ? "bad" : "";
}

async function getJSON(url) {
  const r = await fetch(url, { credentials: "same-origin", cache: "no-store" });
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.json();
}

function drawSlides(data) {
  const body = document.querySelector("#slides tbody");
  const rows = [];
  let untrained = data.untrained === true;
  for (const s of data.slides) {
    untrained = untrained || s.untrained === true;
    const tr = el("tr");
    tr.className = s.verdict ? `verdict-${s.verdict}` : "pending";
    tr.appendChild(el("td", fmtTime(s.submitted_unix_ms), "when"));
    const name = el("td", s.name, "name");
    name.title = s.id;
    tr.appendChild(name);
    tr.appendChild(el("td", s.external_id));
    tr.appendChild(el("td", s.state));
    const v = el("td", s.verdict === null ? "pending" : s.verdict, "verdict");
    if (s.untrained) v.appendChild(el("span", "untrained", "tag"));
    tr.appendChild(v);
    let score = "";
    if (typeof s.score === "number") {
      score = s.score.toFixed(3);
      if (typeof s.threshold === "number") score += ` / ${s.threshold.toFixed(2)}`;
    }
    tr.appendChild(el("td", score, "num"));
    const notes = el("td", null, "notes");
    for (const w of s.warnings || []) notes.appendChild(el("div", w, "warning"));
    if (s.reason) notes.appendChild(el("div", s.reason, "reason"));
    if (s.duplicate_of) notes.appendChild(el("div", `duplicate of ${s.duplicate_of}`, "reason"));
    tr.appendChild(notes);
    tr.appendChild(el("td", fmtSeconds(s.seconds_to_verdict), "num"));
    const link = el("td");
    // Only a same-origin /view/<16 hex> path becomes a link.
    if (typeof s.viewer === "string" && /^\/view\/[0-9a-f]{16}$/.test(s.viewer)) {
      const a = el("a", "open");
      a.href = s.viewer;
      link.appendChild(a);
    }
    tr.appendChild(link);
    rows.push(tr);
  }
  body.replaceChildren(...rows);
  document.getElementById("empty").hidden = rows.length !== 0;
  document.getElementById("count").textContent =
    `${rows.length} slide${rows.length === 1 ? "" : "s"}`;
  document.getElementById("untrained").hidden = !untrained;
}

function drawThroughput(t) {
  const body = document.querySelector("#stages tbody");
  const rows = t.stages.map((s) => {
    const tr = el("tr");
    tr.appendChild(el("td", s.stage));
    tr.appendChild(el("td", s.workers, "num"));
    tr.appendChild(el("td", s.queue_depth, "num"));
    tr.appendChild(el("td", Number(s.tiles_per_second).toFixed(1), "num"));
    if (s.workers === 0) tr.className = "idle";
    return tr;
  });
  body.replaceChildren(...rows);
  document.getElementById("flight").textContent =
    `${t.slides_in_flight} slide${t.slides_in_flight === 1 ? "" : "s"} in flight, ` +
    `${t.slides_waiting} waiting for a slot`;
}

// `gastroscreen view` serves the reports of one run and no live service: /api/throughput is
// 404 there, which leaves the slides shown and says so in the throughput panel.
function drawNoService() {
  document.querySelector("#stages tbody").replaceChildren();
  document.getElementById("flight").textContent =
    "no live service: these are the reports of one screening run";
}

async function refresh() {
  const verdict = document.getElementById("verdict").value;
  const q = verdict ? `?verdict=${encodeURIComponent(verdict)}` : "";
  const [slides, throughput] = await Promise.allSettled([getJSON(`/api/slides${q}`),
                                                         getJSON("/api/throughput")]);
  if (slides.status === "fulfilled") drawSlides(slides.value);
  if (throughput.status === "fulfilled") drawThroughput(throughput.value);
  else if (/HTTP 404/.test(throughput.reason.message)) drawNoService();
  const failed = slides.status === "rejected" ? slides.reason
    : throughput.status === "rejected" && !/HTTP 404/.test(throughput.reason.message)
      ? throughput.reason : null;
  if (failed) setStatus(`cannot reach the service (${failed.message}); retrying`, true);
  else setStatus(`updated ${fmtTime(slides.value.generated_unix_ms)}`, false);
}

function start() {
  const select = document.getElementById("verdict");
  const fromHash = decodeURIComponent(location.hash.slice(1));
  if ([...select.options].some((o) => o.value === fromHash)) select.value = fromHash;
  select.addEventListener("change", () => {
    history.replaceState(null, "", select.value ? `#${select.value}` : location.pathname);
    refresh();
  });
  refresh();
  setInterval(refresh, POLL_MS);
}

document.addEventListener("DOMContentLoaded", start);
