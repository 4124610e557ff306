"""The article's configuration, trained for real: the quality bar a default job must reach."""

from __future__ import annotations

from pathlib import Path

import pytest

from squarenet.store import ModelStore
from trainer_service.params import TrainingParams
from trainer_service.training import train_and_publish

ARTICLE_MSE_IN_DOMAIN = 0.0129
"""What plain Keras ``fit`` reaches with the article's settings (the bar to meet)."""


@pytest.mark.slow
def test_default_params_beat_the_articles_in_domain_mse(tmp_path: Path) -> None:
    params = TrainingParams.model_validate({"seed": 0})
    assert params.model_dump(exclude={"seed"}) == TrainingParams.model_validate({}).model_dump(
        exclude={"seed"}
    )
    outcome = train_and_publish(
        params, ModelStore(tmp_path / "store"), job_id="article", artifacts_dir=tmp_path
    )
    metrics = outcome.metrics
    print(
        f"article settings: mse_in_domain={metrics['mse_in_domain']:.6f} "
        f"mse_out_of_domain={metrics['mse_out_of_domain']:.1f} "
        f"train_seconds={metrics['train_seconds']:.2f}"
    )
    assert metrics["mse_in_domain"] <= ARTICLE_MSE_IN_DOMAIN
    assert outcome.version.metadata["training"]["epochs_run"] == 400
    assert outcome.version.metadata["training"]["gradient_steps"] == 400 * 80
