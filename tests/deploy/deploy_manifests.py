"""Reading the deployment as shipped: rendered kustomize output and the Dockerfiles.

Tests compare what these return instead of restating ports, paths or names, so a change in
one place that the others do not follow fails a test.
"""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
OVERLAYS = ("kind", "gke")
COMPONENTS = ("trainer", "predictor")

Manifest = dict[str, Any]


@functools.cache
def rendered_text(target: str) -> str:
    """``kubectl kustomize`` of ``k8s/base`` or ``k8s/overlays/<target>``."""
    return kustomize(REPO / "k8s" / ("base" if target == "base" else f"overlays/{target}"))


def kustomize(path: Path) -> str:
    """``kubectl kustomize`` of any folder (a changed copy of ``k8s``, say)."""
    result = subprocess.run(
        ["kubectl", "kustomize", str(path)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {path} failed:\n{result.stderr}")
    return result.stdout


def render(target: str) -> list[Manifest]:
    """Every object of the rendered target (fresh copies: tests may change them)."""
    return [doc for doc in yaml.safe_load_all(rendered_text(target)) if doc]


def find(docs: list[Manifest], kind: str, name: str) -> Manifest:
    """The one object of ``kind`` whose name is ``name`` or ``name-<hash>`` (generated)."""
    hits = [
        doc
        for doc in docs
        if doc["kind"] == kind
        and re.fullmatch(rf"{name}(-[a-z0-9]{{10}})?", doc["metadata"]["name"])
    ]
    assert len(hits) == 1, f"expected one {kind} {name}, found {len(hits)}"
    return hits[0]


def all_of(docs: list[Manifest], kind: str) -> list[Manifest]:
    """Every object of ``kind``."""
    return [doc for doc in docs if doc["kind"] == kind]


def deployment(docs: list[Manifest], component: str) -> Manifest:
    """The Deployment of ``trainer`` or ``predictor``."""
    return find(docs, "Deployment", f"squarenet-{component}")


def pod_spec(docs: list[Manifest], component: str) -> Manifest:
    """The pod template spec of a component's Deployment."""
    spec: Manifest = deployment(docs, component)["spec"]["template"]["spec"]
    return spec


def main_container(docs: list[Manifest], component: str) -> Manifest:
    """The component's one container (named after the component)."""
    containers = pod_spec(docs, component)["containers"]
    assert [c["name"] for c in containers] == [component]
    container: Manifest = containers[0]
    return container


def container_env(docs: list[Manifest], component: str) -> dict[str, str | None]:
    """The environment a component's container gets: ConfigMaps, then literals.

    Variables that come from a Secret map to None (their value is not in the manifests).
    """
    container = main_container(docs, component)
    env: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        config_map = next(
            doc
            for doc in all_of(docs, "ConfigMap")
            if doc["metadata"]["name"] == source["configMapRef"]["name"]
        )
        env.update(config_map["data"])
    for item in container.get("env", []):
        env[item["name"]] = item.get("value")
    return env


def port_number(container: Manifest, port: int | str) -> int:
    """A container port given by number or by name."""
    if isinstance(port, int):
        return port
    numbers = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    assert numbers, f"container {container['name']} has no port named {port!r}"
    return int(numbers[0])


def pre_stop_seconds(container: Manifest) -> int:
    """Seconds the pre-stop hook holds the container before SIGTERM (0 without one)."""
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    return int(pre_stop.get("sleep", {}).get("seconds", 0))


def built_image_names(env: dict[str, str] | None = None) -> list[str]:
    """What ``scripts/build-images.sh`` names the images, for the given settings."""
    result = subprocess.run(
        ["bash", str(REPO / "scripts/build-images.sh"), "--print"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )
    return result.stdout.split()


@dataclass
class Dockerfile:
    """The facts of a Dockerfile the deployment depends on."""

    args: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    expose: list[int] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    user: str = ""
    entrypoint: str = ""
    lines: list[str] = field(default_factory=list)

    @property
    def uid(self) -> int:
        """The numeric user the runtime stage runs as (``USER`` with ARGs expanded)."""
        user = re.sub(r"\$\{(\w+)\}", lambda m: self.args[m.group(1)], self.user)
        return int(user.split(":")[0])


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined: list[str] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    pairs = []
    for line in joined:
        keyword, _, rest = line.partition(" ")
        pairs.append((keyword.upper(), rest.strip()))
    return pairs


@functools.cache
def dockerfile(component: str) -> Dockerfile:
    """The runtime stage (the last ``FROM``) of ``Dockerfile.<component>``."""
    path = REPO / f"Dockerfile.{component}"
    pairs = instructions(path)
    last_from = max(i for i, (keyword, _) in enumerate(pairs) if keyword == "FROM")
    facts = Dockerfile(lines=path.read_text(encoding="utf-8").splitlines())
    for keyword, rest in pairs[last_from:]:
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            facts.args[name] = default
        elif keyword == "ENV":
            for word in shlex.split(rest):
                name, _, value = word.partition("=")
                facts.env[name] = value
        elif keyword == "EXPOSE":
            facts.expose = [int(port.split("/")[0]) for port in rest.split()]
        elif keyword == "VOLUME":
            facts.volumes = list(yaml.safe_load(rest))
        elif keyword == "USER":
            facts.user = rest
        elif keyword == "ENTRYPOINT":
            facts.entrypoint = rest
    return facts
