"""The committed generated code is what `make proto` generates from protos/ today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"
SOURCES = sorted(
    [PROTOS / "squarenet/v1/predictor.proto", *(PROTOS / "squarenet/third_party").rglob("*.proto")]
)
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def _generated(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): path.read_text(encoding="utf-8")
        for folder in ("squarenet/v1", "squarenet/third_party")
        for path in sorted((root / folder).rglob("*"))
        if path.name.endswith(SUFFIXES)
    }


def test_generated_code_is_not_stale(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            *map(str, SOURCES),
        ],
        check=True,
    )
    fresh, committed = _generated(tmp_path), _generated(ROOT)
    assert sorted(fresh) == sorted(committed), "generated files differ: run `make proto`"
    for name, text in fresh.items():
        assert text == committed[name], f"{name} is stale: run `make proto`"


def test_every_generated_folder_is_a_package() -> None:
    for folder in (ROOT / "squarenet/third_party").rglob("*"):
        if folder.is_dir() and folder.name != "__pycache__":
            assert (folder / "__init__.py").is_file(), f"{folder} lacks __init__.py: `make proto`"


@pytest.mark.parametrize(
    "module",
    [
        "squarenet.v1.predictor_pb2",
        "squarenet.v1.predictor_pb2_grpc",
        "squarenet.third_party.open_inference.dataplane_pb2_grpc",
        "squarenet.third_party.tensorflow_serving.apis.prediction_service_pb2_grpc",
        "squarenet.third_party.tensorflow_serving.apis.model_service_pb2_grpc",
    ],
)
def test_generated_code_imports_by_package_path(module: str) -> None:
    """No sys.path tricks: the modules import by package path from a plain interpreter.

    In a child process: the vendored ``tensorflow.*`` messages must never share a process
    with TensorFlow's own, which the test session loads to train.
    """
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True, cwd=ROOT.parent)


def test_the_proto_keeps_the_contracted_names() -> None:
    from squarenet.v1 import predictor_pb2

    service = predictor_pb2.DESCRIPTOR.services_by_name["Predictor"]
    assert [m.name for m in service.methods] == ["Predict", "GetModel", "WatchModel"]
    assert service.full_name == "squarenet.v1.Predictor"
    request = predictor_pb2.PredictRequest(x=[1.0, 2.0], version=3, version_label="stable")
    assert list(request.x) == [1.0, 2.0]
    assert request.version_label == "stable"
    response = predictor_pb2.PredictResponse(y=[1.0], version=3, extrapolated=[False])
    assert response.extrapolated[0] is False
