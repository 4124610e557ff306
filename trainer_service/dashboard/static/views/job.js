// One job: parameters, lineage (job → version → files), the live loss chart and the fit.

import { checkReachable, getJson, mutate } from "../api.js";
import { fitChart, loadChartJs, lossChart, pngLink } from "../charts.js";
import { badge, duration, h, notice, number, versionLink, when } from "../format.js";

const FINISHED = ["SUCCEEDED", "FAILED", "CANCELLED"];

export async function renderJob(main, id) {
  document.title = `Job ${id} · squarenet`;
  const path = `/v1/jobs/${encodeURIComponent(id)}`;
  const [job, history] = await Promise.all([getJson(path), getJson(`${path}/epochs`), loadChartJs()]);
  let current = job;
  let source = null;
  let fit = null;

  const heading = h("h1", {}, "Job ", h("span", { className: "mono" }, job.id), " ");
  const stateBadge = h("span", { id: "job-state" }, badge(job.state));
  heading.append(stateBadge);
  const summary = h("p", { id: "job-summary", className: "muted", role: "status" });
  const actions = h("div", { className: "toolbar" });
  const metrics = h("dl", { className: "params", id: "job-metrics" });
  const lineage = h("ol", { className: "lineage", id: "lineage", "aria-label": "lineage" });
  const files = h("div", { id: "version-files" });

  // --- loss chart ---------------------------------------------------------------------------
  const lossCanvas = h("canvas", { id: "loss-chart", role: "img", "aria-label": `loss and val_loss per epoch of job ${job.id}` });
  const logToggle = h("input", { type: "checkbox", id: "log-scale", checked: true });
  const loss = lossChart(lossCanvas, { log: true });
  logToggle.addEventListener("change", () => loss.setLog(logToggle.checked));
  for (const row of history.history) loss.add(row);
  const lossDownloads = h("p", { className: "chart-caption" });

  // --- fit chart ----------------------------------------------------------------------------
  const fitBox = h("div", { id: "fit-section" });

  function describe(state) {
    const p = state.progress;
    const parts = [`${p.epoch}/${p.epochs} epochs`, `created ${when(state.created_at)}`];
    if (state.started_at) parts.push(`ran ${duration(state.started_at, state.finished_at)}`);
    if (state.error) parts.push(`error: ${state.error}`);
    summary.textContent = parts.join(" · ");
  }

  function showMetrics(state) {
    metrics.replaceChildren();
    const values = state.metrics || {};
    for (const name of ["loss", "val_loss", "mse_in_domain", "mse_out_of_domain", "train_seconds"]) {
      if (values[name] === undefined) continue;
      metrics.append(h("dt", {}, name), h("dd", { "data-metric": name }, number(values[name], 5)));
    }
    if (!metrics.childElementCount) metrics.append(h("dt", {}, "metrics"), h("dd", {}, "when the job succeeds"));
  }

  async function showLineage(state) {
    lineage.replaceChildren(h("li", {}, "job ", h("span", { className: "mono" }, state.id)));
    files.replaceChildren();
    if (!state.model_version) {
      lineage.append(h("li", { className: "muted" }, state.state === "SUCCEEDED" ? "version unknown" : "no version (yet)"));
      return;
    }
    lineage.append(h("li", {}, versionLink(state.params.model_name, state.model_version)));
    const models = await getJson("/v1/models");
    const entry = models.models.find((m) => m.model_name === state.params.model_name && m.version === state.model_version);
    if (!entry) {
      lineage.append(h("li", { className: "muted" }, "version no longer in the store"));
      return;
    }
    if (entry.status !== "ok") {
      lineage.append(h("li", {}, badge("broken"), ` ${entry.reason}`));
      return;
    }
    const fileHashes = entry.metadata.files || {};
    lineage.append(h("li", {}, `${Object.keys(fileHashes).length} files`));
    files.append(h("table", { className: "files" },
      h("caption", { className: "muted" }, `files of ${state.params.model_name} v${state.model_version} (sha256)`),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "file"), h("th", { scope: "col" }, "sha256"))),
      h("tbody", {}, ...Object.entries(fileHashes).map(([name, digest]) =>
        h("tr", {}, h("td", {}, name), h("td", {}, String(digest).slice(0, 16) + "…"))))));
  }

  function showActions(state) {
    actions.replaceChildren();
    if (!FINISHED.includes(state.state)) {
      const button = h("button", { type: "button", className: "danger", id: "cancel-job" }, "Cancel job");
      button.addEventListener("click", async () => {
        button.disabled = true;
        try {
          const answer = await mutate("POST", `${path}/cancel`);
          update(answer.body);
        } catch (error) {
          button.disabled = false;
          actions.append(notice(`Cancel refused: ${error.message}`, "error"));
        }
      });
      actions.append(button);
    }
  }

  function showDownloads(state) {
    lossDownloads.replaceChildren(pngLink(loss.chart, `${state.id}-loss-chart.png`, "Save this chart as PNG"));
    if (state.state === "SUCCEEDED") {
      lossDownloads.append(" · ", h("a", { href: `${path}/plots/loss.png`, download: `${state.id}-loss.png` }, "loss.png (server plot)"));
    }
  }

  async function showFit(state) {
    if (state.state !== "SUCCEEDED") {
      fitBox.replaceChildren(h("p", { className: "muted" }, "The fit is drawn once the job has succeeded."));
      return;
    }
    const curve = await getJson(`${path}/fit`);
    const canvas = h("canvas", { id: "fit-chart", role: "img", "aria-label": `training data, x² and the prediction of job ${state.id} over twice its domain` });
    const [lo, hi] = curve.domain;
    const worst = curve.max_extrapolation_error;
    const caption = h("p", { className: "chart-caption", id: "fit-caption" },
      `Shaded: the training domain [${number(lo)}, ${number(hi)}]. Filled red: prediction − x². `,
      `mse_in_domain ${number(state.metrics?.mse_in_domain)}, mse_out_of_domain ${number(state.metrics?.mse_out_of_domain)}`,
      worst ? `; largest error outside the domain ${number(worst.error)} at x = ${number(worst.x)}.` : ".");
    const box = h("div", { className: "chart" }, canvas);
    fitBox.replaceChildren(box, caption);
    fit?.destroy();
    fit = fitChart(canvas, curve);
    canvas.dataset.ready = "true";
    caption.append(h("br"), pngLink(() => fit, `${state.id}-fit-chart.png`, "Save this chart as PNG"), " · ",
      h("a", { href: `${path}/plots/fit.png`, download: `${state.id}-fit.png` }, "fit.png (server plot)"));
  }

  function update(state) {
    current = state;
    stateBadge.replaceChildren(badge(state.state));
    describe(state);
    showMetrics(state);
    showActions(state);
    showDownloads(state);
    if (FINISHED.includes(state.state)) {
      source?.close();
      source = null;
    }
    showLineage(state).catch(() => {});
    showFit(state).catch((error) => fitBox.replaceChildren(notice(`No fit curve: ${error.message}`, "error")));
  }

  const params = h("dl", { className: "params", id: "job-params" },
    ...Object.entries(job.params).flatMap(([name, value]) => [h("dt", {}, name), h("dd", {}, value === null ? "none" : String(value))]));

  main.append(
    h("p", {}, h("a", { href: "#/jobs" }, "← all jobs")),
    heading, summary, actions,
    h("div", { className: "grid2" },
      h("section", { "aria-labelledby": "params-title" }, h("h2", { id: "params-title" }, "Parameters"), params),
      h("section", { "aria-labelledby": "lineage-title" }, h("h2", { id: "lineage-title" }, "Lineage"), lineage, files,
        h("h2", {}, "Metrics"), metrics)),
    h("div", { className: "grid2" },
      h("section", { "aria-labelledby": "loss-title" },
        h("h2", { id: "loss-title" }, "Loss per epoch"),
        h("p", {}, logToggle, " ", h("label", { for: "log-scale" }, "logarithmic scale")),
        h("div", { className: "chart" }, lossCanvas), lossDownloads),
      h("section", { "aria-labelledby": "fit-title" },
        h("h2", { id: "fit-title" }, "Fit inside and outside the training domain"), fitBox)),
  );
  update(job);
  if (!FINISHED.includes(job.state)) {
    // the stream replays from epoch 1; the history already drawn is skipped
    source = new EventSource(`${path}/events`);
    source.addEventListener("epoch", (event) => {
      const row = JSON.parse(event.data);
      if (row.epoch <= loss.lastEpoch()) return;
      loss.add(row);
      if (current.state === "QUEUED") {
        current = { ...current, state: "RUNNING", started_at: current.started_at || new Date().toISOString() };
        stateBadge.replaceChildren(badge("RUNNING"));
      }
      current = { ...current, progress: { epoch: row.epoch, epochs: row.epochs } };
      describe(current);
    });
    source.addEventListener("state", (event) => update(JSON.parse(event.data)));
    source.addEventListener("error", () => checkReachable());
  }
  const ticker = setInterval(() => {
    if (current.state === "RUNNING") describe(current);
  }, 1000);
  return () => {
    clearInterval(ticker);
    source?.close();
    loss.chart.destroy();
    fit?.destroy();
  };
}
