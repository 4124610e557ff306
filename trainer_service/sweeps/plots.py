"""A sweep's three figures, drawn from its finished trials.

- ``objective.png``: the objective against each varied parameter, one line per value of the
  other parameters (the article's "what changes when I change this"); for mse_in_domain the
  architecture's limit, (mid_range / (num_neurons + 1))⁴ / 180, dotted beside each line.
- ``fits.png``: the trials' own fit figures (x², data and prediction over twice its domain)
  titled with their assignments, for the best ``FITS_SHOWN`` trials by the objective, so the
  figure has one size whatever the number of trials.
- ``loss.png``: the trials' training loss curves overlaid.

Drawn with matplotlib's object API on the Agg canvas (no pyplot state, thread-safe per
figure). Finished trials never change, so a drawing is cached under the number of finished
trials and redrawn only when another one ends.
"""

from __future__ import annotations

import math
import os
import secrets
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import imread

from trainer_service.sweeps.controller import FIT_FILE, read_epochs
from trainer_service.sweeps.errors import SweepPlotNotFound
from trainer_service.sweeps.records import SweepFiles, SweepRecord, Trial
from trainer_service.sweeps.results import objective_value, trial_limit
from trainer_service.sweeps.spec import Value

SWEEP_PLOT_NAMES = ("objective", "fits", "loss")
_FIT_COLUMNS = 4
FITS_SHOWN = 12  # fits.png shows the best this many trials: 3 rows of 4 at most
_LOG_SPAN = 20  # a parameter spanning this factor or more gets a log axis


def sweep_plot(files: SweepFiles, record: SweepRecord, trials: list[Trial], name: str) -> Path:
    """The PNG of plot ``name``, drawn now or taken from the cache."""
    if name not in SWEEP_PLOT_NAMES:
        raise SweepPlotNotFound(f"sweep {record.id} has no plot {name!r}")
    finished = [trial for trial in trials if trial.state.finished]
    cached = files.folder(record.id) / "plots" / f"{name}-{len(finished)}.png"
    if cached.is_file():
        return cached
    draw: dict[str, Callable[[SweepFiles, SweepRecord, list[Trial]], Figure]] = {
        "objective": _objective_figure,
        "fits": _fits_figure,
        "loss": _loss_figure,
    }
    figure = draw[name](files, record, finished)
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_name(f".{cached.name}.{secrets.token_hex(4)}")
    figure.savefig(partial, dpi=90, format="png")
    os.replace(partial, cached)  # concurrent drawers both write whole files; one wins
    return cached


def _label(record: SweepRecord, trial: Trial) -> str:
    return ", ".join(f"{name}={_short(value)}" for name, value in record.ordered(trial))


def _short(value: Value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _objective_figure(files: SweepFiles, record: SweepRecord, trials: list[Trial]) -> Figure:
    scored = [(trial, objective_value(record, trial)) for trial in trials]
    points = [(trial, value) for trial, value in scored if value is not None]
    if not points:
        raise SweepPlotNotFound(f"sweep {record.id} has no succeeded trial to plot yet")
    names = [parameter.name for parameter in record.spec.parameters]
    metric = record.spec.objective.objectiveMetricName
    figure = _new_figure(6.0 * len(names), 4.5)
    for column, name in enumerate(names):
        axes = figure.add_subplot(1, len(names), column + 1)
        others = [other for other in names if other != name]
        lines: dict[tuple[Value, ...], list[tuple[Value, float, float]]] = defaultdict(list)
        for trial, value in points:
            key = tuple(trial.assignments[other] for other in others)
            lines[key].append((trial.assignments[name], value, trial_limit(record, trial)))
        categories = sorted({str(trial.assignments[name]) for trial, _ in points})
        for key, line in sorted(lines.items(), key=lambda item: item[0]):
            label = ", ".join(f"{o}={_short(v)}" for o, v in zip(others, key, strict=True))
            line.sort(key=lambda point: _order(point[0], categories))
            xs = [_order(point[0], categories) for point in line]
            drawn = axes.plot(xs, [point[1] for point in line], marker="o", label=label or metric)
            if metric == "mse_in_domain":  # the architecture's limit beside each result
                axes.plot(xs, [point[2] for point in line], linestyle=":",
                          color=drawn[0].get_color(), label=f"limit {label}".strip())  # fmt: skip
        if any(isinstance(trial.assignments[name], str) for trial, _ in points):
            axes.set_xticks(range(len(categories)), categories)
        if all(value > 0 for _, value in points):
            axes.set_yscale("log")
        numbers = [
            float(x) for trial, _ in points if not isinstance(x := trial.assignments[name], str)
        ]
        if numbers and min(numbers) > 0 and max(numbers) >= _LOG_SPAN * min(numbers):
            axes.set_xscale("log")  # 10, 100, 1000 ... read best as equal steps
        axes.set_xlabel(name)
        axes.set_ylabel(metric)
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize="small")
    figure.suptitle(f"{record.spec.objective.type} {metric}")
    return figure


def _order(value: Value, categories: list[str]) -> float:
    return float(categories.index(value)) if isinstance(value, str) else float(value)


def _fits_figure(files: SweepFiles, record: SweepRecord, trials: list[Trial]) -> Figure:
    shown = _best_fits(files, record, trials)
    if not shown:
        raise SweepPlotNotFound(f"sweep {record.id} has no trial fit to show yet")
    columns = min(_FIT_COLUMNS, len(shown))
    rows = math.ceil(len(shown) / columns)
    figure = _new_figure(4.2 * columns, 3.0 * rows)
    metric = record.spec.objective.objectiveMetricName
    for position, (trial, path) in enumerate(shown):
        axes = figure.add_subplot(rows, columns, position + 1)
        axes.set_axis_off()
        value = objective_value(record, trial)
        score = f"\n{metric}={value:.3g}" if value is not None else ""
        axes.set_title(f"trial {trial.number}: {_label(record, trial)}{score}", fontsize="small")
        try:
            axes.imshow(imread(path))
        except (OSError, ValueError, SyntaxError):  # a damaged copy: say so, draw the rest
            axes.text(0.5, 0.5, "fit figure unreadable", ha="center", va="center")
    if len(shown) < len(trials):
        figure.suptitle(
            f"the best {len(shown)} of {len(trials)} finished trials by {metric}"
            f" ({record.spec.objective.type})"
        )
    return figure


def _best_fits(
    files: SweepFiles, record: SweepRecord, trials: list[Trial]
) -> list[tuple[Trial, Path]]:
    """At most ``FITS_SHOWN`` trials with a fit figure, best objective first (then those
    without one, by number): the figure's size and memory stay the same at any sweep size."""
    sign = 1.0 if record.spec.objective.type == "minimize" else -1.0

    def rank(trial: Trial) -> tuple[bool, float, int]:
        value = objective_value(record, trial)
        return (value is None, sign * (value or 0.0), trial.number)

    shown: list[tuple[Trial, Path]] = []
    for trial in sorted(trials, key=rank):
        path = files.trial_dir(record.id, trial.number) / FIT_FILE
        if path.is_file():
            shown.append((trial, path))
        if len(shown) == FITS_SHOWN:
            break
    return shown


def _loss_figure(files: SweepFiles, record: SweepRecord, trials: list[Trial]) -> Figure:
    figure = _new_figure(8.0, 5.0)
    axes = figure.add_subplot()
    drawn = 0
    for trial in trials:
        rows = read_epochs(files, record.id, trial.number)
        pairs = [(row.get("epoch"), row.get("loss")) for row in rows]
        points = [(e, v) for e, v in pairs if isinstance(e, int) and isinstance(v, float) and v > 0]
        if not points:
            continue
        axes.plot([e for e, _ in points], [v for _, v in points],
                  label=f"{trial.number}: {_label(record, trial)}")  # fmt: skip
        drawn += 1
    if not drawn:
        raise SweepPlotNotFound(f"sweep {record.id} has no trial loss curve yet")
    axes.set_yscale("log")
    axes.set_xlabel("epoch")
    axes.set_ylabel("training loss (MSE)")
    axes.set_title("Training loss of every finished trial")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize="x-small", ncols=2 if drawn > 8 else 1)
    return figure
