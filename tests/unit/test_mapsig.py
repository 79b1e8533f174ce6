"""isthmus.mapsig: the canonical encoding is injective on changes; sign and verify."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isthmus.endpoint import Endpoint
from isthmus.ids import EdgeName
from isthmus.keys import PublicKey
from isthmus.lease import Lease
from isthmus.mapsig import (
    EPOCH_LEN,
    SignedMap,
    canonical,
    epoch_created_ms,
    epoch_text,
    map_digest,
    map_message,
    new_epoch,
    sign_map,
    verify_map,
)
from isthmus.routemap import EdgeEntry, Network, RouteMap
from isthmus.signing import ControllerKey

KEY = ControllerKey.from_seed(bytes(range(32)))
OTHER = ControllerKey.from_seed(bytes(range(1, 33)))
EPOCH = new_epoch(1_700_000_000.5, lambda n: bytes(range(n)))

names = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True).map(EdgeName)
keys = st.binary(min_size=32, max_size=32).filter(lambda b: b[0] not in (0, 1, 0xE0, 0x5F))
endpoints = st.builds(
    Endpoint,
    st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)),
    st.integers(1, 65535),
)
v4 = st.builds(
    lambda a, p: ipaddress.IPv4Network((a, p), strict=False),
    st.integers(0, 2**32 - 1),
    st.integers(0, 32),
)
v6 = st.builds(
    lambda a, p: ipaddress.IPv6Network((a, p), strict=False),
    st.integers(0, 2**128 - 1),
    st.integers(0, 128),
)
leases = st.builds(
    Lease, st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.binary(min_size=64, max_size=64)
)


@st.composite
def entries(draw: st.DrawFn) -> EdgeEntry:
    routes: list[Network] = draw(st.lists(st.one_of(v4, v6), max_size=3, unique=True))
    signed = draw(st.booleans())
    return EdgeEntry(
        name=draw(names),
        public_key=PublicKey(draw(keys)),
        endpoints=tuple(draw(st.lists(endpoints, max_size=2))),
        routes=tuple(routes),
        leases=tuple(draw(leases) for _ in routes) if signed else (),
    )


@st.composite
def maps(draw: st.DrawFn) -> RouteMap:
    edges = draw(st.lists(entries(), min_size=1, max_size=3, unique_by=lambda e: e.name))
    return RouteMap(draw(st.integers(0, 2**64 - 1)), tuple(sorted(edges, key=lambda e: e.name)))


CHANGES = (
    "add_edge",
    "drop_edge",
    "name",
    "key",
    "endpoint",
    "endpoint_port",
    "route",
    "lease",
    "lease_version",
    "lease_expires",
    "lease_signature",
)


def mutate(draw: st.DrawFn, m: RouteMap, what: str | None = None) -> RouteMap:
    """`m` with exactly one thing changed (`what`, or one drawn): an edge added or removed,
    or one field of one edge, endpoint, route or lease (a route when the edge has no
    lease)."""
    edges = list(m.edges)
    i = draw(st.integers(0, len(edges) - 1))
    e = edges[i]
    if what is None:
        what = draw(st.sampled_from(CHANGES))
    if what == "add_edge":
        new = draw(entries().filter(lambda x: x.name not in {y.name for y in edges}))
        return replace(m, edges=(*edges, new))
    if what == "drop_edge":
        return replace(m, edges=tuple(edges[:i] + edges[i + 1 :]))
    if what == "name":
        name = draw(names.filter(lambda n: n not in {y.name for y in edges}))
        edges[i] = replace(e, name=name)
    elif what == "key":
        edges[i] = replace(
            e, public_key=PublicKey(draw(keys.filter(lambda k: k != e.public_key.raw)))
        )
    elif what == "endpoint_port" and e.endpoints:
        j = draw(st.integers(0, len(e.endpoints) - 1))
        old_ep = e.endpoints[j]
        port = draw(st.integers(1, 65535).filter(lambda p: p != old_ep.port))
        eps = list(e.endpoints)
        eps[j] = Endpoint(old_ep.ip, port)
        edges[i] = replace(e, endpoints=tuple(eps))
    elif what in ("endpoint", "endpoint_port"):
        eps = list(e.endpoints)
        if eps and draw(st.booleans()):
            j = draw(st.integers(0, len(eps) - 1))
            if draw(st.booleans()):
                del eps[j]
            else:
                eps[j] = draw(endpoints.filter(lambda x: x != eps[j]))
        else:
            eps.append(draw(endpoints))
        edges[i] = replace(e, endpoints=tuple(eps))
    elif what == "route" or not e.leases:
        routes = list(e.routes)
        ls = list(e.leases)
        if routes and draw(st.booleans()):
            j = draw(st.integers(0, len(routes) - 1))
            if draw(st.booleans()):
                del routes[j]
                if ls:
                    del ls[j]
            else:
                routes[j] = draw(st.one_of(v4, v6).filter(lambda r: r not in routes))
        else:
            routes.append(draw(st.one_of(v4, v6).filter(lambda r: r not in routes)))
            if ls:
                ls.append(draw(leases))
        edges[i] = replace(e, routes=tuple(routes), leases=tuple(ls))
    elif what == "lease":
        j = draw(st.integers(0, len(e.leases) - 1))
        ls = list(e.leases)
        ls[j] = draw(leases.filter(lambda x: x != ls[j]))
        edges[i] = replace(e, leases=tuple(ls))
    else:
        j = draw(st.integers(0, len(e.leases) - 1))
        ls = list(e.leases)
        field = what.removeprefix("lease_")
        old = getattr(ls[j], field)
        if field == "signature":
            k = draw(st.integers(0, 63))
            new_value: object = old[:k] + bytes([old[k] ^ 1]) + old[k + 1 :]
        else:
            new_value = old ^ 1
        ls[j] = replace(ls[j], **{field: new_value})
        edges[i] = replace(e, leases=tuple(ls))
    return replace(m, edges=tuple(edges))


@pytest.mark.parametrize("what", CHANGES)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_changing_any_field_of_any_edge_route_or_lease_changes_the_digest(
    what: str, data: st.DataObject
) -> None:
    m = data.draw(maps())
    changed = mutate(data.draw, m, what)
    assert changed != m
    assert canonical(changed) != canonical(m)
    assert map_digest(changed) != map_digest(m)


@settings(max_examples=100, deadline=None)
@given(maps())
def test_the_encoding_ignores_the_order_edges_come_in(m: RouteMap) -> None:
    shuffled = replace(m, edges=tuple(reversed(m.edges)))
    assert map_digest(shuffled) == map_digest(m)


@settings(max_examples=50, deadline=None)
@given(maps())
def test_sign_and_verify_round_trip(m: RouteMap) -> None:
    signed = sign_map(KEY, EPOCH, m)
    assert signed == SignedMap(m, EPOCH, signed.signature) and len(signed.signature) == 64
    assert verify_map(KEY.public, signed)
    assert sign_map(KEY, EPOCH, m) == signed  # deterministic: one signature per map
    assert not verify_map(OTHER.public, signed)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_a_tampered_map_fails(data: st.DataObject) -> None:
    m = data.draw(maps())
    signed = sign_map(KEY, EPOCH, m)
    assert not verify_map(KEY.public, replace(signed, route_map=mutate(data.draw, m)))


def test_version_epoch_and_signature_are_bound() -> None:
    m = RouteMap(8)
    signed = sign_map(KEY, EPOCH, m)
    assert not verify_map(KEY.public, replace(signed, route_map=RouteMap(3)))
    later = new_epoch(1_700_000_001, lambda n: bytes(n))
    assert not verify_map(KEY.public, replace(signed, epoch=later))
    sig = bytearray(signed.signature)
    sig[5] ^= 0x40
    assert not verify_map(KEY.public, replace(signed, signature=bytes(sig)))
    assert not verify_map(KEY.public, replace(signed, signature=b""))
    assert not verify_map(KEY.public, replace(signed, epoch=b""))
    assert not verify_map(KEY.public, SignedMap(m, EPOCH, b"x" * 64))


@given(st.binary(max_size=40), st.integers(-5, 2**65), st.binary(max_size=80))
def test_verify_never_raises(epoch: bytes, version: int, signature: bytes) -> None:
    assert not verify_map(KEY.public, SignedMap(RouteMap(max(version, 0)), epoch, signature))


def test_the_message_layout() -> None:
    digest = map_digest(RouteMap(7))
    msg = map_message(EPOCH, 7, digest)
    assert msg == b"isthmus map v1\0" + EPOCH + (7).to_bytes(8, "big") + digest
    with pytest.raises(ValueError):
        map_message(EPOCH[:15], 7, digest)
    with pytest.raises(ValueError):
        map_message(EPOCH, 2**64, digest)
    with pytest.raises(ValueError):
        map_message(EPOCH, 7, digest[:31])


def test_epochs_carry_their_creation_time_and_later_ones_compare_greater() -> None:
    assert len(EPOCH) == EPOCH_LEN
    assert epoch_created_ms(EPOCH) == 1_700_000_000_500
    assert EPOCH[8:] == bytes(range(8))
    earlier = new_epoch(1_699_999_999.999, lambda n: b"\xff" * n)
    assert epoch_created_ms(earlier) < epoch_created_ms(EPOCH) and earlier < EPOCH
    assert epoch_created_ms(b"") == 0 and epoch_text(b"") == "-"
    assert epoch_text(EPOCH) == bytes(range(4)).hex()  # the first half of the random part
    assert new_epoch(1.0) != new_epoch(1.0)  # the random half
