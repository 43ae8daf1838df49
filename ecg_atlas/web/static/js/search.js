// Search view: a stored ECG (type-ahead over ids) or a dropped file, drawn on ECG paper, and its
// k nearest neighbours, each with its score, key metadata and its own trace. The query and the
// filters live in the URL, so a search can be shared.

import { el, get, postForm, showError, showStatus } from "./api.js";
import { drawPaper, PAPER, paperNote, setPaper } from "./paper.js";

const KEY = ["dataset", "age", "sex", "labels_abbr", "label_groups", "dx"];

function describe(metadata) {
  const parts = [];
  for (const key of KEY) {
    const v = metadata[key];
    if (v === undefined || v === null || (Array.isArray(v) && !v.length)) continue;
    parts.push(el("span", {}, el("b", {}, `${key} `), Array.isArray(v) ? v.join(", ") : String(v), "  "));
  }
  return el("div", { class: "meta" }, ...parts);
}

function ecgCard(title, metadata) {
  const plot = el("div", { class: "paper" });
  const note = paperNote();
  const card = el("div", { class: "card" }, el("h3", {}, ...title), describe(metadata), plot, note);
  return { card, plot, note };
}

async function drawStored(plot, note, ecgId) {
  try {
    const page = await get("/api/paper", { id: ecgId });
    await drawPaper(plot, page, note);
    plot.dataset.drawn = "1";
  } catch (error) {
    plot.replaceChildren(el("em", {}, `trace not available: ${error.message}`));
  }
}

function idLink(ecgId, navigate) {
  const link = el("a", { href: `?view=search&id=${encodeURIComponent(ecgId)}`, textContent: ecgId });
  link.addEventListener("click", (event) => { event.preventDefault(); navigate({ view: "search", id: ecgId, ...paperParams() }); });
  return link;
}

function showHits(result, navigate) {
  const box = document.getElementById("neighbours");
  document.getElementById("neighbours-title").hidden = false;
  box.replaceChildren();
  box.dataset.count = String(result.hits.length);
  const pending = [];
  result.hits.forEach((hit, rank) => {
    const { card, plot, note } = ecgCard(
      [`${rank + 1}. `, idLink(hit.ecg_id, navigate), " ", el("span", { class: "score" }, `score ${hit.score.toFixed(4)}`)],
      hit.metadata);
    card.classList.add("neighbour");
    card.dataset.ecgId = hit.ecg_id;
    box.append(card);
    pending.push(() => drawStored(plot, note, hit.ecg_id));
  });
  box.dataset.rendered = String(performance.now());
  return pending;
}

export async function searchStored(params, navigate) {
  const query = document.getElementById("query");
  query.replaceChildren();
  document.getElementById("neighbours").replaceChildren();
  if (!params.id) return;
  showStatus("");
  try {
    const [result, stored] = await Promise.all([
      get("/api/search", { id: params.id, k: params.k, where: params.where, exclude_same_patient: params.xsp }),
      get("/api/ecg", { id: params.id }),
    ]);
    const { card, plot, note } = ecgCard([el("span", {}, "Query "), el("strong", { textContent: params.id })],
                                         stored.metadata);
    card.id = "query-card";
    query.append(card);
    const pending = showHits(result, navigate);
    await drawStored(plot, note, params.id);
    // neighbours' traces after the query's, two at a time, so the page stays responsive
    for (let i = 0; i < pending.length; i += 2) await Promise.all(pending.slice(i, i + 2).map((f) => f()));
  } catch (error) {
    showError(error);
  }
}

async function searchFiles(files, navigate) {
  const form = new FormData();
  for (const file of files) form.append("files", file, file.name);
  form.append("k", document.getElementById("search-k").value || "5");
  form.append("where", document.getElementById("search-where").value);
  showStatus(`reading ${[...files].map((f) => f.name).join(", ")} …`, "info");
  try {
    const result = await postForm("/api/search-file", form);
    showStatus("");
    const query = document.getElementById("query");
    const { card, plot, note } = ecgCard([el("span", {}, "Dropped file "), el("strong", { textContent: result.query.name })],
                                         result.query.metadata);
    card.id = "query-card";
    query.replaceChildren(card);
    await drawPaper(plot, result.query.paper, note);
    plot.dataset.drawn = "1";
    const pending = showHits(result, navigate);
    for (let i = 0; i < pending.length; i += 2) await Promise.all(pending.slice(i, i + 2).map((f) => f()));
  } catch (error) {
    showError(error);
  }
}

let suggestTimer = null;
function suggest(prefix) {
  clearTimeout(suggestTimer);
  suggestTimer = setTimeout(async () => {
    try {
      const { ecg_ids } = await get("/api/suggest", { prefix, limit: 12 });
      const list = document.getElementById("id-suggestions");
      list.replaceChildren(...ecg_ids.map((id) => el("option", { value: id })));
      list.dataset.prefix = prefix;
    } catch (error) { showError(error); }
  }, 120);
}

export function setUpSearch(navigate) {
  const form = document.getElementById("search-form");
  const idInput = document.getElementById("search-id");
  idInput.addEventListener("input", () => suggest(idInput.value));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    navigate({ view: "search", id: idInput.value.trim(), k: document.getElementById("search-k").value,
               where: document.getElementById("search-where").value.trim(),
               xsp: document.getElementById("search-xsp").checked ? "1" : "", ...paperParams() });
  });
  const zone = document.getElementById("drop-zone");
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    if (event.dataTransfer.files.length) searchFiles(event.dataTransfer.files, navigate);
  });
  const input = document.getElementById("file-input");
  input.addEventListener("change", () => { if (input.files.length) searchFiles(input.files, navigate); input.value = ""; });
  // gain and speed redraw the pages in place; the URL keeps them, so a shared link shows the same
  for (const radio of document.querySelectorAll("#paper-controls input[type=radio]")) {
    radio.addEventListener("change", () => {
      const setting = radio.name === "paper-gain" ? "gain" : "speed";
      const url = new URL(window.location.href);
      url.searchParams.set(setting, radio.value);
      history.replaceState(null, "", url);
      setPaper({ [setting]: radio.value });
    });
  }
}

function checkPaperControls() {
  for (const [setting, name] of [["gain", "paper-gain"], ["speed", "paper-speed"]]) {
    for (const radio of document.querySelectorAll(`input[name=${name}]`)) radio.checked = radio.value === PAPER[setting];
  }
}

export function fillSearchForm(params) {
  document.getElementById("search-id").value = params.id || "";
  document.getElementById("search-k").value = params.k || "5";
  document.getElementById("search-where").value = params.where || "";
  document.getElementById("search-xsp").checked = params.xsp === "1";
  // a link without them keeps the gain and speed in use
  if (["5", "10", "20"].includes(params.gain)) PAPER.gain = params.gain;
  if (["25", "50"].includes(params.speed)) PAPER.speed = params.speed;
  checkPaperControls();
}

// the gain and speed in use, for a URL (left out at the standard 10 mm/mV and 25 mm/s)
function paperParams() {
  return { gain: PAPER.gain === "10" ? "" : PAPER.gain, speed: PAPER.speed === "25" ? "" : PAPER.speed };
}
