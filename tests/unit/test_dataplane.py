"""The data plane shell's fast path with the fakes of edge.testing and the real core.

    FakeTun A (vnet on/off) -> Dataplane A -> FakeDatagramSocket A ~~(test copies)~~>
        FakeDatagramSocket B (GRO on/off) -> Dataplane B -> FakeTun B

Checks the shell's own work: super-packets cut into MTU-sized segments and each sealed,
NEEDS_CSUM completed, runs of equal-sized datagrams to one endpoint sent in one call,
GRO runs split and every datagram checked by the core, TCP segments coalesced on the way
out, the plain path without a virtio-net header, and failures counted.
"""

from __future__ import annotations

import os
import struct

import pytest
from nacl.bindings import crypto_box_seed_keypair

from edge import offload, segment
from edge import vnet as vnet_header
from edge.dataplane import Dataplane, DataplaneStats
from edge.offload import TCP_ACK
from edge.testing import FakeDatagramSocket, FakeTun
from edge.tunnel import Identity, Tunnel
from edge.vnet import F_NEEDS_CSUM, GSO_NONE, GSO_TCPV4, GSO_TCPV6, VNET_HDR_LEN
from isthmus.endpoint import Endpoint
from isthmus.ids import EdgeName
from isthmus.keys import PublicKey
from isthmus.routemap import EdgeEntry, RouteMap, parse_route
from tests.unit.test_offload import cut_udp, tcp_ok, tcp_packet, udp_packet

A_ADDR = ("198.18.0.1", 51820)
B_ADDR = ("198.18.0.2", 51820)
C_ADDR = ("198.18.0.3", 51820)
KEYS = {name: crypto_box_seed_keypair(bytes([i + 1]) * 32) for i, name in enumerate("abc")}
ROUTES = {
    "a": ("10.1.0.0/16", "fd00:1::/32"),
    "b": ("10.2.0.0/16", "fd00:2::/32"),
    "c": ("10.3.0.0/16", "fd00:3::/32"),
}
ENDPOINTS = {"a": A_ADDR, "b": B_ADDR, "c": C_ADDR}
ROUTE_MAP = RouteMap(
    1,
    tuple(
        EdgeEntry(
            EdgeName(name),
            PublicKey(KEYS[name][0]),
            (Endpoint.parse(f"{ENDPOINTS[name][0]}:{ENDPOINTS[name][1]}"),),
            tuple(parse_route(r) for r in ROUTES[name]),
        )
        for name in "abc"
    ),
)


def core(name: str) -> Tunnel:
    tunnel = Tunnel(
        Identity.from_private_key(EdgeName(name), KEYS[name][1]),
        random=os.urandom,
        wall_clock=lambda: 1_800_000_000.0,
    )
    tunnel.apply_map(ROUTE_MAP, 0.0)
    return tunnel


class Edge:
    def __init__(self, name: str, vnet: bool, mtu: int = 1420) -> None:
        self.name = name
        self.addr = ENDPOINTS[name]
        self.core = core(name)
        self.tun = FakeTun(vnet_hdr=vnet, mtu=mtu)
        self.udp = FakeDatagramSocket()
        self.dp = Dataplane(self.core, self.tun, self.udp, clock=lambda: 1.0)


def carry(edges: list[Edge]) -> None:
    """Deliver every sent datagram to the edge it is addressed to, until quiet."""
    by_addr = {e.addr: e for e in edges}
    moved = True
    while moved:
        moved = False
        for src in edges:
            while src.udp.sent:
                datagram, addr = src.udp.sent.pop(0)
                by_addr[addr].udp.inbound.append((datagram, src.addr))
                moved = True
        for e in edges:
            if e.udp.inbound:
                e.dp.on_udp_readable()


def connected(vnet_a: bool, vnet_b: bool, mtu: int = 1420) -> tuple[Edge, Edge]:
    """Two edges with a session a <-> b (the handshake carried by a first packet)."""
    return handshake(Edge("a", vnet_a, mtu), Edge("b", vnet_b, mtu))


def handshake(a: Edge, b: Edge) -> tuple[Edge, Edge]:
    vnet_a, vnet_b = a.tun.vnet_hdr, b.tun.vnet_hdr
    hello = bytes(tcp_packet(b"hello"))
    a.tun.inbound.append(wrap(hello) if vnet_a else hello)
    a.dp.on_tun_readable()
    carry([a, b])
    assert [unwrap(w) if vnet_b else w for w in b.tun.written] == [hello]
    b.tun.written.clear()
    a.dp.stats = DataplaneStats()
    b.dp.stats = DataplaneStats()
    return a, b


def wrap(packet: bytes, header: vnet_header.VnetHeader = vnet_header.NO_OFFLOAD) -> bytes:
    return vnet_header.encode_vnet(header) + packet


def unwrap(write: bytes) -> bytes:
    assert vnet_header.decode_vnet(write) == vnet_header.NO_OFFLOAD
    return write[VNET_HDR_LEN:]


def opened(receiver: Tunnel, datagrams: list[bytes], sender: tuple[str, int]) -> list[bytes]:
    out = []
    for d in datagrams:
        packet = receiver.outside(d, sender, 1.0)
        assert packet is not None
        out.append(packet)
    return out


def super_packet(payload: bytes, version: int = 4, seq: int = 1) -> bytes:
    """A TCP packet 10.1.0.1 -> 10.2.0.1 (fd00:1::1 -> fd00:2::1) of any length."""
    return bytes(tcp_packet(payload, version=version, seq=seq))


# -- TUN -> UDP ------------------------------------------------------------------------


@pytest.mark.parametrize("version", [4, 6])
def test_a_super_packet_leaves_as_mtu_sized_segments_each_sealed(version: int) -> None:
    a, b = connected(True, True)
    payload = os.urandom(20000)
    big = super_packet(payload, version)
    hlen = (20 if version == 4 else 40) + 32
    gso_type = GSO_TCPV4 if version == 4 else GSO_TCPV6
    # What the kernel hands over: the checksum is left partial (NEEDS_CSUM).
    header = vnet_header.VnetHeader(F_NEEDS_CSUM, gso_type, hlen, 1420 - hlen, hlen - 32, 16)
    a.tun.inbound.append(wrap(big, header))
    a.dp.on_tun_readable()
    sent = [d for d, addr in a.udp.sent]
    assert {addr for _, addr in a.udp.sent} == {B_ADDR}
    assert len(sent) == -(-len(payload) // (1420 - hlen))
    assert max(len(d) for d in sent) == 1420 + 32, "no datagram above the TUN MTU + overhead"
    assert a.udp.segment_sends == 1, "equal-sized datagrams to one endpoint leave in one call"
    segments = opened(b.core, sent, A_ADDR)
    assert all(tcp_ok(s) for s in segments)
    assert b"".join(s[hlen:] for s in segments) == payload
    assert a.dp.stats.super_packets == 1 and a.dp.stats.segments == len(segments)
    assert a.dp.stats.gso_sends == 1 and a.dp.stats.gso_datagrams == len(segments)


def test_segments_never_exceed_the_tun_mtu_whatever_gso_size_says() -> None:
    a, b = connected(True, True, mtu=1000)
    payload = os.urandom(9000)
    header = vnet_header.VnetHeader(F_NEEDS_CSUM, GSO_TCPV4, 52, 1400, 20, 16)
    a.tun.inbound.append(wrap(super_packet(payload), header))
    a.dp.on_tun_readable()
    segments = opened(b.core, [d for d, _ in a.udp.sent], A_ADDR)
    assert max(len(s) for s in segments) == 1000
    assert all(tcp_ok(s) for s in segments)
    assert b"".join(s[52:] for s in segments) == payload


def test_needs_csum_is_completed_before_sealing() -> None:
    a, b = connected(True, True)
    packet = super_packet(b"x" * 333)
    broken = bytearray(packet)
    broken[36:38] = struct.pack("!H", offload.pseudo_sum(packet, 4, 6, len(packet) - 20))
    assert not tcp_ok(bytes(broken))
    header = vnet_header.VnetHeader(F_NEEDS_CSUM, GSO_NONE, 0, 0, 20, 16)
    a.tun.inbound.append(wrap(bytes(broken), header))
    a.dp.on_tun_readable()
    [segment] = opened(b.core, [d for d, _ in a.udp.sent], A_ADDR)
    assert segment == packet


def test_malformed_offload_requests_are_dropped_and_counted() -> None:
    a, _ = connected(True, True)
    udp_gso = vnet_header.VnetHeader(0, vnet_header.GSO_UDP_L4, 28, 1000, 0, 0)
    bad_csum = vnet_header.VnetHeader(F_NEEDS_CSUM, GSO_NONE, 0, 0, 3050, 16)  # field cut off
    v6_on_v4 = vnet_header.VnetHeader(0, GSO_TCPV6, 52, 1000, 0, 0)
    packet = super_packet(b"y" * 3000)
    for header in (udp_gso, bad_csum, v6_on_v4):
        a.tun.inbound.append(wrap(packet, header))
    a.tun.inbound.append(b"\0" * 5)  # shorter than a virtio-net header
    a.dp.on_tun_readable()
    assert a.udp.sent == []
    assert a.core.drops()["not_ip"] == 3


@pytest.mark.parametrize("vnet", [False, True])
def test_runs_group_equal_sizes_to_one_endpoint_and_end_after_a_shorter_one(vnet: bool) -> None:
    a, b = connected(vnet, True)
    a.udp.sent.clear()
    sizes_and_dst = [
        (1000, "10.2.0.1"),
        (1000, "10.2.0.1"),
        (400, "10.2.0.1"),  # shorter: ends the run
        (1000, "10.2.0.1"),  # a new run
        (1000, "10.3.0.1"),  # another endpoint (no session yet: queued, handshake sent)
        (1000, "10.2.0.1"),
        (1200, "10.2.0.1"),  # larger than the run's segment: a new run
    ]
    packets = [bytes(tcp_packet(b"z" * (n - 52), dst=dst)) for n, dst in sizes_and_dst]
    a.tun.inbound.extend(wrap(p) if vnet else p for p in packets)
    a.dp.on_tun_readable()
    data = [(d, addr) for d, addr in a.udp.sent if addr == B_ADDR]
    assert [len(d) - 32 for d, _ in data] == [1000, 1000, 400, 1000, 1000, 1200]
    # runs: [1000 1000 400] [1000 (c's packet is queued, its handshake sent apart) 1000]
    # [1200]
    assert a.udp.segment_sends == 3
    assert a.dp.stats.gso_sends == 2 and a.dp.stats.gso_datagrams == 5
    assert opened(b.core, [d for d, _ in data], A_ADDR) == [
        p for p, (_, dst) in zip(packets, sizes_and_dst, strict=True) if dst == "10.2.0.1"
    ]
    assert [addr for _, addr in a.udp.sent if addr != B_ADDR] == [C_ADDR]  # its initiation


def test_send_failures_of_a_run_count_every_datagram() -> None:
    a, _ = connected(False, False)
    a.udp.refuse_sends = True
    a.tun.inbound.extend(bytes(tcp_packet(b"q" * 500)) for _ in range(5))
    a.dp.on_tun_readable()
    assert a.core.drops()["send_failed"] == 5


def test_a_full_batch_of_super_packets_fits_the_tx_buffer() -> None:
    a, b = connected(True, True)
    payload = os.urandom(60000)
    header = vnet_header.VnetHeader(F_NEEDS_CSUM, GSO_TCPV4, 52, 1368, 20, 16)
    count = 12
    for i in range(count):
        a.tun.inbound.append(wrap(super_packet(payload, seq=1 + i * len(payload)), header))
    a.dp.on_tun_readable()
    segments = opened(b.core, [d for d, _ in a.udp.sent], A_ADDR)
    assert b"".join(s[52:] for s in segments) == payload * count
    assert a.dp.stats.super_packets == count


# -- UDP -> TUN ------------------------------------------------------------------------


@pytest.mark.parametrize("vnet", [False, True])
def test_a_gro_run_is_split_and_every_datagram_checked(vnet: bool) -> None:
    a, b = connected(True, vnet)
    b.udp.gro = True
    packets = [
        bytes(tcp_packet(bytes([i]) * 900, seq=1 + 900 * i, flags=TCP_ACK)) for i in range(6)
    ]
    sealed = []
    for p in packets:
        out = a.core.inside(p, 1.0)
        assert out is not None
        sealed.append(out[0])
    forged = bytearray(sealed[4])
    forged[-1] ^= 1
    # one read: equal sizes from one sender, ended by a shorter (truncated) one
    run = [sealed[0], sealed[1], sealed[2], sealed[1], sealed[3], bytes(forged), sealed[5][:-1]]
    b.udp.inbound.extend((d, A_ADDR) for d in run)
    b.dp.on_udp_readable()
    assert b.dp.stats.udp_reads == 1
    assert b.dp.stats.gro_reads == 1 and b.dp.stats.gro_datagrams == len(run)
    drops = b.core.drops()
    assert (drops["decrypt_failed"], drops["replay"]) == (2, 1)
    delivered = packets[:4]
    if not vnet:
        assert b.tun.written == delivered
        return
    # in-order, equal-sized segments of one flow: one super-packet for the kernel
    [write] = b.tun.written
    header = vnet_header.decode_vnet(write)
    assert (header.flags, header.gso_type, header.gso_size) == (F_NEEDS_CSUM, GSO_TCPV4, 900)
    assert (header.hdr_len, header.csum_start, header.csum_offset) == (52, 20, 16)
    merged = bytearray(write[VNET_HDR_LEN:])
    offload.complete_checksum(merged, header.csum_start, header.csum_offset)
    assert tcp_ok(bytes(merged))
    out = bytearray(1 << 16)
    stride, lengths = segment.segment_tcp(bytes(merged), GSO_TCPV4, 900, out, 0)
    cut = [bytes(out[i * stride : i * stride + n]) for i, n in enumerate(lengths)]
    assert [c[52:] for c in cut] == [p[52:] for p in delivered]
    assert [c[24:28] for c in cut] == [p[24:28] for p in delivered]  # sequence numbers
    assert b.dp.stats.coalesced_writes == 1 and b.dp.stats.coalesced_segments == 4


def test_coalescing_keeps_flows_and_other_packets_apart() -> None:
    a, b = connected(True, True)
    flow1 = [bytes(tcp_packet(b"1" * 800, seq=1 + 800 * i, flags=TCP_ACK)) for i in range(3)]
    flow2 = [
        bytes(tcp_packet(b"2" * 800, seq=1 + 800 * i, flags=TCP_ACK, ports=(40001, 5201)))
        for i in range(3)
    ]
    icmp = bytearray(tcp_packet(b"ping"))
    icmp[9] = 1
    mixed = [flow1[0], flow2[0], flow1[1], bytes(icmp), flow2[1], flow1[2], flow2[2]]
    for p in mixed:
        out = a.core.inside(p, 1.0)
        assert out is not None
        b.udp.inbound.append((out[0], A_ADDR))
    b.dp.on_udp_readable()
    writes = b.tun.written
    kinds = [vnet_header.decode_vnet(w).gso_type for w in writes]
    # the ICMP packet is written at once; each TCP flow becomes one super-packet
    assert kinds == [GSO_NONE, GSO_TCPV4, GSO_TCPV4]
    assert writes[0][VNET_HDR_LEN:] == bytes(icmp)
    assert writes[1][VNET_HDR_LEN + 52 :] == b"1" * 2400
    assert writes[2][VNET_HDR_LEN + 52 :] == b"2" * 2400


def test_tun_write_failures_are_counted_not_raised() -> None:
    a, b = connected(False, True)
    b.tun.refuse_writes = True
    out = a.core.inside(bytes(tcp_packet(b"w" * 100)), 1.0)
    assert out is not None
    b.udp.inbound.append((out[0], A_ADDR))
    b.dp.on_udp_readable()
    assert b.dp.stats.tun_write_errors == 1


def test_large_udp_merges_where_the_kernel_takes_it_small_udp_goes_at_once() -> None:
    a, b = Edge("a", True), Edge("b", True)
    b.tun = FakeTun(vnet_hdr=True, udp_gso=True)
    b.dp = Dataplane(b.core, b.tun, b.udp, clock=lambda: 1.0, merge_udp=True)
    a, b = handshake(a, b)
    big = [udp_packet(bytes([i]) * 1000) for i in range(5)]
    small = [udp_packet(b"s" * 64) for _ in range(2)]
    for p in [big[0], small[0], big[1], big[2], small[1], big[3], big[4]]:
        out = a.core.inside(p, 1.0)
        assert out is not None
        b.udp.inbound.append((out[0], A_ADDR))
    b.dp.on_udp_readable()
    writes = b.tun.written
    assert [vnet_header.decode_vnet(w).gso_type for w in writes] == [
        GSO_NONE,
        GSO_NONE,
        vnet_header.GSO_UDP_L4,
    ]
    assert [w[VNET_HDR_LEN:] for w in writes[:2]] == small
    assert cut_udp(writes[2]) == big
    assert b.dp.stats.coalesced_writes == 1 and b.dp.stats.coalesced_segments == 5


def test_udp_is_written_as_it_came_by_default() -> None:
    a, b = Edge("a", True), Edge("b", True)
    b.tun = FakeTun(vnet_hdr=True, udp_gso=True)
    b.dp = Dataplane(b.core, b.tun, b.udp, clock=lambda: 1.0)
    a, b = handshake(a, b)
    big = [udp_packet(bytes([i]) * 1000) for i in range(3)]
    for p in big:
        out = a.core.inside(p, 1.0)
        assert out is not None
        b.udp.inbound.append((out[0], A_ADDR))
    b.dp.on_udp_readable()
    assert b.tun.written == [vnet_header.plain_vnet() + p for p in big]
