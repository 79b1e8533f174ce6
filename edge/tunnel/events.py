"""What happened inside the tunnel that the shell may log or act on.

Owns the event types `Tunnel.next_event()` returns, oldest first. Events are facts about
peers (by name), never per data packet (a ProbeAnswered answers one probe an operator
sent), and carry no key material. Consumers dispatch with `match`.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.tunnel.session import Role


@dataclass(frozen=True, slots=True)
class HandshakeCompleted:
    """A new session with `peer` is in use: as initiator when its response arrived, as
    responder when the first data packet on it arrived (the session is confirmed)."""

    peer: str
    role: Role


@dataclass(frozen=True, slots=True)
class SessionExpired:
    """The current session with `peer` reached REJECT_AFTER_TIME and was erased."""

    peer: str


@dataclass(frozen=True, slots=True)
class EndpointChanged:
    """An authenticated packet from `peer` came from a new `endpoint` (host, port)."""

    peer: str
    endpoint: tuple[str, int]


@dataclass(frozen=True, slots=True)
class HandshakeFailed:
    """No response from `peer` within REKEY_ATTEMPT_TIME: its queue was dropped."""

    peer: str


@dataclass(frozen=True, slots=True)
class ProbeAnswered:
    """`peer` answered our probe `probe_id` (edge.tunnel.probe) from `endpoint` after `rtt`
    seconds; `new_session`: the probe waited for a handshake, which the rtt includes."""

    peer: str
    probe_id: bytes
    rtt: float
    endpoint: tuple[str, int]
    new_session: bool


TunnelEvent = (
    HandshakeCompleted | SessionExpired | EndpointChanged | HandshakeFailed | ProbeAnswered
)
