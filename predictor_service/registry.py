"""The loaded versions and labels, swapped atomically, with change notification for WatchModel.

What a call sees is one immutable :class:`Snapshot`. The poller builds a new snapshot off
to the side and replaces the single reference; a call reads that reference once, so calls
in flight finish on the version they started with while new calls get the new one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from predictor_service.runtime import Runtime
from squarenet.store import Fingerprint  # what a version folder looked like when loaded

if TYPE_CHECKING:
    from predictor_service.traffic import RoutePlan


@dataclass(frozen=True)
class ServedModel:
    """One loaded, warmed version and what clients are told about it."""

    version: int
    domain_min: float
    domain_max: float
    created_at: str
    job_id: str
    metrics: Mapping[str, float]
    runtime: Runtime
    fingerprint: Fingerprint = field(compare=False)


@dataclass(frozen=True)
class Snapshot:
    """The versions being served, newest first; ``generation`` grows with every change.

    ``default`` answers calls that name no version: the newest, or the version of the
    label the predictor serves (``--serve-label``). ``labels`` are the model's version
    labels as the store has them (a label may name a version that is not loaded).
    """

    models: tuple[ServedModel, ...] = ()
    generation: int = 0
    by_version: Mapping[int, ServedModel] = field(default_factory=dict)
    labels: Mapping[str, int] = field(default_factory=dict)
    default: ServedModel | None = None
    serving_label: str = ""
    traffic: RoutePlan | None = None  # traffic.json's routes: calls that name no version

    @property
    def loaded_versions(self) -> list[int]:
        """Every version a call may pin, newest first."""
        return [model.version for model in self.models]


#: How many versions that ended (unloaded or failed) stay listed in the lifecycle.
_ENDED_KEPT = 20


@dataclass(frozen=True)
class VersionState:
    """Where one version is in its life: LOADING, AVAILABLE or END (with why, if it failed)."""

    version: int
    state: str
    error: str = ""


class Registry:
    """Holds the current snapshot; tells listeners of the next one; tracks each version's life."""

    def __init__(self) -> None:
        self._snapshot = Snapshot()
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []
        self._closed = False
        self._states: dict[int, VersionState] = {}
        self._states_lock = threading.Lock()

    def set_state(self, version: int, state: str, error: str = "") -> None:
        """Record a version's lifecycle step (the poller calls this as it loads and unloads)."""
        with self._states_lock:
            self._states[version] = VersionState(version, state, error)
            ended = sorted(v for v, s in self._states.items() if s.state == "END")
            for old in ended[:-_ENDED_KEPT]:
                del self._states[old]

    def states(self) -> list[VersionState]:
        """Every version's lifecycle step, newest version first."""
        with self._states_lock:
            return sorted(self._states.values(), key=lambda s: s.version, reverse=True)

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (on the changing thread) after each new snapshot and at close."""
        self._listeners.append(listener)

    def _tell(self) -> None:
        for listener in self._listeners:
            listener()

    @property
    def snapshot(self) -> Snapshot:
        """The current snapshot (read it once per call)."""
        return self._snapshot

    @property
    def closed(self) -> bool:
        """True once the server is shutting down: watchers should end their streams."""
        return self._closed

    def publish(
        self,
        models: list[ServedModel],
        *,
        labels: Mapping[str, int] | None = None,
        default: ServedModel | None = None,
        serving_label: str = "",
        traffic: RoutePlan | None = None,
    ) -> Snapshot | None:
        """Serve ``models`` (newest first) if anything differs from now; return the new snapshot.

        ``default`` must be one of ``models``; None means the newest.
        """
        labels = dict(labels or {})
        if default is None and models:
            default = models[0]
        with self._lock:
            current = self._snapshot
            if (
                [m.version for m in models] == current.loaded_versions
                and all(new is old for new, old in zip(models, current.models, strict=True))
                and labels == current.labels
                and default is current.default
                and serving_label == current.serving_label
                and traffic is current.traffic
            ):
                return None
            self._snapshot = Snapshot(
                models=tuple(models),
                generation=current.generation + 1,
                by_version={model.version: model for model in models},
                labels=labels,
                default=default,
                serving_label=serving_label,
                traffic=traffic,
            )
            snapshot = self._snapshot
        self._tell()
        return snapshot

    def refresh(self) -> None:
        """Tell listeners of the same content under a new generation (a route was ejected)."""
        with self._lock:
            current = self._snapshot
            self._snapshot = replace(current, generation=current.generation + 1)
        self._tell()

    def close(self) -> None:
        """Tell every listener, so watch streams can end cleanly."""
        self._closed = True
        self._tell()
