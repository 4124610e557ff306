"""A sweep's spec in Katib's words, checked before anything runs.

Trials are drawn one at a time by the search algorithm (``search``), so what can be known up
front is checked here: every setting, every space, and the job rules at the corners of the
space (every point of a grid), so a spec that cannot run is refused at once (422 naming the
field).
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import secrets
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Literal, Self, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from squarenet.limits import mse_limit
from squarenet.store import DEFAULT_MODEL_NAME
from trainer_service.params import TrainingParams

MAX_TRIALS = 1_000
MAX_PARALLEL_TRIALS = 64
DEFAULT_SEARCH_TRIALS = 10
MAX_MAGNITUDE = 2**53  # exact in a double; far beyond any hyperparameter's own bound
MAX_SEED = 2**32 - 1
MAX_GOAL = 1e15  # one past it is still a distinct double, so the bound is exact
MAX_CORNERS = 4_096  # job-rule checks of a spec's corners before it is accepted
# the parameters the architecture's floor depends on (``squarenet.limits.mse_limit``)
FLOOR_PARAMETERS = ("num_neurons", "mid_range")

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
MetricName = Literal[
    "mse_in_domain",
    "mse_out_of_domain",
    "loss",
    "val_loss",
    "train_seconds",
    "floor",
    "floor_ratio",
]
Distribution = Literal["uniform", "logUniform", "normal", "logNormal"]
Value = int | float | str
Loc = tuple[str | int, ...]
Rules = dict[str, tuple[str, float, float]]  # setting name -> (kind, lowest, highest)

# the Python modules an algorithm needs beyond Optuna itself
ALGORITHM_MODULES = {
    "bayesianoptimization": ("torch", "scipy"),
    "cmaes": ("cmaes",),
    "sobol": ("scipy",),
}
# Katib's algorithm names, each with its settings (Katib's ``algorithmSettings``)
_SEED: Rules = {"random_state": ("int", 0, MAX_SEED)}
_STARTUP: Rules = {"n_startup_trials": ("int", 0, MAX_TRIALS)}
_TPE: Rules = {**_SEED, **_STARTUP, "n_ei_candidates": ("int", 1, 1000)}
ALGORITHM_SETTINGS: dict[str, Rules] = {
    "grid": _SEED,
    "random": _SEED,
    "tpe": _TPE,
    "multivariate-tpe": _TPE,
    "bayesianoptimization": {**_SEED, **_STARTUP},
    "cmaes": {**_SEED, "sigma": ("float", 1e-12, MAX_MAGNITUDE)},
    "sobol": _SEED,
}
EARLY_STOPPING_SETTINGS: dict[str, Rules] = {
    "medianstop": {
        "min_trials_required": ("int", 1, MAX_TRIALS),
        "start_step": ("int", 0, 10_000),
    },
}
MEDIANSTOP_DEFAULTS = {"min_trials_required": 3, "start_step": 4}

_STRICT = ConfigDict(
    extra="forbid", strict=True, frozen=True, allow_inf_nan=False, populate_by_name=True
)


def missing_modules(algorithm: str) -> list[str]:
    """The modules an algorithm needs that this trainer does not have."""
    return [
        name
        for name in ALGORITHM_MODULES.get(algorithm, ())
        if importlib.util.find_spec(name) is None
    ]


class FeasibleSpace(BaseModel):
    """The values a parameter may take: a ``list``, or ``min``/``max`` with an optional ``step``
    and ``distribution``; ``skipBelowFloor`` skips trials whose floor misses the goal."""

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
    distribution: Distribution | None = Field(
        None,
        description=(
            "How a range is searched: uniform (default), logUniform (min > 0), normal or "
            "logNormal (centred on the range, 3 sigma to each bound, cut at the bounds)."
        ),
    )
    skipBelowFloor: bool = Field(  # noqa: N815 - Katib's style
        False,
        description=(
            "Trials whose architecture floor already misses objective.goal end SKIPPED "
            "without training (num_neurons or mid_range only)."
        ),
    )

    @model_validator(mode="after")
    def _list_or_range(self) -> Self:
        """Exactly one of the two shapes, a range that is not upside down, a fitting scale."""
        ranged = self.min is not None or self.max is not None or self.step is not None
        if self.values is not None and ranged:
            raise field_error("list", "give either list or min/max/step, not both", self.values)
        if self.values is not None:
            if self.distribution is not None:
                raise field_error("distribution", "a list takes no distribution", self.distribution)
            return self
        if self.min is None or self.max is None:
            missing = "min" if self.min is None else "max"
            raise field_error(missing, f"{missing} is required without a list", None)
        if self.min > self.max:
            raise field_error("min", f"min ({self.min}) is above max ({self.max})", self.min)
        if self.distribution in ("logUniform", "logNormal") and self.min <= 0:
            raise field_error("min", f"a {self.distribution} range needs min above 0", self.min)
        if self.distribution not in (None, "uniform") and self.step is not None:
            raise field_error("step", f"a {self.distribution} range takes no step", self.step)
        return self

    @property
    def scale(self) -> Distribution:
        return self.distribution or "uniform"

    @property
    def bounds(self) -> tuple[float, float]:
        return float(self.min or 0), float(self.max or 0)


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
        lo, hi = space.bounds
        if space.step is None and self.parameterType != "int":
            raise field_error(
                ("feasibleSpace", "step"), "a grid over a double range needs a step", None
            )
        step = space.step or 1.0
        span = (hi - lo) / step * (1 + 1e-12) + 1e-9
        if span >= MAX_TRIALS:
            raise field_error(
                ("feasibleSpace", "step"), f"the range has more than {MAX_TRIALS} grid points", step
            )
        points = [lo + index * step for index in range(math.floor(span) + 1)]
        if self.parameterType == "int":
            return [round(point) for point in points]
        return [float(f"{point:.12g}") for point in points]

    def corners(self) -> list[Value]:
        """The values where job rules are checked: a list's values, a range's two ends."""
        space = self.feasibleSpace
        if space.values is not None:
            return list(space.values)
        if self.parameterType == "int":
            return [round(end) for end in space.bounds]
        return list[Value](space.bounds)


class AlgorithmSetting(BaseModel):
    """A setting of the search or early-stopping algorithm (Katib: ``{name, value}``)."""

    model_config = _STRICT

    name: str = Field(min_length=1, max_length=64)
    value: str | int | float = Field(description="A number, or its text as Katib writes it.")


class _Algorithm(BaseModel):
    """An algorithm this trainer knows (``KNOWN``) and its settings, as Katib names them."""

    model_config = _STRICT
    KNOWN: ClassVar[dict[str, Rules]]
    KIND: ClassVar[str]

    algorithmName: str  # noqa: N815 - Katib's name
    algorithmSettings: list[AlgorithmSetting]  # noqa: N815 - Katib's name

    @model_validator(mode="after")
    def _known(self) -> Self:
        """An algorithm this trainer can run, with settings it takes."""
        name, missing = self.algorithmName, missing_modules(self.algorithmName)
        if name in self.KNOWN and not missing:
            self._parsed()
            return self
        choices = ", ".join(known for known in self.KNOWN if not missing_modules(known))
        if missing:
            said = f"{name} needs {' and '.join(missing)}, not installed on this trainer"
            raise field_error("algorithmName", f"{said} (use one of {choices})", name)
        raise field_error("algorithmName", f"unknown {self.KIND} {name!r} (one of {choices})", name)

    def _parsed(self) -> dict[str, float]:
        """The settings as numbers; a ValidationError at ``algorithmSettings.<i>.name|value``."""
        known = self.KNOWN[self.algorithmName]
        parsed: dict[str, float] = {}
        for index, setting in enumerate(self.algorithmSettings):
            name, raw = setting.name, setting.value
            at: Loc = ("algorithmSettings", index)
            if name not in known:
                said = f"{self.algorithmName} has no setting {name!r} (it takes {', '.join(known)})"
                raise field_error((*at, "name"), said, name)
            if name in parsed:
                raise field_error((*at, "name"), f"{name} is set twice", name)
            kind, lowest, highest = known[name]
            try:
                number = float(raw)
            except ValueError:
                number = math.nan
            if not math.isfinite(number) or (kind == "int" and not number.is_integer()):
                wanted = "a whole number" if kind == "int" else "a number"
                raise field_error((*at, "value"), f"{raw!r} is not {wanted}", raw)
            if not lowest <= number <= highest:
                bounds = f"{lowest:g} to {highest:g}"
                raise field_error((*at, "value"), f"{raw!r} is outside {bounds}", raw)
            parsed[name] = number
        return parsed


class AlgorithmSpec(_Algorithm):
    """How trials are chosen: Katib's algorithm names, each an Optuna sampler (``search``)."""

    KNOWN = ALGORITHM_SETTINGS
    KIND = "algorithm"

    algorithmName: str = Field(  # noqa: N815 - Katib's name
        "grid",
        description="grid, random, tpe, multivariate-tpe, bayesianoptimization, cmaes, sobol",
    )
    algorithmSettings: list[AlgorithmSetting] = Field(  # noqa: N815 - Katib's name
        default_factory=list, max_length=8
    )

    @model_validator(mode="before")
    @classmethod
    def _seed_is_random_state(cls, data: Any) -> Any:
        """Records written before Optuna named random's seed ``seed``: read it as random_state."""
        if isinstance(data, dict) and data.get("algorithmName") == "random":
            settings = data.get("algorithmSettings")
            if isinstance(settings, list):
                data = {**data, "algorithmSettings": [
                    {**item, "name": "random_state"}
                    if isinstance(item, dict) and item.get("name") == "seed" else item
                    for item in settings
                ]}  # fmt: skip
        return data

    def settings(self) -> dict[str, float]:
        return self._parsed()

    @property
    def random_state(self) -> int | None:
        """The seed that makes the trial sequence reproducible, if one was given."""
        value = self._parsed().get("random_state")
        return None if value is None else int(value)


class EarlyStoppingSpec(_Algorithm):
    """Katib's early stopping: ``medianstop`` on the per-epoch losses trials report."""

    KNOWN = EARLY_STOPPING_SETTINGS
    KIND = "early stopping"

    algorithmName: str = Field("medianstop", description="medianstop")  # noqa: N815
    algorithmSettings: list[AlgorithmSetting] = Field(  # noqa: N815 - Katib's name
        default_factory=list, max_length=4
    )

    def settings(self) -> dict[str, int]:
        """Every setting, defaults filled in."""
        given = {name: int(value) for name, value in self._parsed().items()}
        return {**MEDIANSTOP_DEFAULTS, **given}


class ObjectiveSpec(BaseModel):
    """The metric that ranks trials, the goal that ends the sweep, what else to show."""

    model_config = _STRICT

    type: Literal["minimize", "maximize"] = "minimize"
    goal: float | None = Field(
        None,
        ge=-MAX_GOAL,
        le=MAX_GOAL,
        description="The sweep ends SUCCEEDED as soon as a trial's objective reaches it.",
    )
    objectiveMetricName: MetricName = "mse_in_domain"  # noqa: N815 - Katib's name
    additionalMetricNames: list[MetricName] = Field(  # noqa: N815 - Katib's name
        default_factory=lambda: ["mse_out_of_domain", "floor", "floor_ratio"],  # type: ignore[arg-type]
        max_length=len(get_args(MetricName)),
    )

    @property
    def metric_names(self) -> list[str]:
        """The objective first, then each additional metric once."""
        names: list[str] = [self.objectiveMetricName]
        names += [name for name in self.additionalMetricNames if name not in names]
        return names

    def reaches(self, value: float) -> bool:
        if self.goal is None:
            return False
        return value <= self.goal if self.type == "minimize" else value >= self.goal


_EXAMPLE = {
    "base": {"epochs": 200, "seed": 1},
    "parameters": [
        {"name": "num_neurons", "parameterType": "int", "feasibleSpace": {"list": [1, 2, 4]}},
        {"name": "mid_range", "parameterType": "double",
         "feasibleSpace": {"min": 2, "max": 102, "step": 50}},
    ],
    "algorithm": {"algorithmName": "grid"},
    "objective": {"type": "minimize", "objectiveMetricName": "mse_in_domain"},
    "parallelTrialCount": 2,
    "maxFailedTrialCount": 3,
}  # fmt: skip


class SweepSpec(BaseModel):
    """The body of ``POST /v1/sweeps``; stored as the sweep's effective spec (counts filled in)."""

    model_config = ConfigDict(
        **_STRICT,
        openapi_extra={  # type: ignore[typeddict-unknown-key]  # read by flask-openapi3
            "examples": {"article": {"summary": "A grid", "value": _EXAMPLE}}
        },
    )

    base: dict[str, Any] = Field(
        default_factory=dict, description="Job hyperparameters every trial shares."
    )
    # every hyperparameter but the model name may vary: a trial always publishes as its sweep
    parameters: list[ParameterSpec] = Field(
        min_length=1, max_length=len(TrainingParams.model_fields) - 1
    )
    algorithm: AlgorithmSpec = Field(default_factory=AlgorithmSpec)
    earlyStopping: EarlyStoppingSpec | None = None  # noqa: N815 - Katib's name
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
            self._check_floor_skip(index, parameter)
            grid = self.algorithm.algorithmName == "grid"
            if grid and parameter.feasibleSpace.scale != "uniform":
                raise field_error(
                    ("parameters", index, "feasibleSpace", "distribution"),
                    "a grid is evenly spaced: its distribution can only be uniform",
                    parameter.feasibleSpace.distribution,
                )
        if "model_name" in self.base:  # the trials' own model replaces it; promotion needs it
            try:
                TrainingParams.model_validate({"model_name": self.base["model_name"]})
            except ValidationError as exc:
                raise prefixed(exc, ("base",)) from None
        return self

    def _check_floor_skip(self, index: int, parameter: ParameterSpec) -> None:
        if not parameter.feasibleSpace.skipBelowFloor:
            return
        where = ("parameters", index, "feasibleSpace", "skipBelowFloor")
        if parameter.name not in FLOOR_PARAMETERS:
            raise field_error(
                where, f"the floor depends on {' and '.join(FLOOR_PARAMETERS)} only", True
            )
        objective = self.objective
        if objective.goal is None:
            raise field_error(where, "skipBelowFloor needs objective.goal", True)
        if objective.objectiveMetricName != "mse_in_domain" or objective.type != "minimize":
            raise field_error(
                where, "skipBelowFloor needs the objective to minimize mse_in_domain", True
            )

    @property
    def skips_below_floor(self) -> bool:
        return any(parameter.feasibleSpace.skipBelowFloor for parameter in self.parameters)

    @property
    def promote_to(self) -> str:
        """The model the best trial is promoted into: ``base.model_name`` (default square)."""
        return str(self.base.get("model_name", DEFAULT_MODEL_NAME))


class SweepPatch(BaseModel):
    """The body of ``PATCH /v1/sweeps/{id}``: more trials, or another parallelism."""

    model_config = _STRICT

    maxTrialCount: int | None = Field(None, ge=1, le=MAX_TRIALS)  # noqa: N815 - Katib's name
    parallelTrialCount: int | None = Field(  # noqa: N815 - Katib's name
        None, ge=1, le=MAX_PARALLEL_TRIALS
    )

    @model_validator(mode="after")
    def _something(self) -> Self:
        """An empty patch is a mistake, not a no-op."""
        if self.maxTrialCount is None and self.parallelTrialCount is None:
            raise field_error(
                "maxTrialCount", "give maxTrialCount or parallelTrialCount (or both)", None
            )
        return self


def plan_sweep(spec: SweepSpec, model_name: str) -> SweepSpec:
    """The effective spec (counts and the random state decided); ValidationError naming the
    field when a trial of it could not run.

    ``model_name`` is the sweep's own model: the job rules are checked with it at every grid
    point, or at the corners of a searched space, so a spec whose trials the job book would
    refuse is refused here.
    """
    algorithm = spec.algorithm
    if algorithm.algorithmName == "grid":
        points = []
        for index, parameter in enumerate(spec.parameters):
            try:
                points.append(parameter.grid())
            except ValidationError as exc:
                raise prefixed(exc, ("parameters", index)) from None
        count = math.prod(len(values) for values in points)
        limit = spec.maxTrialCount or MAX_TRIALS
        if count > limit:
            raise field_error(
                "maxTrialCount",
                f"the grid has {count} trials, more than maxTrialCount ({limit})",
                spec.maxTrialCount,
            )
    else:
        count = spec.maxTrialCount or DEFAULT_SEARCH_TRIALS
        points = [p.corners() for p in spec.parameters]
    _check_points(spec, points, model_name)
    if algorithm.random_state is None:
        drawn = AlgorithmSetting(name="random_state", value=str(secrets.randbelow(MAX_SEED + 1)))
        algorithm = algorithm.model_copy(
            update={"algorithmSettings": [*algorithm.algorithmSettings, drawn]}
        )
    failures = spec.maxFailedTrialCount if spec.maxFailedTrialCount is not None else count
    return spec.model_copy(
        update={"maxTrialCount": count, "algorithm": algorithm, "maxFailedTrialCount": failures}
    )


def _check_points(spec: SweepSpec, points: list[list[Value]], model_name: str) -> None:
    """The job rules at every combination of ``points`` (or each parameter's alone)."""
    names = [str(p.name) for p in spec.parameters]
    if math.prod(len(values) for values in points) <= MAX_CORNERS:
        combos: Any = itertools.product(*points)
    else:
        firsts = [values[0] for values in points]
        combos = (
            tuple(value if j == i else firsts[j] for j in range(len(points)))
            for i, values in enumerate(points)
            for value in values
        )
    for combo in combos:
        assignment: dict[str, Value] = dict(zip(names, combo, strict=True))
        try:
            trial_params(spec, assignment, model_name)
        except ValidationError as exc:
            raise _trial_error(exc, names, assignment) from None


def trial_params(spec: SweepSpec, assignment: dict[str, Value], model_name: str) -> TrainingParams:
    """The job hyperparameters of one trial: base, then the assignment, under the sweep's model."""
    return TrainingParams.model_validate({**spec.base, **assignment, "model_name": model_name})


def trial_floor(spec: SweepSpec, assignment: dict[str, Value]) -> float:
    """The lowest in-domain MSE a trial's architecture can reach (``mse_limit``)."""
    defaults = TrainingParams.model_fields
    merged = {**spec.base, **assignment}
    mid_range = merged.get("mid_range", defaults["mid_range"].default)
    num_neurons = merged.get("num_neurons", defaults["num_neurons"].default)
    return mse_limit(float(mid_range), int(num_neurons))


def with_floor(metrics: dict[str, float] | None, floor: float) -> dict[str, float]:
    """A trial's metrics with ``floor`` and, once it has an in-domain MSE, ``floor_ratio``."""
    found = {**(metrics or {}), "floor": floor}
    mse = found.get("mse_in_domain")
    if mse is not None and floor > 0 and math.isfinite(mse):
        found["floor_ratio"] = mse / floor
    return found


def _trial_error(
    exc: ValidationError, names: list[str], assignment: dict[str, Value]
) -> ValidationError:
    """A trial's job-rule errors: at ``base.<field>`` when the base is at fault for every
    trial, else at ``parameters.<i>.feasibleSpace`` saying which values break the rule."""
    said = ", ".join(f"{name}={value}" for name, value in assignment.items())
    details: list[tuple[Loc, str, object]] = []
    for error in exc.errors(include_url=False):
        field = error["loc"][0] if error["loc"] else "base"
        if field in assignment:
            message = f"a trial with {said} breaks a job rule: {field}: {error['msg']}"
            loc: Loc = ("parameters", names.index(str(field)), "feasibleSpace")
        else:
            message, loc = f"{error['msg']} (in a trial with {said})", ("base", *error["loc"])
        details.append((loc, message, error.get("input")))
    return _errors(details)


# --- errors located at a field --------------------------------------------------------------


def field_error(
    location: str | Sequence[str | int], message: str, value: object
) -> ValidationError:
    """A ValidationError at ``location`` (relative to the model raising it)."""
    loc = (location,) if isinstance(location, str) else tuple(location)
    return _errors([(loc, message, value)])


def prefixed(exc: ValidationError, prefix: Loc) -> ValidationError:
    """``exc`` with every location under ``prefix``."""
    return _errors(
        ((*prefix, *error["loc"]), error["msg"], error.get("input"))
        for error in exc.errors(include_url=False)
    )


def _errors(details: Iterable[tuple[Loc, str, object]]) -> ValidationError:
    """One ValidationError with a ``value_error`` per (location, message, input)."""
    return ValidationError.from_exception_data(
        "SweepSpec",
        [
            InitErrorDetails(type=PydanticCustomError("value_error", message), loc=loc, input=value)
            for loc, message, value in details
        ],
    )
