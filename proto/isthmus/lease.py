"""Route leases: the controller's signature that a route serves for an edge until a time.

Owns the `Lease` type, the exact signed message (docs/controller.md):

    b"isthmus lease v1\\0" || edge key (32) || family (1: 4 or 6) || prefixlen (1)
    || network address (4 or 16) || version (u64 BE) || expires (u64 BE)

and signing and verifying it. `verify_lease` never raises on hostile input: any
malformed lease is simply not valid. Must not import `isthmus.routemap` (which imports
`Lease` from here).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from isthmus.keys import PublicKey
from isthmus.signing import SIGNATURE_LEN, ControllerKey, ControllerPublicKey

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

__all__ = [
    "LEASE_CONTEXT",
    "SIGNATURE_LEN",
    "U64_MAX",
    "Lease",
    "Network",
    "lease_message",
    "sign_lease",
    "verify_lease",
]

LEASE_CONTEXT = b"isthmus lease v1\0"
U64_MAX = 2**64 - 1
_U64 = struct.Struct(">Q")


@dataclass(frozen=True, slots=True)
class Lease:
    """The controller's signature over (edge key, route, version, expires)."""

    version: int  # the map version at which the lease was signed
    expires: int  # unix seconds after which the lease is void
    signature: bytes  # 64-byte Ed25519 signature of lease_message(...)

    def expired(self, now: float) -> bool:
        """True once `now` (unix seconds) is past `expires`."""
        return now > self.expires


def lease_message(edge_key: PublicKey, route: Network, version: int, expires: int) -> bytes:
    """The bytes the controller signs for one lease.

    Raises:
        ValueError: version or expires outside 0 .. 2**64-1.
    """
    for label, value in (("version", version), ("expires", expires)):
        if not 0 <= value <= U64_MAX:
            raise ValueError(f"lease {label} {value} is outside 0..2**64-1")
    return b"".join(
        (
            LEASE_CONTEXT,
            edge_key.raw,
            bytes((route.version, route.prefixlen)),
            route.network_address.packed,
            _U64.pack(version),
            _U64.pack(expires),
        )
    )


def sign_lease(
    key: ControllerKey, edge_key: PublicKey, route: Network, version: int, expires: int
) -> Lease:
    """Sign that `route` serves for `edge_key` from map `version` until `expires`."""
    message = lease_message(edge_key, route, version, expires)
    return Lease(version=version, expires=expires, signature=key.sign(message))


def verify_lease(
    public: ControllerPublicKey, edge_key: PublicKey, route: Network, lease: Lease
) -> bool:
    """True when `lease` is the controller's signature for `route` of `edge_key`.

    Does not look at the clock: expiry is the caller's rule (`Lease.expired`).
    Never raises: out-of-range numbers or a wrong-length signature give False.
    """
    try:
        if not isinstance(lease.signature, bytes) or len(lease.signature) != SIGNATURE_LEN:
            return False
        message = lease_message(edge_key, route, lease.version, lease.expires)
    except (ValueError, TypeError, AttributeError):
        return False
    return public.verify(message, lease.signature)
