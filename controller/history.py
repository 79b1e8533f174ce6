"""The last published maps, signed, and their encoded `MapUpdate`s, shared by every watcher.

Owns signing each published map (isthmus.mapsig: once per version, never per watcher)
and what a Watch stream sends (docs/controller.md, "Resumable watch"): for a watcher at
`base` in epoch `base_epoch` and a signed map `target`,

    base_epoch != target.epoch  the whole map (another lineage: F5, a state created anew)
    base == target.version      an empty delta (full=false, base_version=version=base)
    base still held, older      the delta from the map at `base` to `target`
    otherwise (0 = none, pruned, or newer than `target`: another lineage) the whole map

Every update carries `target`'s epoch and signature: the signature is over the whole map
the watcher has after applying it, whether full or delta. Rules: holds the last `depth`
maps (default 256) by version, all of one epoch; versions only go up (an older or equal
map of the same epoch is ignored); a map of another epoch starts the history afresh. Each
update is encoded once per (epoch, base, version) and the same bytes object is handed to
every watcher that needs it; the memo is bounded. Pure: no I/O, no asyncio; one owner
(the service, on its event loop).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from isthmus.convert import delta_to_pb, signed_map_to_pb
from isthmus.mapdelta import diff
from isthmus.mapsig import SignedMap, sign_map
from isthmus.routemap import RouteMap
from isthmus.signing import ControllerKey

DEPTH: Final = 256
# Encodings kept: the shared one per new version, plus the few a slow or resuming
# watcher needs; four per held map is plenty.
MEMO_PER_MAP: Final = 4

# The memo key of a whole map (no base).
_FULL: Final = -1


class History:
    """The last `depth` published maps, signed, and a bounded memo of their encodings."""

    __slots__ = ("_depth", "_key", "_maps", "_memo", "_memo_size")

    def __init__(
        self, key: ControllerKey, epoch: bytes, initial: RouteMap, depth: int = DEPTH
    ) -> None:
        """Raises: ValueError for a depth below 1 or an epoch that is not 16 bytes."""
        if depth < 1:
            raise ValueError(f"depth {depth} is not a positive number of maps")
        self._depth = depth
        self._key = key
        first = sign_map(key, epoch, initial)
        self._maps: OrderedDict[int, SignedMap] = OrderedDict({initial.version: first})
        self._memo: OrderedDict[tuple[bytes, int, int], bytes] = OrderedDict()
        self._memo_size = depth * MEMO_PER_MAP

    @property
    def current(self) -> SignedMap:
        """The newest map added, signed."""
        return next(reversed(self._maps.values()))

    @property
    def epoch(self) -> bytes:
        """The epoch of every map held."""
        return self.current.epoch

    @property
    def versions(self) -> tuple[int, ...]:
        """The versions held, oldest first."""
        return tuple(self._maps)

    def knows(self, version: int) -> bool:
        return version in self._maps

    def add(self, m: RouteMap, epoch: bytes) -> SignedMap:
        """Sign and hold `m` as the newest map of `epoch`; the current map after it.

        Ignored unless newer than the current map; a map of another epoch replaces every
        map held (another lineage: its versions say nothing about the old ones).

        Raises:
            ValueError: `epoch` is not 16 bytes.
        """
        if epoch == self.epoch and m.version <= self.current.version:
            return self.current
        signed = sign_map(self._key, epoch, m)
        if epoch != self.epoch:
            self._maps.clear()
        self._maps[m.version] = signed
        while len(self._maps) > self._depth:
            self._maps.popitem(last=False)
        return signed

    def update_for(self, known_version: int, known_epoch: bytes) -> bytes:
        """The encoded first message for a watcher that has applied `known_version` of
        `known_epoch`."""
        return self.update(known_version, known_epoch, self.current)

    def update(self, base: int, base_epoch: bytes, target: SignedMap) -> bytes:
        """The encoded `MapUpdate` taking a watcher at version `base` of `base_epoch` to
        `target`.

        `target` is normally a held map; a map already pruned (a very slow watcher) is
        encoded all the same. Maps of one version and epoch are the same map.
        """
        old = (
            self._maps.get(base)
            if 0 < base <= target.version and base_epoch == target.epoch == self.epoch
            else None
        )
        key = (target.epoch, base if old is not None else _FULL, target.version)
        data = self._memo.get(key)
        if data is not None:
            self._memo.move_to_end(key)
            return data
        if old is None:
            data = signed_map_to_pb(target).SerializeToString(deterministic=True)
        else:
            delta = diff(old.route_map, target.route_map)
            msg = delta_to_pb(delta, epoch=target.epoch, signature=target.signature)
            data = msg.SerializeToString(deterministic=True)
        self._memo[key] = data
        while len(self._memo) > self._memo_size:
            self._memo.popitem(last=False)
        return data
