r"""An edge behind NAT, on the tunnel core's in-memory network with a manual clock.

```
 a 10.1.0.0/16 192.0.2.1:51820  ---  b 10.2.0.0/16 192.0.2.2:51820
                 \                    /
        NAT 198.51.100.1:40000 (a new port when the mapping changes)
                       |
        d 10.4.0.0/16: in the map with no endpoint (behind_nat)
```
The network delivers to d only at its current public address (`net.addr["d"]`), as a NAT
forwards only on a live mapping; what goes to an old mapping is lost. Peers learn d's
address from authenticated packets only (docs/protocol.md "NAT").
"""

from __future__ import annotations

from edge.status import problems, render
from edge.tunnel import DropReason, EndpointChanged, HandshakeCompleted, Role, Timers
from isthmus.convert import Registration, registration_from_pb, registration_to_pb
from isthmus.ids import EdgeName
from isthmus.routemap import RouteMap, parse_route
from tests.unit.test_tunnel import A, B, D, Net, entry, ipv4, nonzero, peer_view

NAT_MAP = RouteMap(version=1, edges=(entry(A), entry(B), entry(D)))
PUBLIC = ("198.51.100.1", 40000)
KEEPALIVE = 25.0
A_TO_D = ipv4("10.1.0.5", "10.4.0.9", b"hello d")
D_TO_A = ipv4("10.4.0.9", "10.1.0.5", b"hello a")


def nat_net() -> Net:
    """a and b up; d behind NAT, started after them (its persistent keepalive on)."""
    net = Net(idents=(A, B), route_map=NAT_MAP)
    net.add(
        D, PUBLIC, NAT_MAP, seed=7, timers=Timers(persistent_keepalive=KEEPALIVE), behind_nat=True
    )
    return net


def test_a_peer_counts_packets_to_an_edge_not_yet_heard_from_as_no_route() -> None:
    net = Net(idents=(A, B), route_map=NAT_MAP)
    assert net.send("a", A_TO_D) is None
    net.pump()
    assert nonzero(net["a"]) == {DropReason.NO_ROUTE.value: 1}
    view = peer_view(net["a"], "d")
    assert view.behind_nat and view.endpoint is None
    assert not peer_view(net["a"], "b").behind_nat


def test_the_edge_behind_nat_greets_every_peer_so_far_side_traffic_works_first() -> None:
    net = nat_net()
    net.pump()
    assert net.events["d"] == [
        HandshakeCompleted("a", Role.INITIATOR),
        HandshakeCompleted("b", Role.INITIATOR),
    ]
    for name in ("a", "b"):
        assert peer_view(net[name], "d").endpoint == "198.51.100.1:40000"
        assert EndpointChanged("d", PUBLIC) in net.events[name]
    # The far side starts: a -> d goes out at once on the session d made, d never sent data.
    datagram = net.send("a", A_TO_D)
    assert datagram is not None
    net.pump()
    assert net.tun["d"] == [A_TO_D]
    assert net.send("d", D_TO_A) is not None
    net.pump()
    assert net.tun["a"] == [D_TO_A]
    assert all(not nonzero(t) for t in net.tunnels.values())


def test_a_peer_new_in_a_later_map_is_greeted_too() -> None:
    only_a = RouteMap(version=1, edges=(entry(A), entry(D)))
    net = Net(idents=(A, B), route_map=NAT_MAP)
    net.add(
        D, PUBLIC, only_a, seed=7, timers=Timers(persistent_keepalive=KEEPALIVE), behind_nat=True
    )
    net.pump()
    assert net.events["d"] == [HandshakeCompleted("a", Role.INITIATOR)]
    net["d"].apply_map(RouteMap(version=2, edges=NAT_MAP.edges), net.now)
    net.pump()
    assert net.events["d"][1:] == [HandshakeCompleted("b", Role.INITIATOR)]
    assert peer_view(net["b"], "d").endpoint == "198.51.100.1:40000"


def test_persistent_keepalives_keep_the_mapping_open() -> None:
    net = nat_net()
    net.pump()
    received = peer_view(net["a"], "d", net.now).rx_packets  # the greeting's keepalive
    assert received == 1
    net.run(KEEPALIVE - 0.1)
    assert peer_view(net["a"], "d", net.now).rx_packets == received
    net.run(0.2)
    assert peer_view(net["a"], "d", net.now).rx_packets == received + 1
    assert peer_view(net["b"], "d", net.now).rx_packets == received + 1
    net.run(4 * KEEPALIVE)
    assert peer_view(net["a"], "d", net.now).rx_packets == received + 5
    # Keepalives are not answered (no data came), so a and b send d nothing meanwhile.
    assert peer_view(net["d"], "a", net.now).rx_packets == 0
    assert all(not nonzero(t) for t in net.tunnels.values())


def test_a_new_mapping_is_learned_from_authenticated_data_only() -> None:
    net = nat_net()
    net.pump()
    net.run(10.0)
    sealed = net.send("d", D_TO_A)
    assert sealed is not None
    net.pump()
    # The NAT's mapping changes: d's packets now come from a new port.
    moved = ("198.51.100.1", 40001)
    net.addr["d"] = moved
    # Unauthenticated: a replay, a forgery, and an initiation's copy move nothing.
    net.deliver(sealed, moved, ("192.0.2.1", 51820))
    net.deliver(sealed[:-1] + bytes([sealed[-1] ^ 1]), moved, ("192.0.2.1", 51820))
    assert peer_view(net["a"], "d").endpoint == "198.51.100.1:40000"
    # a's traffic goes to the old mapping and is lost until d's next keepalive.
    assert net.send("a", A_TO_D) is not None
    net.pump()
    assert net.tun["d"] == []
    start = net.now
    net.run(KEEPALIVE)  # the keepalive falls due 25 s after d last sent
    assert peer_view(net["a"], "d").endpoint == "198.51.100.1:40001"
    assert EndpointChanged("d", moved) in net.events["a"]
    assert net.now - start <= KEEPALIVE
    assert net.send("a", A_TO_D) is not None
    net.pump()
    assert net.tun["d"] == [A_TO_D]


def test_status_shows_a_peer_behind_nat_not_yet_heard_from_without_a_problem() -> None:
    peer = {
        "name": "office",
        "endpoint": None,
        "behind_nat": True,
        "rx_packets": 0,
        "rx_bytes": 0,
        "tx_packets": 0,
        "tx_bytes": 0,
        "session_age_seconds": None,
        "handshakes": 0,
    }
    status = {
        "edge": "vpc-a",
        "endpoint": "198.18.0.11:51820",
        "controller": {"address": "198.18.0.1:7000", "connected": True},
        "peers": [peer],
        "routes": [{"route": "172.16.0.0/24", "edge": "office", "installed": True}],
        "drops": {},
    }
    assert problems(status) == []
    assert "  endpoint: behind NAT, not yet heard from" in render(status).splitlines()
    heard = {**peer, "endpoint": "198.18.0.13:1024", "session_age_seconds": 3}
    assert (
        "  endpoint: 198.18.0.13:1024 (behind NAT, learned)"
        in render({**status, "peers": [heard]}).splitlines()
    )
    # A peer whose map entry has an endpoint but that has none in use is still a problem.
    lost = {**peer, "behind_nat": False}
    assert problems({**status, "peers": [lost]}) == [
        "peer office owns routes and has neither a session nor an endpoint"
    ]


def test_a_registration_without_endpoints_crosses_the_wire() -> None:
    reg = Registration(EdgeName("office"), D.public_key, (), (parse_route("10.4.0.0/16"),))
    assert registration_from_pb(registration_to_pb(reg)) == reg
