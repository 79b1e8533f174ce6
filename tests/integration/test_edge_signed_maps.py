"""Signed maps on the edge against a man in the middle without the controller key.

    ControlLoop --TLS--> ScriptedController (test_edge_tamper's, past the TLS check: what
        |                 a MITM could send if it could speak on the channel)
        MapApplier -> Tunnel (real core), FakeRouteTable, MemoryMapStore or MapCache

The edge has map version 8, signed. Each altered update below is what an attacker who
cannot sign would send: a genuine signature over another map, a genuine older map, or
no signature. Every one must be refused whole, reported (Report.error and
refused_version), recorded in last_error, and change nothing in the tunnel or the
kernel routes; the next genuine map is applied as usual. The same holds across an edge
restart: the cached (epoch, version) is the floor (docs/controller.md, "Epochs").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from edge.leases import drop_expired
from edge.mapcache import MapCache
from isthmus.convert import delta_to_pb, map_to_pb
from isthmus.endpoint import Endpoint
from isthmus.mapdelta import MapDelta, diff
from isthmus.mapsig import new_epoch, sign_map
from isthmus.routemap import RouteMap
from isthmus.v1 import isthmus_pb2 as pb
from tests.integration.test_edge_tamper import (
    EPOCH,
    KEY,
    NOW,
    A,
    B,
    C,
    Edge,
    ScriptedController,
    nets,
    run,
    serve,
    until,
    whole,
)

V3 = RouteMap(3, (A, B))
V8 = RouteMap(8, (A, B, C))
ROUTES_AT_8 = nets("10.245.0.0/16", "10.246.0.0/16", "fd00:3::/64")


def resealed(m: RouteMap, like: RouteMap) -> pb.MapUpdate:
    """`m` with the genuine signature of `like` (what a MITM without the key can send)."""
    genuine = sign_map(KEY, EPOCH, like)
    return map_to_pb(m, epoch=EPOCH, signature=genuine.signature)


def endpoint_rewritten() -> pb.MapUpdate:
    evil = replace(B, endpoints=(Endpoint.parse("203.0.113.66:51820"),))
    return resealed(RouteMap(8, (A, evil, C)), V8)


def edge_deleted() -> pb.MapUpdate:
    return resealed(RouteMap(8, (A, C)), V8)


def route_removed() -> pb.MapUpdate:
    trimmed = replace(C, routes=C.routes[:1], leases=C.leases[:1])
    return resealed(RouteMap(8, (A, B, trimmed)), V8)


def version_rewritten() -> pb.MapUpdate:
    msg = whole(V8)
    msg.version = 3  # v8's signature on a map now claiming to be v3
    return msg


def delta_version_raised() -> pb.MapUpdate:
    # A genuine empty delta 8 -> 8, relabelled 8 -> 9 to look new.
    genuine = sign_map(KEY, EPOCH, V8)
    return delta_to_pb(
        MapDelta(base_version=8, version=9), epoch=EPOCH, signature=genuine.signature
    )


def delta_on_another_base() -> pb.MapUpdate:
    # The genuine delta 3 -> 9 (nothing changed between (A, B) and v9 = (A, B)), sent as
    # if from 8: patched onto v8 it keeps vpc-c, which v9 removed. Its signature is over v9.
    v9 = RouteMap(9, (A, B))
    genuine = sign_map(KEY, EPOCH, v9)
    d = replace(diff(V3, v9), base_version=8)
    return delta_to_pb(d, epoch=EPOCH, signature=genuine.signature)


def unsigned() -> pb.MapUpdate:
    return map_to_pb(RouteMap(9, (A, B)))


def older_replayed() -> pb.MapUpdate:
    return whole(V3)  # genuinely signed, in the same epoch, older


def older_epoch() -> pb.MapUpdate:
    earlier = new_epoch(NOW - 7200, lambda n: b"\x09" * n)
    genuine = sign_map(KEY, earlier, RouteMap(20, (A, B)))
    return map_to_pb(genuine.route_map, epoch=earlier, signature=genuine.signature)


ALTERED: dict[str, tuple[Callable[[], pb.MapUpdate], str]] = {
    "endpoint_rewritten": (endpoint_rewritten, "map signature does not verify"),
    "edge_deleted": (edge_deleted, "map signature does not verify"),
    "route_removed": (route_removed, "map signature does not verify"),
    "version_rewritten_8_to_3": (version_rewritten, "map signature does not verify"),
    "delta_version_raised": (delta_version_raised, "map signature does not verify"),
    "delta_on_another_base": (delta_on_another_base, "map signature does not verify"),
    "unsigned": (unsigned, "is not signed"),
    "older_signed_map_replayed": (older_replayed, "older than version 8"),
    "older_epoch": (older_epoch, "created no later than"),
}


@pytest.mark.parametrize("kind", sorted(ALTERED))
def test_an_altered_update_is_refused_reported_and_changes_nothing(kind: str) -> None:
    make, reason = ALTERED[kind]

    async def scenario() -> None:
        ctl = ScriptedController(lambda _: whole(V8))
        server, address = await serve(ctl)
        edge = Edge([address])
        edge.start()
        try:
            await until(lambda: len(ctl.reports) == 1, "map 8 is reported")
            assert edge.applier.version == 8 and edge.routes.routes == ROUTES_AT_8
            update = make()
            ctl.send(update)
            await until(lambda: len(ctl.reports) == 2, "the refusal is reported")
            report = ctl.reports[1]
            assert report.refused_version == update.version
            assert report.applied_version == 8 and report.epoch == EPOCH
            assert reason in report.error
            assert edge.control.last_error == report.error
            assert edge.applier.version == 8 and edge.tunnel.map_version == 8
            assert edge.applier.signed == sign_map(KEY, EPOCH, V8)
            assert edge.routes.routes == ROUTES_AT_8
            assert [p.name for p in edge.tunnel.peers(0.0)] == ["vpc-b", "vpc-c"]
            # The genuine next map still goes through, on the same stream.
            v9 = RouteMap(9, (A, B))
            genuine = sign_map(KEY, EPOCH, v9)
            ctl.send(delta_to_pb(diff(V8, v9), epoch=EPOCH, signature=genuine.signature))
            await until(lambda: edge.applier.version == 9, "map 9 is applied")
            assert edge.routes.routes == nets("10.245.0.0/16")
            assert len(ctl.watches) == 1
        finally:
            await edge.stop()
            await server.stop(grace=None)

    run(scenario)


def test_a_restarted_edge_refuses_an_older_version_of_its_epoch(tmp_path: Path) -> None:
    async def scenario() -> None:
        # Before the restart: version 8 of EPOCH was applied and cached.
        MapCache(tmp_path, KEY.public, clock=lambda: NOW).save(sign_map(KEY, EPOCH, V8))
        # The restarted edge loads its cache as edge.__main__ does, then watches.
        cache = MapCache(tmp_path, KEY.public, clock=lambda: NOW)
        ctl = ScriptedController(lambda _: whole(V3))  # genuine v3 of the same epoch
        server, address = await serve(ctl)
        edge = Edge([address], store=cache)
        cached = cache.load()
        assert cached is not None and (cached.version, cached.epoch) == (8, EPOCH)
        edge.applier.apply(drop_expired(cached.route_map, NOW)[0], signed=cached, save=False)
        edge.start()
        try:
            await until(lambda: len(ctl.reports) == 1, "the refusal is reported")
            assert (ctl.watches[0].known_version, ctl.watches[0].known_epoch) == (8, EPOCH)
            report = ctl.reports[0]
            assert report.refused_version == 3 and report.applied_version == 8
            assert "older than version 8" in report.error and "rollback" in report.error
            assert edge.applier.version == 8 and edge.routes.routes == ROUTES_AT_8
            again = cache.load()
            assert again is not None and (again.version, again.epoch) == (8, EPOCH)
        finally:
            await edge.stop()
            await server.stop(grace=None)

    run(scenario)


def test_a_later_epoch_replaces_the_map_whole_even_at_a_lower_version() -> None:
    async def scenario() -> None:
        later = new_epoch(NOW, lambda n: b"\x01" * n)  # the state was created anew
        fresh = sign_map(KEY, later, RouteMap(2, (A, C)))
        ctl = ScriptedController(lambda _: whole(V8))
        server, address = await serve(ctl)
        edge = Edge([address])
        edge.start()
        try:
            await until(lambda: len(ctl.reports) == 1, "map 8 is reported")
            ctl.send(map_to_pb(fresh.route_map, epoch=later, signature=fresh.signature))
            await until(lambda: edge.applier.version == 2, "the new lineage's map 2 is applied")
            assert edge.applier.signed == fresh
            assert edge.routes.routes == nets("10.246.0.0/16", "fd00:3::/64")
            await until(lambda: len(ctl.reports) == 2, "map 2 is reported")
            assert ctl.reports[1] == pb.ReportRequest(name="vpc-a", applied_version=2, epoch=later)
        finally:
            await edge.stop()
            await server.stop(grace=None)

    run(scenario)
