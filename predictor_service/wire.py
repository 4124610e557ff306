"""Registers the Predictor service with request decoding that cannot fail into INTERNAL.

grpcio decodes a request before any servicer code runs; bytes that are not a valid message
make it answer INTERNAL ("Exception deserializing request!") and log a traceback per call,
which a client could use to flood the log. Here decoding returns a ``MalformedRequest``
marker instead, and the method answers INVALID_ARGUMENT for it.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

from predictor_service.encoding import decode_request
from predictor_service.in_flight import CALLS
from predictor_service.servicer import CallError, abort_call
from squarenet.v1 import predictor_pb2

SERVICE_NAME = "squarenet.v1.Predictor"


@dataclass(frozen=True)
class MalformedRequest:
    """What a request decoded to when its bytes were not a valid message."""

    reason: str


def tolerant_decoder(
    message_type: Any, parse: Callable[[bytes], Any] | None = None
) -> Callable[[bytes], Any]:
    """``parse`` (default ``message_type.FromString``) returning a MalformedRequest, not raising."""
    parse = parse or message_type.FromString

    def decode(data: bytes) -> Any:
        try:
            return parse(data)
        except (DecodeError, ValueError, RuntimeError) as exc:
            return MalformedRequest(f"the request is not a valid {message_type.__name__}: {exc}")

    return decode


def rejecting_malformed(method: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[..., Any]:
    """Answer INVALID_ARGUMENT for a MalformedRequest; call the method for anything else."""

    @functools.wraps(method)
    def handle(request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, MalformedRequest):
            error = CallError(grpc.StatusCode.INVALID_ARGUMENT, request.reason)
            abort_call(context, method.__name__, time.perf_counter(), error)
        return method(request, context)

    return handle


#: One method of a service: (handler, request class, response class, streams responses).
Method = tuple[Callable[[Any, grpc.ServicerContext], Any], Any, Any, bool]


def _serialized(response: Any) -> bytes:
    """A handler's answer as bytes: encoded already by a hand path, or a message."""
    if isinstance(response, bytes):
        return response
    return bytes(response.SerializeToString())


def add_service(
    server: grpc.Server,
    service_name: str,
    methods: dict[str, Method],
    parsers: dict[str, Callable[[bytes], Any]] | None = None,
) -> None:
    """Register ``methods`` of ``service_name`` with tolerant decoding; others are UNIMPLEMENTED.

    ``parsers`` replaces protobuf's parsing for some methods (the bulk paths, ``views``);
    their handlers may answer bytes they encoded themselves.
    """
    handlers = {}
    parsers = parsers or {}
    for name, (handler, request_type, response_type, streams) in methods.items():
        if streams:
            make, behaviour = grpc.unary_stream_rpc_method_handler, rejecting_malformed(handler)
        else:
            make, behaviour = (
                grpc.unary_unary_rpc_method_handler,
                CALLS.track(rejecting_malformed(handler)),
            )
        hand_parsed = name in parsers
        handlers[name] = make(
            behaviour,
            request_deserializer=tolerant_decoder(request_type, parsers.get(name)),
            response_serializer=_serialized if hand_parsed else response_type.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service_name, handlers),))
    server.add_registered_method_handlers(service_name, handlers)


def add_predictor_to_server(servicer: Any, server: grpc.Server) -> None:
    """Register ``servicer``'s Predict, GetModel and WatchModel with tolerant decoding."""
    handlers = {
        "Predict": grpc.unary_unary_rpc_method_handler(
            CALLS.track(rejecting_malformed(servicer.Predict)),
            request_deserializer=tolerant_decoder(predictor_pb2.PredictRequest, decode_request),
            response_serializer=None,  # Predict answers the encoded bytes itself
        ),
        "GetModel": grpc.unary_unary_rpc_method_handler(
            CALLS.track(rejecting_malformed(servicer.GetModel)),
            request_deserializer=tolerant_decoder(predictor_pb2.GetModelRequest),
            response_serializer=predictor_pb2.Model.SerializeToString,
        ),
        "WatchModel": grpc.unary_stream_rpc_method_handler(
            rejecting_malformed(servicer.WatchModel),
            request_deserializer=tolerant_decoder(predictor_pb2.WatchModelRequest),
            response_serializer=predictor_pb2.Model.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
