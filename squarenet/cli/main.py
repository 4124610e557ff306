"""``squarenet``: the client of the trainer (REST) and the predictor (gRPC).

Exit codes (see :class:`squarenet.cli.errors.ExitCode`): 0 ok, 1 the followed job ended
FAILED or CANCELLED, 2 usage, 3 a service is unreachable, 4 the request was rejected
(HTTP 4xx, gRPC INVALID_ARGUMENT / NOT_FOUND ...), 5 the service cannot answer (HTTP 5xx,
gRPC UNAVAILABLE such as "no model yet"), 130 interrupted. Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

from rich.console import Console, RenderableType

from squarenet.cli.errors import CliError, ExitCode
from squarenet.cli.hyperparameters import add_hyperparameter_flags, job_body
from squarenet.cli.predictor_client import DEFAULT_TIMEOUT, PredictorClient
from squarenet.cli.progress import follow_job
from squarenet.cli.render import (
    job_table,
    jobs_table,
    metrics_table,
    model_document,
    model_line,
    models_table,
    predictions_document,
    predictions_table,
)
from squarenet.cli.rollouts import add_rollout_commands, gate_line
from squarenet.cli.sweeps import add_sweep_commands
from squarenet.cli.trainer_client import JobDocument, TrainerClient

DEFAULT_TRAINER = "http://localhost:8080"
DEFAULT_PREDICTOR = "localhost:50051"
PROG = "squarenet"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit 2), like every other error of the CLI."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number: {text!r}")
    return value


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    """The whole command line; environment variables give the connection defaults."""
    parser = _Parser(
        prog=PROG,
        description="Train squarenet models over REST and query them over gRPC.",
        epilog="exit codes: 0 ok, 1 job failed/cancelled, 2 usage, 3 unreachable, "
        "4 rejected request, 5 service error, 130 interrupted",
    )
    parser.add_argument(
        "--trainer",
        default=env.get("SQUARENET_TRAINER_URL", DEFAULT_TRAINER),
        metavar="URL",
        help="trainer base URL (env SQUARENET_TRAINER_URL, default %(default)s)",
    )
    parser.add_argument(
        "--predictor",
        default=env.get("SQUARENET_PREDICTOR", DEFAULT_PREDICTOR),
        metavar="HOST:PORT",
        help="predictor gRPC address (env SQUARENET_PREDICTOR, default %(default)s)",
    )
    parser.add_argument(
        "--token",
        default=env.get("SQUARENET_API_TOKEN") or None,
        help="API token sent as Bearer on mutating calls (env SQUARENET_API_TOKEN)",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        default=DEFAULT_TIMEOUT,
        help="seconds to wait for a connection or an answer (default %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="submit a training job")
    train.add_argument("--wait", action="store_true", help="follow the job with a progress bar")
    train.add_argument(
        "--cancel-on-interrupt",
        action="store_true",
        help="with --wait: Ctrl-C cancels the job (by default the job keeps running)",
    )
    add_hyperparameter_flags(train)
    train.set_defaults(handler=cmd_train)

    jobs = commands.add_parser("jobs", help="list training jobs, newest first")
    jobs.set_defaults(handler=cmd_jobs)

    job = commands.add_parser("job", help="show one job")
    job.add_argument("job_id", metavar="ID")
    job.add_argument("--wait", action="store_true", help="follow the job until it ends")
    job.add_argument("--cancel-on-interrupt", action="store_true", help=argparse.SUPPRESS)
    job.set_defaults(handler=cmd_job)

    cancel = commands.add_parser("cancel", help="cancel a queued or running job")
    cancel.add_argument("job_id", metavar="ID")
    cancel.set_defaults(handler=cmd_cancel)

    models = commands.add_parser("models", help="list published model versions")
    models.set_defaults(handler=cmd_models)

    label = commands.add_parser(
        "label", help="point a version label (stable, canary) at a version: promote or roll back"
    )
    label.add_argument("label", metavar="LABEL", help="e.g. stable or canary")
    label.add_argument("version", metavar="VERSION", type=_positive_int, help="a published version")
    label.add_argument("--model", default="square", help="model name (default %(default)s)")
    label.add_argument(
        "--force", action="store_true", help="move it even when the version fails its gate"
    )
    label.set_defaults(handler=cmd_label)

    labels = commands.add_parser("labels", help="list every model's version labels")
    labels.set_defaults(handler=cmd_labels)

    predict = commands.add_parser("predict", help="predict x² for each X with the served model")
    predict.add_argument(
        "xs",
        metavar="X",
        type=float,
        nargs="+",
        help="inputs (use -- before a first negative like -1e3)",
    )
    predict.add_argument(
        "--version", type=_positive_int, default=0, help="pin a loaded version (default newest)"
    )
    predict.add_argument(
        "--label", default="", help="answer with the version this label names (e.g. canary)"
    )
    predict.set_defaults(handler=cmd_predict)

    watch = commands.add_parser("watch", help="print a line each time the served model changes")
    watch.add_argument(
        "--count", type=_positive_int, default=None, help="stop after N lines (default: Ctrl-C)"
    )
    watch.set_defaults(handler=cmd_watch)
    add_sweep_commands(commands)
    add_rollout_commands(commands)
    return parser


# --- commands ---------------------------------------------------------------------------


class Context:
    """What every command needs: parsed flags, an output console, and client factories."""

    def __init__(self, args: argparse.Namespace, console: Console) -> None:
        self.args = args
        self.console = console

    def trainer(self) -> TrainerClient:
        """A trainer client for --trainer / --token."""
        return TrainerClient(self.args.trainer, token=self.args.token, timeout=self.args.timeout)

    def predictor(self) -> PredictorClient:
        """A predictor client for --predictor."""
        return PredictorClient(self.args.predictor, timeout=self.args.timeout)

    def print_json(self, document: Any) -> None:
        """Machine output: compact, one document per line."""
        sys.stdout.write(json.dumps(document, sort_keys=True) + "\n")
        sys.stdout.flush()

    def answer(self, document: Any, human: Callable[[], RenderableType]) -> ExitCode:
        """``document`` with --json, else what ``human`` renders (built only then); OK."""
        if self.args.json:
            self.print_json(document)
        else:
            self.console.print(human())
        return ExitCode.OK


def cmd_train(ctx: Context) -> ExitCode:
    """Submit a job; with --wait follow it to its end."""
    with ctx.trainer() as client:
        job = client.submit_job(job_body(ctx.args))
        if not ctx.args.wait:
            if ctx.args.json:
                ctx.print_json(job)
            else:
                ctx.console.print(f"submitted job {job.get('id')} ({job.get('state')})")
            return ExitCode.OK
        return _wait_for(ctx, client, job)


def cmd_job(ctx: Context) -> ExitCode:
    """Show one job; with --wait follow it to its end."""
    with ctx.trainer() as client:
        job = client.get_job(ctx.args.job_id)
        if ctx.args.wait:
            return _wait_for(ctx, client, job)
    return ctx.answer(job, lambda: job_table(job))


def _wait_for(ctx: Context, client: TrainerClient, job: JobDocument) -> ExitCode:
    job_id = str(job.get("id"))
    try:
        if ctx.args.json:
            final = _follow_quietly(client, job)
        else:
            final = follow_job(client, job, ctx.console)
    except KeyboardInterrupt:
        if ctx.args.cancel_on_interrupt:
            cancelled = client.cancel_job(job_id)
            raise CliError(
                f"interrupted: job {job_id} is {cancelled.get('state')}", ExitCode.INTERRUPTED
            ) from None
        raise CliError(
            f"interrupted: job {job_id} keeps running; stop it with `{PROG} cancel {job_id}`",
            ExitCode.INTERRUPTED,
        ) from None
    return report_final(ctx, final)


def _follow_quietly(client: TrainerClient, job: JobDocument) -> JobDocument:
    """--json --wait: no bar on the terminal, just the final job."""
    return follow_job(client, job, Console(quiet=True))


def report_final(ctx: Context, job: JobDocument) -> ExitCode:
    """Print the finished job (metrics and the new version) and say whether it succeeded."""
    state = job.get("state")
    if ctx.args.json:
        ctx.print_json(job)
    elif state == "SUCCEEDED":
        metrics = job.get("metrics")
        if isinstance(metrics, Mapping):
            ctx.console.print(metrics_table(metrics))
        ctx.console.print(f"published model version {job.get('model_version')}")
    if state == "SUCCEEDED":
        return ExitCode.OK
    reason = f": {job['error']}" if job.get("error") else ""
    raise CliError(f"job {job.get('id')} ended {state}{reason}", ExitCode.JOB_NOT_SUCCEEDED)


def cmd_jobs(ctx: Context) -> ExitCode:
    """List jobs."""
    with ctx.trainer() as client:
        jobs = client.list_jobs()
    return ctx.answer({"jobs": jobs}, lambda: jobs_table(jobs))


def cmd_cancel(ctx: Context) -> ExitCode:
    """Cancel a job."""
    with ctx.trainer() as client:
        job = client.cancel_job(ctx.args.job_id)
    return ctx.answer(job, lambda: f"job {job.get('id')} {job.get('state')}")


def cmd_models(ctx: Context) -> ExitCode:
    """List published versions."""
    with ctx.trainer() as client:
        models = client.list_models()
    return ctx.answer({"models": models}, lambda: models_table(models))


def cmd_label(ctx: Context) -> ExitCode:
    """Point LABEL at VERSION (predictors serving that label follow within a poll)."""
    with ctx.trainer() as client:
        answer = client.set_label(
            ctx.args.model, ctx.args.label, ctx.args.version, force=ctx.args.force
        )
    args = ctx.args
    gate = gate_line(answer.get("gate"))
    return ctx.answer(
        answer, lambda: f"{args.model}: {args.label} -> version {args.version}\n{gate}"
    )


def cmd_labels(ctx: Context) -> ExitCode:
    """Every model's labels, one line each."""
    with ctx.trainer() as client:
        labels = client.list_labels()
    if ctx.args.json:
        ctx.print_json({"labels": labels})
        return ExitCode.OK
    for model, found in sorted(labels.items()):
        for name, version in sorted(found.items()):
            ctx.console.print(f"{model} {name} {version}", highlight=False)
    return ExitCode.OK


def cmd_predict(ctx: Context) -> ExitCode:
    """Predict and show each x against x², marking x outside the training domain."""
    with ctx.predictor() as client:
        result = client.predict(ctx.args.xs, version=ctx.args.version, label=ctx.args.label)
    if ctx.args.json:
        ctx.print_json(predictions_document(result))
    else:
        ctx.console.print(predictions_table(result))
        ctx.console.print(f"answered by model version {result.version}")
    return ExitCode.OK


def cmd_watch(ctx: Context) -> ExitCode:
    """Follow WatchModel: one line per served-model change until --count lines or Ctrl-C."""
    seen = 0
    with ctx.predictor() as client:
        try:
            for model in client.watch_model():
                if ctx.args.json:
                    ctx.print_json(model_document(model))
                else:
                    ctx.console.print(model_line(model), highlight=False, soft_wrap=True)
                seen += 1
                if ctx.args.count is not None and seen >= ctx.args.count:
                    return ExitCode.OK
        except KeyboardInterrupt:
            return ExitCode.OK  # Ctrl-C is how a watch normally ends
    raise CliError(f"predictor at {ctx.args.predictor} ended the watch", ExitCode.UNREACHABLE)


# --- entry point ------------------------------------------------------------------------


def make_console() -> Console:
    """Tables stay readable when output is piped: no wrapping at 80 columns."""
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    return console


def run(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Parse, run one command, map every failure to its exit code and one stderr line."""
    parser = build_parser(os.environ if env is None else env)
    args = parser.parse_args(argv)
    handler: Callable[[Context], ExitCode] = args.handler
    try:
        return int(handler(Context(args, make_console())))
    except CliError as exc:
        sys.stderr.write(f"{PROG}: {exc.message}\n")
        return int(exc.code)
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return int(ExitCode.INTERRUPTED)


def main() -> NoReturn:
    """Console-script entry point."""
    sys.exit(run())
