"""Watches the store and keeps the newest good versions loaded.

Every ``poll_interval`` seconds: list the numbered folders, newest first, and walk down
until ``versions`` good ones are in hand. A folder already loaded is kept as long as its
files are unchanged. A new folder is verified, loaded and warmed before it is published
to the registry. A broken folder is logged and counted once and then left alone until its
files change (fixed, or finished copying): no tight retry loop, and whatever was serving
keeps serving. The store is only ever read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from predictor_service import metrics
from predictor_service.loader import load_version
from predictor_service.registry import Registry, ServedModel, Snapshot
from squarenet.store import BrokenVersion, Fingerprint, ModelStore, folder_fingerprint

log = logging.getLogger(__name__)


class Poller:
    """Loads what the store offers into the registry, on a daemon thread or on demand."""

    def __init__(
        self,
        store: ModelStore,
        registry: Registry,
        *,
        model_name: str,
        runtime: str,
        versions: int,
        poll_interval: float,
        on_change: Callable[[Snapshot], None] = lambda snapshot: None,
    ) -> None:
        self._store = store
        self._registry = registry
        self._model_name = model_name
        self._runtime = runtime
        self._versions = versions
        self._poll_interval = poll_interval
        self._on_change = on_change
        self._broken: dict[int, Fingerprint] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="store-poller", daemon=True)
        self._listing_failed = False

    def start(self) -> None:
        """Poll at once, then every interval, until :meth:`stop`."""
        self._thread.start()

    def stop(self) -> None:
        """Stop polling (a load in progress finishes first)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            try:
                self.poll_once()
            except Exception:
                log.exception("poll failed; keeping the versions already loaded")
            if self._stop.wait(self._poll_interval):
                return

    def poll_once(self) -> None:
        """One look at the store; publish a new snapshot if what should be served changed."""
        try:
            self._look()
        finally:
            metrics.STORE_POLLS.inc()

    def _look(self) -> None:
        try:
            on_disk = sorted(self._store.list_versions(self._model_name), reverse=True)
        except OSError as exc:
            if not self._listing_failed:
                log.error("cannot list the store: %s; keeping the versions already loaded", exc)
            self._listing_failed = True
            return
        self._listing_failed = False
        for gone in self._broken.keys() - set(on_disk):
            del self._broken[gone]  # forget folders that were removed
        current = {model.version: model for model in self._registry.snapshot.models}
        chosen: list[ServedModel] = []
        for version in on_disk:
            if len(chosen) >= self._versions or self._stop.is_set():
                break
            model = self._good_model(version, current.get(version))
            if model is not None:
                chosen.append(model)
        if not chosen and current:
            return  # nothing good on disk any more: the models in memory keep serving
        self._publish(chosen, current)

    def _good_model(self, version: int, loaded: ServedModel | None) -> ServedModel | None:
        """The served model for ``version``: the loaded one if unchanged, else a fresh load."""
        folder = self._store.version_dir(self._model_name, version)
        print_ = folder_fingerprint(folder)
        if loaded is not None and loaded.fingerprint == print_:
            return loaded
        if self._broken.get(version) == print_:
            return loaded  # tried exactly these files already
        started = time.perf_counter()
        try:
            model = load_version(self._store, self._model_name, version, self._runtime, print_)
        except BrokenVersion as exc:
            self._broken[version] = print_
            metrics.LOAD_FAILURES.inc()
            keeping = f"; still serving the loaded copy of version={version}" if loaded else ""
            log.warning("skipped broken version=%d: %s%s", version, exc.reason, keeping)
            return loaded
        self._broken.pop(version, None)
        metrics.LOADS.inc()
        log.info(
            "loaded version=%d runtime=%s domain=[%g, %g] in %.1f ms",
            version,
            self._runtime,
            model.domain_min,
            model.domain_max,
            (time.perf_counter() - started) * 1000,
        )
        return model

    def _publish(self, chosen: list[ServedModel], current: dict[int, ServedModel]) -> None:
        snapshot = self._registry.publish(chosen)
        if snapshot is None:
            return
        loaded = snapshot.loaded_versions
        unloaded = sorted(set(current) - set(loaded), reverse=True)
        metrics.show_versions(loaded, unloaded)
        if unloaded:
            log.info("unloaded versions=%s", unloaded)
        log.info("serving version=%s loaded=%s", loaded[0] if loaded else None, loaded)
        self._on_change(snapshot)
