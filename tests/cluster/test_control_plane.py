"""The control plane itself: nodes Ready, `up` idempotent, a failed start that names the
component and stops the rest, and a Job's pod that only its "kubelet" (the test) finishes."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kube import (
    CLUSTER_SCRIPT,
    NODES,
    REPO,
    kubectl,
    kubectl_json,
    report_pod_finished,
    temporary_namespace,
)
from support import wait_for

pytestmark = pytest.mark.cluster

KWOK_STAGES = REPO / "scripts/cluster/kwok.yaml"


def _script(action: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(CLUSTER_SCRIPT), action],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **env},
    )


def _pids(state: Path) -> dict[str, str]:
    return {pid.stem: pid.read_text().strip() for pid in (state / "pids").glob("*.pid")}


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention ``text`` (a state folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        if entry.name.isdigit() and text in command:
            found.append(command)
    return found


def test_two_fake_nodes_are_ready(control_plane: Path) -> None:
    """Both kwok nodes registered and Ready, in two zones."""
    nodes = kubectl_json(control_plane, "get", "nodes")["items"]
    ready = {
        node["metadata"]["name"]: node["metadata"]["labels"]["topology.kubernetes.io/zone"]
        for node in nodes
        if any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])
    }
    assert set(ready) == set(NODES)
    assert len(set(ready.values())) == 2


def test_fake_nodes_heartbeat_through_their_leases(control_plane: Path) -> None:
    """kwok renews each node's Lease, as a kubelet does; without it the node controller
    would call the nodes NotReady after its grace period and unready their pods."""

    def renewals() -> dict[str, str]:
        leases = kubectl_json(control_plane, "-n", "kube-node-lease", "get", "leases")["items"]
        return {lease["metadata"]["name"]: lease["spec"]["renewTime"] for lease in leases}

    first = renewals()
    assert set(first) == set(NODES)

    def renewed() -> bool:
        now = renewals()
        return all(now[node] != first[node] for node in NODES)

    wait_for(renewed, 60, "both node leases to be renewed")


def test_up_again_says_so_and_changes_nothing(control_plane: Path) -> None:
    """A second `up` finds it running, says so, and starts nothing."""
    state = control_plane.parent
    before = _pids(state)
    result = _script("up")
    assert result.returncode == 0, result.stderr
    assert "already up" in result.stderr
    assert _pids(state) == before
    assert _script("status").returncode == 0


def test_failed_start_names_the_component_and_stops_the_rest(
    control_plane: Path, tmp_path: Path
) -> None:
    """An API server that cannot start (an unknown flag) fails `up` with its name and log,
    and etcd, already started for it, is stopped; the running cluster is untouched (its own
    ports and state)."""
    state = tmp_path / "broken"
    result = _script(
        "up", SQUARENET_CLUSTER_DIR=str(state), SQUARENET_CLUSTER_APISERVER_FLAGS="--no-such-flag"
    )
    assert result.returncode == 1
    assert "kube-apiserver failed to start" in result.stderr
    assert f"{state}/logs/kube-apiserver.log" in result.stderr
    assert "unknown flag: --no-such-flag" in (state / "logs/kube-apiserver.log").read_text()
    assert "etcd" in result.stderr.split("stopped what was started")[1]
    assert _processes_mentioning(str(state)) == []
    assert _script("status").returncode == 0
    assert _script("down", SQUARENET_CLUSTER_DIR=str(state)).returncode == 0
    assert not state.exists()


def test_no_stage_finishes_a_pod() -> None:
    """kwok's stages start pods and delete them, but none sets a pod's phase to Succeeded or
    Failed: a Job's pod ends only when its node reports it."""
    stages = [doc for doc in yaml.safe_load_all(KWOK_STAGES.read_text()) if doc]
    pod_stages = [s for s in stages if s["spec"]["resourceRef"]["kind"] == "Pod"]
    assert {s["metadata"]["name"] for s in pod_stages} == {"pod-ready", "pod-delete"}
    for stage in pod_stages:
        template = stage["spec"]["next"].get("statusTemplate", "")
        assert "Succeeded" not in template and "Failed" not in template


def _job(name: str) -> dict[str, Any]:
    container = {
        "name": "train",
        "image": "squarenet-trainer:dev",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "securityContext": {"runAsUser": 10001},
                    "containers": [container],
                }
            },
        },
    }


@pytest.mark.parametrize(("exit_code", "condition"), [(0, "Complete"), (1, "Failed")])
def test_job_pod_runs_until_its_node_reports_the_end(
    control_plane: Path, exit_code: int, condition: str
) -> None:
    """A Job's pod is scheduled and reported Running and Ready by kwok; it stays Running
    until the test, as its kubelet, reports the exit code; then the Job controller ends
    the Job Complete or Failed accordingly."""
    with temporary_namespace(control_plane, "job") as namespace:
        kubectl(
            control_plane, "-n", namespace, "create", "-f", "-", stdin=json.dumps(_job("train"))
        )

        def running_pod() -> dict[str, Any] | None:
            pods = kubectl_json(
                control_plane, "-n", namespace, "get", "pods", "-l", "job-name=train"
            )["items"]
            if pods and pods[0]["status"].get("phase") == "Running":
                return dict(pods[0])
            return None

        pod = wait_for(running_pod, 60, "the Job's pod to run")
        assert pod["spec"]["nodeName"] in NODES
        job = kubectl_json(control_plane, "-n", namespace, "get", "job", "train")
        assert job["status"].get("active") == 1
        assert "conditions" not in job["status"] or all(
            c["type"] not in ("Complete", "Failed") for c in job["status"]["conditions"]
        )

        report_pod_finished(control_plane, namespace, pod["metadata"]["name"], exit_code)

        def ended() -> bool:
            status = kubectl_json(control_plane, "-n", namespace, "get", "job", "train")["status"]
            return any(
                c["type"] == condition and c["status"] == "True"
                for c in status.get("conditions", [])
            )

        wait_for(ended, 60, f"the Job to be {condition}")
