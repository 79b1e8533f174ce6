"""The route map: every route (a CIDR) with the edge that owns it, at one version.

Owns the domain types the controller publishes and the edges apply, and the rules
every map obeys: edge names and keys are unique, no prefix belongs to two edges, and an
entry's leases are either absent or one per route in route order. Routes of different
edges may overlap (the controller's admission decides which may); forwarding is longest
prefix match, so a more specific route takes its addresses from the covering one. The
controller validates a map when it writes it, every edge again when it receives it:
never trust the wire.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from isthmus.endpoint import Endpoint
from isthmus.ids import EdgeName
from isthmus.keys import PublicKey
from isthmus.lease import Lease

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# The routing protocol number ("proto 149") marking the kernel routes an edge installs for
# the map; the lab and the benchmarks find those routes by it.
ROUTE_PROTO = 149
ROUTE_RULE = "an IPv4 or IPv6 network in CIDR form with no host bits set, e.g. 10.244.0.0/16"


class MapError(ValueError):
    """A map breaks one of the rules; the message names the edge, route and rule."""


def parse_route(text: object) -> Network:
    """Parse one route.

    Raises:
        ValueError: the message quotes the text and says what is allowed.
    """
    if not isinstance(text, str) or "/" not in text:
        raise ValueError(f"{text!r} is not a route: use {ROUTE_RULE}")
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as e:
        raise ValueError(f"{text!r} is not a route ({e}): use {ROUTE_RULE}") from None


def overlaps(a: Network, b: Network) -> bool:
    """True when the two networks share at least one address."""
    return a.version == b.version and (a.subnet_of(b) or b.subnet_of(a))  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class EdgeEntry:
    """One edge as the map shows it.

    `leases` is empty (a map not yet signed, e.g. inside the controller) or holds one
    lease per route, in the same order.
    """

    name: EdgeName
    public_key: PublicKey
    endpoints: tuple[Endpoint, ...]
    routes: tuple[Network, ...]
    leases: tuple[Lease, ...] = ()


@dataclass(frozen=True, slots=True)
class RouteMap:
    """All edges with their routes, at `version` (0 means "no map yet")."""

    version: int
    edges: tuple[EdgeEntry, ...] = field(default=())

    def edge(self, name: str) -> EdgeEntry | None:
        for e in self.edges:
            if e.name == name:
                return e
        return None

    def routes(self) -> Iterator[tuple[Network, EdgeEntry]]:
        """Every (route, owning edge) pair."""
        for e in self.edges:
            for r in e.routes:
                yield r, e

    def validate(self) -> RouteMap:
        """Check the map rules and return self.

        Raises:
            MapError: negative version, duplicate edge name or key, leases not one per
                route, or the same prefix at two edges.
        """
        if self.version < 0:
            raise MapError(f"version {self.version} is negative")
        names: set[str] = set()
        keys: dict[bytes, str] = {}
        for e in self.edges:
            if e.name in names:
                raise MapError(f"edge {e.name!r} appears twice")
            names.add(e.name)
            if e.public_key.raw in keys:
                raise MapError(
                    f"edges {keys[e.public_key.raw]!r} and {e.name!r} have the same public key"
                )
            keys[e.public_key.raw] = e.name
            if e.leases and len(e.leases) != len(e.routes):
                raise MapError(
                    f"edge {e.name!r} has {len(e.leases)} leases for {len(e.routes)} routes; "
                    "leases must be absent or one per route"
                )
        duplicate = first_duplicate(self.routes())
        if duplicate is not None:
            (route, e1), (_, e2) = duplicate
            raise MapError(
                f"route {route} belongs to both edge {e1.name!r} and edge {e2.name!r}; "
                "a prefix may belong to one edge only"
            )
        return self


def first_duplicate(
    pairs: Iterable[tuple[Network, EdgeEntry]],
) -> tuple[tuple[Network, EdgeEntry], tuple[Network, EdgeEntry]] | None:
    """The first two equal prefixes of *different* edges (in input order), or None."""
    owner: dict[Network, EdgeEntry] = {}
    for net, edge in pairs:
        first = owner.setdefault(net, edge)
        if first.name != edge.name:
            return (net, first), (net, edge)
    return None
