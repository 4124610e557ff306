"""The test control plane for any test that needs a real API server (import as ``kube``).

``scripts/cluster/cluster.sh`` runs etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok's fake nodes on loopback; this module brings it up for a test
session, runs kubectl against it, and makes kubeconfigs that act as a ServiceAccount, so
the real authenticator and authorizer decide what a component may do.

The session fixture ``control_plane`` (tests/conftest.py) yields the admin kubeconfig's path.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SCRIPT = REPO / "scripts/cluster/cluster.sh"
STATE = Path(os.environ.get("SQUARENET_CLUSTER_DIR", REPO / "var/cluster")).resolve()
ADMIN_KUBECONFIG = STATE / "kubeconfig"
NODES = ("kwok-node-0", "kwok-node-1")

# A cold build of the control plane takes tens of minutes (docs/deploying.md, "A real control plane");
# a test that has to wait for it gets this long instead of pytest's default timeout.
BUILD_TIMEOUT = 90 * 60


def _cluster(action: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(CLUSTER_SCRIPT), action],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def built() -> bool:
    """Every binary of the control plane is in the cache already (a start takes seconds)."""
    return _cluster("built", 30).returncode == 0


def is_up() -> bool:
    """This checkout's control plane is running and its API server is ready."""
    return _cluster("status", 60).returncode == 0


def up() -> Path:
    """Start the control plane (building it first when needed); the admin kubeconfig."""
    result = _cluster("up", BUILD_TIMEOUT)
    if result.returncode != 0:
        pytest.fail(f"the control plane did not start:\n{result.stderr}{result.stdout}")
    return ADMIN_KUBECONFIG


def down() -> None:
    """Stop every process of the control plane and remove its state."""
    result = _cluster("down", 120)
    if result.returncode != 0:
        pytest.fail(f"the control plane did not stop:\n{result.stderr}{result.stdout}")


@contextmanager
def running_control_plane() -> Iterator[Path]:
    """The admin kubeconfig of a running control plane; stopped afterwards only when this
    started it (a cluster someone started by hand keeps running)."""
    started = not is_up()
    kubeconfig = up()
    try:
        yield kubeconfig
    finally:
        if started:
            down()


def kubectl(
    kubeconfig: Path,
    *args: str,
    stdin: str | None = None,
    check: bool = True,
    timeout: float = 180,
) -> subprocess.CompletedProcess[str]:
    """Run kubectl against the cluster of ``kubeconfig``; fail the test when it fails and
    ``check`` is set (stdout and stderr are kept apart: stderr carries the API's warnings)."""
    result = subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"kubectl {' '.join(args)} exited {result.returncode}:\n{result.stderr}{result.stdout}"
        )
    return result


def kubectl_json(kubeconfig: Path, *args: str) -> Any:
    """``kubectl ... -o json``, parsed."""
    return json.loads(kubectl(kubeconfig, *args, "-o", "json").stdout)


def service_account_kubeconfig(
    admin_kubeconfig: Path,
    namespace: str,
    service_account: str,
    destination: Path,
    duration_seconds: int = 3600,
) -> Path:
    """A kubeconfig that authenticates as ``namespace/service_account`` with a token from the
    TokenRequest API (signed by the API server's service-account key), written to
    ``destination``: what that account may do is decided by RBAC, not by the admin's rights."""
    token = kubectl(
        admin_kubeconfig,
        "-n",
        namespace,
        "create",
        "token",
        service_account,
        f"--duration={duration_seconds}s",
    ).stdout.strip()
    admin = kubectl_json(admin_kubeconfig, "config", "view", "--raw", "--minify")
    cluster = admin["clusters"][0]["cluster"]
    user = f"system:serviceaccount:{namespace}:{service_account}"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "squarenet", "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {
                "name": "squarenet",
                "context": {"cluster": "squarenet", "user": user, "namespace": namespace},
            }
        ],
        "current-context": "squarenet",
    }
    destination.write_text(json.dumps(config, indent=2))
    destination.chmod(0o600)
    return destination


@contextmanager
def temporary_namespace(
    kubeconfig: Path, prefix: str = "test", pod_security: str = "restricted"
) -> Iterator[str]:
    """A fresh namespace enforcing the Pod Security profile ``pod_security``, deleted (with
    everything in it) afterwards."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    manifest = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {
                "pod-security.kubernetes.io/enforce": pod_security,
                "pod-security.kubernetes.io/enforce-version": "latest",
            },
        },
    }
    kubectl(kubeconfig, "create", "-f", "-", stdin=json.dumps(manifest))
    try:
        yield name
    finally:
        kubectl(kubeconfig, "delete", "namespace", name, "--wait=true", "--timeout=120s")


def report_pod_finished(kubeconfig: Path, namespace: str, pod: str, exit_code: int) -> None:
    """Report a pod's end as its node's kubelet would (kwok never finishes a Job's pod): phase
    Succeeded for exit code 0, else Failed, every container terminated with that code."""
    current = kubectl_json(kubeconfig, "-n", namespace, "get", "pod", pod)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    reason = "Completed" if exit_code == 0 else "Error"
    started = {
        status["name"]: status.get("state", {}).get("running", {}).get("startedAt", now)
        for status in current["status"].get("containerStatuses", [])
    }
    status = {
        "phase": "Succeeded" if exit_code == 0 else "Failed",
        "conditions": [
            {"type": kind, "status": "False", "reason": "PodCompleted", "lastTransitionTime": now}
            for kind in ("Ready", "ContainersReady")
        ],
        "containerStatuses": [
            {
                "name": container["name"],
                "image": container["image"],
                "imageID": "",
                "ready": False,
                "started": False,
                "restartCount": 0,
                "state": {
                    "terminated": {
                        "exitCode": exit_code,
                        "reason": reason,
                        "startedAt": started.get(container["name"], now),
                        "finishedAt": now,
                    }
                },
            }
            for container in current["spec"]["containers"]
        ],
    }
    kubectl(
        kubeconfig, "-n", namespace, "patch", "pod", pod, "--subresource=status",
        "--type=strategic", "-p", json.dumps({"status": status}),
    )  # fmt: skip
