"""The registry: which edges are allowed, what each has been admitted with, at which version.

Owns the admission rules and the map version. Pure: no I/O, no clock, no asyncio; the
service persists and publishes what it decides. Rules:

- An edge registers under a configured name with the configured public key.
- Every advertised route lies inside (is a subnet of) one of that edge's allowed routes.
- No advertised route overlaps a route currently admitted for another edge.
- Register is all or nothing: on any error the registry is unchanged.
- The version rises by one whenever the map changes and never otherwise; it never goes
  backwards (the store carries it across restarts).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from controller.config import AllowedEdge
from controller.errors import KeyMismatch, RouteConflict, RouteNotAllowed, UnknownEdge
from isthmus.convert import Registration
from isthmus.ids import EdgeName
from isthmus.routemap import EdgeEntry, Network, RouteMap, overlaps


@dataclass(frozen=True, slots=True)
class Withdrawn:
    """Routes (or a whole edge) taken out of the map by a config change."""

    edge: EdgeName
    routes: tuple[Network, ...]
    reason: str
    whole_edge: bool


REASON_UNCONFIGURED = "edge no longer configured"
REASON_KEY_CHANGED = "configured public key changed"
REASON_NOT_ALLOWED = "route no longer allowed"


def route_order(net: Network) -> tuple[int, int, int]:
    """The canonical order of routes in a map entry."""
    return (net.version, int(net.network_address), net.prefixlen)


def inside(route: Network, allowed: Iterable[Network]) -> bool:
    """True when `route` is a subnet of (or equal to) one of `allowed`."""
    return any(
        route.version == a.version and route.subnet_of(a)  # type: ignore[arg-type]
        for a in allowed
    )


class Registry:
    """Allowed edges, admitted entries and the version. Not thread-safe: one owner."""

    __slots__ = ("_admitted", "_allowed", "_version")

    def __init__(self, state: RouteMap | None = None) -> None:
        """Start from a stored map (or empty at version 0) with no edges allowed.

        Call `apply_config` next: it withdraws whatever the stored map holds that the
        config no longer allows.

        Raises:
            MapError: `state` breaks a map rule.
        """
        state = (state or RouteMap(version=0)).validate()
        self._version = state.version
        self._admitted: dict[EdgeName, EdgeEntry] = {e.name: e for e in state.edges}
        self._allowed: dict[EdgeName, AllowedEdge] = {}

    @property
    def version(self) -> int:
        return self._version

    def allowed(self, name: str) -> AllowedEdge | None:
        """The configured edge called `name`, if any."""
        return self._allowed.get(EdgeName(name))

    def copy(self) -> Registry:
        """An independent registry with the same state (entries are immutable)."""
        other = Registry.__new__(Registry)
        other._version = self._version
        other._admitted = dict(self._admitted)
        other._allowed = dict(self._allowed)
        return other

    def register(self, reg: Registration) -> int:
        """Admit `reg` whole, or refuse it whole; return the map version including it.

        Raises:
            UnknownEdge: the name is not configured.
            KeyMismatch: the key is not the configured one.
            RouteNotAllowed: a route is outside the edge's allowed routes.
            RouteConflict: a route overlaps a route admitted for another edge.
        """
        allowed = self._allowed.get(reg.name)
        if allowed is None:
            raise UnknownEdge(f"edge {reg.name!r} is not configured on this controller")
        if reg.public_key != allowed.public_key:
            raise KeyMismatch(
                f"public key {reg.public_key} is not the key configured for edge {reg.name!r}"
            )
        for route in reg.routes:
            if not inside(route, allowed.routes):
                listed = ", ".join(str(r) for r in allowed.routes) or "none"
                raise RouteNotAllowed(
                    f"route {route} is not inside the routes allowed for edge {reg.name!r}; "
                    f"allowed: {listed}"
                )
        for route in reg.routes:
            for other in self._admitted.values():
                if other.name == reg.name:
                    continue
                for theirs in other.routes:
                    if overlaps(route, theirs):
                        raise RouteConflict(
                            f"route {route} overlaps route {theirs} admitted for edge "
                            f"{other.name!r}"
                        )
        entry = EdgeEntry(
            name=reg.name,
            public_key=allowed.public_key,
            endpoints=reg.endpoints,
            routes=tuple(sorted(reg.routes, key=route_order)),
        )
        if self._admitted.get(reg.name) != entry:
            self._admitted[reg.name] = entry
            self._version += 1
        return self._version

    def apply_config(self, edges: Iterable[AllowedEdge]) -> tuple[Withdrawn, ...]:
        """Replace the allowed edges; withdraw what they no longer allow.

        Drops admitted edges that are no longer configured or whose configured key
        changed, and admitted routes no longer inside the edge's allowed routes. The
        version rises by one if anything was withdrawn.

        Raises:
            ValueError: two allowed edges share a name or a key (config.parse refuses both);
                the registry is then unchanged.
        """
        allowed: dict[EdgeName, AllowedEdge] = {}
        keys: set[bytes] = set()
        for e in edges:
            if e.name in allowed:
                raise ValueError(f"edge {e.name!r} is configured twice")
            if e.public_key.raw in keys:
                raise ValueError(f"edge {e.name!r} has the key of another configured edge")
            allowed[e.name] = e
            keys.add(e.public_key.raw)
        withdrawn: list[Withdrawn] = []
        admitted: dict[EdgeName, EdgeEntry] = {}
        for name, entry in self._admitted.items():
            conf = allowed.get(name)
            if conf is None:
                withdrawn.append(Withdrawn(name, entry.routes, REASON_UNCONFIGURED, True))
                continue
            if conf.public_key != entry.public_key:
                withdrawn.append(Withdrawn(name, entry.routes, REASON_KEY_CHANGED, True))
                continue
            keep = tuple(r for r in entry.routes if inside(r, conf.routes))
            if keep != entry.routes:
                gone = tuple(r for r in entry.routes if r not in keep)
                withdrawn.append(Withdrawn(name, gone, REASON_NOT_ALLOWED, False))
                entry = EdgeEntry(entry.name, entry.public_key, entry.endpoints, keep)
            admitted[name] = entry
        self._allowed = allowed
        self._admitted = admitted
        if withdrawn:
            self._version += 1
        return tuple(withdrawn)

    def snapshot(self) -> RouteMap:
        """The current map, edges in name order, validated.

        Raises:
            MapError: never, unless the rules above are broken (a bug).
        """
        edges = tuple(self._admitted[n] for n in sorted(self._admitted))
        return RouteMap(version=self._version, edges=edges).validate()
