"""gRPC health (asyncio) that also ends open Watch streams when the server shuts down.

The stock servicer flips every service to NOT_SERVING on shutdown but keeps Watch streams
open, so one watching client (a load balancer, a sidecar) holds the process until the whole
grace period has passed. Here each watcher gets NOT_SERVING and then the end of its stream.
"""

from __future__ import annotations

from typing import Any

from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio

_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class DrainingHealthServicer(aio.HealthServicer):  # type: ignore[misc]
    """The asyncio HealthServicer whose Watch streams end at graceful shutdown.

    Watch repeats the stock loop (its bookkeeping attributes are the stock servicer's) with
    one change: once shutting down, a watcher returns after sending the status it has.
    """

    async def Watch(self, request: Any, context: Any) -> None:  # noqa: N802 (the proto's name)
        """The status now, then every change; ends after NOT_SERVING at shutdown."""
        service = request.service
        condition = self._server_watchers[service]
        self._watcher_count_by_service[service] += 1
        last_status = None
        try:
            async with condition:
                while True:
                    status = self._server_status.get(service, _UNKNOWN)
                    if status != last_status:
                        await context.write(health_pb2.HealthCheckResponse(status=status))
                        last_status = status
                    if self._gracefully_shutting_down:
                        return
                    await condition.wait()
        finally:
            self._watcher_count_by_service[service] -= 1
            if self._watcher_count_by_service[service] == 0:
                del self._server_watchers[service]
                del self._watcher_count_by_service[service]

    async def enter_graceful_shutdown(self) -> None:
        """NOT_SERVING for every service, and wake every watcher (of unknown services too)."""
        await super().enter_graceful_shutdown()
        for condition in list(self._server_watchers.values()):
            async with condition:
                condition.notify_all()
