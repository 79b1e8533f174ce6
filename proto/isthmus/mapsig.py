"""Signed maps: the controller's Ed25519 signature over a whole map at (epoch, version).

Owns the epoch format, the canonical encoding of a map, its digest, the signed message
and signing and verifying it (docs/controller.md, "Signed maps"). Both sides use these
functions and no other encoding:

    epoch    = created_ms (u64 BE) || random (8)                         16 bytes
    digest   = BLAKE2b-256(canonical(map))
    message  = b"isthmus map v1\\0" || epoch (16) || version (u64 BE) || digest (32)
    canonical(map) = u32 edge count, then per edge, sorted by name:
        lp(name) lp(public key) u32 count, lp(endpoint)...  u32 count, lp(route)...
        u32 count, then per lease (route order): version (u64) expires (u64) lp(signature)
    lp(x)    = u32 BE length || x;  endpoint = ip packed || port (u16 BE);
    route    = family (1: 4 or 6) || prefixlen (1) || network address (4 or 16)

Every field is length-prefixed or fixed-size and every list carries its count, so two
different maps never share an encoding. The digest covers everything an edge acts on:
the set of edges, their names, keys, endpoints, routes and leases; the message adds
the version and the lineage (epoch). Pure: no clock, no I/O (randomness is injected).
`verify_map` never raises, whatever it is given.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

from isthmus.lease import U64_MAX
from isthmus.routemap import EdgeEntry, RouteMap
from isthmus.signing import SIGNATURE_LEN, ControllerKey, ControllerPublicKey

__all__ = [
    "DIGEST_LEN",
    "EPOCH_LEN",
    "MAP_CONTEXT",
    "SignedMap",
    "canonical",
    "epoch_created_ms",
    "epoch_text",
    "map_digest",
    "map_message",
    "new_epoch",
    "sign_map",
    "verify_map",
]

MAP_CONTEXT = b"isthmus map v1\0"
EPOCH_LEN = 16
DIGEST_LEN = 32
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


@dataclass(frozen=True, slots=True)
class SignedMap:
    """A whole map with the controller's signature over it at `epoch`.

    `epoch` and `signature` are empty for a map that was never signed (no map yet, or a
    cache written before maps were signed).
    """

    route_map: RouteMap
    epoch: bytes = b""
    signature: bytes = b""

    @property
    def version(self) -> int:
        return self.route_map.version


def new_epoch(now: float, random: Callable[[int], bytes] = os.urandom) -> bytes:
    """A fresh epoch created at `now` (unix seconds): later epochs compare greater."""
    created_ms = max(0, min(int(now * 1000), U64_MAX))
    return _U64.pack(created_ms) + bytes(random(8))


def epoch_created_ms(epoch: bytes) -> int:
    """The creation time (unix milliseconds) in `epoch`; 0 for an empty or short epoch."""
    if len(epoch) != EPOCH_LEN:
        return 0
    return int(_U64.unpack_from(epoch)[0])


def epoch_text(epoch: bytes) -> str:
    """The short form people see (`isthmus edges`, logs): the first 8 hex digits of the
    random half, or "-" for none."""
    return epoch[8:12].hex() if len(epoch) == EPOCH_LEN else "-"


def canonical(route_map: RouteMap) -> bytes:
    """The canonical encoding of `route_map`'s edges (not its version)."""
    out = [_U32.pack(len(route_map.edges))]
    for entry in sorted(route_map.edges, key=lambda e: e.name):
        out.append(_entry(entry))
    return b"".join(out)


def map_digest(route_map: RouteMap) -> bytes:
    """BLAKE2b-256 of the canonical encoding."""
    return hashlib.blake2b(canonical(route_map), digest_size=DIGEST_LEN).digest()


def map_message(epoch: bytes, version: int, digest: bytes) -> bytes:
    """The bytes the controller signs for a map.

    Raises:
        ValueError: epoch not 16 bytes, version outside 0..2**64-1, digest not 32 bytes.
    """
    if len(epoch) != EPOCH_LEN:
        raise ValueError(f"an epoch is {EPOCH_LEN} bytes, got {len(epoch)}")
    if not 0 <= version <= U64_MAX:
        raise ValueError(f"map version {version} is outside 0..2**64-1")
    if len(digest) != DIGEST_LEN:
        raise ValueError(f"a map digest is {DIGEST_LEN} bytes, got {len(digest)}")
    return MAP_CONTEXT + bytes(epoch) + _U64.pack(version) + digest


def sign_map(key: ControllerKey, epoch: bytes, route_map: RouteMap) -> SignedMap:
    """Sign `route_map` as published in lineage `epoch`.

    Raises:
        ValueError: see `map_message`.
    """
    message = map_message(epoch, route_map.version, map_digest(route_map))
    return SignedMap(route_map, bytes(epoch), key.sign(message))


def verify_map(public: ControllerPublicKey, signed: SignedMap) -> bool:
    """True when `signed.signature` is the controller's signature of exactly this map
    (every edge, endpoint, route and lease), its version and its epoch. Never raises."""
    try:
        if len(signed.signature) != SIGNATURE_LEN:
            return False
        message = map_message(signed.epoch, signed.route_map.version, map_digest(signed.route_map))
    except (ValueError, TypeError, AttributeError, struct.error):
        return False
    return public.verify(message, signed.signature)


def _lp(data: bytes) -> bytes:
    return _U32.pack(len(data)) + data


def _entry(entry: EdgeEntry) -> bytes:
    out = [_lp(entry.name.encode("utf-8")), _lp(entry.public_key.raw)]
    out.append(_U32.pack(len(entry.endpoints)))
    out.extend(_lp(e.ip.packed + _U16.pack(e.port)) for e in entry.endpoints)
    out.append(_U32.pack(len(entry.routes)))
    out.extend(
        _lp(bytes((r.version, r.prefixlen)) + r.network_address.packed) for r in entry.routes
    )
    out.append(_U32.pack(len(entry.leases)))
    for lease in entry.leases:
        out.append(_U64.pack(lease.version) + _U64.pack(lease.expires) + _lp(lease.signature))
    return b"".join(out)
