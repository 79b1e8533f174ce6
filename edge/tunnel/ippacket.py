"""The inner IP header: version, source and destination of a packet from the TUN.

Owns the few header checks the tunnel needs before it routes or accepts a packet.
It reads raw bytes only (no `ipaddress` objects) and never raises: anything that is
not a well-formed IPv4 or IPv6 header is `None` ("not IP"). It does not check
checksums, options or extension headers; the kernel on the other side does.

IPv4 (RFC 791): version 4, IHL >= 5, the packet holds the IHL*4-byte header, and
IHL*4 <= total length <= the packet's length.
IPv6 (RFC 8200): version 6, the packet holds the 40-byte header, and
40 + payload length <= the packet's length (jumbograms, payload length 0, pass as
a 40-byte packet with trailing bytes).
Trailing bytes after the length the header states are allowed and left in place.
"""

from __future__ import annotations

V4_MIN_HEADER_LEN = 20
V4_TOTAL_LENGTH_OFFSET = 2
V4_SRC_OFFSET = 12
V4_DST_OFFSET = 16
V4_ADDR_LEN = 4

V6_HEADER_LEN = 40
V6_PAYLOAD_LENGTH_OFFSET = 4
V6_SRC_OFFSET = 8
V6_DST_OFFSET = 24
V6_ADDR_LEN = 16

# (version, source address, destination address); addresses are 4 or 16 raw bytes.
Addresses = tuple[int, bytes, bytes]


def parse(packet: bytes | bytearray | memoryview) -> Addresses | None:
    """(version, source, destination) of an IP packet, or None when it is not one.

    `packet` must be a byte buffer (a memoryview of format "B"). Never raises.
    """
    size = len(packet)
    if size < V4_MIN_HEADER_LEN:
        return None
    first = packet[0]
    version = first >> 4
    if version == 4:
        header_len = (first & 0x0F) * 4
        if header_len < V4_MIN_HEADER_LEN or header_len > size:
            return None
        total = (packet[V4_TOTAL_LENGTH_OFFSET] << 8) | packet[V4_TOTAL_LENGTH_OFFSET + 1]
        if total < header_len or total > size:
            return None
        return (
            4,
            bytes(packet[V4_SRC_OFFSET : V4_SRC_OFFSET + V4_ADDR_LEN]),
            bytes(packet[V4_DST_OFFSET : V4_DST_OFFSET + V4_ADDR_LEN]),
        )
    if version == 6:
        if size < V6_HEADER_LEN:
            return None
        payload = (packet[V6_PAYLOAD_LENGTH_OFFSET] << 8) | packet[V6_PAYLOAD_LENGTH_OFFSET + 1]
        if V6_HEADER_LEN + payload > size:
            return None
        return (
            6,
            bytes(packet[V6_SRC_OFFSET : V6_SRC_OFFSET + V6_ADDR_LEN]),
            bytes(packet[V6_DST_OFFSET : V6_DST_OFFSET + V6_ADDR_LEN]),
        )
    return None
