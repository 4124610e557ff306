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

Calls no route took are measured too: the loader wraps every version's runtime
(:class:`MeasuredRuntime`), whose answers are queued and measured in batches on a
background thread (:class:`Backlog`, which also runs the shadow calls), so the live error
of every version costs the caller a queue append.

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
from predictor_service.runtime import Runtime, Values, Vector
from squarenet.rollouts import TOTAL_WEIGHT, Traffic

log = logging.getLogger(__name__)

SESSION_KEY = "x-squarenet-session"
#: Answers waiting for the background thread; past this they are dropped (and counted).
BACKLOG_LIMIT = 10_000
#: How long the background thread lets answers gather before working on them as one batch.
GATHER_SECONDS = 0.05
#: Up to this many values an answer is measured in plain Python, beyond it with NumPy.
_SMALL = 16

_ERROR_BUCKETS = (1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0, 1e4)
ABS_ERROR = Histogram(
    "squarenet_predictor_abs_error",
    "|y - x²| of every prediction, by version, route (a traffic label, 'direct' for calls "
    "no traffic document routed, 'shadow') and whether x was inside the version's domain.",
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
    "Shadow calls left out because the backlog of work after answers was full.",
)
UNMEASURED = Counter(
    "squarenet_predictor_unmeasured_total",
    "Answers not measured against x² because the backlog of work after answers was full.",
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
    """Add many observations at once (prometheus-client observes one at a time).

    A bucket's count is how many errors are at most its bound less how many are at most
    the bound before: one vectorised comparison per bound, several times faster than a
    search per value for large answers (a NaN falls in +Inf, as ``observe`` puts it).
    """
    bounds = histogram._upper_bounds  # ends with +Inf
    below = 0
    for index, bound in enumerate(bounds):
        last = index == len(bounds) - 1
        at_most = errors.size if last else int(np.count_nonzero(errors <= bound))
        if at_most > below:
            histogram._buckets[index].inc(at_most - below)
            below = at_most
    histogram._sum.inc(float(errors.sum()))


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
    errors = np.asarray(y, dtype=np.float64).reshape(-1) - xs * xs  # a new array
    np.abs(errors, out=errors)
    if lo <= xs.min() and xs.max() <= hi:  # the usual answer: no x outside the domain
        in_errors = errors
    else:
        within = (xs >= lo) & (xs <= hi)
        in_errors = errors[within]
        if in_errors.size < errors.size:
            _observe(outside, errors[~within])
    if in_errors.size:
        _observe(inside, in_errors)
    return float(np.einsum("i,i->", in_errors, in_errors)), int(in_errors.size)


class LiveWindow:
    """In-domain squared errors over a sliding window, and their MSE; thread-safe.

    The window holds parts, each one answer's or one batch's (sum of squared errors, count
    of in-domain values). Counted in answers (a route's window, which ejection judges) it
    keeps the last ``size`` parts; counted in values (a version's live MSE, measured in
    batches) it keeps the newest parts that still cover ``size`` in-domain values.
    """

    def __init__(self, size: int, *, in_values: bool = False) -> None:
        self._size = size
        self._in_values = in_values
        self._lock = threading.Lock()
        self._parts: deque[tuple[float, int]] = deque()
        self._sum_sq = 0.0
        self._count = 0

    def add(self, sum_sq: float, count: int) -> None:
        """One part's in-domain squared-error sum and how many values it covered."""
        with self._lock:
            parts = self._parts
            parts.append((sum_sq, count))
            self._sum_sq += sum_sq
            self._count += count
            while len(parts) > 1 and (
                self._count - parts[0][1] >= self._size
                if self._in_values
                else len(parts) > self._size
            ):
                old_sum, old_count = parts.popleft()
                self._sum_sq -= old_sum
                self._count -= old_count

    def mse(self, min_parts: int = 1) -> float | None:
        """In-domain MSE over the window (None before ``min_parts`` parts or any value)."""
        with self._lock:
            if len(self._parts) < min_parts or not self._count:
                return None
            return max(0.0, self._sum_sq) / self._count

    @property
    def parts(self) -> int:
        """Parts in the window now."""
        return len(self._parts)

    @property
    def values(self) -> int:
        """In-domain values in the window now."""
        return self._count


Answer = tuple[Values, Vector]
#: Work done after an answer is sent: it gets every answer queued for it, in one batch.
AfterAnswer = Callable[[list[Answer]], None]


class Backlog:
    """Work done after answers are sent, on one background thread, in batches.

    A caller only appends ``(work, x, y)`` to a queue: no copy (the protocols never change
    a call's values after answering, and a runtime's answer is a fresh array) and no
    NumPy. The thread wakes at most every ``GATHER_SECONDS``, takes everything
    queued and hands each piece of work its answers as one batch: one LiteRT call for a
    shadow, one vectorised measurement for the live error, instead of one per caller, so
    the work's Python time (and its share of the interpreter lock) stays small next to the
    callers'. Past ``BACKLOG_LIMIT`` queued answers new ones are dropped and counted.
    """

    def __init__(self) -> None:
        self._queue: deque[tuple[AfterAnswer, Values, Vector | None]] = deque()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(self, work: AfterAnswer, x: Values, y: Vector | None, dropped: Any) -> None:
        """Queue one answer for ``work``, or count it in ``dropped`` when the backlog is full."""
        if len(self._queue) >= BACKLOG_LIMIT:
            dropped.inc()
            return
        self._queue.append((work, x, y))
        if not self._wake.is_set():
            self._wake.set()
        if self._thread is None:
            self._start()

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="after-answer", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(GATHER_SECONDS)  # let a batch gather
            self._wake.clear()
            self.drain()

    def drain(self) -> None:
        """Run everything queued now, grouped by its work."""
        batches: dict[AfterAnswer, list[Answer]] = {}
        queue = self._queue
        while queue:
            work, x, y = queue.popleft()
            batches.setdefault(work, []).append((x, y))  # type: ignore[arg-type]
        for work, answers in batches.items():
            try:
                work(answers)
            except Exception:
                log.exception("work after answering (%s) failed; the answers stood", work)


_BACKLOG = Backlog()


def run_shadow(model: ServedModel) -> AfterAnswer:
    """The shadow work for ``model``: run its batch and measure it (route ``shadow``)."""
    labels = (str(model.version), "shadow")
    histograms = (ABS_ERROR.labels(*labels, "in"), ABS_ERROR.labels(*labels, "out"))
    domain = (model.domain_min, model.domain_max)
    runtime = unmeasured(model.runtime)

    def run(answers: list[Answer]) -> None:
        x = np.concatenate([given for given, _ in answers]).astype(np.float64, copy=False)
        measure(x, runtime.predict(x), domain, histograms)

    return run


#: The route of calls no traffic document routed: no document, or a version or label named.
DIRECT = "direct"
#: In-domain values (at least) each version's live MSE (``GetModel``) is computed over.
LIVE_WINDOW = 10_000


class MeasuredRuntime:
    """A loaded version's runtime, every answer measured against x² (route ``direct``).

    The answer only queues ``(x, y)`` on the backlog; the background thread measures the
    queued answers of a version as one batch (:meth:`measure`), so the caller pays a queue
    append, not the measurement. The loader wraps each version once; a weighted route or a
    shadow measures under its own route instead, through :func:`unmeasured`, so no answer
    is counted twice.
    """

    def __init__(self, inner: Runtime, version: int, domain: tuple[float, float]) -> None:
        self.inner = inner
        self.name = inner.name
        self.window = LiveWindow(LIVE_WINDOW, in_values=True)
        self._domain = domain
        label = str(version)
        self._histograms = (
            ABS_ERROR.labels(label, DIRECT, "in"),
            ABS_ERROR.labels(label, DIRECT, "out"),
        )
        self._work: AfterAnswer = self.measure  # one object, so the backlog batches by it

    def predict(self, x: Values) -> Vector:
        """The inner runtime's answer, queued to be measured after it is sent."""
        y = self.inner.predict(x)
        _BACKLOG.submit(self._work, x, y, UNMEASURED)
        return y

    def measure(self, answers: list[Answer]) -> None:
        """Observe a batch of answers' errors at once: histograms, then the live window."""
        given, made = zip(*answers, strict=True)
        x, y = np.concatenate(given), np.concatenate(made)
        sum_sq, count = measure(x, y, self._domain, self._histograms)
        if count:
            self.window.add(sum_sq, count)


def unmeasured(runtime: Runtime) -> Runtime:
    """The runtime under a :class:`MeasuredRuntime` (itself when not wrapped)."""
    return runtime.inner if isinstance(runtime, MeasuredRuntime) else runtime


@dataclass(frozen=True)
class EjectionPolicy:
    """When a replica stops sending a weighted route traffic (predictor settings ``eject_*``)."""

    window: int = 200
    min_calls: int = 50
    factor: float = 10.0
    failures: int = 5


class RouteState:
    """One weighted route of a plan: its label, version, live window and ejection."""

    def __init__(self, label: str, weight: int, model: ServedModel, plan: RoutePlan) -> None:
        self.label = label
        self.weight = weight
        self.plan = plan
        self.ejected = False
        self.reason = ""
        self._lock = threading.Lock()
        self._window = LiveWindow(plan.policy.window)
        self._failures = 0
        version = str(model.version)
        self._calls = ROUTE_CALLS.labels(label, version)
        self._inside = ABS_ERROR.labels(version, label, "in")
        self._outside = ABS_ERROR.labels(version, label, "out")
        self.loaded = model  # as the poller loaded it: a new load is a new route
        self.model = replace(model, runtime=ObservedRuntime(model, self))

    @property
    def live_mse(self) -> float | None:
        """In-domain MSE over the window (None before ``min_calls`` calls)."""
        return self._window.mse(self.plan.policy.min_calls)

    def answered(self, x: Values, y: Vector, model: ServedModel) -> None:
        """Measure one answer and feed the window; may eject this or another route."""
        self._calls.inc()
        sum_sq, count = measure(
            x, y, (model.domain_min, model.domain_max), (self._inside, self._outside)
        )
        with self._lock:
            self._failures = 0
        self._window.add(sum_sq, count)
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
        self._inner = unmeasured(model.runtime)
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
            shadow, percent = plan.shadow_work, plan.shadow_percent
            # a traffic share, not a secret
            if shadow is not None and random.randrange(TOTAL_WEIGHT) < percent:  # noqa: S311
                _BACKLOG.submit(shadow, x, None, SHADOW_DROPPED)
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
        self.shadow_work = run_shadow(shadow) if shadow is not None else None
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
    """Live figures for the Model message: each loaded version's, then the plan's routes."""
    figures: dict[str, float] = {}
    for model in snapshot.models:
        runtime = model.runtime
        if isinstance(runtime, MeasuredRuntime):
            mse = runtime.window.mse()
            if mse is not None:
                figures[f"version.{model.version}.live_mse_in_domain"] = mse
    plan: RoutePlan | None = snapshot.traffic
    if plan is not None:
        figures.update(plan.summary())
    return figures
