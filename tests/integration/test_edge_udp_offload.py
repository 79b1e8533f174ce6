"""edge.udp's offloads on real sockets on 127.0.0.1: UDP GSO runs and GRO reads.

    UdpSocket A (GSO) --loopback--> UdpSocket B (GRO on or off)

A run handed to `send_segments` must reach the peer as the same datagrams, each on its own
(split into calls of at most 64 segments), whether the kernel segments it or the socket
falls back to one send per datagram.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator

import pytest

from edge.udp import MAX_SEGMENTS, UdpSocket
from isthmus.endpoint import Endpoint


@pytest.fixture
def pair() -> Iterator[tuple[UdpSocket, UdpSocket, UdpSocket]]:
    """A sender with offloads, and receivers with and without GRO."""
    a = UdpSocket.bind(Endpoint.parse("127.0.0.1:0", allow_port_zero=True))
    b_gro = UdpSocket.bind(Endpoint.parse("127.0.0.1:0", allow_port_zero=True))
    b_plain = UdpSocket.bind(Endpoint.parse("127.0.0.1:0", allow_port_zero=True), offload=False)
    try:
        yield a, b_gro, b_plain
    finally:
        for s in (a, b_gro, b_plain):
            s.close()


def addr(s: UdpSocket) -> tuple[str, int]:
    host, port = s.local_address().rsplit(":", 1)
    return host, int(port)


def datagrams(count: int, size: int, last: int) -> list[bytes]:
    return [bytes([i % 251]) * size for i in range(count - 1)] + [b"\xee" * last]


def receive_all(s: UdpSocket, expect: int) -> tuple[list[bytes], list[int]]:
    """Every datagram queued on `s` (split by the segment size), and the size of each read."""
    buf = bytearray(1 << 17)
    view = memoryview(buf)
    got: list[bytes] = []
    reads: list[int] = []
    while len(got) < expect:
        r = s.recv_segments_into(view)
        assert r is not None, f"only {len(got)} of {expect} datagrams arrived"
        n, _, segment = r
        reads.append(n)
        got += [bytes(buf[i : min(i + segment, n)]) for i in range(0, n, segment)]
    assert s.recv_segments_into(view) is None
    return got, reads


def test_gso_and_gro_are_on_where_the_kernel_has_them(
    pair: tuple[UdpSocket, UdpSocket, UdpSocket],
) -> None:
    a, b_gro, b_plain = pair
    assert a.gso and a.gro and b_gro.gro, "this kernel has UDP GSO and GRO (Linux >= 5.0)"
    assert not b_plain.gso and not b_plain.gro


@pytest.mark.parametrize("gro", [True, False])
def test_a_run_arrives_as_the_same_datagrams(
    pair: tuple[UdpSocket, UdpSocket, UdpSocket], gro: bool
) -> None:
    a, b_gro, b_plain = pair
    b = b_gro if gro else b_plain
    sent = datagrams(100, 1000, 300)  # more than one call's worth, the last shorter
    assert a.send_segments(memoryview(b"".join(sent)), 1000, addr(b))
    got, reads = receive_all(b, len(sent))
    assert got == sent
    if gro:
        # GRO hands a run over in one read, at most one send call's worth (64 segments)
        assert len(reads) < len(sent) and max(reads) <= MAX_SEGMENTS * 1000
    else:
        assert reads == [len(d) for d in sent]


def test_a_single_datagram_and_the_fallback_send_the_same_bytes(
    pair: tuple[UdpSocket, UdpSocket, UdpSocket],
) -> None:
    _, _, b = pair
    plain = UdpSocket.bind(Endpoint.parse("127.0.0.1:0", allow_port_zero=True), offload=False)
    try:
        sent = datagrams(5, 1400, 1400)
        assert plain.send_segments(memoryview(b"".join(sent)), 1400, addr(b))
        assert plain.send_segments(memoryview(b"x" * 20), 1400, addr(b))
        got, _ = receive_all(b, 6)
        assert got == [*sent, b"x" * 20]
    finally:
        plain.close()


def gso_socket(kind: type[socket.socket]) -> UdpSocket:
    """A UdpSocket with GSO on over a `kind` socket bound to 127.0.0.1 (its sends misbehave
    as `kind` says)."""
    raw = kind(socket.AF_INET, socket.SOCK_DGRAM)
    raw.bind(("127.0.0.1", 0))
    raw.setblocking(False)
    return UdpSocket(raw, gso=True, gro=False)


class RefusingGso(socket.socket):
    """A socket whose kernel refuses UDP_SEGMENT sends (as without checksum offload)."""

    def sendmsg(self, *args: object, **kwargs: object) -> int:  # type: ignore[override]
        raise OSError(errno.EIO, "no GSO here")


def test_a_kernel_refusing_gso_turns_it_off_and_still_delivers(
    pair: tuple[UdpSocket, UdpSocket, UdpSocket],
) -> None:
    _, _, b = pair
    s = gso_socket(RefusingGso)
    try:
        sent = datagrams(10, 500, 200)
        assert s.send_segments(memoryview(b"".join(sent)), 500, addr(b))
        assert not s.gso
        got, _ = receive_all(b, len(sent))
        assert got == sent
    finally:
        s.close()


def test_send_segments_reports_a_refused_send(
    pair: tuple[UdpSocket, UdpSocket, UdpSocket],
) -> None:
    a, _, _ = pair
    # port 0 is not a destination: the kernel refuses every send
    assert not a.send_segments(memoryview(b"z" * 3000), 1000, ("127.0.0.1", 0))
    assert a.gso, "a refused destination is no reason to give up GSO"


class PathMtuTooSmall(socket.socket):
    """A socket whose GSO sends exceed the path MTU the kernel holds (EMSGSIZE: a GSO send
    never fragments), while single datagrams still go out (the kernel fragments them)."""

    def sendmsg(self, *args: object, **kwargs: object) -> int:  # type: ignore[override]
        raise OSError(errno.EMSGSIZE, "Message too long")


def test_a_path_mtu_below_the_segment_size_keeps_gso_and_still_delivers(
    pair: tuple[UdpSocket, UdpSocket, UdpSocket],
) -> None:
    _, _, b = pair
    s = gso_socket(PathMtuTooSmall)
    try:
        sent = datagrams(10, 500, 200)
        assert s.send_segments(memoryview(b"".join(sent)), 500, addr(b))
        assert s.gso, "a path MTU drop (which anyone can spoof with ICMP) must not turn GSO off"
        got, _ = receive_all(b, len(sent))
        assert got == sent
    finally:
        s.close()


def test_a_segment_above_the_gso_limit_is_sent_one_by_one(
    pair: tuple[UdpSocket, UdpSocket, UdpSocket],
) -> None:
    a, _, b = pair
    sent = datagrams(2, 65100, 100)  # one segment alone fills a GSO send's 65000 bytes
    assert a.send_segments(memoryview(b"".join(sent)), 65100, addr(b))
    assert a.gso
    got, _ = receive_all(b, len(sent))
    assert got == sent
