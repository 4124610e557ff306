"""Rollout documents shared by the trainer (writer) and the predictors (readers).

Two files live beside ``labels.json`` in a model's folder:

- ``traffic.json``: how calls that name no version are split between labels, and which
  label shadows them. Written whole by an atomic replace, so a reader sees the old or the
  new document, never half of one.
- ``history.jsonl``: one JSON line per label move or traffic change, appended and fsynced
  under this host's lock for the model's history, never rewritten.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from squarenet.store import LABEL_PATTERN, ModelStore, StoreError, host_lock, write_json_atomic

TRAFFIC_FILE = "traffic.json"
HISTORY_FILE = "history.jsonl"
MAX_ROUTES = 8
TOTAL_WEIGHT = 100


@dataclass(frozen=True)
class Route:
    """One label and the share of default calls it answers, in percent."""

    label: str
    weight: int


@dataclass(frozen=True)
class Traffic:
    """A model's traffic document: weighted routes and an optional shadow label."""

    routes: tuple[Route, ...]
    shadow_label: str = ""
    shadow_percent: int = 0

    def to_document(self) -> dict[str, Any]:
        """The JSON form, as ``PUT .../traffic`` takes it and ``traffic.json`` holds it."""
        document: dict[str, Any] = {
            "routes": [{"label": r.label, "weight": r.weight} for r in self.routes]
        }
        document["shadow"] = (
            {"label": self.shadow_label, "percent": self.shadow_percent}
            if self.shadow_label
            else None
        )
        return document


class TrafficError(ValueError):
    """A traffic document that cannot be used; ``field`` names where it is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_traffic(document: Any, labels: Mapping[str, int] | None = None) -> Traffic:
    """Check a traffic document; with ``labels``, every label it names must exist.

    Raises :class:`TrafficError` naming the first field that is wrong.
    """
    if not isinstance(document, dict):
        raise TrafficError("body", "must be a JSON object with 'routes'")
    unknown = sorted(set(document) - {"routes", "shadow"})
    if unknown:
        raise TrafficError(unknown[0], "unknown field; use 'routes' and 'shadow'")
    routes = document.get("routes")
    if not isinstance(routes, list) or not routes:
        raise TrafficError("routes", "must be a non-empty list of {label, weight}")
    if len(routes) > MAX_ROUTES:
        raise TrafficError("routes", f"at most {MAX_ROUTES} routes (got {len(routes)})")
    parsed: list[Route] = []
    for index, route in enumerate(routes):
        where = f"routes.{index}"
        if not isinstance(route, dict) or set(route) != {"label", "weight"}:
            raise TrafficError(where, "must be an object with exactly 'label' and 'weight'")
        label, weight = route["label"], route["weight"]
        _check_label(f"{where}.label", label, labels)
        if any(known.label == label for known in parsed):
            raise TrafficError(f"{where}.label", f"label {label!r} has a route already")
        if not _integer(weight) or not 0 <= weight <= TOTAL_WEIGHT:
            raise TrafficError(f"{where}.weight", "must be an integer from 0 to 100")
        parsed.append(Route(label, weight))
    total = sum(route.weight for route in parsed)
    if total != TOTAL_WEIGHT:
        raise TrafficError("routes", f"weights must sum to {TOTAL_WEIGHT} (they sum to {total})")
    shadow = document.get("shadow")
    if shadow is None:
        return Traffic(tuple(parsed))
    if not isinstance(shadow, dict) or set(shadow) != {"label", "percent"}:
        raise TrafficError("shadow", "must be null or an object with 'label' and 'percent'")
    _check_label("shadow.label", shadow["label"], labels)
    percent = shadow["percent"]
    if not _integer(percent) or not 0 <= percent <= TOTAL_WEIGHT:
        raise TrafficError("shadow.percent", "must be an integer from 0 to 100")
    return Traffic(tuple(parsed), shadow["label"], percent)


def _check_label(field: str, label: Any, labels: Mapping[str, int] | None) -> None:
    if not isinstance(label, str) or not LABEL_PATTERN.fullmatch(label):
        raise TrafficError(field, "must be a label: a lowercase letter, then up to 31 of [a-z0-9-]")
    if labels is not None and label not in labels:
        raise TrafficError(field, f"no label {label!r}; labels: {dict(sorted(labels.items()))}")


def read_traffic(store: ModelStore, model_name: str) -> Traffic | None:
    """The model's traffic document; None when there is none.

    Raises OSError when it cannot be read and StoreError when it is not a valid document:
    a reader then keeps what it knew.
    """
    path = store.model_dir(model_name) / TRAFFIC_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (UnicodeDecodeError, ValueError) as exc:
        raise StoreError(f"{path} is not valid JSON: {exc}") from exc
    try:
        return parse_traffic(document)
    except TrafficError as exc:
        raise StoreError(f"{path} is not a traffic document: {exc}") from exc


def write_traffic(store: ModelStore, model_name: str, traffic: Traffic | None) -> None:
    """Replace the traffic document atomically (None removes it: back to the served label)."""
    path = store.model_dir(model_name) / TRAFFIC_FILE
    if traffic is None:
        path.unlink(missing_ok=True)
        return
    write_json_atomic(path, traffic.to_document())


# --- history ------------------------------------------------------------------------------


def append_history(store: ModelStore, model_name: str, entry: Mapping[str, Any]) -> None:
    """Add one line to the model's history, durably, after every line already there."""
    path = store.model_dir(model_name) / HISTORY_FILE
    line = json.dumps(entry, sort_keys=True, allow_nan=False) + "\n"
    with host_lock(path):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)


def read_history(store: ModelStore, model_name: str) -> Iterator[dict[str, Any]]:
    """Every history entry, oldest first; a torn or malformed line is left out."""
    path = store.model_dir(model_name) / HISTORY_FILE
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("at"), str):
            yield entry


def parse_time(text: str) -> datetime:
    """An RFC 3339 time with its offset (``Z`` allowed); ValueError otherwise."""
    moment = datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset")
    return moment
