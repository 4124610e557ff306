"""Label moves and traffic changes that are gated and written into the model's history.

The REST views (and so the CLI and the dashboard) move labels through here: the gate runs
first, a failing gate refuses the move unless forced, and every change that happens is
appended to ``history.jsonl`` with its gate report and who made it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from squarenet.rollouts import Traffic, append_history, read_history, write_traffic
from squarenet.store import ModelStore, ModelVersion, StoreError, UnknownVersion
from trainer_service.rollouts.gate import Thresholds, judge, kept_measurement

log = logging.getLogger("squarenet.trainer.rollouts")


class GateRefused(Exception):
    """The version failed its gate and the move was not forced; ``report`` says why."""

    def __init__(self, report: dict[str, Any]) -> None:
        failed = [_failure(check) for check in report["checks"] if not check["passed"]]
        super().__init__(
            f"version {report['version']} fails its promotion gate: {'; '.join(failed)}. "
            'Send "force": true (squarenet label --force) to move the label anyway'
        )
        self.report = report


def _failure(check: dict[str, Any]) -> str:
    if "value" in check and "limit" in check:
        return f"{check['name']} {check['value']:.4g} > {check['limit']:.4g}"
    return f"{check['name']}: {check.get('detail', 'failed')}"


def _record(store: ModelStore, model: str, kind: str, by: dict[str, str], **entry: Any) -> None:
    """Append a change to the model's history, stamped with the time (entries sort by it)."""
    at = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    append_history(store, model, {"at": at, "kind": kind, **entry, "by": by})


def _incumbent(store: ModelStore, model_name: str, label: str) -> ModelVersion | None:
    try:
        current = store.read_labels(model_name).get(label)
    except (OSError, StoreError):
        return None
    try:
        return None if current is None else store.verify_version(model_name, current)
    except StoreError:
        return None


def move_label(
    store: ModelStore,
    model_name: str,
    label: str,
    version: int,
    *,
    force: bool,
    thresholds: Thresholds,
    by: dict[str, str],
) -> tuple[dict[str, int], dict[str, Any]]:
    """Gate, then point ``label`` at ``version``; the labels and the gate report.

    Raises UnknownVersion / BrokenVersion for the version and GateRefused for a failing,
    unforced gate (nothing is written then).
    """
    if version not in store.list_versions(model_name):
        raise UnknownVersion(model_name, version)
    candidate = store.verify_version(model_name, version)
    incumbent = _incumbent(store, model_name, label)
    report = judge(store, candidate, incumbent, thresholds)
    if not report["passed"] and not force:
        raise GateRefused(report)
    labels = store.set_label(model_name, label, version)
    forced = force and not report["passed"]
    previous = incumbent.version if incumbent else None
    entry = {"label": label, "version": version, "previous": previous, "gate": report}
    _record(store, model_name, "label", by, **entry, forced=forced)
    log.info(
        "label %s of model=%s now names version=%d (gate %s%s)",
        label,
        model_name,
        version,
        "passed" if report["passed"] else "failed",
        ", forced" if forced else "",
    )
    return labels, report


def remove_label(store: ModelStore, model_name: str, label: str, *, by: dict[str, str]) -> bool:
    """Remove ``label`` and record it; False when there was no such label."""
    previous = store.read_labels(model_name).get(label)
    if not store.remove_label(model_name, label):
        return False
    _record(store, model_name, "label-removed", by, label=label, previous=previous)
    return True


def change_traffic(
    store: ModelStore, model_name: str, traffic: Traffic | None, *, by: dict[str, str]
) -> None:
    """Write (or remove, with None) the traffic document and record the change."""
    write_traffic(store, model_name, traffic)
    _record(
        store, model_name, "traffic", by, traffic=None if traffic is None else traffic.to_document()
    )


def state_at(store: ModelStore, model_name: str, moment: datetime) -> dict[str, Any]:
    """Which version each label named and what the traffic was at ``moment``, by the history."""
    labels: dict[str, int] = {}
    traffic: dict[str, Any] | None = None
    for entry in read_history(store, model_name):
        try:
            at = datetime.fromisoformat(entry["at"].replace("Z", "+00:00"))
        except ValueError:
            continue
        if at > moment:
            break
        if entry.get("kind") == "label" and isinstance(entry.get("version"), int):
            labels[entry["label"]] = entry["version"]
        elif entry.get("kind") == "label-removed":
            labels.pop(entry.get("label", ""), None)
        elif entry.get("kind") == "traffic":
            traffic = entry.get("traffic")
    return {"labels": labels, "traffic": traffic}


def gate_reports(store: ModelStore, model_name: str) -> dict[int, dict[str, Any]]:
    """Per version: the last gate report of a move to it (the history's)."""
    gates: dict[int, dict[str, Any]] = {}
    try:
        for entry in read_history(store, model_name):
            if entry.get("kind") == "label" and isinstance(entry.get("gate"), dict):
                gates[entry["version"]] = {**entry["gate"], "forced": entry.get("forced", False)}
    except OSError:
        pass
    return gates


def version_gate(
    store: ModelStore, version: ModelVersion, reports: dict[int, dict[str, Any]], kept: set[int]
) -> dict[str, Any] | None:
    """The last gate report of a move to the version, else its measurement alone
    (``reports`` from ``gate_reports``, ``kept`` from ``measured_versions``)."""
    if version.version in reports:
        return reports[version.version]
    found = kept_measurement(store, version, kept=kept)
    return None if found is None else {"measurement": found}
