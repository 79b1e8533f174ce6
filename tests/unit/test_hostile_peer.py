r"""The tunnel core against a hostile peer: a legitimate key, hostile packets.

```
 a 10.1.0.0/16 (hostile: its own map says b owns 169.254.0.0/16, 8.0.0.0/8, 10.3.0.0/16)
   192.0.2.1:51820           \
                              b 10.2.0.0/16, TUN address 10.99.0.1/32 (the victim)
                             /  192.0.2.2:51820
 c 10.3.0.0/16 [2001:db8::3]:51820          attacker 203.0.113.66:4444 (replays)
```
- F7: b delivers a packet from a only when its inner destination is b's to deliver: the
  longest prefix over b's map is one of b's routes, or it is b's TUN address. Checked on
  every datagram, through `outside` and through `outside_in_place` (the GRO path) alike.
- F11: an initiation captured earlier and replayed after b restarted is answered, but
  never moves a's endpoint at b: only data on the new session does.
- S02: a datagram longer than any an edge sends is dropped as oversize.
Uses the in-memory underlay of tests/unit/test_tunnel.py (manual clock, seeded random).
"""

from __future__ import annotations

import ipaddress
import random

import pytest

from edge.tunnel import EndpointChanged, Tunnel, wire
from isthmus.endpoint import IPAddress
from isthmus.routemap import RouteMap
from tests.unit.test_tunnel import (
    A_TO_B,
    ADDR,
    B_TO_A,
    MAP,
    WALL,
    A,
    B,
    C,
    Net,
    entry,
    ipv4,
    ipv6,
    kind,
    nonzero,
    peer_view,
)

TUN_B = "10.99.0.1"
ATTACKER = ("203.0.113.66", 4444)
# a's view of the world, as a hostile a may hold it: b owns what b does not.
HOSTILE = RouteMap(
    version=1,
    edges=(
        entry(A),
        entry(B, routes=("10.2.0.0/16", "fd00:b::/48", "169.254.0.0/16", "8.0.0.0/8",
                         "10.3.0.0/16", "10.99.0.0/16", "fd00:c::/48")),
        entry(C, routes=("10.30.0.0/16",)),
    ),
)  # fmt: skip


def victim(net: Net, seed: int = 1, addresses: tuple[IPAddress, ...] = ()) -> Tunnel:
    """Replace b by a tunnel with `addresses` (its TUN address), as edge.__main__ builds it."""
    tunnel = Tunnel(
        B,
        random=random.Random(seed).randbytes,
        wall_clock=lambda: net.now + WALL,
        timers=net.timers,
        addresses=addresses,
    )
    tunnel.apply_map(MAP, net.now)
    net.tunnels["b"] = tunnel
    net.tun["b"], net.events["b"] = [], []
    return tunnel


def hostile_net() -> Net:
    net = Net()
    victim(net, addresses=(ipaddress.ip_address(TUN_B),))
    net.connect("a", "b")
    net["a"].apply_map(HOSTILE, net.now)
    net.tun["b"].clear()
    return net


# -- F7: the inner destination ------------------------------------------------------------

FOREIGN = [
    ipv4("10.1.0.5", "169.254.169.254", b"metadata"),  # the cloud metadata service
    ipv4("10.1.0.5", "8.8.8.8", b"internet"),
    ipv4("10.1.0.5", "10.3.0.9", b"third site"),  # c's range
    ipv4("10.1.0.5", "10.99.0.2", b"next to b's TUN address"),
    ipv6("fd00:a::5", "fd00:c::1", b"nobody's v6"),
]
OURS = [
    A_TO_B,  # b's route
    ipv4("10.1.0.5", TUN_B, b"b's TUN address"),
    ipv6("fd00:a::5", "fd00:b::9", b"b's v6 route"),
]


def test_packets_to_destinations_that_are_not_the_receivers_are_dropped() -> None:
    net = hostile_net()
    for packet in FOREIGN + OURS:
        assert net.send("a", packet) is not None  # a seals every one for b
    net.pump()
    assert net.tun["b"] == OURS
    assert nonzero(net["b"]) == {"bad_inner_destination": len(FOREIGN)}
    view = peer_view(net["b"], "a", net.now)
    assert view.rx_packets == 1 + len(OURS)  # the connect packet and ours: drops not counted
    # Legitimate traffic is unaffected, both ways.
    net.tun["a"].clear()
    net.send("b", B_TO_A)
    net.pump()
    assert net.tun["a"] == [B_TO_A]


def test_the_inner_destination_is_checked_on_the_in_place_path_too() -> None:
    """What the dataplane does with a GRO read: datagrams back to back in one buffer,
    each opened in place."""
    net = hostile_net()
    sealed = []
    for packet in [*FOREIGN, *OURS]:
        out = net.send("a", packet)
        assert out is not None
        sealed.append(out)
    net.inflight.clear()
    buf = bytearray(b"".join(sealed))
    at, delivered = 0, []
    for datagram in sealed:
        n = net["b"].outside_in_place(buf, at, len(datagram), ADDR["a"], net.now)
        if n >= 0:
            delivered.append(bytes(buf[at + wire.OVERHEAD : at + wire.OVERHEAD + n]))
        at += len(datagram)
    assert delivered == OURS
    assert nonzero(net["b"]) == {"bad_inner_destination": len(FOREIGN)}


def test_a_more_specific_route_of_another_edge_inside_ours_is_not_ours() -> None:
    covering = RouteMap(
        version=2,
        edges=(
            entry(A),
            entry(B, routes=("10.0.0.0/8",)),
            entry(C, routes=("10.3.0.0/16",)),
        ),
    )
    net = Net(route_map=covering)
    net.connect("a", "b")
    hostile = RouteMap(3, (entry(A), entry(B, routes=("10.0.0.0/8", "10.3.0.0/16"))))
    net["a"].apply_map(hostile, net.now)
    net.tun["b"].clear()
    to_c = ipv4("10.1.0.5", "10.3.0.9")  # c's, though inside b's 10.0.0.0/8
    to_b = ipv4("10.1.0.5", "10.4.0.9")
    net.send("a", to_c)
    net.send("a", to_b)
    net.pump()
    assert net.tun["b"] == [to_b]
    assert nonzero(net["b"]) == {"bad_inner_destination": 1}


# -- F11: roaming -------------------------------------------------------------------------


def test_a_replayed_initiation_after_a_restart_does_not_move_the_endpoint() -> None:
    net = Net()
    net.send("a", A_TO_B)
    [(initiation, dst)] = net["a"].datagrams_to_send()
    assert kind(initiation) == wire.TYPE_INITIATION and dst == ADDR["b"]
    net.inflight.append((initiation, ADDR["a"], dst))
    net.pump()
    assert net.tun["b"] == [A_TO_B]
    net.run(1.0)
    victim(net, seed=2).apply_map(MAP, net.now)  # b restarts: it remembers no timestamp
    net.connect("b", "a")
    net.drain_events()
    net.events["b"].clear()

    assert net.deliver(initiation, ATTACKER, ADDR["b"]) is None  # the replay
    answers = net["b"].datagrams_to_send()
    assert [(kind(d), to) for d, to in answers] == [(wire.TYPE_RESPONSE, ATTACKER)]
    net.drain_events()
    assert not any(isinstance(e, EndpointChanged) for e in net.events["b"]), net.events["b"]
    assert peer_view(net["b"], "a").endpoint == "192.0.2.1:51820"
    # Traffic keeps flowing, both ways, to and from a's real address.
    net.tun["a"].clear()
    net.tun["b"].clear()
    sent = net["b"].inside(B_TO_A, net.now)
    assert sent is not None and sent[1] == ADDR["a"]
    net.inflight.append((sent[0], ADDR["b"], sent[1]))
    net.send("a", A_TO_B)
    net.pump()
    assert net.tun["a"] == [B_TO_A] and net.tun["b"] == [A_TO_B]


def test_a_peer_that_moved_and_initiates_is_followed_once_its_data_arrives() -> None:
    net = Net()
    net.connect("a", "b")
    net.run(1.0)
    moved = ("203.0.113.7", 6000)
    del net.tunnels["a"]
    net.add(A, moved, MAP, seed=9, greet=True)  # a restarts behind a new NAT mapping
    greeting = [(d, dst) for d, dst in net["a"].datagrams_to_send() if dst == ADDR["b"]]
    assert [kind(d) for d, _ in greeting] == [wire.TYPE_INITIATION]
    net.deliver(greeting[0][0], moved, ADDR["b"])
    # Answered at its source, but not followed yet: an initiation proves no address.
    [(response, to)] = net["b"].datagrams_to_send()
    assert kind(response) == wire.TYPE_RESPONSE and to == moved
    assert peer_view(net["b"], "a").endpoint == "192.0.2.1:51820"
    net.inflight.append((response, ADDR["b"], moved))
    net.pump()  # a's keepalive confirms the session from the new address
    assert peer_view(net["b"], "a").endpoint == "203.0.113.7:6000"
    assert EndpointChanged("a", moved) in net.events["b"]
    sent = net["b"].inside(B_TO_A, net.now)
    assert sent is not None and sent[1] == moved


# -- S02: oversize ------------------------------------------------------------------------


@pytest.mark.parametrize("size", [wire.MAX_ACCEPTED + 1, 9_100, 65_507, wire.MAX_DATAGRAM])
def test_a_datagram_longer_than_any_edge_sends_is_dropped_as_oversize(size: int) -> None:
    net = Net()
    net.connect("a", "b")
    datagram = bytes((wire.TYPE_DATA, 0, 0, 0)) + bytes(size - 4)
    before = nonzero(net["b"])
    assert net["b"].outside(datagram, ADDR["a"], net.now) is None
    buf = bytearray(datagram)
    assert net["b"].outside_in_place(buf, 0, size, ADDR["a"], net.now) == -1
    assert nonzero(net["b"]) == {**before, "oversize": 2}
    assert net["b"].datagrams_to_send() == []


def test_the_largest_datagram_an_edge_sends_is_not_oversize() -> None:
    net = Net()
    net.connect("a", "b")
    assert wire.MAX_ACCEPTED == 9000 + wire.OVERHEAD
    datagram = bytes((wire.TYPE_DATA, 0, 0, 0)) + bytes(wire.MAX_ACCEPTED - 4)
    assert net["b"].outside(datagram, ADDR["a"], net.now) is None
    assert nonzero(net["b"]) == {"unknown_peer": 1}  # looked at: no session has index 0
