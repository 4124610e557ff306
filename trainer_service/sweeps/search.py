"""The search and the early stopping of a sweep: Optuna's samplers and pruner, ask-and-tell.

The controller keeps no study: at each pass it rebuilds one in memory from the sweep's trial
records and asks it for the next trial (``ask``), or asks the median rule
whether a running trial should stop (``stop_early``). What a sampler keeps between asks (a
grid point's id, CMA-ES' state, the Sobol counter) lives in its trials' and its study's
system attributes, which the record keeps (``Trial.system_attrs``, ``study_attrs``), so a
rebuilt study is the one the sampler left. Nothing is written on the shared volume but the
record (an Optuna database on NFS is a known failure).

A sampler is made afresh for each ask, seeded from ``random_state`` and the trial's number
(grid, CMA-ES and Sobol keep their own state, so they take ``random_state`` itself): the
same random state and the same finished trials give the same next trial.

Katib's ``normal`` and ``logNormal`` are searched through their quantile: Optuna sees a
uniform number u in [0, 1] and the trial gets the value whose cumulative probability, in a
normal centred on the range with 3 sigma to each end and cut at the ends, is u.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.pruners import MedianPruner
from optuna.samplers import BaseSampler
from optuna.storages import InMemoryStorage
from optuna.trial import FrozenTrial, TrialState, create_trial

from trainer_service.lifecycle import TrialState as Ours  # Optuna's TrialState is another
from trainer_service.sweeps.spec import DEFAULT_SEARCH_TRIALS, ParameterSpec, SweepSpec, Value

if TYPE_CHECKING:
    from trainer_service.sweeps.records import SweepRecord, Trial

optuna.logging.set_verbosity(optuna.logging.WARNING)
Curve = dict[int, float]  # epoch -> training loss
_SIGMAS = 3.0  # a normal range spans ±3 sigma
_STANDARD = NormalDist()
_LOW_TAIL = _STANDARD.cdf(-_SIGMAS)
_MASS = _STANDARD.cdf(_SIGMAS) - _LOW_TAIL


@dataclass(frozen=True)
class Asked:
    """A new trial as the sampler drew it."""

    assignments: dict[str, Value]
    system_attrs: dict[str, Any]
    study_attrs: dict[str, Any]


# --- spaces ---------------------------------------------------------------------------------


def _quantiled(parameter: ParameterSpec) -> bool:
    return parameter.feasibleSpace.scale in ("normal", "logNormal")


def distribution(parameter: ParameterSpec) -> BaseDistribution:
    """The Optuna distribution a parameter is searched in."""
    space = parameter.feasibleSpace
    if space.values is not None:
        return CategoricalDistribution(list(space.values))
    if _quantiled(parameter):
        return FloatDistribution(0.0, 1.0)
    low, high = space.bounds
    log = space.scale == "logUniform"
    if parameter.parameterType == "int":
        step = 1 if space.step is None else round(space.step)
        return IntDistribution(round(low), round(high), log=log, step=step)
    return FloatDistribution(low, high, log=log, step=space.step)


def _normal(parameter: ParameterSpec) -> tuple[float, float, float, float, bool]:
    """A normal range's ends, centre and sigma (of the logarithm for logNormal)."""
    log = parameter.feasibleSpace.scale == "logNormal"
    low, high = parameter.feasibleSpace.bounds
    if log:
        low, high = math.log(low), math.log(high)
    return low, high, (low + high) / 2, (high - low) / (2 * _SIGMAS), log


def to_value(parameter: ParameterSpec, raw: Any) -> Value:
    """The trial's value of a parameter from the number Optuna drew."""
    if not _quantiled(parameter):
        return raw  # type: ignore[no-any-return]
    low, high, centre, sigma, log = _normal(parameter)
    mass = min(max(_LOW_TAIL + float(raw) * _MASS, 1e-12), 1 - 1e-12)
    point = centre + sigma * _STANDARD.inv_cdf(mass) if sigma > 0 else centre
    point = min(max(point, low), high)
    lowest, highest = parameter.feasibleSpace.bounds
    value = min(max(math.exp(point) if log else point, lowest), highest)
    return round(value) if parameter.parameterType == "int" else float(f"{value:.12g}")


def to_raw(parameter: ParameterSpec, value: Value) -> Any:
    """The number Optuna drew for a trial's value (the inverse of ``to_value``)."""
    if not _quantiled(parameter):
        return value
    _, _, centre, sigma, log = _normal(parameter)
    if sigma <= 0:
        return 0.5
    point = math.log(float(value)) if log else float(value)
    quantile = (_STANDARD.cdf((point - centre) / sigma) - _LOW_TAIL) / _MASS
    return min(max(quantile, 0.0), 1.0)


# --- samplers -------------------------------------------------------------------------------


def sampler_for(spec: SweepSpec, number: int) -> BaseSampler:
    """The Optuna sampler of ``algorithmName``, for asking trial ``number``."""
    algorithm = spec.algorithm
    settings = algorithm.settings()
    state = algorithm.random_state or 0
    seed = int(np.random.SeedSequence([state, number]).generate_state(1)[0])  # one per ask
    startup = int(settings.get("n_startup_trials", DEFAULT_SEARCH_TRIALS))
    name = algorithm.algorithmName
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "grid":
            space: dict[str, Any] = {str(p.name): p.grid() for p in spec.parameters}
            return optuna.samplers.GridSampler(space, seed=state)  # its shuffle: one per sweep
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if name in ("tpe", "multivariate-tpe"):
            return optuna.samplers.TPESampler(
                seed=seed,
                n_startup_trials=startup,
                n_ei_candidates=int(settings.get("n_ei_candidates", 24)),
                multivariate=name == "multivariate-tpe",
                constant_liar=True,  # trials in flight count, so parallel asks differ
            )
        if name == "cmaes":
            sigma = settings.get("sigma")
            return optuna.samplers.CmaEsSampler(seed=state, sigma0=sigma, n_startup_trials=0)
        if name == "sobol":
            return optuna.samplers.QMCSampler(qmc_type="sobol", seed=state, scramble=True)
        if name == "bayesianoptimization":
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
    raise ValueError(f"no sampler for {name}")  # the spec refuses unknown names first


# --- the study, rebuilt ---------------------------------------------------------------------


def _frozen(
    record: SweepRecord, trial: Trial, dists: Mapping[str, BaseDistribution], curve: Curve
) -> FrozenTrial:
    """A trial record as Optuna's ``FrozenTrial``."""
    params = {str(p.name): to_raw(p, trial.assignments[p.name]) for p in record.spec.parameters}
    objective = (trial.metrics or {}).get(record.spec.objective.objectiveMetricName)
    state, value = TrialState.FAIL, None
    if trial.state is Ours.SUCCEEDED and objective is not None and math.isfinite(objective):
        state, value = TrialState.COMPLETE, float(objective)
    elif trial.state in (Ours.EARLY_STOPPED, Ours.SKIPPED):
        state = TrialState.PRUNED  # worse than any complete trial, as Optuna ranks them
    elif not trial.state.finished:
        state = TrialState.RUNNING
    return create_trial(
        state=state,
        value=value,
        params=params,
        distributions=dict(dists),
        system_attrs=dict(trial.system_attrs),
        intermediate_values=curve if state is not TrialState.RUNNING else {},
    )


def ask(record: SweepRecord, curves: Mapping[int, Curve] | None = None) -> Asked:
    """The next trial's assignments, and what the sampler keeps of it, from an in-memory
    study holding every trial of the record, in order."""
    spec = record.spec
    sampler = sampler_for(spec, len(record.trials))
    storage = InMemoryStorage()
    study = optuna.create_study(storage=storage, sampler=sampler, direction=spec.objective.type)
    study_id = storage.get_study_id_from_name(study.study_name)
    for key, value in record.study_attrs.items():
        storage.set_study_system_attr(study_id, key, value)
    dists = {str(p.name): distribution(p) for p in spec.parameters}
    for trial in record.trials:
        study.add_trial(_frozen(record, trial, dists, (curves or {}).get(trial.number, {})))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. CMA-ES on a categorical: independent sampling
        asked = study.ask(fixed_distributions=dists)
    frozen = study.get_trials(deepcopy=False)[asked.number]
    return Asked(
        assignments={p.name: to_value(p, frozen.params[p.name]) for p in spec.parameters},
        system_attrs=_plain(frozen.system_attrs),
        study_attrs=_plain(storage.get_study_system_attrs(study_id)),
    )


def _plain(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes as JSON keeps them (tuples as lists), so a rebuilt study sees the same."""
    plain: dict[str, Any] = json.loads(json.dumps(dict(attrs)))
    return plain


# --- early stopping -------------------------------------------------------------------------


def stop_early(record: SweepRecord, curve: Curve, finished: Mapping[int, Curve]) -> str | None:
    """Why a running trial with losses ``curve`` should stop now (None: let it run).

    Katib's ``medianstop``: once ``min_trials_required`` trials have succeeded, a trial past
    ``start_step`` epochs whose best loss so far is worse than the median of theirs at the same
    epoch stops. ``finished`` holds the loss curves of the succeeded trials.
    """
    early = record.spec.earlyStopping
    if early is None or not curve:
        return None
    settings = early.settings()
    pruner = MedianPruner(
        n_startup_trials=settings["min_trials_required"],
        n_warmup_steps=settings["start_step"],
        n_min_trials=settings["min_trials_required"],
    )
    study = optuna.create_study(storage=InMemoryStorage(), direction="minimize")
    for losses in finished.values():
        if losses:
            study.add_trial(
                create_trial(
                    state=TrialState.COMPLETE,
                    value=losses[max(losses)],
                    intermediate_values=dict(losses),
                )
            )
    running = create_trial(state=TrialState.RUNNING, intermediate_values=dict(curve))
    if not pruner.prune(study, running):
        return None
    epoch = max(curve)
    at_step = sorted(losses[epoch] for losses in finished.values() if epoch in losses)
    median = float(np.median(at_step)) if at_step else math.nan
    best = min(curve.values())
    return (
        f"medianstop at epoch {epoch}: best loss {best:.6g} is worse than the median "
        f"{median:.6g} of {len(at_step)} succeeded trials"
    )
