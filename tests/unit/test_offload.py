"""edge.offload: virtio-net header, checksums, TCP segmentation and coalescing.

Checksums are checked against a plain RFC 1071 word loop, segmentation against the super-
packet it came from, and coalescing by cutting its output again and comparing.
"""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge import offload, segment, vnet
from edge.coalesce import Coalescer
from edge.offload import TCP_ACK, TCP_CWR, TCP_FIN, TCP_PSH, TCP_SYN
from edge.vnet import (
    F_NEEDS_CSUM,
    GSO_NONE,
    GSO_TCPV4,
    GSO_TCPV6,
    VNET_HDR_LEN,
    OffloadError,
    VnetHeader,
)


def rfc1071(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tcp_ok(packet: bytes) -> bool:
    """The packet's IPv4 header checksum and TCP checksum verify (sum to 0 or 0xFFFF)."""
    version = packet[0] >> 4
    if version == 4:
        iph = (packet[0] & 0x0F) * 4
        if rfc1071(packet[:iph]) not in (0, 0xFFFF):
            return False
        total = struct.unpack_from("!H", packet, 2)[0]
        assert total == len(packet)
        pseudo = packet[12:20] + struct.pack("!BBH", 0, 6, len(packet) - iph)
    else:
        iph = 40
        assert struct.unpack_from("!H", packet, 4)[0] == len(packet) - 40
        pseudo = packet[8:40] + struct.pack("!IxxxB", len(packet) - iph, 6)
    return rfc1071(pseudo + packet[iph:]) in (0, 0xFFFF)


def set_tcp_checksum(packet: bytearray) -> bytearray:
    version = packet[0] >> 4
    iph = 20 if version == 4 else 40
    packet[iph + 16 : iph + 18] = b"\0\0"
    if version == 4:
        packet[10:12] = b"\0\0"
        packet[10:12] = struct.pack("!H", rfc1071(bytes(packet[:20])))
        pseudo = bytes(packet[12:20]) + struct.pack("!BBH", 0, 6, len(packet) - iph)
    else:
        pseudo = bytes(packet[8:40]) + struct.pack("!IxxxB", len(packet) - iph, 6)
    packet[iph + 16 : iph + 18] = struct.pack("!H", rfc1071(pseudo + bytes(packet[iph:])))
    return packet


def tcp_packet(
    payload: bytes,
    *,
    version: int = 4,
    seq: int = 1000,
    flags: int = TCP_ACK | TCP_PSH,
    options: bytes = b"\x01\x01\x08\x0a" + bytes(range(8)),
    ports: tuple[int, int] = (40000, 5201),
    ip_id: int = 7,
    src: str | None = None,
    dst: str | None = None,
) -> bytearray:
    """A TCP/IP packet with valid checksums (10.1.0.1 -> 10.2.0.1 or fd00:1::1 ->
    fd00:2::1 unless `src`, `dst` say otherwise)."""
    tcph = 20 + len(options)
    tcp = bytearray(
        struct.pack("!HHIIBBHHH", ports[0], ports[1], seq, 99, (tcph // 4) << 4, flags, 500, 0, 0)
    )
    tcp += options + payload
    if version == 4:
        ip = bytearray(
            struct.pack(
                "!BBHHHBBH4s4s",
                0x45,
                0,
                20 + len(tcp),
                ip_id,
                0x4000,
                64,
                6,
                0,
                ipaddress.IPv4Address(src or "10.1.0.1").packed,
                ipaddress.IPv4Address(dst or "10.2.0.1").packed,
            )
        )
    else:
        ip = bytearray(
            struct.pack(
                "!IHBB16s16s",
                6 << 28,
                len(tcp),
                6,
                64,
                ipaddress.IPv6Address(src or "fd00:1::1").packed,
                ipaddress.IPv6Address(dst or "fd00:2::1").packed,
            )
        )
    return set_tcp_checksum(ip + tcp)


def segments_of(super_packet: bytes, gso_type: int, gso_size: int, gap: int = 32) -> list[bytes]:
    out = bytearray(2 * 65536)
    stride, lengths = segment.segment_tcp(super_packet, gso_type, gso_size, out, 5, gap)
    return [
        bytes(out[5 + gap + i * stride : 5 + gap + i * stride + n]) for i, n in enumerate(lengths)
    ]


# -- header and checksums ------------------------------------------------------------------


def test_vnet_header_round_trip_and_short_input() -> None:
    header = VnetHeader(F_NEEDS_CSUM, GSO_TCPV4, 52, 1368, 20, 16)
    data = vnet.encode_vnet(header)
    assert len(data) == VNET_HDR_LEN and vnet.decode_vnet(data) == header
    assert vnet.decode_vnet(vnet.plain_vnet()) == VnetHeader()
    with pytest.raises(OffloadError, match="10 bytes"):
        vnet.decode_vnet(bytes(9))


@given(st.binary(max_size=3000))
def test_internet_checksum_matches_rfc1071(data: bytes) -> None:
    got = offload.internet_checksum(data)
    want = rfc1071(data)
    # One's complement has two zeros: 0 and 0xFFFF are the same sum.
    assert got == want or {got, want} == {0, 0xFFFF}


def test_complete_checksum_finishes_a_partial_one() -> None:
    packet = tcp_packet(b"hello world!" * 10)
    # What the kernel hands over with NEEDS_CSUM: the field holds the pseudo-header sum.
    partial = offload.pseudo_sum(packet, 4, 6, len(packet) - 20)
    packet[36:38] = struct.pack("!H", partial)
    assert not tcp_ok(bytes(packet))
    offload.complete_checksum(packet, 20, 16)
    assert tcp_ok(bytes(packet))
    with pytest.raises(OffloadError, match="outside"):
        offload.complete_checksum(packet, len(packet) - 1, 16)


# -- segmentation ----------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(min_value=0, max_value=20000),
    gso=st.integers(min_value=100, max_value=1448),
    version=st.sampled_from([4, 6]),
    seq=st.integers(min_value=0, max_value=2**32 - 1),
    fin=st.booleans(),
)
def test_segments_are_valid_packets_that_add_up_to_the_super_packet(
    size: int, gso: int, version: int, seq: int, fin: bool
) -> None:
    payload = bytes((i * 7 + 3) & 0xFF for i in range(size))
    flags = TCP_ACK | TCP_PSH | TCP_CWR | (TCP_FIN if fin else 0)
    big = tcp_packet(payload, version=version, seq=seq, flags=flags)
    gso_type = GSO_TCPV4 if version == 4 else GSO_TCPV6
    segs = segments_of(bytes(big), gso_type, gso)
    hlen = (20 if version == 4 else 40) + 32
    assert len(segs) == max(1, -(-size // gso))
    joined = b""
    for i, seg in enumerate(segs):
        assert len(seg) <= hlen + gso
        assert tcp_ok(seg), f"segment {i} has a bad checksum"
        seg_seq = struct.unpack_from("!I", seg, hlen - 32 + 4)[0]
        assert seg_seq == (seq + len(joined)) % 2**32
        seg_flags = seg[hlen - 32 + 13]
        last = i == len(segs) - 1
        assert bool(seg_flags & TCP_PSH) == last and bool(seg_flags & TCP_FIN) == (last and fin)
        assert bool(seg_flags & TCP_CWR) == (i == 0)
        if version == 4:
            assert struct.unpack_from("!H", seg, 4)[0] == 7 + i
        joined += seg[hlen:]
    assert joined == payload


def test_segmentation_refuses_what_it_cannot_cut() -> None:
    v4 = bytes(tcp_packet(b"x" * 3000))
    with pytest.raises(OffloadError, match="IPv4"):
        segments_of(v4, GSO_TCPV6, 1000)
    with pytest.raises(OffloadError, match="gso_size"):
        segments_of(v4, GSO_TCPV4, 0)
    with pytest.raises(OffloadError, match="fit"):
        segment.segment_tcp(v4, GSO_TCPV4, 1000, bytearray(2000), 0, 32)
    udp = bytearray(v4)
    udp[9] = 17
    with pytest.raises(OffloadError):
        segments_of(bytes(udp), GSO_TCPV4, 1000)
    with pytest.raises(OffloadError, match="cut"):
        segments_of(v4[:45], GSO_TCPV4, 1000)


# -- coalescing ------------------------------------------------------------------------


def coalesce(packets: list[bytes]) -> list[bytes]:
    c = Coalescer()
    for p in packets:
        c.add(memoryview(p))
    assert len(c) <= len(packets)
    writes = [bytes(w) for w in c.flush()]
    assert len(c) == 0
    return writes


@pytest.mark.parametrize("version", [4, 6])
def test_in_order_segments_become_one_super_packet_that_cuts_back_to_them(version: int) -> None:
    payload = bytes(range(256)) * 40  # 10240 bytes
    big = bytes(tcp_packet(payload, version=version, seq=5))
    gso_type = GSO_TCPV4 if version == 4 else GSO_TCPV6
    segs = segments_of(big, gso_type, 1000)
    writes = coalesce(segs)
    assert len(writes) == 1
    header = vnet.decode_vnet(writes[0])
    merged = bytearray(writes[0][VNET_HDR_LEN:])
    assert header.flags == F_NEEDS_CSUM and header.gso_type == gso_type
    assert header.gso_size == 1000 and header.hdr_len == len(merged) - len(payload)
    assert merged[header.hdr_len :] == payload
    # The kernel finishes the checksum (CHECKSUM_PARTIAL); do the same and check it.
    offload.complete_checksum(merged, header.csum_start, header.csum_offset)
    assert tcp_ok(bytes(merged))
    assert segments_of(bytes(merged), gso_type, 1000) == segs


def test_what_cannot_merge_passes_as_it_came_in_flow_order() -> None:
    a = [bytes(tcp_packet(b"a" * 100, seq=q, flags=TCP_ACK)) for q in (1, 101)]
    gap = bytes(tcp_packet(b"a" * 100, seq=500))  # not the next sequence number
    syn = bytes(tcp_packet(b"", flags=TCP_SYN))
    other = bytes(tcp_packet(b"b" * 100, seq=1, ports=(40001, 5201)))
    bigger = bytes(tcp_packet(b"a" * 200, seq=600))  # larger than the flow's segments
    writes = coalesce([a[0], other, a[1], gap, syn, bigger])
    plain = vnet.plain_vnet()
    first = vnet.decode_vnet(writes[0])
    assert first.gso_type == GSO_TCPV4 and len(writes[0]) == VNET_HDR_LEN + 52 + 200
    assert writes[1:] == [plain + other, plain + gap, plain + syn, plain + bigger]
    # A short segment or a PSH ends a super-packet; the next one starts a new one.
    s = [
        bytes(tcp_packet(b"c" * n, seq=q, flags=TCP_ACK))
        for n, q in ((100, 1), (50, 101), (100, 151))
    ]
    writes = coalesce(s)
    assert len(writes) == 2 and vnet.decode_vnet(writes[1]).gso_type == GSO_NONE
    udp = bytearray(tcp_packet(b"d" * 10))
    udp[9] = 17
    assert coalesce([bytes(udp)]) == [plain + bytes(udp)]


@pytest.mark.parametrize(
    ("version", "damage"),
    [(4, "payload"), (4, "tcp_checksum"), (4, "ip_checksum"), (6, "payload"), (6, "tcp_checksum")],
)
def test_a_segment_with_a_wrong_checksum_is_never_merged(version: int, damage: str) -> None:
    """Merged segments leave with checksums the kernel computes afresh; a damaged segment
    must instead reach the kernel as it came, with its wrong checksum, so the host drops it
    (IPv6 has no header checksum)."""
    good = [bytes(tcp_packet(b"a" * 100, seq=q, flags=TCP_ACK, version=version)) for q in (1, 101)]
    bad = bytearray(tcp_packet(b"a" * 100, seq=201, flags=TCP_ACK, version=version))
    if damage == "payload":
        bad[-1] ^= 0x01
    elif damage == "tcp_checksum":
        bad[(20 if version == 4 else 40) + 16] ^= 0x80
    else:
        bad[10] ^= 0x01
    after = bytes(tcp_packet(b"a" * 100, seq=301, flags=TCP_ACK, version=version))
    writes = coalesce([*good, bytes(bad), after])
    plain = vnet.plain_vnet()
    assert vnet.decode_vnet(writes[0]).gso_type in (GSO_TCPV4, GSO_TCPV6)  # the good pair
    assert writes[1] == plain + bytes(bad)  # untouched, so the kernel sees the damage
    assert writes[2] == plain + after  # nothing merges across the damaged segment


# -- properties ------------------------------------------------------------------------


def cut(write: bytes) -> list[bytes]:
    """A TUN write as the kernel takes it: a super-packet is finished and cut into its
    segments (as the kernel's GSO does), a plain packet passes."""
    header = vnet.decode_vnet(write)
    packet = bytearray(write[VNET_HDR_LEN:])
    if header.gso_type == GSO_NONE:
        assert header.flags == 0
        return [bytes(packet)]
    assert header.flags == F_NEEDS_CSUM
    assert header.csum_start == (20 if header.gso_type == GSO_TCPV4 else 40)
    assert header.csum_offset == 16
    assert len(packet) <= offload.MAX_IP_PACKET
    offload.complete_checksum(packet, header.csum_start, header.csum_offset)
    assert tcp_ok(bytes(packet))
    out = bytearray(2 * 65536)
    stride, lengths = segment.segment_tcp(bytes(packet), header.gso_type, header.gso_size, out, 0)
    assert header.hdr_len == lengths[0] - min(header.gso_size, len(packet) - header.hdr_len)
    assert 2 <= len(lengths) <= offload.MAX_COALESCED_SEGMENTS
    return [bytes(out[i * stride : i * stride + n]) for i, n in enumerate(lengths)]


def tcp_fields(packet: bytes) -> tuple[int, int, bytes, bytes]:
    """(sequence number, flags, ports, payload) of a TCP packet from tcp_packet."""
    iph = 20 if packet[0] >> 4 == 4 else 40
    tcph = (packet[iph + 12] >> 4) * 4
    seq = struct.unpack_from("!I", packet, iph + 4)[0]
    return seq, packet[iph + 13], packet[iph : iph + 4], packet[iph + tcph :]


_FLAGS = st.sampled_from(
    [TCP_ACK] * 6 + [TCP_ACK | TCP_PSH] * 2 + [TCP_ACK | TCP_FIN, TCP_SYN, TCP_ACK | TCP_CWR]
)


@settings(max_examples=150, deadline=None)
@given(
    version=st.sampled_from([4, 6]),
    mss=st.integers(min_value=1, max_value=1400),
    pieces=st.lists(
        st.tuples(st.integers(min_value=0, max_value=3), _FLAGS, st.integers(0, 2)),
        min_size=1,
        max_size=90,
    ),
    data=st.data(),
)
def test_coalescing_then_cutting_gives_back_every_packet_in_order(
    version: int, mss: int, pieces: list[tuple[int, int, int]], data: st.DataObject
) -> None:
    """Any sequence of TCP packets (a few flows, mostly full-sized in-order segments, some
    short, some out of order, with PSH, FIN, SYN or CWR) comes out of the Coalescer, once
    the kernel has cut its super-packets, as exactly the same packets in the same order
    per flow: same sequence numbers, flags and payload, valid checksums."""
    seqs = [1000, 5_000_000, 2**32 - 3000]
    packets = []
    for size_kind, flags, flow in pieces:
        size = [mss, mss, mss - 1 if mss > 1 else 1, 0][size_kind]
        if data.draw(st.integers(0, 9)) == 0:
            seqs[flow] = (seqs[flow] + data.draw(st.integers(1, 5000))) % 2**32  # a gap
        payload = bytes([flow + 1]) * size
        packets.append(
            bytes(
                tcp_packet(
                    payload,
                    version=version,
                    seq=seqs[flow],
                    flags=flags,
                    ports=(40000 + flow, 5201),
                )
            )
        )
        seqs[flow] = (seqs[flow] + size) % 2**32
    writes = coalesce(packets)
    got = [p for w in writes for p in cut(w)]
    assert all(tcp_ok(p) for p in got)
    per_flow_in = [[tcp_fields(p) for p in packets if p[-1:] == bytes([f + 1])] for f in range(3)]
    per_flow_out = [[tcp_fields(p) for p in got if p[-1:] == bytes([f + 1])] for f in range(3)]
    assert per_flow_out == per_flow_in
    empty_in = [tcp_fields(p) for p in packets if len(tcp_fields(p)[3]) == 0]
    assert [tcp_fields(p) for p in got if len(tcp_fields(p)[3]) == 0] == empty_in


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=200),
    gso_type=st.integers(0, 255),
    gso_size=st.integers(0, 65535),
    csum_start=st.integers(0, 300),
    csum_offset=st.integers(0, 300),
)
def test_any_bytes_either_work_or_raise_offload_error(
    data: bytes, gso_type: int, gso_size: int, csum_start: int, csum_offset: int
) -> None:
    try:
        vnet.decode_vnet(data)
    except OffloadError:
        assert len(data) < VNET_HDR_LEN
    out = bytearray(4096)
    try:
        stride, lengths = segment.segment_tcp(data, gso_type, gso_size, out, 7, 32, 1420)
    except OffloadError:
        pass
    else:
        assert lengths and all(n <= 1420 for n in lengths)
        assert stride >= 32 + max(lengths)
    buf = bytearray(data)
    try:
        offload.complete_checksum(buf, csum_start, csum_offset)
    except OffloadError:
        assert buf == data
    c = Coalescer()
    c.add(data)
    c.add(memoryview(data))
    writes = c.flush()
    assert 1 <= len(writes) <= 2
    assert all(len(w) >= VNET_HDR_LEN for w in writes)


@settings(max_examples=100, deadline=None)
@given(
    prefix=st.sampled_from([bytes(tcp_packet(b"")), bytes(tcp_packet(b"", version=6))]),
    tail=st.binary(max_size=3000),
)
def test_packets_with_valid_headers_and_random_rest_never_break_the_coalescer(
    prefix: bytes, tail: bytes
) -> None:
    packet = bytearray(prefix + tail)
    writes = coalesce([bytes(packet), bytes(packet)])
    assert b"".join(w[VNET_HDR_LEN:] for w in writes).count(tail) >= 1 or not tail


def udp_packet(payload: bytes, *, version: int = 4, port: int = 7000) -> bytes:
    """A UDP/IP packet 10.1.0.1 -> 10.2.0.1 (fd00:1::1 -> fd00:2::1) with valid checksums."""
    udp = struct.pack("!HHHH", port, 5201, 8 + len(payload), 0) + payload
    if version == 4:
        ip = bytearray(
            struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0x4000, 64, 17, 0,
                        ipaddress.IPv4Address("10.1.0.1").packed,
                        ipaddress.IPv4Address("10.2.0.1").packed)
        )  # fmt: skip
        ip[10:12] = struct.pack("!H", rfc1071(bytes(ip)))
        pseudo = bytes(ip[12:20]) + struct.pack("!BBH", 0, 17, len(udp))
    else:
        ip = bytearray(
            struct.pack("!IHBB16s16s", 6 << 28, len(udp), 17, 64,
                        ipaddress.IPv6Address("fd00:1::1").packed,
                        ipaddress.IPv6Address("fd00:2::1").packed)
        )  # fmt: skip
        pseudo = bytes(ip[8:40]) + struct.pack("!IxxxB", len(udp), 17)
    checksum = rfc1071(pseudo + udp) or 0xFFFF
    return bytes(ip) + udp[:6] + struct.pack("!H", checksum) + udp[8:]


def udp_ok(packet: bytes) -> bool:
    iph = 20 if packet[0] >> 4 == 4 else 40
    if iph == 20 and rfc1071(packet[:20]) not in (0, 0xFFFF):
        return False
    udp = packet[iph:]
    if struct.unpack_from("!H", udp, 4)[0] != len(udp):
        return False
    if iph == 20:
        pseudo = packet[12:20] + struct.pack("!BBH", 0, 17, len(udp))
    else:
        pseudo = packet[8:40] + struct.pack("!IxxxB", len(udp), 17)
    return rfc1071(pseudo + udp) in (0, 0xFFFF)


def cut_udp(write: bytes) -> list[bytes]:
    """A GSO_UDP_L4 write as the kernel segments it (a plain reference implementation)."""
    header = vnet.decode_vnet(write)
    packet = write[VNET_HDR_LEN:]
    assert header.flags == F_NEEDS_CSUM and header.csum_offset == 6
    iph = header.csum_start
    assert header.hdr_len == iph + 8
    payload = packet[iph + 8 :]
    out = []
    for i in range(0, len(payload), header.gso_size):
        chunk = payload[i : i + header.gso_size]
        ip = bytearray(packet[:iph])
        if iph == 20:
            ip[2:4] = struct.pack("!H", 28 + len(chunk))
            ip[10:12] = b"\0\0"
            ip[10:12] = struct.pack("!H", rfc1071(bytes(ip)))
            pseudo = bytes(ip[12:20]) + struct.pack("!BBH", 0, 17, 8 + len(chunk))
        else:
            ip[4:6] = struct.pack("!H", 8 + len(chunk))
            pseudo = bytes(ip[8:40]) + struct.pack("!IxxxB", 8 + len(chunk), 17)
        udp = packet[iph : iph + 4] + struct.pack("!HH", 8 + len(chunk), 0) + chunk
        checksum = rfc1071(pseudo + udp) or 0xFFFF
        out.append(bytes(ip) + udp[:6] + struct.pack("!H", checksum) + udp[8:])
    return out


@settings(max_examples=100, deadline=None)
@given(
    version=st.sampled_from([4, 6]),
    size=st.integers(min_value=offload.UDP_MIN_MERGE_PAYLOAD, max_value=1400),
    runs=st.lists(
        st.tuples(st.integers(0, 1), st.integers(1, 70), st.booleans()), min_size=1, max_size=6
    ),
)
def test_udp_datagrams_merge_into_super_packets_that_cut_back_to_them(
    version: int, size: int, runs: list[tuple[int, int, bool]]
) -> None:
    """Equal-sized datagrams of one flow (a shorter one ends a run) become GSO_UDP_L4
    super-packets of at most 64; cut as the kernel does, they are the same datagrams."""
    packets = []
    for flow, count, short in runs:
        for i in range(count):
            n = size - 1 if short and i == count - 1 else size
            packets.append(
                udp_packet(bytes([len(packets) % 251]) * n, version=version, port=7000 + flow)
            )
    c = Coalescer(udp=True)
    for p in packets:
        c.add(memoryview(p))
    got = []
    for w in c.flush():
        header = vnet.decode_vnet(w)
        if header.gso_type == vnet.GSO_UDP_L4:
            assert len(w) - VNET_HDR_LEN <= offload.MAX_IP_PACKET
            segments = cut_udp(bytes(w))
            assert 2 <= len(segments) <= offload.MAX_COALESCED_SEGMENTS
            got += segments
        else:
            assert header == vnet.NO_OFFLOAD
            got.append(bytes(w[VNET_HDR_LEN:]))
    assert all(udp_ok(p) for p in got)
    # per flow (source port), the same payloads in the same order
    iph = 20 if version == 4 else 40

    def flow_of(packets: list[bytes], port: int) -> list[bytes]:
        return [p[iph + 8 :] for p in packets if struct.unpack_from("!H", p, iph)[0] == port]

    for port in (7000, 7001):
        assert flow_of(got, port) == flow_of(packets, port)
    assert len(got) == len(packets)


def test_small_udp_and_udp_without_the_flag_pass_as_they_came() -> None:
    small = [udp_packet(b"s" * 64) for _ in range(3)]
    big = [udp_packet(b"b" * 1000) for _ in range(3)]
    c = Coalescer(udp=True)
    for p in small:
        c.add(p)
    assert [bytes(w) for w in c.flush()] == [vnet.plain_vnet() + p for p in small]
    assert coalesce(big) == [vnet.plain_vnet() + p for p in big]  # udp off
