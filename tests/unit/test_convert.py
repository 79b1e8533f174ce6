"""The pb <-> domain seam: round trips and hostile input."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.bindings import crypto_box_seed_keypair

from isthmus.convert import (
    MAX_ROUTES_PER_EDGE,
    Registration,
    WireError,
    map_from_pb,
    map_to_pb,
    registration_from_pb,
    registration_to_pb,
)
from isthmus.endpoint import Endpoint
from isthmus.ids import EdgeName
from isthmus.keys import PublicKey
from isthmus.routemap import EdgeEntry, RouteMap, parse_route
from isthmus.v1 import isthmus_pb2 as pb


def pk(seed: int) -> bytes:
    return bytes(crypto_box_seed_keypair(bytes([seed]) * 32)[0])


def sample_map() -> RouteMap:
    return RouteMap(
        7,
        (
            EdgeEntry(
                EdgeName("vpc-a"),
                PublicKey(pk(1)),
                (Endpoint.parse("198.18.0.11:51820"), Endpoint.parse("[fd00::1]:51820")),
                (parse_route("10.244.0.0/16"), parse_route("fd10::/64")),
            ),
            EdgeEntry(EdgeName("office"), PublicKey(pk(2)), (), (parse_route("172.16.0.0/24"),)),
        ),
    )


def test_map_round_trip() -> None:
    m = sample_map()
    wire = map_to_pb(m).SerializeToString()
    assert map_from_pb(pb.MapSnapshot.FromString(wire)) == m


def test_registration_round_trip() -> None:
    reg = Registration(
        EdgeName("vpc-a"),
        PublicKey(pk(1)),
        (Endpoint.parse("198.18.0.11:51820"),),
        (parse_route("10.244.0.0/16"),),
    )
    assert registration_from_pb(registration_to_pb(reg)) == reg


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda e: setattr(e, "name", "Bad Name"), "edges[0].name: 'Bad Name' is not a valid"),
        (lambda e: setattr(e, "public_key", b"short"), "edges[0].public_key: a public key is 32"),
        (lambda e: e.routes.append("10.1.2.3/8"), "edges[0].routes[2]: '10.1.2.3/8' is not a"),
        (lambda e: e.routes.append("10.244.0.0/16"), "edges[0].routes[2]: route 10.244.0.0/16"),
        (lambda e: e.endpoints.append("nowhere"), "edges[0].endpoints[2]: 'nowhere' is not an"),
        (lambda e: e.endpoints.append("1.2.3.4:0"), "edges[0].endpoints[2]: '1.2.3.4:0' is not"),
    ],
)
def test_hostile_fields_are_named(edit: object, message: str) -> None:
    msg = map_to_pb(sample_map())
    edit(msg.edges[0])  # type: ignore[operator]
    with pytest.raises(WireError) as info:
        map_from_pb(msg)
    assert str(info.value).startswith(message)


def test_overlap_in_snapshot_refused() -> None:
    msg = map_to_pb(sample_map())
    msg.edges[1].routes.append("10.244.1.0/24")
    with pytest.raises(WireError, match=r"edges: route 10\.244\.1\.0/24 of edge 'office' overlaps"):
        map_from_pb(msg)


def test_too_many_routes() -> None:
    msg = map_to_pb(sample_map())
    msg.edges[1].routes[:] = [f"10.{i // 256}.{i % 256}.0/24" for i in range(1001)]
    assert len(msg.edges[1].routes) > MAX_ROUTES_PER_EDGE
    with pytest.raises(WireError, match=r"edges\[1\].routes: 1001 routes; at most 1000"):
        map_from_pb(msg)


@given(st.binary(max_size=400))
def test_any_bytes_decode_or_raise_wire_error(data: bytes) -> None:
    try:
        msg = pb.MapSnapshot.FromString(data)
    except Exception:  # protobuf's DecodeError: not our seam
        return
    with contextlib.suppress(WireError):
        map_from_pb(msg)
