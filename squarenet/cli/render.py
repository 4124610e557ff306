"""Rich tables and lines for jobs, models, predictions and served-model changes.

Rendering is kept apart from transport so the demo prints exactly what the CLI prints.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from rich.table import Table

from squarenet.cli.predictor_client import PredictResult
from squarenet.v1 import predictor_pb2

METRIC_ORDER = ("loss", "val_loss", "mse_in_domain", "mse_out_of_domain")
OUTSIDE_MARK = "outside training domain"


def number(value: object, digits: int = 4) -> str:
    """A float for humans: general format, '-' when missing, 'nan'/'inf' spelled out."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}g}"


def _domain(value: object) -> str:
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
        return f"[{number(value[0])}, {number(value[1])}]"
    return "-"


_SUMMARY_KEYS = ("n_samples", "epochs", "batch_size", "num_neurons")
_SUMMARY_HEADER = "samples/epochs/batch/neurons"


def _params_summary(params: object) -> str:
    if not isinstance(params, Mapping):
        return "-"
    return "/".join(str(params.get(key, "?")) for key in _SUMMARY_KEYS)


def _progress(job: Mapping[str, Any]) -> str:
    progress = job.get("progress")
    if isinstance(progress, Mapping) and progress.get("epochs"):
        return f"{progress.get('epoch', 0)}/{progress.get('epochs')}"
    return "-"


def _metric(job: Mapping[str, Any], name: str) -> str:
    metrics = job.get("metrics")
    return number(metrics.get(name)) if isinstance(metrics, Mapping) else "-"


def jobs_table(jobs: Sequence[Mapping[str, Any]]) -> Table:
    """One row per job, newest first as the trainer lists them."""
    table = Table(title="training jobs")
    for column in ("id", "state", "epoch", _SUMMARY_HEADER, "mse_in_domain", "version", "created"):
        table.add_column(column, no_wrap=column in ("id", "state"))
    for job in jobs:
        table.add_row(
            str(job.get("id", "?")),
            str(job.get("state", "?")),
            _progress(job),
            _params_summary(job.get("params")),
            _metric(job, "mse_in_domain"),
            str(job.get("model_version") or "-"),
            str(job.get("created_at") or "-"),
        )
    return table


def job_table(job: Mapping[str, Any]) -> Table:
    """Every field of one job as name/value rows (params and metrics spelled out)."""
    table = Table(title=f"job {job.get('id', '?')}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key in ("state", "model_version", "error", "created_at", "started_at", "finished_at"):
        table.add_row(key, "-" if job.get(key) is None else str(job.get(key)))
    if job.get("resumes"):
        table.add_row("resumes", f"{job['resumes']} (resumed from its checkpoint)")
    table.add_row("progress", _progress(job))
    params = job.get("params")
    if isinstance(params, Mapping):
        for key, value in params.items():
            table.add_row(f"params.{key}", "-" if value is None else str(value))
    metrics = job.get("metrics")
    if isinstance(metrics, Mapping):
        for key, value in metrics.items():
            table.add_row(f"metrics.{key}", number(value))
    return table


def metrics_table(metrics: Mapping[str, Any], title: str = "metrics") -> Table:
    """The job's losses and its MSE inside and outside the training domain."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    names = [name for name in METRIC_ORDER if name in metrics]
    names += sorted(name for name in metrics if name not in METRIC_ORDER)
    for name in names:
        table.add_row(name, number(metrics[name]))
    return table


def models_table(models: Sequence[Mapping[str, Any]]) -> Table:
    """Every published version, its labels and the gate that let a label onto it; broken
    ones show why they are skipped."""
    table = Table(title="published models")
    for column in (
        "model",
        "version",
        "status",
        "domain",
        "mse_in_domain",
        "mse_out_of_domain",
        "job",
        "created",
        "labels",
        "gate",
    ):
        table.add_column(column)
    for entry in models:
        metadata = entry.get("metadata")
        meta: Mapping[str, Any] = metadata if isinstance(metadata, Mapping) else {}
        metrics = meta.get("metrics")
        metrics = metrics if isinstance(metrics, Mapping) else {}
        status = str(entry.get("status", "ok"))
        if status != "ok" and entry.get("reason"):
            status = f"{status}: {entry['reason']}"
        table.add_row(
            str(entry.get("model_name", meta.get("model_name", "?"))),
            str(entry.get("version", meta.get("version", "?"))),
            status,
            _domain(meta.get("domain")),
            number(metrics.get("mse_in_domain")),
            number(metrics.get("mse_out_of_domain")),
            str(meta.get("job_id") or "-"),
            str(meta.get("created_at") or "-"),
            ", ".join(str(label) for label in entry.get("labels") or []) or "-",
            gate_verdict(entry.get("gate")),
        )
    return table


def gate_verdict(gate: object) -> str:
    """The promotion gate of the last label move to a version: passed, failed (forced), or -."""
    if not isinstance(gate, Mapping):
        return "-"
    verdict = "passed" if gate.get("passed") else "failed"
    return f"{verdict}, forced" if gate.get("forced") else verdict


def predictions_table(result: PredictResult) -> Table:
    """x, x², the prediction, its error, and a mark on every x outside the training domain."""
    table = Table(title=f"predictions of model version {result.version}")
    table.add_column("x", justify="right")
    table.add_column("x²", justify="right")
    table.add_column("prediction", justify="right")
    table.add_column("error", justify="right")
    table.add_column("domain")
    for row in result.predictions:
        table.add_row(
            number(row.x, 6),
            number(row.expected, 6),
            number(row.y, 6),
            f"{row.error:+.4g}",
            f"[yellow]{OUTSIDE_MARK}[/]" if row.extrapolated else "inside",
        )
    return table


def predictions_document(result: PredictResult) -> dict[str, Any]:
    """The --json form of a Predict answer."""
    return {
        "version": result.version,
        "predictions": [
            {
                "x": row.x,
                "x_squared": row.expected,
                "y": row.y,
                "error": row.error,
                "extrapolated": row.extrapolated,
            }
            for row in result.predictions
        ],
    }


def model_document(model: predictor_pb2.Model) -> dict[str, Any]:
    """The --json form of a served model (GetModel / WatchModel message)."""
    return {
        "version": int(model.version),
        "domain": [model.domain_min, model.domain_max],
        "created_at": model.created_at,
        "job_id": model.job_id,
        "metrics": dict(sorted(model.metrics.items())),
        "loaded_versions": [int(v) for v in model.loaded_versions],
        "labels": {name: int(v) for name, v in sorted(model.labels.items())},
        "serving_label": model.serving_label,
    }


def model_line(model: predictor_pb2.Model) -> str:
    """One line per served-model change, as ``watch`` prints it."""
    metrics = " ".join(
        f"{name}={number(model.metrics[name])}" for name in METRIC_ORDER if name in model.metrics
    )
    loaded = ",".join(str(v) for v in model.loaded_versions) or "-"
    label = f" ({model.serving_label})" if model.serving_label else ""
    return (
        f"serving version {model.version}{label} domain [{number(model.domain_min)}, "
        f"{number(model.domain_max)}] job {model.job_id or '-'} created {model.created_at or '-'} "
        f"loaded [{loaded}] {metrics}".rstrip()
    )
