"""The index table: which session or pending handshake a received index names.

Owns this edge's 32-bit indices. Every data packet, response and cookie reply names its
receiver by one of them, so a lookup here is the first thing the receive path does.

Rules:
- An index is random (from the injected source) and unique among this edge's live sessions
  and pending handshakes; it is never reused while either still holds it.
- A session is registered from its creation until it is erased (expiry, replacement, map
  change); a pending handshake from its initiation until its response, retry or give-up.
  The tunnel unregisters whatever `PeerState` hands back as dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from edge.tunnel.session import Session

if TYPE_CHECKING:
    from edge.tunnel.peer import PeerState

_INDEX_BYTES = 4


class IndexTable:
    """index -> Session (`sessions`) and index -> PeerState awaiting a response (`pending`).

    Both dicts are public and read directly by the receive path.
    """

    __slots__ = ("_random", "pending", "sessions")

    def __init__(self, random: Callable[[int], bytes]) -> None:
        self._random = random
        self.sessions: dict[int, Session] = {}
        self.pending: dict[int, PeerState] = {}

    def __len__(self) -> int:
        return len(self.sessions) + len(self.pending)

    def allocate(self) -> int:
        """A fresh random index no live session or pending handshake holds."""
        while True:
            index = int.from_bytes(self._random(_INDEX_BYTES), "little")
            if index not in self.sessions and index not in self.pending:
                return index

    def add_session(self, session: Session) -> None:
        self.pending.pop(session.index, None)
        self.sessions[session.index] = session

    def add_pending(self, index: int, peer: PeerState) -> None:
        self.pending[index] = peer

    def remove_sessions(self, sessions: Iterable[Session]) -> None:
        for session in sessions:
            if self.sessions.get(session.index) is session:
                del self.sessions[session.index]

    def remove_pending(self, index: int | None) -> None:
        if index is not None:
            self.pending.pop(index, None)
