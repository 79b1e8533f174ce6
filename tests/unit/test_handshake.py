"""The handshake: matching keys, tamper resistance, macs, timestamps, the key schedule."""

from __future__ import annotations

import hashlib
import random

import nacl.bindings as sodium
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.tunnel import handshake as hs
from edge.tunnel import wire
from edge.tunnel.cookie import mac, mac1_key
from edge.tunnel.handshake import SessionKeys, StaticKeys

# Points X25519 refuses (small order), canonical and not (libsodium's blocklist).
LOW_ORDER = [
    bytes(32),
    b"\x01" + bytes(31),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    bytes.fromhex("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    bytes.fromhex("eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"),
]

RNG = random.Random(1)
A = StaticKeys.from_private(RNG.randbytes(32))  # initiator
B = StaticKeys.from_private(RNG.randbytes(32))  # responder
C = StaticKeys.from_private(RNG.randbytes(32))  # someone else
TS = hs.tai64n(1_700_000_000.25)


def handshake(
    seed: int, initiator: StaticKeys = A, responder: StaticKeys = B
) -> tuple[bytes, hs.InitiatorState, bytes, SessionKeys, SessionKeys]:
    """(initiation, state, response, initiator keys, responder keys)."""
    rng = random.Random(seed)
    initiation, state = hs.create_initiation(
        initiator, responder.public, 11, rng.randbytes(32), TS, None
    )
    consumed = hs.consume_initiation(responder, wire.decode_initiation(initiation))
    assert consumed is not None
    response, r_keys = hs.create_response(responder, consumed, 22, rng.randbytes(32), None)
    i_keys = hs.consume_response(initiator, state, wire.decode_response(response))
    assert i_keys is not None
    return initiation, state, response, i_keys, r_keys


def test_round_trip_gives_matching_keys() -> None:
    initiation, state, response, i_keys, r_keys = handshake(1)
    assert (len(initiation), len(response)) == (wire.INITIATION_LEN, wire.RESPONSE_LEN)
    assert i_keys.send == r_keys.recv
    assert i_keys.recv == r_keys.send
    assert i_keys.send != i_keys.recv
    assert {len(i_keys.send), len(i_keys.recv)} == {32}
    decoded = wire.decode_response(response)
    assert (decoded.sender_index, decoded.receiver_index) == (22, 11)
    assert state.sender_index == 11
    assert state.mac1 == initiation[wire.INITIATION_MAC1_OFFSET : wire.INITIATION_MAC2_OFFSET]


def test_consumed_initiation_carries_the_initiator() -> None:
    initiation, *_ = handshake(2)
    message = wire.decode_initiation(initiation)
    consumed = hs.consume_initiation(B, message)
    assert consumed is not None
    assert consumed.peer_public == A.public
    assert consumed.sender_index == 11
    assert consumed.timestamp == TS
    assert consumed.ephemeral == message.ephemeral
    assert consumed.mac1 == message.mac1


def test_fresh_ephemerals_give_fresh_keys() -> None:
    # Forward secrecy sanity: same statics, same timestamp, different ephemerals.
    runs = [handshake(seed) for seed in range(5)]
    sends = {keys.send for *_, keys, _ in runs}
    assert len(sends) == 5
    assert len({initiation for initiation, *_ in runs}) == 5


def test_same_inputs_same_output() -> None:
    # Sans-I/O: everything random comes in, so a handshake replays exactly.
    assert handshake(7) == handshake(7)


def test_keys_do_not_come_from_the_statics_alone() -> None:
    *_, i_keys, _ = handshake(3)
    dh_static = sodium.crypto_scalarmult(A.private, B.public)
    for key in (i_keys.send, i_keys.recv):
        assert dh_static not in (key, hashlib.blake2b(dh_static, digest_size=32).digest())


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (wire.INITIATION_EPHEMERAL_OFFSET, wire.INITIATION_STATIC_OFFSET),
        (wire.INITIATION_STATIC_OFFSET, wire.INITIATION_TIMESTAMP_OFFSET),
        (wire.INITIATION_TIMESTAMP_OFFSET, wire.INITIATION_MAC1_OFFSET),
    ],
    ids=["ephemeral", "enc_static", "enc_timestamp"],
)
def test_tampered_initiation_is_refused(start: int, end: int) -> None:
    initiation, *_ = handshake(4)
    for index in range(start, end):
        for flip in (0x01, 0x80):  # 0x80 of the ephemeral's last byte: X25519 ignores it
            tampered = bytearray(initiation)
            tampered[index] ^= flip
            assert hs.consume_initiation(B, wire.decode_initiation(tampered)) is None


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (wire.RESPONSE_EPHEMERAL_OFFSET, wire.RESPONSE_EMPTY_OFFSET),
        (wire.RESPONSE_EMPTY_OFFSET, wire.RESPONSE_MAC1_OFFSET),
    ],
    ids=["ephemeral", "enc_empty"],
)
def test_tampered_response_is_refused(start: int, end: int) -> None:
    _, state, response, *_ = handshake(5)
    for index in range(start, end):
        for flip in (0x01, 0x80):
            tampered = bytearray(response)
            tampered[index] ^= flip
            assert hs.consume_response(A, state, wire.decode_response(tampered)) is None


def test_wrong_responder_key_is_refused() -> None:
    initiation, state, response, *_ = handshake(6)
    assert hs.consume_initiation(C, wire.decode_initiation(initiation)) is None
    # A response checked with the wrong initiator static fails as well.
    assert hs.consume_response(C, state, wire.decode_response(response)) is None


def test_response_to_another_initiation_is_refused() -> None:
    _, state, _, _, _ = handshake(8)
    _, _, other_response, _, _ = handshake(9)
    assert hs.consume_response(A, state, wire.decode_response(other_response)) is None


def test_mac1_verifies_only_with_the_receivers_key() -> None:
    initiation, _, response, *_ = handshake(10)
    assert hs.verify_mac1(mac1_key(B.public), initiation, wire.INITIATION_MAC1_OFFSET)
    assert not hs.verify_mac1(mac1_key(A.public), initiation, wire.INITIATION_MAC1_OFFSET)
    assert not hs.verify_mac1(mac1_key(C.public), initiation, wire.INITIATION_MAC1_OFFSET)
    assert hs.verify_mac1(mac1_key(A.public), response, wire.RESPONSE_MAC1_OFFSET)
    assert not hs.verify_mac1(mac1_key(B.public), response, wire.RESPONSE_MAC1_OFFSET)
    assert hs.verify_mac1(mac1_key(B.public), memoryview(initiation), wire.INITIATION_MAC1_OFFSET)
    for index in range(wire.INITIATION_MAC2_OFFSET):
        tampered = bytearray(initiation)
        tampered[index] ^= 1
        assert not hs.verify_mac1(mac1_key(B.public), tampered, wire.INITIATION_MAC1_OFFSET)
    for size in range(wire.INITIATION_MAC2_OFFSET):
        assert not hs.verify_mac1(
            mac1_key(B.public), initiation[:size], wire.INITIATION_MAC1_OFFSET
        )


def test_cookie_fills_mac2() -> None:
    rng = random.Random(12)
    ephemeral = rng.randbytes(32)
    cookie = rng.randbytes(16)
    without, _ = hs.create_initiation(A, B.public, 1, ephemeral, TS, None)
    with_cookie, _ = hs.create_initiation(A, B.public, 1, ephemeral, TS, cookie)
    mac2 = wire.INITIATION_MAC2_OFFSET
    assert without[mac2:] == bytes(16)
    assert with_cookie[:mac2] == without[:mac2]
    assert with_cookie[mac2:] == mac(cookie, with_cookie[:mac2])
    consumed = hs.consume_initiation(B, wire.decode_initiation(with_cookie))
    assert consumed is not None
    plain, _ = hs.create_response(B, consumed, 2, ephemeral, None)
    cookied, _ = hs.create_response(B, consumed, 2, ephemeral, cookie)
    mac2 = wire.RESPONSE_MAC2_OFFSET
    assert plain[mac2:] == bytes(16)
    assert cookied[:mac2] == plain[:mac2]
    assert cookied[mac2:] == mac(cookie, cookied[:mac2])
    with pytest.raises(ValueError, match="cookie"):
        hs.create_initiation(A, B.public, 1, ephemeral, TS, bytes(15))


@pytest.mark.parametrize("point", LOW_ORDER)
def test_low_order_points_are_refused_never_raised(point: bytes) -> None:
    initiation, state, response, *_ = handshake(13)
    bad_initiation = wire.decode_initiation(
        initiation[: wire.INITIATION_EPHEMERAL_OFFSET]
        + point
        + initiation[wire.INITIATION_STATIC_OFFSET :]
    )
    assert hs.consume_initiation(B, bad_initiation) is None
    bad_response = wire.decode_response(
        response[: wire.RESPONSE_EPHEMERAL_OFFSET] + point + response[wire.RESPONSE_EMPTY_OFFSET :]
    )
    assert hs.consume_response(A, state, bad_response) is None
    # A low-order static inside a well-formed initiation: the ss DH refuses it.
    liar = StaticKeys(A.private, point)
    lying, _ = hs.create_initiation(liar, B.public, 1, random.Random(1).randbytes(32), TS, None)
    assert hs.consume_initiation(B, wire.decode_initiation(lying)) is None
    # Initiating to a low-order key is a caller bug.
    with pytest.raises(ValueError):
        hs.create_initiation(A, point, 1, random.Random(1).randbytes(32), TS, None)


@given(st.binary(min_size=148, max_size=148))
def test_garbage_initiations_are_refused(data: bytes) -> None:
    message = wire.decode_initiation(b"\x01\x00\x00\x00" + data[4:])
    assert hs.consume_initiation(B, message) is None


def test_create_refuses_caller_bugs() -> None:
    eph = bytes(32)
    with pytest.raises(ValueError):
        hs.create_initiation(A, B.public[:31], 1, eph, TS, None)
    with pytest.raises(ValueError):
        hs.create_initiation(A, B.public, 1, eph[:31], TS, None)
    with pytest.raises(ValueError):
        hs.create_initiation(A, B.public, 1, eph, TS[:11], None)
    with pytest.raises(ValueError):
        hs.create_initiation(A, B.public, 2**32, eph, TS, None)
    with pytest.raises(ValueError):
        StaticKeys.from_private(bytes(31))


def test_repr_hides_secrets() -> None:
    initiation, state, _, i_keys, _ = handshake(14)
    consumed = hs.consume_initiation(B, wire.decode_initiation(initiation))
    secrets = [
        A.private,
        B.private,
        i_keys.send,
        i_keys.recv,
        state.ephemeral_private,
        state.chaining_key,
    ]
    assert consumed is not None
    secrets.append(consumed.chaining_key)
    for shown in (repr(A), repr(B), repr(i_keys), repr(state), repr(consumed)):
        for secret in secrets:
            assert secret.hex() not in shown
            assert repr(secret) not in shown
    assert A.public.hex() in repr(A)


def test_tai64n_layout() -> None:
    assert hs.tai64n(0) == (2**62).to_bytes(8, "big") + bytes(4)
    assert hs.tai64n(1.5) == (2**62 + 1).to_bytes(8, "big") + (500_000_000).to_bytes(4, "big")
    assert hs.tai64n(-1.0) == (2**62 - 1).to_bytes(8, "big") + bytes(4)
    assert hs.tai64n(1.0 - 2**-53)[8:] == (999_999_999).to_bytes(4, "big")
    for bad in (float("nan"), float("inf"), -float("inf"), 2.0**63):
        with pytest.raises(ValueError):
            hs.tai64n(bad)


wall = st.floats(0, 2**33, allow_nan=False)


@given(wall, wall)
def test_tai64n_orders_like_time(a: float, b: float) -> None:
    a, b = min(a, b), max(a, b)
    assert hs.tai64n(a) <= hs.tai64n(b)
    # Strict once the difference survives float rounding (ulp at 2**33 s is ~2 us).
    if b - a >= 1e-5:
        assert hs.tai64n(a) < hs.tai64n(b)


# A transliteration of docs/protocol.md, "Handshake", kept dumb on purpose: the module
# under test must produce the same bytes and keys.
def _h(x: bytes) -> bytes:
    return hashlib.blake2b(x, digest_size=32).digest()


def _k(key: bytes, x: bytes) -> bytes:
    return hashlib.blake2b(x, digest_size=32, key=key).digest()


def _seal(k: bytes, h: bytes, p: bytes) -> bytes:
    box: bytes = sodium.crypto_secretbox_easy(p, bytes(24), _k(k, h))
    return box


def test_matches_the_spec_transliteration() -> None:
    rng = random.Random(15)
    e_i, e_r, cookie = rng.randbytes(32), rng.randbytes(32), rng.randbytes(16)
    big_e_i = sodium.crypto_scalarmult_base(e_i)
    big_e_r = sodium.crypto_scalarmult_base(e_r)

    ck = _h(b"isthmus v1 IK x25519 xsalsa20poly1305 blake2b")
    h = _h(_h(ck + b"isthmus v1") + B.public)
    h = _h(h + big_e_i)
    ck = _k(ck, big_e_i)
    dh = sodium.crypto_scalarmult(e_i, B.public)
    ck, k = _k(ck, dh + b"\x01"), _k(ck, dh + b"\x02")
    enc_static = _seal(k, h, A.public)
    h = _h(h + enc_static)
    dh = sodium.crypto_scalarmult(A.private, B.public)
    ck, k = _k(ck, dh + b"\x01"), _k(ck, dh + b"\x02")
    enc_ts = _seal(k, h, TS)
    h = _h(h + enc_ts)
    body = b"\x01\x00\x00\x00" + (5).to_bytes(4, "little") + big_e_i + enc_static + enc_ts
    mac1 = mac(_h(b"mac1----" + B.public), body)
    expected_initiation = body + mac1 + mac(cookie, body + mac1)

    h = _h(h + big_e_r)
    ck = _k(ck, big_e_r)
    ck = _k(ck, sodium.crypto_scalarmult(e_r, big_e_i))
    ck = _k(ck, sodium.crypto_scalarmult(e_r, A.public))
    ck, k = _k(ck, b"\x01"), _k(ck, b"\x02")
    enc_empty = _seal(k, h, b"")
    body = b"\x02\x00\x00\x00" + (6).to_bytes(4, "little") + (5).to_bytes(4, "little")
    body += big_e_r + enc_empty
    expected_response = body + mac(_h(b"mac1----" + A.public), body) + bytes(16)
    t1, t2 = _k(ck, b"\x01"), _k(ck, b"\x02")

    initiation, state = hs.create_initiation(A, B.public, 5, e_i, TS, cookie)
    assert initiation == expected_initiation
    consumed = hs.consume_initiation(B, wire.decode_initiation(initiation))
    assert consumed is not None
    response, r_keys = hs.create_response(B, consumed, 6, e_r, None)
    assert response == expected_response
    assert r_keys == SessionKeys(send=t2, recv=t1)
    assert hs.consume_response(A, state, wire.decode_response(response)) == SessionKeys(t1, t2)
