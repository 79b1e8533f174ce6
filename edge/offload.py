"""TUN offloads: the virtio-net header, checksums, TCP segmentation and coalescing.

Owns the packet work that lets one TUN read or write carry a TCP super-packet (up to 64 KB)
while every packet the tunnel seals is an ordinary IP packet of at most the TUN MTU. Pure:
bytes in, bytes out; no I/O.

```
virtio_net_hdr (10 bytes, little-endian), before every packet on a TUN opened IFF_VNET_HDR
 0       1          2         4          6            8             10
 | flags | gso_type | hdr_len | gso_size | csum_start | csum_offset |
```

Rules:
- `segment_tcp` cuts a GSO super-packet (GSO_TCPV4/GSO_TCPV6) into packets of at most
  hdr_len + gso_size bytes, each a complete, valid TCP/IP packet: sequence numbers advanced,
  IPv4 total length, id and header checksum, IPv6 payload length, and the full TCP checksum
  computed; FIN and PSH only on the last segment, CWR only on the first. No segment is
  longer than the caller's `limit` (the TUN MTU), whatever gso_size the header states.
- `complete_checksum` finishes the partial checksum of a NEEDS_CSUM packet, so a packet
  always leaves this edge with a valid checksum.
- `Coalescer` merges consecutive in-order TCP segments of one flow (same addresses, ports,
  IP fields, TCP options and ACK, equal payload sizes but for a shorter last one, no flag
  but ACK and a final PSH) into one GSO_TCP super-packet for the kernel, with
  NEEDS_CSUM; with `udp`, equal-sized UDP datagrams of one flow of at least
  UDP_MIN_MERGE_PAYLOAD bytes likewise become one GSO_UDP_L4 super-packet; anything else
  is written as it came, in flow order. Only packets whose IP length is exactly their size
  merge (trailing bytes never become payload); a super-packet stays below 64 KB and
  MAX_COALESCED_SEGMENTS segments, and `flush` holds nothing back.
- Checksums use one's complement sums computed as `int.from_bytes(...) % 0xFFFF` (2**16 is
  1 modulo 0xFFFF, so the big integer is congruent to the sum of its 16-bit words).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

VNET_HDR_LEN: Final = 10
F_NEEDS_CSUM: Final = 1
F_DATA_VALID: Final = 2
GSO_NONE: Final = 0
GSO_TCPV4: Final = 1
GSO_UDP: Final = 3
GSO_TCPV6: Final = 4
GSO_UDP_L4: Final = 5
GSO_ECN: Final = 0x80

PROTO_TCP: Final = 6
PROTO_UDP: Final = 17
TCP_CSUM_OFFSET: Final = 16
UDP_CSUM_OFFSET: Final = 6
UDP_HEADER_LEN: Final = 8
# UDP datagrams with less payload are not merged: measured here (Linux 6.18, veth), writing
# super-packets of 64-byte datagrams forwarded fewer of them (40k against 55k packets/s),
# of 1392-byte ones more (30k against 25k).
UDP_MIN_MERGE_PAYLOAD: Final = 512
TCP_MIN_HEADER_LEN: Final = 20
TCP_FIN: Final = 0x01
TCP_SYN: Final = 0x02
TCP_RST: Final = 0x04
TCP_PSH: Final = 0x08
TCP_ACK: Final = 0x10
TCP_URG: Final = 0x20
TCP_CWR: Final = 0x80
MAX_IP_PACKET: Final = 65535
MAX_COALESCED_SEGMENTS: Final = 64

_VNET: Final = struct.Struct("<BBHHHH")
_H: Final = struct.Struct("!H")
_I: Final = struct.Struct("!I")
_MOD: Final = 0xFFFF

Buffer = bytes | bytearray | memoryview


class OffloadError(ValueError):
    """A packet with a virtio-net header that cannot be segmented or completed as stated."""


@dataclass(frozen=True, slots=True)
class VnetHeader:
    flags: int = 0
    gso_type: int = GSO_NONE
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0


NO_OFFLOAD: Final = VnetHeader()
_PLAIN: Final = _VNET.pack(0, GSO_NONE, 0, 0, 0, 0)


def decode_vnet(data: Buffer) -> VnetHeader:
    """The virtio-net header at the start of `data`.

    Raises:
        OffloadError: fewer than VNET_HDR_LEN bytes.
    """
    if len(data) < VNET_HDR_LEN:
        raise OffloadError(f"a virtio-net header is {VNET_HDR_LEN} bytes, got {len(data)}")
    return VnetHeader(*_VNET.unpack_from(data))


def encode_vnet(header: VnetHeader) -> bytes:
    return _VNET.pack(
        header.flags,
        header.gso_type,
        header.hdr_len,
        header.gso_size,
        header.csum_start,
        header.csum_offset,
    )


def plain_vnet() -> bytes:
    """The header of a packet with no offload (the kernel checks its checksums)."""
    return _PLAIN


# -- checksums -------------------------------------------------------------------------


def ones_sum(data: Buffer) -> int:
    """The one's complement sum of `data` as 16-bit big-endian words, modulo 0xFFFF.

    An odd length is padded with a zero byte, as RFC 1071 says.
    """
    value = int.from_bytes(data, "big")
    if len(data) & 1:
        value <<= 8
    return value % _MOD


def finish(total: int) -> int:
    """The checksum field for a one's complement sum (never 0, which UDP reserves)."""
    return _MOD - (total % _MOD)


def internet_checksum(data: Buffer) -> int:
    """The RFC 1071 checksum of `data` (as 0xFFFF where the sum is 0xFFFF)."""
    return finish(ones_sum(data))


def pseudo_sum(packet: Buffer, version: int, proto: int, length: int) -> int:
    """The one's complement sum of the pseudo-header of `packet` for an L4 length."""
    if version == 4:
        addresses = int.from_bytes(packet[12:20], "big")
    else:
        addresses = int.from_bytes(packet[8:40], "big")
    return (addresses + proto + length) % _MOD


def complete_checksum(packet: bytearray | memoryview, csum_start: int, csum_offset: int) -> None:
    """Finish a NEEDS_CSUM packet in place: the field holds the pseudo-header sum; the
    checksum over packet[csum_start:] goes into it.

    Raises:
        OffloadError: the checksum field lies outside the packet.
    """
    at = csum_start + csum_offset
    if csum_start >= len(packet) or at + 2 > len(packet):
        raise OffloadError(f"checksum field at {at} outside a packet of {len(packet)} bytes")
    value = finish(ones_sum(packet[csum_start:]))
    packet[at] = value >> 8
    packet[at + 1] = value & 0xFF


# -- segmentation (TUN read -> packets to seal) ----------------------------------------


def _headers(packet: Buffer, gso_type: int) -> tuple[int, int, int]:
    """(version, IP header length, TCP header length) of a TCP super-packet."""
    size = len(packet)
    if size < 1:
        raise OffloadError("an empty super-packet")
    version = packet[0] >> 4
    kind = gso_type & ~GSO_ECN
    if kind not in (GSO_TCPV4, GSO_TCPV6):
        raise OffloadError(f"gso type {gso_type} is not TCP segmentation")
    want = 4 if kind == GSO_TCPV4 else 6
    if version != want:
        raise OffloadError(f"gso type {gso_type} on an IPv{version} packet")
    if version == 4:
        iph = (packet[0] & 0x0F) * 4
        if iph < 20 or size < iph + TCP_MIN_HEADER_LEN or packet[9] != PROTO_TCP:
            raise OffloadError("a TCPv4 super-packet without a plain IPv4/TCP header")
    else:
        iph = 40
        if size < iph + TCP_MIN_HEADER_LEN or packet[6] != PROTO_TCP:
            raise OffloadError("a TCPv6 super-packet without a plain IPv6/TCP header")
    tcph = (packet[iph + 12] >> 4) * 4
    if tcph < TCP_MIN_HEADER_LEN or size < iph + tcph:
        raise OffloadError("a super-packet whose TCP header is cut")
    return version, iph, tcph


def segment_tcp(
    packet: Buffer,
    gso_type: int,
    gso_size: int,
    out: bytearray,
    offset: int,
    gap: int = 0,
    limit: int = MAX_IP_PACKET,
) -> tuple[int, list[int]]:
    """Cut a TCP super-packet into segments written to `out`: segment i at
    offset + gap + i * stride, where stride = gap + headers + gso_size (the `gap` bytes
    before each segment are left for the caller, e.g. the tunnel header).

    Each segment is a full TCP/IP packet carrying at most `gso_size` payload bytes (all
    but the last exactly that) and at most `limit` bytes in all (the TUN MTU: a smaller
    gso_size is used when headers + gso_size would exceed it); returns (stride, their
    lengths).

    Raises:
        OffloadError: not a TCP packet of the stated family, a gso_size of 0, headers that
            leave no room for payload within `limit`, or an `out` too short.
    """
    version, iph, tcph = _headers(packet, gso_type)
    hlen = iph + tcph
    if gso_size <= 0:
        raise OffloadError(f"gso_size {gso_size} on a TCP super-packet")
    if hlen + gso_size > limit:
        gso_size = limit - hlen
        if gso_size <= 0:
            raise OffloadError(f"{hlen} bytes of headers leave no payload in {limit}")
    stride = gap + hlen + gso_size
    total = len(packet)
    payload = total - hlen
    count = max(1, -(-payload // gso_size))
    if offset + (count - 1) * stride + gap + hlen + min(payload, gso_size) > len(out):
        raise OffloadError(f"{count} segments do not fit the output buffer")
    src = memoryview(packet)
    header = bytearray(src[:hlen])
    seq = _I.unpack_from(packet, iph + 4)[0]
    flags = packet[iph + 13]
    ip_id = _H.unpack_from(packet, 4)[0] if version == 4 else 0
    if version == 4:
        addresses = int.from_bytes(src[12:20], "big")
    else:
        addresses = int.from_bytes(src[8:40], "big")
    # The TCP header's sum without its sequence number, flags and checksum (these change
    # per segment): every segment's checksum is this, plus those, plus its payload's sum.
    header[iph + 4 : iph + 8] = b"\0\0\0\0"
    header[iph + 13] = 0
    header[iph + TCP_CSUM_OFFSET : iph + TCP_CSUM_OFFSET + 2] = b"\0\0"
    fixed = (int.from_bytes(header[iph:hlen], "big") + addresses + PROTO_TCP) % _MOD
    # Likewise the IPv4 header's sum without its total length, id and checksum.
    ip_fixed = 0
    if version == 4:
        header[2:6] = b"\0\0\0\0"
        header[10:12] = b"\0\0"
        ip_fixed = int.from_bytes(header[:iph], "big") % _MOD
    # Every segment but the first and the last has the same flags and lengths: its header
    # is this template but for the sequence number, the IPv4 id and the two checksums.
    mid_flags = flags & ~(TCP_FIN | TCP_PSH | TCP_CWR)
    full_tcp_len = tcph + gso_size
    header[iph + 13] = mid_flags
    if version == 4:
        _H.pack_into(header, 2, hlen + gso_size)
    else:
        _H.pack_into(header, 4, full_tcp_len)
    template = bytes(header)
    mid_sum = fixed + mid_flags + full_tcp_len
    lengths = [hlen + gso_size] * count
    last = count - 1
    at = offset + gap
    pos = hlen
    pack_h = _H.pack_into
    pack_i = _I.pack_into
    from_bytes = int.from_bytes
    for i in range(count):
        tcp_at = at + iph
        seg_seq = (seq + pos - hlen) & 0xFFFFFFFF
        if 0 < i < last:
            size = gso_size
            chunk = src[pos : pos + size]
            out[at : at + hlen] = template
            out[at + hlen : at + hlen + size] = chunk
            seg_sum = mid_sum
        else:
            size = min(gso_size, total - pos)
            chunk = src[pos : pos + size]
            out[at : at + hlen] = template
            out[at + hlen : at + hlen + size] = chunk
            seg_flags = flags
            if i:
                seg_flags &= ~TCP_CWR
            if i != last:
                seg_flags &= ~(TCP_FIN | TCP_PSH)
            out[tcp_at + 13] = seg_flags
            tcp_len = tcph + size
            if version == 4:
                pack_h(out, at + 2, hlen + size)
            else:
                pack_h(out, at + 4, tcp_len)
            seg_sum = fixed + seg_flags + tcp_len
            lengths[i] = hlen + size
        pack_i(out, tcp_at + 4, seg_seq)
        if version == 4:
            seg_id = (ip_id + i) & 0xFFFF
            pack_h(out, at + 4, seg_id)
            pack_h(out, at + 10, _MOD - (ip_fixed + hlen + size + seg_id) % _MOD)
        # Header words are 16-bit aligned (an even header length); an odd payload ends in
        # a half word, padded with a zero byte (x * 256, reduced first: a shift of the big
        # integer would copy it).
        value = from_bytes(chunk, "big") % _MOD
        if size & 1:
            value <<= 8
        seg_sum += (seg_seq >> 16) + (seg_seq & 0xFFFF) + value
        pack_h(out, tcp_at + TCP_CSUM_OFFSET, _MOD - seg_sum % _MOD)
        pos += size
        at += stride
    return stride, lengths


# -- coalescing (opened packets -> TUN writes) ----------------------------------------


class _Flow:
    """One open super-packet being built."""

    __slots__ = (
        "buf",
        "count",
        "gso_size",
        "hlen",
        "iph",
        "next_seq",
        "proto",
        "tail",
        "version",
    )

    def __init__(self, packet: Buffer, proto: int, iph: int, hlen: int) -> None:
        # The virtio-net header's room first, the packet after it.
        self.buf = bytearray(VNET_HDR_LEN)
        self.buf += packet
        self.proto = proto
        self.version = 4 if iph == 20 else 6
        self.iph = iph
        self.hlen = hlen
        self.gso_size = len(packet) - hlen
        self.count = 1
        if proto == PROTO_TCP:
            self.next_seq = (_I.unpack_from(packet, iph + 4)[0] + self.gso_size) & 0xFFFFFFFF
            self.tail = bool(packet[iph + 13] & TCP_PSH)  # a PSH or short segment ends it
        else:
            self.next_seq = 0
            self.tail = False  # a short datagram ends it


def _ip_mask(iph: int, hlen: int) -> bytearray:
    """A mask over an IP header and the first hlen - iph bytes after it, keeping all but
    the IPv4 total length, id and checksum (the IPv6 payload length)."""
    mask = bytearray(b"\xff" * hlen)
    if iph == 20:
        mask[2:6] = bytes(4)
        mask[10:12] = bytes(2)
    else:
        mask[4:6] = bytes(2)
    return mask


def _key_mask(iph: int, hlen: int) -> int:
    """The mask that keeps of an IP + TCP header what merged segments share: all but the
    IP lengths, id and checksum (`_ip_mask`) and the TCP sequence number, flags and
    checksum."""
    mask = _ip_mask(iph, hlen)
    mask[iph + 4 : iph + 8] = bytes(4)
    mask[iph + 13] = 0
    mask[iph + 16 : iph + 18] = bytes(2)
    return int.from_bytes(mask, "big")


def _udp_key_mask(iph: int) -> int:
    """Likewise for IP + UDP: all but the IP lengths, id and checksum and the UDP length
    and checksum (the ports stay)."""
    mask = _ip_mask(iph, iph + UDP_HEADER_LEN)
    mask[iph + 4 : iph + 8] = bytes(4)
    return int.from_bytes(mask, "big")


# (IP header length, header length) -> mask; 2 x 11 TCP header lengths at most.
_MASKS: Final[dict[tuple[int, int], int]] = {
    (iph, iph + tcph): _key_mask(iph, iph + tcph) for iph in (20, 40) for tcph in range(20, 64, 4)
}
_UDP_MASKS: Final[dict[int, int]] = {iph: _udp_key_mask(iph) for iph in (20, 40)}


def _merge_key(packet: Buffer, udp: bool) -> tuple[int, int, int, int] | None:
    """(flow key, protocol, IP header length, header length) of a plain coalescable TCP
    (or, with `udp`, UDP) packet, else None.

    The key holds everything that must match between merged segments (`_key_mask`): the
    addresses, the IP fields but for lengths, id and checksum, the ports, the ACK, window
    and options. As an integer it also tells header lengths and versions apart (its first
    byte, 0x45 or 0x6?, is never 0); the protocol is part of it.
    """
    size = len(packet)
    if size < 29:
        return None
    first = packet[0]
    if first == 0x45:  # IPv4 without options
        proto = packet[9]
        if (
            packet[6] & 0x3F  # MF or a fragment offset
            or packet[7]
            or (packet[2] << 8 | packet[3]) != size  # trailing bytes would become payload
        ):
            return None
        iph = 20
    elif first >> 4 == 6:
        if size < 49 or (packet[4] << 8 | packet[5]) + 40 != size:
            return None
        proto = packet[6]
        iph = 40
    else:
        return None
    if proto == PROTO_UDP and udp:
        hlen = iph + UDP_HEADER_LEN
        if (
            size < hlen + UDP_MIN_MERGE_PAYLOAD
            or (packet[iph + 4] << 8 | packet[iph + 5]) != size - iph
        ):
            return None
        return int.from_bytes(packet[:hlen], "big") & _UDP_MASKS[iph], proto, iph, hlen
    if proto != PROTO_TCP or size < iph + TCP_MIN_HEADER_LEN:
        return None
    hlen = iph + (packet[iph + 12] >> 4) * 4
    if hlen < iph + TCP_MIN_HEADER_LEN or size <= hlen:
        return None
    flags = packet[iph + 13]
    if flags & ~(TCP_ACK | TCP_PSH) or not flags & TCP_ACK:
        return None
    return int.from_bytes(packet[:hlen], "big") & _MASKS[iph, hlen], proto, iph, hlen


def _checksums_valid(packet: Buffer, proto: int, iph: int) -> bool:
    """True when the IPv4 header checksum and the TCP (or UDP) checksum of `packet` hold.

    A merged packet leaves with checksums the kernel computes afresh, so a segment whose
    own checksums are wrong (corrupted on its way to the sending edge, or sent so by a
    peer) must not be merged: written on its own, the receiving kernel checks and drops it.
    """
    if iph == 20:
        if int.from_bytes(packet[:20], "big") % _MOD:
            return False
        version = 4
        if proto == PROTO_UDP and not (packet[26] | packet[27]):
            return True  # an IPv4 UDP datagram sent without a checksum
    else:
        version = 6
    return (
        pseudo_sum(packet, version, proto, len(packet) - iph) + ones_sum(packet[iph:])
    ) % _MOD == 0


class Coalescer:
    """Collects opened packets of one receive batch; `flush` yields the TUN writes.

    Every write is (virtio-net header || packet) as one bytes-like object.
    """

    __slots__ = ("_flows", "_order", "_udp", "merged", "super_packets")

    def __init__(self, udp: bool = False) -> None:
        self._udp = udp  # merge UDP datagrams too (a kernel that takes GSO_UDP_L4 writes)
        self._flows: dict[int, _Flow] = {}
        self._order: list[_Flow | bytes] = []
        # Counters for the caller, which may read and reset them: super-packets flushed,
        # and the packets merged into them.
        self.super_packets = 0
        self.merged = 0

    def add(self, packet: Buffer) -> None:
        """Take one IP packet (copied; the caller may reuse its buffer)."""
        found = _merge_key(packet, self._udp)
        if found is None or not _checksums_valid(packet, found[1], found[2]):
            # Not mergeable (a SYN, FIN, pure ACK, a bad checksum, ...): later segments of
            # any flow must not be merged in front of it.
            self._flows.clear()
            self._order.append(_PLAIN + bytes(packet))
            return
        key, proto, iph, hlen = found
        flow = self._flows.get(key)
        if flow is not None:
            size = len(packet) - hlen
            if (
                not flow.tail
                and size <= flow.gso_size
                and (proto == PROTO_UDP or _I.unpack_from(packet, iph + 4)[0] == flow.next_seq)
                and len(flow.buf) - VNET_HDR_LEN + size <= MAX_IP_PACKET
                and flow.count < MAX_COALESCED_SEGMENTS
            ):
                flow.buf += packet[hlen:]
                flow.count += 1
                flow.next_seq = (flow.next_seq + size) & 0xFFFFFFFF
                if proto == PROTO_TCP and packet[iph + 13] & TCP_PSH:
                    flow.buf[VNET_HDR_LEN + iph + 13] |= TCP_PSH
                    flow.tail = True
                elif size < flow.gso_size:
                    flow.tail = True
                return
        flow = _Flow(packet, proto, iph, hlen)
        self._flows[key] = flow
        self._order.append(flow)

    def flush(self) -> list[bytes | bytearray]:
        """The writes for everything added since the last flush, in order; resets."""
        writes: list[bytes | bytearray] = []
        for item in self._order:
            if isinstance(item, bytes):
                writes.append(item)
            else:
                if item.count > 1:
                    self.super_packets += 1
                    self.merged += item.count
                writes.append(_finish_flow(item))
        self._order.clear()
        self._flows.clear()
        return writes

    def __len__(self) -> int:
        return len(self._order)


def _finish_flow(flow: _Flow) -> bytearray:
    buf = flow.buf
    if flow.count == 1:
        buf[:VNET_HDR_LEN] = _PLAIN
        return buf
    packet = memoryview(buf)[VNET_HDR_LEN:]
    iph = flow.iph
    total = len(packet)
    l4_len = total - iph
    if flow.version == 4:
        _H.pack_into(packet, 2, total)
        packet[10] = 0
        packet[11] = 0
        _H.pack_into(packet, 10, finish(int.from_bytes(packet[0:iph], "big")))
    else:
        _H.pack_into(packet, 4, l4_len)
    if flow.proto == PROTO_UDP:
        gso_type = GSO_UDP_L4
        csum_offset = UDP_CSUM_OFFSET
        _H.pack_into(packet, iph + 4, l4_len)  # the kernel gives each segment its own
    else:
        gso_type = GSO_TCPV4 if flow.version == 4 else GSO_TCPV6
        csum_offset = TCP_CSUM_OFFSET
    # CHECKSUM_PARTIAL: the field holds the pseudo-header sum; the kernel adds the rest.
    partial = pseudo_sum(packet, flow.version, flow.proto, l4_len)
    _H.pack_into(packet, iph + csum_offset, partial)
    packet.release()
    _VNET.pack_into(buf, 0, F_NEEDS_CSUM, gso_type, flow.hlen, flow.gso_size, iph, csum_offset)
    return buf
