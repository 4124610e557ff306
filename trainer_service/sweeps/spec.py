"""A sweep's spec in Katib's words, and the trials it stands for.

The body of ``POST /v1/sweeps`` names what a Katib user knows: ``parameters`` with
``parameterType`` and ``feasibleSpace``, ``algorithm.algorithmName``, ``objective``,
``maxTrialCount``, ``parallelTrialCount``, ``maxFailedTrialCount``; ``base`` holds the job
hyperparameters every trial shares. Every trial is planned when the sweep is created
(``plan_trials``), so a spec that cannot run is refused at once (422 naming the field) and a
restarted controller finds the same trials again: nothing about a trial is drawn later.
"""

from __future__ import annotations

import itertools
import math
import secrets
from collections.abc import Sequence
from typing import Any, Literal, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from squarenet.store import DEFAULT_MODEL_NAME
from trainer_service.params import TrainingParams

MAX_TRIALS = 1_000
MAX_PARALLEL_TRIALS = 64
DEFAULT_RANDOM_TRIALS = 10
MAX_MAGNITUDE = 2**53  # exact in a double; far beyond any hyperparameter's own bound
# every hyperparameter but the model name may vary: a trial always publishes as its sweep
VARIABLE_NAMES = tuple(name for name in TrainingParams.model_fields if name != "model_name")
METRIC_NAMES = ("mse_in_domain", "mse_out_of_domain", "loss", "val_loss", "train_seconds")

ParameterName = Literal[
    "n_samples",
    "epochs",
    "batch_size",
    "mid_range",
    "num_neurons",
    "validation_split",
    "learning_rate",
    "seed",
    "init",
    "early_stopping_patience",
]
MetricName = Literal["mse_in_domain", "mse_out_of_domain", "loss", "val_loss", "train_seconds"]
Value = int | float | str

_STRICT = ConfigDict(
    extra="forbid", strict=True, frozen=True, allow_inf_nan=False, populate_by_name=True
)


class FeasibleSpace(BaseModel):
    """The values a parameter may take: a ``list``, or ``min``/``max`` with an optional ``step``."""

    model_config = _STRICT

    values: list[Value] | None = Field(
        None, alias="list", min_length=1, max_length=MAX_TRIALS, description="Every value."
    )
    min: float | None = Field(
        None, ge=-MAX_MAGNITUDE, le=MAX_MAGNITUDE, description="Lowest value (with max)."
    )
    max: float | None = Field(
        None, ge=-MAX_MAGNITUDE, le=MAX_MAGNITUDE, description="Highest value (with min)."
    )
    step: float | None = Field(
        None, gt=0, le=MAX_MAGNITUDE, description="Grid spacing from min up to max."
    )

    @model_validator(mode="after")
    def _list_or_range(self) -> Self:
        """Exactly one of the two shapes, and a range that is not upside down."""
        ranged = self.min is not None or self.max is not None or self.step is not None
        if self.values is not None and ranged:
            raise field_error("list", "give either list or min/max/step, not both", self.values)
        if self.values is None:
            if self.min is None or self.max is None:
                missing = "min" if self.min is None else "max"
                raise field_error(missing, f"{missing} is required without a list", None)
            if self.min > self.max:
                raise field_error("min", f"min ({self.min}) is above max ({self.max})", self.min)
        return self


class ParameterSpec(BaseModel):
    """One varied hyperparameter (Katib's ``ParameterSpec``)."""

    model_config = _STRICT

    name: ParameterName = Field(description="A job hyperparameter (any but model_name).")
    parameterType: Literal["int", "double", "discrete", "categorical"]  # noqa: N815 - Katib's name
    feasibleSpace: FeasibleSpace  # noqa: N815 - Katib's name

    @model_validator(mode="after")
    def _space_fits_type(self) -> Self:
        """int/double take a list or a range; discrete and categorical a list of their kind."""
        space = self.feasibleSpace
        kind = self.parameterType
        if kind in ("discrete", "categorical") and space.values is None:
            raise field_error(("feasibleSpace", "list"), f"a {kind} parameter needs a list", None)
        if space.values is None:
            if kind == "int" and not all(
                value is None or float(value).is_integer()
                for value in (space.min, space.max, space.step)
            ):
                raise field_error(("feasibleSpace", "step"), "an int range takes whole numbers", 0)
            return self
        for value in space.values:
            wrong = (
                (kind == "categorical" and not isinstance(value, str))
                or (kind != "categorical" and isinstance(value, str))
                or (kind == "int" and not isinstance(value, int))
            )
            if wrong:
                raise field_error(
                    ("feasibleSpace", "list"),
                    f"{value!r} is not a value of a {kind} parameter",
                    value,
                )
        return self

    def grid(self) -> list[Value]:
        """Every value of a grid over this parameter; a double range needs a step."""
        space = self.feasibleSpace
        if space.values is not None:
            return list(space.values)
        lo, hi = float(space.min or 0), float(space.max or 0)
        step = space.step
        if step is None:
            if self.parameterType != "int":
                raise field_error(
                    ("feasibleSpace", "step"), "a grid over a double range needs a step", None
                )
            step = 1.0
        span = (hi - lo) / step * (1 + 1e-12) + 1e-9
        count = math.floor(span) + 1 if span < MAX_TRIALS else MAX_TRIALS + 1
        if count > MAX_TRIALS:
            raise field_error(
                ("feasibleSpace", "step"),
                f"the range has more than {MAX_TRIALS} grid points",
                step,
            )
        points = [lo + index * step for index in range(count)]
        if self.parameterType == "int":
            return [round(point) for point in points]
        return [float(f"{point:.12g}") for point in points]

    def draw(self, rng: np.random.Generator) -> Value:
        """One random value from the feasible space (ranges: uniform; with a step, on the grid)."""
        space = self.feasibleSpace
        if space.values is not None or space.step is not None:
            values = self.grid()
            return values[int(rng.integers(len(values)))]
        lo, hi = float(space.min or 0), float(space.max or 0)
        if self.parameterType == "int":
            return int(rng.integers(round(lo), round(hi) + 1))
        return float(f"{rng.uniform(lo, hi):.12g}")


class AlgorithmSetting(BaseModel):
    """A setting of the search algorithm (Katib: ``{name, value}``); random takes a seed."""

    model_config = _STRICT

    name: Literal["seed"]
    value: int = Field(ge=0, le=2**32 - 1)


class AlgorithmSpec(BaseModel):
    """How trials are chosen: every grid point, or ``maxTrialCount`` random draws."""

    model_config = _STRICT

    algorithmName: Literal["grid", "random"] = "grid"  # noqa: N815 - Katib's name
    algorithmSettings: list[AlgorithmSetting] = Field(  # noqa: N815 - Katib's name
        default_factory=list, max_length=1
    )

    @property
    def seed(self) -> int | None:
        """The random algorithm's seed, if one was given."""
        return self.algorithmSettings[0].value if self.algorithmSettings else None


class ObjectiveSpec(BaseModel):
    """The metric that ranks trials, and what else to show beside it."""

    model_config = _STRICT

    type: Literal["minimize", "maximize"] = "minimize"
    objectiveMetricName: MetricName = "mse_in_domain"  # noqa: N815 - Katib's name
    additionalMetricNames: list[MetricName] = Field(  # noqa: N815 - Katib's name
        default_factory=lambda: ["mse_out_of_domain"],  # type: ignore[arg-type]
        max_length=len(METRIC_NAMES),
    )

    @property
    def metric_names(self) -> list[str]:
        """The objective first, then each additional metric once."""
        names: list[str] = [self.objectiveMetricName]
        names += [name for name in self.additionalMetricNames if name not in names]
        return names

    def better(self, value: float, than: float) -> bool:
        """True when ``value`` beats ``than`` in this objective's direction."""
        return value < than if self.type == "minimize" else value > than


class SweepSpec(BaseModel):
    """The body of ``POST /v1/sweeps``; stored as the sweep's effective spec (counts filled in)."""

    model_config = _STRICT

    base: dict[str, Any] = Field(
        default_factory=dict, description="Job hyperparameters every trial shares."
    )
    parameters: list[ParameterSpec] = Field(min_length=1, max_length=len(VARIABLE_NAMES))
    algorithm: AlgorithmSpec = Field(default_factory=AlgorithmSpec)
    objective: ObjectiveSpec = Field(default_factory=ObjectiveSpec)
    maxTrialCount: int | None = Field(None, ge=1, le=MAX_TRIALS)  # noqa: N815 - Katib's name
    parallelTrialCount: int = Field(1, ge=1, le=MAX_PARALLEL_TRIALS)  # noqa: N815 - Katib's name
    maxFailedTrialCount: int | None = Field(None, ge=0, le=MAX_TRIALS)  # noqa: N815 - Katib's name

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        """Rules joining fields: names once each, the base a valid job, settings that fit."""
        seen: set[str] = set()
        for index, parameter in enumerate(self.parameters):
            if parameter.name in seen:
                raise field_error(
                    ("parameters", index, "name"),
                    f"{parameter.name} is varied twice",
                    parameter.name,
                )
            seen.add(parameter.name)
        if "model_name" in self.base:  # the trials' own model replaces it; promotion needs it
            name = self.base["model_name"]
            try:
                TrainingParams.model_validate({"model_name": name})
            except ValidationError as exc:
                raise prefixed(exc, ("base",)) from None
        if self.algorithm.algorithmName == "grid" and self.algorithm.algorithmSettings:
            raise field_error(
                ("algorithm", "algorithmSettings"), "the grid algorithm takes no settings", None
            )
        return self

    @property
    def promote_to(self) -> str:
        """The model the best trial is promoted into: ``base.model_name`` (default square)."""
        name = self.base.get("model_name", DEFAULT_MODEL_NAME)
        return str(name)


class PlannedSpec(BaseModel):
    """The spec with every default decided: what the sweep record keeps."""

    spec: SweepSpec
    assignments: list[dict[str, Value]]


def plan_trials(spec: SweepSpec, model_name: str) -> PlannedSpec:
    """The effective spec and every trial's assignments; raise ValidationError naming the field.

    ``model_name`` is the sweep's own model: each trial's job rules are checked with it, so a
    trial the job book would refuse is refused here, with its number.
    """
    if spec.algorithm.algorithmName == "grid":
        grids = [
            _located(("parameters", i), parameter.grid)
            for i, parameter in enumerate(spec.parameters)
        ]
        size = math.prod(len(values) for values in grids)
        limit = spec.maxTrialCount if spec.maxTrialCount is not None else MAX_TRIALS
        if size > limit:
            raise field_error(
                "maxTrialCount",
                f"the grid has {size} trials, more than maxTrialCount ({limit})",
                spec.maxTrialCount,
            )
        names: list[str] = [parameter.name for parameter in spec.parameters]
        assignments: list[dict[str, Value]] = [
            dict(zip(names, point, strict=True)) for point in itertools.product(*grids)
        ]
        effective = spec.model_copy(update={"maxTrialCount": size})
    else:
        seed = spec.algorithm.seed if spec.algorithm.seed is not None else secrets.randbelow(2**32)
        count = spec.maxTrialCount or DEFAULT_RANDOM_TRIALS
        rng = np.random.default_rng(seed)
        assignments = [
            {str(parameter.name): parameter.draw(rng) for parameter in spec.parameters}
            for _ in range(count)
        ]
        algorithm = spec.algorithm.model_copy(
            update={"algorithmSettings": [AlgorithmSetting(name="seed", value=seed)]}
        )
        effective = spec.model_copy(update={"maxTrialCount": count, "algorithm": algorithm})
    for number, assignment in enumerate(assignments):
        try:
            trial_params(effective, assignment, model_name)
        except ValidationError as exc:
            raise _trial_error(exc, number, assignment) from None
    if effective.maxFailedTrialCount is None:
        effective = effective.model_copy(update={"maxFailedTrialCount": effective.maxTrialCount})
    return PlannedSpec(spec=effective, assignments=assignments)


def trial_params(spec: SweepSpec, assignment: dict[str, Value], model_name: str) -> TrainingParams:
    """The job hyperparameters of one trial: base, then the assignment, under the sweep's model."""
    return TrainingParams.model_validate({**spec.base, **assignment, "model_name": model_name})


def _trial_error(
    exc: ValidationError, number: int, assignment: dict[str, Value]
) -> ValidationError:
    """A trial's job-rule errors: at ``base.<field>`` when the base is at fault for every
    trial, else at ``trials.<n>.<field>`` saying which trial and what it assigns."""
    said = ", ".join(f"{name}={value}" for name, value in assignment.items())
    details: list[InitErrorDetails] = []
    for error in exc.errors(include_url=False):
        field = error["loc"][0] if error["loc"] else "base"
        if field in assignment:
            loc: tuple[str | int, ...] = ("trials", number, *error["loc"])
            message = f"trial {number} ({said}): {error['msg']}"
        else:
            loc = ("base", *error["loc"])
            message = f"{error['msg']} (in trial {number}: {said})"
        details.append(
            InitErrorDetails(
                type=PydanticCustomError("value_error", message),
                loc=loc,
                input=error.get("input"),
            )
        )
    return ValidationError.from_exception_data("SweepSpec", details)


# --- errors located at a field --------------------------------------------------------------


def field_error(
    location: str | Sequence[str | int], message: str, value: object
) -> ValidationError:
    """A ValidationError at ``location`` (relative to the model raising it)."""
    loc = (location,) if isinstance(location, str) else tuple(location)
    return ValidationError.from_exception_data(
        "SweepSpec",
        [InitErrorDetails(type=PydanticCustomError("value_error", message), loc=loc, input=value)],
    )


def prefixed(
    exc: ValidationError, prefix: tuple[str | int, ...], said: str = ""
) -> ValidationError:
    """``exc`` with every location under ``prefix`` and ``said`` before every message."""
    details: list[InitErrorDetails] = []
    for error in exc.errors(include_url=False):
        message = said + error["msg"]
        details.append(
            InitErrorDetails(
                type=PydanticCustomError("value_error", message),
                loc=(*prefix, *error["loc"]),
                input=error.get("input"),
            )
        )
    return ValidationError.from_exception_data("SweepSpec", details)


def _located(prefix: tuple[str | int, ...], build: Any) -> list[Value]:
    try:
        values: list[Value] = build()
    except ValidationError as exc:
        raise prefixed(exc, prefix) from None
    return values
