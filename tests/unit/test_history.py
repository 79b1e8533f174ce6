"""controller.history: what a watcher at some version gets, and that encodings are shared."""

from __future__ import annotations

import ipaddress

import nacl.bindings
import pytest

from controller.history import History
from isthmus.convert import update_from_pb
from isthmus.endpoint import Endpoint
from isthmus.ids import EdgeName
from isthmus.keys import PublicKey
from isthmus.lease import sign_lease
from isthmus.mapdelta import MapDelta, patch
from isthmus.mapsig import SignedMap, new_epoch, sign_map, verify_map
from isthmus.routemap import EdgeEntry, RouteMap
from isthmus.signing import ControllerKey
from isthmus.v1 import isthmus_pb2 as pb

CONTROLLER = ControllerKey.from_seed(bytes(range(32)))
EPOCH = new_epoch(1_700_000_000, lambda n: b"\x01" * n)
LATER = new_epoch(1_700_000_001, lambda n: b"\x02" * n)


def key(seed: int) -> PublicKey:
    pk, _ = nacl.bindings.crypto_box_seed_keypair(bytes([seed]) * 32)
    return PublicKey(pk)


def entry(name: str, seed: int, version: int, *routes: str, port: int = 51820) -> EdgeEntry:
    nets = tuple(ipaddress.ip_network(r) for r in routes)
    return EdgeEntry(
        name=EdgeName(name),
        public_key=key(seed),
        endpoints=(Endpoint.parse(f"198.18.0.{seed}:{port}"),),
        routes=nets,
        leases=tuple(sign_lease(CONTROLLER, key(seed), n, version, 2_000_000_000) for n in nets),
    )


def maps(n: int) -> list[RouteMap]:
    """Versions 1..n: vpc-a from 1, moving each version; vpc-b from 2 until 5."""
    out = []
    for v in range(1, n + 1):
        edges = [entry("vpc-a", 1, v, "10.244.0.0/16", port=v)]
        if 2 <= v < 5:
            edges.append(entry("vpc-b", 2, 2, "10.245.0.0/16"))
        out.append(RouteMap(version=v, edges=tuple(edges)))
    return out


def decode(data: bytes) -> RouteMap | MapDelta:
    return update_from_pb(pb.MapUpdate.FromString(data))


def filled(depth: int, n: int) -> tuple[History, list[RouteMap]]:
    ms = maps(n)
    h = History(CONTROLLER, EPOCH, ms[0], depth=depth)
    for m in ms[1:]:
        h.add(m, EPOCH)
    return h, ms


def signed(m: RouteMap, epoch: bytes = EPOCH) -> SignedMap:
    return sign_map(CONTROLLER, epoch, m)


def test_current_version_gets_an_empty_delta() -> None:
    h, ms = filled(256, 6)
    msg = pb.MapUpdate.FromString(h.update_for(6, EPOCH))
    assert (msg.full, msg.base_version, msg.version, list(msg.edges), list(msg.removed)) == (
        False,
        6,
        6,
        [],
        [],
    )
    assert patch(ms[5], decode(h.update_for(6, EPOCH))) == ms[5]  # type: ignore[arg-type]


@pytest.mark.parametrize("known", [1, 2, 3, 4, 5])
def test_a_known_older_version_gets_a_delta_that_patches_to_the_current_map(known: int) -> None:
    h, ms = filled(256, 6)
    update = decode(h.update_for(known, EPOCH))
    assert isinstance(update, MapDelta)
    assert (update.base_version, update.version) == (known, 6)
    assert patch(ms[known - 1], update) == ms[5]


def test_the_delta_carries_only_what_changed() -> None:
    h, _ = filled(256, 6)
    msg = pb.MapUpdate.FromString(h.update_for(3, EPOCH))
    assert [e.name for e in msg.edges] == ["vpc-a"]
    assert list(msg.removed) == ["vpc-b"]


@pytest.mark.parametrize("known", [0, 7, 1000])
def test_none_or_an_unknown_version_gets_the_whole_map(known: int) -> None:
    h, ms = filled(256, 6)
    assert decode(h.update_for(known, EPOCH)) == ms[5]
    assert pb.MapUpdate.FromString(h.update_for(known, EPOCH)).full


def test_versions_older_than_the_depth_are_forgotten() -> None:
    h, ms = filled(3, 6)
    assert h.versions == (4, 5, 6)
    assert not h.knows(3)
    assert decode(h.update_for(3, EPOCH)) == ms[5]  # pruned: whole map
    delta = decode(h.update_for(4, EPOCH))
    assert isinstance(delta, MapDelta)
    assert patch(ms[3], delta) == ms[5]


def test_an_older_or_equal_map_is_ignored() -> None:
    h, ms = filled(256, 4)
    h.add(ms[1], EPOCH)
    h.add(RouteMap(version=4), EPOCH)
    assert h.current.route_map == ms[3]
    assert h.versions == (1, 2, 3, 4)


def test_each_update_is_encoded_once_and_shared() -> None:
    h, _ = filled(256, 6)
    six = h.current
    assert h.update(5, EPOCH, six) is h.update(5, EPOCH, six)
    assert h.update_for(0, EPOCH) is h.update(1000, EPOCH, six)  # both the whole map of 6
    assert h.update(4, EPOCH, six) is not h.update(5, EPOCH, six)


def test_a_pruned_target_is_still_encoded() -> None:
    h, ms = filled(2, 6)
    assert decode(h.update(0, EPOCH, signed(ms[0]))) == ms[0]  # a very slow watcher's map
    step = decode(h.update(5, EPOCH, h.current))
    assert isinstance(step, MapDelta) and (step.base_version, step.version) == (5, 6)


def test_the_memo_is_bounded() -> None:
    h, ms = filled(1, 6)  # depth 1: at most 4 encodings kept
    first = signed(ms[0])
    oldest = h.update(0, EPOCH, first)
    for base in range(100, 120):  # unknown bases all share the whole map's encoding
        assert h.update(base, EPOCH, first) is oldest
    for m in ms[1:]:
        h.update(0, EPOCH, signed(m))
    again = h.update(0, EPOCH, first)
    assert again == oldest and again is not oldest  # evicted, encoded anew


def seal(data: bytes) -> tuple[bytes, bytes, int]:
    msg = pb.MapUpdate.FromString(data)
    return msg.epoch, msg.signature, msg.version


@pytest.mark.parametrize("known", [0, 3, 6, 7])
def test_every_update_carries_the_signature_of_the_whole_map_it_makes(known: int) -> None:
    h, ms = filled(256, 6)
    epoch, signature, version = seal(h.update_for(known, EPOCH))
    assert (epoch, version) == (EPOCH, 6)
    assert verify_map(CONTROLLER.public, SignedMap(ms[5], epoch, signature))
    assert h.current == SignedMap(ms[5], epoch, signature)


def test_a_watcher_of_another_epoch_gets_the_whole_map_whatever_its_version() -> None:
    h, ms = filled(256, 6)
    for known in (3, 6):
        msg = pb.MapUpdate.FromString(h.update_for(known, LATER))
        assert msg.full and msg.epoch == EPOCH
        assert decode(h.update_for(known, b"")) == ms[5]


def test_a_map_of_another_epoch_starts_the_history_afresh_even_at_a_lower_version() -> None:
    h, ms = filled(256, 6)
    fresh = h.add(ms[1], LATER)
    assert h.current is fresh and h.epoch == LATER and h.versions == (2,)
    assert verify_map(CONTROLLER.public, fresh) and fresh.route_map == ms[1]
    msg = pb.MapUpdate.FromString(h.update_for(6, EPOCH))  # the old lineage's version 6
    assert msg.full and (msg.version, msg.epoch) == (2, LATER)


def test_each_version_is_signed_once() -> None:
    h, ms = filled(256, 3)
    three = h.current
    assert h.add(ms[2], EPOCH) is three  # the same version again: the same signed map
