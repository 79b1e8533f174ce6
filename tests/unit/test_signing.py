"""The controller's Ed25519 key: signatures, X25519 conversion, the challenge secret."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.bindings import crypto_box_seed_keypair, crypto_scalarmult

from isthmus.keys import PublicKey
from isthmus.signing import (
    ED25519_KEY_LEN,
    ControllerKey,
    ControllerPublicKey,
)

KEY = ControllerKey.from_seed(bytes(range(32)))


def test_generate_uses_the_injected_random() -> None:
    drawn: list[int] = []

    def random(n: int) -> bytes:
        drawn.append(n)
        return bytes(range(n))

    assert ControllerKey.generate(random) == KEY
    assert drawn == [ED25519_KEY_LEN]
    assert ControllerKey.generate() != KEY


def test_sign_and_verify() -> None:
    sig = KEY.sign(b"hello")
    assert len(sig) == 64
    assert KEY.public.verify(b"hello", sig)
    assert not KEY.public.verify(b"hellO", sig)
    other = ControllerKey.from_seed(bytes(32))
    assert not other.public.verify(b"hello", sig)


@given(st.binary(max_size=64), st.integers(min_value=0, max_value=64 * 8 - 1))
def test_every_bit_flip_of_the_signature_is_refused(message: bytes, bit: int) -> None:
    sig = bytearray(KEY.sign(message))
    sig[bit // 8] ^= 1 << (bit % 8)
    assert not KEY.public.verify(message, bytes(sig))


@given(st.binary(min_size=1, max_size=64), st.data())
def test_every_bit_flip_of_the_message_is_refused(message: bytes, data: st.DataObject) -> None:
    sig = KEY.sign(message)
    bit = data.draw(st.integers(min_value=0, max_value=len(message) * 8 - 1))
    flipped = bytearray(message)
    flipped[bit // 8] ^= 1 << (bit % 8)
    assert not KEY.public.verify(bytes(flipped), sig)


@given(st.binary(max_size=32), st.binary(max_size=100), st.binary(min_size=32, max_size=32))
def test_verify_never_raises(message: bytes, signature: bytes, raw: bytes) -> None:
    assert ControllerPublicKey(raw).verify(message, signature) in (True, False)
    assert KEY.public.verify(message, signature) is False


def test_verify_refuses_wrong_types() -> None:
    assert KEY.public.verify("hello", KEY.sign(b"hello")) is False  # type: ignore[arg-type]
    assert KEY.public.verify(b"hello", None) is False  # type: ignore[arg-type]


def test_x25519_agrees_with_the_edge_side() -> None:
    edge_public, edge_private = crypto_box_seed_keypair(bytes([7]) * 32)
    edge = PublicKey(edge_public)
    assert crypto_scalarmult(edge_private, KEY.public.x25519().raw) == KEY.shared_secret(edge)
    other = ControllerKey.from_seed(bytes(32))
    assert other.shared_secret(edge) != KEY.shared_secret(edge)


def test_x25519_of_a_non_point_is_refused() -> None:
    with pytest.raises(ValueError, match="not a valid Ed25519 point"):
        ControllerPublicKey(b"\xff" * 32).x25519()


def test_challenge_secret_is_derived_from_the_seed() -> None:
    assert len(KEY.challenge_secret) == 32
    assert KEY.challenge_secret == ControllerKey.from_seed(bytes(range(32))).challenge_secret
    assert KEY.challenge_secret != ControllerKey.from_seed(bytes(32)).challenge_secret
    assert KEY.challenge_secret != KEY.seed


def test_repr_and_str_never_show_the_seed() -> None:
    import base64

    seed_forms = (KEY.seed.hex(), base64.b64encode(KEY.seed).decode(), repr(KEY.seed))
    for text in (repr(KEY), str(KEY), f"{KEY}", repr([KEY])):
        assert KEY.public.to_base64() in text
        for form in seed_forms:
            assert form not in text


def test_seed_length_is_checked() -> None:
    with pytest.raises(ValueError, match="a controller key seed is 32 bytes, got 31"):
        ControllerKey.from_seed(bytes(31))


def test_public_key_base64() -> None:
    text = KEY.public.to_base64()
    assert len(text) == 44
    assert ControllerPublicKey.from_base64(text) == KEY.public
    assert ControllerPublicKey.from_base64(f"  {text}\n") == KEY.public
    assert str(KEY.public) == text
    with pytest.raises(ValueError, match="is not a controller public key: use the 32-byte"):
        ControllerPublicKey.from_base64("not base64!")
    with pytest.raises(ValueError, match="is 3 bytes, not a controller public key"):
        ControllerPublicKey.from_base64("AAAA")
    with pytest.raises(ValueError, match="a controller public key is 32 bytes, got 5"):
        ControllerPublicKey(b"short")
