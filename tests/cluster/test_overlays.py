"""Both overlays against a real API server, controller manager and scheduler (kwok plays
the nodes' kubelets): accepted without a warning, Pod Security `restricted` enforced,
rolled out, storage bound, Services with endpoints, every object stored as written, RBAC as
the components need it, a rolling update as the strategy says, and a clean removal.

The tests of a class run in order on one deployment: the rolling update changes it and the
last test deletes it.
"""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest
from deploy.deploy_manifests import all_of, deployment, find
from kube import NODES, kubectl, kubectl_json, service_account_kubeconfig, temporary_namespace
from support import wait_for

from cluster import rbac
from cluster.overlays import (
    NAMESPACE,
    STORE_CLAIM,
    STORE_VOLUME,
    Deployed,
    Manifest,
    apply,
    differences,
    image_name,
    kind_and_name,
    roll_out,
)
from cluster.rollout import PodWatch, ready

pytestmark = pytest.mark.cluster

REFUSED_BY_POD_SECURITY = 'violates PodSecurity "restricted:latest"'


def _pod_from_template(docs: list[Manifest], component: str, name: str) -> Manifest:
    """A bare Pod made from a Deployment's pod template (what its ReplicaSet would create)."""
    template = copy.deepcopy(deployment(docs, component)["spec"]["template"])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"squarenet.test": name}},
        "spec": template["spec"],
    }


def _no_seccomp(pod: Manifest) -> None:
    del pod["spec"]["securityContext"]["seccompProfile"]
    del pod["spec"]["containers"][0]["securityContext"]["seccompProfile"]


def _root_user(pod: Manifest) -> None:
    pod["spec"]["securityContext"].update(runAsNonRoot=False, runAsUser=0)
    pod["spec"]["containers"][0]["securityContext"]["runAsNonRoot"] = False


def _privilege_escalation(pod: Manifest) -> None:
    pod["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True


def _added_capability(pod: Manifest) -> None:
    pod["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] = ["CHOWN"]


def _host_path(pod: Manifest) -> None:
    pod["spec"]["volumes"].append({"name": "host", "hostPath": {"path": "/var/lib"}})


# What each breach does to the trainer's (compliant) pod, and the words the plugin refuses it with.
BREACHES = {
    "seccomp": (_no_seccomp, "seccompProfile"),
    "root": (_root_user, "runAsNonRoot != true"),
    "privilege-escalation": (_privilege_escalation, "allowPrivilegeEscalation != false"),
    "capability": (
        _added_capability,
        'unrestricted capabilities (container "trainer" must not include "CHOWN"',
    ),
    "host-path": (_host_path, "restricted volume types"),
}


def _endpoint_addresses(kubeconfig: Path, service: str) -> list[str]:
    slices = kubectl_json(
        kubeconfig, "-n", NAMESPACE, "get", "endpointslices",
        "-l", f"kubernetes.io/service-name={service}",
    )  # fmt: skip
    return sorted(
        address
        for endpoint_slice in slices["items"]
        for endpoint in endpoint_slice.get("endpoints") or []
        if endpoint["conditions"].get("ready")
        for address in endpoint["addresses"]
    )


def _selected_pod_ips(kubeconfig: Path, selector: dict[str, str]) -> list[str]:
    labels = ",".join(f"{key}={value}" for key, value in selector.items())
    pods = kubectl_json(kubeconfig, "-n", NAMESPACE, "get", "pods", "-l", labels)["items"]
    return sorted(pod["status"]["podIP"] for pod in pods if ready(pod))


def _can_i(kubeconfig: Path, account: str, verb: str, resource: str) -> bool:
    result = kubectl(
        kubeconfig, "auth", "can-i", verb, resource, "-n", NAMESPACE,
        f"--as=system:serviceaccount:{NAMESPACE}:{account}",
        check=False,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    return result.returncode == 0


def _rules(kubeconfig: Path, *identity: str) -> set[tuple[str, str, str, tuple[str, ...]]]:
    """(group, resource, verb, the object names it is limited to or ()) the authorizer allows
    in the namespace (SelfSubjectRulesReview, what `kubectl auth can-i --list` shows),
    wildcards kept as "*"."""
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectRulesReview",
        "spec": {"namespace": NAMESPACE},
    }
    answer = json.loads(
        kubectl(
            kubeconfig,
            "create",
            "--validate=false",
            "-f",
            "-",
            "-o",
            "json",
            *identity,
            stdin=json.dumps(review),
        ).stdout
    )
    assert not answer["status"].get("incomplete"), answer["status"]
    return {
        (group, resource, verb, tuple(sorted(rule.get("resourceNames", []))))
        for rule in answer["status"]["resourceRules"]
        for group in rule.get("apiGroups", [""])
        for resource in rule.get("resources", [])
        for verb in rule["verbs"]
    }


class OverlayChecks:
    """The checks every overlay passes; a subclass names the overlay."""

    overlay: ClassVar[str]

    def test_apply_is_accepted_without_a_warning(self, deployed: Deployed) -> None:
        """Server-side apply takes every object, and the API server warns about nothing:
        no Pod Security warning, no deprecated API or field."""
        assert deployed.applied.stderr == "", f"the API server warned:\n{deployed.applied.stderr}"
        lines = deployed.applied.stdout.splitlines()
        assert len(lines) == len(deployed.overlay.docs)
        assert all(line.endswith(" serverside-applied") for line in lines), lines

    def test_a_warning_would_be_seen(self, deployed: Deployed) -> None:
        """The control for the test above: the trainer's Deployment without its seccomp
        profile, applied the same way, makes the API server warn on stderr."""
        written = copy.deepcopy(deployment(deployed.overlay.docs, "trainer"))
        pod = {"spec": written["spec"]["template"]["spec"]}
        _no_seccomp(pod)
        result = kubectl(
            deployed.kubeconfig, "apply", "--server-side", "--dry-run=server", "-f", "-",
            stdin=json.dumps(written),
        )  # fmt: skip
        assert 'Warning: would violate PodSecurity "restricted:latest"' in result.stderr

    def test_every_object_reads_back_as_written(self, deployed: Deployed) -> None:
        """Nothing was dropped or changed on the way in (a field behind a disabled feature
        gate would vanish silently): PDB, HPA, NetworkPolicies and all the rest."""
        kinds = {doc["kind"] for doc in deployed.overlay.docs}
        assert {"PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy"} <= kinds
        found = []
        for doc in deployed.overlay.docs:
            namespace = (
                ["-n", doc["metadata"]["namespace"]] if "namespace" in doc["metadata"] else []
            )
            stored = kubectl_json(deployed.kubeconfig, *namespace, "get", kind_and_name(doc))
            written = {key: value for key, value in doc.items() if key != "metadata"}
            written["metadata"] = {
                key: doc["metadata"][key]
                for key in ("name", "namespace", "labels", "annotations")
                if key in doc["metadata"]
            }
            found += differences(written, stored, kind_and_name(doc))
        assert found == []

    def test_namespace_enforces_restricted_and_admits_the_deployments_pods(
        self, deployed: Deployed
    ) -> None:
        """Every pod the ReplicaSets create is admitted under `restricted`: as many pods as
        replicas, and no FailedCreate event."""
        namespace = kubectl_json(deployed.kubeconfig, "get", "namespace", NAMESPACE)
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        for written in all_of(deployed.overlay.docs, "Deployment"):
            labels = written["spec"]["selector"]["matchLabels"]
            pods = kubectl_json(
                deployed.kubeconfig, "-n", NAMESPACE, "get", "pods",
                "-l", ",".join(f"{k}={v}" for k, v in labels.items()),
            )["items"]  # fmt: skip
            assert len(pods) == written["spec"]["replicas"]
        events = kubectl_json(
            deployed.kubeconfig, "-n", NAMESPACE, "get", "events",
            "--field-selector", "reason=FailedCreate",
        )  # fmt: skip
        assert [event["message"] for event in events["items"]] == []

    def test_compliant_pod_is_admitted(self, deployed: Deployed) -> None:
        """The trainer's pod as a bare Pod passes admission (the control for the next test)."""
        pod = _pod_from_template(deployed.overlay.docs, "trainer", "compliant")
        result = kubectl(
            deployed.kubeconfig, "create", "--dry-run=server", "-f", "-", stdin=json.dumps(pod)
        )
        assert result.stderr == ""

    @pytest.mark.parametrize("breach", sorted(BREACHES))
    def test_non_compliant_pod_is_refused(self, deployed: Deployed, breach: str) -> None:
        """The same pod with one breach of `restricted` is refused by the PodSecurity admission
        plugin, which names the breach; in a `baseline` namespace the same pod is admitted,
        so it is the namespace's labels that refuse it."""
        spoil, reason = BREACHES[breach]
        pod = _pod_from_template(deployed.overlay.docs, "trainer", f"breach-{breach}")
        spoil(pod)
        result = kubectl(
            deployed.kubeconfig, "create", "-f", "-", stdin=json.dumps(pod), check=False
        )
        assert result.returncode != 0
        assert REFUSED_BY_POD_SECURITY in result.stderr
        assert reason in result.stderr
        missing = kubectl(
            deployed.kubeconfig, "-n", NAMESPACE, "get", "pod", f"breach-{breach}", check=False
        )
        assert "NotFound" in missing.stderr
        if breach == "host-path":
            return  # baseline refuses host paths too
        with temporary_namespace(deployed.kubeconfig, "baseline", "baseline") as namespace:
            pod["metadata"]["namespace"] = namespace
            del pod["spec"]["serviceAccountName"]  # that account lives in the other namespace
            admitted = kubectl(
                deployed.kubeconfig, "create", "--dry-run=server", "-f", "-", stdin=json.dumps(pod)
            )
            assert admitted.stderr == ""

    def test_deployments_are_available_on_the_fake_nodes(self, deployed: Deployed) -> None:
        """`kubectl rollout status` returned (fixture); each Deployment reports Available with
        every replica ready, on the kwok nodes."""
        for written in all_of(deployed.overlay.docs, "Deployment"):
            name = written["metadata"]["name"]
            stored = kubectl_json(deployed.kubeconfig, "-n", NAMESPACE, "get", "deployment", name)
            conditions = {c["type"]: c["status"] for c in stored["status"]["conditions"]}
            assert conditions["Available"] == "True", stored["status"]
            assert stored["status"]["readyReplicas"] == written["spec"]["replicas"]
            labels = written["spec"]["selector"]["matchLabels"]
            pods = kubectl_json(
                deployed.kubeconfig, "-n", NAMESPACE, "get", "pods",
                "-l", ",".join(f"{k}={v}" for k, v in labels.items()),
            )["items"]  # fmt: skip
            assert {pod["spec"]["nodeName"] for pod in pods} <= set(NODES)
            assert all(pod["status"]["phase"] == "Running" for pod in pods)

    def test_store_claim_binds_to_the_provided_volume(self, deployed: Deployed) -> None:
        """The store's claim is Bound to the volume the test provided (same class, size, modes)."""

        def bound() -> Manifest | None:
            claim: Manifest = kubectl_json(
                deployed.kubeconfig, "-n", NAMESPACE, "get", "pvc", STORE_CLAIM
            )
            return claim if claim["status"].get("phase") == "Bound" else None

        claim = wait_for(bound, 60, "the store's claim to bind")
        assert claim["spec"]["volumeName"] == STORE_VOLUME
        volume = kubectl_json(deployed.kubeconfig, "get", "pv", STORE_VOLUME)
        assert volume["status"]["phase"] == "Bound"
        assert volume["spec"]["claimRef"]["name"] == STORE_CLAIM

    def test_services_have_endpoints(self, deployed: Deployed) -> None:
        """Each Service's EndpointSlices list exactly the ready pods its selector picks."""
        for service in all_of(deployed.overlay.docs, "Service"):
            name = service["metadata"]["name"]
            expected = _selected_pod_ips(deployed.kubeconfig, service["spec"]["selector"])
            assert expected, f"no ready pod behind {name}"

            def listed(name: str = name, expected: list[str] = expected) -> bool:
                return _endpoint_addresses(deployed.kubeconfig, name) == expected

            wait_for(listed, 60, f"endpoints of {name}")

    @pytest.mark.parametrize("account", sorted(rbac.GRANTS))
    def test_rbac_matrix(self, deployed: Deployed, account: str) -> None:
        """`kubectl auth can-i --as=<account>` answers yes for each row of the account's table
        and no for every probe beyond it; a verb limited to named objects, yes for those only."""
        assert find(deployed.overlay.docs, "ServiceAccount", account)
        answers = [
            (
                group,
                resource,
                verb,
                name,
                _can_i(
                    deployed.kubeconfig,
                    account,
                    verb,
                    resource + (f".{group}" if group else "") + (f"/{name}" if name else ""),
                ),
            )
            for group, resource, verb, name, _ in rbac.matrix(account)
        ]
        assert answers == rbac.matrix(account)

    @pytest.mark.parametrize("account", sorted(rbac.GRANTS))
    def test_service_account_holds_nothing_else(self, deployed: Deployed, account: str) -> None:
        """Everything the authorizer lets the account do in the namespace, less what any
        ServiceAccount there may do (an account without bindings), is exactly its table."""
        user = f"--as=system:serviceaccount:{NAMESPACE}:{account}"
        nobody = f"--as=system:serviceaccount:{NAMESPACE}:no-bindings-at-all"
        extra = _rules(deployed.kubeconfig, user) - _rules(deployed.kubeconfig, nobody)
        assert extra == rbac.granted(account)

    def test_every_service_account_is_in_the_table(self, deployed: Deployed) -> None:
        """A ServiceAccount added to the manifests needs its rows (maybe none) in the table."""
        accounts = {
            doc["metadata"]["name"] for doc in all_of(deployed.overlay.docs, "ServiceAccount")
        }
        assert accounts == set(rbac.GRANTS)

    def test_service_account_token_is_judged_by_rbac(
        self, deployed: Deployed, tmp_path: Path
    ) -> None:
        """A TokenRequest token authenticates as the trainer's account, and the real
        authorizer refuses what its table does not grant."""
        config = service_account_kubeconfig(
            deployed.kubeconfig, NAMESPACE, "squarenet-trainer", tmp_path / "trainer.kubeconfig"
        )
        review = kubectl_json(config, "auth", "whoami")
        assert (
            review["status"]["userInfo"]["username"]
            == f"system:serviceaccount:{NAMESPACE}:squarenet-trainer"
        )
        refused = kubectl(config, "get", "secrets", check=False)
        assert refused.returncode != 0
        assert "forbidden" in refused.stderr

    def test_rolling_update_follows_the_strategy(self, deployed: Deployed, tmp_path: Path) -> None:
        """New image tags through kustomize (`images:` in an overlay on top of this one)
        replace every pod of both Deployments; while they do, never more than replicas +
        maxSurge pods live and never fewer than replicas - maxUnavailable are ready, and the
        surge is used."""
        tag = f"rolled-{int(time.time())}"
        deployments = all_of(deployed.overlay.docs, "Deployment")
        images = [d["spec"]["template"]["spec"]["containers"][0]["image"] for d in deployments]
        (tmp_path / "kustomization.yaml").write_text(
            json.dumps({
                "resources": [os.path.relpath(deployed.overlay.path, tmp_path)],
                "images": [{"name": image_name(image), "newTag": tag} for image in images],
            })
        )  # fmt: skip
        watches = [
            PodWatch(
                deployed.kubeconfig, d["spec"]["selector"]["matchLabels"], tmp_path / f"{i}.json"
            )
            for i, d in enumerate(deployments)
        ]
        try:
            for watch, written in zip(watches, deployments, strict=True):

                def listed(w: PodWatch = watch, n: int = written["spec"]["replicas"]) -> bool:
                    return len(w.replay()) >= n

                wait_for(listed, 30, "the watch's initial list")
            # The states before the update: the first ones list the pods one by one.
            before = [len(watch.events()) for watch in watches]
            updated = apply(deployed.kubeconfig, tmp_path)
            assert updated.stderr == ""
            roll_out(deployed.kubeconfig, deployed.overlay)
            for watch, written, image in zip(watches, deployments, images, strict=True):
                final = (written["spec"]["replicas"],) * 2 + ({f"{image_name(image)}:{tag}"},)

                def finished(w: PodWatch = watch, final: tuple[Any, ...] = final) -> bool:
                    states = w.replay()
                    return bool(states) and states[-1] == final

                wait_for(finished, 60, f"{written['metadata']['name']} to run {tag} only")
        finally:
            for watch in watches:
                watch.stop()
        for watch, written, listed_events in zip(watches, deployments, before, strict=True):
            replicas = written["spec"]["replicas"]
            strategy = written["spec"]["strategy"]["rollingUpdate"]
            states = watch.replay()[listed_events - 1 :]
            most = replicas + strategy["maxSurge"]
            least = replicas - strategy["maxUnavailable"]
            assert max(live for live, _, _ in states) == most, states
            assert min(ready for _, ready, _ in states) >= least, states

    def test_delete_removes_everything_and_keeps_the_volume(self, deployed: Deployed) -> None:
        """`kubectl delete -k` removes every object of the overlay (and the namespace with what
        was in it); the volume stays, Released, as its reclaim policy (Retain) says."""
        kubectl(deployed.kubeconfig, "delete", "-k", str(deployed.overlay.path), "--wait=true")
        for doc in deployed.overlay.docs:
            namespace = (
                ["-n", doc["metadata"]["namespace"]] if "namespace" in doc["metadata"] else []
            )
            gone = kubectl(deployed.kubeconfig, *namespace, "get", kind_and_name(doc), check=False)
            assert "NotFound" in gone.stderr, f"{kind_and_name(doc)} is still there"
        volume = kubectl_json(deployed.kubeconfig, "get", "pv", STORE_VOLUME)
        assert volume["spec"]["persistentVolumeReclaimPolicy"] == "Retain"

        def released() -> bool:
            volume = kubectl_json(deployed.kubeconfig, "get", "pv", STORE_VOLUME)
            return bool(volume["status"]["phase"] == "Released")

        wait_for(released, 60, "the volume to be Released")


class TestKindOverlay(OverlayChecks):
    """`k8s/overlays/kind`, with kind's `standard` class and a node-local volume provided."""

    overlay = "kind"


class TestGkeOverlay(OverlayChecks):
    """`k8s/overlays/gke`, with the Filestore CSI driver, a Filestore volume and the API
    token's Secret provided (the README's steps before applying)."""

    overlay = "gke"
