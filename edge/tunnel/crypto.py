"""Data-path sealing: XSalsa20-Poly1305 secretbox under a session key and a packet counter.

Owns the data packets' calls into libsodium. Keys are raw 32-byte session keys
(`handshake.SessionKeys`); nothing in this module formats or logs key material.

Rules:
- The nonce is `wire.data_nonce(counter)`. A (key, counter) pair is never sealed twice:
  the caller (the session) counts up and stops at REJECT_AFTER_MESSAGES.
- `open_` never raises for any box or counter: a box that does not authenticate is None.

Two implementations with one contract: `seal`/`open_` call libsodium through PyNaCl's
private cffi handle (`nacl._sodium`), which saves the argument checks, a copy of a
memoryview box and a copy of the result buffer; `seal_portable`/`open_portable` use only
the public `nacl.bindings`. `FAST` says which one `seal`/`open_` are; when the private
handle is missing (a future PyNaCl), they are the portable ones. A test checks that both
agree byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable

import nacl.bindings as sodium
from nacl.exceptions import CryptoError

from edge.tunnel.wire import BOX_TAG_LEN, MAX_COUNTER, data_nonce

KEY_LEN = 32
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


def _fast() -> tuple[Callable[[bytes, int, Box], bytes], Callable[[bytes, int, Box], bytes | None]]:
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

    def open_(key: bytes, counter: int, box: Box) -> bytes | None:
        """The plaintext of `box`, or None when it does not authenticate or anything is off."""
        if len(key) != KEY_LEN or not 0 <= counter <= MAX_COUNTER:
            return None
        try:
            if type(box) is not bytes:
                box = from_buffer(box)  # no copy; its len() counts bytes
            size = len(box) - BOX_TAG_LEN
            if size < 0:
                return None
            out = new("unsigned char[]", size or 1)
            if c_open(out, box, size + BOX_TAG_LEN, data_nonce(counter), key) != 0:
                return None
        except (TypeError, ValueError, BufferError):
            return None
        result: bytes = buffer(out, size)[:]
        return result

    return seal, open_


try:
    seal, open_ = _fast()
    FAST = True
except (ImportError, AttributeError):  # pragma: no cover - PyNaCl changed its internals
    seal, open_ = seal_portable, open_portable
    FAST = False
