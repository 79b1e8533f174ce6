"""The controller's Ed25519 key: signing route leases and the X25519 key for edge auth.

Owns the controller key pair (`ControllerKey` holds the 32-byte seed,
`ControllerPublicKey` the public half edges pin), its conversion to X25519 for the
authentication key exchange and the challenge secret derived from it. Pure: the key file
(the seed, base64, one line, mode 0600) is read and written by `isthmus_io.keyfiles`.

Rules: the seed never appears in a repr, a str, a log line or an error message.
`ControllerPublicKey.verify` never raises, whatever bytes it is given.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from nacl.bindings import (
    crypto_scalarmult,
    crypto_sign_ed25519_pk_to_curve25519,
    crypto_sign_ed25519_sk_to_curve25519,
    crypto_sign_open,
    crypto_sign_seed_keypair,
)
from nacl.bindings import crypto_sign as _crypto_sign
from nacl.exceptions import CryptoError
from nacl.utils import random as nacl_random

from isthmus.keys import PublicKey

ED25519_KEY_LEN = 32
SIGNATURE_LEN = 64
_CHALLENGE_CONTEXT = b"isthmus challenge v1"
_KEY_RULE = "the 32-byte Ed25519 public key in standard base64 (44 characters)"


@dataclass(frozen=True, slots=True)
class ControllerPublicKey:
    """The controller's Ed25519 public key, as every edge config pins it."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != ED25519_KEY_LEN:
            raise ValueError(
                f"a controller public key is {ED25519_KEY_LEN} bytes, got {len(self.raw)}"
            )

    @classmethod
    def from_base64(cls, text: str) -> ControllerPublicKey:
        """Parse standard base64, as printed by `isthmus keygen --controller`.

        Raises:
            ValueError: not base64 or not 32 bytes; the message says what is allowed.
        """
        try:
            raw = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError, AttributeError):
            raise ValueError(f"{text!r} is not a controller public key: use {_KEY_RULE}") from None
        if len(raw) != ED25519_KEY_LEN:
            raise ValueError(
                f"{text!r} is {len(raw)} bytes, not a controller public key: use {_KEY_RULE}"
            )
        return cls(raw)

    def to_base64(self) -> str:
        return base64.b64encode(self.raw).decode("ascii")

    def __str__(self) -> str:
        return self.to_base64()

    def verify(self, message: bytes, signature: bytes) -> bool:
        """True when `signature` is this key's Ed25519 signature of `message`.

        Never raises: wrong types or lengths, or a key that is not a curve point, give False.
        """
        if not isinstance(message, bytes | bytearray) or not isinstance(
            signature, bytes | bytearray
        ):
            return False
        if len(signature) != SIGNATURE_LEN:
            return False
        try:
            crypto_sign_open(bytes(signature) + bytes(message), self.raw)
        except (CryptoError, ValueError, TypeError):
            return False
        return True

    def x25519(self) -> PublicKey:
        """The Curve25519 public key edges use for the auth key exchange.

        Raises:
            ValueError: the key is not a valid Ed25519 point or converts to a low-order one.
        """
        try:
            raw = crypto_sign_ed25519_pk_to_curve25519(self.raw)
        except (CryptoError, ValueError, TypeError):
            raise ValueError(
                "the controller public key is not a valid Ed25519 point; "
                "use the key printed by 'isthmus keygen --controller'"
            ) from None
        return PublicKey(bytes(raw))


@dataclass(frozen=True, slots=True)
class ControllerKey:
    """The controller's Ed25519 key pair, held as its 32-byte seed. repr never shows it."""

    _seed: bytes = field(repr=False)
    _public: bytes = field(repr=False)
    _secret: bytes = field(repr=False)  # libsodium's 64-byte secret key (seed || public)

    @classmethod
    def generate(cls, random: Callable[[int], bytes] = nacl_random) -> ControllerKey:
        return cls.from_seed(random(ED25519_KEY_LEN))

    @classmethod
    def from_seed(cls, seed: bytes) -> ControllerKey:
        """Raises: ValueError unless `seed` is 32 bytes (the message holds no key bytes)."""
        if not isinstance(seed, bytes | bytearray) or len(seed) != ED25519_KEY_LEN:
            size = len(seed) if isinstance(seed, bytes | bytearray) else type(seed).__name__
            raise ValueError(f"a controller key seed is {ED25519_KEY_LEN} bytes, got {size}")
        public, secret = crypto_sign_seed_keypair(bytes(seed))
        return cls(bytes(seed), bytes(public), bytes(secret))

    def __repr__(self) -> str:
        return f"ControllerKey(public={self.public.to_base64()})"

    __str__ = __repr__

    @property
    def seed(self) -> bytes:
        """The 32-byte seed, for writing the key file. Never log it."""
        return self._seed

    @property
    def public(self) -> ControllerPublicKey:
        return ControllerPublicKey(self._public)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte detached Ed25519 signature of `message`."""
        return bytes(_crypto_sign(bytes(message), self._secret)[:SIGNATURE_LEN])

    def shared_secret(self, edge: PublicKey) -> bytes:
        """X25519(this key converted to Curve25519, the edge's public key).

        Raises:
            ValueError: the result is all zeros (a low-order edge key).
        """
        scalar = crypto_sign_ed25519_sk_to_curve25519(self._secret)
        try:
            shared = bytes(crypto_scalarmult(scalar, edge.raw))
        except (CryptoError, ValueError, TypeError):
            raise ValueError("the edge key gives no usable shared secret") from None
        if shared == bytes(len(shared)):
            raise ValueError("the edge key gives an all-zero shared secret, which is refused")
        return shared

    @property
    def challenge_secret(self) -> bytes:
        """BLAKE2b-256(key = seed, data = b"isthmus challenge v1"): the challenge MAC key."""
        return hashlib.blake2b(_CHALLENGE_CONTEXT, digest_size=32, key=self._seed).digest()
