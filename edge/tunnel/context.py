"""The state the parts of one Tunnel share: one object, held by each part.

Owns nothing but the references: the output list, the event queue, the drop counters, the
index table, the injected randomness and wall clock, the timer constants, this edge's
static keys and name, and the forwarding table of the map in use. Every part (`Sender`,
`Receiver`, `Prober`) holds the same Context, so swapping the table on a new map is one
assignment (`context.table = table`) and every part sees it at once.

Rules:
- `table` is the only slot assigned after construction, and only by the Tunnel.
- The parts read the other slots and mutate the objects they name (append to `out`,
  count in `drops`), never rebind them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from edge.tunnel.drops import DropCounters
from edge.tunnel.events import TunnelEvent
from edge.tunnel.forwarding import ForwardingTable
from edge.tunnel.handshake import StaticKeys
from edge.tunnel.index import IndexTable
from edge.tunnel.peer import PeerState, Sockaddr
from edge.tunnel.timers import Timers

Datagram = tuple[bytes, Sockaddr]


class Context:
    """What the parts of one Tunnel share (see the module)."""

    __slots__ = (
        "drops",
        "events",
        "index",
        "out",
        "random",
        "self_name",
        "static",
        "table",
        "timers",
        "wall_clock",
    )

    def __init__(
        self,
        *,
        self_name: str,
        static: StaticKeys,
        random: Callable[[int], bytes],
        wall_clock: Callable[[], float],
        timers: Timers,
    ) -> None:
        self.self_name = self_name
        self.static = static
        self.random = random
        self.wall_clock = wall_clock
        self.timers = timers
        self.index = IndexTable(random)
        self.drops = DropCounters()
        self.out: list[Datagram] = []
        self.events: deque[TunnelEvent] = deque()
        self.table: ForwardingTable[PeerState] = ForwardingTable.empty()
