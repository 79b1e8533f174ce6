"""The forwarding table: which edge owns an address, which peer holds a static key.

Owns this edge's identity and the per-map lookups of the data path (cryptokey routing):
address -> owning route by longest prefix (`ForwardingTable.owner`, the one "who owns this
address" function: the tunnel's send path and inner-source check, `isthmus ping` and
`isthmus explain` all ask it), and public key -> peer for initiations. Built from
one `RouteMap` and immutable afterwards: every map version builds a new table and the
tunnel swaps the reference. What a peer *is* (its mutable state) is the caller's: `build`
asks `make_peer` for the value of each usable edge.

Rules:
- Routes of different edges may overlap (an approved more specific route) but never
  repeat a prefix (a map rule, checked again here), so one longest-prefix table answers
  both "who gets this destination" and "who may send from this source".
- Routes of this edge (the map entry with our name) own their addresses with no peer
  (`Route.peer` is None), as holes in the table:
  a packet from the TUN to one of them would loop, so it finds no route, and no peer may
  send from them, even when a peer owns a covering, less specific route.
- An edge that cannot be a peer is left out as if absent from the map (its handshakes
  drop as unknown_peer), and its routes are holes too (`Route.peer` None; packets to them drop as
  no_route rather than going to the owner of a covering route): an edge with our
  public key under another name, and an edge whose key gives no usable shared secret.
- A packet a peer sends us is ours to deliver (`delivers`) only when the owner of its
  destination is one of our own routes (`Route.local`), or the destination is one of our
  own addresses (`addresses`: the TUN address): never an address of another site, a more
  specific route of another edge inside ours, or anything outside the map
  (169.254.169.254, the internet).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import nacl.bindings as sodium
from nacl.exceptions import CryptoError

from isthmus.endpoint import IPAddress
from isthmus.ids import EdgeName
from isthmus.keys import KEY_LEN, PublicKey
from isthmus.lpm import LpmTable, Network
from isthmus.routemap import EdgeEntry, RouteMap

T = TypeVar("T")


def public_key_of(private_key: bytes) -> bytes:
    """The X25519 public key of a 32-byte private key.

    Raises:
        ValueError: the private key is not 32 bytes.
    """
    if len(private_key) != KEY_LEN:
        raise ValueError(f"a private key is {KEY_LEN} bytes, got {len(private_key)}")
    result: bytes = sodium.crypto_scalarmult_base(private_key)
    return result


def usable(private_key: bytes, peer_public: bytes) -> bool:
    """True when DH(private, peer) is not refused (libsodium refuses a low-order result)."""
    try:
        sodium.crypto_scalarmult(private_key, peer_public)
    except (CryptoError, ValueError, TypeError):
        return False
    return True


@dataclass(frozen=True, slots=True)
class Identity:
    """This edge: its name and key pair. The private key never appears in repr."""

    name: EdgeName
    private_key: bytes = field(repr=False)
    public_key: PublicKey

    def __post_init__(self) -> None:
        if len(self.private_key) != KEY_LEN:
            raise ValueError(f"a private key is {KEY_LEN} bytes, got {len(self.private_key)}")
        if public_key_of(self.private_key) != self.public_key.raw:
            raise ValueError("the public key does not belong to the private key")

    @classmethod
    def from_private_key(cls, name: EdgeName, raw: bytes) -> Identity:
        """Derive the public key from `raw`.

        Raises:
            ValueError: `raw` is not 32 bytes or its public key is refused by PublicKey.
        """
        return cls(name, raw, PublicKey(public_key_of(raw)))


@dataclass(frozen=True, slots=True)
class Route(Generic[T]):
    """A route of the map: its network, the edge owning it, and that edge's peer (None for
    a route of this edge, and for an edge that cannot be a peer)."""

    network: Network
    edge: EdgeEntry
    peer: T | None
    local: bool = False  # a route of this edge: what a peer sends into it is ours


class ForwardingTable(Generic[T]):
    """Peers of one map version with the lookups the data path needs.

    `owner(packed address)` -> the owning Route or None (no route of the map holds it):
    the longest-prefix rule, and the one place it is decided. It is the LPM's own lookup,
    bound at construction, so the hot path pays one call for it. `by_key.get(raw public
    key)` -> peer. `addresses`: this edge's own addresses, packed. Read-only after
    construction.
    """

    __slots__ = ("_all", "addresses", "by_key", "owner", "peers", "routes", "version")

    def __init__(
        self,
        version: int,
        peers: tuple[T, ...],
        routes: LpmTable[Route[T]],
        by_key: Mapping[bytes, T],
        all_routes: tuple[Route[T], ...] = (),
        addresses: frozenset[bytes] = frozenset(),
    ) -> None:
        self.version = version
        self.peers = peers  # by name
        self.routes = routes
        self.by_key = by_key
        self.owner: Callable[[bytes], Route[T] | None] = routes.lookup
        self._all = all_routes  # most specific first
        self.addresses = addresses

    @classmethod
    def empty(cls) -> ForwardingTable[T]:
        """The table before any map: no peers, no routes."""
        return cls(0, (), LpmTable(), {})

    def delivers(self, address: bytes) -> bool:
        """True when a packet a peer sends to `address` (4 or 16 bytes) is ours to
        deliver: its owner is one of our routes, or it is one of our own addresses."""
        route = self.owner(address)
        return (route is not None and route.local) or address in self.addresses

    def containing(self, address: bytes) -> list[Route[T]]:
        """Every route of the map holding `address` (4 or 16 bytes), most specific first:
        the first is `owner(address)`, the rest are the less specific routes it overlaps."""
        ip = ipaddress.ip_address(address)
        return [r for r in self._all if r.network.version == ip.version and ip in r.network]

    @classmethod
    def build(
        cls,
        identity: Identity,
        route_map: RouteMap,
        make_peer: Callable[[EdgeEntry], T],
        addresses: Sequence[IPAddress] = (),
    ) -> ForwardingTable[T]:
        """The table for `route_map`; `make_peer` gives the value of each usable edge;
        `addresses` are this edge's own addresses (its TUN address), delivered here.

        Raises:
            MapError: the map breaks a map rule (duplicate names or keys, a prefix at
                two edges); `make_peer` was not called.
        """
        route_map.validate()
        own_key = identity.public_key.raw
        edges: list[EdgeEntry] = []
        routes: list[Route[T]] = []
        for edge in sorted(route_map.edges, key=lambda e: e.name):
            if (
                edge.name != identity.name
                and edge.public_key.raw != own_key
                and usable(identity.private_key, edge.public_key.raw)
            ):
                edges.append(edge)
            else:
                local = edge.name == identity.name
                routes.extend(Route(net, edge, None, local) for net in edge.routes)
        peers: list[T] = []
        by_key: dict[bytes, T] = {}
        for edge in edges:
            peer = make_peer(edge)
            peers.append(peer)
            by_key[edge.public_key.raw] = peer
            routes.extend(Route(net, edge, peer) for net in edge.routes)
        lpm = LpmTable((r.network, r) for r in routes)
        ordered = tuple(sorted(routes, key=lambda r: -r.network.prefixlen))
        own = frozenset(a.packed for a in addresses)
        return cls(route_map.version, tuple(peers), lpm, by_key, ordered, own)
