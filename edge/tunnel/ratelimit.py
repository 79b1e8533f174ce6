"""Handshake flood control: a token bucket per source address, and the load meter.

Owns the two checks of protocol.md steps 2 and 3 on a received initiation: "per-source-IP
token bucket (20/s, burst 5; bounded table)" and "under load (more than 64 handshake
messages in the last second; stays on for 1 s)". Both run per handshake message, never
per data packet. Time comes in as `now` (seconds, from one monotonic clock, never
decreasing); nothing here reads a clock.

Rules:
- SourceRateLimiter never holds more than `max_sources` buckets. A source without a bucket
  needs a free slot: when the table is full, buckets that are full again (idle) are purged
  first, oldest first; if the table is still full the new source is refused (False) and
  nothing is stored. Sources that already hold a bucket are never refused for lack of room,
  so a flood of spoofed sources cannot push out a busy legitimate one (a source idle long
  enough to be purged is new again, and may be refused while the flood lasts).
- The purge stops at the first bucket, in last-use order, that is still refilling: it costs
  O(buckets purged + 1), and it always frees every bucket unused for burst/rate seconds
  (those are full whatever they held), so a flood of new sources costs O(1) amortized.
- LoadMeter is exact: it keeps the times of the last threshold + 1 messages, so each call
  is O(1) and its memory is O(threshold).
- Neither class is thread-safe.
"""

from __future__ import annotations

from collections import OrderedDict, deque


class SourceRateLimiter:
    """A token bucket per source: `rate` tokens a second, at most `burst`; one per message."""

    __slots__ = ("_buckets", "_burst", "_max_sources", "_rate")

    def __init__(self, rate: float = 20.0, burst: int = 5, max_sources: int = 4096) -> None:
        """Raises ValueError for a rate that is not positive, or burst or max_sources below 1."""
        if not rate > 0:
            raise ValueError(f"rate must be positive, got {rate}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        if max_sources < 1:
            raise ValueError(f"max_sources must be at least 1, got {max_sources}")
        self._rate = float(rate)
        self._burst = float(burst)
        self._max_sources = max_sources
        # source -> (tokens at stamp, stamp), least recently used first.
        self._buckets: OrderedDict[bytes, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        """How many sources hold a bucket now."""
        return len(self._buckets)

    def allow(self, source: bytes, now: float) -> bool:
        """Take a token from the bucket of `source` (packed IP address bytes).

        False when that bucket is empty, or when `source` has no bucket and the table is full
        of buckets still refilling.
        """
        buckets = self._buckets
        bucket = buckets.get(source)
        if bucket is None:
            if len(buckets) >= self._max_sources and not self._purge(now):
                return False
            buckets[source] = (self._burst - 1.0, now)
            return True
        tokens, stamp = bucket
        # A clock that went backwards refills nothing, and the stamp never moves back.
        if now > stamp:
            tokens = min(self._burst, tokens + (now - stamp) * self._rate)
            stamp = now
        allowed = tokens >= 1.0
        buckets[source] = (tokens - 1.0 if allowed else tokens, stamp)
        buckets.move_to_end(source)
        return allowed

    def _purge(self, now: float) -> bool:
        """Drop full buckets from the least recently used end, stopping at the first bucket
        still refilling; True when a slot is free afterwards."""
        buckets = self._buckets
        rate, burst = self._rate, self._burst
        while buckets:
            tokens, stamp = next(iter(buckets.values()))
            if tokens + (now - stamp) * rate < burst:
                break
            buckets.popitem(last=False)
        return len(buckets) < self._max_sources


class LoadMeter:
    """Whether handshake messages arrive faster than `threshold` per `window` seconds.

    Under load at `now` when more than `threshold` messages were recorded in (now - window,
    now], and for `hold` seconds after the last instant that was so.
    """

    __slots__ = ("_hold", "_recent", "_threshold", "_until", "_window")

    def __init__(self, threshold: int = 64, window: float = 1.0, hold: float = 1.0) -> None:
        """Raises ValueError for a negative threshold, a window that is not positive, or a
        negative hold."""
        if threshold < 0:
            raise ValueError(f"threshold must not be negative, got {threshold}")
        if not window > 0:
            raise ValueError(f"window must be positive, got {window}")
        if not hold >= 0:
            raise ValueError(f"hold must not be negative, got {hold}")
        self._threshold = threshold
        self._window = float(window)
        self._hold = float(hold)
        # The times of the last threshold + 1 messages, oldest first.
        self._recent: deque[float] = deque(maxlen=threshold + 1)
        # Under load before this time.
        self._until = float("-inf")

    def record(self, now: float) -> None:
        """Count one handshake message received at `now`."""
        recent = self._recent
        recent.append(now)
        # More than threshold in the window from now until the oldest of the last
        # threshold + 1 leaves it; later messages only move that end later.
        if len(recent) > self._threshold:
            oldest = recent[0]
            if now - oldest < self._window:
                self._until = oldest + self._window + self._hold

    def under_load(self, now: float) -> bool:
        return now < self._until
