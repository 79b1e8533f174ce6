"""The pb <-> domain seam: round trips and hostile input."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.bindings import crypto_box_seed_keypair

from isthmus.convert import (
    MAX_EDGES,
    MAX_ENDPOINTS_PER_EDGE,
    MAX_ROUTES_PER_EDGE,
    Registration,
    WireError,
    delta_to_pb,
    map_from_pb,
    map_to_pb,
    registration_from_pb,
    registration_to_pb,
    update_from_pb,
)
from isthmus.endpoint import Endpoint
from isthmus.ids import EdgeName
from isthmus.keys import PublicKey
from isthmus.lease import U64_MAX, sign_lease, verify_lease
from isthmus.mapdelta import MapDelta, diff
from isthmus.routemap import EdgeEntry, RouteMap, parse_route
from isthmus.signing import ControllerKey
from isthmus.v1 import isthmus_pb2 as pb
from tests.unit.test_mapdelta import maps, successors

CONTROLLER = ControllerKey.from_seed(bytes([9]) * 32)


def pk(seed: int) -> PublicKey:
    return PublicKey(crypto_box_seed_keypair(bytes([seed]) * 32)[0])


def signed(name: str, key: PublicKey, endpoints: tuple[str, ...], *routes: str) -> EdgeEntry:
    nets = tuple(parse_route(r) for r in routes)
    return EdgeEntry(
        EdgeName(name),
        key,
        tuple(Endpoint.parse(e) for e in endpoints),
        nets,
        tuple(sign_lease(CONTROLLER, key, n, 7, 2_000_000_000) for n in nets),
    )


def sample_map() -> RouteMap:
    return RouteMap(
        7,
        (
            signed(
                "vpc-a",
                pk(1),
                ("198.18.0.11:51820", "[fd00::1]:51820"),
                "10.244.0.0/16",
                "fd10::/64",
            ),
            signed("office", pk(2), (), "172.16.0.0/24"),
        ),
    )


def test_map_round_trip() -> None:
    m = sample_map()
    msg = map_to_pb(m)
    assert msg.full and msg.base_version == 0 and not msg.removed
    decoded = map_from_pb(pb.MapUpdate.FromString(msg.SerializeToString()))
    assert decoded == m
    assert update_from_pb(msg) == m
    for e in decoded.edges:
        for route, lease in zip(e.routes, e.leases, strict=True):
            assert verify_lease(CONTROLLER.public, e.public_key, route, lease)


@given(maps())
def test_random_maps_round_trip(m: RouteMap) -> None:
    wire = map_to_pb(m).SerializeToString(deterministic=True)
    assert update_from_pb(pb.MapUpdate.FromString(wire)) == m


@given(successors())
def test_random_deltas_round_trip(pair: tuple[RouteMap, RouteMap]) -> None:
    delta = diff(*pair)
    msg = delta_to_pb(delta)
    assert not msg.full
    assert update_from_pb(pb.MapUpdate.FromString(msg.SerializeToString())) == delta


def test_empty_delta() -> None:
    msg = delta_to_pb(MapDelta(9, 9))
    assert msg.base_version == 9 and msg.version == 9 and not msg.edges
    assert update_from_pb(msg) == MapDelta(9, 9)


def test_registration_round_trip() -> None:
    reg = Registration(
        EdgeName("vpc-a"),
        pk(1),
        (Endpoint.parse("198.18.0.11:51820"),),
        (parse_route("10.244.0.0/16"),),
    )
    assert registration_from_pb(registration_to_pb(reg)) == reg


def _set_signature(e: pb.Edge, value: bytes) -> None:
    e.routes[0].lease.signature = value


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda e: setattr(e, "name", "Bad Name"), "edges[0].name: 'Bad Name' is not a valid"),
        (lambda e: setattr(e, "public_key", b"short"), "edges[0].public_key: a public key is 32"),
        (
            lambda e: e.routes.add(cidr="10.1.2.3/8"),
            "edges[0].routes[2].cidr: '10.1.2.3/8' is not a",
        ),
        (
            lambda e: e.routes.add(cidr="10.244.0.0/16"),
            "edges[0].routes[2].cidr: route 10.244.0.0/16 is listed twice",
        ),
        (
            lambda e: e.routes.add(cidr="10.9.0.0/16"),
            "edges[0].routes[2].lease: missing; every route of a map carries a lease",
        ),
        (
            lambda e: e.routes[1].ClearField("lease"),
            "edges[0].routes[1].lease: missing",
        ),
        (
            lambda e: _set_signature(e, b"x" * 12),
            "edges[0].routes[0].lease.signature: 12 bytes; expected 64",
        ),
        (
            lambda e: _set_signature(e, b""),
            "edges[0].routes[0].lease.signature: 0 bytes; expected 64",
        ),
        (lambda e: e.endpoints.append("nowhere"), "edges[0].endpoints[2]: 'nowhere' is not an"),
        (lambda e: e.endpoints.append("1.2.3.4:0"), "edges[0].endpoints[2]: '1.2.3.4:0' is not"),
    ],
)
@pytest.mark.parametrize("full", [True, False])
def test_hostile_fields_are_named(
    edit: Callable[[pb.Edge], None], message: str, full: bool
) -> None:
    m = sample_map()
    msg = map_to_pb(m) if full else delta_to_pb(MapDelta(6, 7, m.edges))
    edit(msg.edges[0])
    with pytest.raises(WireError) as info:
        update_from_pb(msg)
    assert str(info.value).startswith(message)


def test_same_prefix_at_two_edges_refused_in_a_full_map() -> None:
    msg = map_to_pb(sample_map())
    msg.edges[1].routes.add(cidr="10.244.0.0/16").lease.signature = bytes(64)
    with pytest.raises(
        WireError, match=r"^edges: route 10\.244\.0\.0/16 belongs to both edge 'vpc-a'"
    ):
        map_from_pb(msg)


def test_overlapping_routes_of_two_edges_decode() -> None:
    msg = map_to_pb(sample_map())
    msg.edges[1].routes.add(cidr="10.244.1.0/24").lease.signature = bytes(64)
    assert map_from_pb(msg).edge("office") is not None


def test_too_many_routes() -> None:
    msg = map_to_pb(sample_map())
    for i in range(MAX_ROUTES_PER_EDGE + 1):
        msg.edges[1].routes.add(cidr=f"10.{i // 256}.{i % 256}.0/24")
    with pytest.raises(WireError, match=r"^edges\[1\].routes: 1002 routes; at most 1000"):
        map_from_pb(msg)


def test_too_many_endpoints() -> None:
    msg = map_to_pb(sample_map())
    msg.edges[1].endpoints[:] = [f"192.0.2.{i}:1" for i in range(MAX_ENDPOINTS_PER_EDGE + 1)]
    with pytest.raises(WireError, match=r"^edges\[1\].endpoints: 9 endpoints; at most 8"):
        map_from_pb(msg)


def test_too_many_edges_and_removed_names() -> None:
    msg = pb.MapUpdate(version=2, full=False, base_version=1)
    msg.removed.extend(["x"] * (MAX_EDGES + 1))
    with pytest.raises(WireError, match=r"^removed: 10001 names; at most 10000"):
        update_from_pb(msg)
    msg = pb.MapUpdate(version=2, full=True)
    for _ in range(MAX_EDGES + 1):
        msg.edges.add()
    with pytest.raises(WireError, match=r"^edges: 10001 edges; at most 10000"):
        update_from_pb(msg)


def test_lease_numbers_keep_their_full_range() -> None:
    msg = map_to_pb(sample_map())
    msg.edges[0].routes[0].lease.version = U64_MAX
    msg.edges[0].routes[0].lease.expires = U64_MAX
    lease = map_from_pb(msg).edges[0].leases[0]
    assert (lease.version, lease.expires) == (U64_MAX, U64_MAX)


@pytest.mark.parametrize(
    ("msg", "message"),
    [
        (
            pb.MapUpdate(version=3, full=True, base_version=2),
            "base_version: 2 in a full map; allowed: 0",
        ),
        (pb.MapUpdate(version=3, full=True, removed=["a"]), "removed: 1 names in a full map"),
        (
            pb.MapUpdate(version=3, base_version=4),
            "base_version: 4 is above version 3; a delta never goes backwards",
        ),
        (pb.MapUpdate(version=3, base_version=2, removed=["A"]), "removed[0]: 'A' is not a valid"),
        (
            pb.MapUpdate(version=3, base_version=2, removed=["a", "b", "a"]),
            "removed[2]: edge 'a' is listed twice",
        ),
    ],
)
def test_bad_updates_are_named(msg: pb.MapUpdate, message: str) -> None:
    with pytest.raises(WireError) as info:
        update_from_pb(msg)
    assert str(info.value).startswith(message)


def test_delta_naming_an_edge_twice_is_refused() -> None:
    m = sample_map()
    msg = delta_to_pb(MapDelta(6, 7, (m.edges[0], m.edges[1], m.edges[0])))
    with pytest.raises(WireError, match=r"^edges\[2\].name: edge 'vpc-a' appears twice"):
        update_from_pb(msg)
    msg = delta_to_pb(MapDelta(6, 7, m.edges, (EdgeName("office"),)))
    with pytest.raises(WireError, match=r"^removed\[0\]: edge 'office' is both changed and"):
        update_from_pb(msg)


def test_map_from_pb_refuses_a_delta() -> None:
    with pytest.raises(WireError, match=r"^full: false; expected a whole map"):
        map_from_pb(delta_to_pb(MapDelta(1, 2)))


@given(st.binary(max_size=400))
def test_any_bytes_decode_or_raise_wire_error(data: bytes) -> None:
    try:
        msg = pb.MapUpdate.FromString(data)
    except Exception:  # protobuf's DecodeError: not our seam
        return
    with contextlib.suppress(WireError):
        update_from_pb(msg)


@given(maps(), st.data())
def test_any_mutation_of_a_good_map_decodes_or_raises_wire_error(
    m: RouteMap, data: st.DataObject
) -> None:
    wire = bytearray(map_to_pb(m).SerializeToString())
    if wire:
        i = data.draw(st.integers(0, len(wire) - 1))
        wire[i] = data.draw(st.integers(0, 255))
    try:
        msg = pb.MapUpdate.FromString(bytes(wire))
    except Exception:  # protobuf's DecodeError: not our seam
        return
    with contextlib.suppress(WireError):
        update_from_pb(msg)


@pytest.mark.parametrize(
    ("endpoint", "problem"),
    [
        ("127.0.0.1:51820", "'127.0.0.1:51820' is a loopback address (127.0.0.0/8)"),
        ("0.0.0.0:51820", "'0.0.0.0:51820' is the unspecified address (0.0.0.0/32)"),
        ("255.255.255.255:1", "'255.255.255.255:1' is the broadcast address (255.255.255.255/32)"),
        ("224.0.0.1:51820", "'224.0.0.1:51820' is a multicast address (224.0.0.0/4)"),
        ("240.0.0.1:51820", "'240.0.0.1:51820' is a reserved address (240.0.0.0/4)"),
        ("[::ffff:127.0.0.1]:1", "'[::ffff:7f00:1]:1' is an IPv4-mapped IPv6 address"),
        ("[fe80::1%eth0]:51820", "'[fe80::1%eth0]:51820' is a scoped address (%eth0)"),
        ("[2001:db8::1%2]:51820", "'[2001:db8::1%2]:51820' is a scoped address (%2)"),
    ],
)
def test_registration_endpoints_must_be_unicast(endpoint: str, problem: str) -> None:
    msg = registration_to_pb(
        Registration(EdgeName("vpc-a"), pk(1), (Endpoint.parse("198.18.0.11:51820"),), ())
    )
    msg.endpoints.append(endpoint)
    with pytest.raises(WireError) as e:
        registration_from_pb(msg)
    assert str(e.value).startswith(f"endpoints[1]: {problem}")
    assert str(e.value).endswith(
        "; allowed: a unicast address other edges can reach: not unspecified, loopback, "
        "link-local, multicast, broadcast or reserved (240.0.0.0/4), not IPv4-mapped "
        "(::ffff:0:0/96; write the IPv4 address), without a %zone"
    )
