"""The committed squarenet/v1 code is what `make proto` generates from protos/ today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ("predictor_pb2.py", "predictor_pb2.pyi", "predictor_pb2_grpc.py")


def test_generated_code_is_not_stale(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{ROOT / 'protos'}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            str(ROOT / "protos/squarenet/v1/predictor.proto"),
        ],
        check=True,
    )
    for name in GENERATED:
        fresh = (tmp_path / "squarenet/v1" / name).read_text()
        committed = (ROOT / "squarenet/v1" / name).read_text()
        assert fresh == committed, f"squarenet/v1/{name} is stale: run `make proto`"


@pytest.mark.parametrize(
    "module", ["squarenet.v1.predictor_pb2", "squarenet.v1.predictor_pb2_grpc"]
)
def test_generated_code_imports_by_package_path(module: str) -> None:
    """No sys.path tricks: the modules import as `squarenet.v1.*` from a plain interpreter."""
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True, cwd=ROOT.parent)


def test_the_proto_keeps_the_contracted_names() -> None:
    from squarenet.v1 import predictor_pb2

    service = predictor_pb2.DESCRIPTOR.services_by_name["Predictor"]
    assert [m.name for m in service.methods] == ["Predict", "GetModel", "WatchModel"]
    assert service.full_name == "squarenet.v1.Predictor"
    request = predictor_pb2.PredictRequest(x=[1.0, 2.0], version=3)
    assert list(request.x) == [1.0, 2.0]
    response = predictor_pb2.PredictResponse(y=[1.0], version=3, extrapolated=[False])
    assert response.extrapolated[0] is False
