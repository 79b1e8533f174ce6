"""The standard `grpc.health.v1.Health` service of the controller, driven by a store probe.

Owns the serving status (docs/controller.md, "Health and keepalive"): a probe task asks
the store for a linearizable read every second (`Store.healthy`, given at most 1 s);
an answer of True makes the status SERVING, anything else (False, an error, no answer in
time) NOT_SERVING. The services known are "" (the whole server) and
"isthmus.v1.Controller"; both share the one status. Rules of the protocol: Check of an
unknown service fails with NOT_FOUND; Watch of one sends SERVICE_UNKNOWN and stays open;
Watch sends the current status first, then each change. `close` ends every Watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

import grpc

from isthmus.logfmt import kv
from isthmus.v1 import health_pb2, health_pb2_grpc

log = logging.getLogger("controller.health")

SERVICES: Final = ("", "isthmus.v1.Controller")
PROBE_INTERVAL: Final = 1.0
PROBE_TIMEOUT: Final = 1.0

Status = health_pb2.HealthCheckResponse.ServingStatus
SERVING: Final = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING: Final = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN: Final = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class HealthService(health_pb2_grpc.HealthServicer):
    """Serves the status the last probe found; `start` probes once, then every interval."""

    def __init__(
        self,
        probe: Callable[[], Awaitable[bool]],
        interval: float = PROBE_INTERVAL,
        timeout: float = PROBE_TIMEOUT,
    ) -> None:
        self._probe = probe
        self._interval = interval
        self._timeout = timeout
        self._status: Status = NOT_SERVING
        self._changed = asyncio.Condition()
        self._closed = False
        self._task: asyncio.Task[None] | None = None

    @property
    def status(self) -> Status:
        return self._status

    async def check_once(self) -> Status:
        """Probe the store now and update the status (for `start` and tests)."""
        try:
            ok = await asyncio.wait_for(self._probe(), self._timeout)
            reason = "" if ok else "the store did not answer a read"
        except TimeoutError:
            ok, reason = False, f"the store did not answer within {self._timeout:g} s"
        except Exception as e:  # a probe must never end the task; the reason is logged
            ok, reason = False, f"the store probe failed: {e}"
        await self._set(SERVING if ok else NOT_SERVING, reason)
        return self._status

    async def start(self) -> None:
        """Probe once (so the first answer is real), then keep probing in a task."""
        await self.check_once()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="health-probe")

    async def close(self) -> None:
        """Stop probing and end every Watch."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        async with self._changed:
            self._closed = True
            self._changed.notify_all()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.check_once()

    async def _set(self, status: Status, reason: str) -> None:
        if status == self._status:
            return
        async with self._changed:
            self._status = status
            self._changed.notify_all()
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(status).lower()
        if status == SERVING:
            log.info(kv("health", status=name))
        else:
            log.error(kv("health", status=name, reason=reason))

    async def Check(
        self,
        request: health_pb2.HealthCheckRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> health_pb2.HealthCheckResponse:
        if request.service not in SERVICES:
            await context.abort(grpc.StatusCode.NOT_FOUND, _unknown(request.service))
        return health_pb2.HealthCheckResponse(status=self._status)

    async def Watch(
        self,
        request: health_pb2.HealthCheckRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        if request.service not in SERVICES:
            yield health_pb2.HealthCheckResponse(status=SERVICE_UNKNOWN)
            async with self._changed:
                await self._changed.wait_for(lambda: self._closed)
            return
        sent = self._status
        yield health_pb2.HealthCheckResponse(status=sent)
        while True:
            async with self._changed:
                while not self._closed and self._status == sent:
                    await self._changed.wait()
                if self._closed:
                    return
                sent = self._status
            yield health_pb2.HealthCheckResponse(status=sent)


def _unknown(service: str) -> str:
    known = " and ".join(repr(s) for s in SERVICES)
    return f"unknown service {service[:100]!r}; known: {known}"
