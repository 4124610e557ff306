"""The predictor as an operator meets it: command line, reflection, runtimes, workers, storage."""

from __future__ import annotations

import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from support import patient, wait_for

from predictor.predictor_harness import Launcher, add_version, store_state
from squarenet.stack import command_of
from squarenet.store import ModelStore
from squarenet.v1 import predictor_pb2, predictor_pb2_grpc

GRPCURL = Path(sys.executable).parent / "grpcurl"


@pytest.fixture
def one_version(store: ModelStore, trained_versions: list[Path]) -> ModelStore:
    """The test's store holding the first trained version."""
    add_version(store, trained_versions[0])
    return store


def test_reflection_lets_grpcurl_list_and_call_the_service(
    launcher: Launcher, one_version: ModelStore
) -> None:
    predictor = launcher.start(one_version)
    predictor.wait_serving()
    address = f"127.0.0.1:{predictor.port}"
    listed = subprocess.run(
        [str(GRPCURL), "-plaintext", address, "list"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert listed.returncode == 0, listed.stderr
    assert set(listed.stdout.split()) >= {"squarenet.v1.Predictor", "grpc.health.v1.Health"}
    called = subprocess.run(
        [str(GRPCURL), "-plaintext", "-d", '{"x": [2, 9]}', address,
         "squarenet.v1.Predictor/Predict"],
        check=False, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert called.returncode == 0, called.stderr
    assert '"version": "1"' in called.stdout
    assert '"extrapolated": [\n    false,\n    true\n  ]' in called.stdout


def test_a_litert_predictor_never_imports_tensorflow(
    launcher: Launcher, one_version: ModelStore
) -> None:
    # Runs the same entry point, and reports sys.modules when the process exits.
    probe = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('tensorflow loaded:', 'tensorflow' in sys.modules))\n"
        "from predictor_service.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    predictor = launcher.start(one_version, command=[sys.executable, "-c", probe])
    predictor.wait_serving()
    assert predictor.stub.Predict(predictor_pb2.PredictRequest(x=[1.0]), timeout=5).version == 1
    assert predictor.terminate() == 0
    assert "tensorflow loaded: False" in predictor.log()


def _read_only(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


@pytest.fixture
def read_only_store(one_version: ModelStore) -> Iterator[ModelStore]:
    """The one-version store with every write permission removed (restored afterwards)."""
    _read_only(one_version.root)
    yield one_version
    for path in [one_version.root, *one_version.root.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)


def test_a_read_only_store_is_served_and_left_untouched(
    launcher: Launcher, read_only_store: ModelStore
) -> None:
    before = store_state(read_only_store.root)
    predictor = launcher.start(read_only_store)
    predictor.wait_serving()
    assert predictor.stub.Predict(predictor_pb2.PredictRequest(x=[3.0]), timeout=5).version == 1
    assert predictor.terminate() == 0
    assert store_state(read_only_store.root) == before  # nothing written, not even a timestamp


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model-store", "x", "--versions", "0"], "--versions (SQUARENET_VERSIONS)"),
        (["--model-store", "x", "--runtime", "onnx"], "--runtime (SQUARENET_RUNTIME)"),
        (["--model-store", "x", "--model-name", "../etc"], "--model-name"),
        ([], "--model-store (SQUARENET_MODEL_STORE)"),
    ],
    ids=["versions-zero", "unknown-runtime", "unsafe-model-name", "no-store"],
)
def test_bad_configuration_fails_fast_with_exit_2(args: list[str], message: str) -> None:
    env = {"PATH": "/usr/bin:/bin"}  # no SQUARENET_* from the caller's environment
    result = subprocess.run(
        [*command_of("squarenet-predictor"), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_settings_come_from_the_environment_too(
    launcher: Launcher, one_version: ModelStore
) -> None:
    predictor = launcher.start(one_version, env={"SQUARENET_MAX_BATCH": "3"})
    predictor.wait_serving()
    with pytest.raises(grpc.RpcError) as raised:
        predictor.stub.Predict(predictor_pb2.PredictRequest(x=[1.0] * 4), timeout=5)
    assert "at most 3 per call" in raised.value.details()


@pytest.mark.slow
def test_a_busy_port_is_an_error_not_a_silent_second_listener(
    launcher: Launcher, one_version: ModelStore
) -> None:
    first = launcher.start(one_version)
    second = subprocess.run(
        [*command_of("squarenet-predictor"), "--model-store", str(one_version.root),
         "--host", "127.0.0.1", "--port", str(first.port), "--metrics-port", "0"],
        check=False, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert second.returncode == 1
    assert "cannot listen on" in second.stdout


@pytest.mark.slow
def test_tensorflow_and_litert_runtimes_give_the_same_answers(
    launcher: Launcher, one_version: ModelStore
) -> None:
    litert = launcher.start(one_version)
    tensorflow = launcher.start(one_version, "--runtime", "tensorflow")
    litert.wait_serving()
    tensorflow.wait_serving(timeout=60)
    x = np.linspace(-10, 10, 101).tolist()
    a = litert.stub.Predict(predictor_pb2.PredictRequest(x=x), timeout=10)
    b = tensorflow.stub.Predict(predictor_pb2.PredictRequest(x=x), timeout=10)
    assert a.version == b.version == 1
    assert list(a.extrapolated) == list(b.extrapolated)
    np.testing.assert_allclose(a.y, b.y, rtol=1e-5, atol=1e-5)  # float32 precision
    assert "runtime=tensorflow" in tensorflow.log()


@pytest.mark.slow
def test_workers_share_one_port_and_stop_together(
    launcher: Launcher, one_version: ModelStore
) -> None:
    predictor = launcher.start(one_version, "--workers", "2")
    predictor.wait_serving()
    wait_for(lambda: predictor.log().count("serving version=1") == 2, 20, "both workers serving")
    for _ in range(20):
        # A new channel each time: the kernel spreads new connections over the workers.
        with grpc.insecure_channel(f"127.0.0.1:{predictor.port}") as channel:
            stub = predictor_pb2_grpc.PredictorStub(channel)  # type: ignore[no-untyped-call]
            assert stub.Predict(predictor_pb2.PredictRequest(x=[1.0]), timeout=5).version == 1
    wait_for(
        lambda: (
            predictor.metric("squarenet_predictor_requests_total", method="Predict", code="OK")
            == 20
        ),
        10,
        "the workers' summed metrics",
    )
    predictor.process.send_signal(signal.SIGTERM)
    assert predictor.process.wait(patient(30)) == 0
    assert "workers stopped codes=[0, 0]" in predictor.log()
