"""The last published maps and their encoded `MapUpdate`s, shared by every watcher.

Owns what a Watch stream sends (docs/controller.md, "Resumable watch"): for a watcher at
`base` and a map `target`,

    base == target.version      an empty delta (full=false, base_version=version=base)
    base still held, older      the delta from the map at `base` to `target`
    otherwise (0 = none, pruned, or newer than `target`: another lineage) the whole map

Rules: holds the last `depth` maps (default 256) by version; versions only go up (an
older or equal map is ignored). Each update is encoded once per (base, version) and the
same bytes object is handed to every watcher that needs it; the memo is bounded. Pure:
no I/O, no asyncio; one owner (the service, on its event loop).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from isthmus.convert import delta_to_pb, map_to_pb
from isthmus.mapdelta import diff
from isthmus.routemap import RouteMap

DEPTH: Final = 256
# Encodings kept: the shared one per new version, plus the few a slow or resuming
# watcher needs; four per held map is plenty.
MEMO_PER_MAP: Final = 4

# The memo key of a whole map (no base).
_FULL: Final = -1


class History:
    """The last `depth` published maps and a bounded memo of their encodings."""

    __slots__ = ("_depth", "_maps", "_memo", "_memo_size")

    def __init__(self, initial: RouteMap, depth: int = DEPTH) -> None:
        if depth < 1:
            raise ValueError(f"depth {depth} is not a positive number of maps")
        self._depth = depth
        self._maps: OrderedDict[int, RouteMap] = OrderedDict({initial.version: initial})
        self._memo: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._memo_size = depth * MEMO_PER_MAP

    @property
    def current(self) -> RouteMap:
        """The newest map added."""
        return next(reversed(self._maps.values()))

    @property
    def versions(self) -> tuple[int, ...]:
        """The versions held, oldest first."""
        return tuple(self._maps)

    def knows(self, version: int) -> bool:
        return version in self._maps

    def add(self, m: RouteMap) -> None:
        """Hold `m` as the newest map; ignored unless newer than the current one."""
        if m.version <= self.current.version:
            return
        self._maps[m.version] = m
        while len(self._maps) > self._depth:
            self._maps.popitem(last=False)

    def update_for(self, known_version: int) -> bytes:
        """The encoded first message for a watcher that has applied `known_version`."""
        return self.update(known_version, self.current)

    def update(self, base: int, target: RouteMap) -> bytes:
        """The encoded `MapUpdate` taking a watcher at version `base` to `target`.

        `target` is normally a held map; a map already pruned (a very slow watcher) is
        encoded all the same. Maps of one version are the same map (one lineage).
        """
        old = self._maps.get(base) if 0 < base <= target.version else None
        key = (base, target.version) if old is not None else (_FULL, target.version)
        data = self._memo.get(key)
        if data is not None:
            self._memo.move_to_end(key)
            return data
        if old is None:
            data = map_to_pb(target).SerializeToString(deterministic=True)
        else:
            data = delta_to_pb(diff(old, target)).SerializeToString(deterministic=True)
        self._memo[key] = data
        while len(self._memo) > self._memo_size:
            self._memo.popitem(last=False)
        return data
