"""``squarenet sweep`` flags become a Katib-style spec; bad flags are usage errors (exit 2)."""

from __future__ import annotations

import pytest

from squarenet.cli.main import build_parser, run
from squarenet.cli.sweeps import sweep_spec


def test_vary_and_base_flags_become_the_spec() -> None:
    args = build_parser({}).parse_args(
        ["sweep", "--vary", "num_neurons=1,2,4", "--vary", "mid_range=2:102:50",
         "--vary", "init=spread,glorot", "--base", "epochs=200", "--base", "seed=1",
         "--parallel", "2", "--max-failed", "3"]
    )  # fmt: skip
    assert sweep_spec(args) == {
        "parameters": [
            {"name": "num_neurons", "parameterType": "int", "feasibleSpace": {"list": [1, 2, 4]}},
            {"name": "mid_range", "parameterType": "double",
             "feasibleSpace": {"min": 2.0, "max": 102.0, "step": 50.0}},
            {"name": "init", "parameterType": "categorical",
             "feasibleSpace": {"list": ["spread", "glorot"]}},
        ],
        "base": {"epochs": 200, "seed": 1},
        "algorithm": {"algorithmName": "grid"},
        "parallelTrialCount": 2,
        "maxFailedTrialCount": 3,
    }  # fmt: skip


def test_a_random_search_takes_a_range_without_step_and_a_seed() -> None:
    args = build_parser({}).parse_args(
        ["sweep", "--vary", "learning_rate=0.001:0.1", "--algorithm", "random",
         "--random-seed", "7", "--max-trials", "8", "--objective", "val_loss"]
    )  # fmt: skip
    spec = sweep_spec(args)
    assert spec["parameters"][0]["feasibleSpace"] == {"min": 0.001, "max": 0.1}
    assert spec["algorithm"] == {
        "algorithmName": "random",
        "algorithmSettings": [{"name": "random_state", "value": "7"}],
    }
    assert spec["maxTrialCount"] == 8
    assert spec["objective"] == {"type": "minimize", "objectiveMetricName": "val_loss"}


def test_a_tpe_search_takes_a_log_range_a_goal_and_medianstop() -> None:
    args = build_parser({}).parse_args(
        ["sweep", "--vary", "learning_rate=0.0005:0.05:log", "--algorithm", "tpe",
         "--goal", "0.01", "--medianstop", "20"]
    )  # fmt: skip
    spec = sweep_spec(args)
    assert spec["parameters"][0]["feasibleSpace"] == {
        "min": 0.0005, "max": 0.05, "distribution": "logUniform"
    }  # fmt: skip
    assert spec["algorithm"] == {"algorithmName": "tpe"}
    assert spec["objective"] == {"type": "minimize", "goal": 0.01}
    assert spec["earlyStopping"] == {
        "algorithmName": "medianstop",
        "algorithmSettings": [{"name": "start_step", "value": "20"}],
    }


@pytest.mark.parametrize(
    "argv",
    [
        ["sweep", "--vary", "depth=1,2"],
        ["sweep", "--vary", "num_neurons"],
        ["sweep", "--vary", "num_neurons=1,two"],
        ["sweep", "--vary", "mid_range=1:2:3:4"],
        ["sweep", "--vary", "mid_range=1:nan:1"],
        ["sweep", "--base", "epochs"],
        ["sweep", "--vary", "learning_rate=0.1:log"],
    ],
    ids=[
        "unknown name",
        "no values",
        "not a number",
        "four parts",
        "nan",
        "base without value",
        "log without a range",
    ],
)
def test_bad_sweep_flags_are_usage_errors(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        run(argv, env={})
    assert exited.value.code == 2
    assert "error" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv", [["sweep"], ["sweep", "20261130-140628-9aae18de", "--vary", "epochs=1,2"]]
)
def test_sweep_needs_either_an_id_or_vary_flags(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(argv, env={}) == 2
    assert "sweep ID" in capsys.readouterr().err
