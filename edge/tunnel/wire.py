"""The tunnel packet codec: one UDP datagram carries one sealed IP packet.

```
 0       1       2       3
+-------+-------+-------+-------+
| type  |   reserved (zero)     |   type 1 = DATA
+-------+-------+-------+-------+
|  sender id (8): BLAKE2b-64     |   of the sender's public key
|  of the sender's public key    |
+-------------------------------+
|  nonce (24) = salt (16)       |   salt: random per process start
|              || counter (8)   |   counter: big-endian, +1 per packet
+-------------------------------+
|  box = MAC (16) || IP packet  |   crypto_box_easy_afternm with the
+-------------------------------+   precomputed X25519 key of the two edges
```

Owns the layout and nothing else: no keys, no crypto, no peers. Decoding treats its
input as hostile and raises exactly one exception type, `MalformedPacket`, for every
datagram that does not fit the layout. Encoding a header or box of the wrong size is
a caller bug and raises `ValueError`.

`pack_data`/`unpack_data` are the hot-path forms (no dataclass); `encode_data` and
`decode_data` wrap them, so the layout is defined once.
"""

from __future__ import annotations

from dataclasses import dataclass

TYPE_DATA = 1

TYPE_OFFSET = 0
TYPE_LEN = 1
RESERVED_OFFSET = TYPE_OFFSET + TYPE_LEN  # 1
RESERVED_LEN = 3
SENDER_ID_OFFSET = RESERVED_OFFSET + RESERVED_LEN  # 4
SENDER_ID_LEN = 8
NONCE_OFFSET = SENDER_ID_OFFSET + SENDER_ID_LEN  # 12
SALT_LEN = 16
COUNTER_LEN = 8
NONCE_LEN = SALT_LEN + COUNTER_LEN  # 24
HEADER_LEN = NONCE_OFFSET + NONCE_LEN  # 36
BOX_OFFSET = HEADER_LEN
MAC_LEN = 16
OVERHEAD = HEADER_LEN + MAC_LEN  # 52
# A box seals at least one byte: an empty DATA packet carries nothing and is refused.
MIN_DATAGRAM = OVERHEAD + 1  # 53
# The largest datagram accepted or produced (the UDP length field's limit).
MAX_DATAGRAM = 65535
MAX_PLAINTEXT = MAX_DATAGRAM - OVERHEAD

# type DATA followed by the three zero reserved bytes.
_DATA_PREFIX = bytes((TYPE_DATA, 0, 0, 0))


class MalformedPacket(ValueError):
    """A datagram does not fit the tunnel packet layout."""


@dataclass(frozen=True, slots=True)
class DataHeader:
    """The cleartext header of a DATA packet."""

    sender_id: bytes
    nonce: bytes

    def __post_init__(self) -> None:
        if len(self.sender_id) != SENDER_ID_LEN:
            raise ValueError(f"a sender id is {SENDER_ID_LEN} bytes, got {len(self.sender_id)}")
        if len(self.nonce) != NONCE_LEN:
            raise ValueError(f"a nonce is {NONCE_LEN} bytes, got {len(self.nonce)}")


def pack_data(sender_id: bytes, nonce: bytes, box: bytes) -> bytes:
    """Lay out a DATA packet (hot path).

    Raises:
        ValueError: a field has the wrong size; a bug in the caller.
    """
    if (
        len(sender_id) != SENDER_ID_LEN
        or len(nonce) != NONCE_LEN
        or not MAC_LEN < len(box) <= MAX_PLAINTEXT + MAC_LEN
    ):
        raise ValueError(
            f"cannot pack sender id of {len(sender_id)}, nonce of {len(nonce)}, "
            f"box of {len(box)} bytes"
        )
    return _DATA_PREFIX + sender_id + nonce + box


def unpack_data(datagram: bytes | bytearray | memoryview) -> tuple[bytes, bytes, memoryview]:
    """Split a DATA packet into (sender id, nonce, box) (hot path).

    The box is a view into `datagram`; copy it before the buffer is reused.

    Raises:
        MalformedPacket: shorter than MIN_DATAGRAM, longer than MAX_DATAGRAM, an unknown
            type, or non-zero reserved bytes.
    """
    view = memoryview(datagram)
    if view.format != "B" or not view.c_contiguous or view.ndim != 1:
        # Exotic buffers (other item formats, strides) are flattened to plain bytes.
        view = memoryview(view.tobytes())
    size = len(view)
    if size < MIN_DATAGRAM or size > MAX_DATAGRAM:
        raise MalformedPacket(f"datagram of {size} bytes; allowed {MIN_DATAGRAM}-{MAX_DATAGRAM}")
    if view[:SENDER_ID_OFFSET] != _DATA_PREFIX:
        if view[TYPE_OFFSET] != TYPE_DATA:
            raise MalformedPacket(f"unknown packet type {view[TYPE_OFFSET]}")
        raise MalformedPacket("reserved bytes are not zero")
    return (
        bytes(view[SENDER_ID_OFFSET:NONCE_OFFSET]),
        bytes(view[NONCE_OFFSET:BOX_OFFSET]),
        view[BOX_OFFSET:],
    )


def encode_data(header: DataHeader, box: bytes) -> bytes:
    """Raises: ValueError when the box is empty or too large (a caller bug)."""
    return pack_data(header.sender_id, header.nonce, box)


def decode_data(datagram: bytes | bytearray | memoryview) -> tuple[DataHeader, memoryview]:
    """Raises: MalformedPacket (see `unpack_data`)."""
    sender_id, nonce, box = unpack_data(datagram)
    return DataHeader(sender_id, nonce), box
