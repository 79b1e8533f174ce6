"""The log of refused calls, rate limited: one line per (reason, source) every 10 s.

Owns how a refusal reaches the log. A refused call is cheap for a caller to repeat, so a
line per refusal would let anyone fill the disk and burn the controller's CPU on logging.
`RefusalLog.refused` writes the first refusal of a (reason, source) pair at once, then
nothing for that pair for `interval` seconds; the next line it writes for the pair says
how many were left out meanwhile (`suppressed=N`). `reason` is a short code from a
bounded set (controller.guard); the line also carries the message of the refusal, which
holds public data only (isthmus.auth, controller.errors).

The table of pairs is bounded (`max_pairs`, least recently used forgotten): a forgotten
pair logs again at its next refusal, which bounds memory, not lines; lines stay bounded by
the refused-call rate limits in front of this log.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Final

from isthmus.logfmt import kv

INTERVAL: Final = 10.0
MAX_PAIRS: Final = 4096


class RefusalLog:
    """Writes `call_refused` lines to `log`, at most one per (reason, source) per interval."""

    def __init__(
        self,
        log: logging.Logger,
        interval: float = INTERVAL,
        max_pairs: int = MAX_PAIRS,
        level: int = logging.WARNING,
    ) -> None:
        self._log = log
        self._interval = interval
        self._max = max_pairs
        self._level = level
        # (reason, source) -> [time of the last line, refusals left out since]
        self._pairs: OrderedDict[tuple[str, str], list[float]] = OrderedDict()

    def refused(
        self, now: float, reason: str, source: str, code: str, message: str, **fields: object
    ) -> bool:
        """Log one refusal (or count it as suppressed); True when a line was written."""
        key = (reason, source)
        seen = self._pairs.get(key)
        if seen is not None and now - seen[0] < self._interval:
            seen[1] += 1
            self._pairs.move_to_end(key)
            return False
        suppressed = int(seen[1]) if seen is not None else 0
        self._pairs[key] = [now, 0]
        self._pairs.move_to_end(key)
        if len(self._pairs) > self._max:
            self._pairs.popitem(last=False)
        self._log.log(
            self._level,
            kv(
                "call_refused",
                reason_code=reason,
                source=source,
                code=code,
                **fields,
                reason=message,
                suppressed=suppressed,
            ),
        )
        return True
