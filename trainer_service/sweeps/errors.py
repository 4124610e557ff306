"""What a client can do wrong with sweeps, each with the HTTP answer it stands for (as every
``TrainerError`` names it: see ``trainer_service.errors``)."""

from __future__ import annotations

from trainer_service.errors import TrainerError


class SweepError(TrainerError, status=400, kind="sweep-error"):
    """A refusal about a sweep."""


class SweepNotFound(SweepError, status=404, kind="not-found"):
    """No sweep has this id (ids that are not even well formed end here too)."""

    def __init__(self, sweep_id: str) -> None:
        super().__init__(f"no sweep with id {sweep_id!r}")


class SweepPlotNotFound(SweepError, status=404, kind="not-found"):
    """The sweep has no such plot, or nothing to draw in it yet."""


class SweepAlreadyFinished(SweepError, status=409, kind="sweep-already-finished"):
    """A cancel arrived for a sweep that has already ended."""


class SweepNotFinished(SweepError, status=409, kind="sweep-not-finished"):
    """A delete arrived for a sweep that still has trials to run or to stop."""


class NothingToPromote(SweepError, status=409, kind="nothing-to-promote"):
    """No trial of the sweep succeeded (or its model is broken): there is nothing to promote."""
