// Cohort map view: a cluster run's 2-D map as a WebGL scatter. Colour by cluster or any metadata
// column; hover for id and metadata; click for that ECG and its neighbours; box or lasso select
// for the selection's size and label prevalence inside vs outside, a CSV of its ids, and saving
// it as a named cohort (a boolean metadata column search can filter on).

import { el, get, post, showError, showStatus } from "./api.js";

const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
                 "#bcbd22", "#393b79", "#ad494a", "#637939", "#7b4173", "#3182bd", "#e6550d", "#31a354"];
const MAX_CATEGORIES = 15;
const NOISE = "#b0b0b0";

let state = { run: null, map: null, colour: "cluster", traceRows: [], selected: [], selectionRange: null };

function decode(base64, Type) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  return new Type(bytes.buffer);
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
  return { type: "scattergl", mode: "markers", name: `${name} (${rows.length})`, x, y, text,
           hoverinfo: "text", marker: { size: map.n > 20000 ? 3 : 6, color: colour, opacity: map.n > 20000 ? 1 : 0.8 } };
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
  const values = column.values;
  if (column.kind === "numeric") {
    const known = [], unknown = [];
    values.forEach((v, i) => (v === null ? unknown : known).push(i));
    state.traceRows = [known, unknown];
    const main = pointsTrace(known, column.name, known.map((i) => values[i]), (r) => `${column.name} ${values[r]}`);
    main.marker.colorscale = "Viridis";
    main.marker.showscale = true;
    main.marker.colorbar = { title: { text: column.name }, thickness: 12 };
    main.showlegend = false;
    return [main, pointsTrace(unknown, "unknown", NOISE, () => `${column.name} unknown`)];
  }
  const { order, kept } = groupsOf(values);
  const rows = rowsBy(values, (v) => (v === null ? "(unknown)" : kept.has(v) ? v : "(other)"));
  const names = [...order.filter((v) => rows.has(v)), ...["(other)", "(unknown)"].filter((v) => rows.has(v))];
  state.traceRows = names.map((n) => rows.get(n));
  return names.map((n, i) => pointsTrace(rows.get(n), n, n.startsWith("(") ? NOISE : PALETTE[i % PALETTE.length],
                                         (r) => `${column.name} ${values[r] ?? "unknown"}`));
}

async function draw() {
  const plot = document.getElementById("map-plot");
  let column = { name: "cluster" };
  if (state.colour !== "cluster") column = await get("/api/map-column", { run: state.run, name: state.colour });
  const layout = {
    margin: { l: 30, r: 10, t: 30, b: 30 }, dragmode: "select", hovermode: "closest", uirevision: state.run,
    title: { text: `${state.run}: ${state.map.n.toLocaleString()} ECGs, coloured by ${column.name}`, font: { size: 14 } },
    xaxis: { zeroline: false, showticklabels: false }, yaxis: { zeroline: false, showticklabels: false },
    // beside a numeric colour bar the legend (unknown values only) goes below the map
    legend: column.kind === "numeric" ? { itemsizing: "constant", orientation: "h", x: 0, y: -0.02 }
                                      : { itemsizing: "constant" },
  };
  await Plotly.react(plot, traces(column), layout, { displaylogo: false, responsive: true,
                                                      modeBarButtonsToRemove: ["toImage"] });
  plot.dataset.points = String(plot.data.reduce((n, t) => n + t.x.length, 0));
  plot.dataset.ready = String(performance.now());
}

function rowOf(point) { return state.traceRows[point.curveNumber][point.pointIndex]; }

let hoverTimer = null;
function hovered(event, map) {
  const row = rowOf(event.points[0]);
  clearTimeout(hoverTimer);
  hoverTimer = setTimeout(async () => {
    const card = document.getElementById("hover-card");
    try {
      const ecg = await get("/api/ecg", { id: map.ecg_ids[row] });
      const lines = Object.entries(ecg.metadata).filter(([k]) => !k.startsWith("cluster_"))
        .slice(0, 14).map(([k, v]) => el("div", {}, el("b", {}, `${k} `), Array.isArray(v) ? v.join(", ") : String(v)));
      card.replaceChildren(el("h3", {}, ecg.ecg_id), el("div", { class: "meta" }, ...lines));
    } catch (error) { card.replaceChildren(el("em", {}, error.message)); }
  }, 150);
}

function fmt(v, digits = 2) { return v === null || v === undefined ? "–" : typeof v === "number" ? v.toPrecision(digits) : String(v); }
function pct(v) { return v === null || v === undefined ? "–" : `${(100 * v).toFixed(0)}%`; }

async function selected(event) {
  const count = document.getElementById("selection-count");
  const stats = document.getElementById("selection-stats");
  const rows = event && event.points ? event.points.map(rowOf) : [];
  state.selected = [...new Set(rows)].map((r) => state.map.ecg_ids[r]);
  state.selectionRange = event && event.range ? event.range : null;
  count.dataset.count = String(state.selected.length);
  count.dataset.range = JSON.stringify(state.selectionRange);
  count.textContent = state.selected.length ? `${state.selected.length.toLocaleString()} ECGs selected` : "nothing selected";
  document.getElementById("selection-actions").hidden = !state.selected.length;
  document.getElementById("cohort-result").replaceChildren();
  stats.replaceChildren();
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

export async function showMap(params, navigate) {
  try {
    const [{ runs }, info] = await Promise.all([get("/api/runs"), get("/api/info")]);
    const runSelect = document.getElementById("map-run");
    if (!runs.length) { showStatus("no cluster runs yet: make one with `ecg-atlas cluster RUN`", "info"); return; }
    runSelect.replaceChildren(...runs.map((r) => el("option", { value: r.run, textContent: `${r.run} (${r.n_ecgs} ECGs)` })));
    const run = params.run && runs.some((r) => r.run === params.run) ? params.run : runs[0].run;
    runSelect.value = run;
    const colourSelect = document.getElementById("map-colour");
    const columns = Object.keys(info.columns).filter((c) => c !== "ecg_id" && !c.startsWith("cluster_")).sort();
    colourSelect.replaceChildren(el("option", { value: "cluster", textContent: "cluster" }),
                                 ...columns.map((c) => el("option", { value: c, textContent: c })));
    colourSelect.value = params.colour && columns.includes(params.colour) ? params.colour : "cluster";
    if (state.run !== run || !state.map) {
      const map = await get("/api/map", { run });
      map.x = decode(map.x, Float32Array);
      map.y = decode(map.y, Float32Array);
      map.cluster = decode(map.cluster, Int32Array);
      state.map = map;
    }
    state.run = run;
    state.colour = colourSelect.value;
    await draw();
    const plot = document.getElementById("map-plot");
    if (!plot.dataset.wired) {
      plot.dataset.wired = "1";
      plot.on("plotly_hover", (event) => hovered(event, state.map));
      plot.on("plotly_selected", selected);
      plot.on("plotly_deselect", () => selected(null));
      plot.on("plotly_click", (event) => {
        window.atlasClickedAt = performance.now();
        navigate({ view: "search", id: state.map.ecg_ids[rowOf(event.points[0])], k: "5" });
      });
      runSelect.addEventListener("change", () => navigate({ view: "map", run: runSelect.value, colour: "cluster" }));
      colourSelect.addEventListener("change", () => navigate({ view: "map", run: runSelect.value, colour: colourSelect.value }));
      document.getElementById("download-csv").addEventListener("click", downloadCsv);
      document.getElementById("save-cohort").addEventListener("click", saveCohort);
    }
  } catch (error) { showError(error); }
}
