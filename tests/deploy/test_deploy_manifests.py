"""The Kubernetes manifests: they render, validate strictly, pass the policy scan, and agree
with the Dockerfiles and the services' own settings (read from the rendered YAML)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from deploy.deploy_manifests import (
    COMPONENTS,
    OVERLAYS,
    REPO,
    all_of,
    built_image_names,
    container_env,
    deployment,
    dockerfile,
    find,
    kustomize,
    main_container,
    pod_spec,
    port_number,
    pre_stop_seconds,
    render,
    rendered_text,
)
from predictor_service.settings import PredictorSettings
from trainer_service.api.gunicorn_conf import SHM
from trainer_service.lifecycle import RunState
from trainer_service.params import TrainingParams
from trainer_service.runner.kubernetes import job_manifest, lease_name
from trainer_service.runner.records import Job, Progress, utc_now
from trainer_service.settings import Settings

# The oldest Kubernetes release the manifests support (native sleep pre-stop hooks are on by
# default from 1.30) and the newest kubernetes-validate ships schemas for.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
KUBERNETES_VALIDATE = str(Path(sys.executable).with_name("kubernetes-validate"))
SETTINGS: dict[str, type[BaseSettings]] = {"trainer": Settings, "predictor": PredictorSettings}
GKE_REGISTRY = "REGION-docker.pkg.dev/PROJECT/squarenet"
OWN_THE_STORE = REPO / "k8s/admin/own-the-store.yaml"
# What Pod Security's `baseline` lets a container add (its "Capabilities" control).
BASELINE_CAPABILITIES = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}  # fmt: skip


def validate(path: Path, version: str) -> subprocess.CompletedProcess[str]:
    """kubernetes-validate --strict: unknown fields and wrong types are errors."""
    return subprocess.run(
        [KUBERNETES_VALIDATE, "--strict", "--quiet", "-k", version, str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("target", ["base", *OVERLAYS])
def test_every_target_renders_the_whole_application(target: str) -> None:
    docs = render(target)
    kinds = sorted(doc["kind"] for doc in docs)
    for kind, count in {
        "Namespace": 1,
        "ServiceAccount": 2,
        "PersistentVolumeClaim": 1,
        "ConfigMap": 2,
        "Deployment": 2,
        "PodDisruptionBudget": 1,
        "HorizontalPodAutoscaler": 1,
        "NetworkPolicy": 3,
    }.items():
        assert kinds.count(kind) == count, f"{target}: {kind}"
    assert {svc["metadata"]["name"] for svc in all_of(docs, "Service")} >= {
        "squarenet-trainer",
        "squarenet-predictor",
        "squarenet-predictor-headless",
    }
    namespaced = [doc for doc in docs if doc["kind"] not in ("Namespace", "StorageClass")]
    assert {doc["metadata"]["namespace"] for doc in namespaced} == {"squarenet"}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("target", ["base", *OVERLAYS])
def test_manifests_validate_strictly(target: str, version: str, tmp_path: Path) -> None:
    rendered = tmp_path / f"{target}.yaml"
    rendered.write_text(rendered_text(target), encoding="utf-8")
    result = validate(rendered, version)
    assert result.returncode == 0, result.stdout + result.stderr


def test_strict_validation_rejects_a_misspelt_field(tmp_path: Path) -> None:
    """The validator is strict for real: the same manifests with one typo fail."""
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        rendered_text("kind").replace("readOnlyRootFilesystem", "readOnlyRootFilesytem"),
        encoding="utf-8",
    )
    result = validate(broken, KUBERNETES_VERSIONS[0])
    assert result.returncode != 0
    assert "readOnlyRootFilesytem" in result.stdout + result.stderr


def test_policy_scan_passes_every_overlay() -> None:
    """checkov (in its own virtualenv, installed on first use) finds no failed check."""
    result = subprocess.run(
        ["bash", str(REPO / "scripts/checkov.sh")], capture_output=True, text=True, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for overlay in OVERLAYS:
        assert f"checkov: k8s/overlays/{overlay}" in output
    assert "Failed checks: 0" in output


def test_policy_scan_fails_a_privileged_pod(tmp_path: Path) -> None:
    """The scan can fail: a privileged, root, writable-root variant is reported."""
    docs = render("kind")
    container = main_container(docs, "predictor")
    container["securityContext"] = {"privileged": True, "runAsUser": 0}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump_all(docs), encoding="utf-8")
    checkov = REPO / "var/venv-checkov/bin/checkov"
    if not checkov.exists():
        subprocess.run(["bash", str(REPO / "scripts/checkov.sh"), "kind"], check=True)
    result = subprocess.run(
        [
            str(checkov),
            "--quiet",
            "--compact",
            "--skip-download",
            "--framework",
            "kubernetes",
            "--directory",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "CKV_K8S_16" in result.stdout  # "Container should not be privileged"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_skipped_policy_check_is_justified(overlay: str) -> None:
    for doc in render(overlay):
        for key, value in doc["metadata"].get("annotations", {}).items():
            if key.startswith("checkov.io/skip"):
                check, _, reason = value.partition("=")
                assert check.startswith("CKV_"), value
                assert len(reason.split()) >= 6, f"{doc['metadata']['name']}: {value}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_meet_the_restricted_pod_security_profile(overlay: str) -> None:
    docs = render(overlay)
    labels = find(docs, "Namespace", "squarenet")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    for component in COMPONENTS:
        spec = pod_spec(docs, component)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        # only the trainer calls the API server (its kubernetes executor)
        assert spec["automountServiceAccountToken"] is (component == "trainer")
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"] == {"drop": ["ALL"]}
            resources = container["resources"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[kind]), f"{component} {kind}"


def test_the_trainer_role_holds_exactly_what_the_kubernetes_executor_needs() -> None:
    from trainer_service.runner.kubernetes import PERMISSIONS

    for overlay in OVERLAYS:
        docs = render(overlay)
        role = find(docs, "Role", "squarenet-trainer")
        granted = {
            (group, resource, verb)
            for rule in role["rules"]
            for group in rule["apiGroups"]
            for resource in rule["resources"]
            for verb in rule["verbs"]
        }
        assert granted == set(PERMISSIONS)
        binding = find(docs, "RoleBinding", "squarenet-trainer")
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "squarenet-trainer", "namespace": "squarenet"}
        ]
        config = find(docs, "ConfigMap", "squarenet-trainer")["data"]
        assert config["SQUARENET_EXECUTOR"] == "kubernetes"
        image = pod_spec(docs, "trainer")["containers"][0]["image"]
        assert config["SQUARENET_JOB_IMAGE"] == image


@pytest.mark.parametrize("target", ["base", *OVERLAYS])
def test_the_trainer_mounts_its_token_only_for_the_kubernetes_executor(target: str) -> None:
    """The `local` executor calls no API: its pods get no token; `kubernetes` needs one."""
    docs = render(target)
    executor = container_env(docs, "trainer")["SQUARENET_EXECUTOR"]
    assert executor in ("local", "kubernetes")
    for component in COMPONENTS:
        account = find(docs, "ServiceAccount", f"squarenet-{component}")
        spec = pod_spec(docs, component)
        assert spec["serviceAccountName"] == account["metadata"]["name"]
        # the pod's own field wins over its account's; both default to mounting
        mounted = spec.get(
            "automountServiceAccountToken", account.get("automountServiceAccountToken", True)
        )
        assert mounted is (component == "trainer" and executor == "kubernetes"), component


def copy_of_k8s(tmp_path: Path) -> Path:
    """A copy of k8s/ a test may change and render (``kustomize(copy / "overlays/kind")``)."""
    return Path(shutil.copytree(REPO / "k8s", tmp_path / "k8s"))


def lease_rules(docs: list[dict[str, Any]]) -> set[tuple[str, tuple[str, ...]]]:
    """(verb, the Lease names it is limited to, or ()) of the trainer's Role."""
    role = find(docs, "Role", "squarenet-trainer")
    return {
        (verb, tuple(rule.get("resourceNames", ())))
        for rule in role["rules"]
        if rule["resources"] == ["leases"]
        for verb in rule["verbs"]
    }


@pytest.mark.parametrize("target", ["base", *OVERLAYS])
def test_the_role_reads_and_renews_only_the_installations_lease(
    target: str, tmp_path: Path
) -> None:
    """get and update name the Lease the finalizer of this store claim elects with; create
    cannot be limited by name (the API checks no name before the object exists)."""
    docs = render(target)
    claim = container_env(docs, "trainer")["SQUARENET_STORE_CLAIM"]
    lease = lease_name(Settings.model_validate({"model_store": tmp_path, "store_claim": claim}))
    assert lease == "squarenet-trainer-finalizer-squarenet-models"
    assert lease_rules(docs) == {("create", ()), ("get", (lease,)), ("update", (lease,))}


def test_the_leases_name_follows_the_store_claim(tmp_path: Path) -> None:
    """One place sets the claim (the base's ConfigMap): the Role's Lease name follows it."""
    k8s = copy_of_k8s(tmp_path)
    kustomization = k8s / "base/kustomization.yaml"
    text = kustomization.read_text(encoding="utf-8")
    assert "SQUARENET_STORE_CLAIM=squarenet-models" in text
    kustomization.write_text(
        text.replace("SQUARENET_STORE_CLAIM=squarenet-models", "SQUARENET_STORE_CLAIM=team-b"),
        encoding="utf-8",
    )
    for overlay in OVERLAYS:
        docs = [doc for doc in yaml.safe_load_all(kustomize(k8s / "overlays" / overlay)) if doc]
        assert container_env(docs, "trainer")["SQUARENET_STORE_CLAIM"] == "team-b"
        lease = lease_name(
            Settings.model_validate({"model_store": tmp_path, "store_claim": "team-b"})
        )
        assert lease_rules(docs) == {("create", ()), ("get", (lease,)), ("update", (lease,))}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_job_image_is_the_trainer_image_set_by_images_alone(
    overlay: str, tmp_path: Path
) -> None:
    """`images:` is the one place the overlay names the trainer's image: a new name and tag
    there reach SQUARENET_JOB_IMAGE (through `replacements`) and the ConfigMap's hash, so the
    trainer rolls with it."""
    docs = render(overlay)
    image = main_container(docs, "trainer")["image"]
    assert container_env(docs, "trainer")["SQUARENET_JOB_IMAGE"] == image
    k8s = copy_of_k8s(tmp_path)
    kustomization = k8s / "overlays" / overlay / "kustomization.yaml"
    spec = yaml.safe_load(kustomization.read_text(encoding="utf-8"))
    (entry,) = [item for item in spec["images"] if item["name"] == "squarenet-trainer"]
    entry.update(newName="registry.example/team/squarenet-trainer", newTag="9.9.9")
    kustomization.write_text(yaml.safe_dump(spec), encoding="utf-8")
    changed = [doc for doc in yaml.safe_load_all(kustomize(k8s / "overlays" / overlay)) if doc]
    image = main_container(changed, "trainer")["image"]
    assert image == "registry.example/team/squarenet-trainer:9.9.9"
    assert container_env(changed, "trainer")["SQUARENET_JOB_IMAGE"] == image
    (config,) = main_container(changed, "trainer")["envFrom"]
    (before,) = main_container(docs, "trainer")["envFrom"]
    assert config["configMapRef"]["name"] != before["configMapRef"]["name"]


@pytest.mark.parametrize("component", COMPONENTS)
def test_uid_matches_the_image_user(component: str) -> None:
    image = dockerfile(component)
    assert image.uid >= 10000
    for overlay in OVERLAYS:
        context = pod_spec(render(overlay), component)["securityContext"]
        assert context["runAsUser"] == image.uid
        assert context["runAsGroup"] == image.uid
        assert context["fsGroup"] == image.uid


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("component", COMPONENTS)
def test_environment_names_are_settings_the_service_accepts(
    overlay: str, component: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every SQUARENET_* variable names a setting, and the values pass its validation."""
    env = container_env(render(overlay), component)
    settings_class = SETTINGS[component]
    fields = {f"SQUARENET_{name.upper()}" for name in settings_class.model_fields}
    ours = {name for name in env if name.startswith("SQUARENET_")}
    assert ours, "no SQUARENET_* variable at all"
    assert ours <= fields, f"unknown settings: {sorted(ours - fields)}"
    for name in fields:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value if value is not None else "secret-from-the-cluster")
    settings: Any = settings_class()
    assert str(settings.model_store) == env["SQUARENET_MODEL_STORE"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ports_agree_across_settings_containers_services_and_images(overlay: str) -> None:
    docs = render(overlay)
    for component in COMPONENTS:
        container = main_container(docs, component)
        env = container_env(docs, component)
        exposed = sorted(p["containerPort"] for p in container["ports"])
        assert exposed == sorted(dockerfile(component).expose)
        assert dockerfile(component).env["SQUARENET_PORT"] == env["SQUARENET_PORT"]
        main_port = int(env["SQUARENET_PORT"] or 0)
        assert port_number(container, "http" if component == "trainer" else "grpc") == main_port
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            handler = next(v for k, v in container[probe].items() if isinstance(v, dict))
            assert port_number(container, handler["port"]) == main_port, probe
    predictor = main_container(docs, "predictor")
    metrics_port = container_env(docs, "predictor")["SQUARENET_METRICS_PORT"]
    assert port_number(predictor, "metrics") == int(metrics_port or 0)
    for service in all_of(docs, "Service"):
        component = service["spec"]["selector"]["app.kubernetes.io/component"]
        container = main_container(docs, component)
        for port in service["spec"]["ports"]:
            port_number(container, port["targetPort"])


def test_probe_paths_are_routes_of_the_trainer(tmp_path: Path) -> None:
    """/healthz and /readyz as probed are served by the trainer app itself."""
    from trainer_service.api.app import create_app

    app = create_app(Settings.model_validate({"model_store": tmp_path}))
    routes = {rule.rule for rule in app.url_map.iter_rules()}
    container = main_container(render("kind"), "trainer")
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["path"] in routes
    assert app.test_client().get(container["livenessProbe"]["httpGet"]["path"]).status_code == 200


def test_predictor_readiness_is_a_native_grpc_probe_of_the_predictor_service() -> None:
    from squarenet.v1 import predictor_pb2

    service = predictor_pb2.DESCRIPTOR.services_by_name["Predictor"].full_name
    for overlay in OVERLAYS:
        probe = main_container(render(overlay), "predictor")["readinessProbe"]
        assert probe["grpc"]["service"] == service
        assert isinstance(probe["grpc"]["port"], int)  # gRPC probes take no port names


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_store_mount_path_and_modes(overlay: str) -> None:
    docs = render(overlay)
    claim = find(docs, "PersistentVolumeClaim", "squarenet-models")["metadata"]["name"]
    for component in COMPONENTS:
        spec = pod_spec(docs, component)
        volume = next(
            v
            for v in spec["volumes"]
            if v.get("persistentVolumeClaim", {}).get("claimName") == claim
        )
        mount = next(
            m
            for m in main_container(docs, component)["volumeMounts"]
            if m["name"] == volume["name"]
        )
        store = container_env(docs, component)["SQUARENET_MODEL_STORE"]
        assert mount["mountPath"] == store
        assert dockerfile(component).env["SQUARENET_MODEL_STORE"] == store
        assert store in dockerfile(component).volumes
        read_only = component == "predictor"
        assert mount.get("readOnly", False) is read_only
        assert volume["persistentVolumeClaim"].get("readOnly", False) is read_only


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("component", COMPONENTS)
def test_every_place_written_outside_the_store_is_a_mounted_volume(
    overlay: str, component: str
) -> None:
    """With a read-only root, temp dirs, caches and gunicorn's /dev/shm must be mounts."""
    docs = render(overlay)
    mounts = {m["mountPath"] for m in main_container(docs, component)["volumeMounts"]}
    image_env = dockerfile(component).env
    writable = [
        image_env[name]
        for name in ("HOME", "TMPDIR", "MPLCONFIGDIR", "KERAS_HOME")
        if name in image_env
    ]
    assert writable
    if component == "trainer":
        writable.append(str(SHM))
    for path in writable:
        assert any(path == m or path.startswith(m + "/") for m in mounts), path


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_termination_grace_covers_pre_stop_and_the_services_own_grace(overlay: str) -> None:
    docs = render(overlay)
    grace_setting = {"trainer": "SQUARENET_GRACEFUL_TIMEOUT", "predictor": "SQUARENET_GRACE_PERIOD"}
    for component in COMPONENTS:
        budget = pod_spec(docs, component)["terminationGracePeriodSeconds"]
        container = main_container(docs, component)
        own = float(container_env(docs, component)[grace_setting[component]] or 0)
        assert budget > pre_stop_seconds(container) + own + 5, component


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_selectors_reach_the_pods_they_mean(overlay: str) -> None:
    docs = render(overlay)

    def selects(selector: dict[str, str], component: str) -> bool:
        labels = deployment(docs, component)["spec"]["template"]["metadata"]["labels"]
        return all(labels.get(k) == v for k, v in selector.items())

    for service in all_of(docs, "Service"):
        component = service["metadata"]["labels"]["app.kubernetes.io/component"]
        assert selects(service["spec"]["selector"], component)
        other = "trainer" if component == "predictor" else "predictor"
        assert not selects(service["spec"]["selector"], other)
    assert find(docs, "Service", "squarenet-predictor-headless")["spec"]["clusterIP"] == "None"
    pdb = find(docs, "PodDisruptionBudget", "squarenet-predictor")
    assert selects(pdb["spec"]["selector"]["matchLabels"], "predictor")
    hpa = find(docs, "HorizontalPodAutoscaler", "squarenet-predictor")
    assert (
        hpa["spec"]["scaleTargetRef"]["name"] == deployment(docs, "predictor")["metadata"]["name"]
    )
    assert hpa["spec"]["minReplicas"] >= 2 > pdb["spec"]["minAvailable"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policy_denies_all_but_each_service_port(overlay: str) -> None:
    docs = render(overlay)
    deny = find(docs, "NetworkPolicy", "squarenet-default-deny")["spec"]
    assert deny["podSelector"] == {}
    assert sorted(deny["policyTypes"]) == ["Egress", "Ingress"]
    assert "ingress" not in deny and "egress" not in deny
    for component in COMPONENTS:
        policy = find(docs, "NetworkPolicy", f"squarenet-{component}")["spec"]
        assert policy["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == component
        if component == "trainer":  # the API server's port, the predictors' gRPC port, DNS
            rules = {
                tuple(sorted((p["port"], p["protocol"]) for p in rule["ports"])): rule.get("to")
                for rule in policy["egress"]
            }
            assert rules.pop(((443, "TCP"), (6443, "TCP"))) is None
            predictor = main_container(docs, "predictor")
            grpc_port = port_number(predictor, "grpc")
            (to_predictor,) = rules.pop(((grpc_port, "TCP"),))
            assert to_predictor["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == (
                "predictor"
            )
            (to_dns,) = rules.pop(((53, "TCP"), (53, "UDP")))
            assert to_dns["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
            assert rules == {}
            address = {e["name"]: e.get("value") for e in main_container(docs, "trainer")["env"]}
            host, port = address["SQUARENET_PREDICTOR"].split(":")
            assert host == find(docs, "Service", "squarenet-predictor")["metadata"]["name"]
            assert int(port) == grpc_port
        else:
            assert "egress" not in policy
        container = main_container(docs, component)
        allowed = {
            port_number(container, p["port"]) for rule in policy["ingress"] for p in rule["ports"]
        }
        assert allowed == {p["containerPort"] for p in container["ports"]}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_admin_job_that_owns_the_store_validates_strictly(version: str) -> None:
    result = validate(OWN_THE_STORE, version)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_admin_job_runs_apart_from_squarenet_with_no_more_than_it_needs() -> None:
    """Root to chown, so in a namespace of its own whose Pod Security allows it (baseline),
    with the capabilities chown and chmod use and nothing else."""
    docs = [doc for doc in yaml.safe_load_all(OWN_THE_STORE.read_text(encoding="utf-8")) if doc]
    assert sorted(doc["kind"] for doc in docs) == ["Job", "Namespace", "PersistentVolumeClaim"]
    namespace = find(docs, "Namespace", "squarenet-admin")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "baseline"
    assert {doc["metadata"].get("namespace") for doc in docs if doc is not namespace} == {
        "squarenet-admin"
    }
    spec = find(docs, "Job", "own-the-store")["spec"]
    assert spec["backoffLimit"] == 0
    pod = spec["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert set(context["capabilities"]["add"]) <= BASELINE_CAPABILITIES
    assert "privileged" not in context


def test_the_admin_job_gives_the_share_to_the_uid_and_gid_the_pods_run_as(
    tmp_path: Path,
) -> None:
    """The chown's owner is the trainer's and its job pods' runAsUser:runAsGroup, and the
    share it mounts is a Filestore volume of the gke overlay's class and size."""
    docs = [doc for doc in yaml.safe_load_all(OWN_THE_STORE.read_text(encoding="utf-8")) if doc]
    pod = find(docs, "Job", "own-the-store")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (mount,) = container["volumeMounts"]
    owned = re.fullmatch(r"chown (\d+):(\d+) (\S+) && chmod 2775 (\S+)", container["command"][-1])
    assert owned, container["command"]
    assert owned[3] == owned[4] == mount["mountPath"]
    gke = render("gke")
    job_settings = Settings.model_validate(
        {"model_store": tmp_path, "executor": "kubernetes", "job_image": "squarenet-trainer:1"}
    )
    job = Job(
        id="20261206T000000Z-00000000",
        state=RunState.QUEUED,
        params=TrainingParams.model_validate({"epochs": 1}),
        progress=Progress(epoch=0, epochs=1),
        created_at=utc_now(),
    )
    for context in (
        pod_spec(gke, "trainer")["securityContext"],
        job_manifest(job, job_settings)["spec"]["template"]["spec"]["securityContext"],
    ):
        assert (int(owned[1]), int(owned[2])) == (context["runAsUser"], context["runAsGroup"])
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    claim = find(docs, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    store = find(gke, "PersistentVolumeClaim", "squarenet-models")
    assert claim["spec"]["storageClassName"] == store["spec"]["storageClassName"]
    assert find(gke, "StorageClass", claim["spec"]["storageClassName"])
    assert claim["spec"]["accessModes"] == store["spec"]["accessModes"]
    assert claim["spec"]["resources"] == store["spec"]["resources"]


def test_api_token_comes_from_a_secret() -> None:
    for overlay in OVERLAYS:
        docs = render(overlay)
        token = next(
            item
            for item in main_container(docs, "trainer")["env"]
            if item["name"] == "SQUARENET_API_TOKEN"
        )
        ref = token["valueFrom"]["secretKeyRef"]
        secrets = all_of(docs, "Secret")
        if overlay == "kind":  # a generated stand-in, so `kubectl apply -k` works as is
            assert [s["metadata"]["name"] for s in secrets] == [ref["name"]]
            assert ref["key"] in secrets[0]["data"]
        else:  # created by hand before the first apply (README)
            assert secrets == []
            assert ref["name"] == "squarenet-api-token"


def test_image_names_are_what_the_build_script_builds() -> None:
    def images(overlay: str) -> list[str]:
        return sorted(main_container(render(overlay), c)["image"] for c in COMPONENTS)

    assert images("kind") == sorted(built_image_names())
    assert images("gke") == sorted(
        built_image_names({"REGISTRY": GKE_REGISTRY, "TAG": images("gke")[0].rsplit(":", 1)[1]})
    )
    for component in COMPONENTS:
        assert dockerfile(component).entrypoint == f'["squarenet-{component}"]'


def test_kind_overlay_keeps_everything_on_the_one_node() -> None:
    docs = render("kind")
    claim = find(docs, "PersistentVolumeClaim", "squarenet-models")["spec"]
    assert claim["storageClassName"] == "standard"
    assert claim["accessModes"] == ["ReadWriteOnce"]
    terms = pod_spec(docs, "predictor")["affinity"]["podAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    trainer_labels = deployment(docs, "trainer")["spec"]["template"]["metadata"]["labels"]
    assert terms[0]["topologyKey"] == "kubernetes.io/hostname"
    assert terms[0]["labelSelector"]["matchLabels"].items() <= trainer_labels.items()
    for component in COMPONENTS:  # images come from `kind load docker-image`
        assert main_container(docs, component)["imagePullPolicy"] in ("IfNotPresent", "Never")


def test_gke_overlay_shares_the_store_across_nodes_and_has_a_way_in() -> None:
    docs = render("gke")
    claim = find(docs, "PersistentVolumeClaim", "squarenet-models")["spec"]
    assert claim["accessModes"] == ["ReadWriteMany"]
    storage = find(docs, "StorageClass", claim["storageClassName"])
    assert storage["provisioner"] == "filestore.csi.storage.gke.io"
    assert storage["reclaimPolicy"] == "Retain"  # deleting the claim keeps the models
    for component in COMPONENTS:
        assert main_container(docs, component)["image"].startswith(
            f"{GKE_REGISTRY}/squarenet-{component}:"
        )
    balancer = find(docs, "Service", "squarenet-predictor-lb")
    assert balancer["spec"]["type"] == "LoadBalancer"
    assert balancer["spec"]["selector"]["app.kubernetes.io/component"] == "predictor"


def test_gke_storage_class_mounts_with_attribute_caches_of_one_second() -> None:
    """NFS caches directory attributes 30-60 s by default: a new version, a queued job or a
    cancel on another node would wait that long. This checks the rendered StorageClass
    asks for one-second caches and no negative lookup cache (what NFS then does with them
    needs Filestore, which is not here)."""
    docs = render("gke")
    claim = find(docs, "PersistentVolumeClaim", "squarenet-models")["spec"]
    options = dict(
        option.partition("=")[::2]
        for option in find(docs, "StorageClass", claim["storageClassName"])["mountOptions"]
    )
    poll_interval = float(container_env(docs, "predictor")["SQUARENET_POLL_INTERVAL"] or "nan")
    assert int(options["actimeo"]) <= 1 and poll_interval <= 1
    assert options["lookupcache"] == "positive"  # "no such file" is never cached


@pytest.mark.parametrize("component", COMPONENTS)
def test_dockerfile_is_lint_clean_and_keeps_the_ca_out_of_layers(component: str) -> None:
    path = REPO / f"Dockerfile.{component}"
    image = dockerfile(component)
    assert not any(line.startswith("# syntax") for line in image.lines)  # no remote frontend
    pip_runs = [line for line in image.lines if re.search(r"/pip\b.*\binstall\b", line)]
    assert pip_runs
    text = path.read_text(encoding="utf-8")
    assert text.count("--mount=type=secret,id=ca,required=false") == len(pip_runs)
    assert "PIP_CERT" not in image.env
    hadolint = Path(sys.executable).with_name("hadolint")
    result = subprocess.run([str(hadolint), str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
