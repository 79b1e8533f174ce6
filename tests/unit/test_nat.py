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

from dataclasses import replace

from edge.status import problems, render
from edge.tunnel import DropReason, EndpointChanged, HandshakeCompleted, Role, Timers, wire
from isthmus.convert import Registration, registration_from_pb, registration_to_pb
from isthmus.endpoint import Endpoint
from isthmus.ids import EdgeName
from isthmus.routemap import RouteMap, parse_route
from tests.unit.test_tunnel import A_TO_B, A, B, D, Net, entry, ipv4, nonzero, peer_view

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


def test_a_new_mapping_is_learned_from_the_next_keepalive_only() -> None:
    net = nat_net()
    net.pump()
    handshakes = peer_view(net["d"], "a", net.now).handshakes
    # d idle: its persistent keepalive is due 25 s after the greeting; take the one to a.
    net.now += KEEPALIVE
    net["d"].handle_timer(net.now)
    out = net["d"].datagrams_to_send()
    assert sorted(dst for _, dst in out) == [("192.0.2.1", 51820), ("192.0.2.2", 51820)]
    keepalive = next(d for d, dst in out if dst == ("192.0.2.1", 51820))
    for datagram, dst in out:
        net.deliver(datagram, PUBLIC, dst)
    # The NAT's mapping changes (its conntrack flushed): d's packets now leave from a new port.
    moved = ("198.51.100.1", 40001)
    net.addr["d"] = moved
    # Unauthenticated: a replay and a forgery from the new address move nothing.
    net.deliver(keepalive, moved, ("192.0.2.1", 51820))
    index, counter, box = wire.unpack_data(keepalive)
    forged = wire.pack_data(index, counter + 1, bytes(box)[:-1] + bytes([box[-1] ^ 1]))
    net.deliver(forged, moved, ("192.0.2.1", 51820))
    assert peer_view(net["a"], "d").endpoint == "198.51.100.1:40000"
    assert nonzero(net["a"]) == {"replay": 1, "decrypt_failed": 1}
    # a's traffic goes to the old mapping and is lost until d's next keepalive.
    assert net.send("a", A_TO_D) is not None
    net.run(KEEPALIVE - 0.1)
    assert net.tun["d"] == []
    assert peer_view(net["a"], "d").endpoint == "198.51.100.1:40000"
    net.run(0.2)  # d's next keepalive, from the new port, authenticates: a roams there
    assert peer_view(net["a"], "d").endpoint == "198.51.100.1:40001"
    assert peer_view(net["b"], "d").endpoint == "198.51.100.1:40001"
    assert EndpointChanged("d", moved) in net.events["a"]
    assert peer_view(net["d"], "a", net.now).handshakes == handshakes  # the keepalive did it
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


def test_a_withdrawn_endpoint_keeps_the_one_in_use_a_new_one_replaces_it() -> None:
    """b moves behind NAT (its map entry loses its endpoint): a keeps sending where b's
    packets last came from, which b's greeting may have set before a got the map."""
    net = Net(idents=(A, B), route_map=NAT_MAP)
    net.connect()
    no_endpoint = replace(entry(B), endpoints=())
    net["a"].apply_map(RouteMap(2, (entry(A), no_endpoint, entry(D))), net.now)
    view = peer_view(net["a"], "b")
    assert view.endpoint == "192.0.2.2:51820" and view.behind_nat
    net.send("a", A_TO_B)
    net.pump()
    assert net.tun["b"][-1] == A_TO_B
    # Advertised again, elsewhere: the map's endpoint replaces the one in use.
    back = entry(B, endpoint=Endpoint.parse("192.0.2.22:51820"))
    net["a"].apply_map(RouteMap(3, (entry(A), back, entry(D))), net.now)
    view = peer_view(net["a"], "b")
    assert view.endpoint == "192.0.2.22:51820" and not view.behind_nat
