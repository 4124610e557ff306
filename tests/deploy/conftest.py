"""Session fixtures of the container tests: a private Docker engine, the local base image,
both images built from the real Dockerfiles, and the two services running as containers
that share one volume. Everything started here is stopped and removed in finalizers, also
when a test fails; the engine's data (images, build cache) is kept in var/docker so a rerun
builds warm."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from support import free_port, trainer_ready, wait_for

from deploy.deploy_containers import (
    BASE_IMAGE,
    DOCKER,
    Engine,
    Service,
    ca_bundle,
    engine_script,
    run_arguments,
)
from deploy.deploy_manifests import COMPONENTS, REPO, main_container, render

BUILD_REPORT = REPO / "var/image-builds.json"


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    """dockerd on its own socket, data root and exec root; stopped at the end."""
    if shutil.which("dockerd") is None or not Path(DOCKER).exists():
        pytest.skip(
            "no Docker engine installed (dockerd and /usr/bin/docker, Debian's docker.io); "
            ".ci/run installs it"
        )
    directory = Path(os.environ.get("SQUARENET_DOCKER_DIR", REPO / "var/docker")).resolve()
    exec_root = engine_script("exec-root", directory)
    host = engine_script("start", directory)
    try:
        yield Engine(host)
    finally:
        engine_script("stop", directory)
        # Only this engine's mounts: another checkout's engine may be running on the machine.
        mounts = Path("/proc/mounts").read_text(encoding="utf-8").splitlines()
        left = [m for m in mounts if f" {directory}/" in m or f" {exec_root}/" in m]
        assert left == [], f"the engine left mounts behind: {left}"


@pytest.fixture(scope="session")
def images(engine: Engine) -> dict[str, str]:
    """Both images, built from the real Dockerfiles on the local base; component -> name."""
    subprocess.run(
        ["bash", str(REPO / "scripts/base-image.sh"), BASE_IMAGE],
        env=engine.script_env(),
        check=True,
        timeout=600,
    )
    docs = render("kind")
    names = {c: main_container(docs, c)["image"] for c in COMPONENTS}
    tag = names["trainer"].rsplit(":", 1)[1]
    ca = ca_bundle()
    report = {}
    for component in COMPONENTS:
        start = time.monotonic()
        result = subprocess.run(
            ["bash", str(REPO / "scripts/build-images.sh"), component],
            env=engine.script_env(
                TAG=tag,
                BASE_IMAGE=BASE_IMAGE,
                DOCKER_BUILD_ARGS="--network host --progress plain",
                **({"CA_BUNDLE": str(ca)} if ca else {}),
            ),
            capture_output=True,
            text=True,
            check=False,
            timeout=1200,
        )
        seconds = time.monotonic() - start
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
        size = int(engine("image", "inspect", "--format", "{{.Size}}", names[component]).stdout)
        report[component] = {
            "image": names[component],
            "build_seconds": round(seconds, 1),
            "bytes": size,
        }
        print(f"deploy: built {names[component]} in {seconds:.1f} s, {size / 1e6:.0f} MB")
    # Earlier builds' images and stale cache go, so the kept engine does not grow run by run.
    engine("image", "prune", "--force")
    engine("builder", "prune", "--force", "--keep-storage", "8GB")
    BUILD_REPORT.parent.mkdir(parents=True, exist_ok=True)
    BUILD_REPORT.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return names


@pytest.fixture(scope="session")
def store_volume(engine: Engine) -> Iterator[str]:
    """One named volume: the model store both containers share."""
    name = f"squarenet-models-{uuid.uuid4().hex[:8]}"
    engine("volume", "create", name)
    try:
        yield name
    finally:
        engine("volume", "rm", "--force", name, check=False)


@contextmanager
def start_service(
    engine: Engine, images: dict[str, str], component: str, volume: str, overrides: dict[str, str]
) -> Iterator[Service]:
    """Run a component like its pod; stop it (SIGTERM) and remove it afterwards."""
    name = f"squarenet-{component}-{uuid.uuid4().hex[:8]}"
    docs = render("kind")
    args = run_arguments(
        docs, component, name=name, image=images[component], volume=volume, overrides=overrides
    )
    engine(*args)
    try:
        yield Service(name=name, port=int(overrides["SQUARENET_PORT"]), env=overrides)
    finally:
        logs = engine("logs", "--tail", "60", name, check=False)
        print(f"--- last lines of {name} ---\n{logs.stdout}{logs.stderr}")
        engine("rm", "--force", name, check=False)


@pytest.fixture(scope="session")
def trainer(engine: Engine, images: dict[str, str], store_volume: str) -> Iterator[Service]:
    """The trainer container, ready (``/readyz`` answers 200)."""
    # No API server runs beside these containers: jobs run as the trainer's own processes.
    overrides = {
        "SQUARENET_HOST": "127.0.0.1",
        "SQUARENET_PORT": str(free_port()),
        "SQUARENET_EXECUTOR": "local",
    }
    with start_service(engine, images, "trainer", store_volume, overrides) as service:

        def ready() -> bool:
            assert engine.running(service.name), f"{service.name} exited"
            return trainer_ready(f"http://127.0.0.1:{service.port}")

        wait_for(ready, timeout=180, what="the trainer container to be ready", every=0.5)
        yield service


@pytest.fixture(scope="session")
def predictor(
    engine: Engine, images: dict[str, str], store_volume: str, trainer: Service
) -> Iterator[Service]:
    """The predictor container, accepting gRPC connections (no model served yet)."""
    overrides = {
        "SQUARENET_HOST": "127.0.0.1",
        "SQUARENET_PORT": str(free_port()),
        "SQUARENET_METRICS_PORT": str(free_port()),
    }
    with start_service(engine, images, "predictor", store_volume, overrides) as service:
        yield service
