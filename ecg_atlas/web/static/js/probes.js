// Probes view: every kept probe (and the served fine-tuned head) with per-label AUROC / AUPRC and
// their bootstrap CIs, each beside what it is compared with (the same probe on a random-init
// encoder; for a fine-tuned head, also a linear probe on the frozen encoder), the ROC and
// precision-recall curves of one label for all of them, and the label-fraction curve.

import { el, get, showError } from "./api.js";

const OWN_COLOUR = "#b03a2e";
const BASELINE_COLOURS = { random_init: "#6c7a89", frozen_probe: "#2471a3" };
const PLOT_CONFIG = { displaylogo: false, responsive: true, displayModeBar: false };

function estimate(e) {
  if (!e || e.value === null || e.value === undefined) return "–";
  const ci = e.ci_low !== null && e.ci_low !== undefined ? ` [${e.ci_low.toFixed(3)}–${e.ci_high.toFixed(3)}]` : "";
  return `${e.value.toFixed(3)}${ci}`;
}

function counts(l) {
  return l.n_positive === undefined || l.n_positive === null ? "" : `${l.n_positive}/${l.n_negative}`;
}

function metricRow(name, measured, { cls = "", flag = "" } = {}) {
  return el("tr", { class: cls }, el("td", {}, name), el("td", {}, estimate(measured && measured.auroc)),
            el("td", {}, estimate(measured && measured.auprc)), el("td", {}, measured ? counts(measured) : ""),
            el("td", { class: "flag" }, flag || ""));
}

function table(probe) {
  const split = probe.measured_on === "val" ? "val" : "test";
  const head = el("tr", {}, ...["label", "AUROC [95% CI]", "AUPRC [95% CI]", `${split} +/−`, ""].map((h) => el("th", {}, h)));
  const rows = [];
  for (const l of probe.labels) {
    rows.push(metricRow(el("b", {}, l.label), l, { cls: "own", flag: l.flag }));
    for (const b of probe.baselines) {
      const theirs = b.labels.find((x) => x.label === l.label);
      rows.push(metricRow(`vs ${b.name}`, theirs, { cls: "baseline" }));
    }
  }
  const macro = probe.macro || {};
  const leftOut = Object.keys(macro.left_out || {});
  rows.push(metricRow(el("b", {}, "macro"), { auroc: macro.auroc, auprc: macro.auprc }, {
    cls: "own macro", flag: leftOut.length ? `leaves out ${leftOut.join(", ")} (too few positives)` : "" }));
  for (const b of probe.baselines) rows.push(metricRow(`vs ${b.name}`, { auroc: b.macro.auroc, auprc: b.macro.auprc },
                                                      { cls: "baseline macro" }));
  return el("table", { class: "probe-table" }, head, ...rows);
}

function curveTraces(probe, label, kind) {
  const series = [{ name: probe.kind === "fine-tuned" ? "fine-tuned" : "this probe", colour: OWN_COLOUR, dash: "solid",
                    labels: probe.labels }];
  for (const b of probe.baselines) series.push({ name: b.name, colour: BASELINE_COLOURS[b.key] || "#888", dash: "dash",
                                                 labels: b.labels });
  const out = [];
  for (const s of series) {
    const l = s.labels.find((x) => x.label === label);
    const c = l && l.curves;
    if (!c) continue;
    const area = kind === "roc" ? l.auroc : l.auprc;
    const value = area && area.value !== null && area.value !== undefined ? ` (${area.value.toFixed(3)})` : "";
    out.push({ type: "scatter", mode: "lines", name: `${s.name}${value}`, line: { color: s.colour, dash: s.dash, width: 2,
                                                                               shape: kind === "roc" ? "linear" : "hv" },
               x: kind === "roc" ? c.roc.fpr : c.pr.recall, y: kind === "roc" ? c.roc.tpr : c.pr.precision });
  }
  return out;
}

function drawCurves(rocNode, prNode, probe, label) {
  const own = probe.labels.find((x) => x.label === label);
  const prevalence = own && own.curves ? own.curves.prevalence : null;
  const common = (title, x, y) => ({
    margin: { l: 50, r: 10, t: 30, b: 45 }, title: { text: title, font: { size: 13 } },
    xaxis: { range: [0, 1], title: { text: x } }, yaxis: { range: [0, 1.02], title: { text: y } },
    legend: { orientation: "h", y: -0.28, font: { size: 11 } },
  });
  const roc = curveTraces(probe, label, "roc");
  const pr = curveTraces(probe, label, "pr");
  rocNode.dataset.curves = String(roc.length);
  prNode.dataset.curves = String(pr.length);
  const rocLayout = { ...common(`ROC · ${label}`, "false positive rate", "true positive rate"),
    shapes: [{ type: "line", x0: 0, y0: 0, x1: 1, y1: 1, line: { dash: "dot", color: "#999", width: 1 } }] };
  const prLayout = { ...common(`precision–recall · ${label}`, "recall", "precision"),
    shapes: prevalence === null ? [] : [{ type: "line", x0: 0, x1: 1, y0: prevalence, y1: prevalence,
                                          line: { dash: "dot", color: "#999", width: 1 } }] };
  if (!roc.length) {
    rocLayout.annotations = prLayout.annotations = [{ text: "no curve stored for this label<br>(retrain the probe to keep one)",
                                                       showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5 }];
  }
  return Promise.all([Plotly.react(rocNode, roc, rocLayout, PLOT_CONFIG), Plotly.react(prNode, pr, prLayout, PLOT_CONFIG)]);
}

function fractionCurve(node, probe) {
  const points = probe.fraction_curve;
  const traces = probe.labels.map((l) => ({
    type: "scatter", mode: "lines+markers", name: l.label,
    x: points.map((p) => p.fraction), y: points.map((p) => (p.per_label_auroc || {})[l.label] ?? null),
  }));
  if (points.some((p) => p.macro_auroc !== null)) {
    traces.push({ type: "scatter", mode: "lines+markers", name: "macro", line: { dash: "dot", color: "#000" },
                  x: points.map((p) => p.fraction), y: points.map((p) => p.macro_auroc) });
  }
  const layout = {
    margin: { l: 50, r: 10, t: 30, b: 45 }, title: { text: "label-fraction curve", font: { size: 13 } },
    xaxis: { type: "log", title: { text: "fraction of training patients" } },
    yaxis: { range: [0, 1.02], title: { text: "test AUROC" } },
    shapes: [{ type: "line", xref: "paper", x0: 0, x1: 1, y0: 0.5, y1: 0.5, line: { dash: "dash", color: "#999", width: 1 } }],
    legend: { orientation: "h", y: -0.3 },
  };
  return Plotly.react(node, traces, layout, PLOT_CONFIG);
}

function describe(probe) {
  const parts = [probe.kind, probe.model_id, probe.created_at, probe.split].filter((p) => p);
  if (probe.where.length) parts.push(`cohort: ${probe.where.join(" and ")}`);
  const on = probe.measured_on === "val" ? "the validation split" : "the test split (patients it was not trained on)";
  const text = `${parts.join(" · ")} — measured on ${on}, 95% CIs by patient bootstrap`;
  const meta = el("div", { class: "meta" }, text);
  if (!probe.baselines.length && probe.kind !== "fine-tuned") {
    meta.append(el("div", { class: "hint" }, "no random-init baseline kept: train it again with ",
                   el("code", {}, `ecg-atlas probe train --name ${probe.name} --target SPEC --baseline --overwrite`),
                   " to see what the pretrained encoder adds"));
  }
  return meta;
}

async function showProbe(box, probe) {
  const roc = el("div", { class: "curve roc" });
  const pr = el("div", { class: "curve pr" });
  // every plot's box is in place before any is drawn: each takes its width from its own
  const fraction = probe.fraction_curve.length ? el("div", { class: "curve fraction" }) : null;
  const plots = el("div", { class: "probe-plots" }, roc, pr, fraction);
  const withCurves = probe.labels.filter((l) => l.curves).map((l) => l.label);
  const choices = withCurves.length ? withCurves : probe.labels.map((l) => l.label);
  const picker = el("select", { class: "curve-label" }, ...choices.map((l) => el("option", { value: l, textContent: l })));
  const card = el("div", { class: "card probe" }, el("h3", {}, probe.name), describe(probe), table(probe),
                  el("label", { class: "curve-pick" }, "curves for ", picker), plots);
  card.dataset.probe = probe.name;
  card.dataset.baselines = String(probe.baselines.length);
  box.append(card);
  picker.addEventListener("change", () => drawCurves(roc, pr, probe, picker.value));
  await drawCurves(roc, pr, probe, choices[0]);
  if (fraction) await fractionCurve(fraction, probe);
}

export async function showProbes() {
  const box = document.getElementById("probes");
  try {
    const { probes } = await get("/api/probes");
    box.replaceChildren();
    if (!probes.length) {
      box.append(el("p", { class: "empty" }, "no probes yet: train one with ",
                    el("code", {}, "ecg-atlas probe train --name NAME --target SPEC"),
                    " (e.g. ", el("code", {}, "--target label_groups:AF_AFL"), "; add ", el("code", {}, "--baseline"),
                    " to compare it with a random-init encoder)"));
    }
    for (const probe of probes) await showProbe(box, probe);
    box.dataset.ready = "1";
  } catch (error) { showError(error); }
}
