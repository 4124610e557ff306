"""The client stays light: no Flask, TensorFlow, LiteRT or gRPC server packages on import."""

from __future__ import annotations

import json
import subprocess
import sys

# grpc itself imports the grpc_health / grpc_reflection package roots when installed (to
# alias them as grpc.health ...); their server modules are what must stay out.
HEAVY = (
    "flask",
    "tensorflow",
    "keras",
    "ai_edge_litert",
    "grpc_health.v1.health",
    "grpc_reflection.v1alpha.reflection",
    "trainer_service",
    "predictor_service",
)


def test_the_cli_imports_only_client_packages() -> None:
    probe = (
        "import json, sys, squarenet.cli.main; "
        f"print(json.dumps(sorted(m for m in {list(HEAVY)!r} if m in sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True, timeout=60
    )
    assert json.loads(done.stdout) == []
