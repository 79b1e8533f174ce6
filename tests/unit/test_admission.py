"""controller.admission: every reason code, the table order, first come first served,
approvals, and a brute-force model over small random prefixes (Hypothesis)."""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.bindings import crypto_box_seed_keypair

from controller.admission import (
    RESERVED,
    Decision,
    Policy,
    Reason,
    RouteState,
    decide,
    reserved_reason,
    serving_map,
)
from controller.config import AllowedEdge
from controller.state import Advertised, EdgeRecord, Hold, State
from isthmus.endpoint import Endpoint, IPAddress
from isthmus.ids import EdgeName
from isthmus.keys import PublicKey
from isthmus.lease import Lease
from isthmus.routemap import EdgeEntry, MapError, Network, RouteMap, overlaps

SERVING, PENDING, REFUSED = RouteState.SERVING, RouteState.PENDING, RouteState.REFUSED


def key(seed: int) -> PublicKey:
    return PublicKey(crypto_box_seed_keypair(bytes([seed]) * 32)[0])


def net(text: str) -> Network:
    return ipaddress.ip_network(text)


def ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text)


SEEDS = {"vpc-a": 1, "vpc-b": 2, "vpc-c": 3, "rogue": 4}


def record(name: str, *routes: tuple[str, int], endpoint: str | None = None) -> EdgeRecord:
    seed = SEEDS[name]
    eps = (Endpoint.parse(endpoint or f"198.18.0.{seed}:51820"),)
    adv = tuple(Advertised(net(r), since) for r, since in routes)
    return EdgeRecord(EdgeName(name), key(seed), eps, adv)


def state(*edges: EdgeRecord, approvals: Iterable[tuple[str, str]] = ()) -> State:
    return State(
        version=max((a.since for e in edges for a in e.advertised), default=0),
        edges=tuple(sorted(edges, key=lambda e: e.name)),
        approvals=tuple((EdgeName(e), net(r)) for e, r in approvals),
    )


def allow(**routes: Sequence[str]) -> dict[EdgeName, AllowedEdge]:
    return {
        EdgeName(name): AllowedEdge(EdgeName(name), key(SEEDS[name]), tuple(net(r) for r in rs))
        for name, rs in routes.items()
    }


WIDE = allow(**{n: ["10.0.0.0/8", "fd00::/8"] for n in SEEDS})
CONTROLLER = (ip("198.18.0.100"),)


def run(
    s: State,
    allowed: dict[EdgeName, AllowedEdge] = WIDE,
    policy: Policy = Policy(),  # noqa: B008 - frozen
    overlay: Iterable[IPAddress] = CONTROLLER,
) -> dict[tuple[str, str], Decision]:
    endpoints = [ep.ip for e in s.edges for ep in e.endpoints]
    return {(d.edge, str(d.route)): d for d in decide(s, allowed, policy, [*overlay, *endpoints])}


def one(s: State, edge: str, route: str, **kw: object) -> Decision:
    return run(s, **kw)[(edge, route)]  # type: ignore[arg-type]


# --- one test per reason code --------------------------------------------------------------


def test_serving_when_nothing_else_applies() -> None:
    d = one(state(record("vpc-a", ("10.244.0.0/16", 1))), "vpc-a", "10.244.0.0/16")
    assert d == Decision(
        EdgeName("vpc-a"), net("10.244.0.0/16"), SERVING, Reason.NONE, "", 1, approved=False
    )


@pytest.mark.parametrize(
    ("route", "why"),
    [
        ("0.0.0.0/0", "is a default route"),
        ("::/0", "is a default route"),
        ("127.0.0.0/16", "overlaps loopback 127.0.0.0/8"),
        ("126.0.0.0/7", "overlaps loopback 127.0.0.0/8"),
        ("::/127", "overlaps loopback ::1/128"),
        ("169.254.169.254/32", "overlaps link-local 169.254.0.0/16"),
        ("fe80::/64", "overlaps link-local fe80::/10"),
        ("239.1.0.0/16", "overlaps multicast 224.0.0.0/4"),
        ("192.0.0.0/2", "overlaps multicast 224.0.0.0/4"),
        ("ff02::/16", "overlaps multicast ff00::/8"),
        ("0.0.0.0/16", 'overlaps "this network" 0.0.0.0/8'),
    ],
)
def test_reserved(route: str, why: str) -> None:
    s = state(record("vpc-a", (route, 1)))
    anything = allow(**{"vpc-a": ["0.0.0.0/0", "::/0"]})
    d = one(s, "vpc-a", route, allowed=anything)
    assert (d.state, d.reason) == (REFUSED, Reason.RESERVED)
    assert d.detail == (
        f"{route} {why}, which is reserved; list it in admission.allow_reserved to allow it"
    )
    assert reserved_reason(net(route)) == why


def test_not_reserved() -> None:
    for route in ("10.0.0.0/8", "1.0.0.0/8", "fd00::/8", "::ffff:0:0/96", "2000::/3"):
        assert reserved_reason(net(route)) is None, route
    # every listed range is reserved itself, and only for its own family
    for r, _ in RESERVED:
        assert reserved_reason(r) is not None


def test_allow_reserved_only_exactly() -> None:
    s = state(record("vpc-a", ("::/0", 1), ("fe80::/64", 1), ("fe80::/10", 1)))
    policy = Policy(allow_reserved=(net("::/0"), net("fe80::/10")))
    anything = allow(**{"vpc-a": ["::/0"]})
    got = run(s, anything, policy)
    assert got[("vpc-a", "::/0")].state is SERVING
    assert got[("vpc-a", "fe80::/10")].state is SERVING
    assert got[("vpc-a", "fe80::/64")].reason is Reason.RESERVED


def test_overlay_edge_endpoint() -> None:
    s = state(record("vpc-a", ("198.18.0.0/24", 1)), record("vpc-b", ("10.1.0.0/16", 1)))
    d = one(s, "vpc-a", "198.18.0.0/24", allowed=allow(**{"vpc-a": ["198.18.0.0/16"]}))
    assert (d.state, d.reason) == (REFUSED, Reason.OVERLAY)
    # its own endpoint counts too: routing it into the tunnel loops the tunnel
    assert d.detail == (
        "198.18.0.0/24 contains 198.18.0.1, an endpoint of edge 'vpc-a'; "
        "routing it into the overlay would loop the tunnel"
    )


def test_overlay_other_edges_endpoint() -> None:
    s = state(
        record("vpc-a", ("10.0.0.0/8", 1)),
        record("vpc-b", ("10.1.0.0/16", 1), endpoint="10.200.0.7:51820"),
    )
    d = one(s, "vpc-a", "10.0.0.0/8")
    assert d.reason is Reason.OVERLAY
    assert d.detail.startswith("10.0.0.0/8 contains 10.200.0.7, an endpoint of edge 'vpc-b';")


def test_overlay_controller_address_and_unspecified_ignored() -> None:
    s = state(record("vpc-a", ("10.9.0.0/16", 1), ("fd00:9::/32", 1)))
    got = run(s, overlay=[ip("10.9.8.7"), ip("0.0.0.0"), ip("::")])
    assert got[("vpc-a", "10.9.0.0/16")].detail.startswith(
        "10.9.0.0/16 contains 10.9.8.7, the controller's address;"
    )
    assert got[("vpc-a", "fd00:9::/32")].state is SERVING


def test_overlay_other_family_never_matches() -> None:
    s = state(record("vpc-a", ("fd00::/16", 1)))
    assert one(s, "vpc-a", "fd00::/16", overlay=[ip("10.0.0.1")]).state is SERVING


def test_not_allowed_outside_configured_routes() -> None:
    s = state(record("vpc-a", ("10.0.0.0/8", 1), ("10.244.1.0/24", 1), ("fd00::/16", 1)))
    got = run(s, allow(**{"vpc-a": ["10.244.0.0/16", "10.96.0.0/16"]}))
    d = got[("vpc-a", "10.0.0.0/8")]
    assert (d.state, d.reason) == (REFUSED, Reason.NOT_ALLOWED)
    assert d.detail == (
        "10.0.0.0/8 is not inside the routes the controller config allows edge 'vpc-a' "
        "(allowed: 10.244.0.0/16, 10.96.0.0/16)"
    )
    assert got[("vpc-a", "10.244.1.0/24")].state is SERVING
    assert got[("vpc-a", "fd00::/16")].reason is Reason.NOT_ALLOWED


def test_not_allowed_when_nothing_is_or_edge_unconfigured() -> None:
    s = state(record("vpc-a", ("10.0.0.0/8", 1)), record("vpc-b", ("10.1.0.0/16", 1)))
    got = run(s, allow(**{"vpc-a": []}))
    assert got[("vpc-a", "10.0.0.0/8")].detail.endswith("(allowed: none)")
    assert got[("vpc-b", "10.1.0.0/16")].detail == (
        "edge 'vpc-b' is not configured on this controller"
    )


def test_exact_is_refused_naming_the_first_edge() -> None:
    s = state(record("vpc-a", ("10.97.0.0/16", 2)), record("vpc-b", ("10.97.0.0/16", 1)))
    got = run(s)
    assert got[("vpc-b", "10.97.0.0/16")].state is SERVING
    d = got[("vpc-a", "10.97.0.0/16")]
    assert (d.state, d.reason) == (REFUSED, Reason.EXACT)
    assert d.detail == (
        "10.97.0.0/16 is already a serving route of edge 'vpc-b'; a prefix belongs to one edge only"
    )


def test_exact_against_a_pending_route() -> None:
    s = state(
        record("vpc-a", ("10.0.0.0/8", 1)),
        record("vpc-b", ("10.97.0.0/16", 2)),
        record("vpc-c", ("10.97.0.0/16", 3)),
    )
    got = run(s)
    assert got[("vpc-b", "10.97.0.0/16")].state is PENDING
    assert got[("vpc-c", "10.97.0.0/16")].detail == (
        "10.97.0.0/16 is already a pending route of edge 'vpc-b'; a prefix belongs to one edge only"
    )


def test_more_specific_pending_with_approve_command() -> None:
    s = state(record("vpc-b", ("10.97.0.0/16", 1)), record("rogue", ("10.97.1.0/24", 2)))
    d = one(s, "rogue", "10.97.1.0/24")
    assert (d.state, d.reason, d.since, d.approved) == (PENDING, Reason.MORE_SPECIFIC, 2, False)
    assert d.detail == (
        "10.97.1.0/24 is more specific than 10.97.0.0/16 of edge 'vpc-b'; "
        "pending: approve with 'isthmus routes approve 10.97.1.0/24 --edge rogue'"
    )


def test_more_specific_refused_by_policy() -> None:
    s = state(record("vpc-b", ("10.97.0.0/16", 1)), record("rogue", ("10.97.1.0/24", 2)))
    d = one(s, "rogue", "10.97.1.0/24", policy=Policy(more_specific=REFUSED))
    assert (d.state, d.reason) == (REFUSED, Reason.MORE_SPECIFIC)
    assert d.detail == (
        "10.97.1.0/24 is more specific than 10.97.0.0/16 of edge 'vpc-b'; "
        "refused: admission.more_specific is 'refuse'"
    )


def test_less_specific_pending_and_refused_by_policy() -> None:
    s = state(record("vpc-b", ("10.97.0.0/16", 1)), record("vpc-a", ("10.0.0.0/8", 2)))
    d = one(s, "vpc-a", "10.0.0.0/8")
    assert (d.state, d.reason) == (PENDING, Reason.LESS_SPECIFIC)
    assert d.detail == (
        "10.0.0.0/8 contains 10.97.0.0/16 of edge 'vpc-b'; "
        "pending: approve with 'isthmus routes approve 10.0.0.0/8 --edge vpc-a'"
    )
    d = one(s, "vpc-a", "10.0.0.0/8", policy=Policy(less_specific=REFUSED))
    assert (d.state, d.reason) == (REFUSED, Reason.LESS_SPECIFIC)
    assert d.detail.endswith("; refused: admission.less_specific is 'refuse'")


def test_approved_pending_route_serves() -> None:
    s = state(
        record("vpc-b", ("10.97.0.0/16", 1)),
        record("rogue", ("10.97.1.0/24", 2)),
        approvals=[("rogue", "10.97.1.0/24")],
    )
    d = one(s, "rogue", "10.97.1.0/24")
    assert (d.state, d.reason, d.approved) == (SERVING, Reason.MORE_SPECIFIC, True)
    assert d.detail == (
        "10.97.1.0/24 is more specific than 10.97.0.0/16 of edge 'vpc-b'; "
        "serving: approved by an operator"
    )


def test_approval_of_a_refused_or_serving_route_changes_nothing() -> None:
    s = state(
        record("vpc-b", ("10.97.0.0/16", 1)),
        record("rogue", ("10.97.1.0/24", 2), ("10.97.0.0/16", 2)),
        approvals=[("rogue", "10.97.0.0/16"), ("vpc-b", "10.97.0.0/16")],
    )
    got = run(s, policy=Policy(more_specific=REFUSED))
    assert got[("rogue", "10.97.0.0/16")].state is REFUSED
    assert got[("vpc-b", "10.97.0.0/16")].approved is False
    assert got[("rogue", "10.97.1.0/24")].state is REFUSED


# --- the table order and what is compared ---------------------------------------------------


def test_first_rule_in_table_order_wins() -> None:
    s = state(
        record("vpc-a", ("10.0.0.0/8", 1)),
        record("vpc-b", ("127.0.0.0/8", 2), ("10.0.0.0/8", 2), ("10.1.0.0/16", 2)),
        record("vpc-c", ("10.1.0.0/16", 3)),
    )
    got = run(
        s, allow(**{"vpc-a": ["10.0.0.0/8"], "vpc-b": ["10.0.0.0/9"], "vpc-c": ["10.0.0.0/8"]})
    )
    # reserved before not_allowed
    assert got[("vpc-b", "127.0.0.0/8")].reason is Reason.RESERVED
    # not_allowed before exact
    assert got[("vpc-b", "10.0.0.0/8")].reason is Reason.NOT_ALLOWED
    # exact before more_specific: vpc-c's 10.1.0.0/16 equals vpc-b's and is inside vpc-a's
    assert got[("vpc-b", "10.1.0.0/16")].reason is Reason.MORE_SPECIFIC
    assert got[("vpc-c", "10.1.0.0/16")].reason is Reason.EXACT


def test_more_specific_before_less_specific() -> None:
    # 10.0.0.0/12 is inside vpc-a's /8 and contains vpc-b's /16: more_specific wins
    s = state(
        record("vpc-a", ("10.0.0.0/8", 1)),
        record("vpc-b", ("10.1.0.0/16", 2)),
        record("vpc-c", ("10.0.0.0/12", 3)),
    )
    got = run(s)
    assert got[("vpc-b", "10.1.0.0/16")].reason is Reason.MORE_SPECIFIC
    d = got[("vpc-c", "10.0.0.0/12")]
    assert d.reason is Reason.MORE_SPECIFIC
    assert "than 10.0.0.0/8 of edge 'vpc-a'" in d.detail


def test_routes_of_the_same_edge_never_conflict() -> None:
    s = state(record("vpc-a", ("10.0.0.0/8", 1), ("10.1.0.0/16", 1), ("10.1.2.0/24", 2)))
    assert {d.state for d in run(s).values()} == {SERVING}


def test_refused_routes_are_not_compared() -> None:
    s = state(
        record("vpc-a", ("10.0.0.0/8", 1)),
        record("vpc-b", ("10.1.0.0/16", 2)),
    )
    got = run(s, allow(**{"vpc-a": ["10.5.0.0/16"], "vpc-b": ["10.0.0.0/8"]}))
    assert got[("vpc-a", "10.0.0.0/8")].reason is Reason.NOT_ALLOWED
    assert got[("vpc-b", "10.1.0.0/16")].state is SERVING


def test_first_come_first_served_by_since_then_name_then_position() -> None:
    # vpc-b advertised earlier (since 1): its /8 serves, vpc-a's /16 waits
    s = state(record("vpc-a", ("10.1.0.0/16", 2)), record("vpc-b", ("10.0.0.0/8", 1)))
    got = run(s)
    assert got[("vpc-b", "10.0.0.0/8")].state is SERVING
    assert got[("vpc-a", "10.1.0.0/16")].state is PENDING
    # same since: the name decides
    s = state(record("vpc-a", ("10.1.0.0/16", 1)), record("vpc-b", ("10.0.0.0/8", 1)))
    got = run(s)
    assert got[("vpc-a", "10.1.0.0/16")].state is SERVING
    assert got[("vpc-b", "10.0.0.0/8")].reason is Reason.LESS_SPECIFIC
    # decisions come in decision order
    order = [(d.edge, str(d.route)) for d in decide(s, WIDE, Policy(), ())]
    assert order == [("vpc-a", "10.1.0.0/16"), ("vpc-b", "10.0.0.0/8")]


def test_the_earliest_overlapping_route_is_named() -> None:
    s = state(
        record("vpc-a", ("10.0.0.0/8", 2)),
        record("vpc-b", ("10.1.0.0/16", 1)),
        record("vpc-c", ("10.1.2.0/24", 3)),
    )
    d = one(s, "vpc-c", "10.1.2.0/24")
    assert "than 10.1.0.0/16 of edge 'vpc-b'" in d.detail


def test_withdrawing_the_covering_route_lets_the_pending_route_serve() -> None:
    covering = record("vpc-b", ("10.97.0.0/16", 1))
    rogue = record("rogue", ("10.97.1.0/24", 2))
    assert one(state(covering, rogue), "rogue", "10.97.1.0/24").state is PENDING
    withdrawn = record("vpc-b")
    d = one(state(withdrawn, rogue), "rogue", "10.97.1.0/24")
    assert (d.state, d.reason, d.detail) == (SERVING, Reason.NONE, "")


def test_approval_never_displaces_a_serving_route() -> None:
    s = state(
        record("vpc-b", ("10.97.0.0/16", 1)),
        record("rogue", ("10.97.1.0/24", 2), ("10.0.0.0/8", 2)),
        record("vpc-c", ("10.97.1.128/25", 3)),
    )
    before = run(s)
    after = run(state(*s.edges, approvals=[("rogue", "10.97.1.0/24"), ("rogue", "10.0.0.0/8")]))
    assert after[("vpc-b", "10.97.0.0/16")] == before[("vpc-b", "10.97.0.0/16")]
    assert after[("vpc-c", "10.97.1.128/25")] == before[("vpc-c", "10.97.1.128/25")]
    assert after[("rogue", "10.97.1.0/24")].state is SERVING
    assert after[("rogue", "10.0.0.0/8")].state is SERVING


# --- serving_map ------------------------------------------------------------------------------


def lease(n: int) -> Lease:
    return Lease(version=n, expires=10_000 + n, signature=bytes([n]) * 64)


def test_serving_map_holds_every_edge_its_serving_routes_and_their_leases() -> None:
    s = state(
        record("vpc-b", ("10.97.0.0/16", 1), ("10.96.0.0/16", 1)),
        record("rogue", ("10.97.1.0/24", 2)),
    )
    s = State(
        version=5,
        edges=s.edges,
        leases=(
            (EdgeName("vpc-b"), net("10.96.0.0/16"), lease(1)),
            (EdgeName("vpc-b"), net("10.97.0.0/16"), lease(2)),
        ),
    )
    m = serving_map(s, decide(s, WIDE, Policy(), ()))
    assert m == RouteMap(
        5,
        (
            EdgeEntry(EdgeName("rogue"), key(4), s.edges[0].endpoints, (), ()),
            EdgeEntry(
                EdgeName("vpc-b"),
                key(2),
                s.edges[1].endpoints,
                (net("10.96.0.0/16"), net("10.97.0.0/16")),
                (lease(1), lease(2)),
            ),
        ),
    )


def test_serving_map_without_every_lease_carries_none() -> None:
    s = state(record("vpc-b", ("10.97.0.0/16", 1), ("10.96.0.0/16", 1)))
    s = State(s.version, s.edges, (), ((EdgeName("vpc-b"), net("10.96.0.0/16"), lease(1)),))
    m = serving_map(s, decide(s, WIDE, Policy(), ()))
    assert m.edges[0].routes == (net("10.96.0.0/16"), net("10.97.0.0/16"))
    assert m.edges[0].leases == ()


def test_serving_map_refuses_a_prefix_at_two_edges() -> None:
    s = state(record("vpc-a", ("10.0.0.0/8", 1)), record("vpc-b", ("10.0.0.0/8", 1)))
    forged = [
        Decision(EdgeName(n), net("10.0.0.0/8"), SERVING, Reason.NONE, "", 1, False)
        for n in ("vpc-a", "vpc-b")
    ]
    with pytest.raises(MapError, match="belongs to both edge 'vpc-a' and edge 'vpc-b'"):
        serving_map(s, forged)


# --- properties: order independence and a brute-force model ----------------------------------

NAMES = ["a", "b", "c"]
ALLOWED = {
    EdgeName("a"): AllowedEdge(EdgeName("a"), key(11), (net("10.0.0.0/8"), net("fd00::/16"))),
    EdgeName("b"): AllowedEdge(EdgeName("b"), key(12), (net("10.0.0.0/14"),)),
    EdgeName("c"): AllowedEdge(EdgeName("c"), key(13), (net("10.2.0.0/15"), net("0.0.0.0/0"))),
}
PREFIXES = st.one_of(
    st.builds(
        lambda a, b, p: ipaddress.ip_network(f"10.{a}.{b}.0/{p}", strict=False),
        st.integers(0, 3),
        st.integers(0, 3),
        st.integers(6, 24),
    ),
    st.builds(
        lambda a, p: ipaddress.ip_network(f"fd00:{a}::/{p}", strict=False),
        st.integers(0, 3),
        st.integers(14, 32),
    ),
    st.sampled_from([net("0.0.0.0/0"), net("127.0.0.0/8"), net("10.3.3.0/24")]),
)


@st.composite
def states(draw: st.DrawFn) -> State:
    """Edges with placed routes (since 0-3), newcomers (since None) and holds."""
    edges = []
    approvals = []
    holds = []
    for i, name in enumerate(NAMES):
        routes = draw(st.lists(PREFIXES, unique=True, max_size=5))
        adv = tuple(Advertised(r, draw(st.none() | st.integers(0, 3))) for r in routes)
        eps = (Endpoint.parse(f"198.18.0.{i + 1}:51820"),)
        edges.append(EdgeRecord(EdgeName(name), key(11 + i), eps, adv))
        approvals += [(EdgeName(name), r) for r in routes if draw(st.booleans())]
        held = draw(st.lists(PREFIXES, unique=True, max_size=2))
        holds += [
            Hold(EdgeName(name), r, draw(st.integers(0, 3)), 1_000 + i)
            for r in held
            if r not in routes
        ]
    return State(version=3, edges=tuple(edges), approvals=tuple(approvals), holds=tuple(holds))


POLICIES = st.builds(
    Policy,
    st.sampled_from([PENDING, REFUSED]),
    st.sampled_from([PENDING, REFUSED]),
    st.sampled_from([(), (net("0.0.0.0/0"),)]),
)
OVERLAY = (ip("10.3.3.3"), ip("0.0.0.0"))


def inside(a: Network, b: Network) -> bool:
    return a.subnet_of(b)  # type: ignore[arg-type]


def model(s: State, policy: Policy) -> list[tuple[object, ...]]:
    """The table of docs/controller.md, written as plainly as possible: routes with a place
    and holds by (since, edge, advertised before held, position), then the newcomers."""
    placed = [
        ((a.since, e.name, 0, i), e.name, a.route, a.since)
        for e in s.edges
        for i, a in enumerate(e.advertised)
        if a.since is not None
    ]
    holds = sorted(
        s.holds,
        key=lambda h: (h.edge, h.route.version, int(h.route.network_address), h.route.prefixlen),
    )
    placed += [((h.since, h.edge, 1, i), h.edge, h.route, None) for i, h in enumerate(holds)]
    newcomers = [
        ((e.name, i), e.name, a.route, s.version + 1)
        for e in s.edges
        for i, a in enumerate(e.advertised)
        if a.since is None
    ]
    items = [x[1:] for x in sorted(placed)] + [x[1:] for x in sorted(newcomers)]
    overlay = [*OVERLAY, *(ep.ip for e in s.edges for ep in e.endpoints)]
    earlier: list[tuple[str, Network]] = []  # serving, pending or held, in decision order
    out: list[tuple[object, ...]] = []
    for name, r, since in items:
        other: tuple[str, Network] | None = None
        others = [(n, x) for n, x in earlier if n != name and x.version == r.version]
        if r not in policy.allow_reserved and (
            r in (net("0.0.0.0/0"), net("::/0")) or any(overlaps(r, x) for x, _ in RESERVED)
        ):
            state_, reason = REFUSED, Reason.RESERVED
        elif any(x.version == r.version and x in r and not x.is_unspecified for x in overlay):
            state_, reason = REFUSED, Reason.OVERLAY
        elif not any(inside(r, x) for x in ALLOWED[name].routes if x.version == r.version):
            state_, reason = REFUSED, Reason.NOT_ALLOWED
        elif other := next((o for o in others if o[1] == r), None):
            state_, reason = REFUSED, Reason.EXACT
        elif other := next((o for o in others if inside(r, o[1])), None):
            state_, reason = policy.more_specific, Reason.MORE_SPECIFIC
        elif other := next((o for o in others if inside(o[1], r)), None):
            state_, reason = policy.less_specific, Reason.LESS_SPECIFIC
        else:
            state_, reason = SERVING, Reason.NONE
        if since is None:  # a hold: no decision, but it counts unless refused
            if state_ is not REFUSED:
                earlier.append((name, r))
            continue
        approved = state_ is PENDING and (name, r) in s.approvals
        if approved:
            state_ = SERVING
        if state_ is not REFUSED:
            earlier.append((name, r))
        out.append((name, r, state_, reason, 0 if state_ is REFUSED else since, approved, other))
    return out


@settings(max_examples=300)
@given(states(), POLICIES)
def test_decide_matches_the_brute_force_model(s: State, policy: Policy) -> None:
    got = decide(s, ALLOWED, policy, [*OVERLAY, *(ep.ip for e in s.edges for ep in e.endpoints)])
    want = model(s, policy)
    assert [(d.edge, d.route, d.state, d.reason, d.since, d.approved) for d in got] == [
        w[:6] for w in want
    ]
    for d, w in zip(got, want, strict=True):
        other = w[6]
        if isinstance(other, tuple):
            # the earliest conflicting route is the one named
            assert f"{other[1]} " in d.detail and f"edge {other[0]!r}" in d.detail
        if d.state is PENDING:
            assert d.detail.endswith(f"'isthmus routes approve {d.route} --edge {d.edge}'")


@given(states(), POLICIES, st.randoms(use_true_random=False))
def test_input_order_does_not_matter(s: State, policy: Policy, rnd: random.Random) -> None:
    edges = list(s.edges)
    rnd.shuffle(edges)
    approvals = list(s.approvals)
    rnd.shuffle(approvals)
    holds = list(s.holds)
    rnd.shuffle(holds)
    shuffled = State(s.version, tuple(edges), tuple(approvals), holds=tuple(holds))
    overlay = [*OVERLAY, *(ep.ip for e in s.edges for ep in e.endpoints)]
    a = decide(s, ALLOWED, policy, overlay)
    b = decide(shuffled, ALLOWED, policy, list(reversed(overlay)))
    assert a == b


@given(states(), POLICIES)
def test_approvals_never_change_another_routes_decision(s: State, policy: Policy) -> None:
    overlay = [*OVERLAY, *(ep.ip for e in s.edges for ep in e.endpoints)]
    bare = decide(State(s.version, s.edges, holds=s.holds), ALLOWED, policy, overlay)
    full = decide(s, ALLOWED, policy, overlay)
    for x, y in zip(bare, full, strict=True):
        assert (x.edge, x.route) == (y.edge, y.route)
        if (x.edge, x.route) in s.approvals and x.state is PENDING:
            assert (y.state, y.approved) == (SERVING, True)
        else:
            # the state, reason and since never change; only the detail may, where it
            # names the other route's state ("a pending route" -> "a serving route")
            same = ("state", "reason", "since", "approved")
            assert [getattr(x, f) for f in same] == [getattr(y, f) for f in same]
    # and the map is always valid: never the same prefix serving twice
    serving_map(s, full)
