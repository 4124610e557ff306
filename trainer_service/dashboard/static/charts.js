// Chart.js (vendored, window.Chart) wrappers for the dashboard's pictures. Chart.js is
// loaded by the views that draw (a job, a sweep), not by the jobs list.

const CHART_JS = "/dashboard/static/vendor/chart.umd.min.js";
let loading = null;

/** Chart.js on window.Chart, loaded once (a script of this origin: the CSP allows it). */
export function loadChartJs() {
  if (window.Chart) return Promise.resolve(window.Chart);
  if (!loading) {
    loading = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = CHART_JS;
      script.onload = () => resolve(window.Chart);
      script.onerror = () => {
        loading = null;
        script.remove();
        reject(new Error("Chart.js could not be loaded"));
      };
      document.head.append(script);
    });
  }
  return loading;
}

const COLORS = {
  loss: "#0b5cad",
  val: "#c4420c",
  target: "#1b1f24",
  prediction: "#c4420c",
  data: "rgba(87, 96, 106, 0.45)",
  domain: "rgba(17, 99, 41, 0.09)",
  error: "rgba(164, 14, 38, 0.22)",
};
const PALETTE = ["#0b5cad", "#c4420c", "#116329", "#5a32a3", "#a40e26", "#0f5b5b", "#7d4e00", "#bf3989"];

export function paletteColor(index) {
  return PALETTE[index % PALETTE.length];
}

/** Shades [lo, hi] on the x axis: the training domain. */
const domainShading = {
  id: "domainShading",
  beforeDatasetsDraw(chart, _args, options) {
    if (!options || !options.domain) return;
    const [lo, hi] = options.domain;
    const { ctx, chartArea, scales } = chart;
    const left = Math.max(scales.x.getPixelForValue(lo), chartArea.left);
    const right = Math.min(scales.x.getPixelForValue(hi), chartArea.right);
    ctx.save();
    ctx.fillStyle = COLORS.domain;
    ctx.fillRect(left, chartArea.top, right - left, chartArea.bottom - chartArea.top);
    ctx.restore();
  },
};

function base(xTitle, yTitle, yType = "linear") {
  return {
    animation: false,
    responsive: true,
    maintainAspectRatio: false,
    parsing: false,
    normalized: true,
    interaction: { mode: "nearest", intersect: false },
    plugins: { legend: { position: "top" } },
    scales: {
      x: { type: "linear", title: { display: true, text: xTitle } },
      y: { type: yType, title: { display: true, text: yTitle } },
    },
  };
}

/** Log-axis labels at 1, 2 and 5 of each decade only, in plain short numbers. */
function logTick(value) {
  const mantissa = Math.round(value / 10 ** Math.floor(Math.log10(value)));
  return [1, 2, 5].includes(mantissa) ? Number(value.toPrecision(2)).toString() : "";
}

function applyScale(options, log) {
  options.scales.y.type = log ? "logarithmic" : "linear";
  options.scales.y.ticks = log ? { callback: logTick, autoSkip: false } : {};
}

/** loss and val_loss per epoch; `add` appends one epoch and redraws. */
export function lossChart(canvas, { log = true } = {}) {
  const chart = new window.Chart(canvas, {
    type: "line",
    data: {
      datasets: [
        { label: "loss (training)", data: [], borderColor: COLORS.loss, pointRadius: 0, borderWidth: 2 },
        { label: "val_loss", data: [], borderColor: COLORS.val, pointRadius: 0, borderWidth: 2 },
      ],
    },
    options: (() => {
      const options = base("epoch", "mean squared error");
      applyScale(options, log);
      return options;
    })(),
  });
  let pending = false;
  const redraw = () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      chart.update("none");
    });
  };
  return {
    chart,
    points: () => chart.data.datasets[0].data.length,
    lastEpoch: () => {
      const data = chart.data.datasets[0].data;
      return data.length ? data[data.length - 1].x : 0;
    },
    add(row) {
      if (row.loss !== null && row.loss !== undefined && row.loss > 0) {
        chart.data.datasets[0].data.push({ x: row.epoch, y: row.loss });
      }
      if (row.val_loss !== null && row.val_loss !== undefined && row.val_loss > 0) {
        chart.data.datasets[1].data.push({ x: row.epoch, y: row.val_loss });
      }
      canvas.dataset.points = String(chart.data.datasets[0].data.length);
      redraw();
    },
    setLog(log) {
      applyScale(chart.options, log);
      chart.update("none");
    },
  };
}

function xy(xs, ys) {
  return xs.map((x, i) => ({ x, y: ys[i] }));
}

/** Training data, x², the prediction over twice the domain, the gap between them filled. */
export function fitChart(canvas, curve) {
  const options = base("x", "y");
  options.plugins.domainShading = { domain: curve.domain };
  options.plugins.legend.labels = { filter: (item) => item.text !== "" };
  return new window.Chart(canvas, {
    type: "scatter",
    data: {
      datasets: [
        { label: "training data (sample)", data: xy(curve.data.x, curve.data.y), pointRadius: 2, backgroundColor: COLORS.data, borderColor: COLORS.data, order: 0 },
        { label: "x²", data: xy(curve.x, curve.target), showLine: true, pointRadius: 0, borderColor: COLORS.target, borderWidth: 2, order: 2 },
        {
          label: "prediction",
          data: xy(curve.x, curve.prediction),
          showLine: true,
          pointRadius: 0,
          borderColor: COLORS.prediction,
          borderDash: [6, 4],
          borderWidth: 2,
          fill: { target: 1, above: COLORS.error, below: COLORS.error },
          backgroundColor: COLORS.error,
          order: 1,
        },
      ],
    },
    options,
    plugins: [domainShading],
  });
}

/** Several trials' predictions over their domains, with x² over the widest one. */
export function overlayChart(canvas, curves) {
  const options = base("x", "y");
  let widest = null;
  for (const { curve } of curves) {
    if (!widest || curve.x[curve.x.length - 1] - curve.x[0] > widest.x[widest.x.length - 1] - widest.x[0]) {
      widest = curve;
    }
  }
  const datasets = curves.map(({ label, curve }, index) => ({
    label,
    data: xy(curve.x, curve.prediction),
    showLine: true,
    pointRadius: 0,
    borderWidth: 1.5,
    borderColor: paletteColor(index),
  }));
  if (widest) {
    datasets.push({ label: "x²", data: xy(widest.x, widest.target), showLine: true, pointRadius: 0, borderWidth: 2.5, borderColor: COLORS.target, borderDash: [3, 3] });
  }
  return new window.Chart(canvas, { type: "scatter", data: { datasets }, options });
}

/** The objective against one varied parameter; one series per value of another. */
export function objectiveChart(canvas, { parameter, objective, series }) {
  const options = base(parameter, objective);
  const datasets = series.map(({ label, points }, index) => ({
    label,
    data: points.sort((a, b) => a.x - b.x),
    showLine: true,
    pointRadius: 4,
    borderColor: paletteColor(index),
    backgroundColor: paletteColor(index),
  }));
  return new window.Chart(canvas, { type: "scatter", data: { datasets }, options });
}

/** A link that saves the chart as a PNG (drawn from the canvas, white background). */
export function pngLink(chartOrGetter, filename, text) {
  const link = document.createElement("a");
  link.href = "#";
  link.textContent = text;
  link.addEventListener("click", (event) => {
    const chart = typeof chartOrGetter === "function" ? chartOrGetter() : chartOrGetter;
    if (!chart) return;
    const canvas = chart.canvas;
    const copy = document.createElement("canvas");
    copy.width = canvas.width;
    copy.height = canvas.height;
    const ctx = copy.getContext("2d");
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, copy.width, copy.height);
    ctx.drawImage(canvas, 0, 0);
    link.href = copy.toDataURL("image/png");
    link.download = filename;
    setTimeout(() => { link.href = "#"; }, 0);
    if (!link.href.startsWith("data:")) event.preventDefault();
  });
  return link;
}

/**
 * Parallel coordinates (Katib's UI has one): one line per trial across the varied parameters
 * and the objective, each axis scaled to its own range (0 its lowest value, 1 its highest).
 */
export function parallelChart(canvas, { axes, lines }) {
  const options = base("", "each axis from its lowest value (0) to its highest (1)");
  options.scales.x = {
    type: "linear",
    min: 0,
    max: Math.max(1, axes.length - 1),
    ticks: { stepSize: 1, autoSkip: false, callback: (value) => axes[value] ?? "" },
  };
  options.scales.y.min = 0;
  options.scales.y.max = 1;
  options.plugins.legend = { display: false };
  options.plugins.tooltip = {
    callbacks: { label: (item) => `${item.dataset.label}: ${item.raw.text}` },
  };
  const datasets = lines.map(({ label, points, color }) => ({
    label,
    data: points,
    showLine: true,
    pointRadius: 3,
    borderColor: color,
    backgroundColor: color,
  }));
  return new window.Chart(canvas, { type: "scatter", data: { datasets }, options });
}
