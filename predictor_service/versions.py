"""Which loaded model answers a call: by number, by label, or the default.

Every protocol names versions its own way (squarenet's ``version``/``version_label``,
TensorFlow Serving's ``ModelSpec``, V2's ``model_version`` string); all of them end here,
and each servicer maps these errors to its status codes in one place.
"""

from __future__ import annotations

from predictor_service.registry import ServedModel, Snapshot
from predictor_service.traffic import routed
from squarenet.store import LABEL_PATTERN


class VersionError(Exception):
    """The call named no usable version; the message is written for the client."""


class NoModelLoaded(VersionError):
    """Nothing is loaded yet (health is NOT_SERVING)."""

    def __init__(self) -> None:
        super().__init__("no model loaded yet; retry when health is SERVING")


class VersionNotLoaded(VersionError):
    """A version or label that is valid but not loaded (or not set)."""


class BadVersionName(VersionError):
    """A version name that can never be valid (negative, both a number and a label, ...)."""


def resolve(snapshot: Snapshot, version: int = 0, label: str = "") -> ServedModel:
    """The model for a version number (0: none) or a label (empty: none)."""
    if label:
        if version:
            raise BadVersionName(
                f"name either a version ({version}) or a label ({label!r}), not both"
            )
        return _by_label(snapshot, label)
    if version == 0:
        model = routed(snapshot)
        if model is None:
            raise NoModelLoaded()
        return model
    if version < 0:
        raise BadVersionName(f"version {version} is negative; use 0 for the default")
    model = snapshot.by_version.get(version)
    if model is None:
        if not snapshot.models:
            raise NoModelLoaded()
        raise VersionNotLoaded(
            f"version {version} is not loaded; loaded versions: {snapshot.loaded_versions}"
        )
    return model


def resolve_text(snapshot: Snapshot, text: str) -> ServedModel:
    """A version written as text, as V2 does: "" the default, digits a number, else a label."""
    if not text:
        return resolve(snapshot)
    if text.isascii() and text.isdigit():
        if len(text) > 18:
            raise BadVersionName(f"version {text} is too large")
        return resolve(snapshot, int(text))
    return _by_label(snapshot, text)


def _by_label(snapshot: Snapshot, label: str) -> ServedModel:
    if not LABEL_PATTERN.fullmatch(label):
        raise BadVersionName(
            f"{label[:40]!r} is not a version label: a lowercase letter, then up to 31 of [a-z0-9-]"
        )
    version = snapshot.labels.get(label)
    if version is None:
        if not snapshot.models:
            raise NoModelLoaded()
        raise VersionNotLoaded(
            f"no label {label!r}; labels: {dict(sorted(snapshot.labels.items()))}"
        )
    model = snapshot.by_version.get(version)
    if model is None:
        raise VersionNotLoaded(
            f"label {label!r} names version {version}, which is not loaded; "
            f"loaded versions: {snapshot.loaded_versions}"
        )
    return model
