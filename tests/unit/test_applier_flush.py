"""MapApplier hands each map to the tunnel and then lets the data plane act on it at once.

A map applied by the control loop (not from a packet or a timer) may start handshakes:
the greeting of the first map with peers, or a peer's new key. Found end to end
(tests/e2e/test_partitions.py, S16): without `on_applied` those initiations waited in the
core until the next packet, so the first packet to a peer, often tens of seconds later,
flushed a stale initiation and its immediate retry together; the responder answered the
first and rate-limited the second (20 ms rule), the initiator no longer knew the first,
and the connection stalled for a REKEY_TIMEOUT.
"""

from __future__ import annotations

import random

from edge.applier import MapApplier
from edge.dataplane import Dataplane
from edge.testing import FakeDatagramSocket, FakeForwarding, FakeRouteTable, FakeTun, MemoryMapStore
from edge.tunnel import Identity, Tunnel, wire
from isthmus.ids import EdgeName
from isthmus.routemap import RouteMap
from tests.unit.test_dataplane import B_ADDR, C_ADDR, KEYS, ROUTE_MAP


def _edge() -> tuple[MapApplier, Tunnel, FakeDatagramSocket, Dataplane]:
    tunnel = Tunnel(
        Identity.from_private_key(EdgeName("a"), KEYS["a"][1]),
        random=random.Random(1).randbytes,
        wall_clock=lambda: 1_800_000_000.0,
        greet=True,
    )
    udp = FakeDatagramSocket()
    dataplane = Dataplane(tunnel, FakeTun(), udp, clock=lambda: 1.0)
    routes = FakeRouteTable()
    applier = MapApplier(
        EdgeName("a"), tunnel, routes, MemoryMapStore(), FakeForwarding(), clock=lambda: 1.0
    )
    applier.apply(RouteMap(version=0), save=False)  # the empty cache at start
    return applier, tunnel, udp, dataplane


def test_the_greeting_of_a_map_from_the_controller_is_sent_at_once() -> None:
    applier, _, udp, dataplane = _edge()
    applier.on_applied = dataplane.after_input
    assert applier.apply(ROUTE_MAP)
    kinds = sorted((wire.message_type(d), addr) for d, addr in udp.sent)
    assert kinds == [(wire.TYPE_INITIATION, B_ADDR), (wire.TYPE_INITIATION, C_ADDR)]


def test_without_the_hook_the_greeting_waits_in_the_core() -> None:
    # The control: what on_applied fixes (nothing leaves until the data plane runs).
    applier, tunnel, udp, _ = _edge()
    assert applier.apply(ROUTE_MAP)
    assert udp.sent == []
    assert len(tunnel.datagrams_to_send()) == 2


def test_a_refused_map_does_not_call_the_hook() -> None:
    applier, _, _, _ = _edge()
    calls: list[None] = []
    applier.on_applied = lambda: calls.append(None)
    own = ROUTE_MAP.edge(EdgeName("a"))
    assert own is not None
    broken = RouteMap(ROUTE_MAP.version + 1, (own, own))  # the same edge twice
    assert not applier.apply(broken)
    assert calls == []
    assert applier.apply(ROUTE_MAP)
    assert calls == [None]
