"""The training core's pieces on their own: data, initial weights, grids, failure modes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from trainer_service.params import TrainingParams
from trainer_service.training import EpochReport, TrainingDiverged
from trainer_service.training.data import in_domain_grid, make_data, out_of_domain_grid
from trainer_service.training.fit import fit
from trainer_service.training.model import build_model, initial_weights


def test_importing_the_package_does_not_load_tensorflow() -> None:
    """The web app imports the report types; TensorFlow belongs in the job's process only."""
    code = (
        "import sys, trainer_service.training as t; "
        "assert t.EpochReport and t.TrainingOutcome; "
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "False"]


def test_data_is_x_squared_inside_the_domain_split_like_keras() -> None:
    params = TrainingParams.model_validate(
        {"n_samples": 1_000, "mid_range": 6.0, "validation_split": 0.25, "batch_size": 50}
    )
    data = make_data(params, np.random.default_rng(0))
    assert data.x_train.shape == (750, 1) and data.x_val.shape == (250, 1)
    assert data.x_train.dtype == np.float32
    both = np.concatenate([data.x_train, data.x_val])
    assert both.min() >= -3.0 and both.max() <= 3.0
    np.testing.assert_array_equal(data.y_train, data.x_train**2)
    assert data.has_validation


def test_no_validation_rows_when_the_split_is_zero() -> None:
    params = TrainingParams.model_validate(
        {"n_samples": 100, "validation_split": 0.0, "batch_size": 10}
    )
    data = make_data(params, np.random.default_rng(0))
    assert len(data.x_train) == 100 and not data.has_validation


def test_grids_cover_the_domain_and_the_band_outside_it() -> None:
    inside = in_domain_grid((-5.0, 5.0))
    assert inside[0] == -5.0 and inside[-1] == 5.0
    outside = out_of_domain_grid((-5.0, 5.0))
    magnitude = np.abs(outside)
    assert magnitude.min() > 5.0 and magnitude.max() == 10.0
    assert (outside < 0).sum() == (outside > 0).sum()


@pytest.mark.parametrize("num_neurons", [1, 2, 10, 11, 64])
def test_spread_puts_one_kink_per_unit_evenly_over_the_domain(num_neurons: int) -> None:
    kernel, bias, output_kernel, output_bias = initial_weights(
        "spread", num_neurons, (-5.0, 5.0), np.random.default_rng(1)
    )
    kinks = -bias / kernel[0]
    spacing = 10.0 / (num_neurons + 1)
    expected = -5.0 + spacing * np.arange(1, num_neurons + 1)
    assert np.all(np.abs(np.sort(kinks) - expected) <= spacing / 4 + 1e-5)
    # Each unit faces away from the centre: active over the outer part of the domain.
    assert np.all(np.sign(kernel[0]) == np.where(kinks < 0, -1, 1))
    assert np.all(output_kernel > 0) and np.all(output_bias == 0)


def test_glorot_is_keras_default_initialisation() -> None:
    kernel, bias, output_kernel, output_bias = initial_weights(
        "glorot", 10, (-5.0, 5.0), np.random.default_rng(1)
    )
    assert np.all(np.abs(kernel) <= np.sqrt(6 / 11)) and np.all(
        np.abs(output_kernel) <= np.sqrt(6 / 11)
    )
    assert not bias.any() and not output_bias.any()
    assert (output_kernel < 0).any() and (output_kernel > 0).any()


@pytest.mark.parametrize("scheme", ["spread", "glorot"])
def test_initial_weights_depend_on_the_seed_only(scheme: str) -> None:
    def draw(seed: int) -> list[np.ndarray]:
        return initial_weights(scheme, 10, (-5.0, 5.0), np.random.default_rng(seed))  # type: ignore[arg-type]

    for a, b in zip(draw(3), draw(3), strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(draw(3), draw(4), strict=True))


def test_a_loss_that_overflows_raises_training_diverged() -> None:
    params = TrainingParams.model_validate(
        {"n_samples": 100, "epochs": 3, "batch_size": 10, "seed": 0}
    )
    rng = np.random.default_rng(0)
    model = build_model(params, rng)
    kernel, bias, output_kernel, output_bias = model.get_weights()
    model.set_weights([kernel, bias, np.full_like(output_kernel, 3e38), output_bias])
    reports: list[EpochReport] = []
    with pytest.raises(TrainingDiverged, match="epoch 1"):
        fit(
            model,
            make_data(params, rng),
            params,
            rng,
            on_epoch=reports.append,
            should_stop=lambda: False,
        )
    assert reports == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("n_samples", "batch_size"),
    [(500, 20), (250, 30), (500, 200)],
    ids=["whole-batches", "partial-last-batch", "fewer-val-rows-than-a-batch"],
)
def test_epoch_losses_are_the_mse_of_the_rows(n_samples: int, batch_size: int) -> None:
    params = TrainingParams.model_validate(
        {"n_samples": n_samples, "batch_size": batch_size, "epochs": 2, "mid_range": 4.0, "seed": 1}
    )
    rng = np.random.default_rng(1)
    data = make_data(params, rng)
    model = build_model(params, rng)
    reports: list[EpochReport] = []
    fit(model, data, params, rng, on_epoch=reports.append, should_stop=lambda: False)
    predicted = np.asarray(model(data.x_val), dtype=np.float64)
    expected = float(np.mean((predicted - data.y_val.astype(np.float64)) ** 2))
    assert reports[-1].val_loss == pytest.approx(expected, rel=1e-5)
    assert reports[-1].loss > 0
