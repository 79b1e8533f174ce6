"""Map deltas: what changed between two map versions, and applying it.

Owns `MapDelta` and the two functions over it: `diff` (controller side, what to send
a watcher that has `old`) and `patch` (edge side, rebuild the new map from the one it
has). A delta carries whole edge entries, never parts of one, so applying it is
idempotent per entry. `patch` checks everything itself and validates the result:
a delta is input from the wire. Maps built here list edges sorted by name.
"""

from __future__ import annotations

from dataclasses import dataclass

from isthmus.ids import EdgeName
from isthmus.routemap import EdgeEntry, MapError, RouteMap


@dataclass(frozen=True, slots=True)
class MapDelta:
    """The change from map `base_version` to map `version`.

    `upserts` are the edges added or changed (whole entries), `removed` the names of
    edges gone; both sorted by name, no name in both.
    """

    base_version: int
    version: int
    upserts: tuple[EdgeEntry, ...] = ()
    removed: tuple[EdgeName, ...] = ()

    @property
    def empty(self) -> bool:
        """True when the delta changes no edge (it may still raise the version)."""
        return not self.upserts and not self.removed


def diff(old: RouteMap, new: RouteMap) -> MapDelta:
    """The delta that turns `old` into `new` (with new's edges sorted by name)."""
    before = {e.name: e for e in old.edges}
    after = {e.name: e for e in new.edges}
    upserts = tuple(sorted((e for e in new.edges if before.get(e.name) != e), key=lambda e: e.name))
    removed = tuple(sorted(name for name in before if name not in after))
    return MapDelta(base_version=old.version, version=new.version, upserts=upserts, removed=removed)


def patch(old: RouteMap, delta: MapDelta) -> RouteMap:
    """Apply `delta` to `old`; the result lists edges sorted by name and is validated.

    Raises:
        MapError: the delta is not from `old.version`, goes backwards, names an edge
            twice, removes an edge `old` does not have, or the result breaks a map rule.
    """
    if delta.base_version != old.version:
        raise MapError(
            f"the delta is from version {delta.base_version}, "
            f"but the map it applies to is version {old.version}"
        )
    if delta.version < delta.base_version:
        raise MapError(
            f"the delta goes backwards from version {delta.base_version} to {delta.version}"
        )
    edges = {e.name: e for e in old.edges}
    upserted: set[str] = set()
    for e in delta.upserts:
        if e.name in upserted:
            raise MapError(f"the delta changes edge {e.name!r} twice")
        upserted.add(e.name)
    removed: set[str] = set()
    for name in delta.removed:
        if name in removed:
            raise MapError(f"the delta removes edge {name!r} twice")
        if name in upserted:
            raise MapError(f"the delta both changes and removes edge {name!r}")
        if name not in edges:
            raise MapError(
                f"the delta removes edge {name!r}, which version {old.version} does not have"
            )
        removed.add(name)
        del edges[name]
    for e in delta.upserts:
        edges[e.name] = e
    ordered = tuple(edges[name] for name in sorted(edges))
    return RouteMap(version=delta.version, edges=ordered).validate()
