"""Session crypto: shared keys, sealing and opening boxes, sender ids and nonces.

Owns every call into PyNaCl, made only through `nacl.bindings` (no object wrappers
on the hot path). Keys are raw bytes here; nothing in this module formats or logs
key material.

Rules:
- A (shared key, nonce) pair is never used twice to seal. Each process draws a fresh
  random salt (injected: this module has no randomness) and `NonceSource` counts from
  0 under it and refuses to wrap.
- `open_` never raises for any box: a box that does not authenticate is None.
"""

from __future__ import annotations

import hashlib

import nacl.bindings as sodium
from nacl.exceptions import CryptoError

from edge.tunnel.wire import COUNTER_LEN, SALT_LEN, SENDER_ID_LEN
from isthmus.keys import KEY_LEN

# The counter value the source refuses to hand out: one below 2**64, so the counter
# field is never seen to wrap, not even at its last value.
COUNTER_LIMIT = 2**64 - 1


class NonceExhausted(RuntimeError):
    """2**64 - 1 nonces were drawn under one salt; a bug, never reached in practice."""


def public_key_of(private_key: bytes) -> bytes:
    """The X25519 public key of a 32-byte private key.

    Raises:
        ValueError: the private key is not 32 bytes.
    """
    if len(private_key) != KEY_LEN:
        raise ValueError(f"a private key is {KEY_LEN} bytes, got {len(private_key)}")
    return sodium.crypto_scalarmult_base(private_key)


def precompute(private_key: bytes, peer_public: bytes) -> bytes:
    """The shared key of this edge and a peer (crypto_box_beforenm), the same on both sides.

    Raises:
        ValueError: a key is not 32 bytes, or the peer's key gives no usable secret
            (a low-order point libsodium refuses).
    """
    if len(private_key) != KEY_LEN or len(peer_public) != KEY_LEN:
        raise ValueError(f"keys are {KEY_LEN} bytes")
    try:
        return sodium.crypto_box_beforenm(peer_public, private_key)
    except CryptoError:
        raise ValueError("the peer's public key gives no usable shared secret") from None


def seal(key: bytes, nonce: bytes, plaintext: bytes) -> bytes:
    """MAC (16) || ciphertext of `plaintext`.

    Raises:
        ValueError: the key or nonce has the wrong size (a caller bug).
    """
    return sodium.crypto_box_easy_afternm(plaintext, nonce, key)


def open_(key: bytes, nonce: bytes, box: bytes) -> bytes | None:
    """The plaintext of `box`, or None when it does not authenticate or has a bad size."""
    try:
        return sodium.crypto_box_open_easy_afternm(box, nonce, key)
    except (CryptoError, ValueError, TypeError):
        return None


def sender_id(public_key: bytes) -> bytes:
    """BLAKE2b-64 of a public key: the cleartext name of a packet's sender."""
    return hashlib.blake2b(public_key, digest_size=SENDER_ID_LEN).digest()


class NonceSource:
    """Nonces salt (16) || counter (8, big-endian), the counter counting from `start`.

    One source serves every peer of a process: the counter is unique per process, so
    (key, nonce) is unique for every key.
    """

    __slots__ = ("_counter", "_salt")

    def __init__(self, salt: bytes, *, start: int = 0) -> None:
        """`start` exists for tests of exhaustion; production code uses 0.

        Raises:
            ValueError: the salt is not 16 bytes or `start` is out of range.
        """
        if len(salt) != SALT_LEN:
            raise ValueError(f"a salt is {SALT_LEN} bytes, got {len(salt)}")
        if not 0 <= start <= COUNTER_LIMIT:
            raise ValueError(f"start {start} is out of range 0-{COUNTER_LIMIT}")
        self._salt = bytes(salt)
        self._counter = start

    @property
    def salt(self) -> bytes:
        return self._salt

    @property
    def counter(self) -> int:
        """The counter the next nonce will carry."""
        return self._counter

    def next(self) -> bytes:
        """The next nonce (24 bytes).

        Raises:
            NonceExhausted: the counter reached COUNTER_LIMIT.
        """
        counter = self._counter
        if counter >= COUNTER_LIMIT:
            raise NonceExhausted("nonce counter exhausted; the process must restart")
        self._counter = counter + 1
        return self._salt + counter.to_bytes(COUNTER_LEN, "big")
