// One ECG on ECG paper: 25 mm/s, 10 mm/mV, 1 mm minor and 5 mm major grid. The server lays the
// leads out (3 x 4 plus a lead II rhythm strip, each lead clipped to its row); this draws it.

const MM_PER_S = 25;
const MM_PER_MV = 10;
const LEFT_S = -0.4; // room for the calibration pulse

export function drawPaper(node, page) {
  const width = node.clientWidth || 900;
  const right = page.page_s + 0.05;
  const bottom = -page.rows * page.row_mv;
  // the page's physical size in mm, scaled to the width: 1 mm of paper is the same on both axes
  const widthMm = (right - LEFT_S) * MM_PER_S;
  const heightMm = -bottom * MM_PER_MV;
  const height = Math.round(width * heightMm / widthMm);
  const separators = { x: [], y: [] };
  for (let row = 0; row < page.rows - 1; row++) {
    const base = -(row + 0.5) * page.row_mv;
    for (const t of [2.5, 5, 7.5]) separators.x.push(t, t, null), separators.y.push(base - 0.4, base + 0.4, null);
  }
  const clipped = new Set(page.clipped);
  const annotations = page.labels.map((l) => ({
    x: l.x, y: l.y, text: clipped.has(l.lead) ? `<b>${l.lead}</b> ✂` : `<b>${l.lead}</b>`, showarrow: false,
    xanchor: "left", yanchor: "middle", font: { size: 12, color: clipped.has(l.lead) ? "#b03a2e" : "#000" },
  }));
  const axis = (range, major, minor) => ({
    range, dtick: major, tick0: 0, showgrid: true, gridcolor: "#eda39b", gridwidth: 1,
    minor: { dtick: minor, tick0: 0, showgrid: true, gridcolor: "#fad6d1", gridwidth: 0.5 },
    showticklabels: false, ticks: "", zeroline: false, showline: false, fixedrange: true,
  });
  const layout = {
    width, height, margin: { l: 0, r: 0, t: 0, b: 0 }, showlegend: false,
    paper_bgcolor: "#fff6f4", plot_bgcolor: "#fff6f4",
    xaxis: axis([LEFT_S, right], 0.2, 0.04),
    yaxis: { ...axis([bottom, 0], 0.5, 0.1), scaleanchor: "x", scaleratio: MM_PER_MV / MM_PER_S },
    annotations,
  };
  const traces = [
    { x: page.x, y: page.y, type: "scatter", mode: "lines", line: { color: "#111", width: 1.1 },
      hoverinfo: "skip", connectgaps: false },
    { x: separators.x, y: separators.y, type: "scatter", mode: "lines", line: { color: "#111", width: 1 },
      hoverinfo: "skip" },
  ];
  return Plotly.react(node, traces, layout, { staticPlot: true, displayModeBar: false });
}

export function paperNote(page) {
  const span = document.createElement("div");
  span.className = "paper-note";
  span.append(`25 mm/s · 10 mm/mV · ${page.duration_s} s recorded`);
  if (page.missing.length) span.append(` · not recorded: ${page.missing.join(", ")}`);
  if (page.clipped.length) {
    const c = document.createElement("span");
    c.className = "clipped";
    c.textContent = ` · clipped to its row (✂): ${page.clipped.join(", ")}`;
    span.append(c);
  }
  return span;
}
