"""Map deltas: diff and patch, against random maps, and every refusal of patch."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from nacl.bindings import crypto_box_seed_keypair

from isthmus.endpoint import Endpoint
from isthmus.ids import EdgeName
from isthmus.keys import PublicKey
from isthmus.lease import U64_MAX, Lease
from isthmus.mapdelta import MapDelta, diff, patch
from isthmus.routemap import EdgeEntry, MapError, Network, RouteMap, parse_route

_KEYS = [PublicKey(crypto_box_seed_keypair(bytes([s + 1]) * 32)[0]) for s in range(24)]
_ROUTES = (
    [parse_route(f"10.{i}.0.0/16") for i in range(6)]
    + [parse_route(f"10.0.{i}.0/24") for i in range(6)]
    + [parse_route(f"fd{i:02x}::/64") for i in range(4)]
    + [parse_route("0.0.0.0/0"), parse_route("192.0.2.7/32")]
)
_ENDPOINTS = [Endpoint.parse(t) for t in ("198.18.0.1:51820", "[fd00::1]:7", "10.1.1.1:1")]

leases = st.builds(
    Lease,
    st.integers(0, U64_MAX),
    st.integers(0, U64_MAX),
    st.binary(min_size=64, max_size=64),
)


@st.composite
def maps(draw: st.DrawFn, version: int | None = None) -> RouteMap:
    """A valid map: edges sorted by name, every route with a lease, no prefix twice."""
    indexes = sorted(draw(st.sets(st.integers(0, 7), max_size=6)))
    pool: list[Network] = list(draw(st.permutations(_ROUTES)))
    edges = []
    for i in indexes:
        routes = tuple(pool.pop() for _ in range(draw(st.integers(0, min(3, len(pool))))))
        edges.append(
            EdgeEntry(
                name=EdgeName(f"edge-{i}"),
                public_key=_KEYS[i * 3 + draw(st.integers(0, 2))],
                endpoints=tuple(draw(st.lists(st.sampled_from(_ENDPOINTS), max_size=2))),
                routes=routes,
                leases=tuple(draw(leases) for _ in routes),
            )
        )
    v = draw(st.integers(0, U64_MAX)) if version is None else version
    return RouteMap(version=v, edges=tuple(edges)).validate()


def entry(name: str, key: int, *routes: str) -> EdgeEntry:
    return EdgeEntry(EdgeName(name), _KEYS[key], (), tuple(parse_route(r) for r in routes))


BASE = RouteMap(
    5,
    (entry("a", 0, "10.0.0.0/16"), entry("b", 1, "10.1.0.0/16"), entry("c", 2, "10.2.0.0/16")),
)


@st.composite
def successors(draw: st.DrawFn) -> tuple[RouteMap, RouteMap]:
    """A map and a later one sharing some edges, like two versions the controller sends."""
    old = draw(maps(version=draw(st.integers(0, 2**32))))
    other = draw(maps())
    pick = {e.name: e for e in old.edges}
    for e in other.edges:
        choice = draw(st.sampled_from(("keep", "replace", "drop")))
        if choice == "replace" or (choice == "keep" and e.name not in pick):
            pick[e.name] = e
        elif choice == "drop":
            pick.pop(e.name, None)
    new = RouteMap(old.version + draw(st.integers(0, 3)), tuple(pick[n] for n in sorted(pick)))
    try:
        new.validate()
    except MapError:
        assume(False)
    return old, new


@given(successors())
def test_patch_of_diff_gives_the_new_map(pair: tuple[RouteMap, RouteMap]) -> None:
    old, new = pair
    delta = diff(old, new)
    assert delta.base_version == old.version and delta.version == new.version
    assert patch(old, delta) == new


@given(maps(), maps())
def test_patch_of_diff_of_unrelated_maps(old: RouteMap, new: RouteMap) -> None:
    delta = diff(old, new)
    if new.version >= old.version:
        assert patch(old, delta) == new
    else:
        with pytest.raises(MapError, match="goes backwards"):
            patch(old, delta)


@given(successors())
def test_diff_carries_only_what_changed(pair: tuple[RouteMap, RouteMap]) -> None:
    old, new = pair
    delta = diff(old, new)
    before = {e.name: e for e in old.edges}
    after = {e.name: e for e in new.edges}
    assert [e.name for e in delta.upserts] == sorted(n for n in after if before.get(n) != after[n])
    assert list(delta.removed) == sorted(set(before) - set(after))
    assert diff(old, old).empty
    assert delta.empty == (old.edges == new.edges)


def test_patch_changes_adds_and_removes() -> None:
    changed = entry("b", 1, "10.1.0.0/16", "10.9.0.0/16")
    added = entry("aa", 3, "10.3.0.0/16")
    delta = MapDelta(5, 6, (added, changed), (EdgeName("c"),))
    assert patch(BASE, delta) == RouteMap(6, (BASE.edges[0], added, changed))


def test_empty_delta_moves_the_version_only() -> None:
    assert patch(BASE, MapDelta(5, 5)) == BASE
    assert patch(BASE, MapDelta(5, 9)) == RouteMap(9, BASE.edges)


def test_patch_sorts_edges_by_name() -> None:
    unsorted = RouteMap(1, (entry("z", 0), entry("a", 1)))
    assert [e.name for e in patch(unsorted, MapDelta(1, 2)).edges] == ["a", "z"]


@pytest.mark.parametrize(
    ("delta", "message"),
    [
        (MapDelta(4, 6), "the delta is from version 4, but the map it applies to is version 5"),
        (MapDelta(5, 4), "the delta goes backwards from version 5 to 4"),
        (MapDelta(5, 6, (), (EdgeName("x"),)), "removes edge 'x', which version 5 does not"),
        (MapDelta(5, 6, (), (EdgeName("a"), EdgeName("a"))), "removes edge 'a' twice"),
        (MapDelta(5, 6, (entry("d", 3), entry("d", 4))), "changes edge 'd' twice"),
        (MapDelta(5, 6, (entry("a", 0),), (EdgeName("a"),)), "both changes and removes edge 'a'"),
        (MapDelta(5, 6, (entry("d", 0),)), "edges 'a' and 'd' have the same public key"),
        (MapDelta(5, 6, (entry("d", 3, "10.1.0.0/16"),)), "route 10.1.0.0/16 belongs to both"),
    ],
)
def test_patch_refusals(delta: MapDelta, message: str) -> None:
    with pytest.raises(MapError) as info:
        patch(BASE, delta)
    assert message in str(info.value)
