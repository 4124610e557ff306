"""What the node tests drive: the cluster script, kubectl, a port-forward to the trainer (as
a kind user reaches it) and the predictor's NodePort (as kind's port mappings expose it)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from kube import REPO, kubectl, kubectl_json

NAMESPACE = "squarenet"
OVERLAY = REPO / "k8s/overlays/kind"
NODE_IP = "10.250.0.2"  # scripts/cluster/node.sh: the node's end of its veth
TOKEN = "kind-local-token"  # noqa: S105 - the kind overlay's stand-in Secret, not a secret
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
FORWARDING = re.compile(r"Forwarding from 127\.0\.0\.1:(\d+)")


@dataclass
class NodeCluster:
    """The control plane with a real node whose state lives in ``state``."""

    state: Path

    @property
    def kubeconfig(self) -> Path:
        return self.state / "kubeconfig"

    def script(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """``scripts/cluster/cluster.sh ARGS`` for this cluster, with NODE=real."""
        return subprocess.run(
            ["bash", str(REPO / "scripts/cluster/cluster.sh"), *args],
            env={**os.environ, "SQUARENET_CLUSTER_DIR": str(self.state), "NODE": "real"},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def kubectl(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return kubectl(self.kubeconfig, *args, **kwargs)

    def get(self, *args: str) -> Any:
        """``kubectl -n squarenet get ARGS -o json``, parsed."""
        return kubectl_json(self.kubeconfig, "-n", NAMESPACE, "get", *args)

    def volume_folder(self, volume: str) -> Path:
        """Where the node keeps a local PersistentVolume's files."""
        return self.state / "node/volumes" / volume


def available(cluster: NodeCluster, deployment: str) -> bool:
    """The Deployment's current template is rolled out and every replica is available."""
    d = cluster.get("deployment", deployment)
    status, wanted = d["status"], d["spec"]["replicas"]
    conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
    return bool(
        status.get("observedGeneration") == d["metadata"]["generation"]
        and status.get("updatedReplicas") == wanted
        and status.get("availableReplicas") == wanted
        and status.get("replicas") == wanted
        and conditions.get("Available") == "True"
    )


def pods(cluster: NodeCluster, component: str) -> list[dict[str, Any]]:
    """The squarenet pods of one component (trainer, predictor, training-job)."""
    selector = f"app.kubernetes.io/component={component}"
    items: list[dict[str, Any]] = cluster.get("pods", "-l", selector)["items"]
    return items


@dataclass
class Trainer:
    """The trainer's REST API through ``kubectl port-forward service/squarenet-trainer``;
    the forward is opened again when its pod went away (a port-forward follows one pod)."""

    cluster: NodeCluster
    process: subprocess.Popen[str] | None = None
    url: str = ""
    headers: dict[str, str] = field(default_factory=lambda: {"Authorization": f"Bearer {TOKEN}"})

    def open(self) -> bool:
        """Start the port-forward; False when kubectl could not (no pod to forward to yet)."""
        self.close()
        self.process = subprocess.Popen(
            [
                "kubectl", f"--kubeconfig={self.cluster.kubeconfig}", "-n", NAMESPACE,
                "port-forward", "service/squarenet-trainer", ":8080", "--address=127.0.0.1",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        match = FORWARDING.search(line)
        if match is None:
            self.close()
            return False
        self.url = f"http://127.0.0.1:{match.group(1)}"
        return True

    def close(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
            self.process = None

    def request(self, method: str, path: str, body: Any = None) -> httpx.Response | None:
        """The answer, or None when the forward broke (it is opened again for the next try)."""
        if (self.process is None or self.process.poll() is not None) and not self.open():
            return None
        try:
            return httpx.request(
                method, self.url + path, json=body, headers=self.headers, timeout=30
            )
        except httpx.TransportError:
            self.open()
            return None

    def call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        """The answer, trying again (for up to 2 minutes) while the forward is reopened."""
        deadline = time.monotonic() + 120
        while True:
            response = self.request(method, path, body)
            if response is not None:
                return response
            if time.monotonic() > deadline:
                pytest.fail(f"{method} {path}: no answer through kubectl port-forward")
            time.sleep(1)

    def submit(self, params: dict[str, Any]) -> str:
        response = self.call("POST", "/v1/jobs", params)
        assert response.status_code == 202, response.text
        job_id: str = response.json()["id"]
        return job_id

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.call("GET", f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        return job

    def settled(self, job_id: str) -> dict[str, Any] | None:
        job = self.job(job_id)
        return job if job["state"] in TERMINAL else None

    def training(self, job_id: str) -> dict[str, Any] | None:
        """The job once its pod has trained at least one epoch."""
        job = self.job(job_id)
        assert job["state"] in ("QUEUED", "RUNNING"), job
        return job if job["state"] == "RUNNING" and job["progress"]["epoch"] >= 1 else None

    def versions(self) -> list[int]:
        response = self.call("GET", "/v1/models")
        assert response.status_code == 200, response.text
        return sorted(entry["version"] for entry in response.json()["models"])


def node_port_service(cluster: NodeCluster) -> int:
    """A NodePort Service for the predictor's gRPC port (what a kind user maps with
    extraPortMappings); its port on the node."""
    manifest = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "squarenet-predictor-node-port", "namespace": NAMESPACE},
        "spec": {
            "type": "NodePort",
            "selector": {
                "app.kubernetes.io/name": "squarenet",
                "app.kubernetes.io/component": "predictor",
            },
            "ports": [{"name": "grpc", "port": 50051, "targetPort": "grpc"}],
        },
    }
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
    service = cluster.get("service", "squarenet-predictor-node-port")
    port: int = service["spec"]["ports"][0]["nodePort"]
    return port
