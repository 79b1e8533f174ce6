"""The data path shell: moves packets between the TUN, the tunnel core and the UDP socket.

Owns the readers on the event loop and the core's one timer, nothing else: no protocol
decisions here, the core decides (every datagram goes through the core's full checks:
session, replay window, authentication, inner source). Each wakeup drains up to BATCH
reads, so a busy side cannot starve the other, and leaves the rest for the next wakeup
(the readers are level-triggered). After each batch and each timer it sends the core's
side output (handshakes, cookie replies, keepalives, queued packets), logs its events and
arms the timer when the core's next deadline is earlier than the armed one (a later one
is left to fire early and re-arm). Must never raise out of a reader callback.

The fast path (docs/design.md, "Data plane"):
- TUN -> UDP: packets are read into one preallocated buffer, each behind room for the
  tunnel header, and sealed in place (`Tunnel.inside_in_place`), so the datagrams of a
  batch lie back to back; a run of equal-sized datagrams to one endpoint leaves in one
  `send_segments` call (UDP GSO). A TCP super-packet from a TUN with TSO is first cut into
  segments of at most the TUN MTU (`edge.segment`), which are sealed as a run
  (`Tunnel.inside_run_in_place`: one route and session decision, a counter each): no
  datagram is ever larger than the TUN MTU plus the tunnel overhead. A NEEDS_CSUM packet
  has its checksum completed before it is sealed.
- UDP -> TUN: a GRO read holds a run of datagrams from one sender; each is opened in place
  (`Tunnel.outside_in_place`) with every check. With a virtio-net header, TCP packets go
  through the `edge.coalesce.Coalescer` and in-order segments of one flow reach the kernel as one
  super-packet; everything else is written in place behind a plain virtio-net header.
  The coalescer is flushed at the end of every batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Final

from edge import coalesce, offload, segment, vnet
from edge.ports import DatagramSocket, SockAddr, TunDevice
from edge.tunnel import (
    DropReason,
    EndpointChanged,
    HandshakeCompleted,
    HandshakeFailed,
    SessionExpired,
    Tunnel,
    TunnelEvent,
)
from edge.tunnel.wire import OVERHEAD
from edge.vnet import OffloadError
from isthmus.endpoint import format_sockaddr
from isthmus.logfmt import kv

BATCH = 64
READ_BYTES = 65536  # room for one TUN read (a super-packet with its virtio-net header)
# The TUN -> UDP buffer: a batch of reads, or one super-packet cut into segments (each with
# its header room); it is flushed and reused from the start when less than this is left.
TX_BYTES = 8 * READ_BYTES
TX_RESERVE = 4 * READ_BYTES
RX_BYTES = 2 * READ_BYTES  # one GRO read: up to 64 KB of datagrams

_VNET_LEN: Final = vnet.VNET_HDR_LEN
_FLAGS: Final = vnet.FLAGS_OFFSET
_GSO_TYPE: Final = vnet.GSO_TYPE_OFFSET
_unpack_vnet: Final = vnet.VNET.unpack_from
_PLAIN_VNET: Final = vnet.PLAIN
_NEEDS_CSUM: Final = vnet.F_NEEDS_CSUM
_SEND_FAILED = DropReason.SEND_FAILED
_NOT_IP = DropReason.NOT_IP
_TCP = offload.PROTO_TCP
_UDP = offload.PROTO_UDP
_UDP_MERGE = offload.UDP_MIN_MERGE_PAYLOAD + 28  # the smallest IP packet that may merge

_log = logging.getLogger(__name__)


@dataclass(slots=True)
class DataplaneStats:
    """What the shell did with the packets the core passed (the core counts its own).

    tun_reads: packets read from the TUN (a super-packet counts once);
    super_packets / segments: TCP super-packets read, and the segments they were cut into;
    gso_sends / gso_datagrams: send calls that carried a run of more than one datagram,
    and those datagrams; udp_reads / gro_reads / gro_datagrams: socket reads, those that
    held a GRO run of more than one datagram, and those datagrams; coalesced_writes /
    coalesced_segments: super-packets written to the TUN, and the packets merged into
    them; tun_write_errors: writes the kernel refused.
    """

    tun_reads: int = 0
    super_packets: int = 0
    segments: int = 0
    gso_sends: int = 0
    gso_datagrams: int = 0
    udp_reads: int = 0
    gro_reads: int = 0
    gro_datagrams: int = 0
    coalesced_writes: int = 0
    coalesced_segments: int = 0
    tun_write_errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class Dataplane:
    """Packets TUN -> core.inside -> UDP, and UDP -> core.outside -> TUN."""

    def __init__(
        self,
        tunnel: Tunnel,
        tun: TunDevice,
        udp: DatagramSocket,
        clock: Callable[[], float] = time.monotonic,
        merge_udp: bool = False,
    ) -> None:
        self._tunnel = tunnel
        self._tun = tun
        self._udp = udp
        self._clock = clock
        self._vnet = tun.vnet_hdr
        # No segment longer than the TUN MTU is ever sealed (see edge.segment).
        self._mtu = min(tun.mtu, offload.MAX_IP_PACKET)
        self.stats = DataplaneStats()
        # Where a TUN read lands in its slot: the packet itself always starts OVERHEAD
        # bytes in, so it can be sealed in place; its virtio-net header sits just before.
        self._lead = OVERHEAD - _VNET_LEN if self._vnet else OVERHEAD
        self._tx = bytearray(TX_BYTES)
        self._tx_view = memoryview(self._tx)
        self._rx = bytearray(RX_BYTES)
        self._rx_view = memoryview(self._rx)
        # What goes through the coalescer, to be written at the end of the batch: TCP, and
        # UDP when the kernel takes UDP super-packets (and `merge_udp`) unless too small to
        # merge (offload.UDP_MIN_MERGE_PAYLOAD). The rest is written at once.
        self._merge_udp = merge_udp and tun.udp_gso
        self._coalescer = coalesce.Coalescer(udp=self._merge_udp)
        # Called with every core event after it is logged (edge.pinger waits on probes).
        self.on_event: Callable[[TunnelEvent], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: float | None = None
        # The run of sealed datagrams waiting to leave in one send_segments call.
        self._run_addr: SockAddr | None = None
        self._run_start = 0
        self._run_end = 0
        self._run_segment = 0
        self._run_closed = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start watching both file descriptors and the core's timer on `loop`."""
        self._loop = loop
        self._mtu = min(self._tun.mtu, offload.MAX_IP_PACKET)  # configured by now
        loop.add_reader(self._tun.fileno(), self.on_tun_readable)
        loop.add_reader(self._udp.fileno(), self.on_udp_readable)
        self.after_input()

    def stop(self) -> None:
        """Stop watching; idempotent. Logs the data plane's counters."""
        if self._loop is not None:
            self._loop.remove_reader(self._tun.fileno())
            self._loop.remove_reader(self._udp.fileno())
            self._loop = None
            _log.info(kv("dataplane_stats", **self.stats.as_dict()))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._deadline = None

    # -- TUN -> UDP ---------------------------------------------------------------------

    def on_tun_readable(self) -> None:
        """Drain packets from the TUN, seal each in place and send them to their peers."""
        tunnel, tun, tx, view = self._tunnel, self._tun, self._tx, self._tx_view
        vnet, lead = self._vnet, self._lead
        inside = tunnel.inside_in_place
        now = self._clock()
        pos = 0
        reads = 0
        limit = TX_BYTES - TX_RESERVE
        for _ in range(BATCH):
            if pos > limit:
                self._flush_run()
                pos = 0
            try:
                n = tun.readinto(view[pos + lead : pos + lead + READ_BYTES])
            except OSError:  # BlockingIOError: drained
                break
            reads += 1
            if vnet:
                size = n - _VNET_LEN
                if size <= 0:
                    continue
                if tx[pos + lead + _GSO_TYPE]:  # a super-packet
                    _, gso_type, _, gso_size, _, _ = _unpack_vnet(tx, pos + lead)
                    pos = self._super_packet(pos, size, gso_type, gso_size, now)
                    continue
                if tx[pos + lead + _FLAGS] & _NEEDS_CSUM:
                    _, _, _, _, csum_start, csum_offset = _unpack_vnet(tx, pos + lead)
                    start = pos + OVERHEAD
                    try:
                        offload.complete_checksum(
                            view[start : start + size], csum_start, csum_offset
                        )
                    except OffloadError:
                        tunnel.count_drop(_NOT_IP)
                        continue
            else:
                size = n
            addr = inside(tx, pos, size, now)
            if addr is not None:
                self._add(pos, size + OVERHEAD, addr)
                pos += size + OVERHEAD
        self._flush_run()
        self.stats.tun_reads += reads
        self.after_input()

    def _super_packet(self, pos: int, size: int, gso_type: int, gso_size: int, now: float) -> int:
        """Cut the super-packet read at `pos` into segments, seal each; the next free pos."""
        start = pos + OVERHEAD
        packet = bytes(self._tx_view[start : start + size])
        try:
            stride, lengths = segment.segment_tcp(
                packet, gso_type, gso_size, self._tx, pos, OVERHEAD, self._mtu
            )
        except OffloadError:
            self._tunnel.count_drop(_NOT_IP)
            return pos
        stats = self.stats
        stats.super_packets += 1
        stats.segments += len(lengths)
        addr = self._tunnel.inside_run_in_place(self._tx, pos, stride, lengths, now)
        if addr is None:
            return pos
        at = pos
        add = self._add
        for length in lengths:
            add(at, length + OVERHEAD, addr)
            at += stride
        return at - stride + OVERHEAD + lengths[-1]

    def _add(self, at: int, size: int, addr: SockAddr) -> None:
        """The datagram tx[at : at + size] is sealed for `addr`: extend the run or start one."""
        if (
            addr == self._run_addr
            and at == self._run_end
            and not self._run_closed
            and size <= self._run_segment
        ):
            self._run_end = at + size
            if size < self._run_segment:
                self._run_closed = True  # only the last datagram of a run may be shorter
            return
        self._flush_run()
        self._run_addr = addr
        self._run_start = at
        self._run_end = at + size
        self._run_segment = size
        self._run_closed = False

    def _flush_run(self) -> None:
        addr = self._run_addr
        if addr is None:
            return
        self._run_addr = None
        start, end, segment = self._run_start, self._run_end, self._run_segment
        count = -(-(end - start) // segment)
        if count > 1:
            self.stats.gso_sends += 1
            self.stats.gso_datagrams += count
        if not self._udp.send_segments(self._tx_view[start:end], segment, addr):
            tunnel = self._tunnel
            for _ in range(count):
                tunnel.count_drop(_SEND_FAILED)

    # -- UDP -> TUN ---------------------------------------------------------------------

    def on_udp_readable(self) -> None:
        """Drain datagrams from the socket, open each and write its packet to the TUN."""
        tunnel, udp, rx, view = self._tunnel, self._udp, self._rx, self._rx_view
        vnet = self._vnet
        coalescer, merge_udp = self._coalescer, self._merge_udp
        outside = tunnel.outside_in_place
        stats = self.stats
        now = self._clock()
        for _ in range(BATCH):
            got = udp.recv_segments_into(view)
            if got is None:
                break
            stats.udp_reads += 1
            n, addr, segment = got
            if segment <= 0 or segment > n:
                segment = n
            elif segment < n:
                stats.gro_reads += 1
                stats.gro_datagrams += -(-n // segment)
            at = 0
            while at < n:
                size = min(segment, n - at)
                m = outside(rx, at, size, addr, now)
                if m > 0:
                    start = at + OVERHEAD
                    if vnet:
                        proto = rx[start + (9 if rx[start] >> 4 == 4 else 6)]
                        if proto == _TCP or (merge_udp and proto == _UDP and m >= _UDP_MERGE):
                            coalescer.add(view[start : start + m])
                        else:
                            rx[start - _VNET_LEN : start] = _PLAIN_VNET
                            self._write(view[start - _VNET_LEN : start + m])
                    else:
                        self._write(view[start : start + m])
                at += size
        if len(coalescer):
            for write in coalescer.flush():
                self._write(write)
            stats.coalesced_writes += coalescer.super_packets
            stats.coalesced_segments += coalescer.merged
            coalescer.super_packets = coalescer.merged = 0
        self.after_input()

    def _write(self, packet: bytes | bytearray | memoryview) -> None:
        try:
            self._tun.write(packet)
        except OSError:
            self.stats.tun_write_errors += 1

    def on_timer(self) -> None:
        """The core's deadline passed: let it fire what is due."""
        self._timer = None
        self._deadline = None
        self._tunnel.handle_timer(self._clock())
        self.after_input()

    def after_input(self) -> None:
        """Send the core's side output, log its events, re-arm its timer."""
        tunnel, udp = self._tunnel, self._udp
        for datagram, addr in tunnel.datagrams_to_send():
            if not udp.send(datagram, addr):
                tunnel.count_drop(DropReason.SEND_FAILED)
        while (event := tunnel.next_event()) is not None:
            log_event(event)
            if self.on_event is not None:
                self.on_event(event)
        self._arm(tunnel.get_timer())

    def _arm(self, deadline: float | None) -> None:
        # An armed timer is kept when the deadline moved later or went away: it fires
        # early, the core finds nothing due, and it is armed again then. This spares a
        # cancel and a new timer on nearly every packet (each one moves the keepalive).
        if self._loop is None:
            return
        armed = self._deadline
        if deadline is None or (armed is not None and deadline >= armed):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._deadline = deadline
        delay = max(0.0, deadline - self._clock())
        self._timer = self._loop.call_later(delay, self.on_timer)


def log_event(event: TunnelEvent) -> None:
    """One log line per core event."""
    match event:
        case HandshakeCompleted(peer=peer, role=role):
            _log.info(kv("handshake_completed", peer=peer, role=role.value))
        case SessionExpired(peer=peer):
            _log.info(kv("session_expired", peer=peer))
        case EndpointChanged(peer=peer, endpoint=(host, port)):
            _log.info(kv("endpoint_changed", peer=peer, endpoint=format_sockaddr(host, port)))
        case HandshakeFailed(peer=peer):
            _log.warning(kv("handshake_failed", peer=peer, detail="no answer; packets dropped"))
