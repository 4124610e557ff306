"""TrainingParams: the cross-field rules answer against the field a user should change."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from trainer_service.params import MAX_BATCH_UNITS, TrainingParams


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"batch_size": 80_001}, "batch_size"),
        ({"n_samples": 10, "validation_split": 0.05}, "n_samples"),
        ({"batch_size": 65_536, "num_neurons": 1024, "n_samples": 100_000}, "batch_size"),
        ({"validation_split": 0.0, "early_stopping_patience": 3}, "early_stopping_patience"),
        ({"model_name": "jobs"}, "model_name"),
        ({"model_name": "../etc"}, "model_name"),
    ],
)
def test_cross_field_rules_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        TrainingParams.model_validate(body)
    assert [error["loc"] for error in caught.value.errors()] == [(field,)]


def test_the_article_defaults_and_the_largest_step_are_allowed() -> None:
    params = TrainingParams()
    assert (params.n_samples, params.epochs, params.batch_size) == (100_000, 400, 1_000)
    assert (params.mid_range, params.num_neurons, params.validation_split) == (10.0, 10, 0.2)
    assert params.domain == (-5.0, 5.0)
    assert (params.n_train, params.n_validation) == (80_000, 20_000)
    largest = TrainingParams(batch_size=MAX_BATCH_UNITS // 1024, num_neurons=1024)
    assert largest.batch_size * largest.num_neurons == MAX_BATCH_UNITS
