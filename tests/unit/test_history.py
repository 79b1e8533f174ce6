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
from isthmus.routemap import EdgeEntry, RouteMap
from isthmus.signing import ControllerKey
from isthmus.v1 import isthmus_pb2 as pb

CONTROLLER = ControllerKey.from_seed(bytes(range(32)))


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
    h = History(ms[0], depth=depth)
    for m in ms[1:]:
        h.add(m)
    return h, ms


def test_current_version_gets_an_empty_delta() -> None:
    h, ms = filled(256, 6)
    msg = pb.MapUpdate.FromString(h.update_for(6))
    assert (msg.full, msg.base_version, msg.version, list(msg.edges), list(msg.removed)) == (
        False,
        6,
        6,
        [],
        [],
    )
    assert patch(ms[5], decode(h.update_for(6))) == ms[5]  # type: ignore[arg-type]


@pytest.mark.parametrize("known", [1, 2, 3, 4, 5])
def test_a_known_older_version_gets_a_delta_that_patches_to_the_current_map(known: int) -> None:
    h, ms = filled(256, 6)
    update = decode(h.update_for(known))
    assert isinstance(update, MapDelta)
    assert (update.base_version, update.version) == (known, 6)
    assert patch(ms[known - 1], update) == ms[5]


def test_the_delta_carries_only_what_changed() -> None:
    h, _ = filled(256, 6)
    msg = pb.MapUpdate.FromString(h.update_for(3))
    assert [e.name for e in msg.edges] == ["vpc-a"]
    assert list(msg.removed) == ["vpc-b"]


@pytest.mark.parametrize("known", [0, 7, 1000])
def test_none_or_an_unknown_version_gets_the_whole_map(known: int) -> None:
    h, ms = filled(256, 6)
    assert decode(h.update_for(known)) == ms[5]
    assert pb.MapUpdate.FromString(h.update_for(known)).full


def test_versions_older_than_the_depth_are_forgotten() -> None:
    h, ms = filled(3, 6)
    assert h.versions == (4, 5, 6)
    assert not h.knows(3)
    assert decode(h.update_for(3)) == ms[5]  # pruned: whole map
    delta = decode(h.update_for(4))
    assert isinstance(delta, MapDelta)
    assert patch(ms[3], delta) == ms[5]


def test_an_older_or_equal_map_is_ignored() -> None:
    h, ms = filled(256, 4)
    h.add(ms[1])
    h.add(RouteMap(version=4))
    assert h.current == ms[3]
    assert h.versions == (1, 2, 3, 4)


def test_each_update_is_encoded_once_and_shared() -> None:
    h, ms = filled(256, 6)
    assert h.update(5, ms[5]) is h.update(5, ms[5])
    assert h.update_for(0) is h.update(1000, ms[5])  # both the whole map of version 6
    assert h.update(4, ms[5]) is not h.update(5, ms[5])


def test_a_pruned_target_is_still_encoded() -> None:
    h, ms = filled(2, 6)
    assert decode(h.update(0, ms[0])) == ms[0]  # a very slow watcher's map
    step = decode(h.update(5, ms[5]))
    assert isinstance(step, MapDelta) and (step.base_version, step.version) == (5, 6)


def test_the_memo_is_bounded() -> None:
    h, ms = filled(1, 6)  # depth 1: at most 4 encodings kept
    oldest = h.update(0, ms[0])
    for base in range(100, 120):  # unknown bases all share the whole map's encoding
        assert h.update(base, ms[0]) is oldest
    for m in ms[1:]:
        h.update(0, m)
    again = h.update(0, ms[0])
    assert again == oldest and again is not oldest  # evicted, encoded anew
