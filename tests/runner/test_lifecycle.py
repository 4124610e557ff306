"""The one lifecycle: jobs and sweeps move between the same states, trials add their own."""

from __future__ import annotations

from trainer_service.lifecycle import (
    FINAL,
    JOB_MOVES,
    SWEEP_MOVES,
    RunState,
    TrialState,
    may_move,
)


def test_a_final_job_never_moves_and_only_a_running_one_goes_back_to_the_queue() -> None:
    for state in FINAL:
        assert JOB_MOVES[state] == frozenset()
    assert may_move(JOB_MOVES, RunState.RUNNING, RunState.QUEUED)
    assert not may_move(JOB_MOVES, RunState.QUEUED, RunState.QUEUED)
    assert not may_move(SWEEP_MOVES, RunState.RUNNING, RunState.QUEUED)


def test_only_a_succeeded_sweep_continues() -> None:
    assert may_move(SWEEP_MOVES, RunState.SUCCEEDED, RunState.RUNNING)
    assert not may_move(SWEEP_MOVES, RunState.FAILED, RunState.RUNNING)
    assert not may_move(SWEEP_MOVES, RunState.CANCELLED, RunState.RUNNING)
    assert not may_move(JOB_MOVES, RunState.SUCCEEDED, RunState.RUNNING)


def test_a_trial_follows_every_run_state_and_adds_its_own() -> None:
    for state in RunState:
        followed = TrialState.following(state)
        assert followed.value == state.value
        assert followed.finished == state.finished
    extra = {state.value for state in TrialState} - {state.value for state in RunState}
    assert extra == {"PENDING", "EARLY_STOPPED", "SKIPPED"}
