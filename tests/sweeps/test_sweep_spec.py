"""Every bad sweep spec is a 422 naming the field; a good one plans every trial up front."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from flask.testing import FlaskClient

from sweeps.sweep_support import GRID_2x2
from trainer_service.sweeps.spec import SweepSpec, plan_trials


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
     "trials.1.batch_size", "trial 1 (batch_size=500)"),
    ("trial with a non-integer neuron count",
     _with(parameters=[_param("num_neurons", "double", list=[2, 2.5])]),
     "trials.1.num_neurons", "trial 1"),
    ("base breaks a job rule for every trial", _with(base={"epochs": 0}), "base.epochs", "greater than or equal to 1"),
    ("unknown base field", _with(base={"depth": 3}), "base.depth", "Extra inputs"),
    ("bad promotion model", _with(base={"model_name": "Not OK"}), "base.model_name", ""),
    ("zero parallel trials", _with(parallelTrialCount=0), "parallelTrialCount", "greater than or equal to 1"),
    ("too many trials", _with(maxTrialCount=1001), "maxTrialCount", "less than or equal to 1000"),
    ("negative failures", _with(maxFailedTrialCount=-1), "maxFailedTrialCount", "greater than or equal to 0"),
    ("unknown algorithm", _with(algorithm={"algorithmName": "bayesian"}),
     "algorithm.algorithmName", "grid"),
    ("grid with settings",
     _with(algorithm={"algorithmName": "grid",
                      "algorithmSettings": [{"name": "seed", "value": 1}]}),
     "algorithm.algorithmSettings", "no settings"),
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


def test_grid_plans_the_product_in_parameter_order() -> None:
    planned = plan_trials(SweepSpec.model_validate(GRID_2x2), "sweep-x")
    assert planned.assignments == [
        {"num_neurons": 1, "mid_range": 2.0},
        {"num_neurons": 1, "mid_range": 12.0},
        {"num_neurons": 4, "mid_range": 2.0},
        {"num_neurons": 4, "mid_range": 12.0},
    ]
    assert planned.spec.maxTrialCount == 4
    assert planned.spec.maxFailedTrialCount == 4  # unlimited unless given


def test_a_double_grid_lands_on_round_values() -> None:
    spec = _with(parameters=[_param("learning_rate", "double", min=0.001, max=0.011, step=0.002)])
    planned = plan_trials(SweepSpec.model_validate(spec), "sweep-x")
    assert [a["learning_rate"] for a in planned.assignments] == [
        0.001, 0.003, 0.005, 0.007, 0.009, 0.011
    ]  # fmt: skip


def test_random_search_is_reproducible_from_its_seed_and_records_one() -> None:
    body = _with(
        algorithm={"algorithmName": "random"},
        maxTrialCount=6,
        parameters=[_param("learning_rate", "double", min=0.001, max=0.1),
                    _param("num_neurons", "int", min=1, max=20),
                    _param("init", "categorical", list=["spread", "glorot"])],
    )  # fmt: skip
    first = plan_trials(SweepSpec.model_validate(body), "sweep-x")
    seed = first.spec.algorithm.seed
    assert seed is not None  # drawn and recorded, so the sweep can be repeated
    again = copy.deepcopy(body)
    again["algorithm"]["algorithmSettings"] = [{"name": "seed", "value": seed}]
    second = plan_trials(SweepSpec.model_validate(again), "sweep-x")
    assert second.assignments == first.assignments
    assert len(first.assignments) == 6
    for assignment in first.assignments:
        assert 0.001 <= float(assignment["learning_rate"]) <= 0.1
        assert 1 <= int(assignment["num_neurons"]) <= 20
        assert assignment["init"] in ("spread", "glorot")
