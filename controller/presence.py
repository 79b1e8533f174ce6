"""Which edges are connected, and what they last reported: this replica's liveness view.

Owns the watch-stream count per edge at this replica and the `Liveness` record it last
wrote for each edge (controller.liveness), and writes those records to the store:

- An edge is connected here while at least one of its Watch streams is open here. When
  its last stream ends the record turns "disconnected" (written without waiting: the
  stream may be ending by cancellation).
- A record this replica has not seen is read from the store first (another replica may
  have written it, etcd store); a record whose watch is open at another replica keeps
  that replica and "connected".
- Writes go one at a time, in call order (asyncio.Lock is FIFO), so a watch that ends
  right after it started never leaves "connected" behind.
- When the store cannot be read, this replica's records stand in (logged).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any

from controller.errors import StoreError
from controller.liveness import Liveness
from controller.store import Store
from isthmus.ids import EdgeName
from isthmus.logfmt import kv

# The controller service's logger: these lines are part of its log.
log = logging.getLogger("controller.service")

# Runs a coroutine in the background under a task name (the service owns the tasks).
Spawn = Callable[[Coroutine[Any, Any, None], str], None]


class Presence:
    """This replica's watch streams and liveness records, written through `store`."""

    def __init__(self, store: Store, spawn: Spawn) -> None:
        self._store = store
        self._spawn = spawn
        self._watching: dict[EdgeName, int] = {}
        self._live: dict[EdgeName, Liveness] = {}
        self._lock = asyncio.Lock()

    @property
    def streams(self) -> int:
        """Watch streams open at this replica."""
        return sum(self._watching.values())

    def watching(self, name: EdgeName) -> int:
        """Watch streams `name` has open at this replica."""
        return self._watching.get(name, 0)

    def watch_started(self, name: EdgeName) -> None:
        """One more Watch stream of `name` is open here (`announce` it next)."""
        self._watching[name] = self._watching.get(name, 0) + 1

    def watch_ended(self, name: EdgeName) -> None:
        """One Watch stream of `name` ended; the last one marks it disconnected."""
        left = self._watching.get(name, 0) - 1
        if left > 0:
            self._watching[name] = left
            return
        self._watching.pop(name, None)
        info = self._live.get(name)
        if info is not None:
            info = self._live[name] = replace(info, connected=False)
            # Not awaited: the stream may be ending by cancellation.
            self._spawn(self.put(info), "liveness")

    async def announce(self, name: EdgeName) -> None:
        """Record `name` as this replica sees it now; write it without waiting."""
        self._spawn(self.put(await self.record(name)), "liveness")

    async def record(self, name: EdgeName, **report: Any) -> Liveness:
        """This replica's view of `name`, with the `report` fields replaced; kept for later."""
        old = self._live.get(name)
        if old is None:  # another replica may have seen it (etcd store)
            old = (await self.shared()).get(name)
        if old is None:
            old = Liveness(name, self._store.replica, False, 0, "", 0.0)
        connected = self._watching.get(name, 0) > 0
        if connected or not old.connected:
            info = replace(old, replica=self._store.replica, connected=connected, **report)
        else:  # its watch is open at another replica
            info = replace(old, **report)
        self._live[name] = info
        return info

    async def put(self, info: Liveness) -> None:
        """Write `info` to the store, after every earlier write."""
        # One writer at a time, in call order (asyncio.Lock is FIFO), so a watch that ends
        # right after it started never leaves "connected" behind.
        async with self._lock:
            await self._store.set_liveness(info)

    async def shared(self) -> dict[EdgeName, Liveness]:
        """Every replica's records from the store, or this replica's when it fails."""
        try:
            return await self._store.liveness()
        except StoreError as e:
            log.warning(kv("liveness_unavailable", reason=str(e), using="this replica's view"))
            return dict(self._live)
