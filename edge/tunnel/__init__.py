"""isthmus edge tunnel: the sans-I/O core of the data path.

Takes bytes and `now`, returns datagrams to send and packets for the TUN. Must never
import an I/O module (socket, asyncio, selectors, grpc, pyroute2, pytun_pmd3,
subprocess) or the edge's shell modules: an import-linter contract enforces it.
"""

from edge.tunnel.crypto import NonceExhausted, NonceSource
from edge.tunnel.drops import DropReason
from edge.tunnel.forwarding import Identity, Peer, PeerStats
from edge.tunnel.tunnel import PeerView, Tunnel
from edge.tunnel.wire import HEADER_LEN, OVERHEAD, DataHeader, MalformedPacket

__all__ = [
    "HEADER_LEN",
    "OVERHEAD",
    "DataHeader",
    "DropReason",
    "Identity",
    "MalformedPacket",
    "NonceExhausted",
    "NonceSource",
    "Peer",
    "PeerStats",
    "PeerView",
    "Tunnel",
]
