"""Training hyperparameters: the article's names and defaults, with bounds a server can afford.

The bounds keep one job from exhausting the machine: the largest data set is
``MAX_N_SAMPLES`` float32 rows (a few MiB), the widest network ``MAX_NUM_NEURONS`` units.
Every field is optional in a request; the effective values are recorded on the job.
"""

from __future__ import annotations

import math
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from squarenet.store import DEFAULT_MODEL_NAME, MODEL_NAME_PATTERN, validate_model_name

MAX_N_SAMPLES = 1_000_000
MAX_EPOCHS = 10_000
DEFAULT_TRAIN_SECONDS = 900
MAX_TRAIN_SECONDS = 86_400  # the schema's bound; each trainer caps it lower (--max-train-seconds)
MAX_NUM_NEURONS = 1_024
MAX_MID_RANGE = 1e6
# batch_size × num_neurons float32 activations (and as many gradients) per step: 64 MiB at most
MAX_BATCH_UNITS = 2**24

InitScheme = Literal["spread", "glorot"]


class TrainingParams(BaseModel):
    """What a training job is asked to do (the body of ``POST /v1/jobs``)."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        allow_inf_nan=False,
        use_attribute_docstrings=True,  # a field's docstring is its description in the API
        openapi_extra={  # type: ignore[typeddict-unknown-key]  # read by flask-openapi3
            "required": False,  # an empty body means every default
            "examples": {
                "defaults": {"summary": "The article's settings", "value": {}},
                "small": {
                    "summary": "A quick job",
                    "value": {"n_samples": 2000, "epochs": 50, "batch_size": 100, "seed": 1},
                },
            },
        },
    )

    n_samples: int = Field(100_000, ge=10, le=MAX_N_SAMPLES)
    """Rows drawn from U(-mid_range/2, mid_range/2)."""
    epochs: int = Field(400, ge=1, le=MAX_EPOCHS)
    """Passes over the training rows."""
    batch_size: int = Field(1_000, ge=1, le=MAX_N_SAMPLES)
    """Rows per gradient step; at most the training rows."""
    mid_range: float = Field(10.0, gt=0, le=MAX_MID_RANGE)
    """Width of the training domain [-mid_range/2, +mid_range/2]."""
    num_neurons: int = Field(10, ge=1, le=MAX_NUM_NEURONS)
    """Units in the one hidden ReLU layer."""
    validation_split: float = Field(0.2, ge=0.0, le=0.9)
    """Fraction of rows held out to report val_loss (0 disables it)."""
    learning_rate: float = Field(0.001, gt=0, le=1.0)
    """Adam's step size."""
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    """Makes data, initialisation and training deterministic."""
    init: InitScheme = Field(
        "spread",
        description="'spread' places the ReLU kinks evenly over the domain (fast, accurate); "
        "'glorot' is Keras' default initialisation, as in the article.",
    )
    early_stopping_patience: int | None = Field(None, ge=1, le=MAX_EPOCHS)
    """Stop after this many epochs without val_loss improving."""
    model_name: str = Field(DEFAULT_MODEL_NAME, pattern=MODEL_NAME_PATTERN.pattern)
    """The model (store folder) the new version is published under."""
    max_train_seconds: int = Field(
        DEFAULT_TRAIN_SECONDS,
        ge=1,
        le=MAX_TRAIN_SECONDS,
        description="Time limit from the job's start: past it the job ends FAILED and publishes "
        "nothing. The trainer refuses values above its own cap (--max-train-seconds).",
    )

    @property
    def domain(self) -> tuple[float, float]:
        """The closed training interval the samples are drawn from."""
        return -self.mid_range / 2, self.mid_range / 2

    @property
    def n_validation(self) -> int:
        """Rows held out for validation (Keras' rule: the last ``split`` fraction)."""
        return math.floor(self.n_samples * self.validation_split)

    @property
    def n_train(self) -> int:
        """Rows the network is fitted on."""
        return self.n_samples - self.n_validation

    @field_validator("model_name")
    @classmethod
    def _model_name_is_a_store_folder(cls, name: str) -> str:
        """The pattern alone admits names the store reserves (the jobs folder)."""
        return validate_model_name(name)

    @model_validator(mode="after")
    def _rows_fit_the_split(self) -> Self:
        """Cross-field rules, each reported against the field a user should change."""
        if self.validation_split > 0 and self.n_validation < 1:
            message = "n_samples is too small for validation_split: no validation row"
            raise field_error(self, "n_samples", message)
        if self.batch_size > self.n_train:
            message = (
                f"batch_size must be at most the training rows ({self.n_train} = n_samples less "
                "the validation split)"
            )
            raise field_error(self, "batch_size", message)
        if self.batch_size * self.num_neurons > MAX_BATCH_UNITS:
            message = (
                f"batch_size × num_neurons must be at most {MAX_BATCH_UNITS} "
                "(the hidden layer's activations per step)"
            )
            raise field_error(self, "batch_size", message)
        if self.early_stopping_patience is not None and self.validation_split == 0:
            message = "early_stopping_patience needs validation_split > 0"
            raise field_error(self, "early_stopping_patience", message)
        return self


def field_error(model: BaseModel, field: str, message: str) -> ValidationError:
    """A ValidationError located at ``field`` (a plain ValueError would point at the model)."""
    details = InitErrorDetails(
        type=PydanticCustomError("value_error", message), loc=(field,), input=getattr(model, field)
    )
    return ValidationError.from_exception_data(type(model).__name__, [details])
