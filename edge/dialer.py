"""Which controller the edge dials next, and when: failover in order, with backoff.

Owns the edge's retry policy towards its controllers (docs/controller.md): controllers are
tried in the configured order; after any session ends the next one is tried after the
backoff delay; the backoff resets once a stream delivers. It dials nothing itself: the
watch loop (edge.control) asks `address`, runs its session, and calls `failed` or
`delivered`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from isthmus.logfmt import kv

_log = logging.getLogger("edge.control")


@dataclass(slots=True)
class Backoff:
    """Jittered exponential backoff: 0.5 s, x1.6 per failure, +-20%, at most 15 s."""

    initial: float = 0.5
    factor: float = 1.6
    maximum: float = 15.0
    jitter: float = 0.2
    rng: random.Random = field(default_factory=random.Random)
    _next: float = 0.0

    def reset(self) -> None:
        self._next = 0.0

    def delay(self) -> float:
        """The next delay to wait, growing until `reset`."""
        base = self.initial if self._next == 0.0 else min(self._next * self.factor, self.maximum)
        self._next = base
        return base * (1.0 + self.rng.uniform(-self.jitter, self.jitter))


class Dialer:
    """The controllers in order, the one in use, and the wait before the next."""

    __slots__ = ("_backoff", "_index", "_sleep", "targets")

    def __init__(
        self,
        controllers: Sequence[str],
        *,
        backoff: Backoff | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Raises: ValueError: no controller address."""
        if not controllers:
            raise ValueError("at least one controller address is needed")
        self.targets = tuple(controllers)
        self._index = 0
        self._backoff = backoff or Backoff()
        self._sleep = sleep

    @property
    def address(self) -> str:
        """The controller in use, or the one tried last while waiting to try the next."""
        return self.targets[self._index]

    def delivered(self) -> None:
        """A stream delivered: a later failure starts over at the initial delay."""
        self._backoff.reset()

    async def failed(self) -> None:
        """The session with `address` ended: wait the backoff delay, then move to the next
        controller (`address` stays the one that failed while waiting)."""
        delay = self._backoff.delay()
        following = self.targets[(self._index + 1) % len(self.targets)]
        _log.debug(kv("controller_retry", controller=following, after_seconds=round(delay, 2)))
        await self._sleep(delay)
        self._index = (self._index + 1) % len(self.targets)
