"""Edge authentication: challenges, proofs and the `isthmus-auth-bin` metadata.

Owns both sides of the scheme in docs/controller.md. The controller hands out
stateless challenges (`ChallengeBook.issue`), 49 bytes:

    0x01 || replica (8) || issued_ms (u64 BE) || random (16) || mac (16)
    mac = BLAKE2b-128(key = challenge_secret, data = the first 33 bytes)

An edge answers with the metadata value, 113 bytes:

    edge public key (32) || challenge (49) || proof (32)
    proof = BLAKE2b-256(key = X25519(edge, controller), data = b"isthmus auth v1\\0"
            || method || b"\\0" || challenge || edge public key || BLAKE2b-256(request))

`Authenticator.verify` checks, in this order, and raises `AuthError` naming the first
failure: the value present and 113 bytes; the challenge well formed, its mac right,
issued by this replica, not expired nor from the future, not used before; the key
known; the proof right (constant-time compare). Only a call that passes every check
uses up its challenge, so callers without a key cannot fill the redeemed set.

Rules: no secret (seeds, shared secrets, proofs, the auth value) ever appears in an
`AuthError` or a log line. Pure: the clock and randomness are injected.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import hmac
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from nacl.bindings import crypto_scalarmult
from nacl.exceptions import CryptoError

from isthmus.keys import KEY_LEN, PublicKey
from isthmus.signing import ControllerKey, ControllerPublicKey

AUTH_METADATA = "isthmus-auth-bin"

CHALLENGE_VERSION = 0x01
REPLICA_LEN = 8
_RANDOM_LEN = 16
_MAC_LEN = 16
_SIGNED_LEN = 1 + REPLICA_LEN + 8 + _RANDOM_LEN  # 33: what the mac covers
CHALLENGE_LEN = _SIGNED_LEN + _MAC_LEN  # 49
PROOF_LEN = 32
AUTH_LEN = KEY_LEN + CHALLENGE_LEN + PROOF_LEN  # 113

CHALLENGE_LIFETIME = 60.0  # seconds a challenge is good for
CLOCK_SLACK = 5.0  # seconds a challenge may appear to come from the future
MAX_SHARED_CACHE = 4096
# Redeemed challenges remembered per edge key (each for CHALLENGE_LIFETIME): an edge
# that uses more in one lifetime is refused until its oldest expire; others are not.
MAX_REDEEMED_PER_EDGE = 600

_PROOF_CONTEXT = b"isthmus auth v1\0"
_U64 = struct.Struct(">Q")


# The reason codes of AuthError (a bounded set: metrics and log keys use them).
AUTH_REASONS = (
    "missing",
    "malformed",
    "challenge_malformed",
    "forged",
    "other_replica",
    "expired",
    "future",
    "replayed",
    "too_many",
    "unknown_key",
    "proof_wrong",
)


class AuthError(Exception):
    """A call is not authenticated; str(e) is the reason, `code` one of AUTH_REASONS.

    Never holds secrets.
    """

    def __init__(self, message: str, code: str = "malformed") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class AuthHeader:
    """The parts of an `isthmus-auth-bin` value."""

    edge_key: PublicKey
    challenge: bytes
    proof: bytes

    def __repr__(self) -> str:
        return f"AuthHeader(edge_key={self.edge_key})"


def edge_shared_secret(edge_private: bytes, controller: ControllerPublicKey) -> bytes:
    """X25519(the edge's private key, the controller key converted to Curve25519).

    Raises:
        ValueError: the controller key is unusable or the result is all zeros.
    """
    peer = controller.x25519()
    try:
        shared = bytes(crypto_scalarmult(bytes(edge_private), peer.raw))
    except (CryptoError, ValueError, TypeError):
        raise ValueError("no usable shared secret with the controller key") from None
    if not any(shared):
        raise ValueError("the controller key gives an all-zero shared secret, which is refused")
    return shared


def make_proof(
    shared: bytes, method: str, challenge: bytes, edge_key: PublicKey, request: bytes
) -> bytes:
    """The 32-byte proof binding the shared secret to one call (method, challenge, body)."""
    digest = hashlib.blake2b(request, digest_size=32).digest()
    data = b"".join(
        (_PROOF_CONTEXT, method.encode("utf-8"), b"\0", challenge, edge_key.raw, digest)
    )
    return hashlib.blake2b(data, digest_size=PROOF_LEN, key=shared).digest()


def auth_value(
    edge_private: bytes,
    edge_key: PublicKey,
    controller: ControllerPublicKey,
    method: str,
    challenge: bytes,
    request: bytes,
) -> bytes:
    """The `isthmus-auth-bin` metadata value for one call.

    `request` is the request message serialized with `SerializeToString(deterministic=True)`.

    Raises:
        ValueError: the challenge is not CHALLENGE_LEN bytes, or no usable shared secret.
    """
    if len(challenge) != CHALLENGE_LEN:
        raise ValueError(f"a challenge is {CHALLENGE_LEN} bytes, got {len(challenge)}")
    shared = edge_shared_secret(edge_private, controller)
    proof = make_proof(shared, method, challenge, edge_key, request)
    return edge_key.raw + challenge + proof


def parse_auth(value: bytes | str | None) -> AuthHeader:
    """Split an `isthmus-auth-bin` value (bytes, or its base64 text form).

    Raises:
        AuthError: missing, not AUTH_LEN bytes, or a refused edge key.
    """
    if value is None or value in (b"", ""):
        raise AuthError(
            f"missing {AUTH_METADATA} metadata: call Challenge first, then send "
            "edge key || challenge || proof",
            "missing",
        )
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise AuthError(f"{AUTH_METADATA}: not binary metadata or base64") from None
    elif isinstance(value, bytes | bytearray):
        raw = bytes(value)
    else:
        raise AuthError(f"{AUTH_METADATA}: a {type(value).__name__}; expected bytes")
    if len(raw) != AUTH_LEN:
        raise AuthError(
            f"{AUTH_METADATA}: {len(raw)} bytes; expected {AUTH_LEN} "
            f"(edge key {KEY_LEN}, challenge {CHALLENGE_LEN}, proof {PROOF_LEN})"
        )
    try:
        key = PublicKey(raw[:KEY_LEN])
    except ValueError as e:
        raise AuthError(f"{AUTH_METADATA}: edge key: {e}") from None
    return AuthHeader(
        edge_key=key,
        challenge=raw[KEY_LEN : KEY_LEN + CHALLENGE_LEN],
        proof=raw[KEY_LEN + CHALLENGE_LEN :],
    )


class ChallengeBook:
    """Issues challenges and remembers the redeemed ones until they expire.

    Not thread-safe: one owner (the controller's event loop). `clock` gives unix
    seconds; `replica` is the 8 random bytes this controller process drew at start.
    """

    def __init__(
        self,
        secret: bytes,
        replica: bytes,
        clock: Callable[[], float],
        random: Callable[[int], bytes],
        lifetime: float = CHALLENGE_LIFETIME,
        max_redeemed: int = 1_000_000,
        max_per_owner: int = MAX_REDEEMED_PER_EDGE,
    ) -> None:
        if len(replica) != REPLICA_LEN:
            raise ValueError(f"a replica id is {REPLICA_LEN} bytes, got {len(replica)}")
        if not 16 <= len(secret) <= 64:
            raise ValueError(f"a challenge secret is 16-64 bytes, got {len(secret)}")
        if lifetime <= 0 or max_redeemed < 1 or max_per_owner < 1:
            raise ValueError(
                "lifetime must be positive and max_redeemed and max_per_owner at least 1"
            )
        self._secret = bytes(secret)
        self._replica = bytes(replica)
        self._clock = clock
        self._random = random
        self._lifetime_ms = int(lifetime * 1000)
        self._slack_ms = int(CLOCK_SLACK * 1000)
        self._max = max_redeemed
        self._max_per_owner = max_per_owner
        self._redeemed: set[bytes] = set()
        self._owned: dict[bytes, int] = {}  # owner -> redeemed challenges remembered
        self._by_age: list[tuple[int, bytes, bytes]] = []  # heap of (issued_ms, challenge, owner)

    @property
    def replica(self) -> bytes:
        return self._replica

    def __len__(self) -> int:
        """How many redeemed challenges are remembered (pruned at expiry)."""
        return len(self._redeemed)

    def issue(self) -> bytes:
        nonce = self._random(_RANDOM_LEN)
        if len(nonce) != _RANDOM_LEN:
            raise ValueError(f"random gave {len(nonce)} bytes; expected {_RANDOM_LEN}")
        body = b"".join(
            (bytes((CHALLENGE_VERSION,)), self._replica, _U64.pack(self._now_ms()), nonce)
        )
        return body + self._mac(body)

    def redeemed_by(self, owner: bytes) -> int:
        """How many redeemed challenges of `owner` are remembered."""
        return self._owned.get(owner, 0)

    def check(self, challenge: bytes, owner: bytes | None = None) -> None:
        """Check `challenge` could be redeemed now (by `owner`), without using it up.

        Raises:
            AuthError: malformed, forged, from another replica, expired, from the future,
                already used, or too many redeemed challenges outstanding (in all, or of
                `owner`: each owner has its own allowance, so one cannot use up another's).
        """
        if len(challenge) != CHALLENGE_LEN or challenge[0] != CHALLENGE_VERSION:
            raise AuthError(
                f"challenge malformed: {len(challenge)} bytes; expected {CHALLENGE_LEN} "
                f"starting with version {CHALLENGE_VERSION}",
                "challenge_malformed",
            )
        body, mac = challenge[:_SIGNED_LEN], challenge[_SIGNED_LEN:]
        if not hmac.compare_digest(mac, self._mac(body)):
            raise AuthError("challenge forged: its mac is wrong", "forged")
        if challenge[1 : 1 + REPLICA_LEN] != self._replica:
            raise AuthError(
                "challenge from another replica: call Challenge at this one", "other_replica"
            )
        (issued,) = _U64.unpack_from(challenge, 1 + REPLICA_LEN)
        now = self._now_ms()
        if now - issued > self._lifetime_ms:
            raise AuthError(
                f"challenge expired: issued {(now - issued) / 1000:.1f} s ago; "
                f"good for {self._lifetime_ms / 1000:g} s",
                "expired",
            )
        if issued - now > self._slack_ms:
            raise AuthError("challenge from the future: check the controller clocks", "future")
        self._prune(now)
        if challenge in self._redeemed:
            raise AuthError("challenge already used: call Challenge for each call", "replayed")
        if len(self._redeemed) >= self._max:
            raise AuthError("too many outstanding challenges: try again later", "too_many")
        if owner is not None and self._owned.get(owner, 0) >= self._max_per_owner:
            raise AuthError(
                f"too many challenges redeemed by this edge key: at most "
                f"{self._max_per_owner} in {self._lifetime_ms / 1000:g} s; try again later",
                "too_many",
            )

    def redeem(self, challenge: bytes, owner: bytes = b"") -> None:
        """Check `challenge` and use it up, counted against `owner` (an edge key).

        Raises:
            AuthError: as `check`.
        """
        self.check(challenge, owner)
        (issued,) = _U64.unpack_from(challenge, 1 + REPLICA_LEN)
        self._redeemed.add(bytes(challenge))
        self._owned[owner] = self._owned.get(owner, 0) + 1
        heapq.heappush(self._by_age, (issued, bytes(challenge), owner))

    def _now_ms(self) -> int:
        return max(0, int(self._clock() * 1000))

    def _mac(self, body: bytes) -> bytes:
        return hashlib.blake2b(body, digest_size=_MAC_LEN, key=self._secret).digest()

    def _prune(self, now_ms: int) -> None:
        # A challenge older than its lifetime is refused as expired, so forget it.
        while self._by_age and now_ms - self._by_age[0][0] > self._lifetime_ms:
            _, old, owner = heapq.heappop(self._by_age)
            self._redeemed.discard(old)
            left = self._owned.get(owner, 0) - 1
            if left > 0:
                self._owned[owner] = left
            else:
                self._owned.pop(owner, None)


class Authenticator:
    """The controller's check of one call's `isthmus-auth-bin` value."""

    def __init__(self, key: ControllerKey, book: ChallengeBook) -> None:
        self._key = key
        self._book = book
        self._shared: OrderedDict[bytes, bytes] = OrderedDict()

    def challenge(self) -> bytes:
        return self._book.issue()

    def precheck(
        self, value: bytes | str | None, key_known: Callable[[PublicKey], bool]
    ) -> AuthHeader:
        """Every check that needs no request body: the value's form, the challenge (mac,
        replica, age, not used, the key's allowance) and the key known. Cheap (one
        BLAKE2b of 33 bytes, no X25519), so it runs before the body is read or parsed.

        Raises:
            AuthError: the first failed check (module docstring order).
        """
        header = parse_auth(value)
        self._book.check(header.challenge, header.edge_key.raw)
        if not key_known(header.edge_key):
            raise AuthError(
                f"unknown edge key {header.edge_key}: not in the controller config", "unknown_key"
            )
        return header

    def verify(
        self,
        value: bytes | str | None,
        method: str,
        request: bytes,
        key_known: Callable[[PublicKey], bool],
    ) -> PublicKey:
        """The authenticated edge key; the call's challenge is used up.

        `request` is the request serialized with `SerializeToString(deterministic=True)`.

        Raises:
            AuthError: the first failed check (module docstring order).
        """
        header = self.precheck(value, key_known)
        shared = self._shared_secret(header.edge_key)
        expected = make_proof(shared, method, header.challenge, header.edge_key, request)
        if not hmac.compare_digest(header.proof, expected):
            raise AuthError(
                f"proof wrong for edge key {header.edge_key}: "
                "wrong controller key, method or request",
                "proof_wrong",
            )
        self._book.redeem(header.challenge, header.edge_key.raw)
        return header.edge_key

    def _shared_secret(self, edge: PublicKey) -> bytes:
        shared = self._shared.get(edge.raw)
        if shared is not None:
            self._shared.move_to_end(edge.raw)
            return shared
        try:
            shared = self._key.shared_secret(edge)
        except ValueError:
            raise AuthError(
                f"edge key {edge} gives no usable shared secret", "unknown_key"
            ) from None
        self._shared[edge.raw] = shared
        if len(self._shared) > MAX_SHARED_CACHE:
            self._shared.popitem(last=False)
        return shared
