"""Kernel route reconcile: the desired set, the diff, and applying it idempotently."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.bindings import crypto_box_seed_keypair

from edge.ports import RouteCollision, RouteError
from edge.reconcile import (
    RouteChanges,
    apply_changes,
    desired_routes,
    diff,
    loops,
    reconcile,
)
from edge.testing import FakeRouteTable
from isthmus.endpoint import Endpoint
from isthmus.ids import EdgeName
from isthmus.keys import PublicKey
from isthmus.lpm import route_sort_key
from isthmus.routemap import EdgeEntry, Network, RouteMap, overlaps, parse_route


def nets(*texts: str) -> set[Network]:
    return {parse_route(t) for t in texts}


def edge(name: str, seed: int, *routes: str) -> EdgeEntry:
    return EdgeEntry(
        EdgeName(name),
        PublicKey(crypto_box_seed_keypair(bytes([seed]) * 32)[0]),
        (Endpoint.parse(f"198.18.0.{seed}:51820"),),
        tuple(parse_route(r) for r in routes),
    )


MAP = RouteMap(
    version=3,
    edges=(
        edge("vpc-a", 1, "10.244.0.0/16", "10.96.0.0/16"),
        edge("vpc-b", 2, "10.245.0.0/16"),
        edge("office", 3, "192.168.1.0/24", "fd00:1::/64"),
    ),
)


@pytest.mark.parametrize(
    ("desired", "current", "added", "removed"),
    [
        ((), (), (), ()),
        (("10.1.0.0/16",), (), ("10.1.0.0/16",), ()),
        ((), ("10.1.0.0/16",), (), ("10.1.0.0/16",)),
        (("10.1.0.0/16",), ("10.1.0.0/16",), (), ()),
        (("10.1.0.0/16",), ("10.1.0.0/24",), ("10.1.0.0/16",), ("10.1.0.0/24",)),
        (
            ("fd00::/64", "10.2.0.0/16", "10.1.0.0/16"),
            ("10.3.0.0/16",),
            ("10.1.0.0/16", "10.2.0.0/16", "fd00::/64"),
            ("10.3.0.0/16",),
        ),
    ],
)
def test_diff_table(
    desired: tuple[str, ...],
    current: tuple[str, ...],
    added: tuple[str, ...],
    removed: tuple[str, ...],
) -> None:
    changes = diff(nets(*desired), nets(*current))
    assert changes == RouteChanges(
        tuple(parse_route(r) for r in added), tuple(parse_route(r) for r in removed)
    )
    assert bool(changes) == bool(added or removed)


def test_desired_routes_are_every_route_of_every_other_edge() -> None:
    assert desired_routes(MAP, "vpc-a") == {
        parse_route("10.245.0.0/16"): "vpc-b",
        parse_route("192.168.1.0/24"): "office",
        parse_route("fd00:1::/64"): "office",
    }


def test_desired_routes_of_an_edge_not_in_the_map_are_all_routes() -> None:
    assert len(desired_routes(MAP, "elsewhere")) == 5


def test_desired_routes_of_an_empty_map() -> None:
    assert desired_routes(RouteMap(version=0), "vpc-a") == {}


def test_reconcile_installs_removes_and_is_idempotent(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge")
    table = FakeRouteTable(nets("10.245.0.0/16", "10.99.0.0/16"))
    changes, errors = reconcile(table, MAP, "vpc-a")
    assert errors == []
    assert changes.added == (parse_route("192.168.1.0/24"), parse_route("fd00:1::/64"))
    assert changes.removed == (parse_route("10.99.0.0/16"),)
    assert table.routes == set(desired_routes(MAP, "vpc-a"))
    assert "event=route_added route=192.168.1.0/24 edge=office" in caplog.text
    assert "event=route_removed route=10.99.0.0/16" in caplog.text

    table.ops.clear()
    caplog.clear()
    changes, errors = reconcile(table, MAP, "vpc-a")
    assert not changes and errors == [] and table.ops == []
    assert "routes already up to date" in caplog.text


def test_a_failing_route_is_reported_and_the_others_still_applied() -> None:
    table = FakeRouteTable(nets("10.99.0.0/16"))
    table.fail = nets("10.245.0.0/16")
    _, errors = reconcile(table, MAP, "vpc-a")
    assert [e.cidr for e in errors] == ["10.245.0.0/16"]
    assert "cannot add route 10.245.0.0/16" in str(errors[0])
    assert table.routes == nets("192.168.1.0/24", "fd00:1::/64")
    table.fail.clear()
    reconcile(table, MAP, "vpc-a")
    assert table.routes == set(desired_routes(MAP, "vpc-a"))


def test_reconcile_raises_when_routes_cannot_be_listed() -> None:
    table = FakeRouteTable()
    table.fail_list = True
    with pytest.raises(RouteError):
        reconcile(table, MAP, "vpc-a")


# -- properties ---------------------------------------------------------------------

v4 = st.builds(
    lambda addr, plen: ipaddress.IPv4Network((addr, plen), strict=False),
    st.integers(0, 2**32 - 1),
    st.integers(8, 32),
)
v6 = st.builds(
    lambda addr, plen: ipaddress.IPv6Network((addr, plen), strict=False),
    st.integers(0, 2**128 - 1),
    st.integers(16, 128),
)
route_sets = st.sets(st.one_of(v4, v6), max_size=20)


@given(route_sets, route_sets)
def test_applying_the_diff_yields_the_desired_set(
    desired: set[Network], current: set[Network]
) -> None:
    changes = diff(desired, current)
    assert (current | set(changes.added)) - set(changes.removed) == desired
    assert list(changes.added) == sorted(changes.added, key=route_sort_key)
    assert list(changes.removed) == sorted(changes.removed, key=route_sort_key)
    assert not set(changes.added) & current
    assert set(changes.removed) <= current

    table = FakeRouteTable(current)
    assert apply_changes(table, changes, {}) == []
    assert table.routes == desired
    assert not diff(desired, table.list_routes())


@given(route_sets)
def test_diff_of_a_set_with_itself_is_empty(routes: set[Network]) -> None:
    assert diff(routes, routes) == RouteChanges()


@given(st.lists(st.tuples(st.sampled_from(["vpc-a", "vpc-b", "vpc-c"]), v4), max_size=15))
def test_desired_routes_exclude_own_routes(owned: list[tuple[str, Network]]) -> None:
    by_edge: dict[str, list[Network]] = {}
    seen: set[Network] = set()
    for name, net in owned:
        if any(overlaps(net, other) for other in seen):
            continue
        seen.add(net)
        by_edge.setdefault(name, []).append(net)
    route_map = RouteMap(
        version=1,
        edges=tuple(
            edge(name, i + 1, *map(str, rs)) for i, (name, rs) in enumerate(by_edge.items())
        ),
    ).validate()
    wanted = desired_routes(route_map, "vpc-a")
    assert set(wanted) == {net for name, rs in by_edge.items() if name != "vpc-a" for net in rs}
    assert all(owner != "vpc-a" for owner in wanted.values())


# -- collisions and loops -----------------------------------------------------------------


def test_a_colliding_route_is_returned_unlogged_and_the_foreign_route_untouched(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="edge")
    table = FakeRouteTable()
    table.foreign = {parse_route("10.245.0.0/16"): "10.245.0.0/16 dev lan0 proto kernel"}
    _, errors = reconcile(table, MAP, "vpc-a")
    assert [type(e) for e in errors] == [RouteCollision]
    collision = errors[0]
    assert isinstance(collision, RouteCollision)
    assert collision.cidr == "10.245.0.0/16"
    assert collision.reason == "collides with an existing route 10.245.0.0/16 dev lan0 proto kernel"
    assert table.routes == nets("192.168.1.0/24", "fd00:1::/64")
    assert ("add", parse_route("10.245.0.0/16")) not in table.ops
    assert "route=10.245.0.0/16" not in caplog.text  # the caller logs it, once


def _with_endpoint(entry: EdgeEntry, endpoint: str) -> EdgeEntry:
    return dataclasses.replace(entry, endpoints=(Endpoint.parse(endpoint),))


def test_loops_name_the_route_and_the_controller_address_it_holds() -> None:
    found = loops(MAP, "vpc-a", ["10.245.3.4:7000", "ctl.example:7000", "[fd00:1::9]:7000"])
    assert found == [
        "route 10.245.0.0/16 of edge 'vpc-b' holds controller address 10.245.3.4:7000: "
        "installing it would route this edge's own tunnel or controller traffic into the "
        "tunnel (a loop)",
        "route fd00:1::/64 of edge 'office' holds controller address [fd00:1::9]:7000: "
        "installing it would route this edge's own tunnel or controller traffic into the "
        "tunnel (a loop)",
    ]


def test_loops_name_a_route_holding_an_endpoint_of_another_edge() -> None:
    covered = RouteMap(
        version=4,
        edges=(
            MAP.edges[0],
            _with_endpoint(MAP.edges[1], "192.168.1.20:51820"),  # inside office's route
            MAP.edges[2],
        ),
    )
    assert loops(covered, "vpc-a", ["198.18.0.250:7000"]) == [
        "route 192.168.1.0/24 of edge 'office' holds the endpoint 192.168.1.20:51820 of edge "
        "'vpc-b': installing it would route this edge's own tunnel or controller traffic "
        "into the tunnel (a loop)"
    ]
    # Its own endpoint inside a route of another edge is local to vpc-b, not a loop there;
    # its own routes are never installed, so they cannot loop at it either.
    assert loops(covered, "vpc-b", ["198.18.0.250:7000"]) == []
    assert loops(MAP, "vpc-a", ["198.18.0.250:7000"]) == []
