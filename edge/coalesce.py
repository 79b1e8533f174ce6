"""Coalescing: opened packets of one receive batch become TUN writes, merged where possible.

Rules:
- `Coalescer` merges consecutive in-order TCP segments of one flow (same addresses, ports,
  IP fields, TCP options and ACK, equal payload sizes but for a shorter last one, no flag
  but ACK and a final PSH) into one GSO_TCP super-packet for the kernel, with
  NEEDS_CSUM; with `udp`, equal-sized UDP datagrams of one flow of at least
  UDP_MIN_MERGE_PAYLOAD bytes likewise become one GSO_UDP_L4 super-packet; anything else
  is written as it came, in flow order. Only packets whose IP length is exactly their size
  merge (trailing bytes never become payload); a super-packet stays below 64 KB and
  MAX_COALESCED_SEGMENTS segments, and `flush` holds nothing back.
- A segment whose own checksums do not hold is never merged (`_checksums_valid`).
Pure: bytes in, bytes out.
"""

from __future__ import annotations

from typing import Final

from edge.offload import (
    MAX_COALESCED_SEGMENTS,
    MAX_IP_PACKET,
    MOD,
    PROTO_TCP,
    PROTO_UDP,
    TCP_ACK,
    TCP_CSUM_OFFSET,
    TCP_MIN_HEADER_LEN,
    TCP_PSH,
    U16,
    U32,
    UDP_CSUM_OFFSET,
    UDP_HEADER_LEN,
    UDP_MIN_MERGE_PAYLOAD,
    Buffer,
    finish,
    ones_sum,
    pseudo_sum,
)
from edge.vnet import F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, PLAIN, VNET, VNET_HDR_LEN


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
            self.next_seq = (U32.unpack_from(packet, iph + 4)[0] + self.gso_size) & 0xFFFFFFFF
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
        if int.from_bytes(packet[:20], "big") % MOD:
            return False
        version = 4
        if proto == PROTO_UDP and not (packet[26] | packet[27]):
            return True  # an IPv4 UDP datagram sent without a checksum
    else:
        version = 6
    return (
        pseudo_sum(packet, version, proto, len(packet) - iph) + ones_sum(packet[iph:])
    ) % MOD == 0


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
            self._order.append(PLAIN + bytes(packet))
            return
        key, proto, iph, hlen = found
        flow = self._flows.get(key)
        if flow is not None:
            size = len(packet) - hlen
            if (
                not flow.tail
                and size <= flow.gso_size
                and (proto == PROTO_UDP or U32.unpack_from(packet, iph + 4)[0] == flow.next_seq)
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
        buf[:VNET_HDR_LEN] = PLAIN
        return buf
    packet = memoryview(buf)[VNET_HDR_LEN:]
    iph = flow.iph
    total = len(packet)
    l4_len = total - iph
    if flow.version == 4:
        U16.pack_into(packet, 2, total)
        packet[10] = 0
        packet[11] = 0
        U16.pack_into(packet, 10, finish(int.from_bytes(packet[0:iph], "big")))
    else:
        U16.pack_into(packet, 4, l4_len)
    if flow.proto == PROTO_UDP:
        gso_type = GSO_UDP_L4
        csum_offset = UDP_CSUM_OFFSET
        U16.pack_into(packet, iph + 4, l4_len)  # the kernel gives each segment its own
    else:
        gso_type = GSO_TCPV4 if flow.version == 4 else GSO_TCPV6
        csum_offset = TCP_CSUM_OFFSET
    # CHECKSUM_PARTIAL: the field holds the pseudo-header sum; the kernel adds the rest.
    partial = pseudo_sum(packet, flow.version, flow.proto, l4_len)
    U16.pack_into(packet, iph + csum_offset, partial)
    packet.release()
    VNET.pack_into(buf, 0, F_NEEDS_CSUM, gso_type, flow.hlen, flow.gso_size, iph, csum_offset)
    return buf
