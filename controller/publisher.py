"""The publisher: the current map and every watcher waiting for a newer one.

Owns fan-out of map versions, in the gRPC health `Watch` model: a watcher gets the
current map at once, then each newer map as soon as it is published. A slow watcher
may skip versions (it only needs the latest map), never sees one go backwards within an
epoch and never makes `publish` wait. A map of another epoch (the state was created
anew) is published whatever its version: it starts another lineage. `close` ends every
watch for a graceful shutdown. Must be used from one event loop; holds no I/O.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from isthmus.mapsig import SignedMap
from isthmus.routemap import RouteMap


class Publisher:
    """Holds the current `SignedMap` and wakes watchers when a newer one is published."""

    __slots__ = ("_closed", "_cond", "_current", "_watchers")

    def __init__(self, initial: SignedMap | None = None) -> None:
        self._current = initial or SignedMap(RouteMap(version=0))
        self._cond = asyncio.Condition()
        self._closed = False
        self._watchers = 0

    @property
    def current(self) -> SignedMap:
        return self._current

    @property
    def watchers(self) -> int:
        """How many watches are running (for logs and tests)."""
        return self._watchers

    async def publish(self, snapshot: SignedMap) -> None:
        """Make `snapshot` current and wake the watchers; an older or equal version of the
        same epoch is ignored."""
        async with self._cond:
            if self._closed:
                return
            current = self._current
            if snapshot.epoch == current.epoch and snapshot.version <= current.version:
                return
            self._current = snapshot
            self._cond.notify_all()

    async def close(self) -> None:
        """End every watch (after it has sent what it holds) and refuse new ones."""
        async with self._cond:
            self._closed = True
            self._cond.notify_all()

    async def watch(self) -> AsyncGenerator[SignedMap, None]:
        """Yield the current map, then each newer one, until `close` or the caller stops.

        Close the iterator (`contextlib.aclosing`) when stopping early so the watcher
        count stays right.
        """
        if self._closed:
            return
        self._watchers += 1
        try:
            sent = self._current
            yield sent
            while True:
                async with self._cond:
                    while not self._closed and self._current is sent:
                        await self._cond.wait()
                    if self._closed:
                        return
                    sent = self._current
                yield sent
        finally:
            self._watchers -= 1
