"""The kind flow on one real node: a control plane with a real kubelet
(``scripts/cluster/cluster.sh up`` with NODE=real), the kind overlay applied to it as a
newcomer would, and the trainer reached through ``kubectl port-forward``.

Everything here is real: containerd runs the project's images, the kubelet runs the probes,
kube-proxy routes the Services. The machine running these tests is saturated, so every wait
is on a state, with budgets of minutes."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kube import BUILD_TIMEOUT, REPO

from node.node import OVERLAY, NodeCluster, Trainer

# A cluster someone started by hand with `make cluster-up NODE=real` is used as it is;
# otherwise the tests start their own in a folder of their own, so a kwok control plane of
# the other cluster tests may run next to it.
DEFAULT_STATE = Path(os.environ.get("SQUARENET_CLUSTER_DIR", REPO / "var/cluster")).resolve()
TEST_STATE = (REPO / "var/node-cluster").resolve()


def _status(state: Path) -> str:
    result = subprocess.run(
        ["bash", str(REPO / "scripts/cluster/cluster.sh"), "status"],
        env={**os.environ, "SQUARENET_CLUSTER_DIR": str(state)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.stdout


@pytest.fixture(scope="package")
def real_node() -> Iterator[NodeCluster]:
    """A control plane with one real node: started (and built first when needed) for the
    node tests and stopped after the last of them (the rest of a whole-suite run does not
    share the machine with it), unless one was running already."""
    if "(NODE=real)" in _status(DEFAULT_STATE):
        yield NodeCluster(DEFAULT_STATE)
        return
    cluster = NodeCluster(TEST_STATE)
    started = "(NODE=real)" not in _status(TEST_STATE)
    if started:
        result = cluster.script("up", timeout=BUILD_TIMEOUT)
        if result.returncode != 0:
            pytest.fail(f"the real node did not start:\n{result.stderr[-6000:]}")
    try:
        yield cluster
    finally:
        if started:
            result = cluster.script("down", timeout=300)
            assert result.returncode == 0, result.stderr
            assert not re.search(r"could not restore", result.stderr), result.stderr


@pytest.fixture(scope="module")
def cluster(real_node: NodeCluster) -> Iterator[NodeCluster]:
    """The real node with fresh volumes and no installation left from an earlier run."""
    real_node.kubectl("delete", "-k", str(OVERLAY), "--ignore-not-found", "--wait=true",
                      timeout=600)  # fmt: skip
    result = real_node.script("volumes")
    assert result.returncode == 0, result.stderr
    yield real_node
    real_node.kubectl("delete", "-k", str(OVERLAY), "--ignore-not-found", "--wait=true",
                      timeout=600)  # fmt: skip
    real_node.script("volumes")


@pytest.fixture(scope="module")
def trainer(cluster: NodeCluster) -> Iterator[Trainer]:
    api = Trainer(cluster)
    yield api
    api.close()
