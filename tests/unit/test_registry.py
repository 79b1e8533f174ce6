"""controller.registry: admission rules, versions, config changes, and a Hypothesis model."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import nacl.bindings
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from controller.config import AllowedEdge
from controller.errors import KeyMismatch, RouteConflict, RouteNotAllowed, UnknownEdge
from controller.registry import (
    REASON_KEY_CHANGED,
    REASON_NOT_ALLOWED,
    REASON_UNCONFIGURED,
    Registry,
    Withdrawn,
)
from isthmus.convert import Registration
from isthmus.endpoint import Endpoint
from isthmus.ids import EdgeName
from isthmus.keys import PublicKey
from isthmus.routemap import EdgeEntry, MapError, Network, RouteMap


def key(seed: int) -> PublicKey:
    pk, _ = nacl.bindings.crypto_box_seed_keypair(bytes([seed]) * 32)
    return PublicKey(pk)


def net(text: str) -> Network:
    return ipaddress.ip_network(text)


def allowed(name: str, seed: int, *routes: str) -> AllowedEdge:
    return AllowedEdge(EdgeName(name), key(seed), tuple(net(r) for r in routes))


def reg(name: str, seed: int, *routes: str, port: int = 51820) -> Registration:
    return Registration(
        EdgeName(name),
        key(seed),
        (Endpoint.parse(f"198.18.0.{seed}:{port}"),),
        tuple(net(r) for r in routes),
    )


A = allowed("vpc-a", 1, "10.244.0.0/16", "10.96.0.0/16")
B = allowed("vpc-b", 2, "10.245.0.0/16", "fd00:b::/48")


def registry(*edges: AllowedEdge) -> Registry:
    r = Registry()
    assert r.apply_config(edges or (A, B)) == ()
    return r


def test_empty_registry_is_version_zero() -> None:
    r = registry()
    assert r.snapshot() == RouteMap(version=0)


def test_admit_and_snapshot() -> None:
    r = registry()
    assert r.register(reg("vpc-b", 2, "10.245.1.0/24")) == 1
    assert r.register(reg("vpc-a", 1, "10.96.0.0/16", "10.244.0.0/16")) == 2
    snap = r.snapshot()
    assert snap.version == 2
    assert [e.name for e in snap.edges] == ["vpc-a", "vpc-b"]
    # routes in canonical order whatever order they were advertised in
    assert snap.edges[0].routes == (net("10.96.0.0/16"), net("10.244.0.0/16"))
    assert snap.edges[0].endpoints == (Endpoint.parse("198.18.0.1:51820"),)


def test_identical_reregister_keeps_version() -> None:
    r = registry()
    assert r.register(reg("vpc-a", 1, "10.244.0.0/16", "10.96.0.0/16")) == 1
    assert r.register(reg("vpc-a", 1, "10.96.0.0/16", "10.244.0.0/16")) == 1
    assert r.version == 1


def test_changed_endpoint_or_routes_bumps_version() -> None:
    r = registry()
    assert r.register(reg("vpc-a", 1, "10.244.0.0/16")) == 1
    assert r.register(reg("vpc-a", 1, "10.244.0.0/16", port=51821)) == 2
    assert r.register(reg("vpc-a", 1, "10.244.0.0/24")) == 3
    assert r.register(reg("vpc-a", 1)) == 4
    assert r.snapshot().edges[0].routes == ()


def test_unknown_edge() -> None:
    r = registry()
    with pytest.raises(UnknownEdge) as e:
        r.register(reg("vpc-c", 3, "10.0.0.0/8"))
    assert str(e.value) == "edge 'vpc-c' is not configured on this controller"


def test_key_mismatch() -> None:
    r = registry()
    with pytest.raises(KeyMismatch) as e:
        r.register(reg("vpc-a", 2, "10.244.0.0/16"))
    assert str(e.value) == (f"public key {key(2)} is not the key configured for edge 'vpc-a'")


def test_route_not_allowed_names_route_and_allowed_ones() -> None:
    r = registry()
    with pytest.raises(RouteNotAllowed) as e:
        r.register(reg("vpc-a", 1, "10.244.0.0/16", "10.0.0.0/8"))
    assert str(e.value) == (
        "route 10.0.0.0/8 is not inside the routes allowed for edge 'vpc-a'; "
        "allowed: 10.244.0.0/16, 10.96.0.0/16"
    )


def test_route_not_allowed_when_nothing_is() -> None:
    r = registry(allowed("vpc-a", 1))
    with pytest.raises(RouteNotAllowed) as e:
        r.register(reg("vpc-a", 1, "10.0.0.0/8"))
    assert str(e.value).endswith("; allowed: none")


def test_ipv4_route_is_not_inside_an_ipv6_one() -> None:
    r = registry(allowed("vpc-a", 1, "::/0"))
    with pytest.raises(RouteNotAllowed):
        r.register(reg("vpc-a", 1, "10.0.0.0/8"))


def test_conflict_with_another_edges_admitted_route() -> None:
    # config.parse refuses overlapping allowed routes; the registry checks anyway.
    r = registry(allowed("vpc-a", 1, "10.0.0.0/8"), allowed("vpc-b", 2, "10.0.0.0/8"))
    r.register(reg("vpc-a", 1, "10.1.0.0/16"))
    with pytest.raises(RouteConflict) as e:
        r.register(reg("vpc-b", 2, "10.2.0.0/16", "10.0.0.0/12"))
    assert str(e.value) == (
        "route 10.0.0.0/12 overlaps route 10.1.0.0/16 admitted for edge 'vpc-a'"
    )
    # an edge's own earlier routes never conflict with its new ones
    assert r.register(reg("vpc-a", 1, "10.0.0.0/8")) == 2


def test_refusal_is_all_or_nothing() -> None:
    r = registry()
    r.register(reg("vpc-a", 1, "10.244.0.0/16"))
    before = r.snapshot()
    with pytest.raises(RouteNotAllowed):
        r.register(reg("vpc-a", 1, "10.96.0.0/16", "10.97.0.0/16"))
    assert r.snapshot() == before


def test_apply_config_unchanged_keeps_version() -> None:
    r = registry()
    r.register(reg("vpc-a", 1, "10.244.0.0/16"))
    assert r.apply_config((A, B)) == ()
    assert r.version == 1


def test_apply_config_withdraws_unconfigured_edge() -> None:
    r = registry()
    r.register(reg("vpc-a", 1, "10.244.0.0/16"))
    r.register(reg("vpc-b", 2, "10.245.0.0/16"))
    assert r.apply_config((B,)) == (
        Withdrawn(EdgeName("vpc-a"), (net("10.244.0.0/16"),), REASON_UNCONFIGURED, True),
    )
    assert r.version == 3
    assert [e.name for e in r.snapshot().edges] == ["vpc-b"]
    with pytest.raises(UnknownEdge):
        r.register(reg("vpc-a", 1, "10.244.0.0/16"))


def test_apply_config_withdraws_edge_whose_key_changed() -> None:
    r = registry()
    r.register(reg("vpc-a", 1, "10.244.0.0/16"))
    (w,) = r.apply_config((allowed("vpc-a", 9, "10.244.0.0/16"), B))
    assert (w.edge, w.reason, w.whole_edge) == ("vpc-a", REASON_KEY_CHANGED, True)
    assert r.snapshot() == RouteMap(version=2)
    assert r.register(reg("vpc-a", 9, "10.244.0.0/16")) == 3


def test_apply_config_withdraws_routes_no_longer_allowed() -> None:
    r = registry()
    r.register(reg("vpc-a", 1, "10.244.0.0/16", "10.96.0.0/16"))
    w = r.apply_config((allowed("vpc-a", 1, "10.96.0.0/12"), B))
    assert w == (Withdrawn(EdgeName("vpc-a"), (net("10.244.0.0/16"),), REASON_NOT_ALLOWED, False),)
    (entry,) = r.snapshot().edges
    assert entry.routes == (net("10.96.0.0/16"),)
    assert r.version == 2


def test_apply_config_refuses_duplicates_and_stays_unchanged() -> None:
    r = registry()
    with pytest.raises(ValueError, match="configured twice"):
        r.apply_config((A, A))
    with pytest.raises(ValueError, match="key of another"):
        r.apply_config((A, allowed("vpc-c", 1)))
    assert r.allowed("vpc-b") == B


def test_stored_state_is_restored_then_reconciled() -> None:
    stored = RouteMap(
        version=41,
        edges=(
            EdgeEntry(EdgeName("gone"), key(7), (), (net("192.168.0.0/24"),)),
            EdgeEntry(EdgeName("vpc-a"), key(1), (), (net("10.244.0.0/16"),)),
        ),
    )
    r = Registry(stored)
    assert r.snapshot() == stored
    (w,) = r.apply_config((A, B))
    assert w.edge == "gone"
    assert r.version == 42
    assert [e.name for e in r.snapshot().edges] == ["vpc-a"]


def test_invalid_stored_state_is_refused() -> None:
    bad = RouteMap(
        version=1,
        edges=(
            EdgeEntry(EdgeName("a"), key(1), (), (net("10.0.0.0/8"),)),
            EdgeEntry(EdgeName("b"), key(2), (), (net("10.1.0.0/16"),)),
        ),
    )
    with pytest.raises(MapError):
        Registry(bad)


def test_copy_is_independent() -> None:
    r = registry()
    c = r.copy()
    c.register(reg("vpc-a", 1, "10.244.0.0/16"))
    c.apply_config((A,))
    assert r.version == 0 and r.snapshot() == RouteMap(version=0)
    assert r.allowed("vpc-b") == B


# --- a Hypothesis model: any sequence of calls keeps the map rules and the version monotonic

ROUTE_POOL = [  # nested on purpose, so edges' routes often overlap
    "10.0.0.0/8",
    "10.0.0.0/16",
    "10.0.1.0/24",
    "10.1.0.0/16",
    "192.168.0.0/24",
    "fd00::/8",
    "fd00:1::/32",
]
NAMES = ["e0", "e1", "e2"]


@dataclass(frozen=True)
class Register:
    name: int
    seed: int
    routes: frozenset[int]
    port: int


@dataclass(frozen=True)
class Apply:
    # per configured edge: (name index, key seed, allowed route indexes); may overlap across
    # edges (config.parse would refuse that; the registry must stay consistent regardless)
    edges: tuple[tuple[int, int, frozenset[int]], ...]


register_st = st.builds(
    Register,
    st.sampled_from([0, 1, 2] * 3 + [3]),  # 3: a name not configured
    st.sampled_from([1, 1, 1, 2]),  # mostly the configured key
    st.frozensets(st.integers(0, len(ROUTE_POOL) - 1), min_size=1, max_size=2),
    st.integers(1, 3),
)


def apply_st(all_edges: bool = False) -> st.SearchStrategy[Apply]:
    edge = st.tuples(
        st.sampled_from([1, 1, 1, 2]),
        st.frozensets(st.integers(0, len(ROUTE_POOL) - 1), min_size=1, max_size=5),
    )
    present = st.just(True) if all_edges else st.sampled_from([True, True, True, False])
    return st.builds(
        lambda per_name: Apply(
            tuple((n, seed, rs) for n, (keep, (seed, rs)) in enumerate(per_name) if keep)
        ),
        st.lists(st.tuples(present, edge), min_size=len(NAMES), max_size=len(NAMES)),
    )


def _seed_key(name: int, seed: int) -> PublicKey:
    # distinct per (name, seed) so configured keys are unique among edges
    return key(name * 10 + seed)


@settings(max_examples=300, deadline=None)
@given(
    apply_st(all_edges=True),
    st.lists(st.one_of(register_st, register_st, register_st, apply_st()), min_size=3, max_size=30),
)
def test_any_sequence_keeps_map_rules_and_monotonic_version(
    first: Apply, ops: list[Register | Apply]
) -> None:
    r = Registry()
    version = r.version
    for op in [first, *ops]:
        before = r.snapshot()
        match op:
            case Register(name=n, seed=seed, routes=routes, port=port):
                name = NAMES[n] if n < len(NAMES) else "unknown"
                request = Registration(
                    EdgeName(name),
                    _seed_key(n, seed),
                    (Endpoint.parse(f"198.18.0.1:{port}"),),
                    tuple(net(ROUTE_POOL[i]) for i in sorted(routes)),
                )
                try:
                    got = r.register(request)
                except (UnknownEdge, KeyMismatch, RouteNotAllowed, RouteConflict) as e:
                    event(f"register refused: {type(e).__name__}")
                    assert r.snapshot() == before  # all or nothing
                else:
                    event("register admitted")
                    assert got == r.version
                    entry = r.snapshot().edge(name)
                    assert entry is not None
                    assert set(entry.routes) == set(request.routes)
                    assert entry.endpoints == request.endpoints
                    assert (got == before.version) == (before.edge(name) == entry)
            case Apply(edges=edges):
                conf = tuple(
                    AllowedEdge(
                        EdgeName(NAMES[n]),
                        _seed_key(n, seed),
                        tuple(net(ROUTE_POOL[i]) for i in sorted(rs)),
                    )
                    for n, seed, rs in edges
                )
                withdrawn = r.apply_config(conf)
                event(f"apply_config withdrew: {bool(withdrawn)}")
                assert (r.version == before.version + 1) == bool(withdrawn)
                assert bool(withdrawn) or r.snapshot() == before
        snap = r.snapshot()  # validates: unique names and keys, no overlap between edges
        snap.validate()
        assert snap.version >= version
        version = snap.version
        for entry in snap.edges:
            conf_edge = r.allowed(entry.name)
            assert conf_edge is not None
            assert conf_edge.public_key == entry.public_key
            for route in entry.routes:
                assert any(
                    route.version == a.version and route.subnet_of(a)  # type: ignore[arg-type]
                    for a in conf_edge.routes
                )
