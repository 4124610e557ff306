// Every published version: metrics, ok or broken (with the reason), the newest marked,
// its labels when the API reports them, its promotion gate, and the live exact error the
// predictor measures on its answers (against the version's floor), refreshed every 5 s.

import { getJson } from "../api.js";
import { badge, h, jobLink, notice, number, when } from "../format.js";

/** Labels of one version, whichever shape the API gives them in. */
function labelsOf(entry, listing) {
  const found = [];
  const add = (mapping) => {
    if (!mapping || typeof mapping !== "object") return;
    if (Array.isArray(mapping)) {
      found.push(...mapping.map(String));
      return;
    }
    for (const [label, version] of Object.entries(mapping)) {
      if (Number(version) === entry.version) found.push(label);
    }
  };
  add(entry.labels);  // per entry: ["stable"] or {"stable": 3}
  if (listing.labels && typeof listing.labels === "object" && !Array.isArray(listing.labels)) {
    add(listing.labels[entry.model_name]);  // per model: {"square": {"stable": 3}}
  }
  return [...new Set(found)].sort();
}

/** The promotion gate in a cell: verdict and floor ratio, every check in the tooltip. */
function gateCell(gate) {
  if (!gate || typeof gate !== "object") return h("td", { className: "muted" }, "–");
  const measured = gate.measurement || {};
  const ratio = typeof measured.floor_ratio === "number" ? ` ${number(measured.floor_ratio)}× floor` : "";
  if (!Array.isArray(gate.checks)) return h("td", { className: "muted" }, `measured${ratio}`);
  const verdict = gate.passed ? "passed" : gate.forced ? "failed, forced" : "failed";
  const detail = gate.checks.map((c) => `${c.name}: ${c.passed ? "ok" : "FAILED"}${"value" in c ? ` ${number(c.value)} (limit ${number(c.limit)})` : ""}`).join("\n");
  return h("td", { title: detail }, badge(verdict, gate.passed ? "ok" : "broken"), ratio);
}

const LIVE_EVERY_MS = 5000;

/** "0.0012 (3.1× floor)" for one version's live figures. */
function liveText(entry) {
  if (typeof entry.live_mse_in_domain !== "number") return "–";
  const ratio = typeof entry.floor_ratio === "number" ? ` (${number(entry.floor_ratio)}× floor)` : "";
  return `${number(entry.live_mse_in_domain)}${ratio}`;
}

/** Fill each version's live cell and the model's live line from GET .../live. */
async function showLive(name, cells, line) {
  let live;
  try {
    live = await getJson(`/v1/models/${encodeURIComponent(name)}/live`);
  } catch (error) {
    line.textContent = `Live error: ${error.message}`;
    return true;  // keep asking: the predictor may come back
  }
  if (live.predictor === null) {
    line.textContent = "Live error: this trainer asks no predictor (start it with --predictor HOST:PORT).";
    return false;
  }
  const seen = new Map(live.versions.map((entry) => [entry.version, entry]));
  for (const [version, cell] of cells) cell.textContent = seen.has(version) ? liveText(seen.get(version)) : "not loaded";
  const routes = live.routes.map((r) => `${r.label} → v${r.version} ${r.weight}%${r.ejected ? " (ejected)" : ""}`);
  line.textContent = `Live error as the predictor at ${live.predictor} measures it; it serves v${live.serving_version}`
    + (routes.length ? `; traffic ${routes.join(", ")}.` : ".");
  return true;
}

export async function renderModels(main, query) {
  document.title = "Models · squarenet";
  const listing = await getJson("/v1/models");
  const entries = listing.models || [];
  main.append(h("h1", {}, "Models"));
  if (!entries.length) {
    main.append(notice("No version has been published yet: submit a job on the Jobs page."));
    return undefined;
  }
  const byModel = new Map();
  for (const entry of entries) {
    if (!byModel.has(entry.model_name)) byModel.set(entry.model_name, []);
    byModel.get(entry.model_name).push(entry);
  }
  const focusModel = query.get("model");
  const focusVersion = Number(query.get("version"));
  let focusRow = null;
  const lives = [];
  for (const [name, versions] of byModel) {
    const cells = new Map();
    versions.sort((a, b) => b.version - a.version);
    const newest = versions.find((v) => v.status === "ok");
    const tbody = h("tbody");
    for (const entry of versions) {
      const meta = entry.metadata || {};
      const metrics = meta.metrics || {};
      const marks = [badge(entry.status)];
      if (entry === newest) marks.push(" ", badge("newest", "newest"));
      for (const label of labelsOf(entry, listing)) marks.push(" ", badge(label, "label"));
      const row = h("tr", { id: `version-${name}-${entry.version}`, "data-version": entry.version, "data-status": entry.status, tabindex: "-1" },
        h("th", { scope: "row" }, `v${entry.version}`),
        h("td", {}, ...marks, entry.status === "broken" ? h("span", { className: "reason" }, ` ${entry.reason}`) : ""),
        h("td", { className: "muted" }, when(meta.created_at)),
        h("td", {}, meta.job_id ? (/^\d{8}T\d{6}Z-[0-9a-f]{8}$/.test(meta.job_id) ? jobLink(meta.job_id) : meta.job_id) : "–"),
        h("td", { className: "num" }, number(metrics.mse_in_domain)),
        h("td", { className: "num" }, number(metrics.mse_out_of_domain)),
        h("td", { className: "num" }, number(metrics.val_loss)),
        h("td", { className: "mono" }, meta.domain ? `[${meta.domain.map((d) => number(d)).join(", ")}]` : "–"),
        gateCell(entry.gate),
        h("td", { className: "num live", "data-live": entry.version }, "–"));
      cells.set(entry.version, row.lastElementChild);
      if (name === focusModel && entry.version === focusVersion) {
        row.classList.add("best");
        focusRow = row;
      }
      tbody.append(row);
    }
    const line = h("p", { className: "muted live-line", "data-model": name, role: "status" }, "Live error: asking the predictor …");
    lives.push(() => showLive(name, cells, line));
    main.append(h("section", { "aria-labelledby": `model-${name}` },
      h("h2", { id: `model-${name}` }, `${name} `, h("span", { className: "muted" }, `(${versions.length} versions)`)),
      line,
      h("table", {},
        h("thead", {}, h("tr", {}, ...["version", "status", "created", "job", "mse_in_domain", "mse_out_of_domain", "val_loss", "domain", "gate", "live mse_in_domain"].map(
          (title, i) => h("th", { scope: "col", className: (i >= 4 && i <= 6) || i === 9 ? "num" : "" }, title)))),
        tbody)));
  }
  if (focusRow) {
    focusRow.scrollIntoView({ block: "center" });
    focusRow.focus();
  }
  const asking = (await Promise.all(lives.map((show) => show()))).some(Boolean);
  if (!asking) return undefined;
  const timer = setInterval(() => lives.forEach((show) => show()), LIVE_EVERY_MS);
  return () => clearInterval(timer);
}
