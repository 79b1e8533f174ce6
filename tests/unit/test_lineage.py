"""edge.lineage: which signed map an edge may take after the one it has."""

from __future__ import annotations

from dataclasses import replace

import pytest

from edge.lineage import MapRefused, admit
from isthmus.endpoint import Endpoint
from isthmus.ids import EdgeName
from isthmus.keys import PublicKey
from isthmus.lease import sign_lease
from isthmus.mapsig import SignedMap, new_epoch, sign_map
from isthmus.routemap import EdgeEntry, RouteMap, parse_route
from isthmus.signing import ControllerKey

KEY = ControllerKey.from_seed(bytes(range(32)))
IMPOSTOR = ControllerKey.from_seed(bytes(range(100, 132)))
E1 = new_epoch(1_700_000_000, lambda n: b"\x07" * n)
E2 = new_epoch(1_700_000_100, lambda n: b"\x01" * n)  # later
NONE = SignedMap(RouteMap(0))


def entry(name: str, seed: int, *routes: str) -> EdgeEntry:
    key = PublicKey(bytes([seed]) * 32)
    nets = tuple(parse_route(r) for r in routes)
    return EdgeEntry(
        EdgeName(name),
        key,
        (Endpoint.parse(f"198.18.0.{seed}:51820"),),
        nets,
        tuple(sign_lease(KEY, key, n, 1, 2_000_000_000) for n in nets),
    )


A = entry("vpc-a", 11, "10.244.0.0/16")
B = entry("vpc-b", 12, "10.245.0.0/16")


def signed(version: int, *edges: EdgeEntry, epoch: bytes = E1) -> SignedMap:
    return sign_map(KEY, epoch, RouteMap(version, edges))


def ok(have: SignedMap, candidate: SignedMap, full: bool = True) -> bool:
    return admit(have, candidate, full=full, controller_key=KEY.public)


def test_a_first_signed_map_is_taken() -> None:
    assert ok(NONE, signed(3, A, B))
    assert ok(NONE, signed(3, A, B), full=False)


def test_after_version_0_any_signed_map_is_taken() -> None:
    # Version 0: a controller with no stored state, whose epoch is not stored yet either.
    assert ok(signed(0, epoch=E2), signed(1, A, epoch=E1))
    assert ok(signed(0, epoch=E2), signed(0, epoch=E1))


def test_a_newer_version_of_the_same_epoch_is_taken() -> None:
    assert ok(signed(3, A, B), signed(4, A), full=False)


def test_the_same_signed_map_again_is_taken_another_at_that_version_is_nothing_new() -> None:
    have = signed(8, A, B)
    assert ok(have, signed(8, A, B))
    assert not ok(have, signed(8, A))


@pytest.mark.parametrize("full", [True, False])
def test_an_older_version_of_the_same_epoch_is_a_rollback(full: bool) -> None:
    with pytest.raises(MapRefused, match=r"older than version 8 .* a rollback"):
        ok(signed(8, A, B), signed(3, A, B), full=full)


def test_a_later_epoch_is_taken_whole_at_any_version() -> None:
    assert ok(signed(8, A, B), signed(3, A, epoch=E2))


def test_a_later_epoch_in_a_delta_is_refused() -> None:
    with pytest.raises(MapRefused, match="only a whole map may change the epoch"):
        ok(signed(8, A, B), signed(9, A, epoch=E2), full=False)


def test_an_earlier_epoch_is_a_rollback_whatever_its_version() -> None:
    with pytest.raises(MapRefused, match=r"created no later .* a rollback"):
        ok(signed(3, A, epoch=E2), signed(100, A, B, epoch=E1))


def test_an_unsigned_or_forged_map_is_refused() -> None:
    have = signed(3, A, B)
    with pytest.raises(MapRefused, match="not signed"):
        ok(have, SignedMap(RouteMap(4, (A,)), E1, b""))
    with pytest.raises(MapRefused, match="does not verify"):
        ok(have, sign_map(IMPOSTOR, E1, RouteMap(4, (A,))))
    forged = signed(4, A, B)
    altered = replace(B, endpoints=(Endpoint.parse("203.0.113.9:51820"),))
    with pytest.raises(MapRefused, match="does not verify"):
        ok(have, replace(forged, route_map=RouteMap(4, (A, altered))))
    with pytest.raises(MapRefused, match="does not verify"):
        ok(NONE, replace(forged, route_map=RouteMap(4, (A,))))  # an edge deleted
