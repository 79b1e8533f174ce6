"""The tunnel packet codec: layout, round trips, and hostile input."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.tunnel import wire
from edge.tunnel.wire import (
    COOKIE_REPLY_LEN,
    DATA_HEADER_LEN,
    INITIATION_LEN,
    MAC_LEN,
    MAX_DATAGRAM,
    OVERHEAD,
    RESPONSE_LEN,
    TYPE_COOKIE_REPLY,
    TYPE_DATA,
    TYPE_INITIATION,
    TYPE_RESPONSE,
    CookieReply,
    Data,
    Initiation,
    MalformedPacket,
    Response,
)

Message = Initiation | Response | CookieReply | Data

ENCODERS: dict[type[Any], Callable[[Any], bytes]] = {
    Initiation: wire.encode_initiation,
    Response: wire.encode_response,
    CookieReply: wire.encode_cookie_reply,
    Data: wire.encode_data,
}
DECODERS: dict[int, Callable[[bytes | bytearray | memoryview], Message]] = {
    TYPE_INITIATION: wire.decode_initiation,
    TYPE_RESPONSE: wire.decode_response,
    TYPE_COOKIE_REPLY: wire.decode_cookie_reply,
    TYPE_DATA: wire.decode_data,
}
TYPES: dict[type[Any], int] = {
    Initiation: TYPE_INITIATION,
    Response: TYPE_RESPONSE,
    CookieReply: TYPE_COOKIE_REPLY,
    Data: TYPE_DATA,
}


def encode(message: Message) -> bytes:
    return ENCODERS[type(message)](message)


def decode(datagram: bytes | bytearray | memoryview) -> Message:
    """The one way to decode anything: message_type, then that type's decoder."""
    return DECODERS[wire.message_type(datagram)](datagram)


def test_layout_constants() -> None:
    assert (TYPE_INITIATION, TYPE_RESPONSE, TYPE_COOKIE_REPLY, TYPE_DATA) == (1, 2, 3, 4)
    assert (INITIATION_LEN, RESPONSE_LEN, COOKIE_REPLY_LEN) == (148, 92, 64)
    assert (DATA_HEADER_LEN, MAC_LEN, OVERHEAD, MAX_DATAGRAM) == (16, 16, 32, 65535)
    assert (wire.INITIATION_MAC1_OFFSET, wire.INITIATION_MAC2_OFFSET) == (116, 132)
    assert (wire.RESPONSE_MAC1_OFFSET, wire.RESPONSE_MAC2_OFFSET) == (60, 76)
    assert (wire.INITIATION_EPHEMERAL_OFFSET, wire.INITIATION_STATIC_OFFSET) == (8, 40)
    assert wire.INITIATION_TIMESTAMP_OFFSET == 88
    assert (wire.RESPONSE_RECEIVER_OFFSET, wire.RESPONSE_EPHEMERAL_OFFSET) == (8, 12)
    assert wire.RESPONSE_EMPTY_OFFSET == 44
    assert (wire.COOKIE_REPLY_NONCE_OFFSET, wire.COOKIE_REPLY_COOKIE_OFFSET) == (8, 32)
    assert (wire.DATA_COUNTER_OFFSET, wire.DATA_BOX_OFFSET) == (8, 16)


def seq(start: int, size: int) -> bytes:
    return bytes((start + i) % 256 for i in range(size))


# One table for both directions: (message, its exact bytes).
TABLE: list[tuple[Message, bytes]] = [
    (
        Initiation(
            0x04030201, seq(0x10, 32), seq(0x40, 48), seq(0x80, 28), seq(0xA0, 16), seq(0xB0, 16)
        ),
        b"\x01\x00\x00\x00"
        + b"\x01\x02\x03\x04"
        + seq(0x10, 32)
        + seq(0x40, 48)
        + seq(0x80, 28)
        + seq(0xA0, 16)
        + seq(0xB0, 16),
    ),
    (
        Initiation(0xFFFFFFFF, bytes(32), bytes(48), bytes(28), bytes(16), bytes(16)),
        b"\x01\x00\x00\x00" + b"\xff" * 4 + bytes(140),
    ),
    (
        Response(1, 0x0A0B0C0D, seq(0x20, 32), seq(0x60, 16), seq(0x70, 16), bytes(16)),
        b"\x02\x00\x00\x00"
        + b"\x01\x00\x00\x00"
        + b"\x0d\x0c\x0b\x0a"
        + seq(0x20, 32)
        + seq(0x60, 16)
        + seq(0x70, 16)
        + bytes(16),
    ),
    (
        CookieReply(0x11223344, seq(0x30, 24), seq(0x90, 32)),
        b"\x03\x00\x00\x00" + b"\x44\x33\x22\x11" + seq(0x30, 24) + seq(0x90, 32),
    ),
    (
        Data(0x00000102, 0x0807060504030201, b"M" * 16 + b"packet"),
        b"\x04\x00\x00\x00" + b"\x02\x01\x00\x00" + bytes(range(1, 9)) + b"M" * 16 + b"packet",
    ),
    (
        Data(0, 0, bytes(16)),  # a keepalive: the smallest datagram
        b"\x04" + bytes(31),
    ),
    (
        Data(0xFFFFFFFF, 2**64 - 1, b"\xab" * (MAX_DATAGRAM - DATA_HEADER_LEN)),
        b"\x04\x00\x00\x00" + b"\xff" * 12 + b"\xab" * (MAX_DATAGRAM - DATA_HEADER_LEN),
    ),
]
IDS = [f"{type(m).__name__}-{i}" for i, (m, _) in enumerate(TABLE)]


@pytest.mark.parametrize(("message", "expected"), TABLE, ids=IDS)
def test_table(message: Message, expected: bytes) -> None:
    assert encode(message) == expected
    assert wire.message_type(expected) == TYPES[type(message)]
    assert decode(expected) == message
    assert DECODERS[TYPES[type(message)]](expected) == message


indices = st.integers(0, 2**32 - 1)


def sized(n: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=n, max_size=n)


messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Initiation, indices, sized(32), sized(48), sized(28), sized(16), sized(16)),
    st.builds(Response, indices, indices, sized(32), sized(16), sized(16), sized(16)),
    st.builds(CookieReply, indices, sized(24), sized(32)),
    st.builds(Data, indices, st.integers(0, 2**64 - 1), st.binary(min_size=16, max_size=1500)),
)


@given(messages)
def test_round_trip(message: Message) -> None:
    encoded = encode(message)
    for buffer in (encoded, bytearray(encoded), memoryview(encoded)):
        assert decode(buffer) == message


def test_exotic_memoryviews() -> None:
    message, encoded = TABLE[0]
    assert decode(memoryview(encoded).cast("I")) == message  # 148 bytes = 37 uint32
    strided = memoryview(encoded * 2)[::2]
    with pytest.raises(MalformedPacket):
        decode(strided)


def _decode_or_malformed(data: bytes | bytearray) -> None:
    try:
        message = decode(data)
    except MalformedPacket:
        pass
    else:
        assert encode(message) == bytes(data)
    for decoder in DECODERS.values():
        try:
            message = decoder(data)
        except MalformedPacket:
            continue
        assert encode(message) == bytes(data)


@given(st.binary(max_size=200))
def test_any_bytes_decode_or_raise_malformed(data: bytes) -> None:
    _decode_or_malformed(data)


@given(messages, st.data())
def test_mutated_messages_decode_or_raise_malformed(message: Message, data: st.DataObject) -> None:
    packet = bytearray(encode(message))
    for _ in range(data.draw(st.integers(1, 3))):
        index = data.draw(st.integers(0, len(packet) - 1))
        packet[index] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        packet += data.draw(st.binary(max_size=4))
    _decode_or_malformed(packet)


@pytest.mark.parametrize(("message", "encoded"), TABLE[:-1], ids=IDS[:-1])
def test_every_truncation_is_rejected(message: Message, encoded: bytes) -> None:
    # Data has no length field: a box cut to 16 bytes or more still fits the layout and
    # is refused by its MAC instead, so only cuts below DATA_MIN_LEN apply to it.
    shortest = wire.DATA_MIN_LEN if isinstance(message, Data) else len(encoded)
    for size in range(shortest):
        with pytest.raises(MalformedPacket):
            wire.message_type(encoded[:size])
        with pytest.raises(MalformedPacket):
            DECODERS[TYPES[type(message)]](encoded[:size])


@pytest.mark.parametrize(("message", "encoded"), TABLE[:4], ids=IDS[:4])
def test_fixed_sizes_refuse_extra_bytes(message: Message, encoded: bytes) -> None:
    with pytest.raises(MalformedPacket, match="bytes; allowed"):
        wire.message_type(encoded + b"\x00")
    with pytest.raises(MalformedPacket):
        DECODERS[TYPES[type(message)]](encoded + b"\x00")


def test_oversize_data_rejected() -> None:
    packet = b"\x04" + bytes(MAX_DATAGRAM)
    with pytest.raises(MalformedPacket):
        wire.message_type(packet)
    with pytest.raises(MalformedPacket):
        wire.unpack_data(packet)


@pytest.mark.parametrize(("message", "encoded"), TABLE[:6], ids=IDS[:6])
def test_unknown_types_rejected(message: Message, encoded: bytes) -> None:
    for packet_type in (0, *range(5, 256)):
        packet = bytes([packet_type]) + encoded[1:]
        with pytest.raises(MalformedPacket, match="unknown packet type"):
            wire.message_type(packet)
        with pytest.raises(MalformedPacket, match="unknown packet type"):
            DECODERS[TYPES[type(message)]](packet)


@pytest.mark.parametrize("bit", range(24))
@pytest.mark.parametrize(("message", "encoded"), TABLE[:6], ids=IDS[:6])
def test_reserved_bits_rejected(bit: int, message: Message, encoded: bytes) -> None:
    packet = bytearray(encoded)
    packet[1 + bit // 8] |= 1 << (bit % 8)
    with pytest.raises(MalformedPacket, match="reserved"):
        wire.message_type(packet)
    with pytest.raises(MalformedPacket, match="reserved"):
        DECODERS[TYPES[type(message)]](packet)


def test_decoder_of_another_type_rejects() -> None:
    for message, encoded in TABLE:
        for kind, decoder in DECODERS.items():
            if kind != TYPES[type(message)]:
                with pytest.raises(MalformedPacket, match="expected"):
                    decoder(encoded)


def test_unpack_data_is_a_view() -> None:
    packet = bytearray(encode(TABLE[4][0]))
    receiver, counter, box = wire.unpack_data(packet)
    assert (receiver, counter, bytes(box)) == (0x102, 0x0807060504030201, b"M" * 16 + b"packet")
    packet[-1] = ord("X")
    assert bytes(box[-1:]) == b"X"


@pytest.mark.parametrize(
    "call",
    [
        lambda: wire.pack_data(-1, 0, bytes(16)),
        lambda: wire.pack_data(2**32, 0, bytes(16)),
        lambda: wire.pack_data(0, 2**64, bytes(16)),
        lambda: wire.pack_data(0, -1, bytes(16)),
        lambda: wire.pack_data(0, 0, bytes(15)),
        lambda: wire.pack_data(0, 0, bytes(MAX_DATAGRAM - DATA_HEADER_LEN + 1)),
        lambda: wire.data_nonce(2**64),
        lambda: Initiation(0, bytes(31), bytes(48), bytes(28), bytes(16), bytes(16)),
        lambda: Response(0, 2**32, bytes(32), bytes(16), bytes(16), bytes(16)),
        lambda: CookieReply(0, bytes(24), bytes(31)),
    ],
)
def test_encoding_caller_bugs_raise_value_error(call: Callable[[], object]) -> None:
    with pytest.raises(ValueError) as info:
        call()
    assert not isinstance(info.value, MalformedPacket)


@given(st.integers(0, 2**64 - 1))
def test_data_nonce_layout(counter: int) -> None:
    nonce = wire.data_nonce(counter)
    assert nonce == counter.to_bytes(8, "little") + bytes(16)
    assert len(nonce) == wire.NONCE_LEN
