// Hover thumbnails on the cohort map: one lead (II when recorded) of the hovered ECG, drawn on a
// small canvas of ECG paper beside the point. Fetched from /api/thumb only once the pointer rests
// on a point, and kept (the last KEEP, least recently used out first), so going back to a point
// draws at once.

import { get } from "./api.js";

const KEEP = 300;
const REST_MS = 90;
const WINDOW_S = 10;  // the thumbnail's width in seconds (a shorter record leaves the rest blank, labelled)
const MIN_SPAN_MV = 2;
const cache = new Map();  // ecg_id -> Promise of its thumb
let current = null;
let timer = null;

function fetchThumb(id) {
  const kept = cache.get(id);
  if (kept) {  // most recently used last
    cache.delete(id);
    cache.set(id, kept);
    return kept;
  }
  const asked = get("/api/thumb", { id }).catch((error) => { cache.delete(id); throw error; });
  cache.set(id, asked);
  while (cache.size > KEEP) cache.delete(cache.keys().next().value);
  return asked;
}

function paper(ctx, w, h, pxPerS, pxPerMv, zeroY) {
  ctx.fillStyle = "#fffafa";
  ctx.fillRect(0, 0, w, h);
  const line = (x0, y0, x1, y1, colour) => {
    ctx.strokeStyle = colour;
    ctx.beginPath(); ctx.moveTo(x0, y0); ctx.lineTo(x1, y1); ctx.stroke();
  };
  ctx.lineWidth = 1;
  for (let t = 0; t <= WINDOW_S + 1e-9; t += 0.2) {
    const major = Math.abs(t - Math.round(t)) < 1e-6;
    line(t * pxPerS, 0, t * pxPerS, h, major ? "#f0b4b4" : "#fbe3e3");
  }
  for (let mv = -10; mv <= 10; mv += 0.5) {
    const y = zeroY - mv * pxPerMv;
    if (y >= 0 && y <= h) line(0, y, w, y, Number.isInteger(mv) ? "#f0b4b4" : "#fbe3e3");
  }
}

function drawThumb(canvas, thumb) {
  const ctx = canvas.getContext("2d"), w = canvas.width, h = canvas.height;
  const values = thumb.y.filter((v) => v !== null);
  const lo = values.length ? Math.min(...values) : -1, hi = values.length ? Math.max(...values) : 1;
  const span = Math.max(MIN_SPAN_MV, (hi - lo) * 1.15);
  const pxPerMv = h / span, pxPerS = w / WINDOW_S;
  const zeroY = h / 2 + ((hi + lo) / 2) * pxPerMv;  // the trace's middle in the middle
  paper(ctx, w, h, pxPerS, pxPerMv, zeroY);
  // a 1 mV calibration bar at the left edge: the thumbnail's own scale
  ctx.fillStyle = "rgba(176, 58, 46, 0.35)";
  ctx.fillRect(2, zeroY - pxPerMv, 4, pxPerMv);
  ctx.strokeStyle = "#1c1c1c";
  ctx.lineWidth = 2;
  ctx.lineJoin = "round";
  ctx.beginPath();
  const step = (thumb.seconds * pxPerS) / Math.max(1, thumb.y.length - 1);
  let drawing = false, drawn = 0;
  thumb.y.forEach((v, i) => {
    if (v === null) { drawing = false; return; }
    const x = i * step, y = zeroY - v * pxPerMv;
    if (drawing) ctx.lineTo(x, y); else ctx.moveTo(x, y);
    drawing = true;
    drawn += 1;
  });
  ctx.stroke();
  if (thumb.seconds < WINDOW_S - 0.05) {
    ctx.fillStyle = "#888";
    ctx.font = `${Math.round(h / 8)}px system-ui, sans-serif`;
    ctx.fillText(`not recorded after ${thumb.seconds} s`, thumb.seconds * pxPerS + 8, h - 8);
  }
  return drawn;
}

function place(box, wrap, px, py) {
  // beside the point, flipped to stay inside the map
  const width = box.offsetWidth, height = box.offsetHeight, room = wrap.clientWidth;
  let left = px + 14, top = py - height - 10;
  if (left + width > room) left = px - width - 14;
  if (top < 0) top = py + 14;
  box.style.left = `${Math.max(0, left)}px`;
  box.style.top = `${Math.max(0, top)}px`;
}

// Show `id`'s thumbnail beside the page pixel (px, py) of the map (relative to its wrapper).
export function showThumb(id, caption, px, py) {
  const box = document.getElementById("map-thumb");
  const wrap = box.parentElement;
  const text = box.querySelector(".thumb-caption");
  current = id;
  clearTimeout(timer);
  if (!cache.has(id)) {  // at once: the id and its value, the trace when it comes
    const canvas = box.querySelector("canvas");
    canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
    text.textContent = `${id}${caption ? ` · ${caption}` : ""}`;
    box.dataset.points = "0";
    box.hidden = false;
    place(box, wrap, px, py);
  }
  timer = setTimeout(async () => {
    try {
      const thumb = await fetchThumb(id);
      if (current !== id) return;
      box.dataset.ecgId = id;
      box.dataset.lead = thumb.lead;
      box.dataset.points = String(drawThumb(box.querySelector("canvas"), thumb));
      text.textContent = `${id} · lead ${thumb.lead}${caption ? ` · ${caption}` : ""}`;
    } catch (error) {
      if (current !== id) return;
      box.dataset.ecgId = id;
      box.dataset.points = "0";
      const canvas = box.querySelector("canvas");
      canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
      text.textContent = `${id}: no trace (${error.reason || error.message})`;
    }
    box.hidden = false;
    place(box, wrap, px, py);
  }, cache.has(id) ? 0 : REST_MS);
}

export function hideThumb() {
  current = null;
  clearTimeout(timer);
  const box = document.getElementById("map-thumb");
  if (box) box.hidden = true;
}
