"""The tunnel core: IP packets in from the TUN become datagrams out, and back.

Owns the whole data path of one edge, sans I/O: the shell hands it bytes and `now`
and gets back a datagram with its (host, port), or a packet for the TUN, or None
when the packet was dropped (and counted). It imports no I/O module, reads no clock
and draws no randomness: the salt and the time come in from the shell.

Error contract: `inside` and `outside` never raise for any input bytes; they drop
and count instead. If either raises, that is a bug in this package. The single
exception is `NonceExhausted` from `inside` after 2**64 - 1 packets, which no
process lives long enough to see.

Data path, by direction:
- inside (TUN -> UDP): parse the IP header (not_ip), find the peer owning the
  destination with an endpoint (no_route), seal under its shared key with the next
  nonce, frame.
- outside (UDP -> TUN): unframe (malformed), find the peer by sender id
  (unknown_peer), open (decrypt_failed), parse the IP header (not_ip), check that the
  source lies in the sender's routes (bad_inner_source). The UDP source address is
  not trusted for anything: NAT rewrites it; the key authenticates the sender.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.tunnel import crypto, ippacket, wire
from edge.tunnel.drops import DropCounters, DropReason
from edge.tunnel.forwarding import ForwardingTable, Identity
from isthmus.routemap import RouteMap

_MAX_PLAINTEXT = wire.MAX_PLAINTEXT
_NOT_IP = DropReason.NOT_IP
_NO_ROUTE = DropReason.NO_ROUTE
_MALFORMED = DropReason.MALFORMED
_UNKNOWN_PEER = DropReason.UNKNOWN_PEER
_DECRYPT_FAILED = DropReason.DECRYPT_FAILED
_BAD_INNER_SOURCE = DropReason.BAD_INNER_SOURCE


@dataclass(frozen=True, slots=True)
class PeerView:
    """A peer's counters at one moment, for status and metrics."""

    name: str
    endpoint: str | None
    rx_packets: int
    rx_bytes: int
    tx_packets: int
    tx_bytes: int
    last_rx: float | None  # the `now` of the last packet accepted from the peer


class Tunnel:
    """The data path of one edge. Not thread-safe: one caller drives it."""

    __slots__ = ("_drops", "_identity", "_nonces", "_sender_id", "_table")

    def __init__(self, identity: Identity, salt: bytes) -> None:
        """`salt`: 16 fresh random bytes per process start (the nonce salt).

        Raises:
            ValueError: the salt is not 16 bytes.
        """
        self._identity = identity
        self._nonces = crypto.NonceSource(salt)
        self._sender_id = crypto.sender_id(identity.public_key.raw)
        self._table = ForwardingTable.empty()
        self._drops = DropCounters()

    @property
    def identity(self) -> Identity:
        return self._identity

    @property
    def map_version(self) -> int:
        """The version of the map in use; 0 before any map."""
        return self._table.version

    def apply_map(self, route_map: RouteMap) -> None:
        """Forward by `route_map` from now on.

        Peers whose name and public key are unchanged keep their counters; the others
        start from zero, and peers no longer in the map are forgotten.

        Raises:
            MapError: the map breaks a map rule; the previous map stays in use.
        """
        self._table = ForwardingTable.build(self._identity, route_map, self._table.stats_by_key())

    # -- inside: TUN -> UDP ---------------------------------------------------------

    def inside(
        self, packet: bytes | bytearray | memoryview, now: float
    ) -> tuple[bytes, tuple[str, int]] | None:
        """Seal a packet read from the TUN: (datagram, (host, port)) to send, or None.

        Drops (counted): not_ip, no_route. Never raises for any input (see module doc).
        """
        parsed = ippacket.parse(packet)
        if parsed is None or len(packet) > _MAX_PLAINTEXT:
            self._drops.add(_NOT_IP)
            return None
        peer = self._table.routes.lookup(parsed[2])
        if peer is None or peer.sockaddr is None:
            self._drops.add(_NO_ROUTE)
            return None
        plaintext = packet if type(packet) is bytes else bytes(packet)
        nonce = self._nonces.next()
        box = crypto.seal(peer.shared_key, nonce, plaintext)
        stats = peer.stats
        stats.tx_packets += 1
        stats.tx_bytes += len(plaintext)
        return wire.pack_data(self._sender_id, nonce, box), peer.sockaddr

    # -- outside: UDP -> TUN --------------------------------------------------------

    def outside(
        self, datagram: bytes | bytearray | memoryview, addr: tuple[str, int], now: float
    ) -> bytes | None:
        """Open a datagram received on UDP: the IP packet to write to the TUN, or None.

        `addr` is where it came from; it is not used to authenticate. Drops (counted):
        malformed, unknown_peer, decrypt_failed, not_ip, bad_inner_source.
        Never raises for any input.
        """
        try:
            sender_id, nonce, box = wire.unpack_data(datagram)
        except wire.MalformedPacket:
            self._drops.add(_MALFORMED)
            return None
        table = self._table
        peer = table.senders.get(sender_id)
        if peer is None:
            self._drops.add(_UNKNOWN_PEER)
            return None
        packet = crypto.open_(peer.shared_key, nonce, bytes(box))
        if packet is None:
            self._drops.add(_DECRYPT_FAILED)
            return None
        parsed = ippacket.parse(packet)
        if parsed is None:
            self._drops.add(_NOT_IP)
            return None
        # Only the owner of the source may send from it: this also refuses a peer's
        # packet reflected back to us, which opens under the same shared key.
        if table.routes.lookup(parsed[1]) is not peer:
            self._drops.add(_BAD_INNER_SOURCE)
            return None
        stats = peer.stats
        stats.rx_packets += 1
        stats.rx_bytes += len(packet)
        stats.last_rx = now
        return packet

    # -- counters -------------------------------------------------------------------

    def count_drop(self, reason: DropReason) -> None:
        """Count a drop the shell saw (send_failed)."""
        self._drops.add(reason)

    def drops(self) -> dict[str, int]:
        """Every DropReason value -> count; all keys always present."""
        return self._drops.snapshot()

    def peers(self) -> list[PeerView]:
        """Every peer of the current map, by name."""
        return [
            PeerView(
                name=p.name,
                endpoint=str(p.endpoint) if p.endpoint is not None else None,
                rx_packets=p.stats.rx_packets,
                rx_bytes=p.stats.rx_bytes,
                tx_packets=p.stats.tx_packets,
                tx_bytes=p.stats.tx_bytes,
                last_rx=p.stats.last_rx,
            )
            for p in self._table.peers
        ]
