"""How many unary calls are being answered right now, for the metric and for shutdown.

At SIGTERM the server says how many calls it holds and, after the grace period, how many
it had to cut off: an operator sizing ``--grace-period`` (and a test proving that calls
in flight finish) needs the server's own count, because no client can tell when its call
reached the server. Streams (WatchModel, health Watch) are not counted: they end at
shutdown by design.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from predictor_service import metrics

Handler = Callable[[Any, Any], Any]


class CallsInFlight:
    """A count of handlers running, mirrored in ``squarenet_predictor_calls_in_flight``."""

    def __init__(self) -> None:
        self._count = 0
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        """Calls whose handler has started and not yet returned."""
        return self._count

    def track(self, handler: Handler) -> Handler:
        """``handler``, counted while it runs."""

        @functools.wraps(handler)
        def tracked(request: Any, context: Any) -> Any:
            with self._lock:
                self._count += 1
            metrics.CALLS_IN_FLIGHT.inc()
            try:
                return handler(request, context)
            finally:
                with self._lock:
                    self._count -= 1
                metrics.CALLS_IN_FLIGHT.dec()

        return tracked


#: The process's one count: every unary handler of every protocol is wrapped with it.
CALLS = CallsInFlight()
