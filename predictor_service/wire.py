"""How every protocol's calls meet the ``grpc.aio`` server: decoding, answering, failing.

The protocols' servicers are plain functions: an answer takes the decoded request and
returns the response (a message, or bytes a hand encoder wrote), and raises
:class:`CallError` (or a ``VersionError``) when the call cannot be answered. This module
turns them into the server's handlers, so every call of every protocol goes through one
place that

* decodes tolerantly: grpcio would answer bytes that are not a valid message with INTERNAL
  and log a traceback per call (a flood a client could start); here they become a
  :class:`MalformedRequest` and the call INVALID_ARGUMENT;
* answers small calls on the event loop, where they are cheapest, and hands large ones
  (``OFFLOAD_FROM_BYTES``) to the thread pool, so a million-value call never stalls the
  others or the health checks;
* counts the call in flight, records its code and duration, and ends every failure with a
  status and a message written for the client: an exception escaping a handler would reach
  the client as UNKNOWN with its text, which is a bug, so anything unexpected is INTERNAL
  and logged here.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

from predictor_service import metrics
from predictor_service.in_flight import CALLS, current_call
from predictor_service.versions import (
    BadVersionName,
    NoModelLoaded,
    VersionError,
    VersionNotLoaded,
)

log = logging.getLogger(__name__)

#: Requests of this many bytes and more are answered on the thread pool: about 8,000
#: values, some 100 µs of work. Below it a thread hand-off costs more than the answer.
OFFLOAD_FROM_BYTES = 64 * 1024

_OK = grpc.StatusCode.OK


class CallError(Exception):
    """A call that cannot be answered: its status code and a message for the client."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


#: How every protocol answers a version that cannot be used.
_VERSION_CODES: dict[type[VersionError], grpc.StatusCode] = {
    NoModelLoaded: grpc.StatusCode.UNAVAILABLE,
    VersionNotLoaded: grpc.StatusCode.NOT_FOUND,
    BadVersionName: grpc.StatusCode.INVALID_ARGUMENT,
}


def version_call_error(error: VersionError) -> CallError:
    """The status a version error leaves with, whatever the protocol."""
    return CallError(_VERSION_CODES[type(error)], str(error))


@dataclass(frozen=True, slots=True)
class MalformedRequest:
    """What a request decoded to when its bytes were not a valid message."""

    reason: str


@dataclass(frozen=True, slots=True)
class Offloaded:
    """A decoded request large enough to be answered on the thread pool."""

    request: Any


def tolerant_decoder(
    message_type: Any, parse: Callable[[bytes], Any] | None = None
) -> Callable[[bytes], Any]:
    """``parse`` (default ``message_type.FromString``) returning a MalformedRequest, not raising."""
    parse = parse or message_type.FromString

    def decode(data: bytes) -> Any:
        try:
            request = parse(data)
        except (DecodeError, ValueError, RuntimeError) as exc:
            return MalformedRequest(f"the request is not a valid {message_type.__name__}: {exc}")
        return Offloaded(request) if len(data) >= OFFLOAD_FROM_BYTES else request

    return decode


def _serialized(response: Any) -> bytes:
    """An answer as bytes: encoded already by a hand path, or a message."""
    if isinstance(response, bytes):
        return response
    return bytes(response.SerializeToString())


#: A unary call's answer: the decoded request in, the response (or its bytes) out.
Answer = Callable[[Any], Any]
#: A streaming call: the decoded request and the call's context in, the messages out.
Stream = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]]


def unary_handler(name: str, answer: Answer, executor: Executor) -> Callable[..., Any]:
    """The coroutine that answers one unary method of every call, counted under ``name``."""
    record_ok = metrics.recorder(name, _OK)

    async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        started = time.perf_counter()
        current_call.set(context)  # the call's own task: no reset needed
        CALLS.enter()
        try:
            if type(request) is Offloaded:
                run = contextvars.copy_context().run  # current_call goes along
                loop = asyncio.get_running_loop()
                response = await loop.run_in_executor(executor, run, answer, request.request)
            elif type(request) is MalformedRequest:
                raise CallError(grpc.StatusCode.INVALID_ARGUMENT, request.reason)
            else:
                response = answer(request)
        except CallError as exc:
            error = exc
        except VersionError as exc:
            error = version_call_error(exc)
        except Exception:
            log.exception("%s failed unexpectedly", name)
            error = CallError(grpc.StatusCode.INTERNAL, f"{name} failed; see the predictor's log")
        else:
            record_ok(time.perf_counter() - started)
            return response
        finally:
            CALLS.leave()
        await abort(context, name, started, error)

    return handle


def stream_handler(name: str, stream: Stream) -> Callable[..., AsyncIterator[Any]]:
    """The async generator that answers a server-streaming method, counted under ``name``."""

    async def handle(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        started = time.perf_counter()
        if type(request) is Offloaded:
            request = request.request
        if type(request) is MalformedRequest:
            await abort(
                context, name, started, CallError(grpc.StatusCode.INVALID_ARGUMENT, request.reason)
            )
        try:
            async for message in stream(request, context):
                yield message
        except CallError as exc:
            await abort(context, name, started, exc)
        except asyncio.CancelledError:
            metrics.recorder(name, grpc.StatusCode.CANCELLED)(time.perf_counter() - started)
            raise
        metrics.recorder(name, _OK)(time.perf_counter() - started)

    return handle


async def abort(
    context: grpc.aio.ServicerContext[Any, Any], name: str, started: float, error: CallError
) -> None:
    """The one place errors leave: count the call by its code, then end it with the status."""
    metrics.recorder(name, error.code)(time.perf_counter() - started)
    await context.abort(error.code, error.message)


@dataclass(frozen=True)
class Method:
    """One method of a service: its answer (or stream) and its messages."""

    call: Answer | Stream
    request_type: Any
    response_type: Any
    streams: bool = False
    #: Replaces protobuf's parsing (the bulk paths, ``views``); the answer may be bytes.
    parse: Callable[[bytes], Any] | None = None


def add_service(
    server: grpc.aio.Server,
    service_name: str,
    methods: dict[str, Method],
    executor: Executor,
    *,
    metric_prefix: str = "",
) -> None:
    """Register ``methods`` of ``service_name``; the service's others are UNIMPLEMENTED.

    Each method's calls are counted in the metrics as ``metric_prefix + name``.
    """
    handlers = {}
    for name, method in methods.items():
        decode = tolerant_decoder(method.request_type, method.parse)
        serialize = _serialized if method.parse else method.response_type.SerializeToString
        if method.streams:
            handlers[name] = grpc.unary_stream_rpc_method_handler(
                stream_handler(metric_prefix + name, method.call),  # type: ignore[arg-type]
                request_deserializer=decode,
                response_serializer=serialize,
            )
        else:
            handlers[name] = grpc.unary_unary_rpc_method_handler(
                unary_handler(metric_prefix + name, method.call, executor),  # type: ignore[arg-type]
                request_deserializer=decode,
                response_serializer=serialize,
            )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service_name, handlers),))
    server.add_registered_method_handlers(service_name, handlers)
