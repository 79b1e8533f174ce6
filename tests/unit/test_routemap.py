"""Route parsing, overlap, duplicate detection and map validation, with brute-force models."""

from __future__ import annotations

import ipaddress
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.bindings import crypto_box_seed_keypair

from isthmus.endpoint import Endpoint
from isthmus.ids import EdgeName
from isthmus.keys import PublicKey
from isthmus.lease import Lease
from isthmus.routemap import (
    EdgeEntry,
    MapError,
    Network,
    RouteMap,
    first_duplicate,
    overlaps,
    parse_route,
)


def key(seed: int) -> PublicKey:
    return PublicKey(crypto_box_seed_keypair(bytes([seed]) * 32)[0])


def edge(name: str, seed: int, *routes: str) -> EdgeEntry:
    return EdgeEntry(
        EdgeName(name),
        key(seed),
        (Endpoint.parse(f"198.18.0.{seed}:51820"),),
        tuple(parse_route(r) for r in routes),
    )


def test_parse_route_accepts_networks() -> None:
    assert parse_route("10.244.0.0/16") == ipaddress.ip_network("10.244.0.0/16")
    assert parse_route("fd00::/64") == ipaddress.ip_network("fd00::/64")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("10.244.0.1/16", "has host bits set"),
        ("10.244.0.0", "is not a route"),
        ("10.0.0/8x", "is not a route"),
        (42, "is not a route"),
    ],
)
def test_parse_route_rejects(text: object, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment) as info:
        parse_route(text)
    assert "e.g. 10.244.0.0/16" in str(info.value)


def test_valid_map() -> None:
    m = RouteMap(
        3,
        (
            edge("vpc-a", 1, "10.244.0.0/16", "10.96.0.0/16"),
            edge("vpc-b", 2, "10.245.0.0/16", "10.97.0.0/16"),
        ),
    )
    assert m.validate() is m
    assert m.edge("vpc-b") is m.edges[1]
    assert m.edge("nope") is None
    assert len(list(m.routes())) == 4


def test_overlapping_routes_of_different_edges_are_allowed() -> None:
    m = RouteMap(
        1,
        (
            edge("vpc-a", 1, "10.0.0.0/8"),
            edge("vpc-b", 2, "10.245.0.0/16"),
            edge("vpc-c", 3, "10.245.1.0/24", "0.0.0.0/0"),
        ),
    )
    assert m.validate() is m


def test_same_prefix_at_two_edges_is_refused_naming_both() -> None:
    m = RouteMap(
        1, (edge("vpc-a", 1, "10.0.0.0/8"), edge("vpc-b", 2, "10.245.0.0/16", "10.0.0.0/8"))
    )
    with pytest.raises(MapError) as info:
        m.validate()
    assert str(info.value) == (
        "route 10.0.0.0/8 belongs to both edge 'vpc-a' and edge 'vpc-b'; "
        "a prefix may belong to one edge only"
    )


def test_same_prefix_in_other_family_is_no_duplicate() -> None:
    RouteMap(1, (edge("vpc-a", 1, "0.0.0.0/0"), edge("vpc-b", 2, "::/0"))).validate()


def lease(version: int) -> Lease:
    return Lease(version=version, expires=1_000_000, signature=bytes([version]) * 64)


def test_leases_absent_or_one_per_route() -> None:
    e = edge("vpc-a", 1, "10.0.0.0/8", "10.1.0.0/16")
    RouteMap(1, (e,)).validate()
    signed = EdgeEntry(e.name, e.public_key, e.endpoints, e.routes, (lease(1), lease(1)))
    RouteMap(1, (signed,)).validate()
    for leases in ((lease(1),), (lease(1), lease(1), lease(1))):
        bad = EdgeEntry(e.name, e.public_key, e.endpoints, e.routes, leases)
        with pytest.raises(MapError) as info:
            RouteMap(1, (bad,)).validate()
        assert str(info.value) == (
            f"edge 'vpc-a' has {len(leases)} leases for 2 routes; "
            "leases must be absent or one per route"
        )


def test_negative_version_refused() -> None:
    with pytest.raises(MapError, match="version -1 is negative"):
        RouteMap(-1).validate()


def test_overlap_within_one_edge_is_allowed() -> None:
    RouteMap(1, (edge("vpc-a", 1, "10.0.0.0/8", "10.1.0.0/16"),)).validate()


def test_duplicate_name_and_key() -> None:
    with pytest.raises(MapError, match="edge 'a' appears twice"):
        RouteMap(1, (edge("a", 1), edge("a", 2))).validate()
    with pytest.raises(MapError, match="edges 'a' and 'b' have the same public key"):
        RouteMap(1, (edge("a", 1), edge("b", 1))).validate()


@given(st.integers(0, 1023), st.integers(22, 32), st.integers(0, 1023), st.integers(22, 32))
def test_overlaps_matches_shared_addresses(a: int, pa: int, b: int, pb: int) -> None:
    base = int(ipaddress.ip_address("10.0.0.0"))
    net_a = ipaddress.ip_network((base + a * 4, pa), strict=False)
    net_b = ipaddress.ip_network((base + b * 4, pb), strict=False)
    assert overlaps(net_a, net_b) == bool(set(net_a) & set(net_b)) == overlaps(net_b, net_a)


def test_overlaps_never_crosses_families() -> None:
    assert not overlaps(parse_route("0.0.0.0/0"), parse_route("::/0"))
    assert not overlaps(parse_route("::ffff:10.0.0.0/104"), parse_route("10.0.0.0/8"))


@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(6, 8), st.sampled_from("abc")),
        max_size=12,
    )
)
def test_first_duplicate_matches_brute_force(raw: list[tuple[int, int, str]]) -> None:
    pairs: list[tuple[Network, str]] = [
        (ipaddress.ip_network(f"10.{x}.0.0/{p}", strict=False), owner) for x, p, owner in raw
    ]
    entries = {o: edge(o, i + 1) for i, o in enumerate("abc")}
    found = first_duplicate((net, entries[o]) for net, o in pairs)
    brute = any(a[1] != b[1] and a[0] == b[0] for a, b in itertools.combinations(pairs, 2))
    assert (found is not None) == brute
    if found is not None:
        (n1, e1), (n2, e2) = found
        assert n1 == n2 and e1.name != e2.name


def test_low_order_key_refused() -> None:
    with pytest.raises(ValueError, match="low-order"):
        PublicKey(bytes(32))
