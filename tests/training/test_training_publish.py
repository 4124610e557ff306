"""train_and_publish end to end on tiny models: real training, real export, real store."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from squarenet.store import TMP_PREFIX, ModelStore
from trainer_service.params import TrainingParams
from trainer_service.training import (
    EpochReport,
    TrainingCancelled,
    TrainingOutcome,
    train_and_publish,
)

pytestmark = pytest.mark.slow

TINY: dict[str, Any] = {
    "n_samples": 500,
    "epochs": 12,
    "batch_size": 20,
    "mid_range": 4.0,
    "learning_rate": 0.05,
    "seed": 7,
}


@dataclass(frozen=True)
class Run:
    """One finished training run and everything it left behind."""

    store: ModelStore
    outcome: TrainingOutcome
    reports: list[EpochReport]
    artifacts_dir: Path
    params: TrainingParams


def train(root: Path, job_id: str = "job-1", **overrides: Any) -> Run:
    """Train and publish into a fresh store under ``root``, recording every epoch report."""
    params = TrainingParams.model_validate({**TINY, **overrides})
    store = ModelStore(root / "store")
    reports: list[EpochReport] = []
    outcome = train_and_publish(
        params, store, job_id=job_id, artifacts_dir=root / "artifacts", on_epoch=reports.append
    )
    return Run(store, outcome, reports, root / "artifacts", params)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The tiny model, trained once for the tests that only read what it published."""
    return train(tmp_path_factory.mktemp("published"))


def serving_signature(folder: Path) -> Any:
    return tf.saved_model.load(str(folder)).signatures["serving_default"]


def saved_model_predict(folder: Path, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    (output,) = serving_signature(folder)(tf.constant(x.reshape(-1, 1))).values()
    return np.asarray(output.numpy()).reshape(-1)


def litert_predict(tflite: Path, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    interpreter = Interpreter(model_path=str(tflite))
    (source,) = interpreter.get_input_details()
    (sink,) = interpreter.get_output_details()
    interpreter.resize_tensor_input(source["index"], [len(x), 1])
    interpreter.allocate_tensors()
    interpreter.set_tensor(source["index"], x.reshape(-1, 1))
    interpreter.invoke()
    return np.asarray(interpreter.get_tensor(sink["index"])).reshape(-1)


def staging_folders(store: ModelStore, model_name: str = "square") -> list[Path]:
    folder = store.model_dir(model_name)
    return [p for p in folder.iterdir() if p.name.startswith(TMP_PREFIX)] if folder.exists() else []


def test_publishes_a_version_that_verifies(run: Run) -> None:
    version = run.outcome.version
    assert version.version == 1
    assert run.store.verify_version("square", 1).metadata == version.metadata
    assert run.store.latest_version() is not None
    assert staging_folders(run.store) == []
    for name in ("saved_model.pb", "model.tflite", "variables/variables.index"):
        assert (version.path / name).is_file(), name


def test_serving_signature_takes_and_returns_float32_columns(run: Run) -> None:
    signature = serving_signature(run.outcome.version.path)
    (spec,) = signature.structured_input_signature[1].values()
    assert spec.dtype == tf.float32
    assert spec.shape.as_list() == [None, 1]
    (output,) = signature.structured_outputs.values()
    assert output.dtype == tf.float32
    assert output.shape.as_list() == [None, 1]


def test_saved_model_and_litert_predict_square_and_agree(run: Run) -> None:
    x = np.linspace(-2.0, 2.0, 201, dtype=np.float32)
    from_saved_model = saved_model_predict(run.outcome.version.path, x)
    from_litert = litert_predict(run.outcome.version.tflite_path, x)
    assert np.max(np.abs(from_saved_model - x.astype(np.float64) ** 2)) < 0.2
    np.testing.assert_allclose(from_litert, from_saved_model, rtol=1e-5, atol=1e-5)


def test_metadata_records_params_domain_metrics_timings_framework(run: Run) -> None:
    metadata = run.outcome.version.metadata
    assert metadata["job_id"] == "job-1"
    assert metadata["params"] == run.params.model_dump(mode="json")
    assert metadata["domain"] == [-2.0, 2.0]
    assert datetime.fromisoformat(metadata["created_at"]).utcoffset() is not None
    assert metadata["created_at"].endswith("Z")
    assert set(metadata["metrics"]) == {"loss", "val_loss", "mse_in_domain", "mse_out_of_domain"}
    assert all(math.isfinite(value) for value in metadata["metrics"].values())
    timings = metadata["timings"]
    assert set(timings) == {"train_seconds", "train_cpu_seconds", "export_seconds", "phases"}
    assert {"train", "export", "measure", "plots"} <= set(timings["phases"])
    assert all(seconds >= 0 for seconds in timings["phases"].values())
    assert set(metadata["framework"]) == {"tensorflow", "keras", "python"}
    assert metadata["framework"]["tensorflow"] == tf.__version__
    assert metadata["training"]["seed"] == 7
    assert metadata["training"]["epochs_run"] == TINY["epochs"]
    # Every batch is one gradient step: 400 training rows in batches of 20.
    assert metadata["training"]["gradient_steps"] == TINY["epochs"] * 400 // 20


def test_metrics_separate_interpolation_from_extrapolation(run: Run) -> None:
    metrics = run.outcome.metrics
    assert metrics == {
        **run.outcome.version.metadata["metrics"],
        "train_seconds": metrics["train_seconds"],
    }
    assert metrics["train_seconds"] > 0
    assert metrics["mse_in_domain"] < 0.01
    # Outside the domain the network continues in straight lines: far worse than inside.
    assert metrics["mse_out_of_domain"] > 100 * metrics["mse_in_domain"]


def test_on_epoch_reports_every_epoch_once(run: Run) -> None:
    assert [report.epoch for report in run.reports] == list(range(1, run.params.epochs + 1))
    assert {report.epochs for report in run.reports} == {TINY["epochs"]}
    assert all(report.val_loss is not None for report in run.reports)
    assert run.reports[-1].loss < run.reports[0].loss


def test_plots_are_written_as_png(run: Run) -> None:
    for name in ("loss.png", "fit.png"):
        content = (run.artifacts_dir / name).read_bytes()
        assert content.startswith(b"\x89PNG\r\n\x1a\n"), name
        assert len(content) > 10_000, name


def saved_weights(run: Run) -> dict[str, npt.NDArray[np.float32]]:
    """The exported variables by name (the checkpoint files also hold ids that differ per save)."""
    loaded = tf.saved_model.load(str(run.outcome.version.path))
    return {variable.name: variable.numpy() for variable in loaded.variables}


def test_same_seed_gives_the_same_weights_and_metrics(run: Run, tmp_path: Path) -> None:
    again = train(tmp_path / "again")
    weights, weights_again = saved_weights(run), saved_weights(again)
    assert sorted(weights) == sorted(weights_again)
    for name, value in weights.items():
        np.testing.assert_array_equal(weights_again[name], value, err_msg=name)
    files, files_again = (
        run.outcome.version.metadata["files"],
        again.outcome.version.metadata["files"],
    )
    assert files_again["model.tflite"] == files["model.tflite"]
    assert again.outcome.version.metadata["metrics"] == run.outcome.version.metadata["metrics"]
    assert [r.loss for r in again.reports] == [r.loss for r in run.reports]


def test_another_seed_gives_other_weights(run: Run, tmp_path: Path) -> None:
    other = train(tmp_path / "other", seed=8)
    weights, other_weights = saved_weights(run), saved_weights(other)
    assert any(not np.array_equal(other_weights[name], value) for name, value in weights.items())
    assert other.outcome.metrics["loss"] != run.outcome.metrics["loss"]


def test_without_a_seed_the_drawn_seed_is_recorded(tmp_path: Path) -> None:
    first = train(tmp_path / "a", seed=None, epochs=2)
    second = train(tmp_path / "b", seed=None, epochs=2)
    seeds = [r.outcome.version.metadata["training"]["seed"] for r in (first, second)]
    assert seeds[0] != seeds[1]
    replay = train(tmp_path / "c", seed=seeds[0], epochs=2)
    assert replay.outcome.version.metadata["metrics"] == first.outcome.version.metadata["metrics"]


def test_without_validation_there_is_no_val_loss(tmp_path: Path) -> None:
    run = train(tmp_path, validation_split=0.0, epochs=3)
    assert [report.val_loss for report in run.reports] == [None, None, None]
    assert "val_loss" not in run.outcome.metrics
    assert "val_loss" not in run.outcome.version.metadata["metrics"]


def stop_after(epochs: int, reports: list[EpochReport]) -> Callable[[], bool]:
    """A should_stop that asks to stop once ``epochs`` epochs have been reported."""
    return lambda: len(reports) >= epochs


def test_should_stop_cancels_and_publishes_nothing(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    reports: list[EpochReport] = []
    with pytest.raises(TrainingCancelled):
        train_and_publish(
            TrainingParams.model_validate(TINY),
            store,
            job_id="job-cancelled",
            artifacts_dir=tmp_path / "artifacts",
            on_epoch=reports.append,
            should_stop=stop_after(2, reports),
        )
    assert [report.epoch for report in reports] == [1, 2]
    assert store.list_versions() == []
    assert staging_folders(store) == []


def test_early_stopping_keeps_the_best_epoch(tmp_path: Path) -> None:
    run = train(tmp_path, epochs=300, early_stopping_patience=2, learning_rate=0.1)
    training = run.outcome.version.metadata["training"]
    assert training["stopped_early"] is True
    assert training["epochs_run"] == len(run.reports) < 300
    val_losses = [report.val_loss for report in run.reports]
    best = min(range(len(val_losses)), key=lambda i: val_losses[i] or math.inf)
    assert training["best_epoch"] == best + 1
    # The published weights are the best epoch's, not the last one's.
    assert run.outcome.metrics["val_loss"] == pytest.approx(val_losses[best], rel=1e-4)
    assert len(run.reports) - training["best_epoch"] == 2


def test_another_model_name_publishes_under_its_folder(tmp_path: Path) -> None:
    run = train(tmp_path, model_name="square-wide", num_neurons=32, epochs=2)
    assert run.outcome.version.model_name == "square-wide"
    assert run.store.list_versions("square-wide") == [1]
    assert run.store.list_versions("square") == []


def test_a_partial_last_batch_is_a_gradient_step_too(tmp_path: Path) -> None:
    # 200 training rows in batches of 30: six full batches and one of 20, as Keras fit does.
    run = train(tmp_path, n_samples=250, batch_size=30, epochs=2)
    assert run.outcome.version.metadata["training"]["gradient_steps"] == 2 * 7


def test_a_cancel_during_export_publishes_nothing(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    params = TrainingParams.model_validate({**TINY, "epochs": 2})
    reports: list[EpochReport] = []
    calls: list[int] = []

    def stop_once_trained() -> bool:
        calls.append(len(reports))
        return len(reports) == params.epochs  # checked again after training, before publishing

    with pytest.raises(TrainingCancelled):
        train_and_publish(
            params,
            store,
            job_id="job-late-cancel",
            artifacts_dir=tmp_path / "artifacts",
            on_epoch=reports.append,
            should_stop=stop_once_trained,
        )
    assert len(reports) == 2 and calls[-1] == 2
    assert store.list_versions() == []
    assert staging_folders(store) == []
