"""The controller watch loop: authenticate, Register, Watch the map, Report, forever.

Owns the edge's side of the wire contract (proto/isthmus/v1/isthmus.proto,
docs/controller.md) and the connection state `isthmus status` shows. Rules:
- Every call but Challenge is authenticated (edge.controlcalls).
- Controllers are tried in the configured order: after any session ends (error, stream
  closed, a delta that does not fit) the next one is tried, after the backoff delay; the
  backoff resets once a stream delivers (edge.dialer).
- The channel is TLS, pinned to controller_public_key (isthmus.tlscert): a server
  without the controller's key fails the handshake and no call is made.
- Watch asks for what changed since the version applied (`known_version`, in
  `known_epoch`). A full map replaces the map; a delta is patched onto the map as
  signed (every route, before expired ones are left out) and only when its base_version
  is that map's version, else the loop reconnects with known_version.
- No map touches the tunnel or the kernel before its signature and its leases verify:
  the map signature over the whole resulting map, version and epoch, and the rules on
  versions and epochs (edge.lineage: no rollback, a new epoch only whole and later),
  then every lease (edge.leases). A map that fails either is refused whole and the old
  map stays; routes with an expired lease are left out. Then Report(applied_version,
  epoch) or Report(error, refused_version). Reports are best effort: a failed Report is
  logged and never ends the stream.
- Every 30 s, and at the earliest lease expiry, the map in use is checked again and
  routes whose lease ran out are withdrawn (also while no controller answers).
- An invalid map is logged, recorded as last_error and reported; the stream goes on. So is
  a map the applier refuses (edge.applier: a map rule, or a route of another edge that
  would route a controller address or an edge's endpoint into the tunnel), with its reason.
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
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import grpc

from edge.controlcalls import (
    CALL_TIMEOUT,
    CHANNEL_OPTIONS,
    METHOD_REGISTER,
    METHOD_WATCH,
    REFUSALS,
    ControllerCalls,
    rpc_error,
)
from edge.dialer import Backoff, Dialer
from edge.leases import Dropped, LeaseError, drop_expired, earliest_expiry, verify_leases
from edge.lineage import MapRefused, admit
from isthmus.convert import (
    Registration,
    WireError,
    registration_to_pb,
    seal_from_pb,
    update_from_pb,
)
from isthmus.logfmt import kv
from isthmus.mapdelta import MapDelta, patch
from isthmus.mapsig import SignedMap, epoch_text
from isthmus.routemap import MapError, RouteMap
from isthmus.signing import ControllerPublicKey
from isthmus.tlscert import channel_credentials, channel_options
from isthmus.v1 import isthmus_pb2 as pb
from isthmus.v1.isthmus_pb2_grpc import ControllerStub

LEASE_CHECK_INTERVAL = 30.0
MIN_LEASE_CHECK = 0.05

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

    @property
    def signed(self) -> SignedMap:
        """The map in use as signed: every route, with its epoch and signature."""
        ...

    def apply(
        self, route_map: RouteMap, *, signed: SignedMap | None = None, save: bool = True
    ) -> bool:
        """Use `route_map` (made from `signed`, when given) from now on; False when it
        was refused (`refusal` says why)."""
        ...

    @property
    def refusal(self) -> str | None:
        """Why the last refused map was refused (a map rule, or a route that would loop)."""
        ...


@dataclass(frozen=True, slots=True)
class ControllerView:
    """The connection state for `isthmus status`."""

    controllers: tuple[str, ...]
    address: str  # the controller in use (or tried last)
    connected: bool
    last_error: str | None
    applied_version: int
    epoch: str = "-"  # the epoch of the map in use, short (isthmus.mapsig.epoch_text)


class _Resync(Exception):
    """The stream sent a delta that does not fit the map in use: reconnect."""


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
        self._dialer = Dialer(controllers, backoff=backoff, sleep=sleep)
        self._registration = registration
        self._sink = sink
        self._controller_key = controller_key
        self._calls = ControllerCalls(
            registration, private_key=private_key, controller_key=controller_key
        )
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
        return self._dialer.address

    def view(self) -> ControllerView:
        return ControllerView(
            controllers=self._dialer.targets,
            address=self.address,
            connected=self.connected,
            last_error=self.last_error,
            applied_version=self._sink.version,
            epoch=epoch_text(self._sink.signed.epoch),
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
                self._fail(target, rpc_error(e))
            except (grpc.aio.UsageError, grpc.RpcError, OSError) as e:
                self._fail(target, str(e) or type(e).__name__)
            except Exception as e:  # a bug must not end the loop: keep reconnecting
                _log.exception(kv("control_loop_error", error=repr(e)))
                self._fail(target, repr(e))
            await self._dialer.failed()

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

    async def _session(self, target: str) -> None:
        credentials = channel_credentials(self._controller_key)
        options = CHANNEL_OPTIONS + channel_options()
        async with grpc.aio.secure_channel(target, credentials, options=options) as channel:
            stub = ControllerStub(channel)  # type: ignore[no-untyped-call]  # generated code
            await self._register(stub, target)
            have = self._sink.signed
            request = pb.WatchRequest(
                name=self._registration.name, known_version=have.version, known_epoch=have.epoch
            )
            call = stub.Watch(request, metadata=await self._calls.auth(stub, METHOD_WATCH, request))
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
                    self._dialer.delivered()
                first = False

    async def _register(self, stub: ControllerStub, target: str) -> None:
        """Register; a refusal is recorded and logged. Other failures raise."""
        request = registration_to_pb(self._registration)
        try:
            resp = await stub.Register(
                request,
                metadata=await self._calls.auth(stub, METHOD_REGISTER, request),
                timeout=CALL_TIMEOUT,
            )
        except grpc.aio.AioRpcError as e:
            if e.code() not in REFUSALS:
                raise
            self._register_error = self.last_error = f"register refused: {rpc_error(e)}"
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
        have = self._sink.signed
        current = have.route_map
        try:
            update = update_from_pb(msg)
            epoch, signature = seal_from_pb(msg)
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
        else:
            route_map = update
        # Leases first (their refusals name the edge and route), then the map signature,
        # version and epoch: nothing reaches the tunnel or the kernel before both hold.
        try:
            usable, dropped = verify_leases(route_map, self._controller_key, self._clock())
        except LeaseError as e:
            error = f"map version {route_map.version} refused: {e}"
            await self._refused(stub, route_map.version, error)
            return
        candidate = SignedMap(route_map, epoch, signature)
        try:
            fresh = admit(have, candidate, full=msg.full, controller_key=self._controller_key)
        except MapRefused as e:
            await self._refused(stub, route_map.version, str(e))
            return
        if not fresh:
            # The same version again: nothing new (a first message still says where we are).
            _log.info(kv("map_skipped", version=route_map.version, current=current.version))
            if first:
                await self._calls.report(stub, self._applied_report())
            return
        for edge, route in dropped:
            _log.warning(kv("lease_expired", edge=edge, route=route, version=route_map.version))
        if not self._sink.apply(usable, signed=candidate):
            error = f"map version {route_map.version} refused: {self._sink.refusal}"
            await self._refused(stub, route_map.version, error)
            return
        self._map_changed.set()
        if dropped:
            # Applied, but not whole: report which routes were left out and why.
            self.last_error = _dropped_text(dropped)
            await self._report_error(stub, route_map.version, self.last_error)
            return
        self.last_error = self._register_error
        await self._calls.report(stub, self._applied_report())

    def _applied_report(self) -> pb.ReportRequest:
        return pb.ReportRequest(applied_version=self._sink.version, epoch=self._sink.signed.epoch)

    async def _refused(self, stub: ControllerStub, version: int, error: str) -> None:
        """The map of `version` was not applied: log, record and report why."""
        _log.error(kv("map_refused", version=version, current=self._sink.version, error=error))
        self.last_error = error
        await self._report_error(stub, version, error)

    async def _report_error(self, stub: ControllerStub, version: int, error: str) -> None:
        await self._calls.report(
            stub,
            pb.ReportRequest(
                applied_version=self._sink.version,
                error=error,
                refused_version=version,
                epoch=self._sink.signed.epoch,
            ),
        )
