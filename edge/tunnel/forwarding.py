"""The forwarding table: which peer owns a destination, who sent a datagram.

Owns this edge's identity and the per-map view of every other edge as a `Peer` with
its precomputed shared key. Built from one `RouteMap` and immutable afterwards:
every map version builds a new table and the tunnel swaps the reference.

Rules:
- Routes of this edge (the map entry with our name) are not in the table: a packet
  from the TUN to one of them would loop, so it finds no route.
- Routes of different edges never overlap (a map rule, checked again here), so one
  longest-prefix table answers both "who gets this destination" and "who may send
  from this source".
- An edge that cannot be a peer is left out as if absent from the map (its packets
  drop as unknown_peer, packets to its routes as no_route): an edge with our public
  key under another name, and an edge whose key gives no usable shared secret.
- Two peers whose sender ids collide (BLAKE2b-64) are both unknown on receive; they
  are still sent to.
- Per-peer counters (`PeerStats`) survive a rebuild when the peer's name and public
  key are unchanged; otherwise they start from zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from edge.tunnel import crypto
from isthmus.endpoint import Endpoint
from isthmus.ids import EdgeName
from isthmus.keys import KEY_LEN, PublicKey
from isthmus.lpm import LpmTable, Network
from isthmus.routemap import RouteMap

# What identifies a peer across map versions for keeping its counters.
PeerKey = tuple[str, bytes]


@dataclass(frozen=True, slots=True)
class Identity:
    """This edge: its name and key pair. The private key never appears in repr."""

    name: EdgeName
    private_key: bytes = field(repr=False)
    public_key: PublicKey

    def __post_init__(self) -> None:
        if len(self.private_key) != KEY_LEN:
            raise ValueError(f"a private key is {KEY_LEN} bytes, got {len(self.private_key)}")
        if crypto.public_key_of(self.private_key) != self.public_key.raw:
            raise ValueError("the public key does not belong to the private key")

    @classmethod
    def from_private_key(cls, name: EdgeName, raw: bytes) -> Identity:
        """Derive the public key from `raw`.

        Raises:
            ValueError: `raw` is not 32 bytes or its public key is refused by PublicKey.
        """
        return cls(name, raw, PublicKey(crypto.public_key_of(raw)))


@dataclass(slots=True)
class PeerStats:
    """Counters of one peer; mutated in place by the tunnel's data path."""

    rx_packets: int = 0
    rx_bytes: int = 0
    tx_packets: int = 0
    tx_bytes: int = 0
    last_rx: float | None = None


@dataclass(frozen=True, slots=True, eq=False)
class Peer:
    """Another edge as this edge's data path sees it. Compared by identity."""

    name: EdgeName
    public_key: PublicKey
    endpoint: Endpoint | None  # the map's first endpoint; None: nothing can be sent
    sockaddr: tuple[str, int] | None  # endpoint as (host, port), computed once
    shared_key: bytes = field(repr=False)
    sender_id: bytes
    stats: PeerStats

    @property
    def key(self) -> PeerKey:
        return (self.name, self.public_key.raw)


class ForwardingTable:
    """Peers of one map version with the lookups the data path needs.

    `routes` and `senders` are read-only and public so the hot path can reach them
    without a call: `routes.lookup(address)` -> owning Peer, `senders.get(id)` -> Peer.
    """

    __slots__ = ("peers", "routes", "senders", "version")

    def __init__(
        self,
        version: int,
        peers: tuple[Peer, ...],
        routes: LpmTable[Peer],
        senders: Mapping[bytes, Peer],
    ) -> None:
        self.version = version
        self.peers = peers
        self.routes = routes
        self.senders = senders

    @classmethod
    def empty(cls) -> ForwardingTable:
        """The table before any map: no peers, no routes."""
        return cls(0, (), LpmTable(), {})

    @classmethod
    def build(
        cls,
        identity: Identity,
        route_map: RouteMap,
        stats: Mapping[PeerKey, PeerStats] | None = None,
    ) -> ForwardingTable:
        """The table for `route_map`, reusing `stats` of peers with an unchanged name and key.

        Raises:
            MapError: the map breaks a map rule (duplicate names or keys, overlapping
                routes of different edges).
        """
        route_map.validate()
        stats = stats or {}
        own_key = identity.public_key.raw
        peers: list[Peer] = []
        entries: list[tuple[Network, Peer]] = []
        for edge in route_map.edges:
            if edge.name == identity.name or edge.public_key.raw == own_key:
                continue
            try:
                shared = crypto.precompute(identity.private_key, edge.public_key.raw)
            except ValueError:
                continue
            endpoint = edge.endpoints[0] if edge.endpoints else None
            peer = Peer(
                name=edge.name,
                public_key=edge.public_key,
                endpoint=endpoint,
                sockaddr=endpoint.sockaddr() if endpoint is not None else None,
                shared_key=shared,
                sender_id=crypto.sender_id(edge.public_key.raw),
                stats=stats.get((edge.name, edge.public_key.raw)) or PeerStats(),
            )
            peers.append(peer)
            entries.extend((route, peer) for route in edge.routes)
        return cls(
            route_map.version,
            tuple(sorted(peers, key=lambda p: p.name)),
            LpmTable(entries),
            _senders(peers),
        )

    def stats_by_key(self) -> dict[PeerKey, PeerStats]:
        """Every peer's counters by (name, public key), for the next `build`."""
        return {peer.key: peer.stats for peer in self.peers}


def _senders(peers: list[Peer]) -> dict[bytes, Peer]:
    by_id: dict[bytes, Peer] = {}
    colliding: set[bytes] = set()
    for peer in peers:
        if peer.sender_id in by_id:
            colliding.add(peer.sender_id)
        by_id[peer.sender_id] = peer
    for sender_id in colliding:
        del by_id[sender_id]
    return by_id
