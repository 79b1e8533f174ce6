"""controller.registry: state transitions, versions, leases and changes, with a fake signer.

The signer is a deterministic function of its inputs, so every lease can be checked for
exactly which (edge key, route, version, expires) it was signed with.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.bindings import crypto_box_seed_keypair

from controller.admission import Policy, Reason, RouteState
from controller.change import CHANGE_KINDS, Change
from controller.config import AllowedEdge, ControllerConfig
from controller.errors import AmbiguousRoute, KeyMismatch, NotPending, UnknownEdge, UnknownRoute
from controller.registry import Registry
from controller.state import State, dumps, loads
from controller.state_signature import Refusal, Signature
from isthmus.convert import Registration
from isthmus.endpoint import Endpoint
from isthmus.ids import EdgeName
from isthmus.keys import PublicKey
from isthmus.lease import Lease
from isthmus.routemap import Network

SERVING, PENDING, REFUSED = RouteState.SERVING, RouteState.PENDING, RouteState.REFUSED
TTL = 3600
STATE_DIR = Path("/var/lib/isthmus-controller")
T0 = 1_000_000.5


def key(seed: int) -> PublicKey:
    return PublicKey(crypto_box_seed_keypair(bytes([seed]) * 32)[0])


def net(text: str) -> Network:
    return ipaddress.ip_network(text)


def sign(edge_key: PublicKey, route: Network, version: int, expires: int) -> Lease:
    data = b"|".join((edge_key.raw, str(route).encode(), b"%d" % version, b"%d" % expires))
    return Lease(version, expires, hashlib.blake2b(data, digest_size=64).digest())


def allowed(name: str, seed: int, *routes: str) -> AllowedEdge:
    return AllowedEdge(EdgeName(name), key(seed), tuple(net(r) for r in routes))


A = allowed("vpc-a", 1, "10.0.0.0/8")
B = allowed("vpc-b", 2, "10.0.0.0/8", "fd00:b::/48")
R = allowed("rogue", 3, "10.0.0.0/8")


def config(*edges: AllowedEdge, ttl: int = TTL, policy: Policy | None = None) -> ControllerConfig:
    return ControllerConfig(
        listen=Endpoint.parse("192.0.2.1:7000"),
        state_dir=STATE_DIR,
        signing_key_file=STATE_DIR / "controller.key",
        admin_socket=STATE_DIR / "admin.sock",
        edges=edges or (A, B, R),
        lease_ttl=ttl,
        admission=policy or Policy(),
    )


def reg(name: str, seed: int, *routes: str, port: int = 51820) -> Registration:
    return Registration(
        EdgeName(name),
        key(seed),
        (Endpoint.parse(f"198.18.0.{seed}:{port}"),),
        tuple(net(r) for r in routes),
    )


def registry(*edges: AllowedEdge) -> Registry:
    r = Registry(State(), config(*edges), sign, (ipaddress.ip_address("192.0.2.1"),))
    assert r.apply_config(r.config, T0) == ()
    return r


def states(r: Registry) -> dict[tuple[str, str], RouteState]:
    return {(d.edge, str(d.route)): d.state for d in r.decisions}


def check_invariants(r: Registry) -> None:
    """Leases exist exactly for serving routes; the state survives its codec."""
    serving = {(d.edge, d.route) for d in r.decisions if d.state is SERVING}
    assert {(n, x) for n, x, _ in r.state.leases} == serving
    keys = {e.name: e.public_key for e in r.state.edges}
    for name, route, lease in r.state.leases:
        assert lease == sign(keys[name], route, lease.version, lease.expires)
        assert lease.version <= r.version
    assert loads(dumps(r.state)) == r.state
    r.snapshot().validate()


# --- register ------------------------------------------------------------------------------


def test_empty_registry_is_version_zero() -> None:
    r = registry()
    assert r.version == 0
    assert r.snapshot().version == 0
    assert r.snapshot().edges == ()
    assert r.decisions == ()


def test_register_serves_signs_and_reports() -> None:
    r = registry()
    decisions, changes = r.register(reg("vpc-b", 2, "10.97.0.0/16", "fd00:b::/64"), T0)
    assert r.version == 1
    assert [(str(d.route), d.state, d.since) for d in decisions] == [
        ("10.97.0.0/16", SERVING, 1),
        ("fd00:b::/64", SERVING, 1),
    ]
    assert changes == (
        Change(
            "edge_joined",
            EdgeName("vpc-b"),
            None,
            "edge 'vpc-b' joined (endpoints 198.18.0.2:51820)",
        ),
        Change(
            "route_serving",
            EdgeName("vpc-b"),
            net("10.97.0.0/16"),
            "route 10.97.0.0/16 of edge 'vpc-b' serves",
        ),
        Change(
            "route_serving",
            EdgeName("vpc-b"),
            net("fd00:b::/64"),
            "route fd00:b::/64 of edge 'vpc-b' serves",
        ),
    )
    m = r.snapshot()
    assert m.version == 1
    (entry,) = m.edges
    assert entry.routes == (net("10.97.0.0/16"), net("fd00:b::/64"))
    expires = int(T0) + TTL
    assert entry.leases == (
        sign(key(2), net("10.97.0.0/16"), 1, expires),
        sign(key(2), net("fd00:b::/64"), 1, expires),
    )
    check_invariants(r)


def test_decisions_come_back_in_registration_order() -> None:
    r = registry()
    decisions, _ = r.register(reg("vpc-a", 1, "10.9.0.0/16", "10.1.0.0/16", "10.9.0.0/16"), T0)
    assert [str(d.route) for d in decisions] == ["10.9.0.0/16", "10.1.0.0/16"]


def test_identical_reregister_changes_nothing() -> None:
    r = registry()
    r.register(reg("vpc-a", 1, "10.244.0.0/16", "10.96.0.0/16"), T0)
    before = r.state
    decisions, changes = r.register(reg("vpc-a", 1, "10.96.0.0/16", "10.244.0.0/16"), T0 + 50)
    assert changes == ()
    assert r.state is before
    assert r.version == 1
    assert {d.state for d in decisions} == {SERVING}


def test_changed_endpoint_bumps_version_and_keeps_leases() -> None:
    r = registry()
    r.register(reg("vpc-a", 1, "10.244.0.0/16"), T0)
    leases = r.state.leases
    _, changes = r.register(reg("vpc-a", 1, "10.244.0.0/16", port=51821), T0 + 10)
    assert r.version == 2
    assert r.state.leases == leases
    assert changes == (
        Change(
            "edge_updated", EdgeName("vpc-a"), None, "edge 'vpc-a' endpoints now 198.18.0.1:51821"
        ),
    )


def test_new_route_gets_the_new_version_as_since_old_ones_keep_theirs() -> None:
    r = registry()
    r.register(reg("vpc-a", 1, "10.1.0.0/16"), T0)
    r.register(reg("vpc-b", 2, "10.200.0.0/16"), T0)
    decisions, _ = r.register(reg("vpc-a", 1, "10.1.0.0/16", "10.2.0.0/16"), T0)
    assert [(str(d.route), d.since) for d in decisions] == [("10.1.0.0/16", 1), ("10.2.0.0/16", 3)]
    assert r.state.lease("vpc-a", net("10.2.0.0/16")) == sign(
        key(1), net("10.2.0.0/16"), 3, int(T0) + TTL
    )
    assert r.state.lease("vpc-a", net("10.1.0.0/16")).version == 1  # type: ignore[union-attr]


def test_withdrawn_route_loses_its_lease_and_is_reported() -> None:
    r = registry()
    r.register(reg("vpc-a", 1, "10.1.0.0/16", "10.2.0.0/16"), T0)
    _, changes = r.register(reg("vpc-a", 1, "10.1.0.0/16"), T0)
    assert r.version == 2
    assert changes == (
        Change(
            "route_withdrawn",
            EdgeName("vpc-a"),
            net("10.2.0.0/16"),
            "edge 'vpc-a' no longer advertises route 10.2.0.0/16",
        ),
    )
    assert [x for _, x, _ in r.state.leases] == [net("10.1.0.0/16")]
    check_invariants(r)


def test_unknown_edge_and_key_mismatch_change_nothing() -> None:
    r = registry()
    r.register(reg("vpc-a", 1, "10.1.0.0/16"), T0)
    before = r.state
    with pytest.raises(UnknownEdge) as e:
        r.register(reg("vpc-c", 4, "10.0.0.0/8"), T0)
    assert str(e.value) == "edge 'vpc-c' is not configured on this controller"
    with pytest.raises(KeyMismatch) as k:
        r.register(reg("vpc-a", 2, "10.1.0.0/16"), T0)
    assert str(k.value) == f"public key {key(2)} is not the key configured for edge 'vpc-a'"
    assert r.state is before


def test_routes_outside_the_allowed_ones_are_refused_not_an_error() -> None:
    r = registry()
    decisions, changes = r.register(reg("vpc-a", 1, "10.1.0.0/16", "192.168.0.0/24"), T0)
    assert [(d.state, d.reason) for d in decisions] == [
        (SERVING, Reason.NONE),
        (REFUSED, Reason.NOT_ALLOWED),
    ]
    assert changes[-1].kind == "route_refused"
    assert changes[-1].detail.startswith("192.168.0.0/24 is not inside the routes")
    assert [x for _, x, _ in r.state.leases] == [net("10.1.0.0/16")]


def test_overlay_uses_endpoints_and_the_controller_address() -> None:
    r = registry(allowed("vpc-a", 1, "0.0.0.0/0"), allowed("vpc-b", 2, "10.0.0.0/8"))
    r.register(reg("vpc-b", 2, "10.2.0.0/16"), T0)
    decisions, _ = r.register(reg("vpc-a", 1, "198.18.0.0/30", "192.0.2.0/24", "10.1.0.0/16"), T0)
    assert [(d.reason, d.detail.split(";")[0]) for d in decisions[:2]] == [
        (Reason.OVERLAY, "198.18.0.0/30 contains 198.18.0.1, an endpoint of edge 'vpc-a'"),
        (Reason.OVERLAY, "192.0.2.0/24 contains 192.0.2.1, the controller's address"),
    ]
    assert decisions[2].state is SERVING


# --- overlaps, approvals, withdrawal -------------------------------------------------------------


def test_more_specific_route_waits_then_approval_serves_it() -> None:
    r = registry()
    r.register(reg("vpc-b", 2, "10.97.0.0/16"), T0)
    decisions, changes = r.register(reg("rogue", 3, "10.97.1.0/24"), T0)
    assert r.version == 2
    (d,) = decisions
    assert (d.state, d.reason) == (PENDING, Reason.MORE_SPECIFIC)
    assert changes[-1] == Change("route_pending", EdgeName("rogue"), net("10.97.1.0/24"), d.detail)
    assert r.snapshot().edge("rogue").routes == ()  # type: ignore[union-attr]
    check_invariants(r)

    decision, changes = r.approve(net("10.97.1.0/24"), None, T0 + 5)
    assert r.version == 3
    assert (decision.state, decision.approved) == (SERVING, True)
    assert changes == (
        Change(
            "route_approved",
            EdgeName("rogue"),
            net("10.97.1.0/24"),
            "route 10.97.1.0/24 of edge 'rogue' approved by an operator; it serves",
        ),
    )
    assert r.state.approvals == ((EdgeName("rogue"), net("10.97.1.0/24")),)
    assert r.snapshot().edge("rogue").leases == (  # type: ignore[union-attr]
        sign(key(3), net("10.97.1.0/24"), 3, int(T0 + 5) + TTL),
    )
    # the covering route still serves, with its old lease
    assert states(r)[("vpc-b", "10.97.0.0/16")] is SERVING
    assert r.state.lease("vpc-b", net("10.97.0.0/16")).version == 1  # type: ignore[union-attr]
    check_invariants(r)


def test_approval_is_dropped_when_the_route_is_no_longer_advertised() -> None:
    r = registry()
    r.register(reg("vpc-b", 2, "10.97.0.0/16"), T0)
    r.register(reg("rogue", 3, "10.97.1.0/24"), T0)
    r.approve(net("10.97.1.0/24"), EdgeName("rogue"), T0)
    r.register(reg("rogue", 3), T0)
    assert r.state.approvals == ()
    decisions, _ = r.register(reg("rogue", 3, "10.97.1.0/24"), T0)
    assert decisions[0].state is PENDING


def test_withdrawing_the_covering_route_lets_the_pending_route_serve() -> None:
    r = registry()
    r.register(reg("vpc-b", 2, "10.97.0.0/16"), T0)
    r.register(reg("rogue", 3, "10.97.1.0/24"), T0)
    _, changes = r.register(reg("vpc-b", 2), T0 + 1)
    assert [c.kind for c in changes] == ["route_serving", "route_withdrawn"]
    assert states(r) == {("rogue", "10.97.1.0/24"): SERVING}
    assert r.state.lease("rogue", net("10.97.1.0/24")) == sign(
        key(3), net("10.97.1.0/24"), 3, int(T0 + 1) + TTL
    )
    # coming back, vpc-b's route is now the later one
    decisions, _ = r.register(reg("vpc-b", 2, "10.97.0.0/16"), T0 + 2)
    assert (decisions[0].state, decisions[0].reason) == (PENDING, Reason.LESS_SPECIFIC)
    check_invariants(r)


def test_approve_errors() -> None:
    r = registry()
    r.register(reg("vpc-b", 2, "10.97.0.0/16", "10.50.0.0/16"), T0)
    r.register(reg("rogue", 3, "10.97.1.0/24", "10.50.0.0/16", "10.60.0.0/16"), T0)
    r.register(reg("vpc-a", 1, "10.60.0.0/16"), T0)
    before = r.state
    cases: list[tuple[str, str | None, type[Exception], str]] = [
        ("10.99.0.0/16", None, UnknownRoute, "no edge advertises route 10.99.0.0/16"),
        (
            "10.97.1.0/24",
            "vpc-a",
            UnknownRoute,
            "edge 'vpc-a' does not advertise route 10.97.1.0/24",
        ),
        (
            "10.50.0.0/16",
            None,
            AmbiguousRoute,
            "route 10.50.0.0/16 is advertised by edges 'vpc-b', 'rogue'; name one with --edge",
        ),
        ("10.97.0.0/16", None, NotPending, "route 10.97.0.0/16 of edge 'vpc-b' is serving already"),
        (
            "10.50.0.0/16",
            "rogue",
            NotPending,
            "route 10.50.0.0/16 of edge 'rogue' is refused, not pending: 10.50.0.0/16 is already "
            "a serving route of edge 'vpc-b'; a prefix belongs to one edge only",
        ),
    ]
    for route, edge, error, message in cases:
        with pytest.raises(error) as e:
            r.approve(net(route), EdgeName(edge) if edge else None, T0)
        assert str(e.value) == message
    assert r.state is before
    r.approve(net("10.97.1.0/24"), None, T0)
    with pytest.raises(NotPending) as e:
        r.approve(net("10.97.1.0/24"), None, T0)
    assert str(e.value) == "route 10.97.1.0/24 of edge 'rogue' is serving already (approved)"


# --- apply_config --------------------------------------------------------------------------------


def test_apply_config_removes_unconfigured_and_rekeyed_edges() -> None:
    r = registry()
    r.register(reg("vpc-a", 1, "10.1.0.0/16"), T0)
    r.register(reg("vpc-b", 2, "10.2.0.0/16"), T0)
    r.register(reg("rogue", 3, "10.2.1.0/24"), T0)
    r.approve(net("10.2.1.0/24"), None, T0)
    changes = r.apply_config(config(A, allowed("vpc-b", 9, "10.0.0.0/8")), T0)
    assert r.version == 5
    assert changes == (
        Change("edge_removed", EdgeName("rogue"), None, "edge 'rogue' no longer configured"),
        Change(
            "edge_removed",
            EdgeName("vpc-b"),
            None,
            "edge 'vpc-b' its configured public key changed",
        ),
    )
    assert [e.name for e in r.state.edges] == ["vpc-a"]
    assert r.state.approvals == ()
    assert [n for n, _, _ in r.state.leases] == ["vpc-a"]
    assert r.allowed_key(key(2)) is None
    assert r.allowed_key(key(9)) == allowed("vpc-b", 9, "10.0.0.0/8")
    check_invariants(r)


def test_apply_config_re_decides_routes_now_outside_the_allowed_set() -> None:
    r = registry()
    r.register(reg("vpc-a", 1, "10.1.0.0/16", "10.2.0.0/16"), T0)
    changes = r.apply_config(config(allowed("vpc-a", 1, "10.1.0.0/16"), B, R), T0)
    assert r.version == 2
    assert [(c.kind, str(c.route)) for c in changes] == [("route_refused", "10.2.0.0/16")]
    assert states(r) == {("vpc-a", "10.1.0.0/16"): SERVING, ("vpc-a", "10.2.0.0/16"): REFUSED}
    # still advertised: allowing it again serves it without a new registration
    changes = r.apply_config(config(A, B, R), T0)
    assert r.version == 3
    assert [(c.kind, str(c.route)) for c in changes] == [("route_serving", "10.2.0.0/16")]
    check_invariants(r)


def test_apply_config_policy_change_without_state_change_keeps_version() -> None:
    r = registry()
    r.register(reg("vpc-b", 2, "10.97.0.0/16"), T0)
    r.register(reg("rogue", 3, "10.97.1.0/24"), T0)
    changes = r.apply_config(config(policy=Policy(more_specific=REFUSED)), T0)
    # the refused route loses its place in the first-come order: that is a state change
    assert r.version == 3
    assert r.state.edge("rogue").advertised[0].since is None  # type: ignore[union-attr]
    assert [(c.kind, str(c.route)) for c in changes] == [("route_refused", "10.97.1.0/24")]
    assert r.config.admission.more_specific is REFUSED
    assert r.apply_config(r.config, T0) == ()


def test_apply_config_signs_serving_routes_of_a_legacy_state() -> None:
    # the previous release stored admitted routes without leases
    old = loads(
        b'{"version": 4, "edges": [{"name": "vpc-a", "public_key": "%s", '
        b'"endpoints": ["198.18.0.1:51820"], "routes": ["10.1.0.0/16"]}]}'
        % key(1).to_base64().encode()
    )
    r = Registry(old, config(), sign)
    assert r.snapshot().edges[0].leases == ()
    r.apply_config(config(), T0)
    assert r.version == 5
    assert r.snapshot().edges[0].leases == (sign(key(1), net("10.1.0.0/16"), 5, int(T0) + TTL),)
    check_invariants(r)


# --- renew, adopt, copy --------------------------------------------------------------------------


def test_renew_re_signs_leases_with_less_than_half_left() -> None:
    r = registry()
    r.register(reg("vpc-a", 1, "10.1.0.0/16"), T0)
    r.register(reg("vpc-b", 2, "10.2.0.0/16"), T0 + TTL / 4)
    assert r.renew(T0 + TTL / 2 - 1) == ()
    assert r.version == 2
    changes = r.renew(T0 + TTL / 2 + 1)
    assert r.version == 3
    assert changes == (
        Change("leases_renewed", EdgeName("vpc-a"), None, "1 lease(s) of edge 'vpc-a' re-signed"),
    )
    now = T0 + TTL / 2 + 1
    assert r.state.lease("vpc-a", net("10.1.0.0/16")) == sign(
        key(1), net("10.1.0.0/16"), 3, int(now) + TTL
    )
    assert r.state.lease("vpc-b", net("10.2.0.0/16")).version == 2  # type: ignore[union-attr]
    # long after every lease expired: all re-signed at one version
    changes = r.renew(T0 + 10 * TTL)
    assert r.version == 4
    assert [c.edge for c in changes] == ["vpc-a", "vpc-b"]
    check_invariants(r)


def test_adopt_takes_only_newer_states() -> None:
    r = registry()
    r.register(reg("vpc-a", 1, "10.1.0.0/16"), T0)
    other = r.copy()
    other.register(reg("vpc-b", 2, "10.2.0.0/16"), T0)
    other.register(reg("rogue", 3, "10.2.1.0/24"), T0)
    assert r.version == 1 and other.version == 3
    stale = r.state
    assert r.adopt(other.state, signature=Signature.VALID) is None
    assert r.state == other.state
    assert r.decisions == other.decisions
    assert r.adopt(stale, signature=Signature.VALID) is Refusal.NOT_NEWER
    assert r.version == 3
    same_version = replace(other.state, edges=())
    assert r.adopt(same_version, signature=Signature.VALID) is Refusal.NOT_NEWER  # ignored
    assert r.state == other.state


def test_adopt_refuses_a_state_the_controller_key_did_not_sign() -> None:
    r = registry()
    r.register(reg("vpc-a", 1, "10.1.0.0/16"), T0)
    r.register(reg("rogue", 3, "10.1.1.0/24"), T0)  # pending: more specific, later
    assert [d.state for d in r.decisions] == [RouteState.SERVING, RouteState.PENDING]
    current = r.state
    rogue = current.edge("rogue")
    assert rogue is not None
    # Jump the queue: rogue's route advertised since before vpc-a's.
    earlier = replace(
        current,
        version=current.version + 1,
        edges=tuple(
            replace(e, advertised=tuple(replace(a, since=0) for a in e.advertised))
            if e.name == "rogue"
            else e
            for e in current.edges
        ),
    )
    # Approve it without an operator.
    approved = replace(
        current, version=current.version + 1, approvals=((rogue.name, rogue.routes[0]),)
    )
    harmless = replace(current, version=current.version + 1)
    for candidate, signature, why in (
        (earlier, Signature.MISSING, Refusal.SINCE_LOWERED),
        (earlier, Signature.INVALID, Refusal.SINCE_LOWERED),
        (approved, Signature.MISSING, Refusal.APPROVAL_ADDED),
        (approved, Signature.INVALID, Refusal.APPROVAL_ADDED),
        (harmless, Signature.MISSING, Refusal.UNSIGNED),
        (harmless, Signature.INVALID, Refusal.BAD_SIGNATURE),
    ):
        assert r.adopt(candidate, signature=signature) is why, (candidate, signature)
        assert r.state == current
        assert [d.state for d in r.decisions] == [RouteState.SERVING, RouteState.PENDING]
    # The same documents signed by the key came from a replica: taken.
    assert r.adopt(approved, signature=Signature.VALID) is None
    assert r.state == approved
    assert [d.state for d in r.decisions] == [RouteState.SERVING, RouteState.SERVING]


def test_copy_is_independent() -> None:
    r = registry()
    r.register(reg("vpc-a", 1, "10.1.0.0/16"), T0)
    c = r.copy()
    c.register(reg("vpc-b", 2, "10.2.0.0/16"), T0)
    c.apply_config(config(A), T0)
    assert r.version == 1
    assert [e.name for e in r.state.edges] == ["vpc-a"]
    assert r.allowed_key(key(2)) == B


# --- a random walk: versions, leases and decisions stay consistent ------------------------------

ROUTES = ["10.0.0.0/8", "10.1.0.0/16", "10.1.1.0/24", "10.2.0.0/16", "10.1.0.0/16", "fd00:b::/64"]
EDGES = [("vpc-a", 1), ("vpc-b", 2), ("rogue", 3)]
OPS = st.one_of(
    st.tuples(
        st.just("register"),
        st.integers(0, 2),
        st.lists(st.sampled_from(ROUTES), max_size=4),
        st.integers(51820, 51821),
    ),
    st.tuples(st.just("approve"), st.integers(0, 2), st.sampled_from(ROUTES)),
    st.tuples(st.just("renew"), st.integers(0, 3 * TTL)),
    st.tuples(st.just("config"), st.sets(st.integers(0, 2)), st.sampled_from([PENDING, REFUSED])),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(OPS, max_size=12))
def test_random_walk_keeps_the_invariants(ops: list[tuple[object, ...]]) -> None:
    r = registry()
    now = T0
    for op in ops:
        before = r.state
        now += 60
        match op:
            case ("register", int(i), list(routes), int(port)):
                name, seed = EDGES[i]
                if r.allowed_key(key(seed)) is None:
                    with pytest.raises(UnknownEdge):
                        r.register(reg(name, seed, *routes, port=port), now)
                    continue
                _, changes = r.register(reg(name, seed, *routes, port=port), now)
            case ("approve", int(i), str(route)):
                try:
                    _, changes = r.approve(net(route), EdgeName(EDGES[i][0]), now)
                except (UnknownRoute, NotPending):
                    assert r.state is before
                    continue
            case ("renew", int(dt)):
                now += dt
                changes = r.renew(now)
            case ("config", set(which), RouteState() as more):
                edges = tuple((A, B, R)[i] for i in sorted(which))
                changes = r.apply_config(config(*edges, policy=Policy(more_specific=more)), now)
            case _:
                raise AssertionError(op)
        assert all(c.kind in CHANGE_KINDS for c in changes)
        if r.state != before:
            assert r.version == before.version + 1
            assert changes
            assert all(lease.version <= r.version for _, _, lease in r.state.leases)
            new = set(r.state.leases) - set(before.leases)
            assert all(lease.version == r.version for _, _, lease in new)
        else:
            assert r.version == before.version
        check_invariants(r)
        # nothing holds a lease with less than half its lifetime left right after renew
        if op[0] == "renew":
            assert all(lease.expires - now >= TTL / 2 for _, _, lease in r.state.leases)


def test_a_registration_without_endpoints_is_accepted() -> None:
    """An edge behind NAT registers no endpoint: it serves, and its map entry has none."""
    r = registry()
    nat = replace(reg("vpc-b", 2, "10.97.0.0/16"), endpoints=())
    decisions, changes = r.register(nat, T0)
    assert [(str(d.route), d.state) for d in decisions] == [("10.97.0.0/16", SERVING)]
    assert changes[0] == Change(
        "edge_joined", EdgeName("vpc-b"), None, "edge 'vpc-b' joined (endpoints none)"
    )
    (entry,) = r.snapshot().edges
    assert entry.endpoints == () and entry.routes == (net("10.97.0.0/16"),)
    # A later registration with an endpoint (or back without) replaces it, as any other.
    r.register(reg("vpc-b", 2, "10.97.0.0/16"), T0)
    assert r.snapshot().edges[0].endpoints == (Endpoint.parse("198.18.0.2:51820"),)
    r.register(nat, T0)
    assert r.snapshot().edges[0].endpoints == ()
    check_invariants(r)
