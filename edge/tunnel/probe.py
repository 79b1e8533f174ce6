"""Probes: an authenticated echo through a session, for `isthmus ping`.

Owns the probe codec, the table of probes in flight and what the core does with a probe
it receives. A probe is the plaintext of a data message (type 4) on a session, so it gets
every check data gets (session lookup, replay window, authentication); the session's peer
is the authenticated sender. The inner-source check does not apply: a probe has no inner
IP header.

Plaintext of a probe (inside the data message's box):
```
 0        1                                 9
 +--------+---------------------------------+
 |  kind  |  probe id (8 random bytes)      |
 +--------+---------------------------------+
 kind 0x01 request, 0x02 reply; nothing follows the id
```
A high nibble of 0 is never an IPv4 (4) or IPv6 (6) packet, so a plaintext starting with
0x00-0x0F is a probe or nothing: anything else with that first byte is dropped as
bad_probe. Request and reply are the same size: a probe never amplifies.

Rules:
- A request is answered with a reply carrying its id, sealed in the peer's current
  session (queued and a handshake started when there is none that can send, like data).
- A reply counts only when its id is a probe of ours in flight to the peer that answered;
  then `ProbeAnswered` is emitted and the probe leaves the table. Any other reply (unknown,
  expired or already answered id, or another peer's probe) drops as bad_probe.
- At most PENDING_LIMIT probes are in flight (the oldest is forgotten for a new one), and
  a probe is forgotten PROBE_LIFETIME seconds after it was sent.
- `receive` never raises for any plaintext bytes.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from edge.tunnel import timers
from edge.tunnel.context import Context
from edge.tunnel.drops import DropReason
from edge.tunnel.events import ProbeAnswered
from edge.tunnel.inside import Sender
from edge.tunnel.peer import PeerState

KIND_LEN: Final = 1
ID_LEN: Final = 8
PROBE_LEN: Final = KIND_LEN + ID_LEN
FIRST_BYTE_LIMIT: Final = 0x10  # a plaintext whose first byte is below this is a probe or nothing
PENDING_LIMIT: Final = 64
PROBE_LIFETIME: Final = 5.0

_BAD_PROBE: Final = DropReason.BAD_PROBE
_NO_SESSION: Final = DropReason.NO_SESSION


class ProbeKind(enum.IntEnum):
    REQUEST = 0x01
    REPLY = 0x02


class MalformedProbe(ValueError):
    """The plaintext is not a well-formed probe."""


class ProbeError(ValueError):
    """A probe cannot be sent to that edge; the message names the edge and the reason."""


@dataclass(frozen=True, slots=True)
class Probe:
    kind: ProbeKind
    probe_id: bytes


def encode(probe: Probe) -> bytes:
    """The plaintext of `probe`.

    Raises:
        ValueError: the id is not ID_LEN bytes (a caller bug).
    """
    if len(probe.probe_id) != ID_LEN:
        raise ValueError(f"a probe id is {ID_LEN} bytes, got {len(probe.probe_id)}")
    return bytes((probe.kind,)) + probe.probe_id


def decode(plaintext: bytes | bytearray | memoryview) -> Probe:
    """The probe in `plaintext`.

    Raises:
        MalformedProbe: not PROBE_LEN bytes, or an unknown kind.
    """
    if len(plaintext) != PROBE_LEN:
        raise MalformedProbe(f"a probe is {PROBE_LEN} bytes, got {len(plaintext)}")
    try:
        kind = ProbeKind(plaintext[0])
    except ValueError:
        raise MalformedProbe(f"unknown probe kind {plaintext[0]:#04x}") from None
    return Probe(kind, bytes(plaintext[KIND_LEN:]))


@dataclass(frozen=True, slots=True)
class InFlight:
    peer: str
    sent_at: float
    queued: bool  # it waited for a new session when sent


class PendingProbes:
    """Probes in flight by id, oldest first: bounded and expiring (see the module)."""

    __slots__ = ("_entries", "_lifetime", "_limit")

    def __init__(self, limit: int = PENDING_LIMIT, lifetime: float = PROBE_LIFETIME) -> None:
        self._entries: OrderedDict[bytes, InFlight] = OrderedDict()
        self._limit = limit
        self._lifetime = lifetime

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, probe_id: bytes, entry: InFlight) -> None:
        self.expire(entry.sent_at)
        entries = self._entries
        while len(entries) >= self._limit:
            entries.popitem(last=False)
        entries[probe_id] = entry

    def take(self, probe_id: bytes, peer: str, now: float) -> InFlight | None:
        """The probe `probe_id` sent to `peer`, removed; None when there is none in flight."""
        self.expire(now)
        entry = self._entries.get(probe_id)
        if entry is None or entry.peer != peer:
            return None
        del self._entries[probe_id]
        return entry

    def expire(self, now: float) -> None:
        """Forget every probe sent PROBE_LIFETIME or longer before `now`."""
        entries = self._entries
        while entries:
            entry = next(iter(entries.values()))
            if now - entry.sent_at < self._lifetime:
                break
            entries.popitem(last=False)


class Prober:
    """The probe half of a Tunnel: sends requests, answers them, matches replies."""

    __slots__ = ("_context", "_pending", "_sender")

    def __init__(self, context: Context, *, sender: Sender) -> None:
        self._context = context
        self._sender = sender
        self._pending = PendingProbes()

    def request(self, name: str, peer: PeerState | None, now: float) -> bytes:
        """Send a probe request to `peer` (the map's edge `name`, None when it is not a
        peer); its id.

        Raises:
            ProbeError: `name` is this edge, not a peer, or has no endpoint.
        """
        if peer is None:
            if name == self._context.self_name:
                raise ProbeError(f"{name!r} is this edge")
            raise ProbeError(f"no peer named {name!r}: not in the map, or its key is unusable")
        if peer.endpoint is None:
            raise ProbeError(f"edge {name!r} has no endpoint: none advertised, none learned")
        probe_id = self._context.random(ID_LEN)
        queued = self._send(peer, encode(Probe(ProbeKind.REQUEST, probe_id)), now)
        if not queued:
            timers.probe_sent(peer, now)
        self._pending.add(probe_id, InFlight(peer.name, now, queued))
        return probe_id

    def _send(self, peer: PeerState, plaintext: bytes, now: float) -> bool:
        """Seal `plaintext` in the peer's current session, or queue it and start a
        handshake (as data); True when queued."""
        if peer.enqueue(plaintext):
            self._context.drops.add(_NO_SESSION)
        session = peer.current
        if session is not None and peer.endpoint is not None and session.can_send(now):
            self._sender.flush(peer, now, keepalive=False)
            return False
        self._sender.start(peer, now)
        return True

    def receive(
        self, peer: PeerState, plaintext: bytes | bytearray | memoryview, now: float
    ) -> None:
        """An authenticated plaintext from `peer` whose first byte is below 0x10."""
        try:
            probe = decode(plaintext)
        except MalformedProbe:
            self._context.drops.add(_BAD_PROBE)
            return
        if probe.kind is ProbeKind.REQUEST:
            peer.rx_packets += 1
            peer.rx_bytes += PROBE_LEN
            self._send(peer, encode(Probe(ProbeKind.REPLY, probe.probe_id)), now)
            return
        sent = self._pending.take(probe.probe_id, peer.name, now)
        if sent is None or peer.endpoint is None:
            self._context.drops.add(_BAD_PROBE)
            return
        peer.rx_packets += 1
        peer.rx_bytes += PROBE_LEN
        self._context.events.append(
            ProbeAnswered(
                peer=peer.name,
                probe_id=probe.probe_id,
                rtt=max(0.0, now - sent.sent_at),
                endpoint=peer.endpoint,
                new_session=sent.queued,
            )
        )
