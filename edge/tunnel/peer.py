"""Per-peer state: its sessions, its handshake in flight, its queue, endpoint and counters.

Owns everything this edge remembers about one other edge between packets, and the one
handshake state machine. It sends nothing and allocates no index: the tunnel registers the
indices of the sessions and handshakes it hands in, and unregisters the ones returned.

Sessions (WireGuard's keypairs): `current` sends; `previous` still receives (the session a
new one replaced); `next` is a responder's session waiting for its first data packet.
- an initiator's new session becomes current at once; the old current (or an unconfirmed
  next, which the peer may already use) becomes previous;
- a responder's new session becomes next, replacing any next, and previous is erased;
- the first data packet on next makes it current, and the old current becomes previous.

The handshake state machine (the only writer of `state` is `step`):

| state     | START     | RETRY     | COOKIE    | RESPONSE | GIVE_UP | RESET |
|-----------|-----------|-----------|-----------|----------|---------|-------|
| IDLE      | INITIATED | refused   | refused   | refused  | refused | IDLE  |
| INITIATED | refused   | INITIATED | INITIATED | IDLE     | IDLE    | IDLE  |

A refused input changes nothing and `step` returns False; that is the one result of a
refusal. The caller then does nothing more: a START while INITIATED leaves the handshake in
flight to serve the new traffic; a RETRY or GIVE_UP while IDLE is a stale timer; a COOKIE
or RESPONSE while IDLE cannot be matched (the caller counts unknown_peer). `pending` is
not None exactly when the state is INITIATED: moving to INITIATED takes the new pending
handshake, moving to IDLE clears it.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Final

from edge.tunnel.cookie import COOKIE_LIFETIME
from edge.tunnel.handshake import InitiatorState
from edge.tunnel.session import Session
from isthmus.endpoint import format_sockaddr
from isthmus.keys import PublicKey
from isthmus.routemap import EdgeEntry

QUEUE_LIMIT: Final = 64
_NO_TIMESTAMP: Final = bytes(12)

Sockaddr = tuple[str, int]


class HandshakeState(enum.Enum):
    IDLE = "idle"  # no handshake of ours in flight
    INITIATED = "initiated"  # an initiation sent, waiting for its response


class HandshakeInput(enum.Enum):
    START = "start"  # a new session is needed (traffic, rekey, key change, keepalive)
    RETRY = "retry"  # REKEY_TIMEOUT passed without a response, the attempt still young
    COOKIE = "cookie"  # a cookie reply for the pending initiation opened
    RESPONSE = "response"  # the response to the pending initiation authenticated
    GIVE_UP = "give_up"  # REKEY_ATTEMPT_TIME passed without a response
    RESET = "reset"  # the peer's sessions and handshake are dropped


_IDLE: Final = HandshakeState.IDLE
_INITIATED: Final = HandshakeState.INITIATED

TRANSITIONS: Final[dict[tuple[HandshakeState, HandshakeInput], HandshakeState]] = {
    (_IDLE, HandshakeInput.START): _INITIATED,
    (_IDLE, HandshakeInput.RESET): _IDLE,
    (_INITIATED, HandshakeInput.RETRY): _INITIATED,
    (_INITIATED, HandshakeInput.COOKIE): _INITIATED,
    (_INITIATED, HandshakeInput.RESPONSE): _IDLE,
    (_INITIATED, HandshakeInput.GIVE_UP): _IDLE,
    (_INITIATED, HandshakeInput.RESET): _IDLE,
}


@dataclass(frozen=True, slots=True)
class Pending:
    """Our initiation in flight: one per attempt's send, a new one for each retry."""

    initiator: InitiatorState
    sent_at: float
    retry_at: float  # sent_at + REKEY_TIMEOUT + jitter
    attempt_start: float  # when this attempt (first initiation) began
    cookie: bytes | None = None  # the cookie its mac2 carried: a reply with it is not re-sent


class PeerState:
    """One peer. The data path reads and writes the slots directly."""

    __slots__ = (
        "_state",
        "advertised",
        "cookie",
        "cookie_at",
        "created",
        "current",
        "endpoint",
        "entry",
        "handshakes",
        "keepalive_at",
        "last_handshake",
        "last_initiation_at",
        "last_received",
        "last_sent",
        "last_timestamp",
        "next",
        "pending",
        "previous",
        "queue",
        "rx_bytes",
        "rx_packets",
        "tx_bytes",
        "tx_packets",
        "unanswered_since",
    )

    def __init__(self, entry: EdgeEntry, now: float) -> None:
        self.entry = entry
        self.created = now
        self.advertised: Sockaddr | None = advertised_endpoint(entry)
        self.endpoint: Sockaddr | None = self.advertised  # where we send: advertised or learned
        self.current: Session | None = None
        self.previous: Session | None = None
        self.next: Session | None = None
        self._state = _IDLE
        self.pending: Pending | None = None
        self.queue: deque[bytes] = deque()
        self.last_timestamp = _NO_TIMESTAMP  # TAI64N of the newest initiation accepted
        self.last_initiation_at: float | None = None
        self.cookie: bytes | None = None  # the latest cookie this peer sent us
        self.cookie_at = 0.0
        self.last_sent: float | None = None
        self.last_received: float | None = None  # the last authenticated packet
        self.keepalive_at: float | None = None  # a passive keepalive is due then
        # When data first went out with nothing authenticated back since (WireGuard's
        # "new handshake" rule: a peer that lost its sessions, e.g. restarted, is found so).
        self.unanswered_since: float | None = None
        self.handshakes = 0
        self.last_handshake: float | None = None
        self.rx_packets = 0
        self.rx_bytes = 0
        self.tx_packets = 0
        self.tx_bytes = 0

    def __repr__(self) -> str:
        return f"PeerState({self.name!r}, {self._state.value}, endpoint={self.endpoint})"

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def public_key(self) -> PublicKey:
        return self.entry.public_key

    # -- the handshake state machine ---------------------------------------------------

    @property
    def state(self) -> HandshakeState:
        return self._state

    def step(self, event: HandshakeInput, pending: Pending | None = None) -> bool:
        """Apply `event`; False (and nothing changed) when the machine refuses it.

        Moving to INITIATED requires `pending` (the new initiation), other moves ignore it.

        Raises:
            ValueError: a move to INITIATED without `pending` (a caller bug).
        """
        state = TRANSITIONS.get((self._state, event))
        if state is None:
            return False
        if state is _INITIATED:
            if pending is None:
                raise ValueError(f"{event.value} needs the pending initiation")
            self.pending = pending
        else:
            self.pending = None
        self._state = state
        return True

    # -- sessions ------------------------------------------------------------------------

    def sessions(self) -> list[Session]:
        return [s for s in (self.current, self.previous, self.next) if s is not None]

    def install_initiated(self, session: Session) -> list[Session]:
        """Make our new initiator session current; returns the sessions dropped."""
        dropped = [s for s in (self.previous,) if s is not None]
        if self.next is not None:
            # The peer may already send on its side of next; keep it receivable.
            self.previous, self.next = self.next, None
            if self.current is not None:
                dropped.append(self.current)
        else:
            self.previous = self.current
        self.current = session
        return dropped

    def install_responded(self, session: Session) -> list[Session]:
        """Hold a responder session as next until confirmed; returns the sessions dropped."""
        dropped = [s for s in (self.next, self.previous) if s is not None]
        self.next, self.previous = session, None
        return dropped

    def confirm(self, session: Session) -> list[Session]:
        """The first data packet arrived on `session` (our next); returns those dropped."""
        dropped = [s for s in (self.previous,) if s is not None]
        self.previous, self.current, self.next = self.current, session, None
        session.confirmed = True
        return dropped

    def expire(self, now: float) -> tuple[list[Session], bool]:
        """Erase every expired session: (the sessions erased, whether current was one)."""
        erased: list[Session] = []
        current_expired = False
        if self.current is not None and self.current.expired(now):
            erased.append(self.current)
            self.current = None
            current_expired = True
        if self.previous is not None and self.previous.expired(now):
            erased.append(self.previous)
            self.previous = None
        if self.next is not None and self.next.expired(now):
            erased.append(self.next)
            self.next = None
        return erased, current_expired

    def drop_sessions(self) -> list[Session]:
        """Erase every session; returns them (for their indices)."""
        dropped = self.sessions()
        self.current = self.previous = self.next = None
        return dropped

    # -- queue, cookie, endpoint ------------------------------------------------------------

    def enqueue(self, packet: bytes) -> bool:
        """Queue a packet for the next session; True when the oldest one was dropped."""
        queue = self.queue
        full = len(queue) >= QUEUE_LIMIT
        if full:
            queue.popleft()
        queue.append(packet)
        return full

    def fresh_cookie(self, now: float) -> bytes | None:
        """The peer's cookie while younger than COOKIE_LIFETIME, else None."""
        if self.cookie is not None and now - self.cookie_at < COOKIE_LIFETIME:
            return self.cookie
        return None

    def endpoint_text(self) -> str | None:
        return format_sockaddr(*self.endpoint) if self.endpoint is not None else None


def advertised_endpoint(entry: EdgeEntry) -> Sockaddr | None:
    """The map's first endpoint of `entry` as (host, port), or None."""
    return entry.endpoints[0].sockaddr() if entry.endpoints else None
