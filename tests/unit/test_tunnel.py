r"""The tunnel core: edges wired through an in-memory network, no sockets.

```
 a 10.1.0.0/16 fd00:a::/48  ---  b 10.2.0.0/16 fd00:b::/48
  192.0.2.1:51820          \     /   192.0.2.2:51820
                     c 10.3.0.0/16 [2001:db8::3]:51820
 d 10.4.0.0/16: in the map, no endpoint, no tunnel of its own
```

`Net` plays the underlay (nebula e2e router style): it carries every datagram a tunnel
returns or queues to the tunnel at its destination address, and can drop, duplicate and
reorder them. Time is a manual clock; randomness is a seeded `random.Random` per tunnel.
"""

from __future__ import annotations

import ipaddress
import random
import struct
from collections.abc import Callable, Iterator

import nacl.bindings
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.tunnel import (
    DropReason,
    EndpointChanged,
    HandshakeCompleted,
    HandshakeFailed,
    Identity,
    PeerView,
    Role,
    SessionExpired,
    Timers,
    Tunnel,
    TunnelEvent,
    crypto,
    handshake,
    wire,
)
from edge.tunnel.handshake import StaticKeys
from isthmus.endpoint import Endpoint
from isthmus.ids import EdgeName
from isthmus.keys import PublicKey
from isthmus.routemap import EdgeEntry, MapError, RouteMap, parse_route

START = 1000.0
WALL = 1.7e9  # the wall clock is the manual clock shifted to a plausible Unix time

Addr = tuple[str, int]


def identity(name: str) -> Identity:
    _, private = nacl.bindings.crypto_box_seed_keypair(name.encode().ljust(32, b"."))
    return Identity.from_private_key(EdgeName(name), private)


A, B, C, D = identity("a"), identity("b"), identity("c"), identity("d")
ENDPOINTS = {
    "a": Endpoint.parse("192.0.2.1:51820"),
    "b": Endpoint.parse("192.0.2.2:51820"),
    "c": Endpoint.parse("[2001:db8::3]:51820"),
}
ADDR = {name: ep.sockaddr() for name, ep in ENDPOINTS.items()}
ROUTES = {
    "a": ("10.1.0.0/16", "fd00:a::/48"),
    "b": ("10.2.0.0/16", "fd00:b::/48"),
    "c": ("10.3.0.0/16",),
    "d": ("10.4.0.0/16",),
}


def entry(
    ident: Identity, *, endpoint: Endpoint | None = None, routes: tuple[str, ...] = ()
) -> EdgeEntry:
    ep = ENDPOINTS.get(ident.name) if endpoint is None else endpoint
    return EdgeEntry(
        name=ident.name,
        public_key=ident.public_key,
        endpoints=(ep,) if ep is not None else (),
        routes=tuple(parse_route(r) for r in routes or ROUTES[ident.name]),
    )


MAP = RouteMap(version=1, edges=tuple(entry(i) for i in (A, B, C, D)))


def ipv4(src: str, dst: str, payload: bytes = b"ping") -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(payload),
        0,
        0,
        64,
        1,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    return header + payload


def ipv6(src: str, dst: str, payload: bytes = b"ping") -> bytes:
    return (
        struct.pack("!IHBB", 0x60000000, len(payload), 58, 64)
        + ipaddress.IPv6Address(src).packed
        + ipaddress.IPv6Address(dst).packed
        + payload
    )


A_TO_B = ipv4("10.1.0.5", "10.2.0.9", b"hello b")
B_TO_A = ipv4("10.2.0.9", "10.1.0.5", b"hello a")


class Net:
    """Tunnels joined by an in-memory underlay with a manual clock."""

    def __init__(
        self,
        idents: tuple[Identity, ...] = (A, B, C),
        route_map: RouteMap = MAP,
        timers: Timers = Timers(),  # noqa: B008
        seed: int = 0,
    ) -> None:
        self.now = START
        self.timers = timers
        self.rng = random.Random(seed)
        self.tunnels: dict[str, Tunnel] = {}
        self.addr: dict[str, Addr] = {}
        self.inflight: list[tuple[bytes, Addr, Addr]] = []
        self.tun: dict[str, list[bytes]] = {}
        self.events: dict[str, list[TunnelEvent]] = {}
        self.lose: Callable[[bytes, Addr, Addr], bool] = lambda _d, _s, _t: False
        self.duplicate = False
        self.reorder = False
        for n, ident in enumerate(idents):
            self.add(ident, ADDR[ident.name], route_map, seed=seed * 100 + n)

    def add(
        self,
        ident: Identity,
        addr: Addr,
        route_map: RouteMap,
        seed: int,
        timers: Timers | None = None,
        greet: bool = False,
        behind_nat: bool = False,
    ) -> Tunnel:
        tunnel = Tunnel(
            ident,
            random=random.Random(seed).randbytes,
            wall_clock=lambda: self.now + WALL,
            timers=timers or self.timers,
            greet=greet,
            behind_nat=behind_nat,
        )
        tunnel.apply_map(route_map, self.now)
        self.tunnels[ident.name] = tunnel
        self.addr[ident.name] = addr
        self.tun[ident.name] = []
        self.events[ident.name] = []
        return tunnel

    def __getitem__(self, name: str) -> Tunnel:
        return self.tunnels[name]

    def at(self, addr: Addr) -> str | None:
        for name, a in self.addr.items():
            if a == addr:
                return name
        return None

    def send(self, name: str, packet: bytes) -> bytes | None:
        """Put `packet` into `name`'s TUN; the datagram it sends at once, if any."""
        result = self.tunnels[name].inside(packet, self.now)
        if result is None:
            return None
        self.inflight.append((result[0], self.addr[name], result[1]))
        return result[0]

    def collect(self) -> list[tuple[bytes, Addr, Addr]]:
        """Move every tunnel's side output into the network; return what was added."""
        added = []
        for name, tunnel in self.tunnels.items():
            for datagram, dst in tunnel.datagrams_to_send():
                added.append((datagram, self.addr[name], dst))
        self.inflight.extend(added)
        return added

    def pump(self, rounds: int = 20) -> None:
        """Deliver until quiet (or `rounds` passes), dropping/duplicating/reordering."""
        for _ in range(rounds):
            self.collect()
            if not self.inflight:
                break
            batch, self.inflight = self.inflight, []
            if self.duplicate:
                batch = [item for item in batch for _ in (0, 1)]
            if self.reorder:
                self.rng.shuffle(batch)
            for datagram, src, dst in batch:
                if self.lose(datagram, src, dst):
                    continue
                self.deliver(datagram, src, dst)
        self.drain_events()

    def deliver(self, datagram: bytes, src: Addr, dst: Addr) -> bytes | None:
        name = self.at(dst)
        if name is None:
            return None
        packet = self.tunnels[name].outside(datagram, src, self.now)
        if packet is not None:
            self.tun[name].append(packet)
        return packet

    def drain_events(self) -> None:
        for name, tunnel in self.tunnels.items():
            while (event := tunnel.next_event()) is not None:
                self.events[name].append(event)

    def run(self, seconds: float) -> None:
        """Advance the clock by `seconds`, firing every timer on the way, delivering."""
        end = self.now + seconds
        while True:
            deadlines = [t.get_timer() for t in self.tunnels.values()]
            due = min((d for d in deadlines if d is not None), default=None)
            if due is None or due > end:
                break
            self.now = max(self.now, due)
            for tunnel in self.tunnels.values():
                tunnel.handle_timer(self.now)
            self.pump()
        self.now = end
        for tunnel in self.tunnels.values():
            tunnel.handle_timer(self.now)
        self.pump()

    def connect(self, x: str = "a", y: str = "b") -> None:
        """A handshake x -> y and one packet each way."""
        src = ROUTES[x][0].replace("0.0/16", "0.1")
        dst = ROUTES[y][0].replace("0.0/16", "0.1")
        self.send(x, ipv4(src, dst))
        self.pump()
        self.send(y, ipv4(dst, src))
        self.pump()
        assert self.tun[y] and self.tun[x], (self[x].drops(), self[y].drops())


def nonzero(tunnel: Tunnel) -> dict[str, int]:
    return {k: v for k, v in tunnel.drops().items() if v}


def peer_view(tunnel: Tunnel, name: str, now: float = START) -> PeerView:
    return {p.name: p for p in tunnel.peers(now)}[name]


def state_size(tunnel: Tunnel) -> int:
    """How many indices (sessions and pending handshakes) the tunnel holds."""
    return len(tunnel._context.index)


def kind(datagram: bytes) -> int:
    return datagram[0]


# -- handshake and data --------------------------------------------------------------


def test_first_packet_is_queued_and_delivered_after_the_handshake() -> None:
    net = Net()
    assert net["a"].inside(A_TO_B, net.now) is None
    out = net["a"].datagrams_to_send()
    assert [(kind(d), dst) for d, dst in out] == [(wire.TYPE_INITIATION, ADDR["b"])]
    net.inflight.append((out[0][0], ADDR["a"], out[0][1]))
    net.pump()
    assert net.tun["b"] == [A_TO_B]
    assert net.events["a"] == [HandshakeCompleted("b", Role.INITIATOR)]
    assert net.events["b"] == [HandshakeCompleted("a", Role.RESPONDER)]
    # Established: the fast path returns the datagram at once, both ways.
    datagram = net.send("b", B_TO_A)
    assert datagram is not None and len(datagram) == len(B_TO_A) + wire.OVERHEAD
    assert net.send("a", A_TO_B) is not None
    net.pump()
    assert net.tun["a"] == [B_TO_A] and net.tun["b"] == [A_TO_B, A_TO_B]
    assert all(not nonzero(t) for t in net.tunnels.values())
    view = peer_view(net["b"], "a", net.now + 2)
    assert view == PeerView("a", "192.0.2.1:51820", 2, 2 * len(A_TO_B), 1, len(B_TO_A),
                            net.now, 2.0, 1, net.now)  # fmt: skip


def test_ipv6_and_a_third_edge() -> None:
    net = Net()
    packet = ipv6("fd00:b::7", "fd00:a::1", b"v6")
    assert net.send("b", packet) is None
    to_c = ipv4("10.1.0.1", "10.3.1.1", bytes(range(256)) * 5)
    assert net.send("a", to_c) is None
    net.pump()
    assert net.tun["a"] == [packet] and net.tun["c"] == [to_c]
    assert peer_view(net["a"], "c").endpoint == "[2001:db8::3]:51820"


def test_keepalive_confirms_the_responder_when_nothing_is_queued() -> None:
    net = Net(idents=(B,))
    net.add(A, ADDR["a"], MAP, seed=9, timers=Timers(persistent_keepalive=25.0))
    net.run(24.9)
    assert net.inflight == [] and net.events["a"] == []
    net.run(0.1)  # a's persistent keepalive needs a session: a handshake, then a keepalive
    assert net.events["a"] == [HandshakeCompleted("b", Role.INITIATOR)]
    assert net.events["b"] == [HandshakeCompleted("a", Role.RESPONDER)]
    assert net.tun["b"] == []
    assert peer_view(net["b"], "a", net.now).rx_packets == 1
    b_sessions = net["b"]._context.index.sessions.values()
    assert [s.confirmed for s in b_sessions] == [True]
    net.run(25.0)
    assert peer_view(net["b"], "a", net.now).rx_packets == 2
    assert all(not nonzero(t) for t in net.tunnels.values())


def test_passive_keepalive_after_received_data() -> None:
    net = Net()
    net.connect()
    net.send("a", A_TO_B)
    net.pump()
    net.collect()
    assert net.inflight == []
    net.run(net.timers.keepalive_timeout - 0.1)
    assert peer_view(net["a"], "b").rx_packets == 1
    net.run(0.2)
    assert peer_view(net["a"], "b").rx_packets == 2  # b's keepalive
    assert net.tun["a"] == [ipv4("10.2.0.1", "10.1.0.1")]


def test_duplicated_and_reordered_datagrams_are_delivered_once() -> None:
    net = Net(seed=7)
    net.connect()
    net.duplicate = net.reorder = True
    packets = [ipv4("10.1.0.1", "10.2.0.1", i.to_bytes(2, "big")) for i in range(50)]
    for packet in packets:
        net.send("a", packet)
    net.pump()
    received = net.tun["b"][1:]
    assert sorted(received) == sorted(packets) and received != packets
    assert nonzero(net["b"]) == {"replay": 50}


def test_replayed_data_is_refused() -> None:
    net = Net()
    net.connect()
    datagram = net.send("a", A_TO_B)
    assert datagram is not None
    net.pump()
    assert net.deliver(datagram, ADDR["a"], ADDR["b"]) is None
    assert nonzero(net["b"]) == {"replay": 1}


def test_counter_behind_the_window_is_too_old() -> None:
    net = Net()
    net.connect()
    first = net.send("a", A_TO_B)
    assert first is not None
    for _ in range(8200):
        net.send("a", A_TO_B)
    net.inflight.clear()
    last = net.send("a", A_TO_B)
    assert last is not None
    assert net.deliver(last, ADDR["a"], ADDR["b"]) == A_TO_B
    assert net.deliver(first, ADDR["a"], ADDR["b"]) is None
    assert nonzero(net["b"]) == {"too_old": 1}


def test_flipped_bits_fail_to_decrypt_and_unknown_indices_are_unknown() -> None:
    net = Net()
    net.connect()
    datagram = net.send("a", A_TO_B)
    assert datagram is not None
    net.inflight.clear()
    for index in range(wire.DATA_BOX_OFFSET, len(datagram)):
        flipped = bytearray(datagram)
        flipped[index] ^= 0x01
        assert net.deliver(bytes(flipped), ADDR["a"], ADDR["b"]) is None
    assert nonzero(net["b"]) == {"decrypt_failed": len(datagram) - wire.DATA_BOX_OFFSET}
    other_index = bytearray(datagram)
    other_index[wire.DATA_RECEIVER_OFFSET] ^= 0x01
    assert net.deliver(bytes(other_index), ADDR["a"], ADDR["b"]) is None
    assert net["b"].drops()["unknown_peer"] == 1
    # Nothing unauthenticated advanced the window: the original still gets through.
    assert net.deliver(datagram, ADDR["a"], ADDR["b"]) == A_TO_B


@pytest.mark.parametrize("src", ["10.3.0.5", "10.2.0.5", "192.168.1.1", "10.4.0.1"])
def test_inner_source_must_be_the_senders(src: str) -> None:
    net = Net()
    net.connect()
    net.send("a", ipv4(src, "10.2.0.1"))
    net.pump()
    assert nonzero(net["b"]) == {"bad_inner_source": 1}
    assert peer_view(net["b"], "a").rx_packets == 1


def test_authenticated_packet_that_is_not_ip() -> None:
    net = Net()
    net.connect()
    session = net["a"]._context.table.by_key[B.public_key.raw].current
    assert session is not None
    counter = session.next_counter()
    datagram = wire.pack_data(
        session.remote_index, counter, crypto.seal(session.send_key, counter, b"not IP")
    )
    assert net.deliver(datagram, ADDR["a"], ADDR["b"]) is None
    assert nonzero(net["b"]) == {"not_ip": 1}


# -- who may talk ----------------------------------------------------------------------


def test_stranger_not_in_the_map_gets_nothing_and_leaves_no_state() -> None:
    stranger = identity("x")
    x_map = RouteMap(
        2,
        (
            entry(stranger, endpoint=Endpoint.parse("192.0.2.9:1"), routes=("10.9.0.0/16",)),
            entry(B),
        ),
    )
    net = Net()
    x = net.add(stranger, ("192.0.2.9", 1), x_map, seed=99)
    before = state_size(net["b"])
    assert x.inside(ipv4("10.9.0.1", "10.2.0.1"), net.now) is None
    (initiation,) = net.collect()
    net.inflight.clear()
    net.deliver(*initiation)
    assert nonzero(net["b"]) == {"unknown_peer": 1}
    assert net["b"].datagrams_to_send() == []
    assert state_size(net["b"]) == before
    assert net.events["b"] == []


def test_before_any_map() -> None:
    tunnel = Tunnel(A, random=random.Random(1).randbytes, wall_clock=lambda: WALL)
    assert tunnel.map_version == 0
    assert tunnel.peers(START) == []
    assert tunnel.get_timer() is None
    assert tunnel.inside(ipv4("10.1.0.1", "10.2.0.1"), START) is None
    net = Net()
    net.send("b", B_TO_A)
    (initiation,) = net.collect()
    assert tunnel.outside(initiation[0], ADDR["b"], START) is None
    assert nonzero(tunnel) == {"no_route": 1, "unknown_peer": 1}


@pytest.mark.parametrize(
    "packet",
    [
        ipv4("10.1.0.1", "8.8.8.8"),  # nobody's route
        ipv4("10.1.0.1", "10.1.200.1"),  # our own route: would loop
        ipv6("fd00:a::1", "fd00:a::2"),  # our own, IPv6
        ipv4("10.1.0.1", "10.4.0.1"),  # d: no endpoint advertised, none learned
    ],
)
def test_no_route(packet: bytes) -> None:
    net = Net()
    assert net["a"].inside(packet, net.now) is None
    assert nonzero(net["a"]) == {"no_route": 1}
    assert net["a"].datagrams_to_send() == []


@pytest.mark.parametrize("packet", [b"", b"garbage", bytes(100), ipv4("10.1.0.1", "10.2.0.1")[:-1]])
def test_inside_not_ip(packet: bytes) -> None:
    net = Net()
    assert net["a"].inside(packet, net.now) is None
    assert nonzero(net["a"]) == {"not_ip": 1}


def test_drops_list_every_reason() -> None:
    tunnel = Net()["a"]
    assert list(tunnel.drops()) == [
        "malformed",
        "oversize",
        "unknown_peer",
        "decrypt_failed",
        "replay",
        "too_old",
        "bad_inner_source",
        "bad_inner_destination",
        "no_route",
        "ratelimited",
        "expired_session",
        "no_session",
        "not_ip",
        "bad_probe",
        "send_failed",
    ]
    tunnel.count_drop(DropReason.SEND_FAILED)
    assert nonzero(tunnel) == {"send_failed": 1}


def test_queue_holds_at_most_64_packets() -> None:
    net = Net()
    for i in range(70):
        assert net.send("a", ipv4("10.1.0.1", "10.2.0.1", i.to_bytes(2, "big"))) is None
    assert nonzero(net["a"]) == {"no_session": 6}
    net.pump()
    assert [p[-2:] for p in net.tun["b"]] == [i.to_bytes(2, "big") for i in range(6, 70)]


# -- handshake robustness ------------------------------------------------------------------


def test_replayed_initiation_does_not_reset_the_live_session() -> None:
    net = Net()
    net.send("a", A_TO_B)
    (initiation,) = net.collect()
    net.pump()
    b_sessions = dict(net["b"]._context.index.sessions)
    keys = {i: (s.send_key, s.recv_key) for i, s in b_sessions.items()}
    net.now += 30
    net.deliver(*initiation)
    assert nonzero(net["b"]) == {"replay": 1}
    assert net["b"].datagrams_to_send() == []
    after = net["b"]._context.index.sessions
    assert {i: (s.send_key, s.recv_key) for i, s in after.items()} == keys
    assert net.send("b", B_TO_A) is not None
    net.pump()
    assert net.tun["a"] == [B_TO_A]


def test_initiations_closer_than_20_ms_are_ratelimited() -> None:
    net = Net()
    own = StaticKeys(A.private_key, A.public_key.raw)
    rng = random.Random(5)

    def initiation(wall: float) -> bytes:
        message, _ = handshake.create_initiation(
            own, B.public_key.raw, 1, rng.randbytes(32), handshake.tai64n(wall), None
        )
        return message

    net.deliver(initiation(WALL + 1), ADDR["a"], ADDR["b"])
    net.now += 0.01
    net.deliver(initiation(WALL + 2), ADDR["a"], ADDR["b"])
    net.now += 0.02
    net.deliver(initiation(WALL + 3), ADDR["a"], ADDR["b"])
    assert nonzero(net["b"]) == {"ratelimited": 1}
    assert [kind(d) for d, _ in net["b"].datagrams_to_send()] == [2, 2]


def test_retry_after_rekey_timeout_with_a_new_ephemeral_then_give_up() -> None:
    net = Net()
    net.lose = lambda _d, _s, _t: True
    for i in range(3):
        net.send("a", ipv4("10.1.0.1", "10.2.0.1", bytes([i])))
    (first,) = net.collect()
    net.inflight.clear()
    deadline = net["a"].get_timer()
    assert deadline is not None
    assert START + 5 <= deadline <= START + 5.333
    net["a"].handle_timer(deadline - 0.01)  # early: nothing happens
    assert net["a"].datagrams_to_send() == []
    net.now = deadline
    net["a"].handle_timer(net.now)
    (second,) = net.collect()
    net.inflight.clear()
    assert kind(second[0]) == wire.TYPE_INITIATION
    ephemeral = slice(wire.INITIATION_EPHEMERAL_OFFSET, wire.INITIATION_STATIC_OFFSET)
    assert second[0][ephemeral] != first[0][ephemeral]
    assert second[0][4:8] != first[0][4:8]  # a new sender index too
    net.run(84.0)
    assert net.events["a"] == []
    net.run(12.0)
    assert net.events["a"] == [HandshakeFailed("b")]
    assert nonzero(net["a"]) == {"no_session": 3}
    assert net["a"].get_timer() is None  # idle until new traffic
    assert state_size(net["a"]) == 0
    net.lose = lambda _d, _s, _t: False
    net.send("a", A_TO_B)
    net.pump()
    assert net.tun["b"] == [A_TO_B]


def test_under_load_a_cookie_is_required_and_no_dh_is_done(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    net = Net()
    calls: list[bytes] = []
    real = handshake.consume_initiation

    def counting(own: StaticKeys, message: wire.Initiation) -> handshake.ConsumedInitiation | None:
        calls.append(message.ephemeral)
        return real(own, message)

    monkeypatch.setattr(handshake, "consume_initiation", counting)
    attacker = StaticKeys.from_private(bytes(range(32)))
    rng = random.Random(3)
    for n in range(100):
        message, _ = handshake.create_initiation(
            attacker, B.public_key.raw, n, rng.randbytes(32), handshake.tai64n(WALL + n), None
        )
        net.deliver(message, (f"198.51.100.{n}", 4000), ADDR["b"])
    flood = net["b"].datagrams_to_send()
    assert len(calls) == 64 < 100  # beyond the load threshold, no DH
    assert [(kind(d), dst) for d, dst in flood] == [
        (wire.TYPE_COOKIE_REPLY, (f"198.51.100.{n}", 4000)) for n in range(64, 100)
    ]
    assert nonzero(net["b"]) == {"unknown_peer": 64, "ratelimited": 36}

    # The legitimate initiator: cookie reply, re-send with mac2 at once, then a session.
    del calls[:]
    net.send("a", A_TO_B)
    net.collect()
    net.pump(rounds=1)
    assert calls == []  # answered with a cookie
    net.pump()
    assert len(calls) == 1
    assert net.tun["b"] == [A_TO_B]
    assert net["b"].drops()["ratelimited"] == 37


def test_per_source_rate_limit() -> None:
    net = Net()
    attacker = StaticKeys.from_private(bytes(range(32)))
    rng = random.Random(4)
    for n in range(8):
        message, _ = handshake.create_initiation(
            attacker, B.public_key.raw, n, rng.randbytes(32), handshake.tai64n(WALL + n), None
        )
        net.deliver(message, ("198.51.100.1", 4000 + n), ADDR["b"])
    assert nonzero(net["b"]) == {"unknown_peer": 5, "ratelimited": 3}


def test_handshake_messages_with_a_bad_mac1_are_malformed() -> None:
    net = Net()
    net.send("a", A_TO_B)
    ((initiation, src, dst),) = net.collect()
    net.inflight.clear()
    bad = bytearray(initiation)
    bad[wire.INITIATION_MAC1_OFFSET] ^= 1
    net.deliver(bytes(bad), src, dst)
    assert nonzero(net["b"]) == {"malformed": 1}
    net.deliver(initiation, src, dst)
    ((response, rsrc, rdst),) = net.collect()
    net.inflight.clear()
    bad = bytearray(response)
    bad[wire.RESPONSE_MAC1_OFFSET] ^= 1
    net.deliver(bytes(bad), rsrc, rdst)
    bad = bytearray(response)
    bad[wire.RESPONSE_EPHEMERAL_OFFSET] ^= 1
    bad[wire.RESPONSE_MAC1_OFFSET :] = bytes(32)
    net.deliver(bytes(bad), rsrc, rdst)  # mac1 wrong too
    assert nonzero(net["a"]) == {"malformed": 2}
    net.deliver(response, rsrc, rdst)
    net.pump()
    assert net.tun["b"] == [A_TO_B]


# -- rekey and expiry ------------------------------------------------------------------------


def b_session_of(net: Net, x: str, y: str) -> object:
    return net[x]._context.table.by_key[identity(y).public_key.raw].current


def test_initiator_rekeys_at_rekey_after_time_and_keeps_the_old_session() -> None:
    net = Net()
    net.connect()  # a initiated
    old = b_session_of(net, "a", "b")
    net.now += 119.9
    net.send("a", A_TO_B)
    net.send("b", B_TO_A)
    assert net.collect() == []  # no handshake before REKEY_AFTER_TIME
    net.now += 0.1
    datagram = net.send("a", A_TO_B)
    assert datagram is not None  # still sent on the old session
    added = net.collect()
    assert [kind(d) for d, _, _ in added] == [wire.TYPE_INITIATION]
    net.pump()
    new = b_session_of(net, "a", "b")
    assert new is not old
    assert net.events["a"][-1] == HandshakeCompleted("b", Role.INITIATOR)
    assert net.events["b"][-1] == HandshakeCompleted("a", Role.RESPONDER)
    assert len(net.tun["b"]) == 3 and not nonzero(net["b"])


def test_responder_rekeys_rekey_timeout_later() -> None:
    net = Net()
    net.connect()  # b responded
    net.now += 120.0 + 4.9
    net.send("b", B_TO_A)
    assert net.collect() == []
    net.now += 0.1
    assert net.send("b", B_TO_A) is not None
    assert [kind(d) for d, _, _ in net.collect()] == [wire.TYPE_INITIATION]
    net.pump()
    assert net.events["b"][-1] == HandshakeCompleted("a", Role.INITIATOR)
    assert len(net.tun["a"]) == 3 and not nonzero(net["a"])


def test_old_session_serves_until_the_new_one_is_confirmed() -> None:
    net = Net()
    net.connect()
    net.now += 121
    net.send("a", A_TO_B)
    net.pump()  # new session: current on a, confirmed on b by a's keepalive
    old_datagram = net.send("b", B_TO_A)  # b's current is the new one now
    assert old_datagram is not None
    net.pump()
    # Something sealed on the previous session still opens while it is younger than
    # REJECT_AFTER_TIME.
    assert net.tun["a"][-1] == B_TO_A and not nonzero(net["a"])


def test_no_session_is_used_past_reject_after_time() -> None:
    net = Net()
    net.connect()
    late = net.send("a", A_TO_B)
    net.inflight.clear()
    net.lose = lambda _d, _s, _t: True  # no rekey gets through
    net.now += 179.9
    assert net.send("a", A_TO_B) is not None
    net.now += 0.1
    assert net.send("a", A_TO_B) is None  # queued, not sealed on the expired session
    assert late is not None
    net.lose = lambda _d, _s, _t: False
    net.inflight.clear()
    assert net.deliver(late, ADDR["a"], ADDR["b"]) is None
    assert nonzero(net["b"]) == {"expired_session": 1}
    net["b"].handle_timer(net.now)
    assert SessionExpired("a") in [net["b"].next_event(), net["b"].next_event()]
    assert net.deliver(late, ADDR["a"], ADDR["b"]) is None
    assert net["b"].drops()["unknown_peer"] == 1  # erased
    assert peer_view(net["b"], "a", net.now).session_age is None


# -- roaming and the map --------------------------------------------------------------------


def test_roaming_follows_authenticated_packets_only() -> None:
    net = Net()
    net.connect()
    datagram = net.send("a", A_TO_B)
    assert datagram is not None
    net.inflight.clear()
    moved = ("203.0.113.7", 6000)
    # Unauthenticated: a replay and a forgery from elsewhere move nothing.
    net.deliver(datagram, ADDR["a"], ADDR["b"])
    net.deliver(datagram, moved, ADDR["b"])
    forged = datagram[:-1] + bytes([datagram[-1] ^ 1])
    net.deliver(forged, moved, ADDR["b"])
    assert peer_view(net["b"], "a").endpoint == "192.0.2.1:51820"
    # Authenticated from the new address: b follows it.
    net.addr["a"] = moved
    net.send("a", A_TO_B)
    net.pump()
    net.drain_events()
    assert peer_view(net["b"], "a").endpoint == "203.0.113.7:6000"
    assert net.events["b"][-1] == EndpointChanged("a", moved)
    reply = net["b"].inside(B_TO_A, net.now)
    assert reply is not None and reply[1] == moved


def test_new_advertised_endpoint_resets_a_learned_one() -> None:
    net = Net()
    net.connect()
    net.addr["a"] = ("203.0.113.7", 6000)
    net.send("a", A_TO_B)
    net.pump()
    moved = entry(A, endpoint=Endpoint.parse("192.0.2.11:7000"))
    net["b"].apply_map(RouteMap(2, (moved, entry(B), entry(C))), net.now)
    assert peer_view(net["b"], "a").endpoint == "192.0.2.11:7000"
    # The same advertised endpoint again keeps what was learned.
    net.addr["a"] = ("203.0.113.8", 6000)
    net.send("a", A_TO_B)
    net.pump()
    net["b"].apply_map(RouteMap(3, (moved, entry(B), entry(C))), net.now)
    assert peer_view(net["b"], "a").endpoint == "203.0.113.8:6000"


def test_removed_peer_loses_its_sessions_at_once() -> None:
    net = Net()
    net.connect()
    datagram = net.send("b", B_TO_A)
    net.inflight.clear()
    assert datagram is not None
    net["a"].apply_map(RouteMap(2, (entry(A), entry(C))), net.now)
    assert net["a"].map_version == 2
    assert [p.name for p in net["a"].peers(net.now)] == ["c"]
    assert net.deliver(datagram, ADDR["b"], ADDR["a"]) is None
    assert net["a"].inside(A_TO_B, net.now) is None
    assert nonzero(net["a"]) == {"unknown_peer": 1, "no_route": 1}
    assert state_size(net["a"]) == 0
    assert net["a"].get_timer() is None


def test_key_change_drops_sessions_and_handshakes_at_once() -> None:
    net = Net()
    net.connect()
    b2 = Identity.from_private_key(EdgeName("b"), identity("b2").private_key)
    new_map = RouteMap(2, (entry(A), entry(b2), entry(C)))
    old_datagram = net.send("b", B_TO_A)
    net.inflight.clear()
    del net.tunnels["b"]
    net.add(b2, ADDR["b"], new_map, seed=42)
    net["a"].apply_map(new_map, net.now)
    assert net.deliver(old_datagram or b"", ADDR["b"], ADDR["a"]) is None
    assert nonzero(net["a"]) == {"unknown_peer": 1}
    added = net.collect()
    assert [(kind(d), dst) for d, _, dst in added] == [(wire.TYPE_INITIATION, ADDR["b"])]
    net.pump()
    assert net.events["a"][-1] == HandshakeCompleted("b", Role.INITIATOR)
    assert net.send("a", A_TO_B) is not None
    net.pump()
    assert net.tun["b"][-1] == A_TO_B


def test_invalid_map_is_refused_and_the_old_one_kept() -> None:
    net = Net()
    net.connect()
    duplicate = RouteMap(5, (entry(A), entry(B), entry(C, routes=("10.2.0.0/16",))))
    with pytest.raises(MapError):
        net["a"].apply_map(duplicate, net.now)
    assert net["a"].map_version == 1
    assert net.send("a", ipv4("10.1.0.1", "10.2.200.1")) is not None


def test_edges_that_cannot_be_peers_are_left_out() -> None:
    twin = EdgeEntry(
        EdgeName("twin"), A.public_key, (ENDPOINTS["b"],), (parse_route("10.8.0.0/16"),)
    )
    low_order = object.__new__(PublicKey)
    object.__setattr__(low_order, "raw", bytes(31) + b"\x80")
    bad = EdgeEntry(EdgeName("bad"), low_order, (ENDPOINTS["c"],), (parse_route("10.7.0.0/16"),))
    tunnel = Tunnel(A, random=random.Random(1).randbytes, wall_clock=lambda: WALL)
    tunnel.apply_map(RouteMap(1, (twin, bad, entry(B))), START)  # twin: our key
    assert [p.name for p in tunnel.peers(START)] == ["b"]
    assert tunnel.inside(ipv4("10.1.0.1", "10.8.0.1"), START) is None
    assert tunnel.inside(ipv4("10.1.0.1", "10.7.0.1"), START) is None
    assert nonzero(tunnel) == {"no_route": 2}


def test_identity() -> None:
    assert A.private_key.hex() not in repr(A)
    with pytest.raises(ValueError):
        Identity(EdgeName("a"), A.private_key, B.public_key)
    with pytest.raises(ValueError):
        Identity.from_private_key(EdgeName("a"), bytes(31))


# -- nonces and hostile input -------------------------------------------------------------------


def test_no_key_and_counter_is_ever_sealed_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    sealed: list[tuple[bytes, int]] = []
    real = crypto.seal

    def recording(key: bytes, counter: int, plaintext: bytes | bytearray | memoryview) -> bytes:
        sealed.append((key, counter))
        return real(key, counter, plaintext)

    real_in_place = crypto.seal_in_place

    def recording_in_place(key: bytes, counter: int, buf: bytearray, at: int, size: int) -> None:
        sealed.append((key, counter))
        real_in_place(key, counter, buf, at, size)

    monkeypatch.setattr(crypto, "seal", recording)
    monkeypatch.setattr(crypto, "seal_in_place", recording_in_place)
    net = Net(seed=3)
    net.reorder = True
    for round_ in range(4):
        for i in range(60):
            net.send("a", ipv4("10.1.0.1", "10.2.0.1", bytes([i])))
            net.send("b", ipv4("10.2.0.1", "10.1.0.1", bytes([i])))
            net.send("c", ipv4("10.3.0.1", "10.1.0.1", bytes([i])))
        net.pump()
        net.run(70.0)  # rekeys on the way
        if round_ == 1:  # a restarts: same identity, fresh state
            del net.tunnels["a"]
            net.add(A, ADDR["a"], MAP, seed=1000)
    assert len(sealed) > 700
    assert len(set(sealed)) == len(sealed)
    # Delivered: everything but what b and c sealed for the old a right after its restart
    # (unknown_peer there, until a's new handshakes replace those sessions).
    assert nonzero(net["a"]) == {"unknown_peer": 120}
    assert sum(len(v) for v in net.tun.values()) == 4 * 180 - 120 - 240  # a's tun restarted


HOSTILE_STATE: Net | None = None


def hostile_net() -> Net:
    global HOSTILE_STATE
    if HOSTILE_STATE is None:
        HOSTILE_STATE = Net()
        HOSTILE_STATE.connect()
    return HOSTILE_STATE


def prefixed(data: bytes) -> Iterator[bytes]:
    for type_ in (1, 2, 3, 4):
        yield bytes([type_, 0, 0, 0]) + data


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_outside_never_raises_and_creates_no_state(data: bytes) -> None:
    net = hostile_net()
    tunnel = net["b"]
    size = state_size(tunnel)
    for datagram in (data, *prefixed(data)):
        assert tunnel.outside(datagram, ADDR["a"], net.now) is None
    assert tunnel.datagrams_to_send() == []
    assert tunnel.next_event() is None
    assert state_size(tunnel) == size
    assert peer_view(tunnel, "a").endpoint == "192.0.2.1:51820"


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([148, 92, 64]), st.binary(min_size=148, max_size=148))
def test_outside_never_raises_on_well_sized_handshake_messages(size: int, data: bytes) -> None:
    net = hostile_net()
    type_ = {148: 1, 92: 2, 64: 3}[size]
    datagram = bytes([type_, 0, 0, 0]) + data[: size - 4]
    size_before = state_size(net["b"])
    assert net["b"].outside(datagram, ("198.51.100.9", 1), net.now) is None
    assert net["b"].datagrams_to_send() == []
    assert state_size(net["b"]) == size_before


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_inside_never_raises(data: bytes) -> None:
    net = hostile_net()
    result = net["a"].inside(data, net.now)
    assert result is None or len(result[0]) == len(data) + wire.OVERHEAD
    net["a"].datagrams_to_send()


def test_a_restarted_edge_that_greets_moves_its_peers_to_new_sessions_at_once() -> None:
    net = Net()
    net.connect("a", "b")
    net.run(1.0)  # a restart takes time: its handshake timestamps are newer
    del net.tunnels["a"]
    net.add(A, ADDR["a"], MAP, seed=77, greet=True)  # a restarts, as edge.__main__ does
    sent = net["a"].datagrams_to_send()
    assert sorted(kind(d) for d, _ in sent) == [wire.TYPE_INITIATION] * 2  # to b and to c
    net.inflight.extend((d, ADDR["a"], dst) for d, dst in sent)
    net.pump()
    net.tun["a"].clear()
    net.send("b", B_TO_A)
    net.pump()
    assert net.tun["a"] == [B_TO_A]
    assert nonzero(net["a"]) == {}


def test_data_left_unanswered_starts_a_new_handshake() -> None:
    net = Net()
    net.connect("a", "b")
    net.run(1.0)
    del net.tunnels["b"]
    net.add(B, ADDR["b"], MAP, seed=78)  # b restarts without greeting: a does not know
    net.tun["b"].clear()
    net.send("a", A_TO_B)
    net.pump()
    assert net.tun["b"] == [] and nonzero(net["b"]) == {"unknown_peer": 1}
    timers = net.timers
    net.run(timers.keepalive_timeout + timers.rekey_timeout + 1.0)
    net.send("a", A_TO_B)
    net.pump()
    assert net.tun["b"] == [A_TO_B]
