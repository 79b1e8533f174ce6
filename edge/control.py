"""The controller watch loop: authenticate, Register, Watch the map, Report, forever.

Owns the edge's side of the wire contract (proto/isthmus/v1/isthmus.proto,
docs/controller.md) and the connection state `isthmus status` shows. Rules:
- Every call but Challenge is authenticated: a fresh Challenge, then the call with
  `isthmus-auth-bin` = auth_value(edge key, controller key, method, challenge, request).
- Controllers are tried in the configured order: after any session ends (error, stream
  closed, a delta that does not fit) the next one is tried, after the backoff delay; the
  backoff resets once a stream delivers.
- Watch asks for what changed since the version applied (`known_version`). A full map
  replaces the map; a delta is patched onto the map in use and only when its
  base_version is that map's version, else the loop reconnects with known_version.
- No map touches the tunnel or the kernel before its leases verify (edge.leases): a
  map with a missing or forged lease is refused whole and the old map stays; routes
  with an expired lease are left out. Then Report(applied_version) or
  Report(error, refused_version). Reports are best effort: a failed Report is logged
  and never ends the stream.
- Every 30 s, and at the earliest lease expiry, the map in use is checked again and
  routes whose lease ran out are withdrawn (also while no controller answers).
- An invalid map is logged, recorded as last_error and reported; the stream goes on.
- Fail-static: losing the controller changes nothing in the data path or the kernel
  except lease expiry; the edge forwards on the last map until a new one arrives.
- A refused Register is logged with its status code and message; the edge still
  watches (it can reach the others), and registers again on every reconnect.
Protobuf stays here: updates become RouteMaps and MapDeltas through isthmus.convert only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import grpc
from google.protobuf.message import Message

from edge.leases import Dropped, LeaseError, drop_expired, earliest_expiry, verify_leases
from isthmus.auth import AUTH_METADATA, auth_value
from isthmus.convert import Registration, WireError, registration_to_pb, update_from_pb
from isthmus.logfmt import kv
from isthmus.mapdelta import MapDelta, patch
from isthmus.routemap import MapError, RouteMap
from isthmus.signing import ControllerPublicKey
from isthmus.v1 import isthmus_pb2 as pb
from isthmus.v1.isthmus_pb2_grpc import ControllerStub

MAX_MESSAGE = 16 * 1024 * 1024
# A dead controller (or path) is detected within KEEPALIVE_TIME + KEEPALIVE_TIMEOUT.
KEEPALIVE_TIME_MS = 20_000
KEEPALIVE_TIMEOUT_MS = 10_000
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    # What gRPC (1.5x and later) really enforces: an unanswered ping ends the connection
    # after this long; keepalive_timeout_ms alone is ignored (the default is 60 s).
    ("grpc.http2.ping_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    # The watch stream is idle between maps: keep pinging it (gRPC stops after 2 by default).
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
)
CALL_TIMEOUT = 5.0  # Challenge, Register, Report
LEASE_CHECK_INTERVAL = 30.0
MIN_LEASE_CHECK = 0.05

METHOD_REGISTER = "/isthmus.v1.Controller/Register"
METHOD_WATCH = "/isthmus.v1.Controller/Watch"
METHOD_REPORT = "/isthmus.v1.Controller/Report"

# Codes with which the controller refuses a registration (design.md); any other code
# means the controller could not be reached, could not authenticate us, or failed, and
# the loop reconnects.
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
    """Where maps go (edge.applier.MapApplier conforms)."""

    @property
    def version(self) -> int:
        """The version of the map in use; 0 for none."""
        ...

    @property
    def route_map(self) -> RouteMap:
        """The map in use (leases verified, expired routes left out)."""
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

    controllers: tuple[str, ...]
    address: str  # the controller in use (or tried last)
    connected: bool
    last_error: str | None
    applied_version: int


class _Resync(Exception):
    """The stream sent a delta that does not fit the map in use: reconnect."""


def _rpc_error(e: grpc.aio.AioRpcError) -> str:
    return f"{e.code().name}: {e.details() or ''}".rstrip(": ")


def _dropped_text(dropped: Dropped) -> str:
    return "lease expired, route left out: " + ", ".join(
        f"edge {edge!r} route {route}" for edge, route in dropped
    )


class ControlLoop:
    """Keeps one Watch stream open to a controller and applies what it sends."""

    def __init__(
        self,
        controllers: Sequence[str],
        registration: Registration,
        sink: MapSink,
        *,
        private_key: bytes,
        controller_key: ControllerPublicKey,
        backoff: Backoff | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        lease_check_interval: float = LEASE_CHECK_INTERVAL,
    ) -> None:
        if not controllers:
            raise ValueError("at least one controller address is needed")
        self._targets = tuple(controllers)
        self._index = 0
        self._registration = registration
        self._sink = sink
        self._private_key = private_key
        self._controller_key = controller_key
        self._backoff = backoff or Backoff()
        self._sleep = sleep
        self._clock = clock
        self._lease_check_interval = lease_check_interval
        self._map_changed = asyncio.Event()
        self._register_error: str | None = None
        self.connected = False
        self.last_error: str | None = None
        self.streams = 0  # streams that delivered a first update (for tests and status)

    @property
    def address(self) -> str:
        """The controller in use, or the one tried last while waiting to try the next."""
        return self._targets[self._index]

    def view(self) -> ControllerView:
        return ControllerView(
            controllers=self._targets,
            address=self.address,
            connected=self.connected,
            last_error=self.last_error,
            applied_version=self._sink.version,
        )

    async def run(self) -> None:
        """Watch (with failover) and expire leases; returns only when cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._watch_forever(), name="watch")
            group.create_task(self._expire_forever(), name="lease-expiry")

    # -- lease expiry ---------------------------------------------------------------

    def recheck_leases(self) -> Dropped:
        """Withdraw the routes of the map in use whose lease ran out; what was withdrawn."""
        usable, dropped = drop_expired(self._sink.route_map, self._clock())
        if not dropped:
            return ()
        for edge, route in dropped:
            _log.warning(
                kv(
                    "lease_expired",
                    edge=edge,
                    route=route,
                    version=usable.version,
                    detail="route withdrawn until the controller renews its lease",
                )
            )
        if self._sink.apply(usable, save=False):
            self.last_error = _dropped_text(dropped)
        return dropped

    def _next_check(self) -> float:
        """Seconds until the next expiry check: the interval, or sooner at an expiry."""
        delay = self._lease_check_interval
        expiry = earliest_expiry(self._sink.route_map)
        if expiry is not None:
            # A lease is void just after `expires`: wake a moment later, never spin.
            delay = min(delay, max(MIN_LEASE_CHECK, expiry - self._clock() + MIN_LEASE_CHECK))
        return delay

    async def _expire_forever(self) -> None:
        while True:
            try:
                self.recheck_leases()
            except Exception as e:  # a bug must not stop expiry checks
                _log.exception(kv("lease_check_error", error=repr(e)))
            self._map_changed.clear()
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that arrives as the event is set, and this loop would then never end.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._next_check()):
                    await self._map_changed.wait()

    # -- the watch ------------------------------------------------------------------

    async def _watch_forever(self) -> None:
        while True:
            target = self.address  # stays the address shown until the next attempt
            try:
                await self._session(target)
                self._fail(target, "the controller ended the watch stream")
            except _Resync as e:
                self._fail(target, str(e))
            except grpc.aio.AioRpcError as e:
                self._fail(target, _rpc_error(e))
            except (grpc.aio.UsageError, grpc.RpcError, OSError) as e:
                self._fail(target, str(e) or type(e).__name__)
            except Exception as e:  # a bug must not end the loop: keep reconnecting
                _log.exception(kv("control_loop_error", error=repr(e)))
                self._fail(target, repr(e))
            delay = self._backoff.delay()
            following = self._targets[(self._index + 1) % len(self._targets)]
            _log.debug(kv("controller_retry", controller=following, after_seconds=round(delay, 2)))
            await self._sleep(delay)
            self._index = (self._index + 1) % len(self._targets)

    def _fail(self, target: str, error: str) -> None:
        was, previous = self.connected, self.last_error
        self.connected = False
        self.last_error = error
        # One warning per change of state or error, not one per retry.
        log = _log.warning if was or error != previous else _log.debug
        log(
            kv(
                "controller_disconnected" if was else "controller_unreachable",
                controller=target,
                error=error,
                detail="forwarding on the last map",
            )
        )

    async def _auth(
        self, stub: ControllerStub, method: str, request: Message
    ) -> tuple[tuple[str, bytes], ...]:
        """Metadata authenticating one call of `method` with `request`."""
        challenge = await stub.Challenge(pb.ChallengeRequest(), timeout=CALL_TIMEOUT)
        value = auth_value(
            self._private_key,
            self._registration.public_key,
            self._controller_key,
            method,
            challenge.challenge,
            request.SerializeToString(deterministic=True),
        )
        return ((AUTH_METADATA, value),)

    async def _session(self, target: str) -> None:
        async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
            stub = ControllerStub(channel)  # type: ignore[no-untyped-call]  # generated code
            await self._register(stub, target)
            request = pb.WatchRequest(
                name=self._registration.name, known_version=self._sink.version
            )
            call = stub.Watch(request, metadata=await self._auth(stub, METHOD_WATCH, request))
            first = True
            async for msg in call:
                if first:
                    self.connected = True
                    self.streams += 1
                    self.last_error = self._register_error
                    _log.info(
                        kv(
                            "controller_connected",
                            controller=target,
                            known_version=request.known_version,
                        )
                    )
                await self._on_update(stub, msg, first=first)
                if first:
                    self._backoff.reset()  # delivered: a later failure starts over at 0.5 s
                first = False

    async def _register(self, stub: ControllerStub, target: str) -> None:
        """Register; a refusal is recorded and logged. Other failures raise."""
        request = registration_to_pb(self._registration)
        try:
            resp = await stub.Register(
                request,
                metadata=await self._auth(stub, METHOD_REGISTER, request),
                timeout=CALL_TIMEOUT,
            )
        except grpc.aio.AioRpcError as e:
            if e.code() not in REFUSALS:
                raise
            self._register_error = self.last_error = f"register refused: {_rpc_error(e)}"
            _log.error(
                kv(
                    "register_refused",
                    controller=target,
                    code=e.code().name,
                    message=e.details() or "",
                )
            )
            return
        self._register_error = None
        _log.info(
            kv(
                "registered",
                controller=target,
                version=resp.version,
                routes=self._registration.routes,
            )
        )
        for status in resp.routes:
            if status.state != pb.ROUTE_STATE_SERVING:
                _log.warning(
                    kv(
                        "route_not_serving",
                        route=status.route,
                        state=pb.RouteState.Name(status.state).removeprefix("ROUTE_STATE_"),
                        reason_code=status.reason_code,
                        reason=status.reason,
                    )
                )

    async def _on_update(self, stub: ControllerStub, msg: pb.MapUpdate, *, first: bool) -> None:
        """Verify and apply one update, then report.

        Raises:
            _Resync: a delta whose base is not the map in use.
        """
        current = self._sink.route_map
        try:
            update = update_from_pb(msg)
        except WireError as e:
            await self._refused(stub, msg.version, f"invalid map version {msg.version}: {e}")
            return
        if isinstance(update, MapDelta):
            if update.base_version != current.version:
                _log.warning(
                    kv(
                        "delta_base_mismatch",
                        base_version=update.base_version,
                        version=update.version,
                        current=current.version,
                        detail="reconnecting with known_version",
                    )
                )
                raise _Resync(
                    f"delta from version {update.base_version} does not fit map version "
                    f"{current.version}; reconnecting"
                )
            try:
                route_map = patch(current, update)
            except MapError as e:
                error = f"invalid map version {update.version}: {e}"
                await self._refused(stub, update.version, error)
                return
        elif not first and update.version <= current.version:
            # Versions never go backwards on one stream; a controller that does is ignored.
            _log.info(kv("map_skipped", version=update.version, current=current.version))
            return
        else:
            route_map = update
        try:
            usable, dropped = verify_leases(route_map, self._controller_key, self._clock())
        except LeaseError as e:
            error = f"map version {route_map.version} refused: {e}"
            await self._refused(stub, route_map.version, error)
            return
        for edge, route in dropped:
            _log.warning(kv("lease_expired", edge=edge, route=route, version=route_map.version))
        if not self._sink.apply(usable):
            error = f"map version {route_map.version} refused by the tunnel"
            await self._refused(stub, route_map.version, error)
            return
        self._map_changed.set()
        if dropped:
            # Applied, but not whole: report which routes were left out and why.
            self.last_error = _dropped_text(dropped)
            await self._report_error(stub, route_map.version, self.last_error)
            return
        self.last_error = self._register_error
        await self._report(stub, pb.ReportRequest(applied_version=self._sink.version))

    async def _refused(self, stub: ControllerStub, version: int, error: str) -> None:
        """The map of `version` was not applied: log, record and report why."""
        _log.error(kv("map_refused", version=version, current=self._sink.version, error=error))
        self.last_error = error
        await self._report_error(stub, version, error)

    async def _report_error(self, stub: ControllerStub, version: int, error: str) -> None:
        await self._report(
            stub,
            pb.ReportRequest(
                applied_version=self._sink.version, error=error, refused_version=version
            ),
        )

    async def _report(self, stub: ControllerStub, request: pb.ReportRequest) -> None:
        """Best effort: a failure is logged, never raised."""
        request.name = self._registration.name
        try:
            await stub.Report(
                request,
                metadata=await self._auth(stub, METHOD_REPORT, request),
                timeout=CALL_TIMEOUT,
            )
        except grpc.aio.AioRpcError as e:
            _log.warning(
                kv(
                    "report_failed",
                    applied_version=request.applied_version,
                    error=_rpc_error(e),
                )
            )
