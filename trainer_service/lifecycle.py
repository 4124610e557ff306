"""The one lifecycle of a run (a job, a sweep) and of a sweep's trial, and why a job ended.

Jobs and sweeps share ``RunState`` and its moves, each kind adding the one move only it makes
(``JOB_MOVES``, ``SWEEP_MOVES``), so that a state change anywhere is checked against one table.
A job's ``EndReason`` is recorded as it ends, so that whoever acts on the end (a sweep running
an interrupted trial again) reads a value, never the words of its error.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class RunState(StrEnum):
    """Where a job or a sweep is in its life; the last three are final."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def finished(self) -> bool:
        """True once the run ended (a job never changes again; a sweep only by a PATCH)."""
        return self in FINAL


FINAL = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED})

_FORWARD: Mapping[RunState, frozenset[RunState]] = {
    RunState.QUEUED: frozenset({RunState.RUNNING, *FINAL}),
    RunState.RUNNING: FINAL,
    **dict.fromkeys(FINAL, frozenset[RunState]()),
}

JOB_MOVES: Mapping[RunState, frozenset[RunState]] = {
    **_FORWARD,
    # its runner was lost or stopped: it waits again and resumes from its checkpoint
    RunState.RUNNING: FINAL | {RunState.QUEUED},
}
"""The moves of a job's state; only the job book makes them."""

SWEEP_MOVES: Mapping[RunState, frozenset[RunState]] = {
    **_FORWARD,
    # a sweep that reached its goal, continued by a PATCH that asks for more trials
    RunState.SUCCEEDED: frozenset({RunState.RUNNING}),
}
"""The moves of a sweep's state; only the sweep controller makes them."""


def may_move(moves: Mapping[RunState, frozenset[RunState]], now: RunState, to: RunState) -> bool:
    """Whether a run in state ``now`` may go to ``to`` under ``moves``."""
    return to in moves[now]


class TrialState(StrEnum):
    """A trial is PENDING until released as a job; then it follows its job's ``RunState``.

    EARLY_STOPPED: its job was cancelled by the early-stopping rule (nothing published);
    SKIPPED: its floor already missed the goal, so it never had a job.
    """

    PENDING = "PENDING"
    QUEUED = RunState.QUEUED.value
    RUNNING = RunState.RUNNING.value
    SUCCEEDED = RunState.SUCCEEDED.value
    FAILED = RunState.FAILED.value
    CANCELLED = RunState.CANCELLED.value
    EARLY_STOPPED = "EARLY_STOPPED"
    SKIPPED = "SKIPPED"

    @classmethod
    def following(cls, job: RunState) -> TrialState:
        """The state of a released trial whose job is in state ``job``."""
        return cls(job.value)

    @property
    def finished(self) -> bool:
        """True once the trial's outcome is known."""
        return self not in (TrialState.PENDING, TrialState.QUEUED, TrialState.RUNNING)

    @property
    def active(self) -> bool:
        """Released and not finished: it holds one of the sweep's parallel slots."""
        return self in (TrialState.QUEUED, TrialState.RUNNING)


class EndReason(StrEnum):
    """Why a job ended; set with its final state.

    ``interrupted`` (its process was stopped by the platform: SIGTERM, a pod evicted, drained
    or pre-empted) and ``lost`` (its runner went away more often than it may resume) are no
    fault of the job: a sweep runs such a trial again.
    """

    PUBLISHED = "published"
    CANCELLED = "cancelled"
    ERROR = "error"
    TIME_LIMIT = "time_limit"
    INTERRUPTED = "interrupted"
    LOST = "lost"

    @property
    def by_no_fault_of_its_own(self) -> bool:
        """True when the job ended because its process was taken away, not by its training."""
        return self in (EndReason.INTERRUPTED, EndReason.LOST)


# how older versions worded the errors of these ends (read back once, by ``inferred_end``)
_OLD_WORDING = (
    ("interrupted", EndReason.INTERRUPTED),
    ("trainer process lost", EndReason.LOST),
    ("time limit exceeded", EndReason.TIME_LIMIT),
)


def inferred_end(state: RunState, error: str | None) -> EndReason | None:
    """The end reason of a record written before jobs stored one (None while unfinished)."""
    ends = {RunState.SUCCEEDED: EndReason.PUBLISHED, RunState.CANCELLED: EndReason.CANCELLED}
    if state is not RunState.FAILED:
        return ends.get(state)
    return next(
        (end for words, end in _OLD_WORDING if (error or "").startswith(words)), EndReason.ERROR
    )
