// Probes view: every saved linear probe with per-label AUROC / AUPRC and their bootstrap CIs on
// its test split, and its label-fraction curve (AUROC against the share of training patients).

import { el, get, showError } from "./api.js";

function estimate(e) {
  if (!e || e.value === null || e.value === undefined) return "–";
  const ci = e.ci_low !== null && e.ci_low !== undefined ? ` [${e.ci_low.toFixed(3)}–${e.ci_high.toFixed(3)}]` : "";
  return `${e.value.toFixed(3)}${ci}`;
}

function curve(node, probe) {
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
  return Plotly.react(node, traces, layout, { displaylogo: false, responsive: true });
}

export async function showProbes() {
  const box = document.getElementById("probes");
  try {
    const { probes } = await get("/api/probes");
    box.replaceChildren();
    if (!probes.length) box.append(el("p", {}, "no probes yet: train one with `ecg-atlas probe train NAME TARGET`"));
    for (const probe of probes) {
      const head = el("tr", {}, ...["label", "AUROC [95% CI]", "AUPRC [95% CI]", "test +/−", ""].map((h) => el("th", {}, h)));
      const rows = probe.labels.map((l) => el("tr", {}, el("td", {}, l.label), el("td", {}, estimate(l.auroc)),
                                               el("td", {}, estimate(l.auprc)), el("td", {}, `${l.n_positive ?? "–"}/${l.n_negative ?? "–"}`),
                                               el("td", { class: "flag" }, l.flag || "")));
      rows.push(el("tr", {}, el("td", {}, el("b", {}, "macro")), el("td", {}, estimate(probe.macro.auroc)),
                   el("td", {}, estimate(probe.macro.auprc)), el("td", {}, ""), el("td", {}, "")));
      const plot = el("div", { class: "curve" });
      const card = el("div", { class: "card probe" },
        el("h3", {}, probe.name),
        el("div", { class: "meta" }, `${probe.kind} · ${probe.model_id} · ${probe.created_at} · ${probe.split || ""}` +
                                     (probe.where.length ? ` · cohort: ${probe.where.join(" and ")}` : "")),
        el("div", { class: "probe-body" }, el("table", { class: "probe-table" }, head, ...rows), plot));
      card.dataset.probe = probe.name;
      box.append(card);
      await curve(plot, probe);
    }
    box.dataset.ready = "1";
  } catch (error) { showError(error); }
}
