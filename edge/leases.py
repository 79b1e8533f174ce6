"""Route leases on the edge: which routes of a map the edge may use, at a given time.

Owns the edge's rules for the leases the controller signs (docs/controller.md, "Route
leases"). Pure: the map, the controller's public key and `now` (unix seconds) come in,
a map comes out; no clock, no I/O, no logging. Rules:
- Every route of every edge entry must carry a lease that verifies against the
  controller's key for that edge's key and that route. A missing lease, a lease signed
  for another key or route, or a bad signature refuses the WHOLE map (`LeaseError`,
  naming the edge and the route): the edge keeps the map it has.
- A lease is void once `now` is past `expires` (`Lease.expired`): that route alone is
  left out, with its lease; the rest of the map stands. The caller logs and reports what was
  left out, and calls again as time passes (`earliest_expiry` says when).
- The version and everything else of the map are kept as they are.
"""

from __future__ import annotations

from dataclasses import replace

from isthmus.ids import EdgeName
from isthmus.lease import verify_lease
from isthmus.routemap import EdgeEntry, Network, RouteMap
from isthmus.signing import ControllerPublicKey

# (edge, route) pairs left out of a map because their lease ran out.
Dropped = tuple[tuple[EdgeName, Network], ...]


class LeaseError(Exception):
    """A map carries a missing or forged lease; the message names the edge and the route."""


def verify_leases(
    route_map: RouteMap, controller_key: ControllerPublicKey, now: float
) -> tuple[RouteMap, Dropped]:
    """Check every lease of `route_map`; the map without expired routes, and those routes.

    Raises:
        LeaseError: a route has no lease, or its lease does not verify against
            `controller_key` for that edge's key and that route.
    """
    for entry in route_map.edges:
        _check_entry(entry, controller_key)
    return drop_expired(route_map, now)


def drop_expired(route_map: RouteMap, now: float) -> tuple[RouteMap, Dropped]:
    """`route_map` without the routes whose lease is void at `now` (signatures not checked).

    For a map `verify_leases` accepted earlier, as time passes. Entries without leases
    are kept as they are.
    """
    dropped: list[tuple[EdgeName, Network]] = []
    edges: list[EdgeEntry] = []
    for entry in route_map.edges:
        if not any(lease.expired(now) for lease in entry.leases):
            edges.append(entry)
            continue
        pairs = list(zip(entry.routes, entry.leases, strict=True))
        live = [(r, lease) for r, lease in pairs if not lease.expired(now)]
        dropped.extend((entry.name, r) for r, lease in pairs if lease.expired(now))
        edges.append(
            replace(
                entry,
                routes=tuple(r for r, _ in live),
                leases=tuple(lease for _, lease in live),
            )
        )
    if not dropped:
        return route_map, ()
    return replace(route_map, edges=tuple(edges)), tuple(dropped)


def earliest_expiry(route_map: RouteMap) -> float | None:
    """The earliest `expires` of any lease in the map (unix seconds); None without leases.

    The lease is void just after that time: check again then (see `Lease.expired`).
    """
    expiries = [lease.expires for entry in route_map.edges for lease in entry.leases]
    return float(min(expiries)) if expiries else None


def _check_entry(entry: EdgeEntry, controller_key: ControllerPublicKey) -> None:
    if len(entry.leases) < len(entry.routes):
        raise LeaseError(
            f"edge {entry.name!r} route {entry.routes[len(entry.leases)]}: lease missing; "
            "every route needs a lease signed by the controller"
        )
    if len(entry.leases) > len(entry.routes):
        raise LeaseError(
            f"edge {entry.name!r}: {len(entry.leases)} leases for {len(entry.routes)} "
            "routes; allowed: one lease per route"
        )
    for route, lease in zip(entry.routes, entry.leases, strict=True):
        if not verify_lease(controller_key, entry.public_key, route, lease):
            raise LeaseError(
                f"edge {entry.name!r} route {route}: lease signature does not verify "
                "against controller_public_key (forged, altered, or signed for another "
                "edge key or route)"
            )
