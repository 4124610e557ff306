"""``wire``: how every protocol's calls meet the real ``grpc.aio`` server.

A real server on loopback, on an event loop in a thread of the test, answers one test
service whose answers say where they ran: small calls on the event loop, large ones on the
thread pool (so a large call cannot stall a small one), every failure a defined status.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from google.protobuf.wrappers_pb2 import StringValue  # type: ignore[import-untyped]

from predictor_service.traffic import session_key
from predictor_service.versions import VersionNotLoaded
from predictor_service.wire import OFFLOAD_FROM_BYTES, CallError, Method, add_service

SERVICE = "test.Wire"
LARGE = "x" * OFFLOAD_FROM_BYTES


class Answers:
    """Answers that report the thread they ran on, or fail as the request asks."""

    def __init__(self) -> None:
        self.large_started = threading.Event()
        self.release_large = threading.Event()

    def where(self, request: StringValue) -> StringValue:
        if request.value == LARGE:  # held until the test has seen a small call answered
            self.large_started.set()
            assert self.release_large.wait(30)
        return StringValue(value=f"{threading.current_thread().name} {session_key()}")

    def fail(self, request: StringValue) -> StringValue:
        if request.value == "call-error":
            raise CallError(grpc.StatusCode.FAILED_PRECONDITION, "said so")
        if request.value == "version":
            raise VersionNotLoaded("version 7 is not loaded")
        raise RuntimeError("a secret the client must not see")


@pytest.fixture
def answers() -> Answers:
    return Answers()


@pytest.fixture
def channel(answers: Answers) -> Iterator[grpc.Channel]:
    """A real grpc.aio server with the test service on its own event loop thread."""
    loop = asyncio.new_event_loop()
    executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="offload")
    started = threading.Event()
    port: list[int] = []

    async def serve() -> grpc.aio.Server:
        server = grpc.aio.server()
        methods = {
            "Where": Method(answers.where, StringValue, StringValue),
            "Fail": Method(answers.fail, StringValue, StringValue),
        }
        add_service(server, SERVICE, methods, executor)
        port.append(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        return server

    def run() -> None:
        asyncio.set_event_loop(loop)
        running.append(loop.run_until_complete(serve()))
        started.set()
        loop.run_forever()

    running: list[grpc.aio.Server] = []
    thread = threading.Thread(target=run, name="event-loop", daemon=True)
    thread.start()
    assert started.wait(30)
    with grpc.insecure_channel(f"127.0.0.1:{port[0]}") as client:
        yield client
    answers.release_large.set()
    asyncio.run_coroutine_threadsafe(running[0].stop(None), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(30)
    executor.shutdown()


def _call(channel: grpc.Channel, method: str, value: str, **kwargs: Any) -> str:
    stub = channel.unary_unary(
        f"/{SERVICE}/{method}",
        request_serializer=StringValue.SerializeToString,
        response_deserializer=StringValue.FromString,
    )
    answer: StringValue = stub(StringValue(value=value), timeout=30, **kwargs)
    return str(answer.value)


def test_small_calls_are_answered_on_the_event_loop(channel: grpc.Channel) -> None:
    assert _call(channel, "Where", "small").split()[0] == "event-loop"


def test_a_large_call_runs_on_the_pool_and_small_calls_go_on_meanwhile(
    channel: grpc.Channel, answers: Answers
) -> None:
    outcome: list[str] = []
    large = threading.Thread(target=lambda: outcome.append(_call(channel, "Where", LARGE)))
    large.start()
    assert answers.large_started.wait(30)
    # The large call's answer is held on its thread: the loop still answers others.
    assert _call(channel, "Where", "small").split()[0] == "event-loop"
    answers.release_large.set()
    large.join(30)
    assert outcome and outcome[0].startswith("offload")


def test_the_session_key_reaches_answers_on_the_loop_and_on_the_pool(
    channel: grpc.Channel, answers: Answers
) -> None:
    answers.release_large.set()
    metadata = (("x-squarenet-session", "user-7"),)
    assert _call(channel, "Where", "small", metadata=metadata).split()[1] == "user-7"
    assert _call(channel, "Where", LARGE, metadata=metadata).split()[1] == "user-7"
    assert _call(channel, "Where", "small") == "event-loop "  # no key: none left behind


@pytest.mark.parametrize(
    ("value", "code", "details"),
    [
        ("call-error", grpc.StatusCode.FAILED_PRECONDITION, "said so"),
        ("version", grpc.StatusCode.NOT_FOUND, "version 7 is not loaded"),
        ("boom", grpc.StatusCode.INTERNAL, "Fail failed; see the predictor's log"),
    ],
)
def test_every_failure_leaves_with_a_defined_status(
    channel: grpc.Channel, value: str, code: grpc.StatusCode, details: str
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        _call(channel, "Fail", value)
    assert raised.value.code() == code
    assert raised.value.details() == details


def test_bytes_that_are_no_message_are_invalid_argument(channel: grpc.Channel) -> None:
    stub = channel.unary_unary(f"/{SERVICE}/Where")
    with pytest.raises(grpc.RpcError) as raised:
        stub(b"\xff\xff\xff", timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid StringValue" in raised.value.details()
