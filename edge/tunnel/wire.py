"""The tunnel packet codec (docs/protocol.md, "Messages"): four message types over UDP.

All integers are little-endian; indices are uint32, the counter uint64. Every message
starts with the type byte and three reserved bytes that must be zero.

```
type 1, initiation, exactly 148 bytes
 0       4              8                      40                 88            116     132     148
 | 1 000 | sender index | ephemeral E_i (32)   | enc_static (48)  | enc_ts (28) | mac1  | mac2  |

type 2, response, exactly 92 bytes
 0       4              8                12                44            60      76      92
 | 2 000 | sender index | receiver index | ephemeral E_r   | enc_empty 16 | mac1  | mac2  |

type 3, cookie reply, exactly 64 bytes
 0       4                8            32                    64
 | 3 000 | receiver index | nonce (24) | enc_cookie (16+16) |

type 4, data, 32 to 65535 bytes (32 = keepalive)
 0       4                8             16
 | 4 000 | receiver index | counter (8) | box = MAC (16) || IP packet |
```

Owns the layout and nothing else: no keys, no crypto, no peers. Decoding treats its
input as hostile and raises exactly one exception type, `MalformedPacket`, for every
datagram that does not fit the layout. Encoding a field of the wrong size or an integer
out of range is a caller bug and raises `ValueError`.

The layout is defined here once: `DATA_HEADER` and `DATA_NONCE` are the Structs the hot
path (edge.tunnel.inside/outside/crypto) packs and unpacks in place, and `OVERHEAD` is the
one statement of what a data datagram adds to its packet; no other module re-declares them.
`pack_data`/`unpack_data` are the allocating forms of the same Struct; `encode_data` and
`decode_data` wrap them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

TYPE_INITIATION = 1
TYPE_RESPONSE = 2
TYPE_COOKIE_REPLY = 3
TYPE_DATA = 4

# Field sizes.
TYPE_LEN = 1
RESERVED_LEN = 3
PREFIX_LEN = TYPE_LEN + RESERVED_LEN  # 4: type || reserved, read as one uint32 LE
INDEX_LEN = 4
KEY_LEN = 32  # an X25519 public key
BOX_TAG_LEN = 16  # the Poly1305 tag secretbox prepends
MAC_LEN = 16  # mac1, mac2, and a cookie
TIMESTAMP_LEN = 12  # TAI64N
COUNTER_LEN = 8
NONCE_LEN = 24  # secretbox nonce
ENC_STATIC_LEN = KEY_LEN + BOX_TAG_LEN  # 48
ENC_TIMESTAMP_LEN = TIMESTAMP_LEN + BOX_TAG_LEN  # 28
ENC_EMPTY_LEN = BOX_TAG_LEN  # 16
ENC_COOKIE_LEN = MAC_LEN + BOX_TAG_LEN  # 32

# Common prefix.
TYPE_OFFSET = 0
RESERVED_OFFSET = TYPE_OFFSET + TYPE_LEN  # 1

# Type 1, initiation.
INITIATION_SENDER_OFFSET = PREFIX_LEN  # 4
INITIATION_EPHEMERAL_OFFSET = INITIATION_SENDER_OFFSET + INDEX_LEN  # 8
INITIATION_STATIC_OFFSET = INITIATION_EPHEMERAL_OFFSET + KEY_LEN  # 40
INITIATION_TIMESTAMP_OFFSET = INITIATION_STATIC_OFFSET + ENC_STATIC_LEN  # 88
INITIATION_MAC1_OFFSET = INITIATION_TIMESTAMP_OFFSET + ENC_TIMESTAMP_LEN  # 116
INITIATION_MAC2_OFFSET = INITIATION_MAC1_OFFSET + MAC_LEN  # 132
INITIATION_LEN = INITIATION_MAC2_OFFSET + MAC_LEN  # 148

# Type 2, response.
RESPONSE_SENDER_OFFSET = PREFIX_LEN  # 4
RESPONSE_RECEIVER_OFFSET = RESPONSE_SENDER_OFFSET + INDEX_LEN  # 8
RESPONSE_EPHEMERAL_OFFSET = RESPONSE_RECEIVER_OFFSET + INDEX_LEN  # 12
RESPONSE_EMPTY_OFFSET = RESPONSE_EPHEMERAL_OFFSET + KEY_LEN  # 44
RESPONSE_MAC1_OFFSET = RESPONSE_EMPTY_OFFSET + ENC_EMPTY_LEN  # 60
RESPONSE_MAC2_OFFSET = RESPONSE_MAC1_OFFSET + MAC_LEN  # 76
RESPONSE_LEN = RESPONSE_MAC2_OFFSET + MAC_LEN  # 92

# Type 3, cookie reply.
COOKIE_REPLY_RECEIVER_OFFSET = PREFIX_LEN  # 4
COOKIE_REPLY_NONCE_OFFSET = COOKIE_REPLY_RECEIVER_OFFSET + INDEX_LEN  # 8
COOKIE_REPLY_COOKIE_OFFSET = COOKIE_REPLY_NONCE_OFFSET + NONCE_LEN  # 32
COOKIE_REPLY_LEN = COOKIE_REPLY_COOKIE_OFFSET + ENC_COOKIE_LEN  # 64

# Type 4, data.
DATA_RECEIVER_OFFSET = PREFIX_LEN  # 4
DATA_COUNTER_OFFSET = DATA_RECEIVER_OFFSET + INDEX_LEN  # 8
DATA_BOX_OFFSET = DATA_COUNTER_OFFSET + COUNTER_LEN  # 16
DATA_HEADER_LEN = DATA_BOX_OFFSET  # 16
OVERHEAD = DATA_HEADER_LEN + BOX_TAG_LEN  # 32: header and the box's tag
DATA_MIN_LEN = OVERHEAD  # 32: a keepalive, an empty box
# The largest datagram the codec takes (the UDP length field's limit); a receiver accepts
# only up to MAX_ACCEPTED below.
MAX_DATAGRAM = 65535
MAX_PLAINTEXT = MAX_DATAGRAM - OVERHEAD  # 65503
# The largest TUN MTU an edge may have (edge.config's limit): no edge seals a packet longer,
# so no edge sends a datagram longer than MAX_ACCEPTED; a receiver drops a longer one as
# oversize before it looks inside (9000 B jumbo frames fit, 65,507 B datagrams do not).
MAX_TUN_MTU = 9000
MAX_ACCEPTED = MAX_TUN_MTU + OVERHEAD  # 9032

MAX_INDEX = 2**32 - 1
MAX_COUNTER = 2**64 - 1

_PREFIX = struct.Struct("<I")  # type || reserved: equals the type when reserved is zero
_INITIATION = struct.Struct(f"<II{KEY_LEN}s{ENC_STATIC_LEN}s{ENC_TIMESTAMP_LEN}s16s16s")
_RESPONSE = struct.Struct(f"<III{KEY_LEN}s{ENC_EMPTY_LEN}s16s16s")
_COOKIE_REPLY = struct.Struct(f"<II{NONCE_LEN}s{ENC_COOKIE_LEN}s")
# The data header (type || reserved as one uint32, receiver index, counter): the hot path
# packs and unpacks it in place through this Struct.
DATA_HEADER: Final = struct.Struct("<IIQ")
# The data nonce: counter (8, LE) || 16 zero bytes; crypto packs it in place.
DATA_NONCE: Final = struct.Struct("<Q16x")
assert _INITIATION.size == INITIATION_LEN
assert _RESPONSE.size == RESPONSE_LEN
assert _COOKIE_REPLY.size == COOKIE_REPLY_LEN
assert DATA_HEADER.size == DATA_HEADER_LEN
assert DATA_NONCE.size == NONCE_LEN

# type -> (smallest, largest) datagram size.
_SIZES = {
    TYPE_INITIATION: (INITIATION_LEN, INITIATION_LEN),
    TYPE_RESPONSE: (RESPONSE_LEN, RESPONSE_LEN),
    TYPE_COOKIE_REPLY: (COOKIE_REPLY_LEN, COOKIE_REPLY_LEN),
    TYPE_DATA: (DATA_MIN_LEN, MAX_DATAGRAM),
}
_DATA_PREFIX = _PREFIX.pack(TYPE_DATA)

Buffer = bytes | bytearray | memoryview


class MalformedPacket(ValueError):
    """A datagram does not fit the tunnel packet layout."""


def _check_index(name: str, value: int) -> None:
    if not 0 <= value <= MAX_INDEX:
        raise ValueError(f"{name} {value} is not a uint32")


def _check_len(name: str, value: bytes, size: int) -> None:
    if len(value) != size:
        raise ValueError(f"{name} is {size} bytes, got {len(value)}")


@dataclass(frozen=True, slots=True)
class Initiation:
    """Type 1: the initiator's first message."""

    sender_index: int
    ephemeral: bytes
    enc_static: bytes
    enc_timestamp: bytes
    mac1: bytes
    mac2: bytes

    def __post_init__(self) -> None:
        _check_index("sender_index", self.sender_index)
        _check_len("ephemeral", self.ephemeral, KEY_LEN)
        _check_len("enc_static", self.enc_static, ENC_STATIC_LEN)
        _check_len("enc_timestamp", self.enc_timestamp, ENC_TIMESTAMP_LEN)
        _check_len("mac1", self.mac1, MAC_LEN)
        _check_len("mac2", self.mac2, MAC_LEN)


@dataclass(frozen=True, slots=True)
class Response:
    """Type 2: the responder's answer; `receiver_index` is the initiator's sender index."""

    sender_index: int
    receiver_index: int
    ephemeral: bytes
    enc_empty: bytes
    mac1: bytes
    mac2: bytes

    def __post_init__(self) -> None:
        _check_index("sender_index", self.sender_index)
        _check_index("receiver_index", self.receiver_index)
        _check_len("ephemeral", self.ephemeral, KEY_LEN)
        _check_len("enc_empty", self.enc_empty, ENC_EMPTY_LEN)
        _check_len("mac1", self.mac1, MAC_LEN)
        _check_len("mac2", self.mac2, MAC_LEN)


@dataclass(frozen=True, slots=True)
class CookieReply:
    """Type 3: a cookie for the sender of the handshake message with `receiver_index`."""

    receiver_index: int
    nonce: bytes
    enc_cookie: bytes

    def __post_init__(self) -> None:
        _check_index("receiver_index", self.receiver_index)
        _check_len("nonce", self.nonce, NONCE_LEN)
        _check_len("enc_cookie", self.enc_cookie, ENC_COOKIE_LEN)


@dataclass(frozen=True, slots=True)
class Data:
    """Type 4: one sealed IP packet (or an empty box, a keepalive)."""

    receiver_index: int
    counter: int
    box: bytes

    def __post_init__(self) -> None:
        _check_index("receiver_index", self.receiver_index)
        if not 0 <= self.counter <= MAX_COUNTER:
            raise ValueError(f"counter {self.counter} is not a uint64")
        if not BOX_TAG_LEN <= len(self.box) <= MAX_PLAINTEXT + BOX_TAG_LEN:
            raise ValueError(f"a box is {BOX_TAG_LEN}-{MAX_PLAINTEXT + BOX_TAG_LEN} bytes")


def _flat(datagram: Buffer) -> memoryview:
    view = memoryview(datagram)
    if view.format != "B" or not view.c_contiguous or view.ndim != 1:
        # Exotic buffers (other item formats, strides) are flattened to plain bytes.
        view = memoryview(view.tobytes())
    return view


def _malformed(view: memoryview) -> MalformedPacket:
    """The error for a datagram whose prefix or size does not fit (called on failure only)."""
    size = len(view)
    if size < PREFIX_LEN:
        return MalformedPacket(f"datagram of {size} bytes is shorter than the type prefix")
    kind = view[TYPE_OFFSET]
    if kind not in _SIZES:
        return MalformedPacket(f"unknown packet type {kind}")
    if any(view[RESERVED_OFFSET:PREFIX_LEN]):
        return MalformedPacket("reserved bytes are not zero")
    low, high = _SIZES[kind]
    allowed = str(low) if low == high else f"{low}-{high}"
    return MalformedPacket(f"type {kind} datagram of {size} bytes; allowed {allowed}")


def _expect(view: memoryview, kind: int) -> None:
    """Raise MalformedPacket unless `view` has the prefix and size of type `kind`."""
    low, high = _SIZES[kind]
    if len(view) >= PREFIX_LEN:
        other: int = _PREFIX.unpack_from(view)[0]
        if other == kind and low <= len(view) <= high:
            return
        if other != kind and other in _SIZES:
            raise MalformedPacket(f"a type {other} datagram where type {kind} was expected")
    raise _malformed(view)


def message_type(datagram: Buffer) -> int:
    """The type of a datagram whose prefix is valid and whose size fits that type.

    Raises:
        MalformedPacket: too short, an unknown type, non-zero reserved bytes, or a size
            the type does not allow.
    """
    view = _flat(datagram)
    if len(view) >= PREFIX_LEN:
        kind: int = _PREFIX.unpack_from(view)[0]
        sizes = _SIZES.get(kind)
        if sizes is not None and sizes[0] <= len(view) <= sizes[1]:
            return kind
    raise _malformed(view)


def encode_initiation(m: Initiation) -> bytes:
    return _INITIATION.pack(
        TYPE_INITIATION, m.sender_index, m.ephemeral, m.enc_static, m.enc_timestamp, m.mac1, m.mac2
    )


def decode_initiation(datagram: Buffer) -> Initiation:
    """Raises: MalformedPacket unless a type 1 datagram of exactly INITIATION_LEN bytes."""
    view = _flat(datagram)
    _expect(view, TYPE_INITIATION)
    _, sender, ephemeral, enc_static, enc_ts, mac1, mac2 = _INITIATION.unpack(view)
    return Initiation(sender, ephemeral, enc_static, enc_ts, mac1, mac2)


def encode_response(m: Response) -> bytes:
    return _RESPONSE.pack(
        TYPE_RESPONSE, m.sender_index, m.receiver_index, m.ephemeral, m.enc_empty, m.mac1, m.mac2
    )


def decode_response(datagram: Buffer) -> Response:
    """Raises: MalformedPacket unless a type 2 datagram of exactly RESPONSE_LEN bytes."""
    view = _flat(datagram)
    _expect(view, TYPE_RESPONSE)
    _, sender, receiver, ephemeral, enc_empty, mac1, mac2 = _RESPONSE.unpack(view)
    return Response(sender, receiver, ephemeral, enc_empty, mac1, mac2)


def encode_cookie_reply(m: CookieReply) -> bytes:
    return _COOKIE_REPLY.pack(TYPE_COOKIE_REPLY, m.receiver_index, m.nonce, m.enc_cookie)


def decode_cookie_reply(datagram: Buffer) -> CookieReply:
    """Raises: MalformedPacket unless a type 3 datagram of exactly COOKIE_REPLY_LEN bytes."""
    view = _flat(datagram)
    _expect(view, TYPE_COOKIE_REPLY)
    _, receiver, nonce, enc_cookie = _COOKIE_REPLY.unpack(view)
    return CookieReply(receiver, nonce, enc_cookie)


def pack_data(receiver_index: int, counter: int, box: bytes) -> bytes:
    """Lay out a DATA packet (hot path).

    Raises:
        ValueError: an integer out of range or a box shorter than its tag or too large;
            a bug in the caller.
    """
    if not BOX_TAG_LEN <= len(box) <= MAX_PLAINTEXT + BOX_TAG_LEN:
        raise ValueError(f"a box is {BOX_TAG_LEN}-{MAX_PLAINTEXT + BOX_TAG_LEN} bytes")
    try:
        return DATA_HEADER.pack(TYPE_DATA, receiver_index, counter) + box
    except struct.error:
        raise ValueError(
            f"receiver index {receiver_index} or counter {counter} is out of range"
        ) from None


def unpack_data(datagram: Buffer) -> tuple[int, int, memoryview]:
    """Split a DATA packet into (receiver index, counter, box) (hot path).

    The box is a view into `datagram`; copy it before the buffer is reused.

    Raises:
        MalformedPacket: shorter than DATA_MIN_LEN, longer than MAX_DATAGRAM, not type 4,
            or non-zero reserved bytes.
    """
    view = _flat(datagram)
    if not DATA_MIN_LEN <= len(view) <= MAX_DATAGRAM or view[:PREFIX_LEN] != _DATA_PREFIX:
        _expect(view, TYPE_DATA)  # raises, with the reason
    _, receiver, counter = DATA_HEADER.unpack_from(view)
    return receiver, counter, view[DATA_BOX_OFFSET:]


def encode_data(m: Data) -> bytes:
    return pack_data(m.receiver_index, m.counter, m.box)


def decode_data(datagram: Buffer) -> Data:
    """Raises: MalformedPacket (see `unpack_data`)."""
    receiver, counter, box = unpack_data(datagram)
    return Data(receiver, counter, bytes(box))


def data_nonce(counter: int) -> bytes:
    """The secretbox nonce of a data packet: counter (8, LE) || 16 zero bytes.

    Raises:
        ValueError: the counter is not a uint64 (a caller bug).
    """
    try:
        return DATA_NONCE.pack(counter)
    except struct.error:
        raise ValueError(f"counter {counter} is not a uint64") from None
