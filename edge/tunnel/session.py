"""A session: the transport keys between this edge and one peer, from one handshake.

Owns a session's keys, its send counter and replay window, and the time rules of
docs/protocol.md "Sessions and timers" as predicates over `now`. It sends and receives
nothing itself: the data path reads its slots directly (hot path) and the peer decides
which session is current.

Rules:
- The send counter only counts up; `can_send` is False from REJECT_AFTER_MESSAGES on, so a
  (key, counter) pair is never sealed twice.
- A session is usable, both ways, while `now < reject_at` (created + REJECT_AFTER_TIME);
  at and after that it is expired and must be erased.
- Rekey: the session's initiator wants a new handshake from REKEY_AFTER_TIME on, the
  responder from REKEY_AFTER_TIME + REKEY_TIMEOUT (so the two sides do not race), both
  from REKEY_AFTER_MESSAGES sent on.
- `confirmed`: an initiator's session is confirmed at once (the response proved the peer
  holds the keys); a responder's once the first data packet on it authenticated.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Final

from edge.tunnel.replay import ReplayWindow
from edge.tunnel.timers import Timers

if TYPE_CHECKING:
    from edge.tunnel.peer import PeerState


# `Session.sending` verdicts (ints: the hot path compares them once per packet).
REFUSED: Final = 0
SEND: Final = 1
REKEY: Final = 2


class Role(enum.Enum):
    """Which side of the handshake this edge was for a session."""

    INITIATOR = "initiator"
    RESPONDER = "responder"


class Session:
    """One session. Mutable only in `send_counter`, `window` and `confirmed`."""

    __slots__ = (
        "confirmed",
        "created",
        "index",
        "peer",
        "recv_key",
        "reject_at",
        "reject_messages",
        "rekey_at",
        "rekey_messages",
        "remote_index",
        "role",
        "send_counter",
        "send_key",
        "window",
    )

    def __init__(
        self,
        *,
        index: int,
        remote_index: int,
        peer: PeerState,
        send_key: bytes,
        recv_key: bytes,
        role: Role,
        created: float,
        timers: Timers,
    ) -> None:
        self.index = index  # ours: the receiver index of data packets sent to us
        self.remote_index = remote_index  # the peer's: written into data packets we send
        self.peer = peer
        self.send_key = send_key
        self.recv_key = recv_key
        self.role = role
        self.created = created
        self.send_counter = 0
        self.window = ReplayWindow()
        self.confirmed = role is Role.INITIATOR
        self.reject_at = created + timers.reject_after_time
        self.rekey_at = created + timers.rekey_after_time
        if role is Role.RESPONDER:
            self.rekey_at += timers.rekey_timeout
        self.rekey_messages = timers.rekey_after_messages
        self.reject_messages = timers.reject_after_messages

    def __repr__(self) -> str:
        return (
            f"Session(index={self.index}, peer={self.peer.name!r}, role={self.role.value}, "
            f"created={self.created}, sent={self.send_counter}, confirmed={self.confirmed})"
        )

    def sending(self, now: float, count: int = 1) -> int:
        """What sending `count` more messages now is: REFUSED (at or past REJECT_AFTER_TIME,
        or past REJECT_AFTER_MESSAGES), REKEY (allowed, and the rekey rules of the module
        want a new handshake) or SEND. The one statement of both rules: the data path asks
        it once per packet (or run); `can_send` and `needs_rekey` read it."""
        counter = self.send_counter + count
        if now >= self.reject_at or counter > self.reject_messages:
            return REFUSED
        if now >= self.rekey_at or counter > self.rekey_messages:
            return REKEY
        return SEND

    def can_send(self, now: float, count: int = 1) -> bool:
        """True while younger than REJECT_AFTER_TIME and `count` more messages stay below
        REJECT_AFTER_MESSAGES. The data path seals exactly when this says so."""
        return self.sending(now, count) != REFUSED

    def expired(self, now: float) -> bool:
        """True from REJECT_AFTER_TIME on: nothing may be sent or received on it."""
        return now >= self.reject_at

    def needs_rekey(self, now: float, count: int = 1) -> bool:
        """True when `count` more messages may be sent on it and sending them should start a
        new handshake (see the module rules): asked before they are sent, as the data path
        does."""
        return self.sending(now, count) == REKEY

    def next_counter(self, count: int = 1) -> int:
        """The counter for the next of `count` sealed messages (they take it and the
        `count - 1` after it); the caller checked `can_send(now, count)`."""
        counter = self.send_counter
        self.send_counter = counter + count
        return counter
