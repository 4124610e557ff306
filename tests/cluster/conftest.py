"""One overlay at a time, applied server-side to the test control plane as a user would,
with what only a real cluster would have provided; removed again afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kube import kubectl

from cluster.overlays import Deployed, Overlay, apply, as_json_list, remove, roll_out


@pytest.fixture(scope="class")
def deployed(request: pytest.FixtureRequest, control_plane: Path) -> Iterator[Deployed]:
    """The test class's overlay (its ``overlay`` attribute), applied and rolled out."""
    overlay = Overlay.load(request.cls.overlay)
    remove(control_plane, overlay)  # what an interrupted earlier run left
    try:
        kubectl(control_plane, "create", "-f", "-", stdin=as_json_list(overlay.provided))
        if overlay.prepared:
            kubectl(control_plane, "create", "-f", "-", stdin=as_json_list(overlay.prepared))
        applied = apply(control_plane, overlay.path)
        roll_out(control_plane, overlay)
        yield Deployed(overlay, control_plane, applied)
    finally:
        remove(control_plane, overlay)
