"""``squarenet sweep``, ``sweeps``, ``sweep-cancel``, ``sweep-promote``: sweeps from the shell.

``--vary NAME=V,V,...`` varies a hyperparameter over a list, ``--vary NAME=MIN:MAX:STEP``
over a grid and ``--vary NAME=MIN:MAX`` (``:log`` for a log scale) over a range the search
algorithm draws from; ``--base NAME=VALUE`` sets one every trial shares. The trainer owns the rules
(422 naming the field); the client only turns the flags into the Katib-style spec.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rich.live import Live
from rich.table import Table

from squarenet.cli.errors import CliError, ExitCode
from squarenet.cli.hyperparameters import HYPERPARAMETERS, finite_float
from squarenet.cli.render import number

if TYPE_CHECKING:
    from squarenet.cli.main import Context
    from squarenet.cli.trainer_client import TrainerClient

FINISHED = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
ALGORITHMS = ("grid", "random", "tpe", "multivariate-tpe", "bayesianoptimization", "cmaes", "sobol")
LOG_SCALE = "log"
POLL_SECONDS = 1.0
BEST_MARK = "★"
_TYPES = {item.name: item.parse for item in HYPERPARAMETERS}


def _value(name: str, text: str) -> Any:
    parse = _TYPES.get(name)
    if parse is None:
        known = ", ".join(item.name for item in HYPERPARAMETERS)
        raise argparse.ArgumentTypeError(f"unknown hyperparameter {name!r} (one of {known})")
    try:
        return parse(text)
    except (ValueError, argparse.ArgumentTypeError) as exc:
        raise argparse.ArgumentTypeError(f"{name}: {exc}") from exc


def _split(text: str) -> tuple[str, str]:
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip().replace("-", "_"), rest.strip()


def parse_vary(text: str) -> dict[str, Any]:
    """``num_neurons=1,2,4``, ``mid_range=2:102:50``, ``learning_rate=0.001:0.1`` (searched)
    or ``learning_rate=0.0005:0.05:log`` (searched on a log scale)."""
    name, rest = _split(text)
    parse = _TYPES.get(name)
    kind = "categorical" if parse is str else "int" if parse is int else "double"
    log = rest.endswith(":" + LOG_SCALE)
    if log:
        rest = rest.removesuffix(":" + LOG_SCALE)
        if rest.count(":") != 1:
            raise argparse.ArgumentTypeError(f"expected {name}=MIN:MAX:log, got {text!r}")
    if ":" in rest:
        parts = rest.split(":")
        if len(parts) not in (2, 3):
            raise argparse.ArgumentTypeError(f"expected {name}=MIN:MAX[:STEP], got {text!r}")
        bounds = [_value(name, part) if kind == "int" else finite_float(part) for part in parts]
        space: dict[str, Any] = dict(zip(("min", "max", "step"), bounds, strict=False))
        if log:
            space["distribution"] = "logUniform"
    else:
        space = {"list": [_value(name, part.strip()) for part in rest.split(",")]}
    return {"name": name, "parameterType": kind, "feasibleSpace": space}


def parse_base(text: str) -> tuple[str, Any]:
    """``epochs=200`` as a (name, typed value) pair."""
    name, rest = _split(text)
    return name, _value(name, rest)


def add_sweep_commands(commands: Any) -> None:
    """Register the sweep subcommands on the CLI's subparsers."""
    sweep = commands.add_parser("sweep", help="start a sweep (--vary ...) or show one (ID)")
    sweep.add_argument("sweep_id", metavar="ID", nargs="?", help="show this sweep's trials")
    sweep.add_argument(
        "--vary",
        type=parse_vary,
        action="append",
        default=[],
        metavar="NAME=V,V,..|NAME=MIN:MAX[:STEP]",
        help="a hyperparameter to vary (repeat for a grid over several)",
    )
    sweep.add_argument(
        "--base",
        type=parse_base,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a hyperparameter every trial shares (repeatable)",
    )
    sweep.add_argument("--parallel", type=int, default=None, help="trials at once (1)")
    sweep.add_argument("--max-trials", type=int, default=None, help="maxTrialCount")
    sweep.add_argument("--max-failed", type=int, default=None, help="maxFailedTrialCount")
    sweep.add_argument("--algorithm", choices=ALGORITHMS, default="grid", help="search (grid)")
    sweep.add_argument(
        "--random-seed", type=int, default=None, help="random_state: the same trials again"
    )
    sweep.add_argument(
        "--goal", type=finite_float, default=None, help="end the sweep once a trial reaches it"
    )
    sweep.add_argument(
        "--medianstop",
        type=int,
        default=None,
        metavar="EPOCH",
        help="stop trials worse than the median of 3 succeeded ones from this epoch on",
    )
    sweep.add_argument(
        "--objective", default=None, metavar="METRIC", help="metric to minimize (mse_in_domain)"
    )
    sweep.add_argument("--maximize", action="store_true", help="maximize the objective instead")
    sweep.add_argument("--wait", action="store_true", help="follow the trials until the end")
    sweep.set_defaults(handler=cmd_sweep)

    sweeps = commands.add_parser("sweeps", help="list sweeps, newest first")
    sweeps.set_defaults(handler=cmd_sweeps)

    cancel = commands.add_parser("sweep-cancel", help="cancel a sweep and its running trials")
    cancel.add_argument("sweep_id", metavar="ID")
    cancel.set_defaults(handler=cmd_sweep_cancel)

    promote = commands.add_parser(
        "sweep-promote", help="publish a sweep's best trial as a new version of its base model"
    )
    promote.add_argument("sweep_id", metavar="ID")
    promote.set_defaults(handler=cmd_sweep_promote)


def sweep_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The POST /v1/sweeps body from the flags (only what was given)."""
    spec: dict[str, Any] = {"parameters": args.vary, "base": dict(args.base)}
    spec["algorithm"] = {"algorithmName": args.algorithm}
    if args.random_seed is not None:
        spec["algorithm"]["algorithmSettings"] = [
            {"name": "random_state", "value": str(args.random_seed)}
        ]
    if args.objective is not None or args.maximize or args.goal is not None:
        spec["objective"] = {"type": "maximize" if args.maximize else "minimize"}
        if args.objective is not None:
            spec["objective"]["objectiveMetricName"] = args.objective
        if args.goal is not None:
            spec["objective"]["goal"] = args.goal
    if args.medianstop is not None:
        start = {"name": "start_step", "value": str(args.medianstop)}
        spec["earlyStopping"] = {"algorithmName": "medianstop", "algorithmSettings": [start]}
    for flag, key in (("parallel", "parallelTrialCount"), ("max_trials", "maxTrialCount"),
                      ("max_failed", "maxFailedTrialCount")):  # fmt: skip
        if getattr(args, flag) is not None:
            spec[key] = getattr(args, flag)
    return spec


# --- commands -------------------------------------------------------------------------------


def cmd_sweep(ctx: Context) -> ExitCode:
    """Start a sweep from --vary flags, or show sweep ID; --wait follows it to the end."""
    args = ctx.args
    if args.sweep_id is not None and args.vary:
        raise CliError("give either a sweep ID or --vary flags, not both", ExitCode.USAGE)
    if args.sweep_id is None and not args.vary:
        raise CliError("give a sweep ID to show, or --vary NAME=... to start one", ExitCode.USAGE)
    with ctx.trainer() as client:
        if args.sweep_id is None:
            sweep = client.submit_sweep(sweep_spec(args))
            if not args.json:
                ctx.console.print(
                    f"submitted sweep {sweep.get('id')} ({sweep.get('trials')} trials)"
                )
        else:
            sweep = client.get_sweep(args.sweep_id)
        sweep_id = str(sweep.get("id"))
        if args.wait:
            sweep = _follow(ctx, client, sweep_id)
        trials = client.sweep_trials(sweep_id)
    if args.json:
        ctx.print_json({"sweep": sweep, "trials": trials})
    else:
        ctx.console.print(trials_table(sweep, trials, sort=True))
        ctx.console.print(sweep_line(sweep))
    if args.wait and sweep.get("state") != "SUCCEEDED":
        raise CliError(f"sweep {sweep_id} ended {sweep.get('state')}", ExitCode.JOB_NOT_SUCCEEDED)
    return ExitCode.OK


def _follow(ctx: Context, client: TrainerClient, sweep_id: str) -> dict[str, Any]:
    """Poll the sweep until it ends, redrawing the trials table in place."""
    sweep = client.get_sweep(sweep_id)
    with Live(console=ctx.console, auto_refresh=False, transient=True) as live:
        while True:
            trials = client.sweep_trials(sweep_id)
            if not ctx.args.json:
                live.update(trials_table(sweep, trials, sort=False), refresh=True)
            if sweep.get("state") in FINISHED and all(
                trial.get("state") in FINISHED for trial in trials
            ):
                return sweep
            time.sleep(POLL_SECONDS)
            sweep = client.get_sweep(sweep_id)


def cmd_sweeps(ctx: Context) -> ExitCode:
    """List sweeps."""
    with ctx.trainer() as client:
        sweeps = client.list_sweeps()
    if ctx.args.json:
        ctx.print_json({"sweeps": sweeps})
        return ExitCode.OK
    table = Table("id", "state", "trials", "ok", "failed", "best", "objective", "created")
    for sweep in sweeps:
        best = sweep.get("currentOptimalTrial")
        best_text, value = "-", None
        if isinstance(best, Mapping):
            best_text = _assignments(best.get("parameterAssignments"))
            metrics = best.get("observation", {}).get("metrics", [])
            value = metrics[0].get("value") if metrics else None
        table.add_row(
            str(sweep.get("id")), str(sweep.get("state")), str(sweep.get("trials")),
            str(sweep.get("trialsSucceeded")), str(sweep.get("trialsFailed")), best_text,
            number(value), str(sweep.get("createdAt", "-")),
        )  # fmt: skip
    ctx.console.print(table)
    return ExitCode.OK


def cmd_sweep_cancel(ctx: Context) -> ExitCode:
    """Cancel a sweep."""
    with ctx.trainer() as client:
        sweep = client.cancel_sweep(ctx.args.sweep_id)
    return ctx.answer(sweep, lambda: sweep_line(sweep))


def cmd_sweep_promote(ctx: Context) -> ExitCode:
    """Promote a sweep's best trial."""
    with ctx.trainer() as client:
        promotion = client.promote_sweep(ctx.args.sweep_id)
    return ctx.answer(
        promotion,
        lambda: (
            f"trial {promotion.get('trial')} (job {promotion.get('job_id')}) published as "
            f"{promotion.get('model_name')} version {promotion.get('version')}"
        ),
    )


# --- rendering ------------------------------------------------------------------------------


def sweep_line(sweep: Mapping[str, Any]) -> str:
    """One line: id, state, counts, why it ended."""
    counts = ", ".join(
        f"{sweep.get(key)} {label}"
        for key, label in (("trialsSucceeded", "succeeded"), ("trialsFailed", "failed"),
                           ("trialsCancelled", "cancelled"),
                           ("trialsEarlyStopped", "early-stopped"), ("trialsSkipped", "skipped"),
                           ("trialsRunning", "running"),
                           ("trialsQueued", "queued"), ("trialsPending", "pending"))
        if sweep.get(key)
    )  # fmt: skip
    message = f" ({sweep['message']})" if sweep.get("message") else ""
    return f"sweep {sweep.get('id')} {sweep.get('state')}{message}: {counts or 'no trials'}"


def _assignments(items: object) -> str:
    if not isinstance(items, Sequence):
        return "-"
    return ", ".join(
        f"{item.get('name')}={number(item.get('value'))}"
        for item in items
        if isinstance(item, Mapping)
    )


def _objective_key(minimize: bool) -> Any:
    def key(trial: Mapping[str, Any]) -> tuple[int, float, int]:
        value = trial.get("objective")
        if not isinstance(value, int | float) or not math.isfinite(value):
            return (1, 0.0, int(trial.get("number", 0)))
        return (0, value if minimize else -value, int(trial.get("number", 0)))

    return key


def trials_table(
    sweep: Mapping[str, Any], trials: Sequence[Mapping[str, Any]], *, sort: bool
) -> Table:
    """The trials with their assignments, metrics and the architecture's MSE limit.

    Sorted by the objective (best first, marked) when ``sort``; in trial order otherwise.
    """
    spec = sweep.get("spec") if isinstance(sweep.get("spec"), Mapping) else {}
    assert isinstance(spec, Mapping)  # noqa: S101 - narrowed above
    objective = spec.get("objective") or {}
    metric = str(objective.get("objectiveMetricName", "mse_in_domain"))
    extra = [str(name) for name in objective.get("additionalMetricNames", []) if name != metric]
    names = [str(p.get("name")) for p in spec.get("parameters", []) if isinstance(p, Mapping)]
    best = sweep.get("currentOptimalTrial")
    best_number = best.get("number") if isinstance(best, Mapping) else None
    rows = list(trials)
    if sort:
        rows.sort(key=_objective_key(objective.get("type", "minimize") == "minimize"))
    table = Table("", "#", "state", *names, metric, *extra, "mse limit", "version", "seconds",
                  title=f"sweep {sweep.get('id')} {sweep.get('state')}")  # fmt: skip
    for trial in rows:
        metrics = trial.get("metrics") if isinstance(trial.get("metrics"), Mapping) else {}
        assert isinstance(metrics, Mapping)  # noqa: S101 - narrowed above
        values = {
            item.get("name"): item.get("value") for item in trial.get("parameterAssignments", [])
        }
        table.add_row(
            BEST_MARK if trial.get("number") == best_number else "",
            str(trial.get("number")), str(trial.get("state")),
            *(number(values.get(name)) for name in names),
            number(metrics.get(metric)), *(number(metrics.get(name)) for name in extra),
            number(trial.get("mseLimit")), number(trial.get("modelVersion")),
            number(trial.get("seconds"), 3),
        )  # fmt: skip
    return table
