"""Curve25519 keys as the operator sees them: 32 bytes, written in standard base64.

Owns parsing and formatting of public keys; reading and writing key files is
`isthmus_io.keyfiles`'s. Pure: no file or OS access.
Never logs or formats private key material.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

KEY_LEN = 32

# Curve25519 points of small order (from the WireGuard netns.sh selftest list and
# libsodium's blocklist): a shared secret with one of them is predictable, so a
# map or config naming one is refused before any packet is sent. X25519 ignores the
# top bit of the last byte, so each point also appears with that bit set.
_LOW_ORDER_POINTS = tuple(
    bytes.fromhex(h)
    for h in (
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    )
)
_LOW_ORDER = frozenset(
    p[:31] + bytes([p[31] | bit]) for p in _LOW_ORDER_POINTS for bit in (0x00, 0x80)
)


@dataclass(frozen=True, slots=True)
class PublicKey:
    """An edge's Curve25519 public key."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != KEY_LEN:
            raise ValueError(f"a public key is {KEY_LEN} bytes, got {len(self.raw)}")
        if self.raw in _LOW_ORDER:
            raise ValueError("the public key is a low-order Curve25519 point, which is refused")

    @classmethod
    def from_base64(cls, text: str) -> PublicKey:
        """Parse standard base64 (44 characters).

        Raises:
            ValueError: not base64, not 32 bytes, or a low-order point.
        """
        try:
            raw = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(
                f"{text!r} is not a base64 public key (44 characters, as printed by "
                "'isthmus keygen')"
            ) from None
        return cls(raw)

    def to_base64(self) -> str:
        return base64.b64encode(self.raw).decode("ascii")

    def __str__(self) -> str:
        return self.to_base64()
