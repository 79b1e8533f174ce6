"""The map applier: maps that would loop are refused whole; colliding routes are left out,
logged once, counted, shown and retried until the other route is gone, without flapping.

    MapApplier -> Tunnel (real core), FakeRouteTable (with foreign routes), MemoryMapStore
"""

from __future__ import annotations

import logging
import random

import pytest
from nacl.bindings import crypto_box_seed_keypair

from edge.applier import MapApplier
from edge.testing import FakeForwarding, FakeRouteTable, MemoryMapStore
from edge.tunnel import Identity, Tunnel
from isthmus.endpoint import Endpoint
from isthmus.ids import EdgeName
from isthmus.keys import PublicKey
from isthmus.mapsig import SignedMap
from isthmus.routemap import EdgeEntry, RouteMap, parse_route

LAN = "10.245.0.0/16 dev lan0 proto kernel"


def edge(name: str, seed: int, endpoint: str, *routes: str) -> EdgeEntry:
    return EdgeEntry(
        EdgeName(name),
        PublicKey(crypto_box_seed_keypair(bytes([seed]) * 32)[0]),
        (Endpoint.parse(endpoint),),
        tuple(parse_route(r) for r in routes),
    )


A = edge("vpc-a", 1, "198.18.0.11:51820", "10.244.0.0/16")
B = edge("vpc-b", 2, "198.18.0.12:51820", "10.245.0.0/16", "10.97.0.0/16")
C = edge("office", 3, "198.18.0.13:51820", "172.16.0.0/24")


def applier(routes: FakeRouteTable, store: MemoryMapStore | None = None) -> MapApplier:
    identity = Identity.from_private_key(
        EdgeName("vpc-a"), crypto_box_seed_keypair(bytes([1]) * 32)[1]
    )
    tunnel = Tunnel(identity, random=random.Random(1).randbytes, wall_clock=lambda: 0.0)
    return MapApplier(
        EdgeName("vpc-a"),
        tunnel,
        routes,
        store or MemoryMapStore(),
        FakeForwarding(),
        clock=lambda: 0.0,
        controllers=("198.18.0.1:7000", "203.0.113.5:7000"),
    )


def test_a_colliding_route_is_left_out_logged_once_counted_and_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="edge")
    routes = FakeRouteTable()
    routes.foreign = {parse_route("10.245.0.0/16"): LAN}
    applied = applier(routes)
    assert applied.apply(RouteMap(1, (A, B, C)))
    reason = f"collides with an existing route {LAN}"
    assert applied.collisions == {parse_route("10.245.0.0/16"): reason}
    assert applied.collisions_total == 1
    assert routes.routes == {parse_route("10.97.0.0/16"), parse_route("172.16.0.0/24")}
    assert caplog.text.count("event=route_collision ") == 1
    assert "edge=vpc-b" in caplog.text and "retried every 5 s" in caplog.text

    # Retries while the LAN route stays: nothing removed or re-added (no flapping), no new
    # log line, no new count.
    ops = list(routes.ops)
    for _ in range(3):
        applied.retry_collisions()
    assert routes.ops == ops
    assert caplog.text.count("event=route_collision ") == 1 and applied.collisions_total == 1

    # The LAN route goes away: the next retry installs ours.
    del routes.foreign[parse_route("10.245.0.0/16")]
    applied.retry_collisions()
    assert parse_route("10.245.0.0/16") in routes.routes
    assert applied.collisions == {}
    assert "event=route_collision_cleared route=10.245.0.0/16 detail=installed" in caplog.text
    ops = list(routes.ops)
    applied.retry_collisions()  # nothing colliding: nothing done
    assert routes.ops == ops


def test_a_withdrawn_colliding_route_leaves_the_foreign_route_and_the_list() -> None:
    routes = FakeRouteTable()
    routes.foreign = {parse_route("10.245.0.0/16"): LAN}
    applied = applier(routes)
    assert applied.apply(RouteMap(1, (A, B, C)))
    assert applied.apply(RouteMap(2, (A, C)))
    assert applied.collisions == {}
    assert routes.foreign == {parse_route("10.245.0.0/16"): LAN}
    assert ("delete", parse_route("10.245.0.0/16")) not in routes.ops
    assert routes.routes == {parse_route("172.16.0.0/24")}


@pytest.mark.parametrize(
    ("rogue", "named"),
    [
        (
            "198.18.0.0/24",
            "route 198.18.0.0/24 of edge 'office' holds controller address 198.18.0.1:7000",
        ),
        (
            "203.0.113.0/28",
            "route 203.0.113.0/28 of edge 'office' holds controller address 203.0.113.5:7000",
        ),
        (
            "198.18.0.12/32",
            "route 198.18.0.12/32 of edge 'office' holds the endpoint "
            "198.18.0.12:51820 of edge 'vpc-b'",
        ),
    ],
)
def test_a_map_whose_route_holds_a_controller_or_an_endpoint_is_refused_whole(
    rogue: str, named: str, caplog: pytest.LogCaptureFixture
) -> None:
    routes = FakeRouteTable()
    store = MemoryMapStore()
    applied = applier(routes, store)
    first = RouteMap(1, (A, B, C))
    assert applied.apply(first, signed=SignedMap(first))
    before = set(routes.routes)
    bad = RouteMap(2, (A, B, edge("office", 3, "198.18.0.13:51820", "172.16.0.0/24", rogue)))
    assert not applied.apply(bad, signed=SignedMap(bad))
    assert applied.refusal is not None and applied.refusal.startswith(named)
    assert "(a loop)" in applied.refusal
    assert applied.route_map is first and applied.version == 1
    assert routes.routes == before and parse_route(rogue) not in routes.routes
    assert store.route_map is first
    assert "event=map_refused version=2" in caplog.text
    # The next good map is applied and clears the refusal.
    assert applied.apply(RouteMap(3, (A, B, C)))
    assert applied.refusal is None and applied.version == 3
