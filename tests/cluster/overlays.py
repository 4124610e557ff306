"""Deploying an overlay on the test control plane as a user would, plus what only a real
cloud or cluster would have provided (a StorageClass, a volume, a CSI driver, a Secret
created by hand), derived from the rendered overlay instead of restated.

The overlays themselves are never edited: what the control plane lacks, a test provides.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.deploy_manifests import REPO, all_of, find, render
from kube import kubectl

Manifest = dict[str, Any]
NAMESPACE = "squarenet"
STORE_CLAIM = "squarenet-models"
STORE_VOLUME = "squarenet-models-provided"
PROVIDED_LABEL = {"squarenet.test/provided": "true"}
ROLLOUT_TIMEOUT = "120s"


def overlay_path(overlay: str) -> Path:
    """``k8s/overlays/<overlay>``."""
    return REPO / "k8s/overlays" / overlay


def _kind_storage(claim: Manifest) -> list[Manifest]:
    """kind's `standard` class (bound once the pod's node is chosen) and a node-local volume
    on the first fake node, like those kind's local-path provisioner makes. No provisioner
    runs here, so the class says so: the scheduler then places the claim's pods on the
    volume's node instead of expecting a new volume wherever they go."""
    spec = claim["spec"]
    return [
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": spec["storageClassName"], "labels": PROVIDED_LABEL},
            "provisioner": "kubernetes.io/no-provisioner",
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer",
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": STORE_VOLUME, "labels": PROVIDED_LABEL},
            "spec": {
                "storageClassName": spec["storageClassName"],
                "accessModes": spec["accessModes"],
                "capacity": {"storage": spec["resources"]["requests"]["storage"]},
                # a volume made in advance: kept when its claim goes (the default for those)
                "persistentVolumeReclaimPolicy": "Retain",
                "local": {"path": "/var/local-path-provisioner/squarenet-models"},
                "nodeAffinity": {
                    "required": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {
                                        "key": "kubernetes.io/hostname",
                                        "operator": "In",
                                        "values": ["kwok-node-0"],
                                    }
                                ]
                            }
                        ]
                    }
                },
            },
        },
    ]


def _gke_storage(claim: Manifest, storage_class: Manifest) -> list[Manifest]:
    """The Filestore CSI driver as GKE registers it, and the volume its provisioner would
    make for the claim: the overlay's class decides driver, mount options and reclaim policy."""
    spec = claim["spec"]
    driver = storage_class["provisioner"]
    return [
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "CSIDriver",
            "metadata": {"name": driver, "labels": PROVIDED_LABEL},
            "spec": {"attachRequired": False, "podInfoOnMount": False},
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": STORE_VOLUME, "labels": PROVIDED_LABEL},
            "spec": {
                "storageClassName": storage_class["metadata"]["name"],
                "accessModes": spec["accessModes"],
                "capacity": {"storage": spec["resources"]["requests"]["storage"]},
                "persistentVolumeReclaimPolicy": storage_class["reclaimPolicy"],
                "mountOptions": storage_class["mountOptions"],
                "csi": {
                    "driver": driver,
                    "volumeHandle": "modeInstance/europe-west1-b/squarenet-test/vol1",
                    "volumeAttributes": {"ip": "10.0.0.2", "volume": "vol1"},
                },
            },
        },
    ]


def cluster_provided(overlay: str, docs: list[Manifest]) -> list[Manifest]:
    """Cluster-wide objects a real cluster of that kind has and the control plane lacks."""
    claim = find(docs, "PersistentVolumeClaim", STORE_CLAIM)
    if overlay == "kind":
        return _kind_storage(claim)
    storage_class = find(docs, "StorageClass", claim["spec"]["storageClassName"])
    return _gke_storage(claim, storage_class)


def hand_made(docs: list[Manifest]) -> list[Manifest]:
    """What the overlay's instructions tell a user to create before applying (README): on
    GKE, the namespace and the API token's Secret."""
    referenced = {
        ref["secretKeyRef"]["name"]
        for deployment in all_of(docs, "Deployment")
        for container in deployment["spec"]["template"]["spec"]["containers"]
        for ref in (env.get("valueFrom", {}) for env in container.get("env", []))
        if "secretKeyRef" in ref
    }
    generated = {doc["metadata"]["name"] for doc in all_of(docs, "Secret")}
    missing = sorted(referenced - generated)
    if not missing:
        return []
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    secrets: list[Manifest] = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "stringData": {"token": "cluster-test-token"},
        }
        for name in missing
    ]
    return [namespace, *secrets]


@dataclass(frozen=True)
class Overlay:
    """One overlay as rendered, with what the test brings for it."""

    name: str
    docs: list[Manifest]
    provided: list[Manifest]
    prepared: list[Manifest]

    @property
    def path(self) -> Path:
        return overlay_path(self.name)

    @classmethod
    def load(cls, name: str) -> Overlay:
        docs = render(name)
        return cls(name, docs, cluster_provided(name, docs), hand_made(docs))


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


def as_json_list(docs: list[Manifest]) -> str:
    """Objects as one kubectl input (a v1 List)."""
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})


def kind_and_name(doc: Manifest) -> str:
    """``kind/name`` for kubectl (the API group too, so the kind is never ambiguous)."""
    group = doc["apiVersion"].rpartition("/")[0]
    resource = doc["kind"].lower() + (f".{group}" if group else "")
    return f"{resource}/{doc['metadata']['name']}"


def differences(written: Any, stored: Any, where: str = "") -> list[str]:
    """Every place where ``stored`` lost or changed what ``written`` says; fields the API
    added (defaults, status) are not differences."""
    if isinstance(written, dict):
        if not isinstance(stored, dict):
            return [f"{where}: written a mapping, stored {stored!r}"]
        found: list[str] = []
        for key, value in written.items():
            if key not in stored:
                found.append(f"{where}.{key}: dropped")
            else:
                found += differences(value, stored[key], f"{where}.{key}")
        return found
    if isinstance(written, list):
        if not isinstance(stored, list) or len(stored) != len(written):
            return [f"{where}: written {written!r}, stored {stored!r}"]
        return [
            diff
            for index, (item, kept) in enumerate(zip(written, stored, strict=True))
            for diff in differences(item, kept, f"{where}[{index}]")
        ]
    if written != stored:
        return [f"{where}: written {written!r}, stored {stored!r}"]
    return []


def image_name(image: str) -> str:
    """An image reference without its tag (kustomize's `images:` name)."""
    return re.sub(r":[^:/]+$", "", image)
