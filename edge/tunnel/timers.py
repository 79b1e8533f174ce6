"""The tunnel's timing constants (docs/protocol.md, "Sessions and timers").

Owns the numbers every timer of the core is computed from, with WireGuard's values as
defaults, and the rules that make them consistent. Overridable through the edge config's
`[tunnel]` table so tests and labs can shrink them; nothing here reads a clock.

Rules (checked at construction, `ValueError` naming the field):
- every time is finite; every time but the jitter and the persistent keepalive is positive;
  the jitter and the persistent keepalive (0 = off) are at least 0;
- REJECT_AFTER_TIME > REKEY_AFTER_TIME + REKEY_TIMEOUT + jitter: the responder rekeys at
  REKEY_AFTER_TIME + REKEY_TIMEOUT and must still hold a usable session when it does;
- REKEY_ATTEMPT_TIME >= REKEY_TIMEOUT: at least one retry before giving up;
- 0 < REKEY_AFTER_MESSAGES < REJECT_AFTER_MESSAGES <= 2^64 - 2^13 - 1 (the replay window
  never accepts a counter at or above that).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Final

MAX_REJECT_AFTER_MESSAGES: Final = 2**64 - 2**13 - 1


@dataclass(frozen=True, slots=True)
class Timers:
    """Times in seconds of the `now` clock, message counts per session."""

    rekey_after_time: float = 120.0
    reject_after_time: float = 180.0
    rekey_timeout: float = 5.0
    rekey_timeout_jitter: float = 0.333
    rekey_attempt_time: float = 90.0
    keepalive_timeout: float = 10.0
    persistent_keepalive: float = 0.0  # 0: off
    rekey_after_messages: int = 2**60
    reject_after_messages: int = MAX_REJECT_AFTER_MESSAGES

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{f.name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{f.name} must be finite, got {value!r}")
            floor_ok = value >= 0 if f.name in _MAY_BE_ZERO else value > 0
            if not floor_ok:
                allowed = "at least 0" if f.name in _MAY_BE_ZERO else "positive"
                raise ValueError(f"{f.name} must be {allowed}, got {value!r}")
        responder_rekey = self.rekey_after_time + self.rekey_timeout + self.rekey_timeout_jitter
        if not self.reject_after_time > responder_rekey:
            raise ValueError(
                f"reject_after_time ({self.reject_after_time}) must be greater than "
                f"rekey_after_time + rekey_timeout + rekey_timeout_jitter ({responder_rekey})"
            )
        if not self.rekey_attempt_time >= self.rekey_timeout:
            raise ValueError(
                f"rekey_attempt_time ({self.rekey_attempt_time}) must be at least "
                f"rekey_timeout ({self.rekey_timeout})"
            )
        for name in ("rekey_after_messages", "reject_after_messages"):
            if not isinstance(getattr(self, name), int):
                raise ValueError(f"{name} must be an integer, got {getattr(self, name)!r}")
        if not self.rekey_after_messages < self.reject_after_messages:
            raise ValueError(
                f"reject_after_messages ({self.reject_after_messages}) must be greater than "
                f"rekey_after_messages ({self.rekey_after_messages})"
            )
        if self.reject_after_messages > MAX_REJECT_AFTER_MESSAGES:
            raise ValueError(
                f"reject_after_messages must be at most 2^64 - 2^13 - 1, "
                f"got {self.reject_after_messages}"
            )


_MAY_BE_ZERO: Final = frozenset({"rekey_timeout_jitter", "persistent_keepalive"})
