// The Sluice console: one page, four views, data from /console/api/* (see views.py).
// window.sluiceConsole holds what each view last received and drew, for tests and debugging.
"use strict";
const state = window.sluiceConsole = { page: null, pipeline: null, tenants: null, chart: null, logs: null, error: null };
const $ = (sel, root = document) => root.querySelector(sel);
const fmt = (n) => n == null ? "–" : (Math.abs(n) >= 100 || Number.isInteger(n) ? Math.round(n).toLocaleString("en") : n.toFixed(2));
let timer = null;

function token() { return sessionStorage.getItem("sluice-token") || ""; }

async function api(path, body) {
  const headers = { "content-type": "application/json" };
  if (token()) headers.authorization = "Bearer " + token();
  const res = await fetch("/console/api/" + path, body === undefined ? { headers } : { method: "POST", headers, body: JSON.stringify(body) });
  const answer = await res.json();
  if (!res.ok) throw new Error(`${res.status}: ${answer.error}`);
  return answer;
}

function showError(err) {
  state.error = err ? String(err.message || err) : null;
  const box = $("#error");
  box.hidden = !err;
  box.textContent = state.error || "";
}

function cell(text, cls) { const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; return td; }
function fill(tbody, rows) { tbody.replaceChildren(...rows.map((cells) => { const tr = document.createElement("tr"); tr.append(...cells); return tr; })); return tbody.children; }

function sparkline(values) {
  const w = 160, h = 24, ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark"); svg.setAttribute("width", w); svg.setAttribute("height", h);
  const vs = values.map((v) => v ?? 0), max = Math.max(1e-9, ...vs);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", vs.map((v, i) => `${(i / Math.max(1, vs.length - 1)) * w},${h - 1 - (v / max) * (h - 2)}`).join(" "));
  svg.append(line);
  return svg;
}

function lastRate(rates) { for (let i = rates.length - 1; i >= 0; i--) if (rates[i] != null) return rates[i]; return null; }

const KEEP = 300;  // samples kept, as the worker keeps them

// The history so far with the answer's newer intervals appended (all of it anew after a gap).
function merge(have, got) {
  if (!have || !have.t.length || got.start !== have.t[have.t.length - 1]) return got;
  const n = have.t.length, rates = {};
  for (const name of new Set([...Object.keys(have.rates), ...Object.keys(got.rates)])) {
    rates[name] = [...(have.rates[name] || Array(n).fill(null)), ...(got.rates[name] || Array(got.t.length).fill(null))];
  }
  const t = [...have.t, ...got.t], cut = Math.max(0, t.length - KEEP);
  for (const name in rates) rates[name] = rates[name].slice(cut);
  return { start: cut ? t[cut - 1] : have.start, t: t.slice(cut), rates };
}

async function showPipeline() {
  const had = state.pipeline && state.pipeline.history, last = had && had.t.length ? had.t[had.t.length - 1] : null;
  const p = await api(last == null ? "pipeline" : `pipeline?after=${last}`);
  p.history = merge(had, p.history);
  state.pipeline = p;
  $("#gateway-status").textContent = p.gateway.error ? `Gateway counters unavailable (${p.gateway.error})` : `Gateway counters from ${p.gateway.url}`;
  fill($("#lag tbody"), Object.entries(p.lag).map(([part, n]) => [cell(part), cell(fmt(n), "n")]));
  fill($("#windows tbody"), Object.entries(p.open_windows).map(([t, n]) => [cell(t), cell(fmt(n), "n")]));
  const names = Object.keys(p.totals).sort((a, b) => (a.startsWith("gateway.") ? 0 : 1) - (b.startsWith("gateway.") ? 0 : 1) || a.localeCompare(b));
  const rows = fill($("#series tbody"), names.map((name) => {
    const total = p.totals[name];
    const rates = p.history.rates[name] || [];
    const spark = document.createElement("td"); spark.append(sparkline(rates));
    return [cell(name), cell(fmt(total), "n"), cell(fmt(lastRate(rates)), "n"), spark];
  }));
  names.forEach((name, i) => { rows[i].dataset.series = name; rows[i].dataset.total = p.totals[name]; });
}

const total = (t, base) => Object.entries(t.series).filter(([n]) => n.startsWith(base + "{")).reduce((sum, [, s]) => sum + s.total, 0);

async function showTenants() {
  const rows = state.tenants = await api("tenants");
  const trs = fill($("#tenant-rows tbody"), rows.map((t) => {
    const drops = Object.entries(t.series).filter(([n]) => !/received|acknowledged|throttle_passed/.test(n) && t.series[n].total)
      .map(([n, s]) => `${n.replace(/access_key=[^,}]*,?/, "").replace(/,?}$/, "}").replace("{}", "")}: ${fmt(s.total)}`).join("\n");
    const l = t.limits;
    const limits = l.events_per_second ? `${l.events_per_second}/s (${l.over_limit})` : "none";
    const spark = document.createElement("td"); spark.append(sparkline(t.received_per_second));
    return [cell(t.key + (t.enabled ? "" : " (disabled)")), cell(t.shards, "n"), cell(limits),
      cell(fmt(lastRate(t.received_per_second)), "n"), spark, cell(fmt(total(t, "gateway.received_envelopes")), "n"),
      cell(fmt(total(t, "gateway.acknowledged_envelopes")), "n"), cell(drops || "none"), cell(t.advised_shards, "n")];
  }));
  rows.forEach((t, i) => { trs[i].dataset.key = t.key; });
}

async function loadKeys() {
  const keys = await api("keys");
  for (const select of document.querySelectorAll("select.keys")) {
    const chosen = select.value;
    select.replaceChildren(...keys.map((k) => new Option(k, k)));
    if (keys.includes(chosen)) select.value = chosen;
  }
  return keys;
}

function params() { return new URLSearchParams(location.hash.split("?")[1] || ""); }
function formFromHash(form) { for (const [k, v] of params()) { const el = form.elements[k]; if (!el) continue; if (el.type === "checkbox") el.checked = v === "1"; else { if (el.tagName === "SELECT" && ![...el.options].some((o) => o.value === v)) el.append(new Option(v, v)); el.value = v; } } }
function formToHash(form, page) {
  const q = new URLSearchParams();
  for (const el of form.elements) if (el.name) q.set(el.name, el.type === "checkbox" ? (el.checked ? "1" : "0") : el.value);
  history.replaceState(null, "", `#${page}?${q}`);
}

const STATS = { counter: ["increase"], gauge: ["last", "min", "max", "avg"], timer: ["p50", "p90", "p99"] };
const toSeconds = (t) => Date.parse(/[zZ]|[+-]\d\d:?\d\d$/.test(t) ? t.replace(" ", "T") : t.replace(" ", "T") + "Z") / 1000;

async function showMetrics() {
  const form = $("#metrics-form"), f = form.elements;
  if (!f.key.value || !f.name.value) return;
  const windowSeconds = f.window.value === "1m" ? 60 : 1;
  const spec = { stream: "metrics", key: f.key.value, name: f.name.value, window: f.window.value, since: Math.floor(Date.now() / 1000) - Number(f.range.value) };
  if (f.group_by.value) spec.group_by = f.group_by.value;
  const answer = await api("query", spec);
  const col = (name) => answer.columns.indexOf(name);
  const kind = answer.rows.length ? answer.rows[0][col("kind")] : "counter";
  const stats = f.stat.value ? [f.stat.value] : (STATS[kind] || ["avg"]);
  const groupCol = spec.group_by ? col(spec.group_by) : -1;
  const xs = [...new Set(answer.rows.map((r) => toSeconds(r[col("window_start")])))].sort((a, b) => a - b);
  const groups = groupCol < 0 ? [null] : [...new Set(answer.rows.map((r) => r[groupCol]))].sort();
  const labels = [], ys = [];
  for (const g of groups) for (const stat of stats) {
    const y = xs.map(() => null);
    for (const r of answer.rows) {
      if (groupCol >= 0 && r[groupCol] !== g) continue;
      const v = stat === "increase" ? r[col("sum")] : stat === "rate" ? r[col("sum")] / windowSeconds : r[col(stat)];
      y[xs.indexOf(toSeconds(r[col("window_start")]))] = v;
    }
    labels.push((g == null ? "" : `${spec.group_by}=${g} `) + stat); ys.push(y);
  }
  state.chart = { spec, kind, answer, labels, data: [xs, ...ys] };
  const el = $("#chart");
  el.replaceChildren();
  const colors = ["#2a7de1", "#e1572a", "#2aa876", "#9b4de1", "#d4a017", "#555"];
  state.chart.plot = new uPlot({ width: Math.max(600, el.clientWidth || 900), height: 320, title: `${spec.name} (${kind}, ${spec.window} windows)`,
    series: [{}, ...labels.map((label, i) => ({ label, stroke: colors[i % colors.length], spanGaps: true }))] }, state.chart.data, el);
  el.dataset.points = String(xs.length);
}

async function suggestNames() {
  const f = $("#metrics-form").elements;
  if (!f.key.value) return;
  const names = await api(`names?key=${encodeURIComponent(f.key.value)}&window=${f.window.value}&search=${encodeURIComponent(f.name.value)}`);
  $("#names").replaceChildren(...names.map((n) => new Option(n)));
  state.names = names;
}

async function showLogs() {
  const f = $("#logs-form").elements;
  if (!f.key.value) return;
  const spec = { stream: f.stream.value, key: f.key.value, since_ns: 0, limit: 200 };
  if (f.grep.value) spec.grep = f.grep.value;
  const answer = await api("query", spec);
  const col = (n) => answer.columns.indexOf(n);
  const text = spec.stream === "logs" ? (r) => r[col("payload")] : (r) => `${r[col("title")]}: ${r[col("body")]}`;
  state.logs = { spec, answer, texts: answer.rows.map(text) };
  fill($("#log-rows tbody"), answer.rows.map((r) => [cell(r[col("timestamp")]), cell(r[col("source_id")]), cell(text(r))]));
}

const VIEWS = {
  pipeline: { show: showPipeline, every: 1000 },
  tenants: { show: showTenants, every: 1000 },
  metrics: { show: showMetrics, every: 5000, form: "#metrics-form", clear: () => { state.chart = null; $("#chart").replaceChildren(); } },
  logs: { show: showLogs, every: 2000, form: "#logs-form", follow: true, clear: () => { state.logs = null; $("#log-rows tbody").replaceChildren(); } },
};

async function refresh() {
  const view = VIEWS[state.page];
  if (document.hidden) { timer = setTimeout(refresh, view.every); return; }  // a background tab asks nothing
  try { await view.show(); showError(null); } catch (err) { showError(err); view.clear?.(); }
  state.refreshedAt = Date.now();
  const follow = !view.follow || $("#logs-form").elements.follow.checked;
  if (follow) timer = setTimeout(refresh, view.every);
}

async function route() {
  clearTimeout(timer);
  const page = (location.hash.slice(1).split("?")[0]) || "pipeline";
  state.page = VIEWS[page] ? page : "pipeline";
  for (const s of document.querySelectorAll("main > section")) s.hidden = s.id !== state.page;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === state.page);
  const view = VIEWS[state.page];
  if (view.form) {
    try { await loadKeys(); } catch (err) { showError(err); }
    formFromHash($(view.form));
  }
  await refresh();
}

for (const [page, view] of Object.entries(VIEWS)) {
  if (!view.form) continue;
  $(view.form).addEventListener("submit", (e) => { e.preventDefault(); formToHash(e.target, page); clearTimeout(timer); refresh(); });
}
$("#metrics-form").elements.name.addEventListener("input", () => suggestNames().catch(showError));
$("#token-form").addEventListener("submit", (e) => { e.preventDefault(); sessionStorage.setItem("sluice-token", $("#token").value.trim()); route(); });
$("#token").value = token();
window.addEventListener("hashchange", route);
route();
