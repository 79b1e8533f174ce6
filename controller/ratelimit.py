"""Token buckets, one per key, in a bounded table (pure: the clock is an argument).

Owns the arithmetic of every rate limit the controller applies (controller.guard):
a bucket holds at most `burst` tokens, gains `rate` tokens a second, and a call takes one.
A call that finds less than one token is refused and told how long until one is there
(`Verdict.retry_after`, seconds), which goes into the refusal's message.

`Buckets` keeps one bucket per key (a source address, an edge name) in a table of at most
`max_keys` keys; when a new key would overflow it, the least recently used key is
forgotten. A forgotten key starts again with a full bucket, so the bound trades memory for
at most one extra burst per forgotten key; it never refuses a key it does not know.

Rules: never raises on a call; never allocates per call beyond a new key's bucket.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

K = TypeVar("K")

DEFAULT_MAX_KEYS: Final = 65_536


@dataclass(frozen=True, slots=True)
class Rate:
    """`rate` tokens a second, at most `burst` stored; a rate of 0 means no limit."""

    rate: float
    burst: int

    def __post_init__(self) -> None:
        if self.rate < 0 or self.burst < 1:
            raise ValueError(f"a rate is >= 0 per second with a burst >= 1, got {self}")

    @property
    def unlimited(self) -> bool:
        return self.rate == 0

    def describe(self) -> str:
        """The limit in words, for refusal messages: '2/s (burst 10)'."""
        per = f"{self.rate:g}/s" if self.rate >= 1 else f"{self.rate * 60:g}/min"
        return f"{per} (burst {self.burst})"


@dataclass(frozen=True, slots=True)
class Verdict:
    """One call's answer: allowed, or refused with the seconds until a token is there."""

    allowed: bool
    retry_after: float = 0.0


ALLOWED: Final = Verdict(True)


class _Bucket:
    __slots__ = ("at", "tokens")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at


class Buckets(Generic[K]):
    """One token bucket per key at `rate`; at most `max_keys` keys remembered."""

    def __init__(self, rate: Rate, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, got {max_keys}")
        self._rate = rate
        self._max = max_keys
        self._table: OrderedDict[K, _Bucket] = OrderedDict()

    @property
    def rate(self) -> Rate:
        return self._rate

    def __len__(self) -> int:
        return len(self._table)

    def take(self, key: K, now: float) -> Verdict:
        """Take one token of `key`'s bucket at time `now` (seconds, monotonic)."""
        if self._rate.unlimited:
            return ALLOWED
        bucket = self._refill(key, now)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return ALLOWED
        return Verdict(False, (1.0 - bucket.tokens) / self._rate.rate)

    def peek(self, key: K, now: float) -> Verdict:
        """Whether `take` would allow `key` now, without taking anything."""
        if self._rate.unlimited:
            return ALLOWED
        bucket = self._table.get(key)
        if bucket is None:
            return ALLOWED
        tokens = min(float(self._rate.burst), bucket.tokens + (now - bucket.at) * self._rate.rate)
        if tokens >= 1.0:
            return ALLOWED
        return Verdict(False, (1.0 - tokens) / self._rate.rate)

    def _refill(self, key: K, now: float) -> _Bucket:
        bucket = self._table.get(key)
        if bucket is None:
            bucket = self._table[key] = _Bucket(float(self._rate.burst), now)
            if len(self._table) > self._max:
                self._table.popitem(last=False)
            return bucket
        self._table.move_to_end(key)
        elapsed = max(0.0, now - bucket.at)
        bucket.tokens = min(float(self._rate.burst), bucket.tokens + elapsed * self._rate.rate)
        bucket.at = now
        return bucket


def retry_text(seconds: float) -> str:
    """'retry in 1.3 s': the end of every rate-limit refusal message."""
    return f"retry in {max(seconds, 0.1):.1f} s"
