"""The inner IP header parser: well-formed IPv4/IPv6, everything else None."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.tunnel import ippacket


def ipv4(
    src: str, dst: str, payload: bytes = b"", *, ihl: int = 5, total: int | None = None
) -> bytes:
    header_len = ihl * 4
    length = header_len + len(payload) if total is None else total
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x40 | ihl,
        0,
        length,
        0,
        0,
        64,
        1,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    return header + bytes(max(0, header_len - 20)) + payload


def ipv6(src: str, dst: str, payload: bytes = b"", *, payload_len: int | None = None) -> bytes:
    length = len(payload) if payload_len is None else payload_len
    header = struct.pack(
        "!IHBB16s16s",
        0x60000000,
        length,
        58,
        64,
        ipaddress.IPv6Address(src).packed,
        ipaddress.IPv6Address(dst).packed,
    )
    return header + payload


def model(packet: bytes) -> ippacket.Addresses | None:
    """An independent, obvious reading of the documented rules."""
    if not packet:
        return None
    version = packet[0] >> 4
    if version == 4 and len(packet) >= 20:
        ihl = packet[0] & 0xF
        (total,) = struct.unpack("!H", packet[2:4])
        if ihl >= 5 and len(packet) >= ihl * 4 and ihl * 4 <= total <= len(packet):
            return 4, packet[12:16], packet[16:20]
    if version == 6 and len(packet) >= 40:
        (payload,) = struct.unpack("!H", packet[4:6])
        if 40 + payload <= len(packet):
            return 6, packet[8:24], packet[24:40]
    return None


V4 = ipv4("10.1.2.3", "10.2.3.4", b"hello")
V6 = ipv6("fd00::1", "fd00:b::2", b"hello")


def test_ipv4() -> None:
    assert ippacket.parse(V4) == (4, bytes([10, 1, 2, 3]), bytes([10, 2, 3, 4]))


def test_ipv4_with_options_and_trailing_bytes() -> None:
    packet = ipv4("192.0.2.1", "198.51.100.7", b"data", ihl=15)
    assert ippacket.parse(packet + b"trailer") == (
        4,
        bytes([192, 0, 2, 1]),
        bytes([198, 51, 100, 7]),
    )


def test_ipv6() -> None:
    assert ippacket.parse(V6) == (
        6,
        ipaddress.IPv6Address("fd00::1").packed,
        ipaddress.IPv6Address("fd00:b::2").packed,
    )


def test_header_only_packets() -> None:
    assert ippacket.parse(ipv4("1.2.3.4", "5.6.7.8")) is not None
    assert ippacket.parse(ipv6("::1", "::2")) is not None


@pytest.mark.parametrize(
    "packet",
    [
        b"",
        b"\x45",
        V4[:19],
        ipv4("10.0.0.1", "10.0.0.2", ihl=4),
        ipv4("10.0.0.1", "10.0.0.2", ihl=0),
        ipv4("10.0.0.1", "10.0.0.2", b"x", ihl=6)[:23],
        ipv4("10.0.0.1", "10.0.0.2", b"abc", total=24),
        ipv4("10.0.0.1", "10.0.0.2", b"abc", total=19),
        ipv4("10.0.0.1", "10.0.0.2", b"", ihl=6, total=20) + bytes(4),
        V6[:39],
        ipv6("::1", "::2", b"abc", payload_len=4),
        b"\x00" * 60,
        b"\x50" + bytes(59),
        b"\xf0" + bytes(59),
    ],
)
def test_not_ip(packet: bytes) -> None:
    assert ippacket.parse(packet) is None


@pytest.mark.parametrize("packet", [V4, V6])
def test_every_truncation_is_not_ip(packet: bytes) -> None:
    for size in range(len(packet)):
        assert ippacket.parse(packet[:size]) is None


@pytest.mark.parametrize("packet", [V4, V6])
def test_byte_buffers_parse_alike(packet: bytes) -> None:
    expected = ippacket.parse(packet)
    assert ippacket.parse(bytearray(packet)) == expected
    assert ippacket.parse(memoryview(packet)) == expected
    assert ippacket.parse(memoryview(b"pad" + packet)[3:]) == expected


@given(st.binary(max_size=80))
def test_any_bytes_match_the_model(packet: bytes) -> None:
    result = ippacket.parse(packet)
    assert result == model(packet)
    if result is not None:
        version, src, dst = result
        assert len(src) == len(dst) == (4 if version == 4 else 16)
        assert type(src) is bytes and type(dst) is bytes


@given(
    st.sampled_from([V4, V6]),
    st.integers(0, 39),
    st.integers(0, 255),
)
def test_mutated_headers_match_the_model(packet: bytes, index: int, value: int) -> None:
    mutated = bytearray(packet)
    mutated[min(index, len(mutated) - 1)] = value
    assert ippacket.parse(mutated) == model(bytes(mutated))
