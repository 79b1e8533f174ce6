"""The edge's control loop against the real controller, in process, on 127.0.0.1:0.

    ControlLoop (vpc-a) --+
    ControlLoop (vpc-b) --+-- Challenge/Register/Watch/Report (grpc.aio) --> ControllerServer
    ControlLoop (vpc-c) --+                                                  (FileStore in tmp)
        |
        MapApplier -> Tunnel (real core), FakeRouteTable, MemoryMapStore

Checks edge.control with the controller it is made for: every call authenticates; maps
arrive whole, then as deltas, each with verified leases; reports reach the controller;
a standby controller on the same state takes over and the edge resumes with
known_version; an edge pinned to another controller key, or unknown to the
controller, is refused and keeps its map; with the controller gone, routes stay until
their leases run out and are withdrawn then.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from nacl.bindings import crypto_box_seed_keypair

from controller.__main__ import ControllerServer
from controller.config import ControllerConfig, parse
from edge.applier import MapApplier
from edge.control import ControlLoop
from edge.dialer import Backoff
from edge.testing import FakeForwarding, FakeRouteTable, MemoryMapStore
from edge.tunnel import Identity, Tunnel
from isthmus.convert import Registration
from isthmus.endpoint import Endpoint
from isthmus.ids import EdgeName
from isthmus.keys import PublicKey
from isthmus.lease import sign_lease
from isthmus.routemap import EdgeEntry, Network, RouteMap, parse_route
from isthmus.signing import ControllerKey, ControllerPublicKey
from isthmus_io.keyfiles import write_controller_key

KEY = ControllerKey.from_seed(bytes(range(32)))
LEASE_TTL = 300

# name, key seed, routes (allowed in the controller config and advertised)
EDGES: dict[str, tuple[int, tuple[str, ...]]] = {
    "vpc-a": (1, ("10.244.0.0/16",)),
    "vpc-b": (2, ("10.245.0.0/16",)),
    "vpc-c": (3, ("10.246.0.0/16", "fd00:3::/64")),
}


def keypair(seed: int) -> tuple[bytes, bytes]:
    return crypto_box_seed_keypair(bytes([seed]) * 32)


def nets(*texts: str) -> set[Network]:
    return {parse_route(t) for t in texts}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def controller_config(tmp: Path, port: int = 0) -> ControllerConfig:
    key_file = tmp / "controller.key"
    if not key_file.exists():
        write_controller_key(key_file, KEY)
    table: dict[str, Any] = {
        "listen": f"127.0.0.1:{port}",
        "state_dir": str(tmp / "state"),
        "signing_key_file": str(key_file),
        "lease_ttl": LEASE_TTL,
        "edges": [
            {
                "name": name,
                "public_key": PublicKey(keypair(seed)[0]).to_base64(),
                "routes": list(routes),
            }
            for name, (seed, routes) in EDGES.items()
        ],
    }
    return parse(table)


class Clock:
    """Unix seconds that a test can move forward; shared by controller and edges."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class Edge:
    """The control-plane half of one edge, wired like edge.__main__ but with fakes."""

    def __init__(
        self,
        name: str,
        targets: list[str],
        clock: Callable[[], float],
        *,
        seed: int | None = None,
        controller_key: ControllerPublicKey = KEY.public,
    ) -> None:
        own_seed, routes = EDGES[name]
        identity = Identity.from_private_key(EdgeName(name), keypair(seed or own_seed)[1])
        self.tunnel = Tunnel(identity, random=random.Random(7).randbytes, wall_clock=lambda: 0.0)
        self.routes = FakeRouteTable()
        self.store = MemoryMapStore()
        self.applier = MapApplier(
            EdgeName(name), self.tunnel, self.routes, self.store, FakeForwarding()
        )
        self.control = ControlLoop(
            targets,
            Registration(
                EdgeName(name),
                identity.public_key,
                (Endpoint.parse(f"198.18.0.{own_seed}:51820"),),
                tuple(parse_route(r) for r in routes),
            ),
            self.applier,
            private_key=identity.private_key,
            controller_key=controller_key,
            backoff=Backoff(initial=0.05, maximum=0.2, rng=random.Random(1)),
            clock=clock,
            lease_check_interval=0.05,
        )
        self.task: asyncio.Task[None] | None = None

    def start(self) -> Edge:
        self.task = asyncio.create_task(self.control.run())
        return self

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    def peers(self) -> list[str]:
        return sorted(p.name for p in self.tunnel.peers(0.0))


async def until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.02)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 120))


async def reported(server: ControllerServer, name: str, version: int) -> bool:
    views = {v.name: v for v in await server.service.edge_statuses()}
    view = views.get(EdgeName(name))
    return view is not None and view.applied_version == version


def test_maps_deltas_and_reports_with_the_real_controller(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = Clock()
        server = ControllerServer(controller_config(tmp_path), clock=clock)
        await server.start()
        a = Edge("vpc-a", [server.address], clock).start()
        b = Edge("vpc-b", [server.address], clock)
        c = Edge("vpc-c", [server.address], clock)
        try:
            await until(lambda: a.applier.route_map.edge("vpc-a") is not None, "a is in its map")
            assert a.routes.routes == set()
            own = a.applier.route_map.edge("vpc-a")
            assert own is not None and len(own.leases) == 1
            assert own.leases[0].expires >= int(clock()) + LEASE_TTL - 5

            b.start()
            await until(lambda: a.routes.routes == nets("10.245.0.0/16"), "a routes to b")
            await until(lambda: b.routes.routes == nets("10.244.0.0/16"), "b routes to a")
            c.start()
            await until(
                lambda: a.routes.routes == nets("10.245.0.0/16", "10.246.0.0/16", "fd00:3::/64"),
                "a routes to c",
            )
            assert a.peers() == ["vpc-b", "vpc-c"]
            version = server.service.version
            await until(lambda: a.applier.version == version, "a has the latest map")
            # One stream each, deltas after the first map; no error anywhere.
            assert a.control.streams == 1 and a.control.connected
            assert a.control.last_error is None
            for name in ("vpc-a", "vpc-b", "vpc-c"):
                deadline = asyncio.get_running_loop().time() + 30
                while not await reported(server, name, version):
                    assert asyncio.get_running_loop().time() < deadline, f"{name} reported"
                    await asyncio.sleep(0.05)
            views = {v.name: v for v in await server.service.edge_statuses()}
            assert views[EdgeName("vpc-a")].last_error == ""
            assert a.control.view().applied_version == version
            assert a.store.route_map is not None and a.store.route_map.version == version
        finally:
            for edge in (a, b, c):
                await edge.stop()
            await server.stop(grace=0)

    run(scenario)


def test_a_standby_controller_takes_over_and_the_edge_resumes(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = Clock()
        first = ControllerServer(controller_config(tmp_path), clock=clock)
        await first.start()
        standby_port = free_port()
        targets = [first.address, f"127.0.0.1:{standby_port}"]
        a = Edge("vpc-a", targets, clock).start()
        b = Edge("vpc-b", targets, clock).start()
        c = Edge("vpc-c", targets, clock)
        second: ControllerServer | None = None
        try:
            await until(lambda: a.routes.routes == nets("10.245.0.0/16"), "a routes to b")
            version = first.service.version
            await until(lambda: a.applier.version == version, "a has the latest map")
            await first.stop(grace=0)
            await until(lambda: not a.control.connected, "a sees the controller go")
            assert a.routes.routes == nets("10.245.0.0/16")  # fail-static

            # The standby starts on the same state and takes over.
            second = ControllerServer(controller_config(tmp_path, standby_port), clock=clock)
            await second.start()
            await until(lambda: a.control.connected, "a is connected to the standby")
            assert a.control.view().address == targets[1]
            assert a.applier.version >= version
            assert a.routes.routes == nets("10.245.0.0/16")
            c.start()
            await until(
                lambda: a.routes.routes == nets("10.245.0.0/16", "10.246.0.0/16", "fd00:3::/64"),
                "a routes to c through the standby",
            )
            await until(
                lambda: a.applier.version == second.service.version if second else False,
                "a has the standby's latest map",
            )
            assert a.control.last_error is None
        finally:
            for edge in (a, b, c):
                await edge.stop()
            if second is not None:
                await second.stop(grace=0)
            await first.stop(grace=0)

    run(scenario)


def test_routes_are_withdrawn_when_their_leases_run_out(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = Clock()
        server = ControllerServer(controller_config(tmp_path), clock=clock)
        await server.start()
        a = Edge("vpc-a", [server.address], clock).start()
        b = Edge("vpc-b", [server.address], clock).start()
        try:
            await until(lambda: a.routes.routes == nets("10.245.0.0/16"), "a routes to b")
            entry = a.applier.route_map.edge("vpc-b")
            assert entry is not None
            expires = entry.leases[0].expires
            await b.stop()
            await server.stop(grace=0)
            await until(lambda: not a.control.connected, "a sees the controller go")
            clock.offset = expires - time.time() - 5  # not yet
            await asyncio.sleep(0.3)
            assert a.routes.routes == nets("10.245.0.0/16")
            clock.offset = expires - time.time() + 2
            await until(lambda: not a.routes.routes, "b's route is withdrawn at expiry")
            assert a.tunnel.map_version == a.applier.version
            assert "edge 'vpc-b' route 10.245.0.0/16" in (a.control.last_error or "")
        finally:
            await a.stop()
            await b.stop()
            await server.stop(grace=0)

    run(scenario)


def test_unknown_edges_and_foreign_controller_keys_are_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = Clock()
        server = ControllerServer(controller_config(tmp_path), clock=clock)
        await server.start()
        b_key = PublicKey(keypair(2)[0])
        signed = RouteMap(
            7,
            (
                EdgeEntry(
                    EdgeName("vpc-b"),
                    b_key,
                    (Endpoint.parse("198.18.0.2:51820"),),
                    (parse_route("10.245.0.0/16"),),
                    (sign_lease(KEY, b_key, parse_route("10.245.0.0/16"), 7, 2**40),),
                ),
            ),
        )
        # An edge whose key the controller does not know.
        stranger = Edge("vpc-a", [server.address], clock, seed=9)
        # An edge pinned to another controller's key.
        pinned = Edge(
            "vpc-a",
            [server.address],
            clock,
            controller_key=ControllerKey.from_seed(bytes(32)).public,
        )
        for edge in (stranger, pinned):
            edge.applier.apply(signed, save=False)
            edge.start()
        try:
            await until(
                lambda: (
                    stranger.control.last_error is not None
                    and pinned.control.last_error is not None
                ),
                "both refusals are recorded",
            )
            await asyncio.sleep(0.3)  # several attempts
            assert "unknown edge key" in (stranger.control.last_error or "")
            assert (stranger.control.last_error or "").startswith("UNAUTHENTICATED: ")
            # The channel is pinned to the controller key (isthmus.tlscert): an edge pinned
            # to another key refuses the server's certificate and never makes a call.
            assert (pinned.control.last_error or "").startswith("UNAVAILABLE: ")
            assert "CERTIFICATE_VERIFY_FAILED" in (pinned.control.last_error or "")
            for edge in (stranger, pinned):
                assert not edge.control.connected and edge.control.streams == 0
                assert edge.applier.version == 7
                assert edge.routes.routes == nets("10.245.0.0/16")
            assert all(v.state != "connected" for v in await server.service.edge_statuses())
        finally:
            for edge in (stranger, pinned):
                await edge.stop()
            await server.stop(grace=0)

    run(scenario)


def test_an_unreachable_controller_keeps_the_cached_map() -> None:
    async def scenario() -> None:
        b_key = PublicKey(keypair(2)[0])
        route = parse_route("10.245.0.0/16")
        cached = RouteMap(
            7,
            (
                EdgeEntry(
                    EdgeName("vpc-b"),
                    b_key,
                    (Endpoint.parse("198.18.0.2:51820"),),
                    (route,),
                    (sign_lease(KEY, b_key, route, 7, 2**40),),
                ),
            ),
        )
        edge = Edge("vpc-a", ["127.0.0.1:1", "127.0.0.1:2"], time.time)  # nothing listens
        edge.applier.apply(cached, save=False)
        edge.start()
        try:
            await until(lambda: edge.control.last_error is not None, "the failure is recorded")
            await until(lambda: edge.control.view().address == "127.0.0.1:2", "it tries the next")
            await until(lambda: edge.control.view().address == "127.0.0.1:1", "and wraps around")
            assert not edge.control.connected
            assert "UNAVAILABLE" in (edge.control.last_error or "")
            assert edge.applier.version == 7
            assert edge.routes.routes == nets("10.245.0.0/16")
        finally:
            await edge.stop()

    run(scenario)
