"""One overlay at a time, applied server-side to the test control plane as a user would,
with what only a real cluster would have provided; removed again afterwards."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cluster.overlays import NAMESPACE, Overlay, as_json_list
from deploy.deploy_manifests import all_of
from kube import kubectl

ROLLOUT_TIMEOUT = "120s"


@dataclass(frozen=True)
class Deployed:
    """An overlay on the control plane, and what `kubectl apply` answered."""

    overlay: Overlay
    kubeconfig: Path
    applied: subprocess.CompletedProcess[str]


def apply(kubeconfig: Path, target: Path) -> subprocess.CompletedProcess[str]:
    """``kubectl apply --server-side -k TARGET`` (stdout and stderr kept apart)."""
    return kubectl(kubeconfig, "apply", "--server-side", "-k", str(target))


def roll_out(kubeconfig: Path, overlay: Overlay) -> None:
    """Wait until every Deployment of the overlay is rolled out."""
    for deployment in all_of(overlay.docs, "Deployment"):
        kubectl(
            kubeconfig,
            "-n",
            NAMESPACE,
            "rollout",
            "status",
            f"deployment/{deployment['metadata']['name']}",
            f"--timeout={ROLLOUT_TIMEOUT}",
        )


def remove(kubeconfig: Path, overlay: Overlay) -> None:
    """Delete the overlay and everything the test brought for it (nothing fails if gone)."""
    kubectl(kubeconfig, "delete", "-k", str(overlay.path), "--ignore-not-found", "--wait=true")
    if overlay.prepared:
        kubectl(
            kubeconfig, "delete", "-f", "-", "--ignore-not-found", "--wait=true",
            stdin=as_json_list(overlay.prepared),
        )  # fmt: skip
    kubectl(
        kubeconfig, "delete", "-f", "-", "--ignore-not-found", "--wait=true",
        stdin=as_json_list(overlay.provided),
    )  # fmt: skip


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
