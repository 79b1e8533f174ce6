"""Rate-limited debug logs of dropped packets, in the edge shell.

Owns `DropLog`: the tunnel core counts every drop and never logs per packet
(edge.tunnel.drops); the shell calls `check` every INTERVAL seconds, and it logs at
debug level one `packets_dropped` line per reason whose count rose since the last check,
with how many and the total. So a flood of bad packets makes at most one line per reason
per interval, whatever its rate. Lines carry the reason and counts only: no packet bytes,
no addresses, no keys.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final

from isthmus.logfmt import kv

INTERVAL: Final = 10.0  # seconds between checks

_log = logging.getLogger(__name__)


class DropLog:
    """Logs the growth of drop counters, at most one line per reason per `check`."""

    def __init__(self, drops: Callable[[], dict[str, int]], logger: logging.Logger = _log) -> None:
        self._drops = drops
        self._log = logger
        self._seen = dict(drops())

    def check(self) -> list[tuple[str, int, int]]:
        """Log, and return, (reason, dropped since the last check, total) for every reason
        that rose."""
        now = self._drops()
        rose = [
            (reason, total - self._seen.get(reason, 0), total)
            for reason, total in now.items()
            if total > self._seen.get(reason, 0)
        ]
        self._seen = dict(now)
        if self._log.isEnabledFor(logging.DEBUG):
            for reason, count, total in rose:
                self._log.debug(kv("packets_dropped", reason=reason, count=count, total=total))
        return rose

    async def run(self, interval: float = INTERVAL) -> None:
        """`check` every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            self.check()
