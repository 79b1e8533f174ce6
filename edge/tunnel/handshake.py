"""The handshake of docs/protocol.md ("Handshake"): Noise-IK-like, as pure functions.

```
initiator I (s_i, S_i) knows S_r                       responder R (s_r, S_r)
  initiation: E_i, SEAL(S_i), SEAL(TAI64N), mac1, mac2  ->
                                                        consume_initiation, create_response
  consume_response                                   <-  response: E_r, SEAL(b""), mac1, mac2
  keys: send T1, recv T2                                 keys: send T2, recv T1
```

Owns the key schedule (chaining key, transcript hash, transport keys) and nothing else:
no peers, no indices' uniqueness, no clocks, no randomness, no replay or freshness
checks. Ephemeral private keys, indices, timestamps and cookies come in as arguments.

Rules:
- An ephemeral private key is used for exactly one message. Reusing one for two
  initiations reuses a handshake key with a zero nonce (see SEAL in the spec).
- `consume_*` treat their message as hostile and never raise: any failure (a low-order
  point, a box that does not open) is None. `create_*` raise ValueError only for caller
  bugs (wrong sizes, a peer key libsodium refuses).
- mac1 is not authentication; it only proves the sender knows the receiver's public key.
  Checking it is the caller's job (`verify_mac1`), before any DH.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import struct
from dataclasses import dataclass
from typing import Final

import nacl.bindings as sodium
from nacl.exceptions import CryptoError

from edge.tunnel import wire
from edge.tunnel.cookie import mac, mac1_key
from edge.tunnel.wire import (
    ENC_EMPTY_LEN,
    INITIATION_MAC1_OFFSET,
    INITIATION_MAC2_OFFSET,
    KEY_LEN,
    MAC_LEN,
    NONCE_LEN,
    RESPONSE_MAC1_OFFSET,
    RESPONSE_MAC2_OFFSET,
    TIMESTAMP_LEN,
    Initiation,
    Response,
)

CONSTRUCTION = b"isthmus v1 IK x25519 xsalsa20poly1305 blake2b"
IDENTIFIER = b"isthmus v1"

_ZERO_NONCE = bytes(NONCE_LEN)
_ZERO_MAC = bytes(MAC_LEN)
_TAI64_LABEL = 2**62
TAI64N: Final = struct.Struct(">QI")  # TAI64N: seconds label (8, BE) || nanoseconds (4, BE)


def _hash(data: bytes) -> bytes:
    """HASH: BLAKE2b-256."""
    return hashlib.blake2b(data, digest_size=32).digest()


def _keyed(key: bytes, data: bytes) -> bytes:
    """KEYED: BLAKE2b-256 keyed."""
    return hashlib.blake2b(data, digest_size=32, key=key).digest()


def _kdf(ck: bytes, x: bytes) -> tuple[bytes, bytes]:
    """KDF(ck, x) -> (ck', k)."""
    return _keyed(ck, x + b"\x01"), _keyed(ck, x + b"\x02")


def _dh(private: bytes, public: bytes) -> bytes | None:
    """DH, or None when libsodium refuses the point (low order) or a size is wrong."""
    if len(private) != KEY_LEN or len(public) != KEY_LEN:
        return None  # cffi would read past a short buffer
    try:
        result: bytes = sodium.crypto_scalarmult(private, public)
    except CryptoError:  # nacl.exceptions.RuntimeError: an all-zero result
        return None
    return result


def _seal(k: bytes, h: bytes, plaintext: bytes) -> bytes:
    """SEAL: secretbox under KEYED(k, h) with the zero nonce (each k seals once)."""
    result: bytes = sodium.crypto_secretbox_easy(plaintext, _ZERO_NONCE, _keyed(k, h))
    return result


def _open(k: bytes, h: bytes, box: bytes) -> bytes | None:
    try:
        result: bytes = sodium.crypto_secretbox_open_easy(box, _ZERO_NONCE, _keyed(k, h))
    except (CryptoError, ValueError, TypeError):
        return None
    return result


_INITIAL_CK = _hash(CONSTRUCTION)
_INITIAL_H = _hash(_INITIAL_CK + IDENTIFIER)


def _initial_hash(responder_public: bytes) -> bytes:
    return _hash(_INITIAL_H + responder_public)


@dataclass(frozen=True, slots=True, repr=False)
class StaticKeys:
    """This edge's long-term X25519 key pair."""

    private: bytes
    public: bytes

    def __post_init__(self) -> None:
        if len(self.private) != KEY_LEN or len(self.public) != KEY_LEN:
            raise ValueError(f"keys are {KEY_LEN} bytes")

    @classmethod
    def from_private(cls, raw: bytes) -> StaticKeys:
        """Raises: ValueError when `raw` is not 32 bytes."""
        if len(raw) != KEY_LEN:
            raise ValueError(f"a private key is {KEY_LEN} bytes, got {len(raw)}")
        return cls(bytes(raw), sodium.crypto_scalarmult_base(bytes(raw)))

    def __repr__(self) -> str:
        return f"StaticKeys(public={self.public.hex()}, private=<hidden>)"


@dataclass(frozen=True, slots=True, repr=False)
class SessionKeys:
    """The transport keys of one session, from this side's point of view."""

    send: bytes
    recv: bytes

    def __repr__(self) -> str:
        return "SessionKeys(<hidden>)"


@dataclass(frozen=True, slots=True, repr=False)
class InitiatorState:
    """What the initiator keeps between its initiation and the response."""

    sender_index: int
    peer_public: bytes
    ephemeral_private: bytes
    chaining_key: bytes
    transcript: bytes
    mac1: bytes  # of the initiation sent: the key of a cookie reply to it

    def __repr__(self) -> str:
        return (
            f"InitiatorState(sender_index={self.sender_index}, "
            f"peer_public={self.peer_public.hex()}, <secrets hidden>)"
        )


@dataclass(frozen=True, slots=True, repr=False)
class ConsumedInitiation:
    """An initiation that decrypted: who claims to send it, and the state to respond with.

    Not yet checked: that `peer_public` is a known peer and that `timestamp` is fresh.
    """

    peer_public: bytes
    sender_index: int
    timestamp: bytes
    ephemeral: bytes
    chaining_key: bytes
    transcript: bytes
    mac1: bytes

    def __repr__(self) -> str:
        return (
            f"ConsumedInitiation(peer_public={self.peer_public.hex()}, "
            f"sender_index={self.sender_index}, timestamp={self.timestamp.hex()}, "
            "<secrets hidden>)"
        )


def tai64n(wall_seconds: float) -> bytes:
    """TAI64N of a Unix time: (2**62 + seconds) as 8 bytes BE || nanoseconds as 4 bytes BE.

    Monotonic: a <= b gives tai64n(a) <= tai64n(b) as bytes (strictly when they differ
    by a nanosecond or more after float rounding).

    Raises:
        ValueError: not finite, or outside the TAI64 range.
    """
    if not math.isfinite(wall_seconds):
        raise ValueError(f"wall time {wall_seconds} is not finite")
    seconds = math.floor(wall_seconds)
    # The fraction is in [0, 1); its product can round up to 1e9, which is clamped.
    nanoseconds = min(int((wall_seconds - seconds) * 1e9), 999_999_999)
    label = _TAI64_LABEL + seconds
    if not 0 <= label < 2**63:
        raise ValueError(f"wall time {wall_seconds} is outside TAI64")
    return TAI64N.pack(label, nanoseconds)


def _with_macs(
    unmacked: bytes, mac1_key_: bytes, mac1_offset: int, cookie: bytes | None
) -> tuple[bytes, bytes]:
    """(message, mac1): an encoded message with mac1 and mac2 (or zeros) filled in."""
    if cookie is not None and len(cookie) != MAC_LEN:
        raise ValueError(f"a cookie is {MAC_LEN} bytes, got {len(cookie)}")
    head = unmacked[:mac1_offset]
    mac1 = mac(mac1_key_, head)
    mac2 = _ZERO_MAC if cookie is None else mac(cookie, head + mac1)
    return head + mac1 + mac2, mac1


def verify_mac1(own_mac1_key: bytes, message: wire.Buffer, mac1_offset: int) -> bool:
    """Whether `message` carries a valid mac1 at `mac1_offset`; constant-time compare.

    `own_mac1_key` is `cookie.mac1_key(own public key)`, computed once.
    """
    data = bytes(message)  # a handshake message is small; bytes() flattens any buffer
    if len(data) < mac1_offset + MAC_LEN:
        return False
    expected = mac(own_mac1_key, data[:mac1_offset])
    return hmac.compare_digest(expected, data[mac1_offset : mac1_offset + MAC_LEN])


def create_initiation(
    own: StaticKeys,
    peer_public: bytes,
    sender_index: int,
    ephemeral_private: bytes,
    timestamp: bytes,
    cookie: bytes | None,
) -> tuple[bytes, InitiatorState]:
    """The 148-byte initiation to `peer_public`, with mac1 and mac2 filled in.

    `cookie` is the latest cookie from that peer if younger than 120 s, else None
    (mac2 = 16 zero bytes).

    Raises:
        ValueError: a size or index is wrong, or libsodium refuses `peer_public` or
            `ephemeral_private` (a caller bug: the map refuses low-order keys).
    """
    if len(peer_public) != KEY_LEN or len(ephemeral_private) != KEY_LEN:
        raise ValueError(f"keys are {KEY_LEN} bytes")
    if len(timestamp) != TIMESTAMP_LEN:
        raise ValueError(f"a timestamp is {TIMESTAMP_LEN} bytes, got {len(timestamp)}")
    ephemeral = sodium.crypto_scalarmult_base(ephemeral_private)
    ck = _INITIAL_CK
    h = _hash(_initial_hash(peer_public) + ephemeral)
    ck = _keyed(ck, ephemeral)
    es = _dh(ephemeral_private, peer_public)
    if es is None:
        raise ValueError("the peer's public key gives no usable shared secret")
    ck, k = _kdf(ck, es)
    enc_static = _seal(k, h, own.public)
    h = _hash(h + enc_static)
    ss = _dh(own.private, peer_public)
    if ss is None:
        raise ValueError("the peer's public key gives no usable shared secret")
    ck, k = _kdf(ck, ss)
    enc_timestamp = _seal(k, h, timestamp)
    h = _hash(h + enc_timestamp)
    unmacked = wire.encode_initiation(
        Initiation(sender_index, ephemeral, enc_static, enc_timestamp, _ZERO_MAC, _ZERO_MAC)
    )
    message, mac1 = _with_macs(unmacked, mac1_key(peer_public), INITIATION_MAC1_OFFSET, cookie)
    assert len(message) == INITIATION_MAC2_OFFSET + MAC_LEN
    state = InitiatorState(sender_index, peer_public, ephemeral_private, ck, h, mac1)
    return message, state


def consume_initiation(own: StaticKeys, message: Initiation) -> ConsumedInitiation | None:
    """Decrypt an initiation to `own`: the sender's static key and timestamp, or None.

    Does not check mac1/mac2, look up the peer, or judge the timestamp's freshness.
    """
    h = _hash(_initial_hash(own.public) + message.ephemeral)
    ck = _keyed(_INITIAL_CK, message.ephemeral)
    es = _dh(own.private, message.ephemeral)
    if es is None:
        return None
    ck, k = _kdf(ck, es)
    peer_public = _open(k, h, message.enc_static)
    if peer_public is None:
        return None
    h = _hash(h + message.enc_static)
    ss = _dh(own.private, peer_public)
    if ss is None:
        return None
    ck, k = _kdf(ck, ss)
    timestamp = _open(k, h, message.enc_timestamp)
    if timestamp is None:
        return None
    h = _hash(h + message.enc_timestamp)
    return ConsumedInitiation(
        peer_public, message.sender_index, timestamp, message.ephemeral, ck, h, message.mac1
    )


def _transport(ck: bytes) -> tuple[bytes, bytes]:
    """(T1, T2): initiator -> responder, responder -> initiator."""
    return _keyed(ck, b"\x01"), _keyed(ck, b"\x02")


def create_response(
    own: StaticKeys,
    consumed: ConsumedInitiation,
    sender_index: int,
    ephemeral_private: bytes,
    cookie: bytes | None,
) -> tuple[bytes, SessionKeys]:
    """The 92-byte response to a consumed initiation, and the responder's session keys.

    `own` is the responder's key pair (the one `consumed` was made with); the schedule
    needs nothing more of it, since the initiation's transcript already binds it.

    Raises:
        ValueError: a size or index is wrong, or libsodium refuses a DH (a caller bug:
            `consumed` came from `consume_initiation`, which refuses such points).
    """
    if len(ephemeral_private) != KEY_LEN:
        raise ValueError(f"keys are {KEY_LEN} bytes")
    ephemeral = sodium.crypto_scalarmult_base(ephemeral_private)
    h = _hash(consumed.transcript + ephemeral)
    ck = _keyed(consumed.chaining_key, ephemeral)
    ee = _dh(ephemeral_private, consumed.ephemeral)
    se = _dh(ephemeral_private, consumed.peer_public)
    if ee is None or se is None:
        raise ValueError("the initiation's keys give no usable shared secret")
    ck = _keyed(_keyed(ck, ee), se)
    ck, k = _kdf(ck, b"")
    enc_empty = _seal(k, h, b"")
    unmacked = wire.encode_response(
        Response(sender_index, consumed.sender_index, ephemeral, enc_empty, _ZERO_MAC, _ZERO_MAC)
    )
    message, _ = _with_macs(unmacked, mac1_key(consumed.peer_public), RESPONSE_MAC1_OFFSET, cookie)
    assert len(message) == RESPONSE_MAC2_OFFSET + MAC_LEN
    t1, t2 = _transport(ck)
    return message, SessionKeys(send=t2, recv=t1)


def consume_response(
    own: StaticKeys, state: InitiatorState, message: Response
) -> SessionKeys | None:
    """The initiator's session keys from a response to `state`, or None.

    Does not check mac1/mac2 or that `message.receiver_index` is `state.sender_index`.
    """
    h = _hash(state.transcript + message.ephemeral)
    ck = _keyed(state.chaining_key, message.ephemeral)
    ee = _dh(state.ephemeral_private, message.ephemeral)
    if ee is None:
        return None
    se = _dh(own.private, message.ephemeral)
    if se is None:
        return None
    ck = _keyed(_keyed(ck, ee), se)
    ck, k = _kdf(ck, b"")
    if len(message.enc_empty) != ENC_EMPTY_LEN or _open(k, h, message.enc_empty) != b"":
        return None
    t1, t2 = _transport(ck)
    return SessionKeys(send=t1, recv=t2)
