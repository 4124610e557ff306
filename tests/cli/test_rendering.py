"""Output formatting: problem details in one line, tables and lines of the served model."""

from __future__ import annotations

import httpx
import pytest
from rich.console import Console

from squarenet.cli.predictor_client import Prediction, PredictResult
from squarenet.cli.render import (
    OUTSIDE_MARK,
    model_line,
    models_table,
    predictions_document,
    predictions_table,
)
from squarenet.cli.trainer_client import describe_problem
from squarenet.v1 import predictor_pb2


def text_of(renderable: object) -> str:
    console = Console(width=200, record=True)
    console.print(renderable)
    return console.export_text()


def test_a_problem_response_names_title_detail_and_fields() -> None:
    response = httpx.Response(
        422,
        headers={"Content-Type": "application/problem+json"},
        json={
            "type": "about:blank",
            "title": "Invalid hyperparameters",
            "status": 422,
            "detail": "2 fields are out of range",
            "errors": [
                {"field": "epochs", "message": "must be at least 1"},
                {"field": "batch_size", "message": "must be at most the training rows"},
            ],
        },
    )
    line = describe_problem(response)
    assert line == (
        "HTTP 422 Invalid hyperparameters: 2 fields are out of range "
        "(epochs: must be at least 1; batch_size: must be at most the training rows)"
    )


def test_a_non_json_error_still_gives_a_line() -> None:
    assert describe_problem(httpx.Response(502, text="<html>bad gateway</html>")) == (
        "HTTP 502 Bad Gateway"
    )


def test_predictions_show_error_and_mark_the_outside_values() -> None:
    result = PredictResult(
        version=4,
        predictions=[Prediction(2.0, 4.5, False), Prediction(-10.0, 60.0, True)],
    )
    text = text_of(predictions_table(result))
    assert "version 4" in text
    inside, outside = (line for line in text.splitlines() if "│" in line and "x²" not in line)
    assert "+0.5" in inside and OUTSIDE_MARK not in inside
    assert "-40" in outside and OUTSIDE_MARK in outside
    assert predictions_document(result)["predictions"][1] == {
        "x": -10.0,
        "x_squared": 100.0,
        "y": 60.0,
        "error": -40.0,
        "extrapolated": True,
    }


def test_models_table_shows_broken_versions_with_the_reason() -> None:
    models = [
        {
            "model_name": "square",
            "version": 2,
            "status": "broken",
            "reason": "model.tflite is missing",
            "metadata": None,
        },
        {
            "model_name": "square",
            "version": 1,
            "status": "ok",
            "reason": None,
            "metadata": {"domain": [-5, 5], "metrics": {"mse_in_domain": 0.0043}, "job_id": "j1"},
        },
    ]
    text = text_of(models_table(models))
    assert "broken: model.tflite is missing" in text
    assert "[-5, 5]" in text and "0.0043" in text and "j1" in text


@pytest.mark.parametrize(
    ("gate", "shown"),
    [
        ({"passed": True, "forced": False}, "passed"),
        ({"passed": False, "forced": True}, "failed, forced"),
        (None, "-"),
    ],
)
def test_models_table_shows_each_versions_labels_and_gate(
    gate: dict[str, bool] | None, shown: str
) -> None:
    entry = {
        "model_name": "square",
        "version": 3,
        "status": "ok",
        "metadata": {"domain": [-5, 5], "metrics": {}},
        "labels": ["stable", "canary"] if gate else [],
        "gate": gate,
    }
    table = models_table([entry])
    row = {column.header: next(iter(column.cells)) for column in table.columns}
    assert row["gate"] == shown
    assert row["labels"] == ("stable, canary" if gate else "-")


def test_model_line_is_one_line_with_version_domain_and_metrics() -> None:
    model = predictor_pb2.Model(
        version=3, domain_min=-5, domain_max=5, job_id="j3", metrics={"mse_in_domain": 0.01},
        loaded_versions=[3, 2],
    )  # fmt: skip
    line = model_line(model)
    assert "\n" not in line
    assert line.startswith("serving version 3 domain [-5, 5] job j3")
    assert "loaded [3,2]" in line and "mse_in_domain=0.01" in line


def test_field_errors_already_in_the_detail_are_not_repeated() -> None:
    response = httpx.Response(
        422,
        json={
            "title": "Unprocessable Entity",
            "detail": "epochs: must be at least 1",
            "errors": [{"field": "epochs", "message": "must be at least 1"}],
        },
    )
    assert describe_problem(response) == "HTTP 422 Unprocessable Entity: epochs: must be at least 1"
