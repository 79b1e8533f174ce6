"""Route leases: the signed message, signing and verifying, tampering."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.bindings import crypto_box_seed_keypair

from isthmus.keys import PublicKey
from isthmus.lease import (
    LEASE_CONTEXT,
    U64_MAX,
    Lease,
    Network,
    lease_message,
    sign_lease,
    verify_lease,
)
from isthmus.signing import ControllerKey

KEY = ControllerKey.from_seed(bytes([3]) * 32)
ROUTE = ipaddress.ip_network("10.244.0.0/16")


def edge_key(seed: int) -> PublicKey:
    return PublicKey(crypto_box_seed_keypair(bytes([seed]) * 32)[0])


EDGE = edge_key(1)

u64 = st.integers(min_value=0, max_value=U64_MAX)
networks = st.one_of(
    st.builds(
        lambda a, p: ipaddress.IPv4Network((a, p), strict=False),
        st.integers(0, 2**32 - 1),
        st.integers(0, 32),
    ),
    st.builds(
        lambda a, p: ipaddress.IPv6Network((a, p), strict=False),
        st.integers(0, 2**128 - 1),
        st.integers(0, 128),
    ),
)


def test_message_layout() -> None:
    msg = lease_message(EDGE, ROUTE, 7, 1_000_000)
    assert msg == (
        b"isthmus lease v1\0"
        + EDGE.raw
        + bytes([4, 16])
        + bytes([10, 244, 0, 0])
        + (7).to_bytes(8, "big")
        + (1_000_000).to_bytes(8, "big")
    )
    v6 = lease_message(EDGE, ipaddress.ip_network("fd10::/64"), 1, 2)
    assert v6[len(LEASE_CONTEXT) + 32 : len(LEASE_CONTEXT) + 34] == bytes([6, 64])
    assert len(v6) == len(LEASE_CONTEXT) + 32 + 2 + 16 + 16


def test_message_refuses_out_of_range_numbers() -> None:
    with pytest.raises(ValueError, match=r"lease version -1 is outside 0..2\*\*64-1"):
        lease_message(EDGE, ROUTE, -1, 0)
    with pytest.raises(ValueError, match="lease expires"):
        lease_message(EDGE, ROUTE, 0, 2**64)


@given(networks, u64, u64)
def test_sign_then_verify(route: Network, version: int, expires: int) -> None:
    lease = sign_lease(KEY, EDGE, route, version, expires)
    assert lease.version == version and lease.expires == expires
    assert verify_lease(KEY.public, EDGE, route, lease)


def test_lease_is_bound_to_every_field() -> None:
    lease = sign_lease(KEY, EDGE, ROUTE, 7, 1000)
    assert verify_lease(KEY.public, EDGE, ROUTE, lease)
    other_key = ControllerKey.from_seed(bytes([4]) * 32)
    assert not verify_lease(other_key.public, EDGE, ROUTE, lease)
    assert not verify_lease(KEY.public, edge_key(2), ROUTE, lease)
    for other in ("10.244.0.0/17", "10.245.0.0/16", "::/16", "10.0.0.0/8"):
        assert not verify_lease(KEY.public, EDGE, ipaddress.ip_network(other), lease)
    assert not verify_lease(KEY.public, EDGE, ROUTE, Lease(8, 1000, lease.signature))
    assert not verify_lease(KEY.public, EDGE, ROUTE, Lease(7, 1001, lease.signature))


def test_v4_and_v6_with_the_same_bits_differ() -> None:
    v4 = ipaddress.ip_network("0.0.0.0/0")
    v6 = ipaddress.ip_network("::/0")
    lease = sign_lease(KEY, EDGE, v4, 1, 2)
    assert not verify_lease(KEY.public, EDGE, v6, lease)


@given(st.integers(min_value=0, max_value=64 * 8 - 1))
def test_any_signature_bit_flip_is_refused(bit: int) -> None:
    lease = sign_lease(KEY, EDGE, ROUTE, 7, 1000)
    sig = bytearray(lease.signature)
    sig[bit // 8] ^= 1 << (bit % 8)
    assert not verify_lease(KEY.public, EDGE, ROUTE, Lease(7, 1000, bytes(sig)))


@given(st.integers(min_value=0, max_value=(len(LEASE_CONTEXT) + 32 + 2 + 4 + 16) * 8 - 1))
def test_any_message_bit_flip_is_refused(bit: int) -> None:
    # Flipping any bit of what is signed (context excluded: it is a constant) gives
    # another message the signature does not cover.
    lease = sign_lease(KEY, EDGE, ROUTE, 7, 1000)
    msg = bytearray(lease_message(EDGE, ROUTE, 7, 1000))
    msg[bit // 8] ^= 1 << (bit % 8)
    assert not KEY.public.verify(bytes(msg), lease.signature)


@given(u64 | st.integers(max_value=-1) | st.integers(min_value=2**64), st.binary(max_size=80))
def test_verify_never_raises(number: int, signature: bytes) -> None:
    lease = Lease(number, number, signature)
    assert verify_lease(KEY.public, EDGE, ROUTE, lease) is False


def test_wrong_signature_types_are_refused() -> None:
    lease = sign_lease(KEY, EDGE, ROUTE, 7, 1000)
    bad = Lease(7, 1000, bytearray(lease.signature))  # type: ignore[arg-type]
    assert verify_lease(KEY.public, EDGE, ROUTE, bad) is False


def test_expired() -> None:
    lease = sign_lease(KEY, EDGE, ROUTE, 7, 1000)
    assert not lease.expired(999.5)
    assert not lease.expired(1000)
    assert lease.expired(1000.001)
