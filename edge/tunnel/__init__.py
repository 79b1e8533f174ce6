"""isthmus edge tunnel: the sans-I/O core of the data path (docs/protocol.md).

Takes bytes and `now`, returns datagrams to send, packets for the TUN, a timer deadline
and events. Must never import an I/O module (socket, asyncio, selectors, grpc, pyroute2,
pytun_pmd3, subprocess) or the edge's shell modules: an import-linter contract enforces it.
"""

from edge.tunnel.drops import DropReason
from edge.tunnel.events import (
    EndpointChanged,
    HandshakeCompleted,
    HandshakeFailed,
    ProbeAnswered,
    SessionExpired,
    TunnelEvent,
)
from edge.tunnel.forwarding import ForwardingTable, Identity, Route
from edge.tunnel.probe import ProbeError
from edge.tunnel.session import Role
from edge.tunnel.timers import Timers
from edge.tunnel.tunnel import PeerView, Tunnel
from edge.tunnel.wire import OVERHEAD, MalformedPacket

__all__ = [
    "OVERHEAD",
    "DropReason",
    "EndpointChanged",
    "ForwardingTable",
    "HandshakeCompleted",
    "HandshakeFailed",
    "Identity",
    "MalformedPacket",
    "PeerView",
    "ProbeAnswered",
    "ProbeError",
    "Role",
    "Route",
    "SessionExpired",
    "Timers",
    "Tunnel",
    "TunnelEvent",
]
