// The REST client of the dashboard: JSON in and out, problem details, the bearer token,
// and whether the trainer can be reached at all.

const TOKEN_KEY = "squarenet.apiToken";
const RETRY_MS = 2000;

/** A refused or failed call; `problem` is the RFC 9457 body (or a stand-in). */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
  /** Field name -> messages of a 422. */
  fieldErrors() {
    const found = {};
    for (const error of this.problem.errors || []) {
      (found[error.field] ||= []).push(error.message);
    }
    return found;
  }
}

// --- reachability: one banner, one probe loop, listeners re-render when it comes back ----

const listeners = new Set();
let unreachable = false;
let probe = null;

export function onReconnect(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

export function isUnreachable() {
  return unreachable;
}

/** Ask /healthz once (after an event stream broke): shows the banner when it fails. */
export async function checkReachable() {
  try {
    await fetch("/healthz", { cache: "no-store" });
  } catch {
    markUnreachable();
  }
}

function banner() {
  return document.getElementById("connection");
}

function markUnreachable() {
  if (unreachable) return;
  unreachable = true;
  const element = banner();
  element.textContent = "The trainer API cannot be reached. Retrying every 2 seconds…";
  element.hidden = false;
  probe = setInterval(async () => {
    try {
      const answer = await fetch("/healthz", { cache: "no-store" });
      if (answer.ok) markReachable();
    } catch {
      // still down: the banner stays
    }
  }, RETRY_MS);
}

function markReachable() {
  if (!unreachable) return;
  unreachable = false;
  clearInterval(probe);
  probe = null;
  const element = banner();
  element.textContent = "";
  element.hidden = true;
  for (const listener of [...listeners]) listener();
}

// --- the token: asked once per tab, kept in sessionStorage only -------------------------

function askToken(reason) {
  const dialog = document.getElementById("token-dialog");
  const input = document.getElementById("token-input");
  document.getElementById("token-reason").textContent = reason;
  input.value = "";
  return new Promise((resolve) => {
    const form = document.getElementById("token-form");
    const cancel = document.getElementById("token-cancel");
    const finish = (value) => {
      form.removeEventListener("submit", submitted);
      cancel.removeEventListener("click", cancelled);
      dialog.removeEventListener("cancel", cancelled);
      if (dialog.open) dialog.close();
      resolve(value);
    };
    const submitted = (event) => {
      event.preventDefault();
      finish(input.value.trim() || null);
    };
    const cancelled = (event) => {
      event.preventDefault();
      finish(null);
    };
    form.addEventListener("submit", submitted);
    cancel.addEventListener("click", cancelled);
    dialog.addEventListener("cancel", cancelled);
    dialog.showModal();
    input.focus();
  });
}

// --- calls ------------------------------------------------------------------------------

async function send(method, path, body) {
  const headers = { Accept: "application/json, application/problem+json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (method !== "GET" && token) headers.Authorization = `Bearer ${token}`;
  try {
    const answer = await fetch(path, {
      method,
      headers,
      cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    markReachable();
    return answer;
  } catch (error) {
    markUnreachable();
    throw new ApiError(0, { title: "unreachable", detail: "the trainer API cannot be reached" });
  }
}

async function read(answer) {
  const type = answer.headers.get("Content-Type") || "";
  if (type.includes("json")) return answer.json();
  return { detail: `HTTP ${answer.status}` };
}

/** GET path as JSON; throws ApiError on any non-2xx. */
export async function getJson(path) {
  const answer = await send("GET", path);
  const document = await read(answer);
  if (!answer.ok) {
    if (answer.status >= 502 && answer.status <= 504 && !type(answer).includes("problem")) {
      markUnreachable();  // a proxy answering for a trainer that is gone
    }
    throw new ApiError(answer.status, document);
  }
  return document;
}

function type(answer) {
  return answer.headers.get("Content-Type") || "";
}

/**
 * A mutating call. A 401 asks for the token (once: it is kept for the tab) and retries;
 * a refused token says so and asks again; cancelling the prompt leaves the 401 standing.
 */
export async function mutate(method, path, body) {
  let reason = "This trainer needs a bearer token for changes.";
  for (;;) {
    const answer = await send(method, path, body);
    const document = await read(answer);
    if (answer.ok) return { status: answer.status, body: document };
    if (answer.status !== 401) throw new ApiError(answer.status, document);
    if (sessionStorage.getItem(TOKEN_KEY)) {
      sessionStorage.removeItem(TOKEN_KEY);
      reason = `The token was refused (401: ${document.detail || "unauthorized"}). Enter it again.`;
    }
    const token = await askToken(reason);
    if (!token) {
      throw new ApiError(401, {
        ...document,
        detail: `401 Unauthorized: ${document.detail || "a bearer token is needed"}`,
      });
    }
    sessionStorage.setItem(TOKEN_KEY, token);
  }
}
