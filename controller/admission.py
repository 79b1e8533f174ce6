"""Route admission: which advertised routes serve, wait for an operator, or are refused.

Owns the admission rules of docs/controller.md ("Route admission") and the reserved
ranges. Pure: the state, the configured edges, the policy and the overlay's own
addresses come in, one `Decision` per advertised (edge, route) goes out.

Rules:
- Routes that hold a place (`since` set) are decided first, in the order (since, edge
  name, position in the edge's advertised routes), so the first to come is first served
  and a later route never displaces an earlier one. Then the newcomers (`since` None: new,
  or refused at the last decision, so a refused route never keeps a place), in the order
  (edge name, position). The input's order does not matter.
- A hold (a withdrawn route's place, kept for its edge's name until it ends) takes its
  place in that order like an advertised route of its edge; it gets no decision, but an
  unrefused hold counts as an earlier route of its edge for the checks below.
- Each route is checked in table order; the first check that hits decides:
  reserved, overlay, not_allowed, exact, more_specific, less_specific, else serving.
  exact, more_specific and less_specific compare with the earlier routes of OTHER edges
  that were not refused (serving, pending or held).
- `since` of a decision: the route's place; for a newcomer that is admitted, the version
  the state will have (state.version + 1); 0 for a refused route (it holds no place).
- An endpoint of an edge inside another edge's admitted or held route is refused at
  registration (`endpoint_conflict`), so an older route is never refused `overlay` for a
  newer endpoint; a new route containing an endpoint or the controller's address is.
- A pending route the operator approved serves (`approved=True`). An approval never
  changes another route's decision: later routes see a pending and a serving route alike.
- `detail` is for people: it names the other edge and route, and for a pending route the
  command that approves it.
"""

from __future__ import annotations

import bisect
import enum
import ipaddress
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from controller.state import EdgeRecord, Hold, State, hold_order
from isthmus.endpoint import Endpoint, IPAddress
from isthmus.ids import EdgeName
from isthmus.lease import Lease
from isthmus.lpm import route_sort_key as route_order
from isthmus.routemap import EdgeEntry, Network, RouteMap, overlaps

if TYPE_CHECKING:
    from controller.config import AllowedEdge


class RouteState(enum.StrEnum):
    SERVING = "serving"
    PENDING = "pending"
    REFUSED = "refused"


class Reason(enum.StrEnum):
    NONE = ""
    RESERVED = "reserved"
    OVERLAY = "overlay"
    NOT_ALLOWED = "not_allowed"
    EXACT = "exact"
    MORE_SPECIFIC = "more_specific"
    LESS_SPECIFIC = "less_specific"


DEFAULT_HOLD_TIME = 600


@dataclass(frozen=True, slots=True)
class Policy:
    """What the config says about overlapping, reserved and withdrawn routes ([admission])."""

    more_specific: RouteState = RouteState.PENDING  # PENDING or REFUSED
    less_specific: RouteState = RouteState.PENDING  # PENDING or REFUSED
    allow_reserved: tuple[Network, ...] = ()  # reserved routes allowed when listed exactly
    # seconds a withdrawn admitted route keeps its place; the config's default is
    # DEFAULT_HOLD_TIME, a bare Policy() holds nothing
    hold_time: int = 0


@dataclass(frozen=True, slots=True)
class Decision:
    """The admission decision for one advertised route of one edge."""

    edge: EdgeName
    route: Network
    state: RouteState
    reason: Reason
    detail: str
    since: int  # the route's place in the first-come order; 0: refused, it holds none
    approved: bool  # an operator's approval is what makes this route serve


def _net(text: str) -> Network:
    return ipaddress.ip_network(text)


DEFAULT_ROUTES: tuple[Network, ...] = (_net("0.0.0.0/0"), _net("::/0"))
RESERVED: tuple[tuple[Network, str], ...] = (
    (_net("127.0.0.0/8"), "loopback"),
    (_net("::1/128"), "loopback"),
    (_net("169.254.0.0/16"), "link-local"),
    (_net("fe80::/10"), "link-local"),
    (_net("224.0.0.0/4"), "multicast"),
    (_net("ff00::/8"), "multicast"),
    (_net("0.0.0.0/8"), '"this network"'),
)


def reserved_reason(route: Network) -> str | None:
    """Why `route` is reserved ("a default route", "overlaps loopback 127.0.0.0/8"), or None."""
    if route in DEFAULT_ROUTES:
        return "is a default route"
    for net, label in RESERVED:
        if overlaps(net, route):
            return f"overlaps {label} {net}"
    return None


def approve_command(edge: EdgeName, route: Network) -> str:
    """The command an operator runs to approve a pending route."""
    return f"isthmus routes approve {route} --edge {edge}"


def decide(
    state: State,
    allowed: Mapping[EdgeName, AllowedEdge],
    policy: Policy,
    overlay: Iterable[IPAddress],
) -> tuple[Decision, ...]:
    """One decision per advertised (edge, route) of `state`, in decision order.

    `allowed` holds the configured edges by name; `overlay` the addresses the overlay
    itself uses (edge endpoints, the controller's listen address; unspecified addresses
    such as 0.0.0.0 are ignored).
    """
    approvals = set(state.approvals)
    addresses = _Addresses(overlay, state.edges)
    admitted = _Admitted()
    newcomer = state.version + 1
    placed: list[tuple[int, EdgeName, int, int, EdgeRecord | Hold]] = [
        (a.since, e.name, 0, i, e)
        for e in state.edges
        for i, a in enumerate(e.advertised)
        if a.since is not None
    ]
    holds = sorted(state.holds, key=hold_order)
    placed += [(h.since, h.edge, 1, i, h) for i, h in enumerate(holds)]
    placed.sort(key=lambda t: t[:4])
    fresh = sorted(
        (
            (newcomer, e.name, 0, i, e)
            for e in state.edges
            for i, a in enumerate(e.advertised)
            if a.since is None
        ),
        key=lambda t: t[:4],
    )
    decisions: list[Decision] = []
    for since, name, _, i, item in (*placed, *fresh):
        if isinstance(item, Hold):
            state_, _r, _d = _check(
                name, item.route, allowed.get(name), policy, addresses, admitted
            )
            if state_ is not RouteState.REFUSED:
                admitted.add(name, item.route, "held", item.until)
            continue
        route = item.advertised[i].route
        state_, reason, detail = _check(name, route, allowed.get(name), policy, addresses, admitted)
        approved = False
        if state_ is RouteState.PENDING and (name, route) in approvals:
            state_, approved = RouteState.SERVING, True
            detail = detail.split("; pending", 1)[0] + "; serving: approved by an operator"
        if state_ is RouteState.REFUSED:
            since = 0
        else:
            admitted.add(name, route, state_.value, None)
        decisions.append(Decision(name, route, state_, reason, detail, since, approved))
    return tuple(decisions)


def endpoint_conflict(
    edge: EdgeName,
    endpoints: Iterable[Endpoint],
    decisions: Iterable[Decision],
    holds: Iterable[Hold],
) -> tuple[int, str] | None:
    """The first of `endpoints` inside another edge's admitted or held route: its index and
    why ("10.97.0.9:51820 is inside route 10.97.0.0/16 of edge 'vpc-b' (serving)"), or None.

    `decisions` and `holds` are the current ones; such an endpoint is refused at
    registration, so the older route keeps serving.
    """
    taken = [
        (d.edge, d.route, d.state.value) for d in decisions if d.state is not RouteState.REFUSED
    ]
    taken += [(h.edge, h.route, f"held until {hold_end(h.until)}") for h in holds]
    for i, ep in enumerate(endpoints):
        for name, route, what in taken:
            if name != edge and ep.ip.version == route.version and ep.ip in route:
                return i, f"{ep} is inside route {route} of edge {name!r} ({what})"
    return None


def hold_end(until: int) -> str:
    """When a hold ends, for people: UTC, ISO 8601."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(until))


def serving_map(state: State, decisions: Iterable[Decision]) -> RouteMap:
    """The map at `state.version`: every edge of `state` with its serving routes.

    Routes are in canonical order (family, address, prefix length), each with its lease
    from `state`; an entry carries no leases unless `state` holds one for every route.

    Raises:
        MapError: the result breaks a map rule (the same prefix serving at two edges can
            only come from decisions that did not come from `decide`).
    """
    serving: dict[EdgeName, list[Network]] = {}
    for d in decisions:
        if d.state is RouteState.SERVING:
            serving.setdefault(d.edge, []).append(d.route)
    leases = {(name, route): lease for name, route, lease in state.leases}
    entries: list[EdgeEntry] = []
    for e in state.edges:
        routes = tuple(sorted(serving.get(e.name, ()), key=route_order))
        found = [leases.get((e.name, r)) for r in routes]
        signed: tuple[Lease, ...] = ()
        if all(lease is not None for lease in found):
            signed = tuple(lease for lease in found if lease is not None)
        entries.append(EdgeEntry(e.name, e.public_key, e.endpoints, routes, signed))
    return RouteMap(version=state.version, edges=tuple(entries)).validate()


def _check(
    edge: EdgeName,
    route: Network,
    conf: AllowedEdge | None,
    policy: Policy,
    addresses: _Addresses,
    admitted: _Admitted,
) -> tuple[RouteState, Reason, str]:
    why = None if route in policy.allow_reserved else reserved_reason(route)
    if why is not None:
        detail = (
            f"{route} {why}, which is reserved; list it in admission.allow_reserved to allow it"
        )
        return _refused(Reason.RESERVED, detail)
    inner = addresses.inside(route)
    if inner is not None:
        ip, owner = inner
        detail = (
            f"{route} contains {ip}, {owner}; routing it into the overlay would loop the tunnel"
        )
        return _refused(Reason.OVERLAY, detail)
    if conf is None:
        return _refused(Reason.NOT_ALLOWED, f"edge {edge!r} is not configured on this controller")
    if not _inside(route, conf.routes):
        listed = ", ".join(str(r) for r in conf.routes) or "none"
        detail = (
            f"{route} is not inside the routes the controller config allows edge "
            f"{edge!r} (allowed: {listed})"
        )
        return _refused(Reason.NOT_ALLOWED, detail)
    other = admitted.exact(edge, route)
    if other is not None:
        if other.until is not None:
            detail = (
                f"{route} is held for edge {other.edge!r} until {hold_end(other.until)} "
                "(admission.hold_time after it withdrew the route); a prefix belongs to one "
                "edge only"
            )
        else:
            detail = (
                f"{route} is already a {other.state} route of edge {other.edge!r}; "
                "a prefix belongs to one edge only"
            )
        return _refused(Reason.EXACT, detail)
    other = admitted.covering(edge, route)
    if other is not None:
        what = f"{route} is more specific than {other.route} of edge {other.edge!r}{_held(other)}"
        return _overlap(edge, route, Reason.MORE_SPECIFIC, policy.more_specific, what)
    other = admitted.covered(edge, route)
    if other is not None:
        what = f"{route} contains {other.route} of edge {other.edge!r}{_held(other)}"
        return _overlap(edge, route, Reason.LESS_SPECIFIC, policy.less_specific, what)
    return RouteState.SERVING, Reason.NONE, ""


def _held(entry: _Entry) -> str:
    return "" if entry.until is None else f" (held for it until {hold_end(entry.until)})"


def _inside(route: Network, allowed: Iterable[Network]) -> bool:
    return any(
        a.version == route.version and route.subnet_of(a)  # type: ignore[arg-type]
        for a in allowed
    )


def _refused(reason: Reason, detail: str) -> tuple[RouteState, Reason, str]:
    return RouteState.REFUSED, reason, detail


def _overlap(
    edge: EdgeName, route: Network, reason: Reason, outcome: RouteState, what: str
) -> tuple[RouteState, Reason, str]:
    if outcome is RouteState.PENDING:
        return outcome, reason, f"{what}; pending: approve with '{approve_command(edge, route)}'"
    return RouteState.REFUSED, reason, f"{what}; refused: admission.{reason} is 'refuse'"


@dataclass(frozen=True, slots=True)
class _Entry:
    index: int  # decision order among admitted routes
    edge: EdgeName
    route: Network
    state: str  # "serving", "pending" or "held"
    until: int | None  # a hold's end


class _Admitted:
    """The routes admitted so far (serving, pending or held), for the three overlap checks.

    Exact and covering routes are dict lookups of the route and each of its supernets, keyed
    by integers (family, first address, prefix length), so no `ipaddress` object is built per
    lookup; covered routes a bisect over routes sorted by that key.
    """

    __slots__ = ("_by_net", "_sorted")

    def __init__(self) -> None:
        self._by_net: dict[tuple[int, int, int], list[_Entry]] = {}
        self._sorted: list[tuple[int, int, int, _Entry]] = []

    def add(self, edge: EdgeName, route: Network, state: str, until: int | None) -> None:
        entry = _Entry(len(self._sorted), edge, route, state, until)
        key = route_order(route)
        self._by_net.setdefault(key, []).append(entry)
        bisect.insort(self._sorted, (*key, entry), key=lambda t: (*t[:3], t[3].index))

    def exact(self, edge: EdgeName, route: Network) -> _Entry | None:
        return _first(e for e in self._by_net.get(route_order(route), ()) if e.edge != edge)

    def covering(self, edge: EdgeName, route: Network) -> _Entry | None:
        version, address, prefixlen = route_order(route)
        masks = _MASKS[version]
        by_net = self._by_net
        found = (
            e
            for p in range(prefixlen)
            for e in by_net.get((version, address & masks[p], p), ())
            if e.edge != edge
        )
        return _first(found)

    def covered(self, edge: EdgeName, route: Network) -> _Entry | None:
        last = int(route.broadcast_address)
        probe: tuple[int, int] = (route.version, int(route.network_address))
        lo = bisect.bisect_left(self._sorted, probe, key=lambda t: t[:2])
        found = []
        for version, start, prefixlen, entry in self._sorted[lo:]:
            if version != route.version or start > last:
                break
            if prefixlen > route.prefixlen and entry.edge != edge:
                found.append(entry)
        return _first(found)


# _MASKS[version][p]: the netmask of a /p as an integer, for p in 0..bits.
_MASKS = {
    version: tuple(((1 << bits) - 1) ^ ((1 << (bits - p)) - 1) for p in range(bits + 1))
    for version, bits in ((4, 32), (6, 128))
}


def _first(entries: Iterable[_Entry]) -> _Entry | None:
    return min(entries, key=lambda e: e.index, default=None)


class _Addresses:
    """The overlay's own addresses, sorted per family, each with a phrase naming its owner."""

    __slots__ = ("_items",)

    def __init__(self, overlay: Iterable[IPAddress], edges: Iterable[EdgeRecord]) -> None:
        owners: dict[IPAddress, str] = {}
        for e in edges:
            for ep in e.endpoints:
                owners.setdefault(ep.ip, f"an endpoint of edge {e.name!r}")
        self._items = sorted(
            (ip.version, int(ip), ip, owners.get(ip, "the controller's address"))
            for ip in set(overlay)
            if not ip.is_unspecified
        )

    def inside(self, route: Network) -> tuple[IPAddress, str] | None:
        """The first overlay address inside `route`, with its owner."""
        probe: tuple[int, int] = (route.version, int(route.network_address))
        i = bisect.bisect_left(self._items, probe, key=lambda t: t[:2])
        if i < len(self._items):
            version, value, ip, owner = self._items[i]
            if version == route.version and value <= int(route.broadcast_address):
                return ip, owner
        return None
