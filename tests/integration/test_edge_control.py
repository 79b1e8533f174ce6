"""The edge's control loop against an in-process fake controller on 127.0.0.1:0.

    ControlLoop --Register/Watch (grpc.aio)--> FakeController (this file)
        |
        MapApplier -> Tunnel (real core), FakeRouteTable, MemoryMapStore

Checks the contract of edge.control: the first snapshot of each stream is applied,
later ones only when newer; an invalid snapshot is skipped; a refused Register is
reported and the edge still watches; losing the controller changes nothing (fail-static)
and a reconnect reconciles the kernel routes with the controller's map.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from nacl.bindings import crypto_box_seed_keypair

from edge.applier import MapApplier
from edge.control import Backoff, ControlLoop
from edge.testing import FakeForwarding, FakeRouteTable, MemoryMapStore
from edge.tunnel import Identity, Tunnel
from isthmus.convert import Registration, map_to_pb
from isthmus.endpoint import Endpoint
from isthmus.ids import EdgeName
from isthmus.keys import PublicKey
from isthmus.routemap import EdgeEntry, Network, RouteMap, parse_route
from isthmus.v1 import isthmus_pb2 as pb
from isthmus.v1 import isthmus_pb2_grpc

SELF = EdgeName("vpc-a")


def private(seed: int) -> bytes:
    return crypto_box_seed_keypair(bytes([seed]) * 32)[1]


def entry(name: str, seed: int, *routes: str) -> EdgeEntry:
    return EdgeEntry(
        EdgeName(name),
        PublicKey(crypto_box_seed_keypair(bytes([seed]) * 32)[0]),
        (Endpoint.parse(f"198.18.0.{seed}:51820"),),
        tuple(parse_route(r) for r in routes),
    )


A = entry("vpc-a", 1, "10.244.0.0/16")
B = entry("vpc-b", 2, "10.245.0.0/16")
C = entry("vpc-c", 3, "10.246.0.0/16", "fd00:3::/64")


def nets(*texts: str) -> set[Network]:
    return {parse_route(t) for t in texts}


class FakeController(isthmus_pb2_grpc.ControllerServicer):
    """Sends the current snapshot first, then each published one; refuses on demand."""

    def __init__(self, snapshot: pb.MapSnapshot) -> None:
        self.snapshot = snapshot
        self.changed = asyncio.Condition()
        self.registrations: list[pb.RegisterRequest] = []
        self.watches: list[pb.WatchRequest] = []
        self.refuse: grpc.StatusCode | None = None

    async def Register(
        self, request: pb.RegisterRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RegisterResponse:
        self.registrations.append(request)
        if self.refuse is not None:
            await context.abort(self.refuse, "route 10.244.0.0/16 is not allowed for 'vpc-a'")
        return pb.RegisterResponse(version=self.snapshot.version)

    async def Watch(
        self, request: pb.WatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.MapSnapshot]:
        self.watches.append(request)
        sent: pb.MapSnapshot | None = None
        while True:
            async with self.changed:
                while self.snapshot is sent:
                    await self.changed.wait()
                sent = self.snapshot
            yield sent

    async def publish(self, snapshot: pb.MapSnapshot) -> None:
        async with self.changed:
            self.snapshot = snapshot
            self.changed.notify_all()


async def serve(controller: FakeController, port: int = 0) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    isthmus_pb2_grpc.add_ControllerServicer_to_server(controller, server)  # type: ignore[no-untyped-call]
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, bound


async def until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.02)


class Edge:
    """The control-plane half of one edge, wired like edge.__main__ but with fakes."""

    def __init__(self, port: int, routes: set[Network] | None = None) -> None:
        identity = Identity.from_private_key(SELF, private(1))
        self.tunnel = Tunnel(identity, random=random.Random(7).randbytes, wall_clock=lambda: 0.0)
        self.routes = FakeRouteTable(routes)
        self.store = MemoryMapStore()
        self.applier = MapApplier(SELF, self.tunnel, self.routes, self.store, FakeForwarding())
        self.control = ControlLoop(
            f"127.0.0.1:{port}",
            Registration(SELF, identity.public_key, A.endpoints, A.routes),
            self.applier,
            backoff=Backoff(initial=0.05, maximum=0.2, rng=random.Random(1)),
        )


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 60))


def test_snapshots_applied_stale_removed_fail_static_and_reconnect() -> None:
    async def scenario() -> None:
        controller = FakeController(map_to_pb(RouteMap(1, (A, B))))
        server, port = await serve(controller)
        edge = Edge(port, routes=nets("10.99.0.0/16"))  # a stale route from a previous run
        task = asyncio.create_task(edge.control.run())
        try:
            # Snapshot 1: installed; the stale route is removed.
            await until(lambda: edge.applier.version == 1, "map 1 is applied")
            assert edge.routes.routes == nets("10.245.0.0/16")
            assert edge.control.connected and edge.control.last_error is None
            assert controller.registrations[0].name == "vpc-a"
            assert list(controller.registrations[0].routes) == ["10.244.0.0/16"]
            assert edge.store.route_map is not None and edge.store.route_map.version == 1

            # Snapshot 2: a new edge with an IPv6 route.
            await controller.publish(map_to_pb(RouteMap(2, (A, B, C))))
            await until(lambda: edge.applier.version == 2, "map 2 is applied")
            assert edge.routes.routes == nets("10.245.0.0/16", "10.246.0.0/16", "fd00:3::/64")
            assert edge.tunnel.map_version == 2
            assert sorted(p.name for p in edge.tunnel.peers(0.0)) == ["vpc-b", "vpc-c"]

            # An older version on the same stream is skipped.
            await controller.publish(map_to_pb(RouteMap(1, (A, B))))
            await controller.publish(map_to_pb(RouteMap(2, (A, B, C))))
            await asyncio.sleep(0.2)
            assert edge.applier.version == 2
            assert edge.routes.routes == nets("10.245.0.0/16", "10.246.0.0/16", "fd00:3::/64")

            # The controller goes away: routes and map stay (fail-static).
            await server.stop(grace=None)
            await until(lambda: not edge.control.connected, "the edge sees the loss")
            await asyncio.sleep(0.5)  # several failed reconnects
            assert edge.control.last_error is not None
            assert edge.applier.version == 2 and edge.tunnel.map_version == 2
            assert edge.routes.routes == nets("10.245.0.0/16", "10.246.0.0/16", "fd00:3::/64")
            streams = edge.control.streams

            # It comes back with less state (version 1, vpc-c gone): the first snapshot of
            # the new stream is applied although it is not newer, and routes reconcile.
            controller2 = FakeController(map_to_pb(RouteMap(1, (A, B))))
            server, _ = await serve(controller2, port)
            await until(lambda: edge.control.streams > streams, "the edge reconnects")
            await until(lambda: edge.applier.version == 1, "the new full map is applied")
            assert edge.routes.routes == nets("10.245.0.0/16")
            assert edge.control.connected and edge.control.last_error is None
            assert controller2.watches[0].known_version == 2
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await server.stop(grace=None)

    run(scenario)


def test_invalid_snapshot_is_skipped_and_the_stream_goes_on() -> None:
    async def scenario() -> None:
        controller = FakeController(map_to_pb(RouteMap(1, (A, B))))
        server, port = await serve(controller)
        edge = Edge(port)
        task = asyncio.create_task(edge.control.run())
        try:
            await until(lambda: edge.applier.version == 1, "map 1 is applied")
            bad = map_to_pb(RouteMap(2, (A, B)))
            bad.edges[1].routes.append("10.244.1.0/24")  # overlaps vpc-a's route
            await controller.publish(bad)
            await until(lambda: edge.control.last_error is not None, "the bad map is noticed")
            assert "invalid map version 2" in (edge.control.last_error or "")
            assert "overlaps" in (edge.control.last_error or "")
            assert edge.applier.version == 1 and edge.control.connected
            await controller.publish(map_to_pb(RouteMap(3, (A, C))))
            await until(lambda: edge.applier.version == 3, "map 3 is applied")
            assert edge.routes.routes == nets("10.246.0.0/16", "fd00:3::/64")
            assert len(controller.watches) == 1
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await server.stop(grace=None)

    run(scenario)


def test_refused_registration_is_reported_and_the_edge_still_watches() -> None:
    async def scenario() -> None:
        controller = FakeController(map_to_pb(RouteMap(4, (A, B))))
        controller.refuse = grpc.StatusCode.PERMISSION_DENIED
        server, port = await serve(controller)
        edge = Edge(port)
        task = asyncio.create_task(edge.control.run())
        try:
            await until(lambda: edge.applier.version == 4, "map 4 is applied")
            assert edge.control.connected
            assert edge.control.last_error == (
                "register refused: PERMISSION_DENIED: route 10.244.0.0/16 is not allowed "
                "for 'vpc-a'"
            )
            assert edge.routes.routes == nets("10.245.0.0/16")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await server.stop(grace=None)

    run(scenario)


def test_unreachable_controller_keeps_the_cached_map() -> None:
    async def scenario() -> None:
        edge = Edge(port=1)  # nothing listens on port 1
        edge.applier.apply(RouteMap(7, (A, B)), save=False)
        task = asyncio.create_task(edge.control.run())
        try:
            await until(lambda: edge.control.last_error is not None, "the failure is recorded")
            await asyncio.sleep(0.3)
            assert not edge.control.connected
            assert "UNAVAILABLE" in (edge.control.last_error or "")
            assert edge.applier.version == 7
            assert edge.routes.routes == nets("10.245.0.0/16")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    run(scenario)
