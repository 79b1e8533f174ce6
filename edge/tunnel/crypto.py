"""Data-path sealing: XSalsa20-Poly1305 secretbox under a session key and a packet counter.

Owns the data packets' calls into libsodium. Keys are raw 32-byte session keys
(`handshake.SessionKeys`); nothing in this module formats or logs key material.

Rules:
- The nonce is `wire.data_nonce(counter)`. A (key, counter) pair is never sealed twice:
  the caller (the session) counts up and stops at REJECT_AFTER_MESSAGES.
- Opening never raises for any box or counter: a box that does not authenticate is None
  (`open_portable`) or -1 (`open_in_place`).

Two implementations with one contract: `seal` and the in-place forms call libsodium
through PyNaCl's private cffi handle (`nacl._sodium`), which saves the argument checks,
a copy of a memoryview box and a copy of the result buffer; `seal_portable`,
`open_portable` and the `*_in_place_portable` forms use only the public `nacl.bindings`.
`FAST` says which ones are in use; when the private handle is missing (a future PyNaCl),
they are the portable ones. Tests check that both agree byte for byte. (The data path
opens only in place, so there is no allocating fast open.)

In-place forms for the shell's preallocated buffers (no allocation per packet):
`seal_in_place(key, counter, buf, at, size)` seals the `size` plaintext bytes at
buf[at + 16:] into tag || ciphertext at buf[at:]; `open_in_place(key, counter, buf, at,
size)` opens the box of `size` bytes at buf[at:] and leaves the plaintext at buf[at + 16:],
returning its length, or -1 when the box does not authenticate (the buffer's bytes there are
then undefined). `seal_run_in_place(key, counter, buf, at, stride, sizes)` seals a run: the
i-th plaintext of sizes[i] bytes at buf[at + i * stride + 16:] with counter + i, as
`seal_in_place` would one by one. All exist on the portable path too (with copies).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

import nacl.bindings as sodium
from nacl.exceptions import CryptoError

from edge.tunnel import wire
from edge.tunnel.wire import BOX_TAG_LEN, MAX_COUNTER, NONCE_LEN, data_nonce

KEY_LEN = wire.KEY_LEN  # a session key is as long as an X25519 key
Box = bytes | bytearray | memoryview


def seal_portable(key: bytes, counter: int, plaintext: Box) -> bytes:
    """Tag (16) || ciphertext of `plaintext` under `key` and the nonce of `counter`.

    Raises:
        ValueError: the key is not 32 bytes or the counter not a uint64 (caller bugs).
    """
    result: bytes = sodium.crypto_secretbox_easy(bytes(plaintext), data_nonce(counter), key)
    return result


def open_portable(key: bytes, counter: int, box: Box) -> bytes | None:
    """The plaintext of `box`, or None when it does not authenticate or anything is off."""
    try:
        result: bytes = sodium.crypto_secretbox_open_easy(bytes(box), data_nonce(counter), key)
    except (CryptoError, ValueError, TypeError):
        return None
    return result


def seal_in_place_portable(key: bytes, counter: int, buf: bytearray, at: int, size: int) -> None:
    """Seal buf[at + 16 : at + 16 + size] into buf[at : at + 16 + size] (see the module)."""
    buf[at : at + BOX_TAG_LEN + size] = seal_portable(
        key, counter, bytes(buf[at + BOX_TAG_LEN : at + BOX_TAG_LEN + size])
    )


def open_in_place_portable(key: bytes, counter: int, buf: bytearray, at: int, size: int) -> int:
    """Open the box buf[at : at + size]; the plaintext length, or -1 (see the module)."""
    plain = open_portable(key, counter, bytes(buf[at : at + size]))
    if plain is None:
        return -1
    buf[at + BOX_TAG_LEN : at + BOX_TAG_LEN + len(plain)] = plain
    return len(plain)


def seal_run_in_place_portable(
    key: bytes, counter: int, buf: bytearray, at: int, stride: int, sizes: Sequence[int]
) -> None:
    """Seal a run of plaintexts (see the module)."""
    for i, size in enumerate(sizes):
        seal_in_place_portable(key, counter + i, buf, at + i * stride, size)


SealInPlace = Callable[[bytes, int, bytearray, int, int], None]
OpenInPlace = Callable[[bytes, int, bytearray, int, int], int]
SealRunInPlace = Callable[[bytes, int, bytearray, int, int, Sequence[int]], None]


def _fast() -> tuple[
    Callable[[bytes, int, Box], bytes],
    SealInPlace,
    OpenInPlace,
    SealRunInPlace,
]:
    from nacl._sodium import ffi, lib

    c_seal = lib.crypto_secretbox_easy
    c_open = lib.crypto_secretbox_open_easy
    new = ffi.new
    buffer = ffi.buffer
    from_buffer = ffi.from_buffer

    def seal(key: bytes, counter: int, plaintext: Box) -> bytes:
        """Tag (16) || ciphertext of `plaintext` under `key` and the nonce of `counter`.

        Raises:
            ValueError: the key is not 32 bytes or the counter not a uint64 (caller bugs).
        """
        if len(key) != KEY_LEN:
            raise ValueError(f"a session key is {KEY_LEN} bytes, got {len(key)}")
        nonce = data_nonce(counter)
        if type(plaintext) is not bytes:
            plaintext = from_buffer(plaintext)
        size = len(plaintext) + BOX_TAG_LEN
        out = new("unsigned char[]", size)
        c_seal(out, plaintext, size - BOX_TAG_LEN, nonce, key)
        result: bytes = buffer(out, size)[:]
        return result

    nonce_struct = wire.DATA_NONCE
    nonce = bytearray(NONCE_LEN)
    c_nonce = from_buffer(nonce)
    pack_nonce = nonce_struct.pack_into
    # The cdata of the last few buffers seen (the shell reuses its TX and RX buffers and
    # the core its scratch buffers), which saves a from_buffer per packet. A cdata holds
    # its bytearray exported (it cannot be resized, so it never moves) and alive (so its
    # id is not reused while it is cached); the cache is emptied when it holds too many.
    cache: dict[int, Any] = {}

    def _pointer(buf: bytearray) -> Any:
        pointer = cache.get(id(buf))
        if pointer is None:
            if len(cache) >= 8:
                cache.clear()
            pointer = cache[id(buf)] = from_buffer(buf, require_writable=True)
        return pointer

    def seal_in_place(key: bytes, counter: int, buf: bytearray, at: int, size: int) -> None:
        """Seal buf[at + 16 : at + 16 + size] into buf[at : at + 16 + size].

        Raises:
            ValueError: a bad key, counter or range (caller bugs).
        """
        if len(key) != KEY_LEN or at < 0 or size < 0 or at + BOX_TAG_LEN + size > len(buf):
            raise ValueError(f"a {KEY_LEN}-byte key and a box of {size} bytes at {at} in buf")
        try:
            pack_nonce(nonce, 0, counter)
        except struct.error:
            raise ValueError(f"the counter {counter} is not a uint64") from None
        base = _pointer(buf)
        c_seal(base + at, base + at + BOX_TAG_LEN, size, c_nonce, key)

    def open_in_place(key: bytes, counter: int, buf: bytearray, at: int, size: int) -> int:
        """Open the box buf[at : at + size]; the plaintext length at buf[at + 16:], or -1."""
        if len(key) != KEY_LEN or size < BOX_TAG_LEN or at < 0 or at + size > len(buf):
            return -1
        try:
            pack_nonce(nonce, 0, counter)
        except struct.error:  # not a uint64
            return -1
        base = _pointer(buf)
        if c_open(base + at + BOX_TAG_LEN, base + at, size, c_nonce, key) != 0:
            return -1
        return size - BOX_TAG_LEN

    def seal_run_in_place(
        key: bytes, counter: int, buf: bytearray, at: int, stride: int, sizes: Sequence[int]
    ) -> None:
        """Seal a run: sizes[i] bytes at buf[at + i * stride + 16:] with counter + i.

        Raises:
            ValueError: a bad key, counter or range (caller bugs).
        """
        count = len(sizes)
        if len(key) != KEY_LEN or not 0 <= counter <= MAX_COUNTER - count:
            raise ValueError(f"a session key is {KEY_LEN} bytes and the counter a uint64")
        if count and (
            at < 0
            or stride < 0
            or min(sizes) < 0
            or at + (count - 1) * stride + BOX_TAG_LEN + sizes[-1] > len(buf)
            or max(sizes) > stride - BOX_TAG_LEN
        ):
            raise ValueError(f"a run of {count} boxes at {at} does not fit the buffer")
        base = _pointer(buf) + at
        for size in sizes:
            pack_nonce(nonce, 0, counter)
            c_seal(base, base + BOX_TAG_LEN, size, c_nonce, key)
            counter += 1
            base += stride

    return seal, seal_in_place, open_in_place, seal_run_in_place


seal_in_place: SealInPlace
open_in_place: OpenInPlace
seal_run_in_place: SealRunInPlace
try:
    seal, seal_in_place, open_in_place, seal_run_in_place = _fast()
    FAST = True
except (ImportError, AttributeError):  # pragma: no cover - PyNaCl changed its internals
    seal = seal_portable
    seal_in_place, open_in_place = seal_in_place_portable, open_in_place_portable
    seal_run_in_place = seal_run_in_place_portable
    FAST = False
