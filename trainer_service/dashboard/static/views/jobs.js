// The jobs view: newest first, state filter, submit form, and a live progress bar per
// running job fed by its event stream (the list itself is fetched on load, when a followed
// job ends, and every LIST_REFRESH_MS for jobs submitted elsewhere; never per epoch).

import { ApiError, checkReachable, getJson, mutate } from "../api.js";
import { badge, duration, h, jobLink, notice, number, versionLink, when } from "../format.js";
import { trainingFields } from "../schema.js";

const STATES = ["QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"];
const MAX_STREAMS = 4;  // browsers allow 6 connections per origin over HTTP/1.1
const LIST_REFRESH_MS = 10000;
const PAGE_SIZE = 100;  // a page of 1,000 table rows takes the browser most of a second to lay out

function jobsHash(state, page) {
  const query = new URLSearchParams();
  if (state) query.set("state", state);
  if (page > 1) query.set("page", String(page));
  const text = query.toString();
  return text ? `#/jobs?${text}` : "#/jobs";
}

export async function renderJobs(main, query) {
  document.title = "Jobs · squarenet";
  const stateFilter = STATES.includes(query.get("state")) ? query.get("state") : "";
  const listPath = stateFilter ? `/v1/jobs?state=${stateFilter}` : "/v1/jobs";
  const page = Math.max(1, Number.parseInt(query.get("page") || "1", 10) || 1);
  const [fields, first] = await Promise.all([trainingFields(), getJson(listPath)]);

  const rows = new Map();  // job id -> {tr, job, cells}
  const streams = new Map();  // job id -> EventSource
  const timers = [];
  const status = h("p", { id: "jobs-status", className: "muted", role: "status" });
  const pager = h("nav", { className: "toolbar", "aria-label": "pages of jobs", id: "jobs-pager" });
  const tbody = h("tbody");
  let refreshing = null;

  function progressCells(job) {
    const bar = h("progress", {
      max: Math.max(job.progress.epochs, 1),
      value: job.progress.epoch,
      "aria-label": `progress of job ${job.id}`,
    });
    const text = h("span", { className: "progress-text" }, `${job.progress.epoch}/${job.progress.epochs}`);
    return { bar, text };
  }

  function cancelButton(job) {
    if (["SUCCEEDED", "FAILED", "CANCELLED"].includes(job.state)) return "";
    return h("button", {
      type: "button",
      className: "danger",
      "aria-label": `cancel job ${job.id}`,
      onclick: (event) => cancel(job.id, event.currentTarget),
    }, "Cancel");
  }

  function buildRow(job) {
    const { bar, text } = progressCells(job);
    const cells = {
      state: h("td", {}, badge(job.state)),
      progress: h("td", {}, bar, text),
      loss: h("td", { className: "num" }, number(job.metrics?.loss)),
      duration: h("td", { className: "num" }, duration(job.started_at, job.finished_at)),
      inDomain: h("td", { className: "num" }, number(job.metrics?.mse_in_domain)),
      outDomain: h("td", { className: "num" }, number(job.metrics?.mse_out_of_domain)),
      version: h("td", {}, job.model_version ? versionLink(job.params.model_name, job.model_version) : "–"),
      action: h("td", {}, cancelButton(job)),
    };
    const tr = h("tr", { "data-job-id": job.id, "data-state": job.state },
      h("td", {}, jobLink(job.id)), h("td", { className: "muted" }, when(job.created_at)),
      cells.state, cells.progress, cells.loss, cells.duration, cells.inDomain, cells.outDomain,
      cells.version, cells.action);
    return { tr, job, cells, bar, text };
  }

  function updateRow(job) {
    const row = rows.get(job.id);
    if (!row) return;
    const fresh = buildRow(job);
    row.tr.replaceWith(fresh.tr);
    rows.set(job.id, fresh);
  }

  function onEpoch(id, event) {
    const row = rows.get(id);
    if (!row) return;
    const data = JSON.parse(event.data);
    if (row.job.state === "QUEUED") {
      row.job = { ...row.job, state: "RUNNING", started_at: row.job.started_at || new Date().toISOString() };
      row.cells.state.replaceChildren(badge("RUNNING"));
      row.tr.dataset.state = "RUNNING";
    }
    row.bar.max = Math.max(data.epochs, 1);
    row.bar.value = data.epoch;
    row.text.textContent = `${data.epoch}/${data.epochs}`;
    row.cells.loss.textContent = number(data.loss);
  }

  function follow(job) {
    if (streams.has(job.id) || streams.size >= MAX_STREAMS) return;
    const source = new EventSource(`/v1/jobs/${encodeURIComponent(job.id)}/events`);
    streams.set(job.id, source);
    source.addEventListener("epoch", (event) => onEpoch(job.id, event));
    source.addEventListener("state", (event) => {
      source.close();
      streams.delete(job.id);
      updateRow(JSON.parse(event.data));
      refreshSoon();  // the next queued job may start now
    });
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) streams.delete(job.id);
      checkReachable();
    });
  }

  function followActive() {
    const active = [...rows.values()].map((r) => r.job).filter((j) => j.state === "RUNNING" || j.state === "QUEUED");
    active.sort((a, b) => (a.state === b.state ? a.created_at.localeCompare(b.created_at) : a.state === "RUNNING" ? -1 : 1));
    for (const job of active) follow(job);
  }

  function showPager(total) {
    const pages = Math.max(1, Math.ceil(total / PAGE_SIZE));
    const first = total ? (page - 1) * PAGE_SIZE + 1 : 0;
    const last = Math.min(total, page * PAGE_SIZE);
    pager.replaceChildren(
      page > 1 ? h("a", { href: jobsHash(stateFilter, page - 1) }, "← newer") : "",
      h("span", { className: "muted" }, `jobs ${first}–${last} of ${total} (page ${page} of ${pages})`),
      page < pages ? h("a", { href: jobsHash(stateFilter, page + 1) }, "older →") : "",
    );
  }

  function showList(all) {
    showPager(all.length);
    const jobs = all.slice((page - 1) * PAGE_SIZE, page * PAGE_SIZE);
    const wanted = new Set(jobs.map((j) => j.id));
    for (const [id, row] of rows) {
      if (!wanted.has(id)) {
        row.tr.remove();
        rows.delete(id);
        streams.get(id)?.close();
        streams.delete(id);
      }
    }
    const fragment = document.createDocumentFragment();
    for (const job of jobs) {
      const existing = rows.get(job.id);
      if (existing && existing.job.state === job.state && streams.has(job.id)) {
        fragment.append(existing.tr);  // the stream keeps it current
        continue;
      }
      const row = buildRow(job);
      if (existing) existing.tr.remove();
      rows.set(job.id, row);
      fragment.append(row.tr);
    }
    tbody.replaceChildren(fragment);
    status.textContent = `${all.length} job${all.length === 1 ? "" : "s"}${stateFilter ? ` in state ${stateFilter}` : ""}.`;
    followActive();
  }

  async function refresh() {
    try {
      showList((await getJson(listPath)).jobs);
    } catch {
      // the banner says when the API is gone; the next tick tries again
    }
  }

  function refreshSoon() {
    if (refreshing) return;
    refreshing = setTimeout(() => {
      refreshing = null;
      refresh();
    }, 300);
  }

  async function cancel(id, button) {
    button.disabled = true;
    try {
      const answer = await mutate("POST", `/v1/jobs/${encodeURIComponent(id)}/cancel`);
      updateRow(answer.body);
      status.textContent = answer.status === 202
        ? `Cancel of job ${id} requested; it ends once its runner has stopped it.`
        : `Job ${id} cancelled.`;
      if (answer.status === 200) {
        streams.get(id)?.close();
        streams.delete(id);
      }
    } catch (error) {
      button.disabled = false;
      status.textContent = `Cancel of job ${id} refused: ${error.message}`;
      if (error instanceof ApiError && error.status === 409) refreshSoon();
    }
  }

  function submitted(job) {
    if ((stateFilter && stateFilter !== job.state) || page > 1) return;
    const row = buildRow(job);
    rows.set(job.id, row);
    tbody.prepend(row.tr);
    follow(job);
  }

  const filter = h("select", {
    id: "state-filter",
    onchange: (event) => {
      const value = event.currentTarget.value;
      location.hash = jobsHash(value, 1);
    },
  }, h("option", { value: "" }, "all states"), ...STATES.map((s) => h("option", { value: s, selected: s === stateFilter }, s)));

  const table = h("table", { id: "jobs-table" },
    h("caption", { className: "muted", style: null }, "Training jobs, newest first"),
    h("thead", {}, h("tr", {},
      ...["job", "created", "state", "progress", "loss", "duration", "mse_in_domain", "mse_out_of_domain", "version", ""].map(
        (title, i) => h("th", { scope: "col", className: i >= 4 && i <= 7 ? "num" : "" }, title || h("span", { className: "skip" }, "actions"))))),
    tbody);

  main.append(
    h("h1", {}, "Jobs"),
    submitForm(fields, submitted),
    h("div", { className: "toolbar" }, h("label", { for: "state-filter" }, "Show"), filter, status),
    table,
    pager,
  );
  showList(first.jobs);

  timers.push(setInterval(refresh, LIST_REFRESH_MS));
  timers.push(setInterval(() => {
    for (const row of rows.values()) {
      if (row.job.state === "RUNNING") row.cells.duration.textContent = duration(row.job.started_at, null);
    }
  }, 1000));

  return () => {
    for (const timer of timers) clearInterval(timer);
    clearTimeout(refreshing);
    for (const source of streams.values()) source.close();
    streams.clear();
  };
}

/** The submit form, built from the API's own schema (names, article defaults, bounds). */
function submitForm(fields, onSubmitted) {
  const inputs = new Map();
  const errors = new Map();
  const formError = h("div", { id: "submit-error", "aria-live": "polite" });
  const grid = h("div", { className: "fields" });
  for (const field of fields) {
    const id = `field-${field.name}`;
    const errorId = `error-${field.name}`;
    const hintId = `hint-${field.name}`;
    let input;
    if (field.choices) {
      input = h("select", { id, name: field.name, "aria-describedby": `${hintId} ${errorId}` },
        ...field.choices.map((c) => h("option", { value: c, selected: c === field.default }, c)));
    } else {
      const numeric = field.type === "integer" || field.type === "number";
      input = h("input", {
        id,
        name: field.name,
        type: "text",
        inputmode: numeric ? (field.type === "integer" ? "numeric" : "decimal") : null,
        value: field.default ?? "",
        placeholder: field.default === null ? "none" : null,
        autocomplete: "off",
        "aria-describedby": `${hintId} ${errorId}`,
      });
    }
    const bounds = field.minimum !== undefined || field.maximum !== undefined
      ? ` (${field.minimum ?? "…"} – ${field.maximum ?? "…"})` : "";
    const error = h("p", { id: errorId, className: "field-error", "data-field": field.name });
    inputs.set(field.name, { input, field });
    errors.set(field.name, error);
    grid.append(h("div", { className: "field" },
      h("label", { for: id }, field.name),
      input,
      h("span", { id: hintId, className: "hint" }, field.description + bounds),
      error));
  }

  function body() {
    const document_ = {};
    for (const [name, { input, field }] of inputs) {
      const text = input.value.trim();
      if (text === "") continue;
      if (field.type === "integer" && /^-?\d+$/.test(text)) document_[name] = Number.parseInt(text, 10);
      else if (field.type === "number" && text !== "" && Number.isFinite(Number(text))) document_[name] = Number(text);
      else document_[name] = text;  // as typed: the API names what is wrong with it
    }
    return document_;
  }

  function clearErrors() {
    formError.replaceChildren();
    for (const [name, error] of errors) {
      error.textContent = "";
      inputs.get(name).input.removeAttribute("aria-invalid");
    }
  }

  const button = h("button", { type: "submit" }, "Submit job");
  const form = h("form", {
    id: "submit-form",
    novalidate: true,
    "aria-labelledby": "submit-title",
    onsubmit: async (event) => {
      event.preventDefault();
      clearErrors();
      button.disabled = true;
      try {
        const answer = await mutate("POST", "/v1/jobs", body());
        formError.replaceChildren(notice(`Job ${answer.body.id} submitted.`));
        onSubmitted(answer.body);
      } catch (error) {
        const byField = error instanceof ApiError ? error.fieldErrors() : {};
        const general = [];
        for (const [name, messages] of Object.entries(byField)) {
          const target = errors.get(name.split(".")[0]);
          if (target) {
            target.textContent = messages.join("; ");
            inputs.get(name.split(".")[0]).input.setAttribute("aria-invalid", "true");
          } else {
            general.push(`${name}: ${messages.join("; ")}`);
          }
        }
        const summary = error.status === 422
          ? `The job was refused (422)${general.length ? `: ${general.join("; ")}` : "; see the fields marked below."}`
          : `The job was refused: ${error.status ? `${error.status} ` : ""}${error.message}`;
        formError.replaceChildren(notice(summary, "error"));
        const firstBad = [...inputs.values()].find(({ input }) => input.getAttribute("aria-invalid"));
        if (firstBad) firstBad.input.focus();
      } finally {
        button.disabled = false;
      }
    },
  }, grid, h("div", { className: "toolbar" }, button,
    h("button", { type: "reset", className: "secondary", onclick: clearErrors }, "Article defaults")), formError);

  return h("details", { className: "submit", open: true },
    h("summary", {}, h("span", { id: "submit-title" }, "Submit a training job")), form);
}
