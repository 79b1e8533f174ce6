"""Handshake MACs and cookies: mac1, mac2 and the cookie reply (protocol.md, "Cookie reply").

Owns the keys and MACs that let a responder under load make an initiator prove it owns its
source ip:port before any DH is done, as WireGuard does (its cookie.go), with PyNaCl's
XSalsa20-Poly1305 secretbox in place of XChaCha20-Poly1305:

    mac1   = MAC(HASH(LABEL_MAC1 || S_receiver), message up to mac1)
    cookie = MAC(secret, src_ip_bytes || src_port(2 BE))        secret: random, 120 s
    mac2   = MAC(cookie, message up to mac2)
    reply  = nonce (24, random) || crypto_secretbox_easy(cookie, nonce,
                                      KEYED(HASH(LABEL_COOKIE || S_r), mac1 of the initiation))

Rules:
- Randomness comes in (`random(n)` returns n bytes); this module reads no clock and no OS RNG.
- Only the current secret's cookies are valid: a secret older than COOKIE_LIFETIME is neither
  used nor accepted, and the next `cookie_for` draws a new one. An initiator whose cookie
  went stale just sends without a valid mac2 and gets a fresh cookie reply (WireGuard's
  CheckMAC2 does the same).
- MACs are compared in constant time.
- `open_reply` never raises: anything that does not open is None.
- Not thread-safe.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Final

import nacl.bindings as sodium

LABEL_MAC1: Final = b"mac1----"
LABEL_COOKIE: Final = b"cookie--"
MAC_LEN: Final = 16  # mac1, mac2 and the cookie itself
HASH_LEN: Final = 32
SECRET_LEN: Final = 32
NONCE_LEN: Final = 24  # crypto_secretbox_NONCEBYTES
ENC_COOKIE_LEN: Final = MAC_LEN + 16  # cookie + Poly1305 tag
# Seconds a cookie secret is used before it is replaced.
COOKIE_LIFETIME: Final = 120.0


def _hash(data: bytes) -> bytes:
    """HASH: BLAKE2b-256."""
    return hashlib.blake2b(data, digest_size=HASH_LEN).digest()


def _keyed(key: bytes, data: bytes) -> bytes:
    """KEYED: BLAKE2b-256 keyed with `key`."""
    return hashlib.blake2b(data, digest_size=HASH_LEN, key=key).digest()


def mac1_key(public_key: bytes) -> bytes:
    """HASH(LABEL_MAC1 || public): the key of mac1 on messages to the holder of `public_key`."""
    return _hash(LABEL_MAC1 + public_key)


def mac(key: bytes, data: bytes | memoryview) -> bytes:
    """MAC: BLAKE2b keyed with `key` (at most 64 bytes), 16-byte digest."""
    return hashlib.blake2b(data, digest_size=MAC_LEN, key=key).digest()


def cookie_key(public_key: bytes) -> bytes:
    """HASH(LABEL_COOKIE || public): the base key of cookie replies from `public_key`."""
    return _hash(LABEL_COOKIE + public_key)


class CookieGenerator:
    """The responder's side: cookies for sources, checking mac2, sealing cookie replies."""

    __slots__ = ("_born", "_cookie_key", "_random", "_secret")

    def __init__(self, own_public: bytes, random: Callable[[int], bytes]) -> None:
        self._cookie_key = cookie_key(own_public)
        self._random = random
        self._secret: bytes | None = None
        self._born = 0.0

    def _current(self, now: float) -> bytes | None:
        """The secret, or None when there is none or it is older than COOKIE_LIFETIME."""
        if self._secret is None or now - self._born > COOKIE_LIFETIME:
            return None
        return self._secret

    def cookie_for(self, source: bytes, now: float) -> bytes:
        """MAC(secret, source) for `source` = packed ip || port (2 bytes BE).

        Draws a new secret first when the current one is older than COOKIE_LIFETIME.

        Raises:
            ValueError: `random` returned other than SECRET_LEN bytes (a caller bug).
        """
        secret = self._current(now)
        if secret is None:
            secret = self._random(SECRET_LEN)
            if len(secret) != SECRET_LEN:
                raise ValueError(f"random({SECRET_LEN}) returned {len(secret)} bytes")
            self._secret, self._born = secret, now
        return mac(secret, source)

    def valid_mac2(
        self, message_prefix: bytes | memoryview, mac2: bytes, source: bytes, now: float
    ) -> bool:
        """Whether `mac2` is MAC(cookie_for(source), message_prefix) under the current secret.

        `message_prefix` is the message up to its mac2 field. Draws no secret: with none
        current, every mac2 is invalid.
        """
        secret = self._current(now)
        if secret is None:
            return False
        expected = mac(mac(secret, source), message_prefix)
        return hmac.compare_digest(expected, mac2)

    def seal_reply(self, cookie: bytes, mac1: bytes) -> tuple[bytes, bytes]:
        """(nonce, enc_cookie) of a cookie reply to the initiation that carried `mac1`.

        Raises:
            ValueError: `random` returned other than NONCE_LEN bytes (a caller bug).
        """
        nonce = self._random(NONCE_LEN)
        if len(nonce) != NONCE_LEN:
            raise ValueError(f"random({NONCE_LEN}) returned {len(nonce)} bytes")
        key = _keyed(self._cookie_key, mac1)
        return nonce, sodium.crypto_secretbox_easy(cookie, nonce, key)


def open_reply(
    responder_public: bytes, mac1: bytes, nonce: bytes, enc_cookie: bytes
) -> bytes | None:
    """The initiator's side: the cookie in a reply from `responder_public` to the initiation
    that carried `mac1`, or None when it does not open (or has a wrong size)."""
    try:
        if len(nonce) != NONCE_LEN or len(enc_cookie) != ENC_COOKIE_LEN:
            return None
        key = _keyed(cookie_key(responder_public), mac1)
        cookie: bytes = sodium.crypto_secretbox_open_easy(enc_cookie, nonce, key)
    except Exception:  # CryptoError, ValueError, TypeError: any failure is "does not open"
        return None
    return cookie
