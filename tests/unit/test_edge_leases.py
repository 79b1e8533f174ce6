"""edge.leases: a map whose leases do not all verify is refused whole, naming the edge and
the route; routes whose lease ran out are left out; earliest_expiry says when to look again.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from nacl.bindings import crypto_box_seed_keypair

from edge.leases import LeaseError, drop_expired, earliest_expiry, verify_leases
from isthmus.endpoint import Endpoint
from isthmus.ids import EdgeName
from isthmus.keys import PublicKey
from isthmus.lease import Lease, sign_lease
from isthmus.routemap import EdgeEntry, RouteMap, parse_route
from isthmus.signing import ControllerKey

KEY = ControllerKey.from_seed(bytes(range(32)))
OTHER = ControllerKey.from_seed(bytes(range(1, 33)))
NOW = 1_800_000_000


def public(seed: int) -> PublicKey:
    return PublicKey(crypto_box_seed_keypair(bytes([seed]) * 32)[0])


def entry(
    name: str,
    seed: int,
    *routes: str,
    expires: int = NOW + 3600,
    key: ControllerKey = KEY,
) -> EdgeEntry:
    nets = tuple(parse_route(r) for r in routes)
    return EdgeEntry(
        EdgeName(name),
        public(seed),
        (Endpoint.parse(f"198.18.0.{seed}:51820"),),
        nets,
        tuple(sign_lease(key, public(seed), net, 5, expires) for net in nets),
    )


A = entry("vpc-a", 1, "10.244.0.0/16")
B = entry("vpc-b", 2, "10.245.0.0/16", "fd00:2::/64")
MAP = RouteMap(5, (A, B)).validate()


def refused(route_map: RouteMap) -> str:
    with pytest.raises(LeaseError) as info:
        verify_leases(route_map, KEY.public, NOW)
    return str(info.value)


def test_a_good_map_is_kept_as_it_is() -> None:
    assert verify_leases(MAP, KEY.public, NOW) == (MAP, ())
    assert earliest_expiry(MAP) == NOW + 3600
    assert earliest_expiry(RouteMap(0)) is None


def test_any_flipped_byte_of_any_lease_refuses_the_whole_map() -> None:
    for i, e in enumerate(MAP.edges):
        for j, lease in enumerate(e.leases):
            for pos in range(len(lease.signature)):
                sig = bytearray(lease.signature)
                sig[pos] ^= 0x01
                leases = list(e.leases)
                leases[j] = replace(lease, signature=bytes(sig))
                edges = list(MAP.edges)
                edges[i] = replace(e, leases=tuple(leases))
                message = refused(replace(MAP, edges=tuple(edges)))
                assert message.startswith(f"edge {e.name!r} route {e.routes[j]}: "), message
                assert "does not verify" in message


def test_changed_fields_under_a_lease_refuse_the_map() -> None:
    lease = B.leases[1]
    changes = {
        "version": replace(lease, version=lease.version + 1),
        "expires": replace(lease, expires=lease.expires + 86400),
        "short signature": replace(lease, signature=lease.signature[:63]),
    }
    for what, bad in changes.items():
        m = replace(MAP, edges=(A, replace(B, leases=(B.leases[0], bad))))
        assert refused(m).startswith("edge 'vpc-b' route fd00:2::/64: lease signature"), what
    # A route swapped for another one under the same lease.
    m = replace(MAP, edges=(A, replace(B, routes=(B.routes[0], parse_route("fd00:3::/64")))))
    assert refused(m).startswith("edge 'vpc-b' route fd00:3::/64: lease signature")


def test_a_lease_of_another_edge_key_or_controller_is_refused() -> None:
    # vpc-b's key replaced: its leases were signed for the old key.
    stolen = replace(B, public_key=public(9))
    assert refused(replace(MAP, edges=(A, stolen))).startswith(
        "edge 'vpc-b' route 10.245.0.0/16: lease signature does not verify"
    )
    # vpc-a's lease moved onto vpc-b's route.
    moved = replace(B, routes=(A.routes[0], B.routes[1]), leases=(A.leases[0], B.leases[1]))
    assert refused(replace(MAP, edges=(entry("vpc-c", 3), moved))).startswith(
        "edge 'vpc-b' route 10.244.0.0/16: lease signature"
    )
    # Signed by another controller key.
    forged = entry("vpc-b", 2, "10.245.0.0/16", key=OTHER)
    assert refused(replace(MAP, edges=(A, forged))).startswith(
        "edge 'vpc-b' route 10.245.0.0/16: lease signature does not verify against "
        "controller_public_key"
    )


def test_a_missing_lease_is_refused() -> None:
    assert refused(replace(MAP, edges=(A, replace(B, leases=B.leases[:1])))) == (
        "edge 'vpc-b' route fd00:2::/64: lease missing; every route needs a lease signed "
        "by the controller"
    )
    assert refused(replace(MAP, edges=(replace(A, leases=()), B))).startswith(
        "edge 'vpc-a' route 10.244.0.0/16: lease missing"
    )
    extra = replace(A, leases=(*A.leases, B.leases[0]))
    assert refused(replace(MAP, edges=(extra, B))) == (
        "edge 'vpc-a': 2 leases for 1 routes; allowed: one lease per route"
    )


def test_an_edge_without_routes_needs_no_lease() -> None:
    m = RouteMap(5, (A, entry("vpc-c", 3))).validate()
    assert verify_leases(m, KEY.public, NOW) == (m, ())


def test_expired_leases_drop_their_route_only() -> None:
    short = entry("vpc-b", 2, "10.245.0.0/16", expires=NOW + 10)
    mixed = replace(B, routes=(short.routes[0], B.routes[1]), leases=(short.leases[0], B.leases[1]))
    m = RouteMap(5, (A, mixed)).validate()
    assert earliest_expiry(m) == NOW + 10
    assert verify_leases(m, KEY.public, NOW + 10) == (m, ())  # void only after `expires`
    usable, dropped = verify_leases(m, KEY.public, NOW + 11)
    assert dropped == (("vpc-b", parse_route("10.245.0.0/16")),)
    assert usable == RouteMap(5, (A, replace(B, routes=(B.routes[1],), leases=(B.leases[1],))))
    assert earliest_expiry(usable) == NOW + 3600
    # drop_expired alone (for the periodic check) does the same without verifying.
    assert drop_expired(m, NOW + 11) == (usable, dropped)
    # Everything expired: the edges stay, with no routes.
    usable, dropped = verify_leases(m, KEY.public, NOW + 7200)
    assert [(e.name, e.routes, e.leases) for e in usable.edges] == [
        ("vpc-a", (), ()),
        ("vpc-b", (), ()),
    ]
    assert len(dropped) == 3
    assert earliest_expiry(usable) is None


def test_a_bad_lease_is_refused_even_when_expired() -> None:
    old = entry("vpc-b", 2, "10.245.0.0/16", expires=NOW - 10)
    bad = replace(old, leases=(Lease(5, NOW - 10, bytes(64)),))
    with pytest.raises(LeaseError, match=r"route 10\.245\.0\.0/16: lease signature"):
        verify_leases(RouteMap(5, (A, bad)), KEY.public, NOW)
