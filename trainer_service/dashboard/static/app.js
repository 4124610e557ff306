// The dashboard's router: each view is a hash route (#/jobs, #/jobs/<id>, #/models,
// #/sweeps, #/sweeps/<id>), so every view has a URL that survives a reload.

import { ApiError, onReconnect } from "./api.js";
import { hasSweeps } from "./schema.js";
import { notice } from "./format.js";
import { renderJob } from "./views/job.js";
import { renderJobs } from "./views/jobs.js";
import { renderModels } from "./views/models.js";
import { renderSweep, renderSweeps } from "./views/sweeps.js";

const ROUTES = [
  { pattern: /^\/jobs\/([^/]+)$/, nav: "jobs", render: (main, [id], query) => renderJob(main, id, query) },
  { pattern: /^\/jobs$/, nav: "jobs", render: (main, _m, query) => renderJobs(main, query) },
  { pattern: /^\/models$/, nav: "models", render: (main, _m, query) => renderModels(main, query) },
  { pattern: /^\/sweeps\/([^/]+)$/, nav: "sweeps", render: (main, [id], query) => renderSweep(main, id, query) },
  { pattern: /^\/sweeps$/, nav: "sweeps", render: (main, _m, query) => renderSweeps(main, query) },
];

let cleanup = () => {};
let generation = 0;

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/jobs";
  const [path, search = ""] = raw.split("?");
  return { path, query: new URLSearchParams(search) };
}

async function route() {
  const { path, query } = parseHash();
  const found = ROUTES.map((r) => ({ r, m: path.match(r.pattern) })).find(({ m }) => m);
  cleanup();
  cleanup = () => {};
  generation += 1;
  const mine = generation;
  const main = document.getElementById("main");
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (found && link.dataset.nav === found.r.nav) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  main.replaceChildren();
  if (!found) {
    document.title = "Not found · squarenet";
    main.append(notice(`No view at ${path}.`, "error"));
    return;
  }
  try {
    const args = found.m.slice(1).map(decodeURIComponent);
    const done = await found.r.render(main, args, query);
    if (mine !== generation) {
      if (typeof done === "function") done();  // the user moved on meanwhile
      return;
    }
    if (typeof done === "function") cleanup = done;
  } catch (error) {
    if (mine !== generation) return;
    main.replaceChildren(notice(describe(error), "error"));
  }
}

export function describe(error) {
  if (error instanceof ApiError) {
    if (error.status === 0) return "The trainer API cannot be reached.";
    return `${error.status}: ${error.message}`;
  }
  return String(error);
}

/** The Sweeps entry shows only when this trainer's API document has sweeps. */
async function detectSweeps() {
  try {
    document.getElementById("nav-sweeps").hidden = !(await hasSweeps());
  } catch {
    document.getElementById("nav-sweeps").hidden = true;
  }
}

window.addEventListener("hashchange", route);
onReconnect(() => {
  detectSweeps();
  route();
});
detectSweeps();
route();
