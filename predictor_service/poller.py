"""Watches the store and keeps the newest good versions loaded.

Every ``poll_interval`` seconds: list the numbered folders, newest first, and walk down
until ``versions`` good ones are in hand; versions named by a label are loaded too. With a
``serve_label`` the labelled version answers calls that name none (newest while the label is
not set), so moving the label in the store promotes or rolls back every predictor. A folder already loaded is kept as long as its
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
from predictor_service.traffic import Planner
from squarenet.rollouts import Traffic, read_traffic
from squarenet.store import BrokenVersion, Fingerprint, ModelStore, StoreError, folder_fingerprint

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
        serve_label: str = "",
        on_change: Callable[[Snapshot], None] = lambda snapshot: None,
        planner: Planner | None = None,
    ) -> None:
        self._store = store
        self._registry = registry
        self._model_name = model_name
        self._runtime = runtime
        self._versions = versions
        self._poll_interval = poll_interval
        self._on_change = on_change
        self._serve_label = serve_label
        self._labels: dict[str, int] = {}
        self._labels_failed = False
        self._planner = planner or Planner()
        self._traffic: Traffic | None = None
        self._traffic_failed = False
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
        labels = self._read_labels()
        traffic = self._read_traffic()
        current = {model.version: model for model in self._registry.snapshot.models}
        chosen: list[ServedModel] = []
        for version in on_disk:
            if len(chosen) >= self._versions or self._stop.is_set():
                break
            model = self._good_model(version, current.get(version))
            if model is not None:
                chosen.append(model)
        have = {model.version for model in chosen}
        for version in sorted(set(labels.values()) - have, reverse=True):
            if version in on_disk and not self._stop.is_set():
                model = self._good_model(version, current.get(version))
                if model is not None:
                    chosen.append(model)
        chosen.sort(key=lambda model: model.version, reverse=True)
        if not chosen and current:
            return  # nothing good on disk any more: the models in memory keep serving
        self._publish(chosen, current, labels, traffic)

    def _read_traffic(self) -> Traffic | None:
        """The store's traffic document; on a read error the last one read (logged once)."""
        try:
            traffic = read_traffic(self._store, self._model_name)
        except (OSError, StoreError) as exc:
            if not self._traffic_failed:
                log.error("cannot read the traffic document: %s; keeping the last one", exc)
            self._traffic_failed = True
            return self._traffic
        self._traffic_failed = False
        self._traffic = traffic
        return traffic

    def _read_labels(self) -> dict[str, int]:
        """The store's labels; on a read error the last ones read (logged once)."""
        try:
            labels = self._store.read_labels(self._model_name)
        except (OSError, StoreError) as exc:
            if not self._labels_failed:
                log.error("cannot read the labels: %s; keeping %s", exc, self._labels)
            self._labels_failed = True
            return self._labels
        self._labels_failed = False
        self._labels = labels
        return labels

    def _default(self, chosen: list[ServedModel], labels: dict[str, int]) -> ServedModel | None:
        """The serve label's version; else the previous default if loaded; else the newest."""
        if not chosen:
            return None
        if not self._serve_label:
            return chosen[0]
        by_version = {model.version: model for model in chosen}
        wanted = labels.get(self._serve_label)
        if wanted in by_version:
            return by_version[wanted]
        previous = self._registry.snapshot.default
        if wanted is not None and previous is not None and previous.version in by_version:
            return by_version[previous.version]  # the labelled version is unusable: hold on
        return chosen[0]

    def _good_model(self, version: int, loaded: ServedModel | None) -> ServedModel | None:
        """The served model for ``version``: the loaded one if unchanged, else a fresh load."""
        folder = self._store.version_dir(self._model_name, version)
        print_ = folder_fingerprint(folder)
        if loaded is not None and loaded.fingerprint == print_:
            return loaded
        if self._broken.get(version) == print_:
            return loaded  # tried exactly these files already
        started = time.perf_counter()
        if loaded is None:
            self._registry.set_state(version, "LOADING")
        try:
            model = load_version(self._store, self._model_name, version, self._runtime, print_)
        except BrokenVersion as exc:
            self._broken[version] = print_
            if loaded is None:
                self._registry.set_state(version, "END", exc.reason)
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

    def _publish(
        self,
        chosen: list[ServedModel],
        current: dict[int, ServedModel],
        labels: dict[str, int],
        traffic: Traffic | None = None,
    ) -> None:
        default = self._default(chosen, labels)
        snapshot = self._registry.publish(
            chosen,
            labels=labels,
            default=default,
            serving_label=self._serve_label,
            traffic=self._planner.plan(traffic, labels, chosen),
        )
        if snapshot is None:
            return
        loaded = snapshot.loaded_versions
        unloaded = sorted(set(current) - set(loaded), reverse=True)
        for version in loaded:
            self._registry.set_state(version, "AVAILABLE")
        for version in unloaded:
            self._registry.set_state(version, "END")
        served = snapshot.default.version if snapshot.default else None
        metrics.show_versions(loaded, unloaded, served)
        if unloaded:
            log.info("unloaded versions=%s", unloaded)
        label_note = f" label={self._serve_label}" if self._serve_label else ""
        log.info("serving version=%s%s loaded=%s labels=%s", served, label_note, loaded, labels)
        self._on_change(snapshot)
