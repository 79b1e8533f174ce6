"""The tunnel's timers (docs/protocol.md, "Sessions and timers"): constants and hooks.

Owns the numbers every timer of the core is computed from, with WireGuard's values as
defaults, and the rules that make them consistent. Overridable through the edge config's
`[tunnel]` table so tests and labs can shrink them; nothing here reads a clock.

Owns too every write of a peer's timer slots (`last_sent`, `keepalive_at`,
`unanswered_since`, `last_received`, `last_initiation_at`, `last_handshake`, `handshakes`),
behind named hooks the data path calls as things happen (wireguard-go's
timers.go): `data_sent`, `data_authenticated`, `data_received`, `handshake_sent`,
`handshake_received`, `initiation_accepted`, `handshake_complete`, `probe_sent`,
`unanswered_fired`, `keepalive_fired`, `persistent_keepalive_fired`. No other module
assigns those slots (`data_sent` and `data_received` also count the data traffic, so a
seal's bookkeeping is one call). The hooks are plain functions of (peer, now, ...): cheap enough for
the hot path, and testable on a manual clock. The deadlines they set are read by
`deadlines`, the one statement of when a peer's timer is due.

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
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from edge.tunnel.peer import PeerState

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


# -- hooks: the only writers of a peer's timer slots -------------------------------------


def data_sent(peer: PeerState, now: float, packets: int, size: int, expect_answer: bool) -> None:
    """`packets` sealed messages with `size` plaintext bytes in all left for the peer (0
    packets: a keepalive). Any send makes a passive keepalive unnecessary; with
    `expect_answer` (data from the TUN, not a flushed queue) the unanswered-data clock starts
    unless it runs."""
    peer.tx_packets += packets
    peer.tx_bytes += size
    peer.last_sent = now
    peer.keepalive_at = None
    if expect_answer and peer.unanswered_since is None:
        peer.unanswered_since = now


def probe_sent(peer: PeerState, now: float) -> None:
    """A probe left on a session: like data, no answer at all finds a dead session."""
    if peer.unanswered_since is None:
        peer.unanswered_since = now


def data_authenticated(peer: PeerState, now: float) -> None:
    """A data message (or keepalive) from the peer opened: the peer is alive."""
    peer.last_received = now
    peer.unanswered_since = None


def data_received(peer: PeerState, now: float, size: int, keepalive_timeout: float) -> None:
    """An IP packet of `size` bytes from the peer goes to the TUN: answer it within
    `keepalive_timeout` (a passive keepalive) unless data goes out before."""
    peer.rx_packets += 1
    peer.rx_bytes += size
    if peer.keepalive_at is None:
        peer.keepalive_at = now + keepalive_timeout


def handshake_sent(peer: PeerState, now: float) -> None:
    """An initiation or a response of ours left for the peer."""
    peer.last_sent = now


def handshake_received(peer: PeerState, now: float) -> None:
    """A handshake message from the peer authenticated (an initiation or a response)."""
    peer.last_received = now


def initiation_accepted(peer: PeerState, now: float) -> None:
    """An initiation from the peer was accepted (the next one is rate limited from now)."""
    peer.last_initiation_at = now


def handshake_complete(peer: PeerState, now: float) -> None:
    """A session with the peer is in use: a response opened, or a responder's session was
    confirmed by its first data message."""
    peer.handshakes += 1
    peer.last_handshake = now


def unanswered_fired(peer: PeerState) -> None:
    """The unanswered-data deadline passed (a new handshake starts): the clock stops."""
    peer.unanswered_since = None


def keepalive_fired(peer: PeerState) -> None:
    """The passive keepalive deadline passed (a keepalive is sent if it can be)."""
    peer.keepalive_at = None


def persistent_keepalive_fired(peer: PeerState, now: float) -> None:
    """The persistent keepalive fired; the next is a full period away even when nothing
    could be sent (a handshake in flight)."""
    peer.last_sent = now


def last_sent(peer: PeerState) -> float:
    """When we last sent the peer anything (its creation before that)."""
    return peer.last_sent if peer.last_sent is not None else peer.created


def unanswered_timeout(timers: Timers) -> float:
    """How long data may go unanswered before a new handshake starts (WireGuard's
    KEEPALIVE_TIMEOUT + REKEY_TIMEOUT)."""
    return timers.keepalive_timeout + timers.rekey_timeout


def deadlines(peer: PeerState, timers: Timers) -> list[float]:
    """Every deadline of the peer: session expiries, the handshake retry, the passive
    keepalive, the unanswered-data timeout and the persistent keepalive."""
    due = [s.reject_at for s in peer.sessions()]
    if peer.pending is not None:
        due.append(peer.pending.retry_at)
    if peer.keepalive_at is not None:
        due.append(peer.keepalive_at)
    if peer.unanswered_since is not None:
        due.append(peer.unanswered_since + unanswered_timeout(timers))
    persistent = timers.persistent_keepalive
    if persistent and peer.endpoint is not None:
        due.append(last_sent(peer) + persistent)
    return due
