// One ECG on ECG paper (1 mm minor, 5 mm major grid), drawn in millimetres of paper at the gain
// (5 / 10 / 20 mm/mV) and speed (25 / 50 mm/s) chosen in the page. The server lays the leads out
// (3 x 4 plus a lead II rhythm strip, one layout per speed, traces.py); this scales, clips and
// draws them. A tall complex runs across the neighbouring rows as on paper; a trace is clipped
// only beyond them (each piece's low_mm / high_mm) and the clipped samples are drawn in red. What
// a record does not hold (a missing lead, the seconds after a short record ends) is hatched and
// labelled "not recorded". Every drawn page is kept, so a toggle redraws them all.

import { el } from "./api.js";

export const PAPER = { gain: "10", speed: "25" };
const LEFT_MM = 15; // room for the calibration pulse
const CAL_FLAT_MM = 1.5;
const CAL_S = 0.2; // the calibration pulse: 1 mV for 0.2 s
const CLIP_COLOUR = "#c0392b";
const PAPER_COLOUR = "#fff6f4";
const shown = new Map(); // node -> {page, note}

function clamp(v, low, high) { return v < low ? low : v > high ? high : v; }

function chosen(page) {
  const gain = page.gains.includes(PAPER.gain) ? PAPER.gain : page.standard.gain;
  const speed = page.speeds.includes(PAPER.speed) ? PAPER.speed : page.standard.speed;
  return { gain, speed, mmPerMv: Number(gain), mmPerS: Number(speed) };
}

function notRecorded(x0, x1, base, rowMm) {
  const y0 = base - rowMm / 2 + 1.5, y1 = base + rowMm / 2 - 1.5;
  return { x: [x0, x1, x1, x0, x0], y: [y0, y0, y1, y1, y0], type: "scatter", mode: "lines", fill: "toself",
           fillcolor: "rgba(120,120,120,0.08)", fillpattern: { shape: "/", fgcolor: "#8a8a8a", size: 7, solidity: 0.12 },
           line: { color: "#9a9a9a", width: 0.6, dash: "dot" }, hoverinfo: "skip", name: "not recorded" };
}

function traces(page, s) {
  const layout = page.layouts[s.speed];
  const line = { x: [], y: [] }, cut = { x: [], y: [] }, marks = { x: [], y: [] };
  const hatches = [], labels = [];
  const clippedLeads = new Set(page.clipped[s.speed][s.gain]);
  const calW = CAL_S * s.mmPerS;
  for (const p of layout.pieces) {
    const base = -(p.row + 0.5) * page.row_mm;
    const x0 = p.start_s * s.mmPerS;
    if (p.column === 0) { // the calibration pulse, as tall as 1 mV at this gain
      const c0 = -LEFT_MM + 1, c1 = c0 + CAL_FLAT_MM, c2 = c1 + calW, c3 = c2 + CAL_FLAT_MM;
      marks.x.push(c0, c1, c1, c2, c2, c3, null);
      marks.y.push(base, base, base + s.mmPerMv, base + s.mmPerMv, base, base, null);
    } else if (p.row < page.rows - 1) { // the mark a cart prints where one lead gives way to the next
      marks.x.push(x0, x0, null);
      marks.y.push(base - 4, base + 4, null);
    }
    const step = s.mmPerS / page.fs;
    let wasCut = false;
    p.v.forEach((v, i) => {
      const x = x0 + i * step;
      if (v === null) { line.x.push(null); line.y.push(null); return; }
      const scaled = v * s.mmPerMv;
      const y = base + clamp(scaled, p.low_mm, p.high_mm);
      line.x.push(x); line.y.push(y);
      const isCut = scaled < p.low_mm || scaled > p.high_mm;
      if (isCut) { cut.x.push(x); cut.y.push(y); } else if (wasCut) { cut.x.push(null); cut.y.push(null); }
      wasCut = isCut;
    });
    line.x.push(null); line.y.push(null);
    cut.x.push(null); cut.y.push(null);
    const x1 = p.stop_s * s.mmPerS, until = p.recorded_s * s.mmPerS;
    if (x1 - until > 0.5) {
      hatches.push(notRecorded(until, x1, base, page.row_mm));
      if (x1 - until > 22) {
        labels.push({ x: (until + x1) / 2, y: base - page.row_mm / 4, text: "not recorded", showarrow: false,
                      font: { size: 11, color: "#555" }, bgcolor: PAPER_COLOUR, name: "not-recorded" });
      }
    }
    const clipped = clippedLeads.has(p.lead);
    labels.push({ x: x0 + 1, y: base + page.row_mm / 2 - 4.5, xanchor: "left", yanchor: "middle", showarrow: false,
                  text: clipped ? `<b>${p.lead}</b> <span style="color:${CLIP_COLOUR}">✂</span>` : `<b>${p.lead}</b>`,
                  font: { size: 12, color: "#000" }, bgcolor: "rgba(255,246,244,0.7)", borderpad: 1, name: "lead" });
  }
  const data = [
    { ...line, type: "scatter", mode: "lines", line: { color: "#111", width: 1.1 }, hoverinfo: "skip", connectgaps: false,
      name: "ecg" },
    { ...cut, type: "scatter", mode: "lines+markers", line: { color: CLIP_COLOUR, width: 2.2 },
      marker: { color: CLIP_COLOUR, size: 2.5 }, hoverinfo: "skip", name: "clipped" },
    { ...marks, type: "scatter", mode: "lines", line: { color: "#111", width: 1 }, hoverinfo: "skip", name: "marks" },
    ...hatches,
  ];
  return { data, labels, clipped: clippedLeads, hatched: hatches.length };
}

function render(node, page, note) {
  const s = chosen(page);
  const width = node.clientWidth || 900;
  const right = page.page_mm + 2;
  const top = page.margin_mm, bottom = -page.rows * page.row_mm - page.margin_mm;
  const height = Math.round(width * (top - bottom) / (right + LEFT_MM));
  const drawn = traces(page, s);
  const axis = (range) => ({
    range, dtick: 5, tick0: 0, showgrid: true, gridcolor: "#eda39b", gridwidth: 1,
    minor: { dtick: 1, tick0: 0, showgrid: true, gridcolor: "#fad6d1", gridwidth: 0.5 },
    showticklabels: false, ticks: "", zeroline: false, showline: false, fixedrange: true,
  });
  const layout = {
    width, height, margin: { l: 0, r: 0, t: 0, b: 0 }, showlegend: false,
    paper_bgcolor: PAPER_COLOUR, plot_bgcolor: PAPER_COLOUR,
    xaxis: axis([-LEFT_MM, right]), yaxis: { ...axis([bottom, top]), scaleanchor: "x", scaleratio: 1 },
    annotations: drawn.labels,
  };
  Object.assign(node.dataset, { gain: s.gain, speed: s.speed, clipped: String(drawn.clipped.size),
                                notRecorded: String(drawn.hatched) });
  if (note) fillNote(note, page, s, drawn.clipped);
  return Plotly.react(node, drawn.data, layout, { staticPlot: true, displayModeBar: false });
}

function fillNote(note, page, s, clipped) {
  note.replaceChildren(`${s.gain} mm/mV · ${s.speed} mm/s · ${page.duration_s} s recorded`);
  const shownS = page.layouts[s.speed].page_s;
  if (page.duration_s < shownS) note.append(` · not recorded after ${page.duration_s} s (hatched)`);
  else if (page.duration_s > shownS) note.append(` · the first ${shownS} s shown`);
  if (page.missing.length) note.append(` · leads not recorded: ${page.missing.join(", ")}`);
  if (clipped.size) {
    note.append(el("span", { class: "clipped" }, ` · clipped at this gain (✂, red): ${[...clipped].join(", ")}`));
  }
}

// Draw `page` in `node` at the page's gain and speed, and keep it for the toggles; `note` (from
// paperNote) says the scale and what was not recorded or clipped.
export function drawPaper(node, page, note = null) {
  shown.set(node, { page, note });
  return render(node, page, note);
}

export function paperNote() {
  return el("div", { class: "paper-note" });
}

// Change the gain and / or speed and redraw every page still in the document.
export async function setPaper(settings) {
  Object.assign(PAPER, settings);
  for (const [node, { page, note }] of [...shown]) {
    if (!node.isConnected) { shown.delete(node); continue; }
    await render(node, page, note);
  }
}
