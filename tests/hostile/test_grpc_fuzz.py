"""Property-based fuzzing of a real predictor process serving a real (tiny) model.

hypothesis generates PredictRequests with any doubles (NaN, infinities, subnormals, values
beyond float32), sizes around ``--max-batch`` and the receive limit, any int64 version, and
plain random bytes sent as the raw request message. Every answer must be one of the statuses
the API defines; UNKNOWN or INTERNAL would mean an input reached code that did not expect
it. Afterwards the server is still SERVING and its memory did not grow without bound.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from hostile.hostile_support import rss_bytes
from squarenet.stack import start_predictor
from squarenet.v1 import predictor_pb2

pytestmark = pytest.mark.slow

MAX_BATCH = 1000
#: The predictor's receive limit for MAX_BATCH: 9 bytes a value plus 1 KiB.
RECEIVE_LIMIT = MAX_BATCH * 9 + 1024
PREDICT = "/squarenet.v1.Predictor/Predict"
GET_MODEL = "/squarenet.v1.Predictor/GetModel"
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.NOT_FOUND,
}
FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
#: RSS growth allowed over the whole fuzzing run: buffers and caches, not a leak per call.
RSS_SLACK_BYTES = 64 * 1024 * 1024

TRAIN = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from squarenet.store import ModelStore
    from trainer_service.params import TrainingParams
    from trainer_service.training import train_and_publish

    root = Path(sys.argv[1])
    params = TrainingParams.model_validate(
        {"n_samples": 200, "epochs": 3, "batch_size": 32, "seed": 1}
    )
    train_and_publish(params, ModelStore(root / "store"), job_id="fuzz", artifacts_dir=root / "art")
    """
)


class Target:
    """The running predictor: its process, a channel, and raw-bytes callables."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.process = process
        self.log_path = log_path
        self.channel = grpc.insecure_channel(
            f"127.0.0.1:{port}",
            options=[("grpc.max_send_message_length", 64 * RECEIVE_LIMIT)],
        )
        # request_serializer=None: the bytes go on the wire exactly as generated
        self.predict_raw = self.channel.unary_unary(PREDICT)
        self.get_model_raw = self.channel.unary_unary(GET_MODEL)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def status_of(self, call: grpc.UnaryUnaryMultiCallable, payload: bytes) -> grpc.StatusCode:
        try:
            call(payload, timeout=10)
        except grpc.RpcError as error:
            code: grpc.StatusCode = error.code()
            return code
        return grpc.StatusCode.OK

    def health_status(self) -> int | None:
        """The server's health status, or None while it does not answer."""
        try:
            answer = self.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
        except grpc.RpcError:
            return None
        return int(answer.status)

    def serving(self) -> bool:
        return bool(self.health_status() == health_pb2.HealthCheckResponse.SERVING)


@pytest.fixture(scope="module")
def trained_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with one real tiny model, trained in a child process (TensorFlow stays there)."""
    root = tmp_path_factory.mktemp("fuzz")
    subprocess.run([sys.executable, "-c", TRAIN, str(root)], check=True, timeout=300)
    return root / "store"


@contextlib.contextmanager
def serving_predictor(store: Path, log_path: Path, *, model: bool = True) -> Iterator[Target]:
    """A real ``squarenet-predictor`` on ``store`` with ``--max-batch`` MAX_BATCH.

    Waits until it serves a model, or (``model=False``) until it answers health checks.
    """
    service = start_predictor(store, log_path, "--max-batch", str(MAX_BATCH))
    found = Target(service.process, service.port, log_path)
    try:
        service.wait_until(
            lambda: found.serving() if model else found.health_status() is not None,
            "the predictor to answer",
            60,
        )
        yield found
    finally:
        found.channel.close()
        service.stop(timeout=30)


@pytest.fixture(scope="module")
def target(trained_store: Path) -> Iterator[Target]:
    """The predictor that gets well-formed messages with hostile contents."""
    with serving_predictor(trained_store, trained_store.parent / "predictor.log") as found:
        yield found


@pytest.fixture(scope="module")
def raw_target(trained_store: Path) -> Iterator[Target]:
    """A second predictor for random bytes, so its findings do not spoil ``target``'s log."""
    with serving_predictor(trained_store, trained_store.parent / "raw-predictor.log") as found:
        yield found


@pytest.fixture(scope="module")
def idle_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """A predictor on an empty store: no model yet."""
    root = tmp_path_factory.mktemp("idle")
    (root / "store").mkdir()
    with serving_predictor(root / "store", root / "predictor.log", model=False) as found:
        yield found


any_double = st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True)
edge_double = st.sampled_from(
    [0.0, -0.0, 5e-324, -5e-324, 1.7976931348623157e308, 3.4028234663852886e38, 3.4028235e38, 1e300,
     float("nan"), float("inf"), float("-inf"), 1e-45, 2.0, -5.0, 5.0]
)  # fmt: skip
FLOAT32_MAX = float(np.finfo(np.float32).max)
int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


def encode(x: list[float], version: int) -> bytes:
    """The wire bytes of a PredictRequest."""
    data: bytes = predictor_pb2.PredictRequest(x=x, version=version).SerializeToString()
    return data


def check(target: Target, payload: bytes) -> grpc.StatusCode:
    code = target.status_of(target.predict_raw, payload)
    assert code in ALLOWED, (code, payload[:80])
    return code


@pytest.fixture(scope="module")
def rss_before(target: Target) -> int:
    """RSS once the model is loaded and a first call answered (start of the fuzzing run)."""
    assert check(target, encode([1.0], 0)) is grpc.StatusCode.OK
    return rss_bytes(target.process.pid)


@FUZZ
@given(x=st.lists(st.one_of(any_double, edge_double), max_size=40), version=int64)
def test_any_doubles_and_any_version(
    target: Target, rss_before: int, x: list[float], version: int
) -> None:
    code = check(target, encode(x, version))
    note(f"x={x!r} version={version} -> {code}")
    finite = all(abs(v) <= FLOAT32_MAX for v in x)  # NaN compares False: not finite
    if x and finite and version in (0, 1):
        assert code is grpc.StatusCode.OK
    if not x or version < 0:
        assert code is grpc.StatusCode.INVALID_ARGUMENT
    if x and finite and version > 1:
        assert code is grpc.StatusCode.NOT_FOUND


@settings(FUZZ, max_examples=60)  # each example sends up to 20 000 values
@given(
    size=st.one_of(
        st.integers(MAX_BATCH - 3, MAX_BATCH + 3),
        st.integers(RECEIVE_LIMIT // 9 - 3, RECEIVE_LIMIT // 9 + 3),
        st.integers(RECEIVE_LIMIT // 8 - 3, RECEIVE_LIMIT // 8 + 3),
        st.just(20 * MAX_BATCH),
    ),
    value=st.one_of(st.just(1.5), edge_double),
    version=st.sampled_from([0, 1, -1, 2**63 - 1]),
)
def test_sizes_near_the_batch_and_receive_limits(
    target: Target, rss_before: int, size: int, value: float, version: int
) -> None:
    payload = encode([value] * size, version)
    code = check(target, payload)
    if len(payload) > RECEIVE_LIMIT:
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    elif size > MAX_BATCH:
        assert code is grpc.StatusCode.INVALID_ARGUMENT


@FUZZ
@given(payload=st.binary(max_size=2048))
def test_random_bytes_as_the_request_message(raw_target: Target, payload: bytes) -> None:
    check(raw_target, payload)
    code = raw_target.status_of(raw_target.get_model_raw, payload)
    assert code in ALLOWED, (code, payload[:80])


@FUZZ
@given(
    payload=st.lists(
        st.sampled_from([b"\x09", b"\x0a", b"\x10", b"\x11", b"\xff" * 10, b"\x80", b"\x01",
                         b"\x0a\xff\xff\xff\xff\x0f", b"\x12\x00", b"\x1a\x08"]),
        max_size=30,
    ).map(b"".join)
)  # fmt: skip
def test_near_valid_wire_bytes(raw_target: Target, payload: bytes) -> None:
    """Tags of the real fields with wrong wire types, huge lengths, unterminated varints."""
    check(raw_target, payload)


@settings(FUZZ, max_examples=60)
@given(x=st.lists(st.one_of(any_double, edge_double), max_size=20), version=int64)
def test_before_any_model_only_unavailable_is_added(
    idle_target: Target, x: list[float], version: int
) -> None:
    """Bad input is still INVALID_ARGUMENT; anything else waits for a model (UNAVAILABLE)."""
    code = idle_target.status_of(idle_target.predict_raw, encode(x, version))
    note(f"x={x!r} version={version} -> {code}")
    assert code in ALLOWED | {grpc.StatusCode.UNAVAILABLE}
    assert code is not grpc.StatusCode.OK
    if not x or version < 0 or not all(abs(v) <= FLOAT32_MAX for v in x):
        assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert idle_target.health_status() == health_pb2.HealthCheckResponse.NOT_SERVING


def test_after_fuzzing_the_server_is_serving_and_its_memory_bounded(
    target: Target, rss_before: int
) -> None:
    assert target.process.poll() is None
    assert target.serving()
    answer = predictor_pb2.PredictResponse.FromString(
        target.predict_raw(encode([2.0], 0), timeout=10)
    )
    assert answer.version == 1 and len(answer.y) == 1
    growth = rss_bytes(target.process.pid) - rss_before
    assert growth < RSS_SLACK_BYTES, f"RSS grew by {growth / 2**20:.1f} MiB"
    log = target.log_path.read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in log
    json.dumps(log[-200:])  # the log is text (nothing binary echoed from the fuzz input)


def test_an_undecodable_message_leaves_the_server_serving(raw_target: Target) -> None:
    """Whatever the status, garbage never takes the server down or grows it without bound."""
    before = rss_bytes(raw_target.process.pid)
    for payload in (b"\x00", b"\t", b"\x0a\xff\xff\xff\xff\x0f", b"\xff" * 10) * 50:
        raw_target.status_of(raw_target.predict_raw, payload)
    assert raw_target.process.poll() is None
    assert raw_target.serving()
    answer = predictor_pb2.PredictResponse.FromString(
        raw_target.predict_raw(encode([2.0], 0), timeout=10)
    )
    assert answer.version == 1
    assert rss_bytes(raw_target.process.pid) - before < RSS_SLACK_BYTES
