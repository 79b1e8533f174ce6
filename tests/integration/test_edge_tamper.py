"""The edge's control loop against a controller that lies: real gRPC servers on 127.0.0.1:0.

    ControlLoop --Challenge/Register/Watch/Report (grpc.aio)--> ScriptedController (here)
        |                                                       (checks auth with the real
        MapApplier -> Tunnel (real core), FakeRouteTable,        isthmus.auth.Authenticator,
                      MemoryMapStore                             then sends what a test says)

The scripted controllers serve TLS with the real controller key's certificate (the
channel, isthmus.tlscert) and sign their maps (isthmus.mapsig) with the key a test says.
What must hold whatever the controller sends (docs/controller.md): a map with a forged,
missing or foreign lease is refused whole, the old map stays in the tunnel and the kernel,
and the refusal is reported naming the route; a delta that does not fit makes the edge
resume with known_version; a failed Report never ends the stream; when a controller goes,
the edge carries on at the next one; a route whose lease runs out is withdrawn even while
no controller answers.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import grpc
from nacl.bindings import crypto_box_seed_keypair

from edge.applier import MapApplier
from edge.control import ControlLoop
from edge.dialer import Backoff
from edge.ports import MapStore
from edge.testing import FakeForwarding, FakeRouteTable, MemoryMapStore
from edge.tunnel import Identity, Tunnel
from isthmus.auth import AUTH_METADATA, Authenticator, AuthError, ChallengeBook
from isthmus.convert import Registration, delta_to_pb, map_to_pb
from isthmus.endpoint import Endpoint
from isthmus.ids import EdgeName
from isthmus.keys import PublicKey
from isthmus.lease import sign_lease
from isthmus.mapdelta import MapDelta, diff
from isthmus.mapsig import new_epoch, sign_map
from isthmus.routemap import EdgeEntry, Network, RouteMap, parse_route
from isthmus.signing import ControllerKey
from isthmus.tlscert import server_credentials
from isthmus.v1 import isthmus_pb2 as pb
from isthmus.v1 import isthmus_pb2_grpc

KEY = ControllerKey.from_seed(bytes(range(32)))
IMPOSTOR = ControllerKey.from_seed(bytes(range(100, 132)))
NOW = 1_800_000_000
EPOCH = new_epoch(NOW - 3600, lambda n: b"\x05" * n)
SELF = EdgeName("vpc-a")

Update = pb.MapUpdate


def keypair(seed: int) -> tuple[bytes, bytes]:
    return crypto_box_seed_keypair(bytes([seed]) * 32)


def entry(
    name: str, seed: int, *routes: str, expires: int = NOW + 3600, key: ControllerKey = KEY
) -> EdgeEntry:
    public = PublicKey(keypair(seed)[0])
    nets = tuple(parse_route(r) for r in routes)
    return EdgeEntry(
        EdgeName(name),
        public,
        (Endpoint.parse(f"198.18.0.{seed}:51820"),),
        nets,
        tuple(sign_lease(key, public, n, 1, expires) for n in nets),
    )


A = entry("vpc-a", 1, "10.244.0.0/16")
B = entry("vpc-b", 2, "10.245.0.0/16")
C = entry("vpc-c", 3, "10.246.0.0/16", "fd00:3::/64")
EDGE_KEY = A.public_key


def flipped(e: EdgeEntry, route: int = 0, byte: int = 17) -> EdgeEntry:
    """`e` with one bit of one lease signature flipped."""
    lease = e.leases[route]
    sig = bytearray(lease.signature)
    sig[byte] ^= 0x01
    leases = list(e.leases)
    leases[route] = replace(lease, signature=bytes(sig))
    return replace(e, leases=tuple(leases))


def whole(m: RouteMap, key: ControllerKey = KEY) -> Update:
    """The whole map `m`, signed by `key` in EPOCH."""
    signed = sign_map(key, EPOCH, m)
    return map_to_pb(m, epoch=signed.epoch, signature=signed.signature)


def full(version: int, *edges: EdgeEntry, key: ControllerKey = KEY) -> Update:
    return whole(RouteMap(version, edges), key)


def delta(old: RouteMap, new: RouteMap) -> Update:
    """The delta old -> new, with KEY's signature over `new`."""
    signed = sign_map(KEY, EPOCH, new)
    return delta_to_pb(diff(old, new), epoch=signed.epoch, signature=signed.signature)


def nets(*texts: str) -> set[Network]:
    return {parse_route(t) for t in texts}


class ScriptedController(isthmus_pb2_grpc.ControllerServicer):
    """Authenticates every call like the real controller, then sends what the test says.

    Each Watch stream gets `first(request)`, then every update passed to `send`. With
    `check_auth=False` it accepts any caller (an impostor on the path).
    """

    def __init__(
        self,
        first: Callable[[pb.WatchRequest], Update],
        *,
        key: ControllerKey = KEY,
        check_auth: bool = True,
    ) -> None:
        book = ChallengeBook(key.challenge_secret, os.urandom(8), time.time, os.urandom)
        self.auth = Authenticator(key, book)
        self.check_auth = check_auth
        self.first = first
        self.queues: list[asyncio.Queue[Update]] = []
        self.registrations: list[pb.RegisterRequest] = []
        self.watches: list[pb.WatchRequest] = []
        self.reports: list[pb.ReportRequest] = []
        self.auth_failures: list[str] = []
        self.fail_reports = False
        self.report_seen = asyncio.Event()

    async def _authenticate(
        self, context: grpc.aio.ServicerContext[Any, Any], method: str, request: Any
    ) -> None:
        if not self.check_auth:
            return
        value = None
        for k, v in context.invocation_metadata() or ():
            if k == AUTH_METADATA:
                value = v
        try:
            key = self.auth.verify(
                value,
                f"/isthmus.v1.Controller/{method}",
                request.SerializeToString(deterministic=True),
                lambda k: k == EDGE_KEY,
            )
        except AuthError as e:
            self.auth_failures.append(str(e))
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(e))
        assert key == EDGE_KEY and request.name == SELF

    async def Challenge(
        self, request: pb.ChallengeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ChallengeResponse:
        return pb.ChallengeResponse(challenge=self.auth.challenge())

    async def Register(
        self, request: pb.RegisterRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RegisterResponse:
        await self._authenticate(context, "Register", request)
        self.registrations.append(request)
        return pb.RegisterResponse(version=1)

    async def Watch(
        self, request: pb.WatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Update]:
        await self._authenticate(context, "Watch", request)
        self.watches.append(request)
        queue: asyncio.Queue[Update] = asyncio.Queue()
        self.queues.append(queue)
        try:
            yield self.first(request)
            while True:
                yield await queue.get()
        finally:
            self.queues.remove(queue)

    async def Report(
        self, request: pb.ReportRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ReportResponse:
        await self._authenticate(context, "Report", request)
        self.reports.append(request)
        self.report_seen.set()
        if self.fail_reports:
            await context.abort(grpc.StatusCode.INTERNAL, "the report store is down")
        return pb.ReportResponse()

    def send(self, update: Update) -> None:
        assert self.queues, "no watch stream is open"
        for queue in self.queues:
            queue.put_nowait(update)


async def serve(
    controller: ScriptedController, tls: ControllerKey = KEY
) -> tuple[grpc.aio.Server, str]:
    """Serve `controller` on 127.0.0.1 over TLS with a leaf signed by `tls`."""
    server = grpc.aio.server()
    isthmus_pb2_grpc.add_ControllerServicer_to_server(controller, server)  # type: ignore[no-untyped-call]
    now = datetime.datetime.now(datetime.UTC)
    port = server.add_secure_port("127.0.0.1:0", server_credentials(tls, now))
    await server.start()
    return server, f"127.0.0.1:{port}"


async def until(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.02)


class Edge:
    """The control-plane half of one edge, wired like edge.__main__ but with fakes."""

    def __init__(
        self,
        targets: list[str],
        *,
        clock: Callable[[], float] = lambda: NOW,
        store: MapStore | None = None,
    ) -> None:
        identity = Identity.from_private_key(SELF, keypair(1)[1])
        self.tunnel = Tunnel(identity, random=random.Random(7).randbytes, wall_clock=lambda: 0.0)
        self.routes = FakeRouteTable()
        self.store = store or MemoryMapStore()
        self.applier = MapApplier(SELF, self.tunnel, self.routes, self.store, FakeForwarding())
        self.control = ControlLoop(
            targets,
            Registration(SELF, identity.public_key, A.endpoints, A.routes),
            self.applier,
            private_key=identity.private_key,
            controller_key=KEY.public,
            backoff=Backoff(initial=0.05, maximum=0.2, rng=random.Random(1)),
            clock=clock,
            lease_check_interval=0.05,
        )
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.control.run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 90))


def test_a_forged_lease_refuses_the_map_keeps_the_old_one_and_is_reported() -> None:
    async def scenario() -> None:
        v1 = RouteMap(1, (A, B))
        ctl = ScriptedController(lambda _: whole(v1))
        server, address = await serve(ctl)
        edge = Edge([address])
        edge.start()
        try:
            await until(lambda: edge.applier.version == 1, "map 1 is applied")
            await until(lambda: len(ctl.reports) == 1, "map 1 is reported")
            assert ctl.reports[0] == pb.ReportRequest(name="vpc-a", applied_version=1, epoch=EPOCH)
            assert edge.routes.routes == nets("10.245.0.0/16")

            # (a) a whole map in which one byte of vpc-c's second lease is flipped.
            ctl.send(full(2, A, B, flipped(C, route=1)))
            await until(lambda: len(ctl.reports) == 2, "the refusal is reported")
            report = ctl.reports[1]
            assert report.applied_version == 1 and report.refused_version == 2
            assert "edge 'vpc-c' route fd00:3::/64" in report.error
            assert "does not verify" in report.error
            assert edge.control.last_error == report.error
            assert edge.applier.version == 1 and edge.tunnel.map_version == 1
            assert edge.routes.routes == nets("10.245.0.0/16")
            assert [p.name for p in edge.tunnel.peers(0.0)] == ["vpc-b"]
            assert edge.control.view().applied_version == 1

            # A delta replacing vpc-b's entry with one whose lease is forged: refused too.
            ctl.send(delta(v1, RouteMap(3, (A, flipped(B, byte=63)))))
            await until(lambda: len(ctl.reports) == 3, "the second refusal is reported")
            assert ctl.reports[2].refused_version == 3
            assert "edge 'vpc-b' route 10.245.0.0/16" in ctl.reports[2].error
            assert edge.applier.version == 1

            # A lease moved from vpc-b onto vpc-c (a route the controller never signed
            # for vpc-c): refused, naming vpc-c's route.
            moved = replace(C, routes=(B.routes[0],), leases=(B.leases[0],))
            ctl.send(delta(v1, RouteMap(4, (A, moved))))
            await until(lambda: len(ctl.reports) == 4, "the third refusal is reported")
            assert "edge 'vpc-c' route 10.245.0.0/16" in ctl.reports[3].error

            # A good delta from the map the edge still has is applied and clears the error.
            ctl.send(delta(v1, RouteMap(5, (A, B, C))))
            await until(lambda: edge.applier.version == 5, "map 5 is applied")
            assert edge.routes.routes == nets("10.245.0.0/16", "10.246.0.0/16", "fd00:3::/64")
            await until(lambda: len(ctl.reports) == 5, "map 5 is reported")
            assert ctl.reports[4] == pb.ReportRequest(name="vpc-a", applied_version=5, epoch=EPOCH)
            assert edge.control.last_error is None
            assert edge.store.route_map is not None and edge.store.route_map.version == 5
            # One stream all along; every call was authenticated.
            assert len(ctl.watches) == 1 and len(ctl.registrations) == 1
            assert ctl.auth_failures == []
        finally:
            await edge.stop()
            await server.stop(grace=None)

    run(scenario)


def test_an_impostor_controller_cannot_change_a_route() -> None:
    async def scenario() -> None:
        # Accepts any caller and signs leases and maps with its own key: nothing it sends
        # is applied. (Served here past the TLS check, as if the channel were broken:
        # test_controller_channel shows an impostor never gets that far.)
        evil = entry("vpc-b", 2, "10.245.0.0/16", "10.244.7.0/24", key=IMPOSTOR)
        ctl = ScriptedController(
            lambda _: full(9, A, evil, key=IMPOSTOR), key=IMPOSTOR, check_auth=False
        )
        server, address = await serve(ctl)
        edge = Edge([address])
        v1 = RouteMap(1, (A, B))
        edge.applier.apply(v1, signed=sign_map(KEY, EPOCH, v1), save=False)
        edge.start()
        try:
            await until(lambda: len(ctl.reports) == 1, "the refusal is reported")
            assert ctl.reports[0].refused_version == 9
            assert ctl.reports[0].applied_version == 1
            assert "edge 'vpc-b' route 10.245.0.0/16" in ctl.reports[0].error
            assert edge.applier.version == 1
            assert edge.routes.routes == nets("10.245.0.0/16")
        finally:
            await edge.stop()
            await server.stop(grace=None)

    run(scenario)


def test_a_delta_from_another_base_makes_the_edge_resume_with_known_version() -> None:
    async def scenario() -> None:
        maps = {1: RouteMap(1, (A, B)), 2: RouteMap(2, (A, B, C))}
        current = [1]

        def first(request: pb.WatchRequest) -> Update:
            now = maps[current[0]]
            if request.known_version in maps:
                return delta(maps[request.known_version], now)
            return whole(now)

        ctl = ScriptedController(first)
        server, address = await serve(ctl)
        edge = Edge([address])
        edge.start()
        try:
            await until(lambda: edge.applier.version == 1, "map 1 is applied")
            assert ctl.watches[0].known_version == 0
            current[0] = 2
            # (b) a delta from version 5, which the edge never had.
            ctl.send(delta_to_pb(MapDelta(base_version=5, version=6, upserts=(C,))))
            await until(lambda: len(ctl.watches) == 2, "the edge watches again")
            assert ctl.watches[1].known_version == 1
            await until(lambda: edge.applier.version == 2, "the delta 1 -> 2 is applied")
            assert edge.routes.routes == nets("10.245.0.0/16", "10.246.0.0/16", "fd00:3::/64")
            assert edge.control.streams == 2
            assert edge.control.connected
        finally:
            await edge.stop()
            await server.stop(grace=None)

    run(scenario)


def test_failover_to_the_next_controller_and_changes_keep_coming() -> None:
    async def scenario() -> None:
        v1, v2, v3 = RouteMap(1, (A, B)), RouteMap(2, (A, B, C)), RouteMap(3, (A, C))

        def first(request: pb.WatchRequest) -> Update:
            if request.known_version == 1:
                return delta(v1, v1)  # "you are current"
            return whole(v1)

        one, two = ScriptedController(first), ScriptedController(first)
        server1, address1 = await serve(one)
        server2, address2 = await serve(two)
        edge = Edge([address1, address2])
        edge.start()
        try:
            await until(lambda: edge.applier.version == 1, "map 1 is applied")
            assert edge.control.view().address == address1
            assert two.watches == []
            # (c) the first controller goes away; the edge moves to the second.
            await server1.stop(grace=None)
            await until(lambda: len(two.watches) == 1, "the edge watches the second controller")
            assert two.watches[0].known_version == 1
            await until(lambda: edge.control.connected, "the edge is connected again")
            view = edge.control.view()
            assert (view.address, view.controllers) == (address2, (address1, address2))
            await until(lambda: len(two.reports) == 1, "the empty delta is reported")
            assert two.reports[0].applied_version == 1
            two.send(delta(v1, v2))
            await until(lambda: edge.applier.version == 2, "map 2 arrives from the second")
            two.send(delta(v2, v3))
            await until(lambda: edge.applier.version == 3, "map 3 arrives from the second")
            assert edge.routes.routes == nets("10.246.0.0/16", "fd00:3::/64")
            assert len(two.watches) == 1 and two.auth_failures == []
        finally:
            await edge.stop()
            await server2.stop(grace=None)
            await server1.stop(grace=None)

    run(scenario)


def test_a_failing_report_never_ends_the_stream() -> None:
    async def scenario() -> None:
        v1, v2 = RouteMap(1, (A, B)), RouteMap(2, (A, B, C))
        ctl = ScriptedController(lambda _: whole(v1))
        ctl.fail_reports = True
        server, address = await serve(ctl)
        edge = Edge([address])
        edge.start()
        try:
            await until(lambda: len(ctl.reports) == 1, "the first report arrives (and fails)")
            ctl.send(delta(v1, v2))
            await until(lambda: len(ctl.reports) == 2, "the second report arrives (and fails)")
            assert edge.applier.version == 2
            assert len(ctl.watches) == 1 and edge.control.streams == 1
            assert edge.control.connected and edge.control.last_error is None
        finally:
            await edge.stop()
            await server.stop(grace=None)

    run(scenario)


def test_expired_leases_are_withdrawn_even_without_a_controller() -> None:
    async def scenario() -> None:
        clock = [float(NOW)]
        short_b = entry("vpc-b", 2, "10.245.0.0/16", expires=NOW + 100)
        stale_c = entry("vpc-c", 3, "10.246.0.0/16", expires=NOW - 1)
        ctl = ScriptedController(lambda _: full(1, A, short_b, stale_c))
        server, address = await serve(ctl)
        edge = Edge([address], clock=lambda: clock[0])
        edge.start()
        try:
            # vpc-c's lease ran out before the map arrived: left out, reported.
            await until(lambda: edge.applier.version == 1, "map 1 is applied")
            assert edge.routes.routes == nets("10.245.0.0/16")
            await until(lambda: len(ctl.reports) == 1, "map 1 is reported")
            assert ctl.reports[0].applied_version == 1
            assert "edge 'vpc-c' route 10.246.0.0/16" in ctl.reports[0].error
            assert "lease expired" in ctl.reports[0].error

            await server.stop(grace=None)
            await until(lambda: not edge.control.connected, "the controller is gone")
            assert edge.routes.routes == nets("10.245.0.0/16")  # fail-static
            clock[0] = NOW + 100  # void only after `expires`
            await asyncio.sleep(0.3)
            assert edge.routes.routes == nets("10.245.0.0/16")
            clock[0] = NOW + 101
            await until(lambda: not edge.routes.routes, "vpc-b's route is withdrawn")
            assert edge.tunnel.map_version == 1
            assert edge.applier.route_map.edge("vpc-b") is not None
            assert edge.applier.route_map.edge("vpc-b").routes == ()  # type: ignore[union-attr]
            assert "edge 'vpc-b' route 10.245.0.0/16" in (edge.control.last_error or "")
        finally:
            await edge.stop()
            await server.stop(grace=None)

    run(scenario)
