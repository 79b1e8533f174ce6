"""Data-path sealing: round trips, tampering, the nonce, and both implementations."""

from __future__ import annotations

import random
from collections.abc import Callable

import nacl.bindings as sodium
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.tunnel import crypto, wire

KEY = random.Random(1).randbytes(32)
OTHER = random.Random(2).randbytes(32)
counters = st.integers(0, 2**64 - 1)

Seal = Callable[[bytes, int, bytes], bytes]
Open = Callable[[bytes, int, bytes | bytearray | memoryview], bytes | None]


def open_in_place(key: bytes, counter: int, box: bytes | bytearray | memoryview) -> bytes | None:
    """The data path's open (`crypto.open_in_place`, what `Receiver` runs) on a copy of
    `box`: its plaintext, or None."""
    buf = bytearray(box)
    n = crypto.open_in_place(key, counter, buf, 0, len(buf))
    return None if n < 0 else bytes(buf[wire.BOX_TAG_LEN : wire.BOX_TAG_LEN + n])


IMPLEMENTATIONS: list[tuple[Seal, Open]] = [
    (crypto.seal, open_in_place),
    (crypto.seal_portable, crypto.open_portable),
]
IDS = ["default", "portable"]


def test_the_fast_path_is_in_use() -> None:
    assert crypto.FAST


@pytest.mark.parametrize(("seal", "open_"), IMPLEMENTATIONS, ids=IDS)
@pytest.mark.parametrize("size", [0, 1, 64, 1400, wire.MAX_PLAINTEXT])
def test_round_trip(seal: Seal, open_: Open, size: int) -> None:
    plaintext = random.Random(size).randbytes(size)
    box = seal(KEY, 7, plaintext)
    assert len(box) == size + wire.BOX_TAG_LEN
    for buffer in (box, bytearray(box), memoryview(box), memoryview(b"xx" + box)[2:]):
        assert open_(KEY, 7, buffer) == plaintext


@given(st.binary(max_size=2000), counters)
def test_implementations_agree(plaintext: bytes, counter: int) -> None:
    box = crypto.seal(KEY, counter, plaintext)
    assert box == crypto.seal_portable(KEY, counter, plaintext)
    assert open_in_place(KEY, counter, box) == crypto.open_portable(KEY, counter, box) == plaintext


@given(st.binary(max_size=2000), counters)
def test_nonce_layout(plaintext: bytes, counter: int) -> None:
    nonce = counter.to_bytes(8, "little") + bytes(16)
    assert crypto.seal(KEY, counter, plaintext) == sodium.crypto_secretbox_easy(
        plaintext, nonce, KEY
    )


@pytest.mark.parametrize(("seal", "open_"), IMPLEMENTATIONS, ids=IDS)
def test_any_flipped_bit_is_refused(seal: Seal, open_: Open) -> None:
    box = seal(KEY, 3, b"an IP packet")
    for bit in range(8 * len(box)):
        tampered = bytearray(box)
        tampered[bit // 8] ^= 1 << (bit % 8)
        assert open_(KEY, 3, tampered) is None


@pytest.mark.parametrize(("seal", "open_"), IMPLEMENTATIONS, ids=IDS)
def test_wrong_key_counter_or_size_is_refused(seal: Seal, open_: Open) -> None:
    box = seal(KEY, 3, b"an IP packet")
    assert open_(OTHER, 3, box) is None
    assert open_(KEY, 4, box) is None
    assert open_(KEY, 3, box[:-1]) is None
    assert open_(KEY, 3, box + b"\x00") is None
    for size in range(wire.BOX_TAG_LEN):
        assert open_(KEY, 3, box[:size]) is None


@pytest.mark.parametrize(("seal", "open_"), IMPLEMENTATIONS, ids=IDS)
@pytest.mark.parametrize(
    ("key", "counter"), [(KEY[:31], 0), (KEY + b"\x00", 0), (KEY, -1), (KEY, 2**64)]
)
def test_open_never_raises(seal: Seal, open_: Open, key: bytes, counter: int) -> None:
    box = seal(KEY, 0, b"x")
    assert open_(key, counter, box) is None
    with pytest.raises(ValueError):
        seal(key, counter, b"x")


@pytest.mark.parametrize(("seal", "open_"), IMPLEMENTATIONS, ids=IDS)
@given(data=st.binary(max_size=100), counter=counters)
def test_open_of_any_bytes_is_none(seal: Seal, open_: Open, data: bytes, counter: int) -> None:
    assert open_(KEY, counter, data) is None


def test_seal_takes_any_byte_buffer() -> None:
    box = crypto.seal(KEY, 9, b"payload")
    assert crypto.seal(KEY, 9, memoryview(b"--payload")[2:]) == box
    assert crypto.seal_portable(KEY, 9, bytearray(b"payload")) == box


@pytest.mark.parametrize("sizes", [[0], [1], [64], [1400], [1400, 1400, 700], [0, 1, 1400, 5]])
@pytest.mark.parametrize("counter", [0, 7, 2**64 - 8])
def test_in_place_portable_forms_agree_with_the_fast_path(sizes: list[int], counter: int) -> None:
    # The portable in-place forms are what seal_in_place & co. are when PyNaCl's private
    # handle is missing: byte for byte the same datagrams, in the same buffer positions.
    stride = wire.BOX_TAG_LEN + max(sizes) + 3
    at = 5
    plain = bytearray(random.Random(len(sizes)).randbytes(at + stride * len(sizes)))
    fast, portable = bytearray(plain), bytearray(plain)
    crypto.seal_run_in_place(KEY, counter, fast, at, stride, sizes)
    crypto.seal_run_in_place_portable(KEY, counter, portable, at, stride, sizes)
    assert fast == portable
    fast, portable = bytearray(plain), bytearray(plain)
    crypto.seal_in_place(KEY, counter, fast, at, sizes[0])
    crypto.seal_in_place_portable(KEY, counter, portable, at, sizes[0])
    assert fast == portable
    box = bytes(fast[at : at + wire.BOX_TAG_LEN + sizes[0]])
    assert box == crypto.seal_portable(KEY, counter, plain[at + 16 : at + 16 + sizes[0]])
    for open_at in (crypto.open_in_place, crypto.open_in_place_portable):
        buf = bytearray(b"..." + box + b"..")
        assert open_at(KEY, counter, buf, 3, len(box)) == sizes[0]
        assert buf[3 + wire.BOX_TAG_LEN : 3 + len(box)] == plain[at + 16 : at + 16 + sizes[0]]
        assert open_at(OTHER, counter, bytearray(buf), 3, len(box)) == -1
        tampered = bytearray(b"..." + box + b"..")
        tampered[3] ^= 1
        assert open_at(KEY, counter, tampered, 3, len(box)) == -1
