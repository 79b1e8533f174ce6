"""The controller over real gRPC: a grpc.aio server on 127.0.0.1:0, real channels, real keys.

Each test runs its own event loop (asyncio.run) and its own controller on a fresh state_dir
with a fresh Ed25519 controller key; edges authenticate every call as an edge does
(Challenge, then the isthmus-auth-bin metadata). Authentication failures are in
test_controller_auth.py, health in test_controller_health.py.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest

from controller.__main__ import ControllerServer, main
from controller.admission import Policy
from controller.config import AllowedEdge, ControllerConfig, StoreConfig
from controller.errors import (
    AmbiguousRoute,
    ControllerError,
    InvalidRequest,
    KeyMismatch,
    NotPending,
    StoreConflict,
    StoreError,
    Unauthenticated,
    UnknownEdge,
    UnknownRoute,
    WrongEdge,
    status_code,
    to_status,
)
from isthmus.configfile import ConfigError
from isthmus.convert import update_from_pb
from isthmus.endpoint import Endpoint
from isthmus.ids import EdgeName
from isthmus.lease import Lease, verify_lease
from isthmus.mapdelta import patch
from isthmus.mapsig import SignedMap, verify_map
from isthmus.routemap import RouteMap
from isthmus.signing import ControllerKey
from isthmus.v1 import isthmus_pb2 as pb
from isthmus.v1 import isthmus_pb2_grpc as pb_grpc
from isthmus_io.keyfiles import write_controller_key
from isthmus_lab.etcd import EtcdCluster
from tests.integration.edgeclient import EdgeClient, EdgeKeys, controller_channel, edge_keys

REPO = Path(__file__).resolve().parents[2]


A = edge_keys("vpc-a", 1)
B = edge_keys("vpc-b", 2)
KEY = ControllerKey.from_seed(bytes(range(7, 39)))  # the controller's, in every config
ROGUE = edge_keys("rogue", 3)
EDGES = (
    A.allowed("10.244.0.0/16", "10.96.0.0/16"),
    B.allowed("10.245.0.0/16"),
    ROGUE.allowed("0.0.0.0/0"),  # a careless config: rogue may advertise anything
)


def config(tmp: Path, *edges: AllowedEdge) -> ControllerConfig:
    key_file = tmp / "controller.key"
    if not key_file.exists():
        write_controller_key(key_file, KEY)
    return ControllerConfig(
        listen=Endpoint.parse("127.0.0.1:0", allow_port_zero=True),
        state_dir=tmp / "state",
        edges=edges or EDGES,
        signing_key_file=key_file,
        admin_socket=tmp / "admin.sock",
        lease_ttl=86400,
        store=StoreConfig(kind="file", endpoints=(), prefix="/isthmus/"),
        admission=Policy(),
    )


class Follower:
    """An edge's view of a watch: applies full maps and deltas as the edge does."""

    def __init__(self, call: Any, have: RouteMap | None = None) -> None:
        self.call = call
        self.map = have
        self.epoch = b""

    async def next(self) -> pb.MapUpdate:
        msg = await asyncio.wait_for(self.call.read(), 10)
        assert msg is not grpc.aio.EOF, "the watch ended"
        update = update_from_pb(msg)
        if isinstance(update, RouteMap):
            self.map = update
        else:
            assert self.map is not None, "a delta before any map"
            self.map = patch(self.map, update)
        # Every update, full or delta, is signed over the whole map it makes.
        self.epoch = msg.epoch
        assert verify_map(KEY.public, SignedMap(self.map, msg.epoch, msg.signature))
        return msg  # type: ignore[no-any-return]


@asynccontextmanager
async def running(
    cfg: ControllerConfig, **kw: Any
) -> AsyncIterator[tuple[ControllerServer, Callable[[EdgeKeys], EdgeClient]]]:
    server = ControllerServer(cfg, **kw)
    await server.start()
    try:
        async with controller_channel(server.address, server.public_key) as channel:
            yield server, lambda keys: EdgeClient(channel, server.public_key, keys)
    finally:
        await server.stop(grace=1)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout=60))


async def refused(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call
    return e.value


def statuses(resp: pb.RegisterResponse) -> list[tuple[str, int, str, bool]]:
    return [(r.route, r.state, r.reason_code, r.approved) for r in resp.routes]


def routes_of(m: RouteMap) -> dict[str, list[str]]:
    return {e.name: [str(r) for r in e.routes] for e in m.edges}


SERVING, PENDING, REFUSED = pb.ROUTE_STATE_SERVING, pb.ROUTE_STATE_PENDING, pb.ROUTE_STATE_REFUSED


def test_register_returns_the_version_and_every_route_status(tmp_path: Path) -> None:
    async def body() -> None:
        async with running(config(tmp_path)) as (_, client):
            a = client(A)
            r1 = await a.register("10.244.0.0/16", "10.96.0.0/16")
            assert r1.version == 1
            assert statuses(r1) == [
                ("10.244.0.0/16", SERVING, "", False),
                ("10.96.0.0/16", SERVING, "", False),
            ]
            assert {(r.edge, r.since_version) for r in r1.routes} == {("vpc-a", 1)}
            again = await a.register("10.244.0.0/16", "10.96.0.0/16")
            assert again.version == 1
            moved = await a.register("10.244.0.0/16", "10.96.0.0/16", port=1)
            assert moved.version == 2
            assert [r.since_version for r in moved.routes] == [1, 1]
            outside = await a.register("10.244.0.0/16", "10.0.0.0/8")
            assert statuses(outside)[1] == ("10.0.0.0/8", REFUSED, "not_allowed", False)

    run(body)


def test_malformed_request_is_invalid_argument(tmp_path: Path) -> None:
    async def body() -> None:
        async with running(config(tmp_path)) as (server, client):
            a = client(A)
            e = await refused(a.register("10.244.0/16"))
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert (e.details() or "").startswith("routes[0]: '10.244.0/16' is not a route")
            other_key = a.request("10.244.0.0/16")
            other_key.public_key = B.public.raw
            e = await refused(a.register_pb(other_key))
            assert e.code() == grpc.StatusCode.PERMISSION_DENIED
            assert server.service.version == 0

    run(body)


def test_a_rogue_edge_cannot_take_the_routes_of_another(tmp_path: Path) -> None:
    """rogue (allowed 0.0.0.0/0) advertises vpc-a's route, a more specific of it and the
    default route: refused (exact), pending (more specific), refused (reserved); the map
    vpc-b watches gives rogue none of them."""

    async def body() -> None:
        async with running(config(tmp_path)) as (_, client):
            await client(A).register("10.244.0.0/16")
            b = client(B)
            await b.register("10.245.0.0/16")
            r = await client(ROGUE).register(
                "10.244.0.0/16", "10.244.1.0/24", "0.0.0.0/0", "10.50.0.0/16"
            )
            assert statuses(r) == [
                ("10.244.0.0/16", REFUSED, "exact", False),
                ("10.244.1.0/24", PENDING, "more_specific", False),
                ("0.0.0.0/0", REFUSED, "reserved", False),
                ("10.50.0.0/16", SERVING, "", False),
            ]
            assert "vpc-a" in r.routes[0].reason and "vpc-a" in r.routes[1].reason
            assert "approve" in r.routes[1].reason
            watcher = Follower(await b.watch())
            await watcher.next()
            assert watcher.map is not None and watcher.map.version == r.version
            assert routes_of(watcher.map) == {
                "rogue": ["10.50.0.0/16"],
                "vpc-a": ["10.244.0.0/16"],
                "vpc-b": ["10.245.0.0/16"],
            }
            watcher.call.cancel()

    run(body)


def test_approval_over_the_admin_socket_makes_a_pending_route_serve(tmp_path: Path) -> None:
    async def body() -> None:
        async with running(config(tmp_path)) as (server, client):
            await client(A).register("10.244.0.0/16")
            b = client(B)
            await b.register("10.245.0.0/16")
            r = await client(ROGUE).register("10.244.1.0/24")
            assert statuses(r) == [("10.244.1.0/24", PENDING, "more_specific", False)]
            watcher = Follower(await b.watch())
            await watcher.next()
            assert watcher.map is not None and watcher.map.edge("rogue") is not None
            assert routes_of(watcher.map)["rogue"] == []
            async with grpc.aio.insecure_channel(f"unix:{server.admin_socket}") as channel:
                admin = pb_grpc.AdminStub(channel)
                listed = await admin.ListRoutes(pb.ListRoutesRequest())
                assert listed.version == r.version
                assert [(x.edge, x.route, x.state) for x in listed.routes] == [
                    ("vpc-a", "10.244.0.0/16", SERVING),
                    ("rogue", "10.244.1.0/24", PENDING),
                    ("vpc-b", "10.245.0.0/16", SERVING),
                ]
                ok = await admin.ApproveRoute(
                    pb.ApproveRouteRequest(route="10.244.1.0/24", edge="rogue")
                )
                assert (ok.version, ok.route.state, ok.route.approved) == (
                    r.version + 1,
                    SERVING,
                    True,
                )
                e = await refused(admin.ApproveRoute(pb.ApproveRouteRequest(route="10.9.0.0/16")))
                assert e.code() == grpc.StatusCode.NOT_FOUND
            delta = await watcher.next()
            assert (delta.full, delta.base_version, delta.version) == (False, r.version, ok.version)
            assert routes_of(watcher.map)["rogue"] == ["10.244.1.0/24"]
            # the longer prefix now serves for rogue; vpc-a keeps its /16
            assert routes_of(watcher.map)["vpc-a"] == ["10.244.0.0/16"]
            entry = watcher.map.edge("rogue")
            assert entry is not None
            assert verify_lease(server.public_key, ROGUE.public, entry.routes[0], entry.leases[0])
            watcher.call.cancel()

    run(body)


def test_approve_through_the_backend(tmp_path: Path) -> None:
    async def body() -> None:
        async with running(config(tmp_path)) as (server, client):
            await client(A).register("10.244.0.0/16")
            await client(ROGUE).register("10.244.1.0/24")
            route = ipaddress.ip_network("10.244.1.0/24")
            with pytest.raises(UnknownRoute):
                await server.service.approve(route, EdgeName("vpc-b"))
            d = await server.service.approve(route, None)
            assert (d.edge, d.state, d.approved) == ("rogue", "serving", True)
            assert server.service.version == 3
            with pytest.raises(NotPending):
                await server.service.approve(route, None)
            assert {(x.edge, str(x.route), x.state) for x in server.service.route_statuses()} == {
                ("rogue", "10.244.1.0/24", "serving"),
                ("vpc-a", "10.244.0.0/16", "serving"),
            }

    run(body)


def test_leases_in_the_watched_map_verify_against_the_controller_key(tmp_path: Path) -> None:
    now = time.time()

    async def body() -> None:
        async with running(config(tmp_path)) as (server, client):
            await client(A).register("10.244.0.0/16", "10.96.0.0/16")
            await client(B).register("10.245.0.0/16")
            watcher = Follower(await client(B).watch())
            await watcher.next()
            assert watcher.map is not None
            checked = 0
            for e in watcher.map.edges:
                assert len(e.leases) == len(e.routes)
                for route, lease in zip(e.routes, e.leases, strict=True):
                    assert verify_lease(server.public_key, e.public_key, route, lease)
                    assert lease.version <= watcher.map.version
                    assert now + 86400 - 5 <= lease.expires <= time.time() + 86400
                    # the lease is bound to its edge, route and key
                    stranger = A.public if e.public_key != A.public else B.public
                    assert not verify_lease(server.public_key, stranger, route, lease)
                    other = ControllerKey.generate().public
                    assert not verify_lease(other, e.public_key, route, lease)
                    forged = Lease(lease.version, lease.expires + 1, lease.signature)
                    assert not verify_lease(server.public_key, e.public_key, route, forged)
                    checked += 1
            assert checked == 3
            watcher.call.cancel()

    run(body)


class Clock:
    """The controller's clock (unix seconds), moved by the test."""

    def __init__(self) -> None:
        self.now = 1_760_000_000.0

    def __call__(self) -> float:
        return self.now


def test_leases_are_renewed_past_half_their_lifetime(tmp_path: Path) -> None:
    """Through the change path: a new version, fresh leases, a delta to watchers; and the
    renewal task runs at start, so a controller restarted late renews at once."""

    async def body() -> None:
        clock = Clock()
        cfg = config(tmp_path)
        async with running(cfg, clock=clock) as (server, client):
            await client(A).register("10.244.0.0/16")
            watcher = Follower(await client(B).watch())
            await watcher.next()
            assert watcher.map is not None
            (old,) = watcher.map.edges[0].leases
            assert (old.version, old.expires) == (1, int(clock.now) + 86400)
            clock.now += 43000  # less than half the lifetime gone: nothing to do
            assert await server.service.renew() == ()
            assert server.service.version == 1
            clock.now += 400
            changes = await server.service.renew()
            assert [(c.kind, c.edge) for c in changes] == [("leases_renewed", "vpc-a")]
            msg = await watcher.next()
            assert (msg.full, msg.base_version, msg.version) == (False, 1, 2)
            (new,) = watcher.map.edges[0].leases
            assert (new.version, new.expires) == (2, int(clock.now) + 86400)
            route = watcher.map.edges[0].routes[0]
            assert verify_lease(server.public_key, A.public, route, new)
            watcher.call.cancel()
        clock.now += 86400  # down for a day: every lease is past half its lifetime
        async with running(cfg, clock=clock) as (server, client):
            watcher = Follower(await client(B).watch())
            m = await follow_until(watcher, lambda m: m.version >= 3)
            (lease,) = m.edges[0].leases
            assert (m.version, lease.version, lease.expires) == (3, 3, int(clock.now) + 86400)
            watcher.call.cancel()

    run(body)


def test_watch_resumes_from_a_known_version(tmp_path: Path) -> None:
    async def body() -> None:
        async with running(config(tmp_path)) as (_, client):
            a, b = client(A), client(B)
            await a.register("10.244.0.0/16")  # 1
            first = Follower(await b.watch())
            await first.next()
            first.call.cancel()
            v1 = first.map
            assert v1 is not None and v1.version == 1
            await b.register("10.245.0.0/16")  # 2
            await a.register("10.244.0.0/16", port=2)  # 3
            whole = Follower(await b.watch())
            msg = await whole.next()
            assert msg.full and msg.version == 3
            current = whole.map
            whole.call.cancel()

            same = Follower(await b.watch(known_version=3, known_epoch=whole.epoch), have=current)
            msg = await same.next()
            assert (msg.full, msg.base_version, msg.version, len(msg.edges)) == (False, 3, 3, 0)
            assert same.map == current
            same.call.cancel()

            older = Follower(await b.watch(known_version=1, known_epoch=first.epoch), have=v1)
            msg = await older.next()
            assert (msg.full, msg.base_version, msg.version) == (False, 1, 3)
            assert sorted(e.name for e in msg.edges) == ["vpc-a", "vpc-b"]
            assert older.map == current
            # later versions come as deltas from the previous one sent
            await a.register("10.244.0.0/16", "10.96.0.0/16")  # 4
            msg = await older.next()
            assert (msg.full, msg.base_version, msg.version) == (False, 3, 4)
            assert [e.name for e in msg.edges] == ["vpc-a"]
            assert older.map is not None and routes_of(older.map)["vpc-a"] == [
                "10.96.0.0/16",
                "10.244.0.0/16",
            ]
            older.call.cancel()

            for unknown in (0, 99):
                fresh = Follower(await b.watch(known_version=unknown))
                msg = await fresh.next()
                assert msg.full and msg.version == 4
                assert fresh.map == older.map
                fresh.call.cancel()

    run(body)


def test_a_restart_forgets_old_versions_but_keeps_the_state(tmp_path: Path) -> None:
    async def body() -> None:
        cfg = config(tmp_path)
        async with running(cfg) as (_, client):
            await client(A).register("10.244.0.0/16")
            await client(B).register("10.245.0.0/16")
            r = await client(ROGUE).register("10.244.1.0/24", "10.50.0.0/16")
            assert r.version == 3
            watcher = Follower(await client(B).watch())
            await watcher.next()
            before = watcher.map
            watcher.call.cancel()
        async with running(cfg) as (server, client):
            assert server.service.version == 3
            resumed = Follower(
                await client(B).watch(known_version=3, known_epoch=watcher.epoch), have=before
            )
            msg = await resumed.next()
            assert (msg.full, msg.version) == (False, 3)
            assert resumed.map == before  # same leases: the state holds them
            resumed.call.cancel()
            too_old = Follower(await client(B).watch(known_version=2, known_epoch=watcher.epoch))
            msg = await too_old.next()
            assert msg.full and too_old.map == before
            too_old.call.cancel()
            pending = [(x.edge, str(x.route)) for x in server.service.route_statuses()]
            assert ("rogue", "10.244.1.0/24") in pending
            again = await client(ROGUE).register("10.244.1.0/24", "10.50.0.0/16")
            assert again.version == 3
            assert [x.since_version for x in again.routes] == [3, 3]
            r = await client(A).register("10.244.0.0/16", "10.96.0.0/16")
            assert r.version == 4  # continues from the stored version

    run(body)


def test_a_watcher_gets_each_change_as_a_delta(tmp_path: Path) -> None:
    async def body() -> None:
        async with running(config(tmp_path)) as (_, client):
            await client(A).register("10.244.0.0/16")
            watcher = Follower(await client(A).watch())
            first = await watcher.next()
            assert first.full and first.version == 1
            await client(B).register("10.245.0.0/16")
            second = await watcher.next()
            assert (second.full, second.base_version, second.version) == (False, 1, 2)
            assert [e.name for e in second.edges] == ["vpc-b"]
            assert watcher.map is not None
            assert routes_of(watcher.map) == {
                "vpc-a": ["10.244.0.0/16"],
                "vpc-b": ["10.245.0.0/16"],
            }
            await client(A).report(2)
            watcher.call.cancel()

    run(body)


def test_reports_and_watches_show_in_edge_statuses(tmp_path: Path) -> None:
    async def body() -> None:
        async with running(config(tmp_path)) as (server, client):
            a = client(A)
            await a.register("10.244.0.0/16")
            views = {v.name: v for v in await server.service.edge_statuses()}
            assert [views[n].state for n in ("rogue", "vpc-a", "vpc-b")] == ["never"] * 3
            assert [str(x) for x in views["vpc-a"].endpoints] == ["198.18.0.11:51820"]
            watcher = Follower(await a.watch())
            await watcher.next()
            await a.report(1, error="edges[0].routes[0].lease: bad signature", refused=1)
            view = {v.name: v for v in await server.service.edge_statuses()}["vpc-a"]
            assert (view.state, view.applied_version) == ("connected", 1)
            assert view.last_error == "edges[0].routes[0].lease: bad signature"
            assert view.reported_at > 0
            await a.report(1)
            watcher.call.cancel()
            for _ in range(100):  # the server notices the cancelled stream soon
                view = {v.name: v for v in await server.service.edge_statuses()}["vpc-a"]
                if view.state != "connected":
                    break
                await asyncio.sleep(0.05)
            assert (view.state, view.applied_version, view.last_error) == ("disconnected", 1, "")

    run(body)


def test_config_reload_reaches_a_watcher_and_locks_out_a_dropped_edge(tmp_path: Path) -> None:
    async def body() -> None:
        async with running(config(tmp_path)) as (server, client):
            await client(A).register("10.244.0.0/16", "10.96.0.0/16")
            await client(B).register("10.245.0.0/16")
            b_watch = Follower(await client(B).watch())
            assert (await b_watch.next()).version == 2
            a_watch = Follower(await client(A).watch())
            await a_watch.next()
            changes = await server.reload(
                config(tmp_path, A.allowed("10.96.0.0/16"), B.allowed("10.245.0.0/16"))
            )
            assert [(c.kind, c.edge, str(c.route)) for c in changes] == [
                ("route_refused", "vpc-a", "10.244.0.0/16")
            ]
            assert "allowed" in changes[0].detail
            msg = await b_watch.next()
            assert (msg.full, msg.base_version, msg.version) == (False, 2, 3)
            assert b_watch.map is not None
            assert routes_of(b_watch.map) == {"vpc-a": ["10.96.0.0/16"], "vpc-b": ["10.245.0.0/16"]}
            await a_watch.next()
            # vpc-a dropped from the config: its open watch ends, its calls are refused
            await server.reload(config(tmp_path, B.allowed("10.245.0.0/16")))
            msg = await b_watch.next()
            assert list(msg.removed) == ["vpc-a"]
            e = await refused(a_watch.call.read())
            assert e.code() == grpc.StatusCode.PERMISSION_DENIED
            e = await refused(client(A).register("10.96.0.0/16"))
            assert e.code() == grpc.StatusCode.UNAUTHENTICATED
            b_watch.call.cancel()

    run(body)


def test_stop_ends_watches_cleanly(tmp_path: Path) -> None:
    async def body() -> None:
        server = ControllerServer(config(tmp_path))
        await server.start()
        async with controller_channel(server.address, server.public_key) as channel:
            b = EdgeClient(channel, server.public_key, B)
            watch = await b.watch()
            assert (await asyncio.wait_for(watch.read(), 5)).version == 0
            await asyncio.wait_for(server.stop(grace=5), 10)
            assert await asyncio.wait_for(watch.read(), 5) is grpc.aio.EOF
            assert await watch.code() == grpc.StatusCode.OK
        assert not server.admin_socket.exists()

    run(body)


async def follow_until(f: Follower, done: Callable[[RouteMap], bool]) -> RouteMap:
    """Read updates until the edge's map satisfies `done`."""
    while f.map is None or not done(f.map):
        await f.next()
    return f.map


def test_two_replicas_on_etcd_share_one_state(tmp_path: Path) -> None:
    """Two controller replicas on one etcd: a write at one reaches watchers of the other
    (the store's change feed), concurrent writes at both are all kept (a lost compare
    adopts the newer state and decides again), and both serve the same map, leases and
    all."""

    async def body(cluster: EtcdCluster) -> None:
        base = config(tmp_path)
        etcd = StoreConfig(kind="etcd", endpoints=cluster.client_urls, prefix="/t/")
        cfg1 = replace(base, store=etcd, state_dir=tmp_path / "s1", admin_socket=tmp_path / "1")
        cfg2 = replace(base, store=etcd, state_dir=tmp_path / "s2", admin_socket=tmp_path / "2")
        async with running(cfg1) as (_, at1), running(cfg2) as (_, at2):
            assert (await at1(A).register("10.244.0.0/16")).version == 1
            b_at_2 = Follower(await at2(B).watch())
            await follow_until(b_at_2, lambda m: m.edge("vpc-a") is not None)
            assert (await at2(B).register("10.245.0.0/16")).version == 2
            a_at_1 = Follower(await at1(A).watch())
            await follow_until(a_at_1, lambda m: m.version >= 2)
            assert a_at_1.map == await follow_until(b_at_2, lambda m: m.version >= 2)
            r1, r2 = await asyncio.gather(
                at1(A).register("10.244.0.0/16", port=7),
                at2(ROGUE).register("10.50.0.0/16"),
            )
            assert {r1.version, r2.version} == {3, 4}
            final1 = await follow_until(a_at_1, lambda m: m.version >= 4)
            final2 = await follow_until(b_at_2, lambda m: m.version >= 4)
            assert final1 == final2 and final1.version == 4
            assert routes_of(final1) == {
                "rogue": ["10.50.0.0/16"],
                "vpc-a": ["10.244.0.0/16"],
                "vpc-b": ["10.245.0.0/16"],
            }
            a = final1.edge("vpc-a")
            assert a is not None and str(a.endpoints[0]).endswith(":7")
            a_at_1.call.cancel()
            b_at_2.call.cancel()

    with EtcdCluster(tmp_path / "etcd", members=1) as cluster:
        cluster.start()
        run(lambda: body(cluster))


def test_failed_persist_is_unavailable_and_changes_nothing(tmp_path: Path) -> None:
    async def body() -> None:
        async with running(config(tmp_path)) as (server, client):
            watcher = Follower(await client(B).watch())
            assert (await watcher.next()).version == 0
            state_dir = tmp_path / "state"
            for f in state_dir.iterdir():
                f.unlink()
            state_dir.rmdir()
            state_dir.write_text("not a directory\n")  # as a broken disk: writes fail
            e = await refused(client(A).register("10.244.0.0/16"))
            assert e.code() == grpc.StatusCode.UNAVAILABLE
            assert str(state_dir) in (e.details() or "")
            assert server.service.version == 0
            assert server.service.registry.snapshot() == RouteMap(version=0)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(asyncio.shield(watcher.call.read()), 0.3)
            watcher.call.cancel()

    run(body)


def test_a_bad_signing_key_file_is_a_startup_error_naming_it(tmp_path: Path) -> None:
    async def body() -> None:
        cfg = replace(config(tmp_path), signing_key_file=tmp_path / "missing.key")
        with pytest.raises(ConfigError) as e:
            await ControllerServer(cfg).start()
        assert str(e.value).startswith(f"signing_key_file: cannot read {tmp_path}/missing.key")
        loose = tmp_path / "controller.key"
        loose.chmod(0o644)
        with pytest.raises(ConfigError) as e:
            await ControllerServer(config(tmp_path)).start()
        assert str(e.value).startswith(f"signing_key_file: {loose} is accessible by group")

    run(body)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (Unauthenticated("x"), grpc.StatusCode.UNAUTHENTICATED),
        (UnknownEdge("x"), grpc.StatusCode.NOT_FOUND),
        (KeyMismatch("x"), grpc.StatusCode.PERMISSION_DENIED),
        (WrongEdge("x"), grpc.StatusCode.PERMISSION_DENIED),
        (InvalidRequest("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (NotPending("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (UnknownRoute("x"), grpc.StatusCode.NOT_FOUND),
        (AmbiguousRoute("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (StoreError("x"), grpc.StatusCode.UNAVAILABLE),
        (StoreConflict("x"), grpc.StatusCode.UNAVAILABLE),
        (ControllerError("x"), grpc.StatusCode.INTERNAL),
    ],
)
def test_status_code_mapping(error: ControllerError, code: grpc.StatusCode) -> None:
    assert status_code(error) == code
    # The status a shell aborts with: that code, and the error's message unchanged.
    status = to_status(type(error)(f"{type(error).__name__}: route 10.0.0.0/8 of edge a"))
    assert status.code == code
    assert status.message == f"{type(error).__name__}: route 10.0.0.0/8 of edge a"


def test_main_reports_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "c.toml"
    f.write_text(f'listen = "127.0.0.1:0"\nstate_dir = "{tmp_path}"\n')
    assert main(["--config", str(f)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"isthmus controller: {f}: signing_key_file: is missing")
    f.write_text(
        f'listen = "127.0.0.1:0"\nstate_dir = "{tmp_path}"\n'
        f'signing_key_file = "{tmp_path}/none.key"\n'
    )
    assert main(["--config", str(f)]) == 1
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith(
        f"isthmus controller: {f}: signing_key_file: cannot read {tmp_path}/none.key"
    )
    assert main([]) == 1  # usage errors exit 1 (isthmus.clikit)


def _write_config(path: Path, tmp: Path, *edges: AllowedEdge) -> None:
    lines = [
        'listen = "127.0.0.1:0"',
        f'state_dir = "{tmp / "state"}"',
        f'signing_key_file = "{tmp / "controller.key"}"',
        f'admin_socket = "{tmp / "admin.sock"}"',
    ]
    for e in edges:
        routes = ", ".join(f'"{r}"' for r in e.routes)
        lines += ["[[edges]]", f'name = "{e.name}"', f'public_key = "{e.public_key}"']
        lines.append(f"routes = [{routes}]")
    path.write_text("\n".join(lines) + "\n")


def _read_until(proc: subprocess.Popen[str], needle: str, timeout: float = 20) -> str:
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        if needle in line:
            return line
    raise AssertionError(f"no line with {needle!r} from the controller")


def test_process_sighup_and_sigterm(tmp_path: Path) -> None:
    """The real process: logs its port; SIGHUP reloads (a bad file is refused); SIGTERM exits 0."""
    cfg = tmp_path / "controller.toml"
    key = ControllerKey.generate()
    write_controller_key(tmp_path / "controller.key", key)
    _write_config(cfg, tmp_path, A.allowed("10.244.0.0/16"), B.allowed("10.245.0.0/16"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "proto")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller", "--config", str(cfg)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        line = _read_until(proc, "event=listening")
        assert " level=info " in line and line.startswith("ts=")
        address = line.split("address=")[1].split()[0]
        assert address.startswith("127.0.0.1:") and not address.endswith(":0")

        async def register() -> int:
            async with controller_channel(address, key.public) as channel:
                a = EdgeClient(channel, key.public, A)
                return (await a.register("10.244.0.0/16")).version

        assert asyncio.run(register()) == 1
        assert "edge=vpc-a" in _read_until(proc, "event=registered")

        cfg.write_text("listen = 1\n")
        proc.send_signal(signal.SIGHUP)
        refused_line = _read_until(proc, "event=reload_refused")
        assert "listen: 1 is not an endpoint" in refused_line

        _write_config(cfg, tmp_path, B.allowed("10.245.0.0/16"))
        proc.send_signal(signal.SIGHUP)
        removed = _read_until(proc, "edge=vpc-a")
        assert " level=warning event=edge_removed " in removed
        _read_until(proc, "event=reloaded")

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stored = json.loads((tmp_path / "state" / "state.json").read_text())
    assert stored["version"] == 2
