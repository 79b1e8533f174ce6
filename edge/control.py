"""The controller watch loop: Register, then Watch the map, forever, with backoff.

Owns the edge's side of the wire contract (proto/isthmus/v1/isthmus.proto) and the
connection state `isthmus status` shows. Rules:
- Each stream's first snapshot is the controller's whole map: it is applied even when
  its version is not newer. Later snapshots are applied only when newer.
- An invalid snapshot is logged, recorded as last_error and skipped; the stream goes on.
- Fail-static: losing the controller changes nothing in the data path or the kernel;
  the edge forwards on the last map until a new stream delivers a new one.
- A refused Register is logged with its status code and message; the edge still
  watches (it can reach the others), and registers again on every reconnect.
Protobuf stays here: snapshots become RouteMaps through isthmus.convert only.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import grpc

from isthmus.convert import Registration, WireError, map_from_pb, registration_to_pb
from isthmus.logfmt import kv
from isthmus.routemap import RouteMap
from isthmus.v1 import isthmus_pb2 as pb
from isthmus.v1.isthmus_pb2_grpc import ControllerStub

MAX_MESSAGE = 16 * 1024 * 1024
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
)
REGISTER_TIMEOUT = 5.0

# Codes with which the controller refuses a registration (design.md); any other code
# means the controller could not be reached or failed, and the loop reconnects.
REFUSALS = frozenset(
    {
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
    }
)

_log = logging.getLogger(__name__)


class MapSink(Protocol):
    """Where snapshots go (edge.applier.MapApplier conforms)."""

    @property
    def version(self) -> int:
        """The version of the map in use; 0 for none."""
        ...

    def apply(self, route_map: RouteMap, *, save: bool = True) -> bool:
        """Use `route_map` from now on; False when it was refused."""
        ...


@dataclass(slots=True)
class Backoff:
    """Jittered exponential backoff: 0.5 s, x1.6 per failure, +-20%, at most 15 s."""

    initial: float = 0.5
    factor: float = 1.6
    maximum: float = 15.0
    jitter: float = 0.2
    rng: random.Random = field(default_factory=random.Random)
    _next: float = 0.0

    def reset(self) -> None:
        self._next = 0.0

    def delay(self) -> float:
        """The next delay to wait, growing until `reset`."""
        base = self.initial if self._next == 0.0 else min(self._next * self.factor, self.maximum)
        self._next = base
        return base * (1.0 + self.rng.uniform(-self.jitter, self.jitter))


@dataclass(frozen=True, slots=True)
class ControllerView:
    """The connection state for `isthmus status`."""

    address: str
    connected: bool
    last_error: str | None


def _rpc_error(e: grpc.aio.AioRpcError) -> str:
    return f"{e.code().name}: {e.details() or ''}".rstrip(": ")


class ControlLoop:
    """Keeps one Watch stream open to the controller and applies what it sends."""

    def __init__(
        self,
        target: str,
        registration: Registration,
        sink: MapSink,
        *,
        backoff: Backoff | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._target = target
        self._registration = registration
        self._sink = sink
        self._backoff = backoff or Backoff()
        self._sleep = sleep
        self.connected = False
        self.last_error: str | None = None
        self.streams = 0  # streams that delivered a first snapshot (for tests and status)

    def view(self) -> ControllerView:
        return ControllerView(self._target, self.connected, self.last_error)

    async def run(self) -> None:
        """Connect, watch, reconnect after any failure; returns only when cancelled."""
        while True:
            try:
                await self._session()
                self._fail("the controller ended the watch stream")
            except grpc.aio.AioRpcError as e:
                self._fail(_rpc_error(e))
            except (grpc.aio.UsageError, grpc.RpcError, OSError) as e:
                self._fail(str(e) or type(e).__name__)
            except Exception as e:  # a bug must not end the loop: keep reconnecting
                _log.exception(kv("control_loop_error", error=repr(e)))
                self._fail(repr(e))
            delay = self._backoff.delay()
            _log.debug(kv("controller_retry", after_seconds=round(delay, 2)))
            await self._sleep(delay)

    def _fail(self, error: str) -> None:
        was, previous = self.connected, self.last_error
        self.connected = False
        self.last_error = error
        # One warning per change of state or error, not one per retry.
        log = _log.warning if was or error != previous else _log.debug
        log(
            kv(
                "controller_disconnected" if was else "controller_unreachable",
                controller=self._target,
                error=error,
                detail="forwarding on the last map",
            )
        )

    async def _session(self) -> None:
        async with grpc.aio.insecure_channel(self._target, options=CHANNEL_OPTIONS) as channel:
            stub = ControllerStub(channel)  # type: ignore[no-untyped-call]  # generated code
            registered = await self._register(stub)
            call = stub.Watch(
                pb.WatchRequest(name=self._registration.name, known_version=self._sink.version)
            )
            first = True
            full = True  # until a valid snapshot arrives, each one is the whole map
            async for msg in call:
                if first:
                    first = False
                    self.connected = True
                    self.streams += 1
                    self._backoff.reset()
                    if registered:
                        self.last_error = None
                    _log.info(kv("controller_connected", controller=self._target))
                if self._on_snapshot(msg, full):
                    full = False

    async def _register(self, stub: ControllerStub) -> bool:
        """True when admitted; False when refused (logged). Other failures raise."""
        try:
            resp = await stub.Register(
                registration_to_pb(self._registration), timeout=REGISTER_TIMEOUT
            )
        except grpc.aio.AioRpcError as e:
            if e.code() not in REFUSALS:
                raise
            self.last_error = f"register refused: {_rpc_error(e)}"
            _log.error(
                kv(
                    "register_refused",
                    controller=self._target,
                    code=e.code().name,
                    message=e.details() or "",
                )
            )
            return False
        _log.info(
            kv(
                "registered",
                controller=self._target,
                version=resp.version,
                routes=self._registration.routes,
            )
        )
        return True

    def _on_snapshot(self, msg: pb.MapSnapshot, full: bool) -> bool:
        """Apply one snapshot if it is the stream's full map or newer; False if invalid."""
        try:
            route_map = map_from_pb(msg)
        except WireError as e:
            self.last_error = f"invalid map version {msg.version}: {e}"
            _log.error(kv("map_invalid", version=msg.version, error=str(e)))
            return False
        if not full and route_map.version <= self._sink.version:
            _log.info(kv("map_skipped", version=route_map.version, current=self._sink.version))
            return True
        if not self._sink.apply(route_map):
            self.last_error = f"map version {route_map.version} refused by the tunnel"
            return False
        return True
