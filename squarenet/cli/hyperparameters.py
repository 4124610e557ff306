"""The ``train`` flags: one per hyperparameter of ``POST /v1/jobs``, sent only when given.

The trainer owns the defaults and the bounds (it answers 422 naming the field), so the
client only checks types here; the demo reuses the same flags.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def finite_float(text: str) -> float:
    """A float that JSON can carry: NaN and ±Inf are usage errors, not requests."""
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite: {text!r}")
    return value


@dataclass(frozen=True)
class Hyperparameter:
    """A body field of POST /v1/jobs and the flag that sets it."""

    name: str
    parse: Callable[[str], Any]
    help: str

    @property
    def flag(self) -> str:
        """``n_samples`` -> ``--n-samples``."""
        return "--" + self.name.replace("_", "-")


HYPERPARAMETERS: tuple[Hyperparameter, ...] = (
    Hyperparameter("n_samples", int, "rows drawn from U(-mid_range/2, mid_range/2) (100000)"),
    Hyperparameter("epochs", int, "passes over the training rows (400)"),
    Hyperparameter("batch_size", int, "rows per gradient step (1000)"),
    Hyperparameter("mid_range", finite_float, "width of the training domain (10)"),
    Hyperparameter("num_neurons", int, "units in the hidden ReLU layer (10)"),
    Hyperparameter("validation_split", finite_float, "fraction held out for val_loss (0.2)"),
    Hyperparameter("learning_rate", finite_float, "Adam's step size (0.001)"),
    Hyperparameter("seed", int, "makes the run deterministic (random)"),
    Hyperparameter("init", str, "initialisation: spread or glorot (spread)"),
    Hyperparameter("early_stopping_patience", int, "stop after N epochs without improvement (off)"),
    Hyperparameter("model_name", str, "model the version is published under (square)"),
    Hyperparameter("max_train_seconds", int, "time limit; past it the job fails (900)"),
)


_METAVARS: dict[Callable[[str], Any], str] = {int: "N", finite_float: "X", str: "NAME"}


def add_hyperparameter_flags(parser: argparse.ArgumentParser) -> None:
    """Add one flag per hyperparameter; unset flags stay None and are not sent."""
    group = parser.add_argument_group("hyperparameters (the trainer's defaults in parentheses)")
    for item in HYPERPARAMETERS:
        group.add_argument(
            item.flag,
            dest=item.name,
            type=item.parse,
            default=None,
            metavar=_METAVARS.get(item.parse, "VALUE"),
            help=item.help,
        )


def job_body(args: argparse.Namespace) -> dict[str, Any]:
    """The POST /v1/jobs body: only the hyperparameters given on the command line."""
    return {
        item.name: getattr(args, item.name)
        for item in HYPERPARAMETERS
        if getattr(args, item.name, None) is not None
    }
