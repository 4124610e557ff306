"""How many unary calls are being answered right now, for the metric and for shutdown.

At SIGTERM the server says how many calls it holds and, after the grace period, how many
it had to cut off: an operator sizing ``--grace-period`` (and a test proving that calls
in flight finish) needs the server's own count, because no client can tell when its call
reached the server. Streams (WatchModel, health Watch) are not counted: they end at
shutdown by design. Only the event loop's thread changes the counts, so they need no lock.
"""

from __future__ import annotations

import contextvars
from typing import Any

from predictor_service import metrics

#: The context of the unary call being answered: each call runs in a task (and, offloaded,
#: a copied context) of its own, so answers that need the call's metadata (the session key
#: of ``traffic``) read it here instead of every call paying for an interceptor.
current_call: contextvars.ContextVar[Any] = contextvars.ContextVar("current_call", default=None)


class CallsInFlight:
    """A count of calls being answered, mirrored in ``squarenet_predictor_calls_in_flight``."""

    def __init__(self) -> None:
        self.count = 0

    def enter(self) -> None:
        """A call's handler started."""
        self.count += 1
        metrics.CALLS_IN_FLIGHT.inc()

    def leave(self) -> None:
        """A call's handler ended, answered or not."""
        self.count -= 1
        metrics.CALLS_IN_FLIGHT.dec()


#: The process's one count: every unary handler of every protocol reports to it.
CALLS = CallsInFlight()
