"""The loaded versions, swapped atomically, with change notification for WatchModel.

What a call sees is one immutable :class:`Snapshot`. The poller builds a new snapshot off
to the side and replaces the single reference; a call reads that reference once, so calls
in flight finish on the version they started with while new calls get the new one.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from predictor_service.runtime import Runtime
from squarenet.store import Fingerprint  # what a version folder looked like when loaded


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
    """The versions being served, newest first; ``generation`` grows with every change."""

    models: tuple[ServedModel, ...] = ()
    generation: int = 0
    by_version: Mapping[int, ServedModel] = field(default_factory=dict)

    @property
    def newest(self) -> ServedModel | None:
        """What a call without a pinned version is answered by."""
        return self.models[0] if self.models else None

    @property
    def loaded_versions(self) -> list[int]:
        """Every version a call may pin, newest first."""
        return [model.version for model in self.models]


class Registry:
    """Holds the current snapshot; lets watchers wait for the next one."""

    def __init__(self) -> None:
        self._snapshot = Snapshot()
        self._changed = threading.Condition()
        self._closed = False

    @property
    def snapshot(self) -> Snapshot:
        """The current snapshot (read it once per call)."""
        return self._snapshot

    @property
    def closed(self) -> bool:
        """True once the server is shutting down: watchers should end their streams."""
        return self._closed

    def publish(self, models: list[ServedModel]) -> Snapshot | None:
        """Serve ``models`` (newest first) if they differ from now; return the new snapshot."""
        with self._changed:
            current = self._snapshot
            if [m.version for m in models] == current.loaded_versions and all(
                new is old for new, old in zip(models, current.models, strict=True)
            ):
                return None
            self._snapshot = Snapshot(
                models=tuple(models),
                generation=current.generation + 1,
                by_version={model.version: model for model in models},
            )
            self._changed.notify_all()
            return self._snapshot

    def wait_for_change(self, generation: int, timeout: float) -> Snapshot:
        """Block until the generation differs from ``generation``, closing, or ``timeout``."""
        with self._changed:
            self._changed.wait_for(
                lambda: self._closed or self._snapshot.generation != generation, timeout
            )
            return self._snapshot

    def close(self) -> None:
        """Wake every watcher so its stream can end cleanly."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
