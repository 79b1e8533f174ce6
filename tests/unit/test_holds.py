"""controller.registry and controller.admission against squatting: a refused route holds no
place, a withdrawn (or re-keyed) admitted route is held for its edge's name, and an endpoint
inside another edge's route is refused at registration. Helpers from test_registry."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.admission import Policy, Reason, RouteState
from controller.change import CHANGE_KINDS, Change
from controller.errors import InvalidRequest
from controller.registry import Registry
from controller.state import Advertised, EdgeRecord, Hold, State
from isthmus.convert import Registration
from isthmus.endpoint import Endpoint
from isthmus.ids import EdgeName
from tests.unit.test_registry import (
    T0,
    A,
    B,
    R,
    allowed,
    check_invariants,
    config,
    net,
    reg,
    sign,
)

SERVING, PENDING, REFUSED = RouteState.SERVING, RouteState.PENDING, RouteState.REFUSED
HOLD = 600
C = allowed("vpc-c", 4, "10.0.0.0/8")


def registry(hold: int = HOLD) -> Registry:
    r = Registry(State(), config(A, B, R, C, policy=Policy(hold_time=hold)), sign)
    r.apply_config(r.config, T0)
    return r


def decision(r: Registry, edge: str, route: str) -> tuple[RouteState, Reason, str, int]:
    for d in r.decisions:
        if d.edge == edge and str(d.route) == route:
            return d.state, d.reason, d.detail, d.since
    raise AssertionError(f"{edge} does not advertise {route}")


def at(r: Registry, ip: str, name: str, seed: int, *routes: str) -> Registration:
    """A registration of `name` with its endpoint at `ip`."""
    return replace(reg(name, seed, *routes), endpoints=(Endpoint.parse(f"{ip}:51820"),))


def check_places(r: Registry) -> None:
    """A route has a place exactly when it is admitted; deciding the stored state again
    gives the same decisions (a restart or another replica agrees)."""
    places = {(e.name, a.route): a.since for e in r.state.edges for a in e.advertised}
    for d in r.decisions:
        assert (places[(d.edge, d.route)] is None) == (d.state is REFUSED), d
        if d.state is not REFUSED:
            assert places[(d.edge, d.route)] == d.since
    again = Registry(r.state, r.config, sign)
    assert set(again.decisions) == set(r.decisions)


# --- a refused route holds no place -------------------------------------------------------


def test_a_refused_route_holds_no_place() -> None:
    # vpc-c claims vpc-a's route first, rogue later; both refused. When vpc-a gives it up
    # (no hold), both are newcomers: the edge name decides, not who was refused first.
    r = registry(0)
    r.register(reg("vpc-a", 1, "10.97.0.0/16"), T0)
    r.register(reg("vpc-c", 4, "10.97.0.0/16"), T0)
    r.register(reg("rogue", 3, "10.97.0.0/16"), T0)
    assert decision(r, "vpc-c", "10.97.0.0/16")[:2] == (REFUSED, Reason.EXACT)
    assert decision(r, "rogue", "10.97.0.0/16")[3] == 0
    assert r.state.edge("vpc-c").advertised[0].since is None  # type: ignore[union-attr]
    r.register(reg("vpc-a", 1), T0)
    assert decision(r, "rogue", "10.97.0.0/16")[:2] == (SERVING, Reason.NONE)
    assert decision(r, "rogue", "10.97.0.0/16")[3] == r.version
    assert decision(r, "vpc-c", "10.97.0.0/16")[:2] == (REFUSED, Reason.EXACT)
    check_places(r)


def test_a_route_admitted_again_starts_a_new_place() -> None:
    r = registry(0)
    r.register(reg("vpc-b", 2, "10.97.0.0/16"), T0)  # v1
    r.register(reg("rogue", 3, "10.97.1.0/24"), T0)  # v2, pending
    r.apply_config(config(A, B, R, C, policy=Policy(more_specific=REFUSED)), T0)  # v3
    assert decision(r, "rogue", "10.97.1.0/24")[:2] == (REFUSED, Reason.MORE_SPECIFIC)
    r.apply_config(config(A, B, R, C), T0)  # v4: pending again, from now on
    assert decision(r, "rogue", "10.97.1.0/24")[0] is PENDING
    assert decision(r, "rogue", "10.97.1.0/24")[3] == 4 == r.version
    check_places(r)


# --- holds ----------------------------------------------------------------------------------


def test_a_withdrawn_route_is_held_for_its_edge() -> None:
    r = registry()
    r.register(reg("vpc-a", 1, "10.97.0.0/16", "10.96.0.0/16"), T0)
    r.register(reg("rogue", 3, "10.97.0.0/16", "10.97.1.0/24", "10.0.0.0/8"), T0)
    _, changes = r.register(reg("vpc-a", 1, "10.96.0.0/16"), T0 + 10)
    until = int(T0 + 10) + HOLD
    assert r.state.holds == (Hold(EdgeName("vpc-a"), net("10.97.0.0/16"), 1, until),)
    assert ("route_held", "vpc-a", net("10.97.0.0/16")) in [
        (c.kind, c.edge, c.route) for c in changes
    ]
    # the rogue's claims: the same prefix refused, overlapping ones pending, each naming
    # the holder and when the hold ends
    state, reason, detail, _ = decision(r, "rogue", "10.97.0.0/16")
    assert (state, reason) == (REFUSED, Reason.EXACT)
    assert detail == (
        "10.97.0.0/16 is held for edge 'vpc-a' until 1970-01-12T13:56:50Z "
        "(admission.hold_time after it withdrew the route); a prefix belongs to one edge only"
    )
    state, reason, detail, _ = decision(r, "rogue", "10.97.1.0/24")
    assert (state, reason) == (PENDING, Reason.MORE_SPECIFIC)
    assert detail.startswith(
        "10.97.1.0/24 is more specific than 10.97.0.0/16 of edge 'vpc-a' "
        "(held for it until 1970-01-12T13:56:50Z); pending"
    )
    assert decision(r, "rogue", "10.0.0.0/8")[:2] == (PENDING, Reason.LESS_SPECIFIC)
    assert [str(x) for e in r.snapshot().edges if e.name == "rogue" for x in e.routes] == []
    check_invariants(r)
    check_places(r)


def test_the_edge_gets_its_place_back_within_the_hold() -> None:
    r = registry()
    r.register(reg("vpc-a", 1, "10.97.0.0/16"), T0)
    r.register(reg("rogue", 3, "10.97.0.0/16"), T0)
    r.register(reg("vpc-a", 1), T0)
    r.renew(T0 + HOLD - 1)
    assert r.state.holds
    _, changes = r.register(reg("vpc-a", 1, "10.97.0.0/16"), T0 + HOLD - 1)
    assert decision(r, "vpc-a", "10.97.0.0/16")[::3] == (SERVING, 1)
    assert decision(r, "rogue", "10.97.0.0/16")[:2] == (REFUSED, Reason.EXACT)
    assert r.state.holds == ()
    assert (
        Change(
            "hold_ended",
            EdgeName("vpc-a"),
            net("10.97.0.0/16"),
            "the hold of route 10.97.0.0/16 for edge 'vpc-a' ended: the edge advertises the "
            "route again",
        )
        in changes
    )
    check_places(r)


def test_a_hold_that_runs_out_ends_at_renew_and_the_route_is_free() -> None:
    r = registry()
    r.register(reg("vpc-a", 1, "10.97.0.0/16"), T0)
    r.register(reg("rogue", 3, "10.97.0.0/16"), T0)
    r.register(reg("vpc-a", 1), T0)
    version = r.version
    changes = r.renew(T0 + HOLD + 1)
    assert r.version == version + 1 and r.state.holds == ()
    assert [c.kind for c in changes] == ["hold_ended", "route_serving"]
    assert "ran out at" in changes[0].detail
    assert decision(r, "rogue", "10.97.0.0/16")[::3] == (SERVING, r.version)
    # the owner coming back later is a newcomer like any other
    r.register(reg("vpc-a", 1, "10.97.0.0/16"), T0 + HOLD + 2)
    assert decision(r, "vpc-a", "10.97.0.0/16")[:2] == (REFUSED, Reason.EXACT)
    check_places(r)


def test_a_key_change_holds_the_routes_for_the_name() -> None:
    r = registry()
    r.register(reg("vpc-a", 1, "10.97.0.0/16", "10.96.0.0/16"), T0)
    r.register(reg("rogue", 3, "10.97.0.0/16"), T0)
    rekeyed = allowed("vpc-a", 9, "10.0.0.0/8")
    changes = r.apply_config(config(rekeyed, B, R, C, policy=Policy(hold_time=HOLD)), T0)
    assert [c.kind for c in changes][:1] == ["edge_removed"]
    assert {(h.edge, str(h.route), h.since) for h in r.state.holds} == {
        ("vpc-a", "10.96.0.0/16", 1),
        ("vpc-a", "10.97.0.0/16", 1),
    }
    assert decision(r, "rogue", "10.97.0.0/16")[:2] == (REFUSED, Reason.EXACT)
    r.register(reg("vpc-a", 9, "10.97.0.0/16", "10.96.0.0/16"), T0 + 30)
    assert decision(r, "vpc-a", "10.97.0.0/16")[::3] == (SERVING, 1)
    assert r.state.holds == ()
    check_invariants(r)
    check_places(r)


def test_an_unconfigured_edge_keeps_no_hold_and_hold_time_zero_holds_nothing() -> None:
    r = registry()
    r.register(reg("vpc-a", 1, "10.97.0.0/16"), T0)
    r.register(reg("vpc-a", 1), T0)
    assert r.state.holds
    changes = r.apply_config(config(B, R, C, policy=Policy(hold_time=HOLD)), T0)
    assert r.state.holds == ()
    assert "the edge is no longer configured" in next(
        c.detail for c in changes if c.kind == "hold_ended"
    )
    r = registry(0)
    r.register(reg("vpc-a", 1, "10.97.0.0/16"), T0)
    _, changes = r.register(reg("vpc-a", 1), T0)
    assert r.state.holds == () and "route_held" not in [c.kind for c in changes]


# --- endpoints inside other edges' routes ---------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "why"),
    [
        ("10.97.3.4", "inside route 10.97.0.0/16 of edge 'vpc-a' (serving)"),
        ("10.96.5.5", "inside route 10.96.0.0/15 of edge 'vpc-b' (pending)"),
        ("10.200.1.1", "inside route 10.200.0.0/16 of edge 'vpc-a' (held until "),
    ],
)
def test_an_endpoint_inside_another_edges_route_is_refused(ip: str, why: str) -> None:
    r = registry()
    r.register(reg("vpc-a", 1, "10.97.0.0/16", "10.200.0.0/16"), T0)
    r.register(reg("vpc-b", 2, "10.96.0.0/15"), T0)  # contains vpc-a's: pending
    r.register(reg("vpc-a", 1, "10.97.0.0/16"), T0)  # 10.200.0.0/16 held
    before = r.state
    with pytest.raises(InvalidRequest) as e:
        r.register(at(r, ip, "rogue", 3, "10.98.0.0/16"), T0)
    assert str(e.value).startswith(f"endpoints[0]: {ip}:51820 is {why}")
    assert str(e.value).endswith(
        "allowed: an endpoint outside every other edge's serving, pending or held routes "
        "(routing it into the overlay would loop the tunnel)"
    )
    assert r.state is before
    assert decision(r, "vpc-a", "10.97.0.0/16")[0] is SERVING


def test_an_endpoint_inside_its_own_or_a_refused_route_is_no_conflict() -> None:
    r = registry()
    r.register(reg("rogue", 3, "172.16.0.0/16"), T0)  # refused: not_allowed
    r.register(at(r, "172.16.0.5", "vpc-c", 4, "10.99.0.0/16"), T0)
    assert decision(r, "vpc-c", "10.99.0.0/16")[0] is SERVING
    # its own route: no registration error, but the route loops the tunnel (overlay)
    r.register(at(r, "10.97.0.1", "vpc-a", 1, "10.97.0.0/16"), T0)
    assert decision(r, "vpc-a", "10.97.0.0/16")[:2] == (REFUSED, Reason.OVERLAY)
    check_places(r)


def test_a_stored_endpoint_that_is_not_unicast_is_dropped_at_apply_config() -> None:
    # a state written before the unicast rule: the rogue pointed every edge at loopback
    stored = State(
        version=1,
        edges=(
            EdgeRecord(
                EdgeName("rogue"),
                R.public_key,
                (Endpoint.parse("127.0.0.1:51820"), Endpoint.parse("198.18.0.3:51820")),
                (Advertised(net("10.98.0.0/16"), 1),),
            ),
        ),
    )
    r = Registry(stored, config(A, B, R, C, policy=Policy(hold_time=HOLD)), sign)
    changes = r.apply_config(r.config, T0)
    assert r.state.edges[0].endpoints == (Endpoint.parse("198.18.0.3:51820"),)
    assert (
        Change(
            "edge_updated", EdgeName("rogue"), None, "edge 'rogue' endpoints now 198.18.0.3:51820"
        )
        in changes
    )
    check_invariants(r)


# --- a random walk: places, holds and re-decisions stay consistent --------------------------

EDGES = (("vpc-a", 1), ("vpc-b", 2), ("rogue", 3), ("vpc-c", 4))
ROUTES = ["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.2.0.0/16", "fd00:b::/48"]
OPS = st.one_of(
    st.tuples(
        st.just("register"),
        st.integers(0, 3),
        st.lists(st.sampled_from(ROUTES), max_size=3),
        st.sampled_from(["198.18.0.{}", "10.1.2.{}", "10.2.0.{}"]),
    ),
    st.tuples(st.just("renew"), st.integers(0, 2 * HOLD)),
    st.tuples(st.just("config"), st.booleans(), st.sampled_from([PENDING, REFUSED])),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(OPS, max_size=14))
def test_random_walk_keeps_places_and_holds_consistent(ops: list[tuple[object, ...]]) -> None:
    r = registry()
    now = T0
    rekeyed = False
    for op in ops:
        before = r.state
        now += 30
        match op:
            case ("register", int(i), list(routes), str(ip)):
                name, seed = EDGES[i]
                if name == "vpc-a" and rekeyed:
                    seed = 9
                try:
                    _, changes = r.register(at(r, ip.format(seed), name, seed, *routes), now)
                except InvalidRequest:
                    assert r.state is before
                    continue
            case ("renew", int(dt)):
                now += dt
                changes = r.renew(now)
            case ("config", bool(rekey), RouteState() as more):
                rekeyed = rekey
                a = allowed("vpc-a", 9, "10.0.0.0/8") if rekey else A
                policy = Policy(more_specific=more, hold_time=HOLD)
                changes = r.apply_config(config(a, B, R, C, policy=policy), now)
            case _:
                raise AssertionError(op)
        assert all(c.kind in CHANGE_KINDS for c in changes)
        assert r.version in (before.version, before.version + 1)
        assert all(h.until > now - 30 for h in r.state.holds)
        # a held route is never admitted at another edge with the same prefix
        held = {h.route: h.edge for h in r.state.holds}
        for d in r.decisions:
            if d.route in held and d.edge != held[d.route]:
                assert d.state is REFUSED, d
        check_invariants(r)
        check_places(r)
