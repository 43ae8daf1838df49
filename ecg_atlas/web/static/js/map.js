// Cohort map view: a cluster run's 2-D map as a WebGL scatter. Colour by cluster or any metadata
// column (a label-list column as "contains LABEL": with / without / unknown); hover for a
// thumbnail of the ECG and its metadata; find an id (highlighted and centred); click for that ECG
// and its neighbours; box or lasso select for the selection's size, its metadata histograms
// against the whole run and label prevalence inside vs outside, a CSV of its ids, and saving it as
// a named cohort (a boolean metadata column search can filter on). Below the map: the run's
// enrichment table. Run, colour, label and found id live in the URL.

import { el, get, post, showError, showStatus } from "./api.js";
import { showEnrichment, showHistograms } from "./map_panels.js";
import { hideThumb, showThumb } from "./map_thumb.js";

const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
                 "#bcbd22", "#393b79", "#ad494a", "#637939", "#7b4173", "#3182bd", "#e6550d", "#31a354"];
const MAX_CATEGORIES = 15;
const NOISE = "#b0b0b0";
const CONTAINS = "#c0392b", WITHOUT = "#7fa7c9", UNKNOWN = "#d4d4d4";
const SUGGESTED = 12;
// the empty state: what makes a run (ecg-atlas cluster --help)
export const NO_RUNS_HINT = "no cluster runs yet: make one with "
  + "`ecg-atlas cluster --store STORE --run NAME --labels label_groups` "
  + "(through the server that holds the store; or --server HOST:PORT instead of --store), then reload";

let state = { run: null, map: null, info: null, colour: "cluster", label: null, column: null, found: null,
              traceRows: [], selectedRows: [], selected: [], selectionRange: null, columns: new Map(), index: null };

function decode(base64, Type) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  return new Type(bytes.buffer);
}

// a map column in the run's order, asked for once per run
function columnData(name) {
  if (!state.columns.has(name)) {
    const asked = get("/api/map-column", { run: state.run, name });
    asked.catch(() => state.columns.delete(name));
    state.columns.set(name, asked);
  }
  return state.columns.get(name);
}

function groupsOf(values) {
  // categories by size; beyond MAX_CATEGORIES they are drawn together as "other"
  const counts = new Map();
  for (const v of values) counts.set(v, (counts.get(v) || 0) + 1);
  const order = [...counts.entries()].filter(([v]) => v !== null).sort((a, b) => b[1] - a[1]).map(([v]) => v);
  const kept = new Set(order.slice(0, MAX_CATEGORIES));
  return { order: order.slice(0, MAX_CATEGORIES), kept, other: order.length > MAX_CATEGORIES };
}

function rowsBy(values, key) {
  const rows = new Map();
  values.forEach((v, i) => {
    const k = key(v);
    if (!rows.has(k)) rows.set(k, []);
    rows.get(k).push(i);
  });
  return rows;
}

function pointsTrace(rows, name, colour, hoverValue) {
  const { map } = state;
  const x = new Float32Array(rows.length), y = new Float32Array(rows.length);
  const text = new Array(rows.length);
  rows.forEach((r, j) => { x[j] = map.x[r]; y[j] = map.y[r]; text[j] = `${map.ecg_ids[r]}<br>${hoverValue(r)}`; });
  // no plotly hover label: the thumbnail beside the point says the id and value (map_thumb.js)
  return { type: "scattergl", mode: "markers", name: `${name} (${rows.length.toLocaleString()})`, x, y, text,
           hoverinfo: "none", marker: { size: map.n > 20000 ? 3 : 6, color: colour, opacity: map.n > 20000 ? 1 : 0.8 } };
}

function labelTraces(column) {
  // "contains LABEL": three groups, the ECGs holding it drawn last (on top)
  const at = column.labels.findIndex((l) => l.label === state.label);
  const named = at < 0 ? state.label : column.labels[at].shown;
  const holding = [], without = [], unknown = [];
  column.codes.forEach((c, i) => (c === null ? unknown : c.includes(at) ? holding : without).push(i));
  state.traceRows = [unknown, without, holding];
  const said = (r) => {
    const c = column.codes[r];
    return c === null ? `${column.name} unknown` : `${column.name}: ${c.map((k) => column.labels[k].shown).join(", ") || "none"}`;
  };
  const traces = [pointsTrace(unknown, `${column.name} unknown`, UNKNOWN, said),
                  pointsTrace(without, `without ${named}`, WITHOUT, said),
                  pointsTrace(holding, `contains ${named}`, CONTAINS, said)];
  traces[2].marker.opacity = 1;
  return traces;
}

function traces(column) {
  const { map } = state;
  if (column.name === "cluster") {
    const rows = rowsBy(map.cluster, (c) => c);
    const labels = [...rows.keys()].sort((a, b) => a - b);
    state.traceRows = labels.map((c) => rows.get(c));
    return labels.map((c) => pointsTrace(rows.get(c), c < 0 ? "noise" : `cluster ${c}`,
                                            c < 0 ? NOISE : PALETTE[c % PALETTE.length], () => `cluster ${c < 0 ? "noise" : c}`));
  }
  if (column.kind === "labels") return labelTraces(column);
  const values = column.values;
  if (column.kind === "numeric") {
    // bins of round width, one colour each (a per-point colour scale costs seconds at 100k points)
    const bins = numericBins(values);
    const rows = bins.map(() => []), unknown = [];
    values.forEach((v, i) => (v === null ? unknown : rows[binOf(bins, v)]).push(i));
    state.traceRows = [...rows, unknown];
    state.bins = bins.map((b, i) => ({ ...b, n: rows[i].length }));
    const said = (r) => `${column.name} ${values[r] ?? "unknown"}`;
    return [...bins.map((b, i) => pointsTrace(rows[i], `${column.name} ${b.name}`, viridis(i / Math.max(1, bins.length - 1)), said)),
            pointsTrace(unknown, `${column.name} unknown`, NOISE, said)];
  }
  const { order, kept } = groupsOf(values);
  const rows = rowsBy(values, (v) => (v === null ? "(unknown)" : kept.has(v) ? v : "(other)"));
  const names = [...order.filter((v) => rows.has(v)), ...["(other)", "(unknown)"].filter((v) => rows.has(v))];
  state.traceRows = names.map((n) => rows.get(n));
  return names.map((n, i) => pointsTrace(rows.get(n), n, n.startsWith("(") ? NOISE : PALETTE[i % PALETTE.length],
                                         (r) => `${column.name} ${values[r] ?? "unknown"}`));
}

const VIRIDIS = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725"];
function viridis(f) { return VIRIDIS[Math.round(f * (VIRIDIS.length - 1))]; }

function numericBins(values) {
  // 5 to 11 bins of a round width (1, 2, 2.5 or 5 times a power of ten) covering the known values
  let lo = Infinity, hi = -Infinity;
  for (const v of values) if (v !== null) { if (v < lo) lo = v; if (v > hi) hi = v; }
  if (lo === Infinity) return [];
  if (hi === lo) return [{ lo, hi, name: String(lo) }];
  const raw = (hi - lo) / 10, power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((w) => w >= raw);
  const start = Math.floor(lo / step) * step, n = Math.max(1, Math.ceil((hi - start) / step));
  const num = (v) => String(Number(v.toPrecision(6)));
  return Array.from({ length: n }, (_, i) => {
    const a = start + i * step, b = start + (i + 1) * step;
    return { lo: a, hi: b, name: i === n - 1 ? `${num(a)}–${num(b)}` : `${num(a)}–<${num(b)}` };
  });
}

function binOf(bins, v) {
  if (bins.length === 1) return 0;
  const step = bins[0].hi - bins[0].lo;
  return Math.min(bins.length - 1, Math.max(0, Math.floor((v - bins[0].lo) / step)));
}

function foundTrace(row) {
  const { map } = state;
  return { type: "scattergl", mode: "markers+text", name: `found: ${map.ecg_ids[row]}`, meta: "found",
           x: [map.x[row]], y: [map.y[row]], text: [map.ecg_ids[row]], textposition: "top center",
           textfont: { size: 13, color: "#111" }, hoverinfo: "none",
           marker: { size: 24, color: "#111", symbol: "circle-open", line: { width: 3 } } };
}

function labelPicker(column) {
  const pick = document.getElementById("map-label-pick");
  const select = document.getElementById("map-label");
  pick.hidden = column.kind !== "labels";
  if (column.kind !== "labels") return;
  if (!column.labels.some((l) => l.label === state.label)) state.label = column.labels.length ? column.labels[0].label : null;
  if (select.dataset.column !== column.name) {
    select.replaceChildren(...column.labels.map((l) => el("option", { value: l.label, textContent: `${l.shown} (${l.count})` })));
    select.dataset.column = column.name;
  }
  select.value = state.label ?? "";
}

async function draw() {
  const plot = document.getElementById("map-plot");
  let column = { name: "cluster" };
  if (state.colour !== "cluster") column = await columnData(state.colour);
  state.column = column;
  labelPicker(column);
  const data = traces(column);
  if (state.found !== null) {
    data.push(foundTrace(state.found));
    state.traceRows.push([state.found]);
  }
  const shown = column.kind === "labels" ? (column.labels.find((l) => l.label === state.label) || {}).shown : "";
  const how = column.kind === "labels" ? `"${column.name} contains ${shown || state.label}"` : column.name;
  const layout = {
    margin: { l: 30, r: 10, t: 30, b: 30 }, dragmode: "select", hovermode: "closest", uirevision: state.run,
    title: { text: `${state.run}: ${state.map.n.toLocaleString()} ECGs, coloured by ${how}`, font: { size: 14 } },
    xaxis: { zeroline: false, showticklabels: false }, yaxis: { zeroline: false, showticklabels: false },
    legend: { itemsizing: "constant" },
  };
  await Plotly.react(plot, data, layout, { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["toImage"] });
  plot.dataset.points = String(plot.data.filter((t) => t.meta !== "found").reduce((n, t) => n + t.x.length, 0));
  plot.dataset.colour = column.name;
  plot.dataset.label = column.kind === "labels" ? state.label ?? "" : "";
  plot.dataset.contains = column.kind === "labels" ? String(state.traceRows[2].length) : "";
  plot.dataset.bins = column.kind === "numeric" ? JSON.stringify(state.bins) : "";
  plot.dataset.ready = String(performance.now());
}

function rowOf(point) { return state.traceRows[point.curveNumber][point.pointIndex]; }

function urlParams() {
  const p = { view: "map", run: state.run, colour: state.colour === "cluster" ? "" : state.colour,
              label: state.column && state.column.kind === "labels" ? state.label : "",
              find: state.found === null ? "" : state.map.ecg_ids[state.found] };
  return new URLSearchParams(Object.entries(p).filter(([, v]) => v));
}

// colour by `colour` (and `label` of a label list) without reloading the map; the URL follows
async function recolour(colour, label) {
  state.colour = colour;
  state.label = label ?? null;
  document.getElementById("map-colour").value = colour;
  try {
    await draw();
    history.pushState(null, "", `?${urlParams()}`);
    if (state.selectedRows.length) await histograms();
  } catch (error) { showError(error); }
}

let hoverTimer = null;
function hovered(event) {
  const point = event.points[0];
  const row = rowOf(point);
  const id = state.map.ecg_ids[row];
  const plot = document.getElementById("map-plot");
  const xa = point.xaxis || plot._fullLayout.xaxis, ya = point.yaxis || plot._fullLayout.yaxis;
  const caption = String(point.text || "").split("<br>")[1] || "";
  showThumb(id, caption, xa._offset + xa.l2p(point.x), ya._offset + ya.l2p(point.y));
  clearTimeout(hoverTimer);
  hoverTimer = setTimeout(async () => {
    const card = document.getElementById("hover-card");
    try {
      const ecg = await get("/api/ecg", { id });
      // the key columns first (dataset, age, sex, labels...), then the rest
      const key = state.info.key_metadata || [];
      const rank = (k) => (key.includes(k) ? key.indexOf(k) : key.length);
      const lines = Object.entries(ecg.metadata).filter(([k]) => !k.startsWith("cluster_"))
        .sort(([a], [b]) => rank(a) - rank(b)).slice(0, 14)
        .map(([k, v]) => el("div", {}, el("b", {}, `${k} `), Array.isArray(v) ? v.join(", ") : String(v)));
      card.replaceChildren(el("h3", {}, ecg.ecg_id), el("div", { class: "meta" }, ...lines));
    } catch (error) { card.replaceChildren(el("em", {}, error.message)); }
  }, 150);
}

async function find(text) {
  const out = document.getElementById("map-find-result");
  const id = text.trim();
  if (!id) return;
  if (!state.index) state.index = new Map(state.map.ecg_ids.map((e, i) => [e, i]));
  const row = state.index.get(id);
  if (row === undefined) {
    out.textContent = `${id} is not on this map`;
    out.dataset.found = "";
    return;
  }
  state.found = row;
  await draw();
  // centre it, zoomed to at most a fifth of the map's extent
  const plot = document.getElementById("map-plot");
  const [x, y] = [state.map.x[row], state.map.y[row]];
  const xr = plot._fullLayout.xaxis.range, yr = plot._fullLayout.yaxis.range;
  const sx = Math.min(Math.abs(xr[1] - xr[0]), state.map.extent[0] / 5);
  const sy = Math.min(Math.abs(yr[1] - yr[0]), state.map.extent[1] / 5);
  await Plotly.relayout(plot, { "xaxis.range": [x - sx / 2, x + sx / 2], "yaxis.range": [y - sy / 2, y + sy / 2] });
  out.textContent = `found ${id} (cluster ${state.map.cluster[row] < 0 ? "noise" : state.map.cluster[row]})`;
  out.dataset.found = id;
  plot.dataset.found = id;
  history.replaceState(null, "", `?${urlParams()}`);
}

function suggest(prefix) {
  const list = document.getElementById("map-find-ids");
  if (!prefix || !state.map) { list.replaceChildren(); return; }
  const out = [];
  for (const id of state.map.ecg_ids) {
    if (id.startsWith(prefix)) out.push(id);
    if (out.length >= SUGGESTED) break;
  }
  list.replaceChildren(...out.map((id) => el("option", { value: id })));
}

function fmt(v, digits = 2) { return v === null || v === undefined ? "–" : typeof v === "number" ? v.toPrecision(digits) : String(v); }
function pct(v) { return v === null || v === undefined ? "–" : `${(100 * v).toFixed(0)}%`; }

// the columns a selection's histograms compare: age, sex and a label list (the one the map is
// coloured by, else the first the run tested)
async function histograms() {
  const columns = state.info.columns;
  const labelColumn = state.column && state.column.kind === "labels" ? state.column.name
    : state.map.label_columns.find((c) => (columns[c] || "").endsWith("[]"));
  const names = ["age", "sex", labelColumn].filter((c) => c && c in columns);
  const loaded = await Promise.all(names.map(columnData));
  await showHistograms(state.selectedRows, state.map.n, loaded);
}

async function selected(event) {
  const count = document.getElementById("selection-count");
  const stats = document.getElementById("selection-stats");
  const rows = event && event.points ? event.points.map(rowOf) : [];
  state.selectedRows = [...new Set(rows)];
  state.selected = state.selectedRows.map((r) => state.map.ecg_ids[r]);
  state.selectionRange = event && event.range ? event.range : null;
  count.dataset.count = String(state.selected.length);
  count.dataset.range = JSON.stringify(state.selectionRange);
  count.textContent = state.selected.length ? `${state.selected.length.toLocaleString()} ECGs selected` : "nothing selected";
  document.getElementById("selection-actions").hidden = !state.selected.length;
  document.getElementById("cohort-result").replaceChildren();
  stats.replaceChildren();
  try { await histograms(); } catch (error) { showError(error); }
  if (!state.selected.length) return;
  try {
    const s = await post("/api/selection", { run: state.run, ecg_ids: state.selected });
    const head = el("tr", {}, ...["label", "inside", "outside", "OR", "p", "q"].map((h) => el("th", {}, h)));
    const body = s.labels.map((r) => {
      const tr = el("tr", {}, el("td", {}, r.label), el("td", {}, `${r.positive_in}/${r.n_in} (${pct(r.prevalence_in)})`),
                    el("td", {}, `${r.positive_out}/${r.n_out} (${pct(r.prevalence_out)})`), el("td", {}, fmt(r.odds_ratio)),
                    el("td", {}, fmt(r.p_value)), el("td", {}, fmt(r.q_value)));
      if (r.q_value !== null && r.q_value < 0.05) tr.className = "significant";
      return tr;
    });
    const age = (g) => (g && g.age_median !== null ? `age ${g.age_median} [${g.age_q1}–${g.age_q3}]` : "age n/a");
    const sex = (g) => (g ? `F ${g.female} / M ${g.male}` : "");
    stats.replaceChildren(
      el("div", { class: "meta" }, `inside: ${age(s.inside)}, ${sex(s.inside)} · outside: ${age(s.outside)}, ${sex(s.outside)}`),
      el("div", { class: "meta" }, "label prevalence inside vs outside the selection; Fisher exact p, BH q over these labels"),
      el("table", { id: "selection-table" }, head, ...body));
    stats.dataset.nSelected = String(s.n_selected);
  } catch (error) { showError(error); }
}

function downloadCsv() {
  const csv = "ecg_id\n" + state.selected.map((id) => (/[",\n]/.test(id) ? `"${id.replace(/"/g, '""')}"` : id)).join("\n") + "\n";
  const link = el("a", { href: URL.createObjectURL(new Blob([csv], { type: "text/csv" })), download: `${state.run}-selection.csv` });
  link.id = "csv-link";
  document.getElementById("cohort-result").replaceChildren(link);
  link.click();
}

async function saveCohort() {
  const name = document.getElementById("cohort-name").value.trim();
  const out = document.getElementById("cohort-result");
  try {
    const saved = await post("/api/cohort", { name, ecg_ids: state.selected });
    out.replaceChildren(el("span", { id: "cohort-saved" }, `saved: ${saved.updated} ECGs in column ${saved.column}; search with `),
                        el("code", {}, saved.filter));
    showStatus("");
  } catch (error) {
    out.replaceChildren(el("span", { id: "cohort-error" }, error.describe ? error.describe() : String(error)));
    showError(error);
  }
}

async function loadMap(run) {
  const map = await get("/api/map", { run });
  map.x = decode(map.x, Float32Array);
  map.y = decode(map.y, Float32Array);
  map.cluster = decode(map.cluster, Int32Array);
  let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
  for (let i = 0; i < map.n; i++) {
    x0 = Math.min(x0, map.x[i]); x1 = Math.max(x1, map.x[i]); y0 = Math.min(y0, map.y[i]); y1 = Math.max(y1, map.y[i]);
  }
  map.extent = [Math.max(x1 - x0, 1e-6), Math.max(y1 - y0, 1e-6)];
  return map;
}

function wire(plot, navigate) {
  const runSelect = document.getElementById("map-run"), colourSelect = document.getElementById("map-colour");
  plot.on("plotly_hover", hovered);
  plot.on("plotly_unhover", hideThumb);
  plot.on("plotly_selected", selected);
  plot.on("plotly_deselect", () => selected(null));
  plot.on("plotly_click", (event) => {
    window.atlasClickedAt = performance.now();
    hideThumb();
    navigate({ view: "search", id: state.map.ecg_ids[rowOf(event.points[0])], k: "5" });
  });
  runSelect.addEventListener("change", () => navigate({ view: "map", run: runSelect.value }));
  colourSelect.addEventListener("change", () => recolour(colourSelect.value, null));
  document.getElementById("map-label").addEventListener("change", (e) => recolour(state.colour, e.target.value));
  const findBox = document.getElementById("map-find");
  findBox.addEventListener("input", () => suggest(findBox.value.trim()));
  document.getElementById("map-form").addEventListener("submit", (e) => {
    e.preventDefault();
    find(findBox.value).catch(showError);
  });
  document.getElementById("download-csv").addEventListener("click", downloadCsv);
  document.getElementById("save-cohort").addEventListener("click", saveCohort);
}

export async function showMap(params, navigate) {
  try {
    const [{ runs }, info] = await Promise.all([get("/api/runs"), get("/api/info")]);
    state.info = info;
    const runSelect = document.getElementById("map-run");
    if (!runs.length) { showStatus(NO_RUNS_HINT, "info"); return; }
    runSelect.replaceChildren(...runs.map((r) => el("option", { value: r.run, textContent: `${r.run} (${r.n_ecgs} ECGs)` })));
    const run = params.run && runs.some((r) => r.run === params.run) ? params.run : runs[0].run;
    runSelect.value = run;
    const colourSelect = document.getElementById("map-colour");
    const columns = Object.keys(info.columns).filter((c) => c !== "ecg_id" && !c.startsWith("cluster_")).sort();
    colourSelect.replaceChildren(el("option", { value: "cluster", textContent: "cluster" }),
                                 ...columns.map((c) => el("option", { value: c, textContent: info.columns[c].endsWith("[]") ? `${c} (contains…)` : c })));
    colourSelect.value = params.colour && columns.includes(params.colour) ? params.colour : "cluster";
    if (state.run !== run || !state.map) {
      state.map = await loadMap(run);
      state.columns = new Map();
      state.index = null;
      document.getElementById("map-label").dataset.column = "";  // the labels and counts are the run's
      state.found = null;
    }
    state.run = run;
    state.colour = colourSelect.value;
    state.label = params.label || null;
    state.found = null;
    document.getElementById("map-find-result").textContent = "";
    await draw();
    const plot = document.getElementById("map-plot");
    if (!plot.dataset.wired) {
      plot.dataset.wired = "1";
      wire(plot, navigate);
    }
    if (params.find) {
      document.getElementById("map-find").value = params.find;
      await find(params.find);
    }
    showEnrichment(run, (column, label) => recolour(column, label)).catch(showError);
  } catch (error) { showError(error); }
}
