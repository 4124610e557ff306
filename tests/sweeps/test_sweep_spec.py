"""Every bad sweep spec is a 422 naming the field; a good one's trials come from Optuna."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from flask.testing import FlaskClient

from sweeps.sweep_support import GRID_2x2
from trainer_service.lifecycle import RunState, TrialState
from trainer_service.sweeps.records import SweepRecord, Trial
from trainer_service.sweeps.search import ask
from trainer_service.sweeps.spec import SweepSpec, Value, missing_modules, plan_sweep


def _with(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(GRID_2x2)
    body.update(changes)
    return body


def _param(name: str, kind: str, **space: Any) -> dict[str, Any]:
    return {"name": name, "parameterType": kind, "feasibleSpace": space}


BAD_SPECS: list[tuple[str, dict[str, Any], str, str]] = [
    ("no parameters", {"base": {}}, "parameters", "required"),
    ("unknown parameter", _with(parameters=[_param("depth", "int", list=[1])]),
     "parameters.0.name", "num_neurons"),
    ("model_name varied", _with(parameters=[_param("model_name", "categorical", list=["a"])]),
     "parameters.0.name", ""),
    ("repeated parameter", _with(parameters=[_param("epochs", "int", list=[1]),
                                             _param("epochs", "int", list=[2])]),
     "parameters.1.name", "varied twice"),
    ("grid double without step",
     _with(parameters=[_param("mid_range", "double", min=2, max=10)]),
     "parameters.0.feasibleSpace.step", "needs a step"),
    ("empty list", _with(parameters=[_param("epochs", "int", list=[])]),
     "parameters.0.feasibleSpace.list", "at least 1"),
    ("min above max", _with(parameters=[_param("mid_range", "double", min=9, max=2, step=1)]),
     "parameters.0.feasibleSpace.min", "above max"),
    ("list and range", _with(parameters=[_param("epochs", "int", list=[1], min=1, max=2)]),
     "parameters.0.feasibleSpace.list", "not both"),
    ("range without max", _with(parameters=[_param("epochs", "int", min=1)]),
     "parameters.0.feasibleSpace.max", "required"),
    ("float in an int list", _with(parameters=[_param("epochs", "int", list=[1, 2.5])]),
     "parameters.0.feasibleSpace.list", "int"),
    ("grid of a billion points",
     _with(parameters=[_param("mid_range", "double", min=1, max=1e6, step=1e-3)]),
     "parameters.0.feasibleSpace.step", "more than 1000"),
    ("grid larger than maxTrialCount", _with(maxTrialCount=3), "maxTrialCount",
     "the grid has 4 trials"),
    ("trial breaks a job rule",
     _with(parameters=[_param("batch_size", "int", list=[20, 500])]),
     "parameters.0.feasibleSpace", "batch_size=500"),
    ("trial with a non-integer neuron count",
     _with(parameters=[_param("num_neurons", "double", list=[2, 2.5])]),
     "parameters.0.feasibleSpace", "num_neurons=2.5"),
    ("range end breaks a job rule",
     _with(algorithm={"algorithmName": "tpe"},
           parameters=[_param("batch_size", "int", min=10, max=5000)]),
     "parameters.0.feasibleSpace", "batch_size=5000"),
    ("base breaks a job rule for every trial", _with(base={"epochs": 0}), "base.epochs", "greater than or equal to 1"),
    ("unknown base field", _with(base={"depth": 3}), "base.depth", "Extra inputs"),
    ("bad promotion model", _with(base={"model_name": "Not OK"}), "base.model_name", ""),
    ("zero parallel trials", _with(parallelTrialCount=0), "parallelTrialCount", "greater than or equal to 1"),
    ("too many trials", _with(maxTrialCount=1001), "maxTrialCount", "less than or equal to 1000"),
    ("negative failures", _with(maxFailedTrialCount=-1), "maxFailedTrialCount", "greater than or equal to 0"),
    ("unknown algorithm", _with(algorithm={"algorithmName": "bayesian"}),
     "algorithm.algorithmName", "multivariate-tpe"),
    ("bad setting name",
     _with(algorithm={"algorithmName": "tpe", "algorithmSettings": [{"name": "seed", "value": "1"}]}),
     "algorithm.algorithmSettings.0.name", "random_state"),
    ("bad setting value",
     _with(algorithm={"algorithmName": "tpe",
                      "algorithmSettings": [{"name": "n_startup_trials", "value": "many"}]}),
     "algorithm.algorithmSettings.0.value", "not a whole number"),
    ("setting out of range",
     _with(algorithm={"algorithmName": "random",
                      "algorithmSettings": [{"name": "random_state", "value": -1}]}),
     "algorithm.algorithmSettings.0.value", "outside"),
    ("setting twice",
     _with(algorithm={"algorithmName": "random",
                      "algorithmSettings": [{"name": "random_state", "value": 1},
                                            {"name": "random_state", "value": 2}]}),
     "algorithm.algorithmSettings.1.name", "twice"),
    ("unknown early stopping", _with(earlyStopping={"algorithmName": "hyperband"}),
     "earlyStopping.algorithmName", "medianstop"),
    ("medianstop with a non-numeric setting",
     _with(earlyStopping={"algorithmName": "medianstop",
                          "algorithmSettings": [{"name": "start_step", "value": "soon"}]}),
     "earlyStopping.algorithmSettings.0.value", "not a whole number"),
    ("medianstop with an unknown setting",
     _with(earlyStopping={"algorithmName": "medianstop",
                          "algorithmSettings": [{"name": "percentile", "value": "50"}]}),
     "earlyStopping.algorithmSettings.0.name", "min_trials_required"),
    ("unknown distribution",
     _with(algorithm={"algorithmName": "tpe"},
           parameters=[_param("learning_rate", "double", min=0.001, max=0.1, distribution="log")]),
     "parameters.0.feasibleSpace.distribution", "logUniform"),
    ("logUniform from zero",
     _with(algorithm={"algorithmName": "tpe"},
           parameters=[_param("learning_rate", "double", min=0, max=0.1, distribution="logUniform")]),
     "parameters.0.feasibleSpace.min", "above 0"),
    ("logUniform with a step",
     _with(algorithm={"algorithmName": "tpe"},
           parameters=[_param("num_neurons", "int", min=1, max=9, step=2, distribution="logUniform")]),
     "parameters.0.feasibleSpace.step", "no step"),
    ("distribution of a list",
     _with(parameters=[_param("num_neurons", "int", list=[1, 2], distribution="normal")]),
     "parameters.0.feasibleSpace.distribution", "no distribution"),
    ("grid on a log scale",
     _with(parameters=[_param("num_neurons", "int", min=1, max=9, distribution="logUniform")]),
     "parameters.0.feasibleSpace.distribution", "uniform"),
    ("goal beyond its bound", _with(objective={"goal": -1e15 - 1}), "objective.goal",
     "greater than or equal to"),
    ("skipBelowFloor without a goal",
     _with(parameters=[_param("num_neurons", "int", list=[1, 2], skipBelowFloor=True)]),
     "parameters.0.feasibleSpace.skipBelowFloor", "objective.goal"),
    ("skipBelowFloor on a parameter the floor ignores",
     _with(objective={"goal": 0.01},
           parameters=[_param("epochs", "int", list=[1, 2], skipBelowFloor=True)]),
     "parameters.0.feasibleSpace.skipBelowFloor", "num_neurons"),
    ("skipBelowFloor with another objective",
     _with(objective={"goal": 2, "objectiveMetricName": "floor_ratio"},
           parameters=[_param("num_neurons", "int", list=[1, 2], skipBelowFloor=True)]),
     "parameters.0.feasibleSpace.skipBelowFloor", "mse_in_domain"),
    ("unknown objective metric", _with(objective={"objectiveMetricName": "accuracy"}),
     "objective.objectiveMetricName", "mse_in_domain"),
    ("bool as a count", _with(parallelTrialCount=True), "parallelTrialCount", "integer"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "field", "said"), [case[1:] for case in BAD_SPECS], ids=[c[0] for c in BAD_SPECS]
)
def test_a_bad_spec_is_422_naming_the_field(
    client: FlaskClient, body: dict[str, Any], field: str, said: str
) -> None:
    response = client.post("/v1/sweeps", json=body)
    assert response.status_code == 422, response.get_json()
    assert response.mimetype == "application/problem+json"
    errors = response.get_json()["errors"]
    assert field in [error["field"] for error in errors], errors
    message = next(error["message"] for error in errors if error["field"] == field)
    assert said in message
    assert client.get("/v1/sweeps").get_json() == {"sweeps": []}  # nothing was created
    assert client.get("/v1/jobs").get_json() == {"jobs": []}


@pytest.mark.parametrize(
    ("body", "status"),
    [(b"", 422), (b"[1]", 422), (b"{", 400), (b'"text"', 422)],
    ids=["empty", "a list", "malformed", "a string"],
)
def test_a_body_that_is_not_a_spec_is_refused(
    client: FlaskClient, body: bytes, status: int
) -> None:
    response = client.post("/v1/sweeps", data=body, content_type="application/json")
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"


@pytest.mark.skipif(not missing_modules("bayesianoptimization"), reason="torch is installed")
def test_an_algorithm_this_trainer_cannot_run_is_422_naming_the_others(
    client: FlaskClient,
) -> None:
    """Gaussian-process search needs torch, which the trainer does not install."""
    response = client.post(
        "/v1/sweeps", json=_with(algorithm={"algorithmName": "bayesianoptimization"})
    )
    assert response.status_code == 422
    error = response.get_json()["errors"][0]
    assert error["field"] == "algorithm.algorithmName"
    assert "needs torch" in error["message"]
    assert "tpe, multivariate-tpe, cmaes, sobol" in error["message"]


def _draw(body: dict[str, Any], count: int) -> list[dict[str, Value]]:
    """``count`` trials asked in turn, each told back as succeeded (objective: num_neurons)."""
    spec = plan_sweep(SweepSpec.model_validate(body), "sweep-x")
    record = SweepRecord(id="20990101-000000-00000000", state=RunState.RUNNING, spec=spec,
                         trials=[], created_at="2099-01-01T00:00:00+00:00")  # fmt: skip
    for number in range(count):
        asked = ask(record)
        value = float(asked.assignments.get("num_neurons", number))
        trial = Trial(number=number, assignments=asked.assignments, state=TrialState.SUCCEEDED,
                      system_attrs=asked.system_attrs, metrics={"mse_in_domain": value})  # fmt: skip
        record = record.model_copy(
            update={"trials": [*record.trials, trial], "study_attrs": asked.study_attrs}
        )
    return [trial.assignments for trial in record.trials]


def test_grid_visits_each_point_once_and_fills_in_the_counts() -> None:
    spec = plan_sweep(SweepSpec.model_validate(GRID_2x2), "sweep-x")
    assert spec.maxTrialCount == 4
    assert spec.maxFailedTrialCount == 4  # unlimited unless given
    assert spec.algorithm.random_state is not None  # drawn and recorded
    points = {(a["num_neurons"], a["mid_range"]) for a in _draw(GRID_2x2, 4)}
    assert points == {(1, 2.0), (1, 12.0), (4, 2.0), (4, 12.0)}


def test_a_double_grid_lands_on_round_values() -> None:
    body = _with(parameters=[_param("learning_rate", "double", min=0.001, max=0.011, step=0.002)])
    assert sorted(float(a["learning_rate"]) for a in _draw(body, 6)) == [
        0.001, 0.003, 0.005, 0.007, 0.009, 0.011
    ]  # fmt: skip


SEARCHED = [
    _param("learning_rate", "double", min=0.0005, max=0.05, distribution="logUniform"),
    _param("num_neurons", "int", min=1, max=32),
    _param("init", "categorical", list=["spread", "glorot"]),
    _param("mid_range", "double", min=2, max=20, distribution="normal"),
    _param("epochs", "int", min=2, max=200, distribution="logNormal"),
]
ALGORITHMS = ["random", "tpe", "multivariate-tpe", "cmaes", "sobol"]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_search_is_reproducible_from_its_random_state_and_stays_in_its_space(
    algorithm: str,
) -> None:
    settings = [{"name": "random_state", "value": "7"}]
    if algorithm in ("tpe", "multivariate-tpe"):
        settings.append({"name": "n_startup_trials", "value": "3"})  # the model decides after 3
    body = _with(algorithm={"algorithmName": algorithm, "algorithmSettings": settings},
                 parameters=SEARCHED, maxTrialCount=8, base={"n_samples": 2000, "seed": 1})  # fmt: skip
    first = _draw(body, 8)
    assert _draw(body, 8) == first
    other = copy.deepcopy(body)
    other["algorithm"]["algorithmSettings"][0]["value"] = "8"
    assert _draw(other, 8) != first
    for assignment in first:
        assert 0.0005 <= float(assignment["learning_rate"]) <= 0.05
        assert isinstance(assignment["num_neurons"], int) and 1 <= assignment["num_neurons"] <= 32
        assert assignment["init"] in ("spread", "glorot")
        assert 2 <= float(assignment["mid_range"]) <= 20
        assert isinstance(assignment["epochs"], int) and 2 <= assignment["epochs"] <= 200


def test_log_and_normal_distributions_shape_the_draws() -> None:
    body = _with(
        algorithm={"algorithmName": "random",
                   "algorithmSettings": [{"name": "random_state", "value": "3"}]},
        parameters=SEARCHED[:1] + SEARCHED[3:4], maxTrialCount=200,
    )  # fmt: skip
    draws = _draw(body, 200)
    rates = [float(a["learning_rate"]) for a in draws]
    # log-uniform over [0.0005, 0.05]: half the draws below the geometric middle, 0.005;
    # a uniform draw would put 9 in 100 there
    assert 70 <= sum(rate < 0.005 for rate in rates) <= 130
    ranges = [float(a["mid_range"]) for a in draws]
    # normal centred on 11 with sigma 3: about 68 % within one sigma (uniform: 33 %)
    assert 110 <= sum(abs(value - 11) <= 3 for value in ranges) <= 160


def test_a_random_seed_setting_of_an_older_record_reads_as_random_state() -> None:
    body = _with(algorithm={"algorithmName": "random",
                            "algorithmSettings": [{"name": "seed", "value": 7}]})  # fmt: skip
    assert SweepSpec.model_validate(body).algorithm.random_state == 7
