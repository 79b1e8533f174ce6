"""Session crypto: boxes, shared keys, sender ids and the nonce source."""

from __future__ import annotations

import hashlib

import nacl.bindings
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.tunnel import crypto
from edge.tunnel.crypto import COUNTER_LIMIT, NonceExhausted, NonceSource

A_PUBLIC, A_PRIVATE = nacl.bindings.crypto_box_seed_keypair(b"a" * 32)
B_PUBLIC, B_PRIVATE = nacl.bindings.crypto_box_seed_keypair(b"b" * 32)
C_PUBLIC, C_PRIVATE = nacl.bindings.crypto_box_seed_keypair(b"c" * 32)
KEY = crypto.precompute(A_PRIVATE, B_PUBLIC)
NONCE = bytes(range(24))


def test_public_key_of_matches_libsodium() -> None:
    assert crypto.public_key_of(A_PRIVATE) == A_PUBLIC
    with pytest.raises(ValueError):
        crypto.public_key_of(bytes(31))


def test_shared_key_is_the_same_on_both_sides() -> None:
    assert crypto.precompute(B_PRIVATE, A_PUBLIC) == KEY
    assert len(KEY) == 32
    assert crypto.precompute(A_PRIVATE, C_PUBLIC) != KEY


def test_precompute_refuses_bad_keys() -> None:
    with pytest.raises(ValueError):
        crypto.precompute(A_PRIVATE, bytes(31))
    with pytest.raises(ValueError):
        crypto.precompute(bytes(33), B_PUBLIC)
    with pytest.raises(ValueError, match="no usable shared secret"):
        crypto.precompute(A_PRIVATE, bytes(32))


@given(st.binary(max_size=2000))
def test_seal_open_round_trip(plaintext: bytes) -> None:
    box = crypto.seal(KEY, NONCE, plaintext)
    assert len(box) == len(plaintext) + 16
    assert crypto.open_(KEY, NONCE, box) == plaintext
    assert crypto.open_(crypto.precompute(B_PRIVATE, A_PUBLIC), NONCE, box) == plaintext


def test_any_flipped_bit_fails() -> None:
    box = crypto.seal(KEY, NONCE, b"a small IP packet")
    for bit in range(len(box) * 8):
        flipped = bytearray(box)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert crypto.open_(KEY, NONCE, bytes(flipped)) is None
    for bit in range(len(NONCE) * 8):
        nonce = bytearray(NONCE)
        nonce[bit // 8] ^= 1 << (bit % 8)
        assert crypto.open_(KEY, bytes(nonce), box) is None


def test_open_never_raises() -> None:
    box = crypto.seal(KEY, NONCE, b"payload")
    assert crypto.open_(crypto.precompute(A_PRIVATE, C_PUBLIC), NONCE, box) is None
    assert crypto.open_(KEY, NONCE, box[:15]) is None
    assert crypto.open_(KEY, NONCE, b"") is None
    assert crypto.open_(KEY, NONCE[:23], box) is None
    assert crypto.open_(KEY[:31], NONCE, box) is None


@given(st.binary(max_size=100))
def test_open_of_arbitrary_bytes_is_none(box: bytes) -> None:
    assert crypto.open_(KEY, NONCE, box) is None


def test_sender_id_is_blake2b_64() -> None:
    assert crypto.sender_id(A_PUBLIC) == hashlib.blake2b(A_PUBLIC, digest_size=8).digest()
    assert crypto.sender_id(A_PUBLIC) == crypto.sender_id(bytes(A_PUBLIC))
    assert len(crypto.sender_id(A_PUBLIC)) == 8
    assert crypto.sender_id(A_PUBLIC) != crypto.sender_id(B_PUBLIC)


def test_nonce_source_encodes_salt_and_counter() -> None:
    salt = bytes(range(16))
    source = NonceSource(salt)
    assert source.salt == salt
    assert source.next() == salt + bytes(8)
    assert source.next() == salt + (1).to_bytes(8, "big")
    assert source.counter == 2


def test_nonce_source_never_repeats() -> None:
    source = NonceSource(b"s" * 16)
    nonces = [source.next() for _ in range(10_000)]
    assert len(set(nonces)) == len(nonces)
    assert all(len(n) == 24 and n[:16] == b"s" * 16 for n in nonces)
    assert [int.from_bytes(n[16:], "big") for n in nonces] == list(range(10_000))


def test_nonce_source_refuses_to_wrap() -> None:
    source = NonceSource(bytes(16), start=COUNTER_LIMIT - 1)
    assert source.next() == bytes(16) + (2**64 - 2).to_bytes(8, "big")
    with pytest.raises(NonceExhausted):
        source.next()
    with pytest.raises(NonceExhausted):
        source.next()  # stays exhausted; the counter is not advanced


def test_nonce_source_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError):
        NonceSource(bytes(15))
    with pytest.raises(ValueError):
        NonceSource(bytes(16), start=-1)
    with pytest.raises(ValueError):
        NonceSource(bytes(16), start=2**64)
