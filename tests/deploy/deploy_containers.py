"""Running the images the way the manifests run the pods, on a private Docker engine.

``docker run`` arguments are derived from the rendered kind overlay: user and groups,
read-only root filesystem, dropped capabilities, no privilege escalation, CPU and memory
limits, the ConfigMap's environment, a tmpfs for every emptyDir and one named volume for
the model store (read-only where the manifest says so). Only what host networking forces
is changed: the ports (free ones) and the bind address (loopback).
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from deploy.deploy_manifests import REPO, Manifest, all_of, container_env, main_container, pod_spec

DOCKER = "/usr/bin/docker"  # Debian's client: it has BuildKit (the first `docker` on PATH may not)
BASE_IMAGE = "squarenet-base:test"
_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T|m)?$")
_FACTORS = {
    None: 1,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
    "k": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
}


def quantity(value: str | int) -> float:
    """A Kubernetes quantity ("512Mi", "500m", "2") as a number (bytes or cores)."""
    match = _QUANTITY.match(str(value))
    assert match, f"not a quantity: {value!r}"
    number, suffix = float(match.group(1)), match.group(2)
    if suffix == "m":
        return number / 1000
    return number * _FACTORS[suffix]


@dataclass(frozen=True)
class Engine:
    """A Docker engine reached through its own socket."""

    host: str

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run a docker command against this engine; fail with its output when asked."""
        result = subprocess.run(
            [DOCKER, "-H", self.host, *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed:\n{result.stderr}")
        return result

    def script_env(self, **extra: str) -> dict[str, str]:
        """Environment for the repository's docker scripts to use this engine."""
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER": DOCKER, **extra}

    def running(self, name: str) -> bool:
        """Whether the container still runs."""
        result = self("inspect", "--format", "{{.State.Running}}", name, check=False)
        return result.stdout.strip() == "true"


def engine_script(action: str, directory: Path) -> str:
    """scripts/docker-engine.sh start|stop for the engine kept in ``directory``."""
    result = subprocess.run(
        ["bash", str(REPO / "scripts/docker-engine.sh"), action, str(directory)],
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )
    if result.returncode != 0:
        raise AssertionError(f"docker-engine.sh {action} failed:\n{result.stderr}")
    return result.stdout.strip()


@dataclass(frozen=True)
class Service:
    """A service container: its name and where the test reaches it."""

    name: str
    port: int
    env: dict[str, str]


def ca_bundle() -> Path | None:
    """The CA bundle pip on this machine trusts (the proxy's CA may be only in it)."""
    for name in ("CA_BUNDLE", "PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        value = os.environ.get(name)
        if value and Path(value).is_file():
            return Path(value)
    default = Path("/etc/ssl/certs/ca-certificates.crt")
    return default if default.is_file() else None


def secret_values(docs: list[Manifest]) -> dict[tuple[str, str], str]:
    """(secret name, key) -> decoded value of every Secret the overlay generates."""
    return {
        (secret["metadata"]["name"], key): base64.b64decode(value).decode()
        for secret in all_of(docs, "Secret")
        for key, value in secret.get("data", {}).items()
    }


def run_arguments(
    docs: list[Manifest],
    component: str,
    *,
    name: str,
    image: str,
    volume: str,
    overrides: dict[str, str],
) -> list[str]:
    """``docker run`` arguments equivalent to the component's pod in ``docs``."""
    spec = pod_spec(docs, component)
    container = main_container(docs, component)
    pod_context = spec["securityContext"]
    context = container["securityContext"]
    args = ["run", "--detach", "--name", name, "--network", "host"]
    args += ["--user", f"{pod_context['runAsUser']}:{pod_context['runAsGroup']}"]
    args += ["--group-add", str(pod_context["fsGroup"])]
    if context["readOnlyRootFilesystem"]:
        args.append("--read-only")
    if context["allowPrivilegeEscalation"] is False:
        args += ["--security-opt", "no-new-privileges"]
    for capability in context["capabilities"]["drop"]:
        args += ["--cap-drop", capability]
    limits = container["resources"]["limits"]
    args += ["--memory", str(int(quantity(limits["memory"])))]
    args += ["--cpus", str(quantity(limits["cpu"]))]
    volumes = {v["name"]: v for v in spec["volumes"]}
    for mount in container["volumeMounts"]:
        source = volumes[mount["name"]]
        if "emptyDir" in source:
            size = int(quantity(source["emptyDir"].get("sizeLimit", "64Mi")))
            args += ["--mount", f"type=tmpfs,destination={mount['mountPath']},tmpfs-size={size}"]
        elif "persistentVolumeClaim" in source:
            mode = ",readonly" if mount.get("readOnly") else ""
            args += [
                "--mount",
                f"type=volume,source={volume},destination={mount['mountPath']}{mode}",
            ]
        else:
            raise AssertionError(f"no container equivalent for volume {source}")
    secrets = secret_values(docs)
    env = container_env(docs, component)
    for item in container.get("env", []):
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            env[item["name"]] = secrets[(ref["name"], ref["key"])]
    env.update(overrides)
    for key, value in sorted(env.items()):
        args += ["--env", f"{key}={value}"]
    args.append(image)
    return args
