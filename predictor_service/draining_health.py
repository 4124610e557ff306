"""gRPC health that also ends open Watch streams when the server shuts down.

The stock servicer flips every service to NOT_SERVING on shutdown but keeps Watch streams
open, so one watching client (a load balancer, a sidecar) holds the process until the whole
grace period has passed. Here the watchers get NOT_SERVING and then the end of the stream.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from grpc_health.v1 import health

SendResponse = Callable[[Any], None]


class DrainingHealthServicer(health.HealthServicer):  # type: ignore[misc]
    """HealthServicer whose ``end_watches`` closes every open Watch stream (once)."""

    def Watch(  # noqa: N802 (the proto's name)
        self, request: Any, context: Any, send_response_callback: SendResponse | None = None
    ) -> Any:
        """Watch as usual, through a callback that ends its stream at most once."""
        if send_response_callback is None:
            return super().Watch(request, context)
        return super().Watch(request, context, _ending_once(send_response_callback))

    def end_watches(self) -> None:
        """End every open Watch stream with OK (after enter_graceful_shutdown's NOT_SERVING)."""
        with self._lock:
            callbacks = [cb for group in self._send_response_callbacks.values() for cb in group]
        for callback in callbacks:
            callback(None)


def _ending_once(send: SendResponse) -> SendResponse:
    """gRPC ends a stream on ``send(None)``; a second end would start a second status batch."""
    lock = threading.Lock()
    ended = False

    def guarded(response: Any) -> None:
        nonlocal ended
        with lock:
            if ended:
                return
            ended = response is None
        send(response)

    return guarded
