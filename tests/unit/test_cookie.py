"""Handshake MACs and cookie replies: keys, mac2 validity, sealing and opening."""

from __future__ import annotations

import hashlib
import itertools

import nacl.bindings
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.tunnel.cookie import (
    COOKIE_LIFETIME,
    LABEL_COOKIE,
    LABEL_MAC1,
    MAC_LEN,
    CookieGenerator,
    cookie_key,
    mac,
    mac1_key,
    open_reply,
)

R_PUBLIC, _ = nacl.bindings.crypto_box_seed_keypair(b"r" * 32)
OTHER_PUBLIC, _ = nacl.bindings.crypto_box_seed_keypair(b"o" * 32)
SOURCE = bytes([192, 0, 2, 1]) + (51820).to_bytes(2, "big")
SOURCE_V6 = bytes(range(16)) + (51820).to_bytes(2, "big")
OTHER_PORT = bytes([192, 0, 2, 1]) + (51821).to_bytes(2, "big")
MAC1 = bytes(range(16))
PREFIX = bytes(range(132))


class CountingRandom:
    """Deterministic `random`: distinct bytes on every call, and a record of the sizes asked."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self._counter = itertools.count()

    def __call__(self, n: int) -> bytes:
        self.calls.append(n)
        seed = next(self._counter).to_bytes(8, "big")
        return hashlib.shake_256(seed).digest(n)


def generator() -> tuple[CookieGenerator, CountingRandom]:
    random = CountingRandom()
    return CookieGenerator(R_PUBLIC, random), random


def test_keys_and_macs_are_deterministic_blake2b() -> None:
    assert LABEL_MAC1 == b"mac1----" and LABEL_COOKIE == b"cookie--" and MAC_LEN == 16
    assert mac1_key(R_PUBLIC) == hashlib.blake2b(b"mac1----" + R_PUBLIC, digest_size=32).digest()
    assert cookie_key(R_PUBLIC) == hashlib.blake2b(b"cookie--" + R_PUBLIC, digest_size=32).digest()
    assert len(mac1_key(R_PUBLIC)) == len(cookie_key(R_PUBLIC)) == 32
    assert mac1_key(R_PUBLIC) != cookie_key(R_PUBLIC) != mac1_key(OTHER_PUBLIC)
    key = mac1_key(R_PUBLIC)
    assert mac(key, PREFIX) == mac(key, memoryview(PREFIX))
    assert mac(key, PREFIX) == hashlib.blake2b(PREFIX, digest_size=16, key=key).digest()
    assert len(mac(key, b"")) == MAC_LEN
    assert mac(key, PREFIX) != mac(mac1_key(OTHER_PUBLIC), PREFIX)


def test_seal_open_round_trip() -> None:
    gen, random = generator()
    cookie = gen.cookie_for(SOURCE, 0.0)
    assert len(cookie) == MAC_LEN
    nonce, enc = gen.seal_reply(cookie, MAC1)
    assert random.calls == [32, 24]
    assert len(nonce) == 24 and len(enc) == 32
    assert open_reply(R_PUBLIC, MAC1, nonce, enc) == cookie
    # The box is what the protocol says: secretbox under KEYED(cookie_key(S_r), mac1).
    key = hashlib.blake2b(MAC1, digest_size=32, key=cookie_key(R_PUBLIC)).digest()
    assert nacl.bindings.crypto_secretbox_open_easy(enc, nonce, key) == cookie


def test_wrong_mac1_or_responder_does_not_open() -> None:
    gen, _ = generator()
    nonce, enc = gen.seal_reply(gen.cookie_for(SOURCE, 0.0), MAC1)
    assert open_reply(R_PUBLIC, bytes(16), nonce, enc) is None
    assert open_reply(OTHER_PUBLIC, MAC1, nonce, enc) is None


def test_any_flipped_bit_does_not_open() -> None:
    gen, _ = generator()
    nonce, enc = gen.seal_reply(gen.cookie_for(SOURCE, 0.0), MAC1)
    for bit in range(len(enc) * 8):
        flipped = bytearray(enc)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert open_reply(R_PUBLIC, MAC1, nonce, bytes(flipped)) is None
    for bit in range(len(nonce) * 8):
        flipped = bytearray(nonce)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert open_reply(R_PUBLIC, MAC1, bytes(flipped), enc) is None
    for bit in range(len(MAC1) * 8):
        flipped = bytearray(MAC1)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert open_reply(R_PUBLIC, bytes(flipped), nonce, enc) is None


@given(st.binary(max_size=80), st.binary(max_size=80), st.binary(max_size=80), st.binary())
def test_open_reply_never_raises(public: bytes, mac1: bytes, nonce: bytes, enc: bytes) -> None:
    assert open_reply(public, mac1, nonce, enc) is None


def test_cookie_is_per_source_and_stable_within_the_lifetime() -> None:
    gen, random = generator()
    cookie = gen.cookie_for(SOURCE, 10.0)
    assert gen.cookie_for(SOURCE, 10.0 + COOKIE_LIFETIME) == cookie
    assert gen.cookie_for(OTHER_PORT, 50.0) != cookie
    assert gen.cookie_for(SOURCE_V6, 50.0) != cookie
    assert random.calls == [32]


def test_cookie_changes_after_the_secret_lifetime() -> None:
    gen, random = generator()
    cookie = gen.cookie_for(SOURCE, 10.0)
    renewed = gen.cookie_for(SOURCE, 10.0 + COOKIE_LIFETIME + 0.001)
    assert renewed != cookie
    assert random.calls == [32, 32]
    # The new secret lives from its own birth.
    assert gen.cookie_for(SOURCE, 10.0 + 2 * COOKIE_LIFETIME) == renewed


def test_valid_mac2_accepts_a_mac_under_the_cookie_for_that_source() -> None:
    gen, _ = generator()
    cookie = gen.cookie_for(SOURCE, 0.0)
    mac2 = mac(cookie, PREFIX)
    assert gen.valid_mac2(PREFIX, mac2, SOURCE, 1.0)
    assert gen.valid_mac2(memoryview(PREFIX), mac2, SOURCE, COOKIE_LIFETIME)


def test_valid_mac2_refuses_another_source_message_or_mac() -> None:
    gen, _ = generator()
    mac2 = mac(gen.cookie_for(SOURCE, 0.0), PREFIX)
    assert not gen.valid_mac2(PREFIX, mac2, OTHER_PORT, 1.0)
    assert not gen.valid_mac2(PREFIX, mac2, SOURCE_V6, 1.0)
    assert not gen.valid_mac2(PREFIX[:-1] + b"\xff", mac2, SOURCE, 1.0)
    assert not gen.valid_mac2(PREFIX, bytes(16), SOURCE, 1.0)
    assert not gen.valid_mac2(PREFIX, mac2[:15], SOURCE, 1.0)


def test_valid_mac2_refuses_a_stale_secret_and_draws_none() -> None:
    gen, random = generator()
    assert not gen.valid_mac2(PREFIX, bytes(16), SOURCE, 0.0)  # no secret yet
    assert random.calls == []
    mac2 = mac(gen.cookie_for(SOURCE, 0.0), PREFIX)
    assert not gen.valid_mac2(PREFIX, mac2, SOURCE, COOKIE_LIFETIME + 0.001)
    assert random.calls == [32]
    # Nor after the secret was replaced.
    gen.cookie_for(SOURCE, COOKIE_LIFETIME + 1.0)
    assert not gen.valid_mac2(PREFIX, mac2, SOURCE, COOKIE_LIFETIME + 1.0)


def test_seal_reply_uses_a_fresh_nonce_each_time() -> None:
    gen, _ = generator()
    cookie = gen.cookie_for(SOURCE, 0.0)
    first = gen.seal_reply(cookie, MAC1)
    second = gen.seal_reply(cookie, MAC1)
    assert first[0] != second[0] and first[1] != second[1]
    assert open_reply(R_PUBLIC, MAC1, *first) == open_reply(R_PUBLIC, MAC1, *second) == cookie


def test_a_short_random_is_a_caller_bug() -> None:
    gen = CookieGenerator(R_PUBLIC, lambda n: bytes(n - 1))
    with pytest.raises(ValueError):
        gen.cookie_for(SOURCE, 0.0)
    with pytest.raises(ValueError):
        gen.seal_reply(bytes(16), MAC1)
