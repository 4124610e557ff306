"""The real images, run as the manifests run the pods: train in the trainer container,
predict from the predictor container, sharing one volume (read-only for the predictor).

Needs a Docker engine (skipped, saying so, only where dockerd is not installed). The tests
share session containers and run in file order: the last one stops them.
"""

from __future__ import annotations

import re

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support import wait_for

from deploy.deploy_containers import Engine, Service, ca_bundle, secret_values
from deploy.deploy_manifests import pod_spec, render
from squarenet.v1 import predictor_pb2, predictor_pb2_grpc

# The first test also waits for the session's image builds (a few minutes when cold).
pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1200)]

PREDICTOR_SIZE_LIMIT = 300 * 1000**2  # bytes, as `docker images` counts MB
TINY_JOB = {"n_samples": 200, "epochs": 3, "batch_size": 50, "seed": 7}


def api_token() -> str:
    """The token the kind overlay's Secret gives the trainer."""
    return next(v for (_, key), v in secret_values(render("kind")).items() if key == "token")


def health(port: int, service: str) -> int:
    """grpc.health.v1 status of ``service`` on the predictor."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        return int(response.status)


def test_predictor_image_has_no_tensorflow_and_fits_the_size_target(
    engine: Engine, images: dict[str, str]
) -> None:
    image = images["predictor"]
    size = int(engine("image", "inspect", "--format", "{{.Size}}", image).stdout)
    assert size <= PREDICTOR_SIZE_LIMIT, f"{size / 1e6:.0f} MB"
    probe = "import importlib.util as u; print(u.find_spec('tensorflow') is None, u.find_spec('ai_edge_litert') is not None)"
    result = engine(
        "run", "--rm", "--network", "host", "--entrypoint", "python", image, "-c", probe
    )
    assert result.stdout.split() == ["True", "True"]


PEM = re.compile(r"-----BEGIN CERTIFICATE-----\n(.*?)\n-----END CERTIFICATE-----", re.S)
# Walks the image and prints every file holding one of the needles (argv[1:]).
FIND_NEEDLES = """
import os, sys
needles = [n.encode() for n in sys.argv[1:]]
for root, dirs, files in os.walk("/"):
    dirs[:] = [d for d in dirs if os.path.join(root, d) not in ("/proc", "/sys", "/dev")]
    for name in files:
        path = os.path.join(root, name)
        if os.path.isfile(path) and not os.path.islink(path) and os.path.getsize(path) < 50e6:
            try:
                data = open(path, "rb").read()
            except OSError:
                continue
            if any(n in data for n in needles):
                print(path)
"""


def certificates(text: str) -> set[str]:
    """The base64 bodies of the PEM certificates in ``text``."""
    return set(PEM.findall(text))


@pytest.mark.parametrize("component", ["trainer", "predictor"])
def test_images_keep_no_ca_bundle(engine: Engine, images: dict[str, str], component: str) -> None:
    """The CA bundle given to pip as a build secret is in no layer, history or setting.

    Its certificates that the image's own CA store lacks (a TLS-intercepting proxy's) must
    appear in no file of the image.
    """
    image = images[component]
    history = engine("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    config = engine("image", "inspect", "--format", "{{json .Config.Env}}", image).stdout
    assert "PIP_CERT" not in config
    assert "/run/secrets/ca" not in config
    assert not re.search(r"PIP_CERT=/\S+", history.replace("PIP_CERT=/run/secrets/ca", ""))
    bundle = ca_bundle()
    if bundle is None:
        return
    own_store = engine(
        "run",
        "--rm",
        "--network",
        "host",
        "--entrypoint",
        "cat",
        image,
        "/etc/ssl/certs/ca-certificates.crt",
    ).stdout
    extra = certificates(bundle.read_text(encoding="utf-8")) - certificates(own_store)
    if not extra:
        return  # the build secret carried nothing the image does not have anyway
    needles = [body.splitlines()[len(body.splitlines()) // 2] for body in extra]
    found = engine(
        "run",
        "--rm",
        "--network",
        "host",
        "--user",
        "0:0",  # to read every file
        "--entrypoint",
        "python",
        image,
        "-c",
        FIND_NEEDLES,
        *needles,
        timeout=300,
    )
    assert found.stdout.strip() == "", f"the build's CA certificates are in: {found.stdout}"


def test_containers_run_as_the_manifest_user_on_a_read_only_root(
    engine: Engine, trainer: Service, predictor: Service
) -> None:
    for service, component in ((trainer, "trainer"), (predictor, "predictor")):
        expected = pod_spec(render("kind"), component)["securityContext"]["runAsUser"]
        uid = engine("exec", service.name, "python", "-c", "import os; print(os.getuid())")
        assert uid.stdout.strip() == str(expected)
        root = engine("exec", service.name, "python", "-c", "open('/probe', 'w')", check=False)
        assert root.returncode != 0
        assert "Read-only file system" in root.stderr


def test_predictor_cannot_write_the_store(engine: Engine, predictor: Service) -> None:
    store = predictor.env.get("SQUARENET_MODEL_STORE", "/models")
    result = engine(
        "exec", predictor.name, "sh", "-c", f"touch {store}/written-by-predictor", check=False
    )
    assert result.returncode != 0
    assert "Read-only file system" in result.stderr


def test_trainer_refuses_a_job_without_the_secret_token(trainer: Service) -> None:
    response = httpx.post(f"http://127.0.0.1:{trainer.port}/v1/jobs", json=TINY_JOB, timeout=10)
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")


def test_predictor_is_not_serving_before_any_model(trainer: Service, predictor: Service) -> None:
    def answering() -> int | None:
        try:
            return health(predictor.port, "squarenet.v1.Predictor") + 1
        except grpc.RpcError:
            return None

    status = wait_for(answering, timeout=60, what="the predictor's health service", every=0.5) - 1
    assert status == health_pb2.HealthCheckResponse.NOT_SERVING


def test_job_trained_in_the_trainer_is_served_by_the_predictor(
    trainer: Service, predictor: Service
) -> None:
    base = f"http://127.0.0.1:{trainer.port}"
    headers = {"Authorization": f"Bearer {api_token()}"}
    created = httpx.post(f"{base}/v1/jobs", json=TINY_JOB, headers=headers, timeout=10)
    assert created.status_code == 202, created.text
    job_url = base + created.headers["Location"]

    def finished() -> dict[str, object] | None:
        job: dict[str, object] = httpx.get(job_url, timeout=10).json()
        return job if job["state"] in ("SUCCEEDED", "FAILED", "CANCELLED") else None

    job = wait_for(finished, timeout=300, what="the training job to finish", every=1)
    assert job["state"] == "SUCCEEDED", job
    version = job["model_version"]
    assert isinstance(version, int)

    with grpc.insecure_channel(f"127.0.0.1:{predictor.port}") as channel:
        stub = predictor_pb2_grpc.PredictorStub(channel)  # type: ignore[no-untyped-call]

        def serving() -> bool:
            try:
                model = stub.GetModel(predictor_pb2.GetModelRequest(), timeout=5)
            except grpc.RpcError:
                return False
            return bool(model.version == version)

        wait_for(serving, timeout=60, what=f"the predictor to serve version {version}", every=0.5)
        response = stub.Predict(predictor_pb2.PredictRequest(x=[0.5, 2.0, 100.0]), timeout=5)
    assert response.version == version
    assert len(response.y) == 3
    assert list(response.extrapolated) == [False, False, True]
    assert health(predictor.port, "") == health_pb2.HealthCheckResponse.SERVING
    assert (
        health(predictor.port, "squarenet.v1.Predictor") == health_pb2.HealthCheckResponse.SERVING
    )
    assert httpx.get(f"{base}/readyz", timeout=5).status_code == 200
    models = httpx.get(f"{base}/v1/models", timeout=10).json()["models"]
    assert version in [m["version"] for m in models]


def test_both_stop_cleanly_on_sigterm(engine: Engine, trainer: Service, predictor: Service) -> None:
    """`docker stop` sends SIGTERM like the kubelet; both exit 0 within the pod's grace."""
    for service, component in ((predictor, "predictor"), (trainer, "trainer")):
        grace = int(pod_spec(render("kind"), component)["terminationGracePeriodSeconds"])
        engine("stop", "--time", str(grace), service.name, timeout=grace + 30)
        code = engine("inspect", "--format", "{{.State.ExitCode}}", service.name).stdout.strip()
        assert code == "0", f"{service.name} exited {code}"
