// Sweeps (Katib-style experiments): the list, and one sweep's trials sortable by the
// objective, the objective against each varied parameter, and the trials' fits overlaid.

import { getJson } from "../api.js";
import { loadChartJs, objectiveChart, overlayChart, parallelChart } from "../charts.js";
import { badge, h, jobLink, notice, number, when } from "../format.js";
import { hasSweeps } from "../schema.js";

const MAX_OVERLAID = 24;

// --- the API's shapes, read leniently (Katib's names first, snake_case as a fallback) ----

function pairs(value) {
  if (Array.isArray(value)) return value.map((p) => [p.name, p.value]);
  if (value && typeof value === "object") return Object.entries(value);
  return [];
}

export function trialView(trial) {
  const metrics = Object.fromEntries(pairs(trial.observation?.metrics ?? trial.metrics).map(([n, v]) => [n, Number(v)]));
  return {
    jobId: trial.jobId ?? trial.job_id ?? trial.id,
    number: trial.number,
    state: trial.state ?? trial.condition ?? "",
    reason: trial.reason ?? trial.error ?? "",
    assignments: Object.fromEntries(pairs(trial.parameterAssignments ?? trial.assignments)),
    metrics,
  };
}

function objectiveOf(sweep) {
  const spec = sweep.spec ?? sweep;
  const objective = spec.objective ?? {};
  return {
    name: objective.objectiveMetricName ?? "mse_in_domain",
    minimize: (objective.type ?? "minimize") !== "maximize",
    extra: objective.additionalMetricNames ?? [],
  };
}

function parameterNames(sweep, trials) {
  const spec = sweep.spec ?? sweep;
  const named = (spec.parameters ?? []).map((p) => p.name);
  if (named.length) return named;
  return [...new Set(trials.flatMap((t) => Object.keys(t.assignments)))];
}

async function unavailable(main) {
  if (!(await hasSweeps())) {
    main.append(h("h1", {}, "Sweeps"), notice("This trainer has no sweeps API."));
    return true;
  }
  return false;
}

export async function renderSweeps(main) {
  document.title = "Sweeps · squarenet";
  if (await unavailable(main)) return undefined;
  const listing = await getJson("/v1/sweeps");
  const sweeps = listing.sweeps ?? listing.items ?? [];
  main.append(h("h1", {}, "Sweeps"));
  if (!sweeps.length) {
    main.append(notice("No sweep yet: POST /v1/sweeps or `squarenet sweep --vary …`."));
    return undefined;
  }
  const tbody = h("tbody");
  for (const sweep of sweeps) {
    const counts = sweep.status ?? sweep;
    const best = counts.currentOptimalTrial;
    const objective = objectiveOf(sweep);
    const bestValue = best ? trialView(best).metrics[objective.name] : undefined;
    tbody.append(h("tr", { "data-sweep-id": sweep.id },
      h("td", {}, h("a", { href: `#/sweeps/${encodeURIComponent(sweep.id)}`, className: "mono" }, sweep.id)),
      h("td", {}, badge(sweep.state ?? counts.state ?? "")),
      h("td", { className: "muted" }, when(sweep.created_at ?? sweep.createdAt)),
      h("td", { className: "num" }, `${counts.trialsSucceeded ?? 0}/${counts.trials ?? 0}`),
      h("td", {}, objective.name),
      h("td", { className: "num" }, number(bestValue))));
  }
  main.append(h("table", { id: "sweeps-table" },
    h("thead", {}, h("tr", {}, ...["sweep", "state", "created", "succeeded/trials", "objective", "best"].map(
      (t, i) => h("th", { scope: "col", className: i === 3 || i === 5 ? "num" : "" }, t)))),
    tbody));
  return undefined;
}

export async function renderSweep(main, id, query) {
  document.title = `Sweep ${id} · squarenet`;
  if (await unavailable(main)) return undefined;
  const path = `/v1/sweeps/${encodeURIComponent(id)}`;
  const [sweep, trialList] = await Promise.all([getJson(path), getJson(`${path}/trials`), loadChartJs()]);
  const trials = (trialList.trials ?? trialList.items ?? []).map(trialView);
  const objective = objectiveOf(sweep);
  const parameters = parameterNames(sweep, trials);
  const charts = [];
  let ascending = query.get("order") !== "desc";

  const tbody = h("tbody");
  const sortButton = h("button", { type: "button", id: "sort-objective" }, objective.name);
  const objectiveHeader = h("th", { scope: "col", className: "num", "aria-sort": ascending ? "ascending" : "descending" }, sortButton);
  const metricNames = [objective.name, ...objective.extra.filter((m) => m !== objective.name)];

  function fill() {
    const value = (t) => t.metrics[objective.name];
    const sorted = [...trials].sort((a, b) => {
      const [x, y] = [value(a), value(b)];
      if (x === undefined || Number.isNaN(x)) return 1;
      if (y === undefined || Number.isNaN(y)) return -1;
      return ascending ? x - y : y - x;
    });
    const scored = trials.filter((t) => Number.isFinite(value(t)));
    const bestTrial = scored.length
      ? scored.reduce((a, b) => ((objective.minimize ? value(b) < value(a) : value(b) > value(a)) ? b : a))
      : null;
    tbody.replaceChildren(...sorted.map((t) => h("tr", { className: t === bestTrial ? "best" : "", "data-job-id": t.jobId },
      h("td", {}, jobLink(t.jobId), t === bestTrial ? h("span", {}, " ", badge("best", "newest")) : ""),
      h("td", { title: t.reason }, badge(t.state)),
      ...parameters.map((p) => h("td", { className: "num" }, String(t.assignments[p] ?? "–"))),
      ...metricNames.map((m) => h("td", { className: "num" }, number(t.metrics[m]))))));
    objectiveHeader.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    sortButton.textContent = `${objective.name} ${ascending ? "▲" : "▼"}`;
  }
  sortButton.addEventListener("click", () => {
    ascending = !ascending;
    fill();
  });

  const counts = sweep.status ?? sweep;
  main.append(
    h("p", {}, h("a", { href: "#/sweeps" }, "← all sweeps")),
    h("h1", {}, "Sweep ", h("span", { className: "mono" }, sweep.id ?? id), " ", badge(sweep.state ?? counts.state ?? "")),
    h("p", { className: "muted" }, `${counts.trialsSucceeded ?? 0} of ${counts.trials ?? trials.length} trials succeeded, `,
      `${counts.trialsRunning ?? 0} running, ${counts.trialsFailed ?? 0} failed, `,
      `${counts.trialsEarlyStopped ?? 0} early-stopped, ${counts.trialsSkipped ?? 0} skipped; `,
      `objective: ${objective.minimize ? "minimize" : "maximize"} ${objective.name}`),
    h("h2", {}, "Trials"),
    h("table", { id: "trials-table" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "trial (job)"), h("th", { scope: "col" }, "state"),
        ...parameters.map((p) => h("th", { scope: "col", className: "num" }, p)),
        objectiveHeader,
        ...metricNames.slice(1).map((m) => h("th", { scope: "col", className: "num" }, m)))),
      tbody));
  fill();

  // the objective against each varied parameter, one line per value of another parameter
  const plots = h("div", { className: "grid2" });
  main.append(h("h2", {}, `${objective.name} against each varied parameter`), plots);
  for (const parameter of parameters) {
    const other = parameters.find((p) => p !== parameter);
    const groups = new Map();
    for (const t of trials) {
      const x = Number(t.assignments[parameter]);
      const y = t.metrics[objective.name];
      if (!Number.isFinite(x) || !Number.isFinite(y)) continue;
      const key = other ? `${other} = ${t.assignments[other]}` : objective.name;
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push({ x, y });
    }
    const canvas = h("canvas", { role: "img", "aria-label": `${objective.name} against ${parameter}` });
    plots.append(h("section", {}, h("h3", {}, parameter), h("div", { className: "chart" }, canvas)));
    charts.push(objectiveChart(canvas, {
      parameter,
      objective: objective.name,
      series: [...groups].map(([label, points]) => ({ label, points })),
    }));
  }

  // parallel coordinates: parameters → objective, one line per scored trial (green: best)
  const scoredTrials = trials.filter((t) => Number.isFinite(t.metrics[objective.name]));
  if (scoredTrials.length) {
    const axes = [...parameters, objective.name];
    const scale = (name) => {
      const values = scoredTrials.map((t) => (name === objective.name ? t.metrics[name] : t.assignments[name]));
      const numeric = values.every((v) => Number.isFinite(Number(v)));
      if (!numeric) {
        const kinds = [...new Set(values.map(String))].sort();
        return (v) => (kinds.length > 1 ? kinds.indexOf(String(v)) / (kinds.length - 1) : 0.5);
      }
      const numbers = values.map(Number);
      const [low, high] = [Math.min(...numbers), Math.max(...numbers)];
      const log = low > 0 && high / low > 100;
      const f = (v) => (log ? Math.log(v) : v);
      return (v) => (high > low ? (f(Number(v)) - f(low)) / (f(high) - f(low)) : 0.5);
    };
    const scales = Object.fromEntries(axes.map((name) => [name, scale(name)]));
    const ranked = [...scoredTrials].sort((a, b) => (objective.minimize ? 1 : -1) * (a.metrics[objective.name] - b.metrics[objective.name]));
    const lines = ranked.map((t, rank) => {
      const share = ranked.length > 1 ? rank / (ranked.length - 1) : 0;
      const value = (name) => (name === objective.name ? t.metrics[name] : t.assignments[name]);
      return {
        label: `trial ${t.number ?? t.jobId}`,
        color: `hsl(${Math.round(130 * (1 - share))}, 70%, 32%)`,
        points: axes.map((name, x) => ({ x, y: scales[name](value(name)), text: `${name}=${typeof value(name) === "number" ? number(value(name)) : value(name)}` })),
      };
    });
    const canvas = h("canvas", { id: "parallel-chart", role: "img", "aria-label": `parallel coordinates: parameters to ${objective.name}` });
    main.append(h("h2", {}, `Parameters → ${objective.name}, one line per trial`), h("div", { className: "chart" }, canvas));
    charts.push(parallelChart(canvas, { axes, lines }));
  }

  // every succeeded trial's fit over twice its domain, with x²
  const done = trials.filter((t) => t.state === "SUCCEEDED").slice(0, MAX_OVERLAID);
  const overlayBox = h("div", { className: "chart" });
  main.append(h("h2", {}, "The trials' fits over twice their domain"), overlayBox);
  if (done.length) {
    const curves = await Promise.all(done.map(async (t) => {
      try {
        const curve = await getJson(`/v1/jobs/${encodeURIComponent(t.jobId)}/fit`);
        return { label: parameters.map((p) => `${p}=${t.assignments[p]}`).join(" "), curve };
      } catch {
        return null;
      }
    }));
    const canvas = h("canvas", { id: "overlay-chart", role: "img", "aria-label": "the trials' predictions and x²" });
    overlayBox.append(canvas);
    charts.push(overlayChart(canvas, curves.filter(Boolean)));
  } else {
    overlayBox.replaceWith(notice("No trial has succeeded yet."));
  }
  return () => charts.forEach((c) => c.destroy());
}
