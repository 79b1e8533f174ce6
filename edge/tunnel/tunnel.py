"""The tunnel core: one edge's data path and handshakes, sans I/O.

Owns the composition of the core and its public API: the shell hands it packets from the
TUN (`inside`), datagrams from UDP (`outside`), the map (`apply_map`) and the time, and
drains what to send (`datagrams_to_send`), the next deadline (`get_timer`) and events
(`next_event`); `probe` sends an authenticated probe (edge.tunnel.probe). It imports no
I/O module and reads no clock but the injected wall clock (TAI64N timestamps only);
randomness is injected too, so tests are deterministic.

Error contract: `inside`, `outside` and `handle_timer` never raise for any input bytes;
they drop and count. If one does, that is a bug in this package. `apply_map` raises
MapError for a map that breaks a map rule and keeps the old map.

Map rules (docs/protocol.md "Roaming, revocation"):
- a peer is the same peer across versions while its name and public key are; it keeps its
  sessions, queue, counters and learned endpoint, but a changed advertised endpoint
  replaces the endpoint in use (an advertisement withdrawn, the peer now behind NAT,
  keeps the one in use: its greeting may have come before the map);
- behind NAT (`behind_nat`), every peer new in a map with an endpoint gets a handshake;
- a peer gone from the map, or whose key changed, loses every session, index, pending
  handshake and queued packet (no_session) at once; when its key changed and we had a
  session with it, a handshake with the new key starts at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edge.tunnel import timers as timers_
from edge.tunnel.context import Context
from edge.tunnel.drops import DropReason
from edge.tunnel.events import SessionExpired, TunnelEvent
from edge.tunnel.forwarding import ForwardingTable, Identity
from edge.tunnel.handshake import StaticKeys
from edge.tunnel.inside import Buffer, Sender
from edge.tunnel.outside import Receiver
from edge.tunnel.peer import HandshakeInput, PeerState, Sockaddr, advertised_endpoint
from edge.tunnel.probe import Prober
from edge.tunnel.timers import Timers
from isthmus.endpoint import IPAddress
from isthmus.routemap import EdgeEntry, RouteMap


@dataclass(frozen=True, slots=True)
class PeerView:
    """A peer at one moment, for status and metrics."""

    name: str
    endpoint: str | None  # in use: advertised, or learned from its latest packet
    rx_packets: int
    rx_bytes: int
    tx_packets: int
    tx_bytes: int
    last_rx: float | None  # the `now` of the last authenticated packet from the peer
    session_age: float | None  # of the current session
    handshakes: int  # completed
    last_handshake: float | None
    behind_nat: bool = False  # the map lists no endpoint: only its own packets tell where


class Tunnel:
    """The core of one edge. Not thread-safe: one caller drives it."""

    __slots__ = (
        "_addresses",
        "_behind_nat",
        "_context",
        "_greeted",
        "_identity",
        "_prober",
        "_receiver",
        "_sender",
        "_unanswered_timeout",
    )

    def __init__(
        self,
        identity: Identity,
        *,
        random: Callable[[int], bytes],
        wall_clock: Callable[[], float],
        timers: Timers = Timers(),  # noqa: B008 - frozen, so one shared default is safe
        greet: bool = False,
        behind_nat: bool = False,
        addresses: Sequence[IPAddress] = (),
    ) -> None:
        """`random(n)`: n random bytes (os.urandom); `wall_clock()`: Unix time (time.time),
        read only for handshake timestamps. Every `now` argument comes from one monotonic
        clock in seconds. `greet`: on the first map with peers, handshake with all of them
        at once (a process start: peers move off our previous process's sessions now).
        `behind_nat`: this edge advertises no endpoint, so no peer can start a session with
        it: it handshakes with every peer with an endpoint that is new in a map (all of the
        first map's), and peers learn its address from that session's data.
        `addresses`: this edge's own addresses (its TUN address): peers may send to them
        besides this edge's routes in the map (bad_inner_destination otherwise)."""
        self._identity = identity
        self._addresses = tuple(addresses)
        self._unanswered_timeout = timers_.unanswered_timeout(timers)
        self._greeted = not greet
        self._behind_nat = behind_nat
        self._context = Context(
            self_name=identity.name,
            static=StaticKeys(identity.private_key, identity.public_key.raw),
            random=random,
            wall_clock=wall_clock,
            timers=timers,
        )
        self._sender = Sender(self._context)
        self._prober = Prober(self._context, sender=self._sender)
        self._receiver = Receiver(self._context, sender=self._sender, probes=self._prober)

    @property
    def identity(self) -> Identity:
        return self._identity

    @property
    def timers(self) -> Timers:
        return self._context.timers

    @property
    def forwarding(self) -> ForwardingTable[PeerState]:
        """The forwarding table of the map in use (read-only): `owner` is the rule this
        tunnel forwards by, for `isthmus ping` and `isthmus explain` to ask."""
        return self._context.table

    @property
    def map_version(self) -> int:
        """The version of the map in use; 0 before any map."""
        return self._context.table.version

    # -- the map -------------------------------------------------------------------------

    def apply_map(self, route_map: RouteMap, now: float) -> None:
        """Forward by `route_map` from now on (see the module's map rules).

        Raises:
            MapError: the map breaks a map rule; the previous map stays in use.
        """
        old = {(p.name, p.public_key.raw): p for p in self._context.table.peers}
        kept: dict[PeerState, EdgeEntry] = {}

        def make_peer(entry: EdgeEntry) -> PeerState:
            peer = old.get((entry.name, entry.public_key.raw))
            if peer is None:
                return PeerState(entry, now)
            kept[peer] = entry
            return peer

        table = ForwardingTable.build(self._identity, route_map, make_peer, self._addresses)
        rekey: set[str] = set()
        for peer in self._context.table.peers:
            if peer not in kept:
                if peer.sessions():
                    rekey.add(peer.name)
                self._forget(peer)
        for peer, entry in kept.items():
            advertised = advertised_endpoint(entry)
            if advertised != peer.advertised:
                peer.advertised = advertised
                if advertised is not None:  # none (now behind NAT): keep what is in use
                    peer.endpoint = advertised
            peer.entry = entry
        self._context.table = table
        for peer in table.peers:
            if peer.name in rekey and peer not in kept:
                self._sender.start(peer, now)
        if self._behind_nat:
            # Behind NAT: a peer new in this map cannot reach us before we send to it.
            for peer in table.peers:
                if peer not in kept and peer.endpoint is not None and not peer.sessions():
                    self._sender.start(peer, now)
        if not self._greeted and table.peers:
            # The first map after a start: handshake with every peer at once, so peers
            # still sealing for our previous process's sessions move to new ones now
            # instead of after the unanswered-data timeout.
            self._greeted = True
            for peer in table.peers:
                if peer.endpoint is not None and not peer.sessions():
                    self._sender.start(peer, now)

    def _forget(self, peer: PeerState) -> None:
        index = self._context.index
        index.remove_sessions(peer.drop_sessions())
        if peer.pending is not None:
            index.remove_pending(peer.pending.initiator.sender_index)
        peer.step(HandshakeInput.RESET)
        if peer.queue:
            self._context.drops.add(DropReason.NO_SESSION, len(peer.queue))
            peer.queue.clear()

    # -- the data path -------------------------------------------------------------------

    def inside(self, packet: Buffer, now: float) -> tuple[bytes, tuple[str, int]] | None:
        """A packet read from the TUN: (datagram, endpoint) to send now on an established
        session, or None (queued while a handshake runs, or dropped and counted:
        not_ip, no_route, no_session). Never raises."""
        return self._sender.packet(packet, now)

    def outside(self, datagram: Buffer, addr: Sockaddr, now: float) -> bytes | None:
        """A datagram received from `addr`: the IP packet to write to the TUN, or None (a
        keepalive, a handshake message handled, or dropped and counted). Never raises."""
        return self._receiver.datagram(datagram, addr, now)

    def inside_in_place(
        self, buf: bytearray, at: int, size: int, now: float
    ) -> tuple[str, int] | None:
        """`inside` without copies: the packet is buf[at + OVERHEAD : at + OVERHEAD + size];
        on success the datagram is sealed into buf[at : at + OVERHEAD + size] and its
        endpoint returned. Never raises."""
        return self._sender.seal_in_place(buf, at, size, now)

    def inside_run_in_place(
        self, buf: bytearray, at: int, stride: int, sizes: Sequence[int], now: float
    ) -> tuple[str, int] | None:
        """`inside_in_place` for the segments of one super-packet (same IP addresses),
        packet i at buf[at + i * stride + OVERHEAD:]: their one endpoint when all were
        sealed, or None when none was (queued or dropped and counted). Never raises."""
        return self._sender.seal_run_in_place(buf, at, stride, sizes, now)

    def outside_in_place(
        self, buf: bytearray, at: int, size: int, addr: Sockaddr, now: float
    ) -> int:
        """`outside` without copies: the datagram is buf[at : at + size]; returns the
        length of the packet for the TUN, opened at buf[at + OVERHEAD:], or -1 (nothing to
        write). Never raises."""
        return self._receiver.open_in_place(buf, at, size, addr, now)

    def probe(self, edge: str, now: float) -> bytes:
        """Send a probe to the peer `edge` (edge.tunnel.probe): its id. It goes on the
        current session, or waits for a handshake started now; the answer is a
        ProbeAnswered event. Raises ProbeError: `edge` is us, not a peer, or has no
        endpoint."""
        peer = next((p for p in self._context.table.peers if p.name == edge), None)
        return self._prober.request(edge, peer, now)

    def datagrams_to_send(self) -> list[tuple[bytes, tuple[str, int]]]:
        """Drain the side output: handshake messages, cookie replies, keepalives, flushed
        queues, in the order they were made."""
        out = self._context.out
        if not out:
            return []
        result = list(out)
        out.clear()
        return result

    # -- timers --------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """The earliest deadline (handshake retry, keepalive, session expiry), or None."""
        deadline: float | None = None
        constants = self._context.timers
        for peer in self._context.table.peers:
            for due in timers_.deadlines(peer, constants):
                if deadline is None or due < deadline:
                    deadline = due
        return deadline

    def handle_timer(self, now: float) -> None:
        """Fire everything due at `now`; nothing happens for a deadline not yet reached."""
        context = self._context
        sender = self._sender
        persistent = context.timers.persistent_keepalive
        for peer in context.table.peers:
            pending = peer.pending
            if pending is not None and now >= pending.retry_at:
                sender.retry(peer, now)
            erased, current_expired = peer.expire(now)
            if erased:
                context.index.remove_sessions(erased)
                if current_expired:
                    context.events.append(SessionExpired(peer.name))
            unanswered = peer.unanswered_since
            if unanswered is not None and now >= unanswered + self._unanswered_timeout:
                timers_.unanswered_fired(peer)
                sender.start(peer, now)
            if peer.keepalive_at is not None and now >= peer.keepalive_at:
                timers_.keepalive_fired(peer)
                sender.keepalive(peer, now)
            if (
                persistent
                and peer.endpoint is not None
                and now >= timers_.last_sent(peer) + persistent
            ):
                if not sender.keepalive(peer, now):
                    sender.start(peer, now)
                timers_.persistent_keepalive_fired(peer, now)

    # -- events, counters, views ----------------------------------------------------------

    def next_event(self) -> TunnelEvent | None:
        """The oldest event not yet taken, or None."""
        events = self._context.events
        return events.popleft() if events else None

    def count_drop(self, reason: DropReason) -> None:
        """Count a drop the shell saw (send_failed)."""
        self._context.drops.add(reason)

    def drops(self) -> dict[str, int]:
        """Every DropReason value -> count; all keys always present."""
        return self._context.drops.snapshot()

    def peers(self, now: float) -> list[PeerView]:
        """Every peer of the current map, by name."""
        return [
            PeerView(
                name=p.name,
                endpoint=p.endpoint_text(),
                behind_nat=p.advertised is None,
                rx_packets=p.rx_packets,
                rx_bytes=p.rx_bytes,
                tx_packets=p.tx_packets,
                tx_bytes=p.tx_bytes,
                last_rx=p.last_received,
                session_age=now - p.current.created if p.current is not None else None,
                handshakes=p.handshakes,
                last_handshake=p.last_handshake,
            )
            for p in self._context.table.peers
        ]
