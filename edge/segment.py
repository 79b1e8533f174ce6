"""TCP segmentation: a TUN read's GSO super-packet becomes packets to seal.

Rules:
- `segment_tcp` cuts a GSO super-packet (GSO_TCPV4/GSO_TCPV6) into packets of at most
  hdr_len + gso_size bytes, each a complete, valid TCP/IP packet: sequence numbers advanced,
  IPv4 total length, id and header checksum, IPv6 payload length, and the full TCP checksum
  computed; FIN and PSH only on the last segment, CWR only on the first. No segment is
  longer than the caller's `limit` (the TUN MTU), whatever gso_size the header states.
Pure: bytes in, bytes out.
"""

from __future__ import annotations

from edge.offload import (
    MAX_IP_PACKET,
    MOD,
    PROTO_TCP,
    TCP_CSUM_OFFSET,
    TCP_CWR,
    TCP_FIN,
    TCP_MIN_HEADER_LEN,
    TCP_PSH,
    U16,
    U32,
    Buffer,
)
from edge.vnet import GSO_ECN, GSO_TCPV4, GSO_TCPV6, OffloadError


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
    seq = U32.unpack_from(packet, iph + 4)[0]
    flags = packet[iph + 13]
    ip_id = U16.unpack_from(packet, 4)[0] if version == 4 else 0
    if version == 4:
        addresses = int.from_bytes(src[12:20], "big")
    else:
        addresses = int.from_bytes(src[8:40], "big")
    # The TCP header's sum without its sequence number, flags and checksum (these change
    # per segment): every segment's checksum is this, plus those, plus its payload's sum.
    header[iph + 4 : iph + 8] = b"\0\0\0\0"
    header[iph + 13] = 0
    header[iph + TCP_CSUM_OFFSET : iph + TCP_CSUM_OFFSET + 2] = b"\0\0"
    fixed = (int.from_bytes(header[iph:hlen], "big") + addresses + PROTO_TCP) % MOD
    # Likewise the IPv4 header's sum without its total length, id and checksum.
    ip_fixed = 0
    if version == 4:
        header[2:6] = b"\0\0\0\0"
        header[10:12] = b"\0\0"
        ip_fixed = int.from_bytes(header[:iph], "big") % MOD
    # Every segment but the first and the last has the same flags and lengths: its header
    # is this template but for the sequence number, the IPv4 id and the two checksums.
    mid_flags = flags & ~(TCP_FIN | TCP_PSH | TCP_CWR)
    full_tcp_len = tcph + gso_size
    header[iph + 13] = mid_flags
    if version == 4:
        U16.pack_into(header, 2, hlen + gso_size)
    else:
        U16.pack_into(header, 4, full_tcp_len)
    template = bytes(header)
    mid_sum = fixed + mid_flags + full_tcp_len
    lengths = [hlen + gso_size] * count
    last = count - 1
    at = offset + gap
    pos = hlen
    pack_h = U16.pack_into
    pack_i = U32.pack_into
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
            pack_h(out, at + 10, MOD - (ip_fixed + hlen + size + seg_id) % MOD)
        # Header words are 16-bit aligned (an even header length); an odd payload ends in
        # a half word, padded with a zero byte (x * 256, reduced first: a shift of the big
        # integer would copy it).
        value = from_bytes(chunk, "big") % MOD
        if size & 1:
            value <<= 8
        seg_sum += (seg_seq >> 16) + (seg_seq & 0xFFFF) + value
        pack_h(out, tcp_at + TCP_CSUM_OFFSET, MOD - seg_sum % MOD)
        pos += size
        at += stride
    return stride, lengths
