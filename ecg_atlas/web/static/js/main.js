// The atlas's page: three views, the state of each in the URL (shareable), the token field.

import { get, showError } from "./api.js";
import { showMap } from "./map.js";
import { showProbes } from "./probes.js";
import { fillSearchForm, searchStored, setUpSearch } from "./search.js";

const VIEWS = ["search", "map", "probes"];

function params() {
  return Object.fromEntries(new URLSearchParams(window.location.search));
}

function show(p) {
  const view = VIEWS.includes(p.view) ? p.view : "search";
  for (const v of VIEWS) document.getElementById(`view-${v}`).hidden = v !== view;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.view === view);
  document.body.dataset.view = view;
  if (view === "search") { fillSearchForm(p); return searchStored(p, navigate); }
  if (view === "map") return showMap(p, navigate);
  return showProbes();
}

export function navigate(p) {
  const clean = Object.fromEntries(Object.entries(p).filter(([, v]) => v !== undefined && v !== ""));
  history.pushState(null, "", `?${new URLSearchParams(clean)}`);
  return show(clean);
}

window.addEventListener("popstate", () => show(params()));

document.addEventListener("DOMContentLoaded", async () => {
  const token = document.getElementById("token");
  token.value = sessionStorage.getItem("atlas-token") || "";
  token.addEventListener("change", () => {
    if (token.value) sessionStorage.setItem("atlas-token", token.value);
    else sessionStorage.removeItem("atlas-token");
  });
  for (const a of document.querySelectorAll("nav a")) {
    a.addEventListener("click", (event) => { event.preventDefault(); navigate({ view: a.dataset.view }); });
  }
  setUpSearch(navigate);
  get("/api/info").then((info) => {
    document.getElementById("store-info").textContent = `${info.ecg_count.toLocaleString()} ECGs · ${info.model_id}`;
    document.getElementById("store-info").title = info.encoder_notice || "";  // provenance and measured quality
  }).catch(showError);
  await show(params());
});
