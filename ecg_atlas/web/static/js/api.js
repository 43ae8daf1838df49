// Calls to the atlas's JSON API. A token typed in the header travels as a bearer token; the
// server answers failures as {error, code, reason}, thrown here as an ApiError.

export class ApiError extends Error {
  constructor(body, status) {
    super(body.error || `HTTP ${status}`);
    this.code = body.code || String(status);
    this.reason = body.reason || "";
    this.status = status;
  }
  describe() { return `${this.code}${this.reason ? ` (${this.reason})` : ""}: ${this.message}`; }
}

function headers(extra = {}) {
  const token = sessionStorage.getItem("atlas-token");
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

async function answer(response) {
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new ApiError(body, response.status);
  return body;
}

export async function get(path, params = {}) {
  const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== undefined && v !== ""));
  return answer(await fetch(`${path}?${query}`, { headers: headers() }));
}

export async function post(path, body) {
  return answer(await fetch(path, { method: "POST", headers: headers({ "Content-Type": "application/json" }),
                                    body: JSON.stringify(body) }));
}

export async function postForm(path, form) {
  return answer(await fetch(path, { method: "POST", headers: headers(), body: form }));
}

export function showStatus(message, kind = "error") {
  const box = document.getElementById("status");
  box.textContent = message;
  box.className = kind === "error" ? "" : kind;
  box.hidden = !message;
}

export function showError(error) {
  showStatus(error instanceof ApiError ? error.describe() : String(error));
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}
