// The panels beside the cohort map: the run's enrichment table (enrichment.csv, kept beside the
// run) and the histograms of a selection's metadata against the whole run.

import { el, get } from "./api.js";

const SHOWN_ROWS = 40;
const TOP_LABELS = 8;
const SELECTION = "#b03a2e";
const EVERYONE = "#9aa7b4";

function fmt(v, digits = 2) {
  return v === null || v === undefined ? "–" : typeof v === "number" ? v.toPrecision(digits) : String(v);
}
function pct(v) { return v === null || v === undefined ? "–" : `${(100 * v).toFixed(0)}%`; }
function clusterName(c) { return c === -1 ? "noise" : String(c); }

// "label_groups:AF_AFL" -> ["label_groups", "AF_AFL"]; a boolean column's label is the column alone
function splitLabel(label) {
  const at = label.indexOf(":");
  return at < 0 ? [label, null] : [label.slice(0, at), label.slice(at + 1)];
}

// The run's enrichment table: every (cluster, label) test, most significant first; a row with a
// label-list label colours the map by "contains" that label (onLabel(column, label)).
export async function showEnrichment(run, onLabel) {
  const box = document.getElementById("map-enrichment");
  const table = await get("/api/map-enrichment", { run });
  const clusters = [...new Set(table.labels.map((r) => r.cluster))].sort((a, b) => a - b);
  const pick = el("select", { id: "enrichment-cluster" }, el("option", { value: "all", textContent: "all clusters" }),
                  ...clusters.map((c) => el("option", { value: String(c), textContent: `cluster ${clusterName(c)}` })));
  const body = el("div", { class: "scroll" });
  let showAll = false;
  const render = () => {
    const rows = table.labels.filter((r) => pick.value === "all" || String(r.cluster) === pick.value);
    const shown = showAll ? rows : rows.slice(0, SHOWN_ROWS);
    const head = el("tr", {}, ...["cluster", "size", "label", "in cluster", "outside", "OR", "p", "q"]
      .map((h) => el("th", {}, h)));
    const size = new Map(table.clusters.map((c) => [c.cluster, c.size]));
    const lines = shown.map((r) => {
      const tr = el("tr", {}, el("td", {}, clusterName(r.cluster)), el("td", {}, String(size.get(r.cluster) ?? "–")),
                    el("td", {}, r.shown || r.label), el("td", {}, `${r.positive_in}/${r.n_in} (${pct(r.prevalence_in)})`),
                    el("td", {}, `${r.positive_out}/${r.n_out} (${pct(r.prevalence_out)})`),
                    el("td", {}, fmt(r.odds_ratio)), el("td", {}, fmt(r.p_value)), el("td", {}, fmt(r.q_value)));
      if (r.q_value !== null && r.q_value < 0.05) tr.className = "significant";
      const [column, label] = splitLabel(r.label);
      if (label !== null) {
        tr.setAttribute("data-label", r.label);
        tr.title = `colour the map by "${column} contains ${label}"`;
        tr.addEventListener("click", () => onLabel(column, label));
      }
      return tr;
    });
    const more = rows.length > shown.length
      ? el("button", { type: "button", textContent: `show all ${rows.length} rows` }) : null;
    if (more) more.addEventListener("click", () => { showAll = true; render(); });
    body.replaceChildren(el("table", { id: "enrichment-table" }, head, ...lines), more);
    box.dataset.rows = String(shown.length);
  };
  pick.addEventListener("change", () => { showAll = false; render(); });
  const significant = table.labels.filter((r) => r.q_value !== null && r.q_value < 0.05).length;
  box.replaceChildren(
    el("h3", {}, "Enrichment of this run"),
    el("div", { class: "meta" }, `${table.labels.length} tests (cluster × label, Fisher exact, BH q over all), `
       + `${significant} at q < 0.05 · from enrichment.csv beside the run · click a row to colour the map by it `),
    pick, body);
  box.dataset.tests = String(table.labels.length);
  render();
  box.hidden = !table.labels.length && !table.clusters.length;
}

function counts(rows, key) {
  const out = new Map();
  for (const r of rows) {
    for (const k of key(r)) out.set(k, (out.get(k) || 0) + 1);
  }
  return out;
}

function bars(div, title, categories, all, selected, nAll, nSelected) {
  const share = (m, n) => categories.map((c) => (n ? (100 * (m.get(c) || 0)) / n : 0));
  const trace = (name, m, n, colour) => ({
    type: "bar", name: `${name} (${n.toLocaleString()})`, x: categories.map(String), y: share(m, n),
    marker: { color: colour }, customdata: categories.map((c) => m.get(c) || 0),
    hovertemplate: "%{x}: %{customdata} (%{y:.0f}%)<extra>" + name + "</extra>" });
  div.dataset.selected = JSON.stringify(Object.fromEntries(categories.map((c) => [String(c), selected.get(c) || 0])));
  div.dataset.all = JSON.stringify(Object.fromEntries(categories.map((c) => [String(c), all.get(c) || 0])));
  return Plotly.react(div, [trace("all", all, nAll, EVERYONE), trace("selection", selected, nSelected, SELECTION)], {
    title: { text: title, font: { size: 12 }, x: 0.02 }, barmode: "group", height: 150,
    margin: { l: 34, r: 6, t: 24, b: 28 }, yaxis: { ticksuffix: "%", fixedrange: true },
    xaxis: { type: "category", fixedrange: true, automargin: true }, showlegend: true,
    legend: { orientation: "h", x: 1, xanchor: "right", y: 1.25, font: { size: 10 } },
  }, { displayModeBar: false, responsive: true });
}

const AGE_BINS = [0, 20, 30, 40, 50, 60, 70, 80, 90];
function ageBin(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return [];
  let b = AGE_BINS[0];
  for (const edge of AGE_BINS) if (v >= edge) b = edge;
  return [b === 90 ? "90+" : b === 0 ? "<20" : `${b}s`];
}

// Histograms of the selection (row indexes into the run) against the whole run. columns: loaded
// map columns ({name, kind, values} or {name, kind, labels, codes}) for age, sex and a label list.
export async function showHistograms(selectedRows, n, columns) {
  const box = document.getElementById("selection-hists");
  if (!selectedRows.length) { box.replaceChildren(); box.dataset.drawn = ""; return; }
  const everyone = Array.from({ length: n }, (_, i) => i);
  const drawn = [];
  for (const column of columns) {
    const div = el("div", { class: "hist" });
    div.setAttribute("data-column", column.name);
    drawn.push([column, div]);
  }
  box.replaceChildren(...drawn.map(([, div]) => div));
  for (const [column, div] of drawn) {
    let key, categories, title, known;
    if (column.kind === "labels") {
      const labelOf = (r) => (column.codes[r] || []).map((c) => column.labels[c].shown);
      known = (rows) => rows.filter((r) => column.codes[r] !== null);
      key = labelOf;
      const inSelection = counts(known(selectedRows), labelOf);
      categories = [...inSelection.entries()].sort((a, b) => b[1] - a[1]).slice(0, TOP_LABELS).map(([c]) => c);
      title = `${column.name}: share holding each label (top ${TOP_LABELS} in the selection)`;
    } else if (column.kind === "numeric") {
      key = (r) => ageBin(column.values[r]);
      known = (rows) => rows.filter((r) => column.values[r] !== null);
      categories = ["<20", "20s", "30s", "40s", "50s", "60s", "70s", "80s", "90+"];
      title = `${column.name} (share of known)`;
    } else {
      key = (r) => [column.values[r] ?? "unknown"];
      known = (rows) => rows;
      const order = counts(everyone, key);
      categories = [...order.entries()].sort((a, b) => b[1] - a[1]).slice(0, 10).map(([c]) => c);
      title = column.name;
    }
    const all = known(everyone), sel = known(selectedRows);
    await bars(div, title, categories, counts(all, key), counts(sel, key), all.length, sel.length);
  }
  box.dataset.drawn = String(drawn.length);
}
