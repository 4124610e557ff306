"""Weighted routes, sticky sessions, shadow calls, the live exact error and ejection.

``<model>/traffic.json`` splits the calls that name no version between labels. The poller
turns it into a :class:`RoutePlan` against the loaded versions; the plan rides in the
registry's snapshot, so a call picks its route from the snapshot it already holds and a
new document swaps in with the versions, atomically.

A route's model is the loaded one with its runtime wrapped (:class:`ObservedRuntime`): the
protocols call ``model.runtime.predict`` as for any version and never know about routes,
while the wrapper measures every answer against the truth (y = x² is exact, so each
prediction's error is known when it is made), feeds this replica's ejection window and
hands a share of the calls to the shadow version off the caller's thread.

Ejection is per replica, like a proxy's outlier detection: a weighted route whose live
in-domain MSE over its last calls exceeds the primary route's by a factor, or whose calls
keep failing, gets no more traffic from this replica until the document (or the version a
route names) changes.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from prometheus_client import Counter, Gauge, Histogram

from predictor_service.in_flight import current_call
from predictor_service.registry import ServedModel, Snapshot
from predictor_service.runtime import Values, Vector
from squarenet.rollouts import TOTAL_WEIGHT, Traffic

log = logging.getLogger(__name__)

SESSION_KEY = "x-squarenet-session"
#: Shadow calls waiting for the shadow thread; past this they are dropped (and counted).
SHADOW_BACKLOG = 10_000
#: How long the shadow thread lets calls gather before running them as one batch.
SHADOW_GATHER_SECONDS = 0.005
#: Up to this many values an answer is measured in plain Python, beyond it with NumPy.
_SMALL = 16

_ERROR_BUCKETS = (1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0, 1e4)
ABS_ERROR = Histogram(
    "squarenet_predictor_abs_error",
    "|y - x²| of every routed or shadow prediction, by version, route and whether x was "
    "inside the version's training domain.",
    ["version", "route", "domain"],
    buckets=_ERROR_BUCKETS,
)
ROUTE_CALLS = Counter(
    "squarenet_predictor_route_calls_total",
    "Calls that named no version, by the route (label) and version that answered them.",
    ["route", "version"],
)
ROUTE_EJECTED = Gauge(
    "squarenet_predictor_route_ejected",
    "1 while this replica sends a route no traffic (ejected), 0 otherwise.",
    ["route", "version"],
    multiprocess_mode="livemax",
)
SHADOW_DROPPED = Counter(
    "squarenet_predictor_shadow_dropped_total",
    "Shadow calls left out because the shadow backlog was full.",
)

# --- sessions -------------------------------------------------------------------------------


def session_key() -> str:
    """The ``x-squarenet-session`` of the call being answered ('' when none).

    Read from the call's metadata only when a route is chosen, so calls without a traffic
    document pay nothing for sessions.
    """
    context = current_call.get()
    if context is None:
        return ""
    for name, value in context.invocation_metadata() or ():
        if name == SESSION_KEY:
            return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return ""


# --- measuring answers ------------------------------------------------------------------------


def _observe(histogram: Any, errors: np.ndarray) -> None:
    """Add many observations at once (prometheus-client observes one at a time)."""
    bounds = histogram._upper_bounds  # ends with +Inf
    counts = np.bincount(
        np.searchsorted(np.asarray(bounds), errors, side="left"), minlength=len(bounds)
    )
    histogram._sum.inc(float(errors.sum()))
    for index, count in enumerate(counts):
        if count:
            histogram._buckets[index].inc(int(count))


def measure(
    x: Values, y: Vector, domain: tuple[float, float], histograms: tuple[Any, Any]
) -> tuple[float, int]:
    """Observe |y - x²| into the in/out histograms; the in-domain squared error sum and count."""
    lo, hi = domain
    inside, outside = histograms
    if len(x) <= _SMALL:
        sum_sq, count = 0.0, 0
        for given, predicted in zip(x, y, strict=False):
            value = float(given)
            error = abs(float(predicted) - value * value)
            if lo <= value <= hi:
                inside.observe(error)
                sum_sq += error * error
                count += 1
            else:
                outside.observe(error)
        return sum_sq, count
    xs = np.asarray(x, dtype=np.float64).reshape(-1)
    errors = np.abs(np.asarray(y, dtype=np.float64).reshape(-1) - xs * xs)
    within = (xs >= lo) & (xs <= hi)
    in_errors = errors[within]
    if in_errors.size:
        _observe(inside, in_errors)
    if in_errors.size < errors.size:
        _observe(outside, errors[~within])
    return float(np.square(in_errors).sum()), int(in_errors.size)


@dataclass(frozen=True)
class EjectionPolicy:
    """When a replica stops sending a weighted route traffic (predictor settings ``eject_*``)."""

    window: int = 200
    min_calls: int = 50
    factor: float = 10.0
    failures: int = 5


class ShadowRunner:
    """Runs shadow predictions on one background thread; never blocks or fails a caller.

    A caller only appends its values to a queue. The shadow thread wakes at most every
    ``SHADOW_GATHER_SECONDS``, takes everything queued and runs it as one batch per shadow
    version: one LiteRT call instead of one per caller, so the shadow's Python time (and
    its share of the interpreter lock) stays small next to the callers'.
    """

    def __init__(self) -> None:
        self._queue: deque[tuple[ServedModel, Values]] = deque()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(self, model: ServedModel, x: Values) -> None:
        """Queue ``model`` on ``x`` (a copy), or count it dropped when the backlog is full."""
        if len(self._queue) >= SHADOW_BACKLOG:
            SHADOW_DROPPED.inc()
            return
        self._queue.append((model, x.copy() if isinstance(x, np.ndarray) else tuple(x)))
        if not self._wake.is_set():
            self._wake.set()
        if self._thread is None:
            self._start()

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="shadow", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(SHADOW_GATHER_SECONDS)  # let a batch gather
            self._wake.clear()
            batches: dict[int, tuple[ServedModel, list[Values]]] = {}
            while self._queue:
                model, x = self._queue.popleft()
                batches.setdefault(id(model), (model, []))[1].append(x)
            for model, parts in batches.values():
                self._run(model, np.concatenate([np.asarray(p, dtype=np.float64) for p in parts]))

    @staticmethod
    def _run(model: ServedModel, x: np.ndarray) -> None:
        try:
            y = model.runtime.predict(x)
            labels = (str(model.version), "shadow")
            histograms = (ABS_ERROR.labels(*labels, "in"), ABS_ERROR.labels(*labels, "out"))
            measure(x, y, (model.domain_min, model.domain_max), histograms)
        except Exception:
            log.exception("shadow prediction on version=%d failed", model.version)


_SHADOW = ShadowRunner()


class RouteState:
    """One weighted route of a plan: its label, version, live window and ejection."""

    def __init__(self, label: str, weight: int, model: ServedModel, plan: RoutePlan) -> None:
        self.label = label
        self.weight = weight
        self.plan = plan
        self.ejected = False
        self.reason = ""
        self._lock = threading.Lock()
        self._window: deque[tuple[float, int]] = deque()
        self._sum_sq = 0.0
        self._count = 0
        self._failures = 0
        version = str(model.version)
        self._calls = ROUTE_CALLS.labels(label, version)
        self._inside = ABS_ERROR.labels(version, label, "in")
        self._outside = ABS_ERROR.labels(version, label, "out")
        self.loaded = model  # as the poller loaded it: a new load is a new route
        self.model = replace(model, runtime=ObservedRuntime(model, self))

    @property
    def live_mse(self) -> float | None:
        """In-domain MSE over the window (None before ``min_calls`` in-domain calls)."""
        with self._lock:
            if len(self._window) < self.plan.policy.min_calls or not self._count:
                return None
            return self._sum_sq / self._count

    def answered(self, x: Values, y: Vector, model: ServedModel) -> None:
        """Measure one answer and feed the window; may eject this or another route."""
        self._calls.inc()
        sum_sq, count = measure(
            x, y, (model.domain_min, model.domain_max), (self._inside, self._outside)
        )
        window = self.plan.policy.window
        with self._lock:
            self._failures = 0
            self._window.append((sum_sq, count))
            self._sum_sq += sum_sq
            self._count += count
            if len(self._window) > window:
                old_sum, old_count = self._window.popleft()
                self._sum_sq -= old_sum
                self._count -= old_count
        self.plan.judge(self)

    def failed(self) -> None:
        """Count a failed call; ``failures`` in a row eject the route."""
        with self._lock:
            self._failures += 1
            failing = self._failures >= self.plan.policy.failures
        if failing:
            self.plan.eject(self, f"{self.plan.policy.failures} calls in a row failed")


class ObservedRuntime:
    """A route's runtime: the loaded one, measured against x² on every answer."""

    def __init__(self, model: ServedModel, route: RouteState) -> None:
        self._inner = model.runtime
        self._model = model
        self._route = route
        self.name = model.runtime.name

    def predict(self, x: Values) -> Vector:
        """The loaded runtime's answer; measured, and perhaps shadowed, after it is made."""
        try:
            y = self._inner.predict(x)
        except Exception:
            self._route.failed()
            raise
        try:
            self._route.answered(x, y, self._model)
            plan = self._route.plan
            if plan.shadow is not None and random.randrange(TOTAL_WEIGHT) < plan.shadow_percent:  # noqa: S311 (a traffic share, not a secret)
                _SHADOW.submit(plan.shadow, x)
        except Exception:
            log.exception("measuring a routed answer failed; the answer stands")
        return y


class RoutePlan:
    """The traffic document against the loaded versions: what a call without a version gets."""

    def __init__(
        self,
        traffic: Traffic,
        routes: Iterable[tuple[str, int, ServedModel]],
        shadow: ServedModel | None,
        policy: EjectionPolicy,
        on_eject: Callable[[], None],
    ) -> None:
        self.traffic = traffic
        self.policy = policy
        self.shadow = shadow
        self.shadow_percent = traffic.shadow_percent if shadow is not None else 0
        self.routes = tuple(
            RouteState(label, weight, model, self) for label, weight, model in routes
        )
        self.primary = max(self.routes, key=lambda route: route.weight)
        self._on_eject = on_eject
        self._lock = threading.Lock()
        self._table: tuple[tuple[int, ServedModel], ...] = ()
        self._total = 0
        self._rebuild()
        for route in self.routes:
            ROUTE_EJECTED.labels(route.label, str(route.model.version)).set(0)

    @property
    def versions(self) -> tuple[tuple[str, int, int], ...]:
        """(label, weight, version) of every route: equal tuples mean an equal plan."""
        return tuple((r.label, r.weight, r.model.version) for r in self.routes)

    def _rebuild(self) -> None:
        bound, table = 0, []
        for route in self.routes:
            if route.weight and not route.ejected:
                bound += route.weight
                table.append((bound, route.model))
        self._table, self._total = tuple(table), bound

    def choose(self, default: ServedModel | None) -> ServedModel | None:
        """A route's model by weight (by session key when the call has one)."""
        table, total = self._table, self._total
        if not total:
            return default
        key = session_key()
        point = zlib.crc32(key.encode()) % total if key else random.randrange(total)  # noqa: S311
        for bound, model in table:
            if point < bound:
                return model
        return default  # pragma: no cover (bounds end at total)

    def judge(self, route: RouteState) -> None:
        """Eject ``route`` when its live MSE exceeds the primary's by the policy's factor."""
        if route is self.primary or route.ejected:
            return
        mine, primary = route.live_mse, self.primary.live_mse
        if mine is None or primary is None:
            return
        if mine > self.policy.factor * primary:
            self.eject(
                route,
                f"live in-domain MSE {mine:.4g} is over {self.policy.factor:g} times "
                f"the primary route {self.primary.label}'s {primary:.4g}",
            )

    def eject(self, route: RouteState, reason: str) -> None:
        """Stop sending ``route`` traffic (until the document changes); say so everywhere."""
        with self._lock:
            if route.ejected or route is self.primary:
                return
            route.ejected, route.reason = True, reason
            self._rebuild()
        ROUTE_EJECTED.labels(route.label, str(route.model.version)).set(1)
        log.warning(
            "ejected route=%s version=%d: %s; it gets no traffic until traffic.json changes",
            route.label,
            route.model.version,
            reason,
        )
        self._on_eject()

    def summary(self) -> dict[str, float]:
        """Live figures for GetModel / WatchModel: per route, weight, MSE, ejected."""
        figures: dict[str, float] = {}
        for route in self.routes:
            prefix = f"route.{route.label}"
            figures[f"{prefix}.version"] = float(route.model.version)
            figures[f"{prefix}.weight"] = float(route.weight)
            figures[f"{prefix}.ejected"] = 1.0 if route.ejected else 0.0
            mse = route.live_mse
            if mse is not None:
                figures[f"{prefix}.live_mse_in_domain"] = mse
        return figures


@dataclass
class Planner:
    """Builds route plans for the poller, keeping the same plan while nothing changed."""

    policy: EjectionPolicy = field(default_factory=EjectionPolicy)
    on_eject: Callable[[], None] = lambda: None
    _plan: RoutePlan | None = None

    def plan(
        self,
        traffic: Traffic | None,
        labels: Mapping[str, int],
        loaded: Iterable[ServedModel],
    ) -> RoutePlan | None:
        """The plan for ``traffic`` (None: no document, or no route has a loaded version)."""
        if traffic is None:
            self._plan = None
            return None
        by_version = {model.version: model for model in loaded}
        routes = [
            (route.label, route.weight, by_version[labels[route.label]])
            for route in traffic.routes
            if labels.get(route.label) in by_version
        ]
        if not any(weight for _label, weight, _model in routes):
            self._plan = None
            return None
        shadow_version = labels.get(traffic.shadow_label) if traffic.shadow_label else None
        shadow = by_version.get(shadow_version) if shadow_version is not None else None
        previous = self._plan
        wanted = tuple((label, weight, model.version) for label, weight, model in routes)
        if (
            previous is not None
            and previous.traffic == traffic
            and previous.versions == wanted
            and all(r.loaded is m for r, (_l, _w, m) in zip(previous.routes, routes, strict=True))
            and previous.shadow is shadow
        ):
            return previous
        self._plan = RoutePlan(traffic, routes, shadow, self.policy, self.on_eject)
        log.info(
            "traffic: %s%s",
            ", ".join(
                f"{label}={weight}% (version {model.version})" for label, weight, model in routes
            ),
            f"; shadow {traffic.shadow_label}={traffic.shadow_percent}% (version {shadow.version})"
            if shadow is not None
            else "",
        )
        return self._plan


def routed(snapshot: Snapshot) -> ServedModel | None:
    """The model for a call that names no version: by the plan, else the default."""
    plan: RoutePlan | None = snapshot.traffic
    if plan is None:
        return snapshot.default
    return plan.choose(snapshot.default)


def traffic_summary(snapshot: Snapshot) -> dict[str, float]:
    """The plan's live figures for the Model message ({} without a traffic document)."""
    plan: RoutePlan | None = snapshot.traffic
    return plan.summary() if plan is not None else {}
