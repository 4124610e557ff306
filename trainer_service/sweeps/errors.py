"""What a client can do wrong with sweeps, each with the HTTP answer it stands for: the API's
problem handler reads ``status`` and ``kind`` off any of them (no HTTP is spoken here)."""

from __future__ import annotations

from trainer_service.errors import TrainerError


class SweepError(TrainerError):
    """A refusal about a sweep; its class line names its HTTP ``status`` and ``kind``."""

    status = 400
    kind = "sweep-error"

    def __init_subclass__(cls, *, status: int, kind: str) -> None:
        super().__init_subclass__()
        cls.status, cls.kind = status, kind


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
