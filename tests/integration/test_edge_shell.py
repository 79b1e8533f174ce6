"""The edge shell with fakes: the data path, the status JSON over a real unix socket,
the map cache and the reconnect backoff.

    FakeTun A -> Dataplane A -> FakeDatagramSocket A ~~(test copies)~~> FakeDatagramSocket B
              -> Dataplane B -> FakeTun B          (both with the real tunnel core)
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import random
import stat
import struct
from pathlib import Path
from typing import Any

import pytest
from nacl.bindings import crypto_box_seed_keypair

from edge.admin import AdminError, AdminServer, EdgeStatus
from edge.applier import MapApplier
from edge.control import ControllerView
from edge.dataplane import Dataplane
from edge.dialer import Backoff
from edge.leases import drop_expired
from edge.mapcache import MapCache
from edge.status import fetch, problems, render
from edge.testing import (
    FakeDatagramSocket,
    FakeForwarding,
    FakeRouteTable,
    FakeTun,
    MemoryMapStore,
)
from edge.tunnel import Identity, Tunnel
from isthmus.convert import map_to_pb
from isthmus.endpoint import Endpoint
from isthmus.ids import EdgeName
from isthmus.keys import PublicKey
from isthmus.lease import sign_lease
from isthmus.mapsig import SignedMap, new_epoch, sign_map
from isthmus.routemap import EdgeEntry, RouteMap, parse_route
from isthmus.signing import ControllerKey

CONTROLLER = ControllerKey.from_seed(bytes(range(32)))
NOW = 1_800_000_000
EPOCH = new_epoch(NOW - 60, lambda n: b"\x03" * n)


def keys(seed: int) -> tuple[bytes, bytes]:
    return crypto_box_seed_keypair(bytes([seed]) * 32)


def entry(name: str, seed: int, *routes: str, expires: int = NOW + 3600) -> EdgeEntry:
    public = PublicKey(keys(seed)[0])
    nets = tuple(parse_route(r) for r in routes)
    return EdgeEntry(
        EdgeName(name),
        public,
        (Endpoint.parse(f"198.18.0.{seed}:51820"),),
        nets,
        tuple(sign_lease(CONTROLLER, public, n, 3, expires) for n in nets),
    )


MAP = RouteMap(
    3, (entry("vpc-a", 1, "10.244.0.0/16"), entry("vpc-b", 2, "10.245.0.0/16"))
).validate()


def tunnel(name: str, seed: int) -> Tunnel:
    rng = random.Random(seed)
    t = Tunnel(
        Identity.from_private_key(EdgeName(name), keys(seed)[1]),
        random=rng.randbytes,
        wall_clock=lambda: 1_800_000_000.0,
    )
    t.apply_map(MAP, 0.0)
    return t


def pump(pairs: list[tuple[Dataplane, FakeDatagramSocket, str]]) -> None:
    """Carry every sent datagram to the socket of the edge it is addressed to, until quiet."""
    by_addr = {addr: (dp, udp) for dp, udp, addr in pairs}
    moved = True
    while moved:
        moved = False
        for _, udp, src in pairs:
            while udp.sent:
                datagram, (host, port) = udp.sent.pop(0)
                dp, peer_udp = by_addr[f"{host}:{port}"]
                peer_udp.inbound.append((datagram, (src.rsplit(":", 1)[0], 51820)))
                dp.on_udp_readable()
                moved = True


def ipv4(src: str, dst: str, payload: bytes = b"hello") -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(payload),
        1,
        0,
        64,
        17,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    words = struct.unpack("!10H", header)
    total = sum(words)
    total = (total & 0xFFFF) + (total >> 16)
    checksum = ~((total & 0xFFFF) + (total >> 16)) & 0xFFFF
    return header[:10] + struct.pack("!H", checksum) + header[12:] + payload


def test_a_packet_crosses_from_tun_a_to_tun_b() -> None:
    ta, tb = tunnel("vpc-a", 1), tunnel("vpc-b", 2)
    tun_a, udp_a, tun_b, udp_b = FakeTun(), FakeDatagramSocket(), FakeTun(), FakeDatagramSocket()
    dp_a, dp_b = (
        Dataplane(ta, tun_a, udp_a, lambda: 10.0),
        Dataplane(tb, tun_b, udp_b, lambda: 10.0),
    )
    edges = [(dp_a, udp_a, "198.18.0.1:51820"), (dp_b, udp_b, "198.18.0.2:51820")]
    first = ipv4("10.244.0.5", "10.245.0.7", b"first")
    tun_a.inbound.append(first)
    dp_a.on_tun_readable()  # no session yet: queued, and the handshake initiation goes out
    assert [(len(d), addr) for d, addr in udp_a.sent] == [(148, ("198.18.0.2", 51820))]
    pump(edges)  # initiation -> response -> queued packet
    assert tun_b.written == [first]

    packets = [ipv4("10.244.0.5", "10.245.0.7", bytes([i]) * 10) for i in range(100)]
    tun_a.inbound.extend(packets)
    tun_a.inbound.append(b"not an ip packet")
    dp_a.on_tun_readable()  # one wakeup drains at most 64
    assert len(udp_a.sent) == 64
    dp_a.on_tun_readable()
    assert len(udp_a.sent) == 100 and not tun_a.inbound
    assert {addr for _, addr in udp_a.sent} == {("198.18.0.2", 51820)}
    assert ta.drops()["not_ip"] == 1

    udp_b.inbound.extend((d, ("198.18.0.1", 51820)) for d, _ in udp_a.sent)
    udp_a.sent.clear()
    udp_b.inbound.append((b"\x01garbage", ("203.0.113.9", 9)))
    dp_b.on_udp_readable()
    dp_b.on_udp_readable()
    assert tun_b.written == [first, *packets]
    assert tb.drops()["malformed"] == 1
    [peer] = tb.peers(10.0)
    assert (peer.name, peer.rx_packets, peer.last_rx, peer.handshakes) == ("vpc-a", 101, 10.0, 1)


def test_timer_retries_an_unanswered_handshake() -> None:
    clock = [0.0]
    ta = tunnel("vpc-a", 1)
    tun_a, udp_a = FakeTun(), FakeDatagramSocket()
    dp_a = Dataplane(ta, tun_a, udp_a, lambda: clock[0])
    tun_a.inbound.append(ipv4("10.244.0.5", "10.245.0.7"))
    dp_a.on_tun_readable()
    assert len(udp_a.sent) == 1
    deadline = ta.get_timer()
    assert deadline is not None and 5.0 <= deadline <= 5.4
    clock[0] = deadline
    dp_a.on_timer()
    assert [len(d) for d, _ in udp_a.sent] == [148, 148]
    assert udp_a.sent[0][0][4:8] != udp_a.sent[1][0][4:8], "a retry takes a new index"


def test_send_failures_and_tun_write_failures_are_counted_not_raised() -> None:
    ta, tb = tunnel("vpc-a", 1), tunnel("vpc-b", 2)
    tun_a, udp_a, tun_b, udp_b = FakeTun(), FakeDatagramSocket(), FakeTun(), FakeDatagramSocket()
    dp_a, dp_b = Dataplane(ta, tun_a, udp_a), Dataplane(tb, tun_b, udp_b)
    udp_a.refuse_sends = True
    tun_a.inbound.append(ipv4("10.244.0.5", "10.245.0.7"))
    dp_a.on_tun_readable()  # the initiation cannot be sent
    assert ta.drops()["send_failed"] == 1

    udp_a.refuse_sends = False
    edges = [(dp_a, udp_a, "198.18.0.1:51820"), (dp_b, udp_b, "198.18.0.2:51820")]
    tun_b.refuse_writes = True
    retry = ta.get_timer()
    assert retry is not None
    ta.handle_timer(retry)  # the retry goes out; the queued packet follows the handshake
    dp_a.after_input()
    pump(edges)
    assert dp_b.stats.tun_write_errors == 1


def edge_status(routes: FakeRouteTable) -> EdgeStatus:
    return EdgeStatus(
        endpoint=Endpoint.parse("198.18.0.1:51820"),
        tunnel=tunnel("vpc-a", 1),
        route_map=lambda: MAP,
        controller=lambda: ControllerView(
            ("198.18.0.100:7000", "198.18.0.101:7000"),
            "198.18.0.101:7000",
            False,
            "UNAVAILABLE: down",
            3,
        ),
        routes=routes,
        clock=lambda: 100.0,
        datapath=lambda: {"tun_reads": 7, "gso_sends": 2},
    )


def test_status_json_has_the_documented_shape() -> None:
    status = edge_status(FakeRouteTable({parse_route("10.245.0.0/16")})).build()
    assert list(status) == [
        "edge",
        "public_key",
        "endpoint",
        "map_version",
        "controller",
        "peers",
        "routes",
        "drops",
        "datapath",
    ]
    assert status["datapath"] == {"tun_reads": 7, "gso_sends": 2}
    assert status["edge"] == "vpc-a"
    assert status["public_key"] == PublicKey(keys(1)[0]).to_base64()
    assert status["map_version"] == 3
    assert status["controller"] == {
        "controllers": ["198.18.0.100:7000", "198.18.0.101:7000"],
        "address": "198.18.0.101:7000",
        "connected": False,
        "applied_version": 3,
        "last_error": "UNAVAILABLE: down",
    }
    assert status["peers"] == [
        {
            "name": "vpc-b",
            "endpoint": "198.18.0.2:51820",
            "behind_nat": False,  # the map lists an endpoint for vpc-b
            "rx_packets": 0,
            "rx_bytes": 0,
            "tx_packets": 0,
            "tx_bytes": 0,
            "last_rx_seconds_ago": None,
            "session_age_seconds": None,
            "handshakes": 0,
            "last_handshake_seconds_ago": None,
        }
    ]
    assert status["routes"] == [
        {"route": "10.245.0.0/16", "edge": "vpc-b", "installed": True, "reason": None}
    ]
    assert set(status["drops"]) == {
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
    }
    text = render(status)
    assert "controller: 198.18.0.101:7000 (disconnected)" in text
    assert "other controllers: 198.18.0.100:7000" in text
    assert "applied version: 3" in text
    assert "last error: UNAVAILABLE: down" in text
    assert "last authenticated packet: never" in text
    assert "10.245.0.0/16  via vpc-b  installed" in text


def test_admin_socket_serves_status_and_cleans_up(tmp_path: Path) -> None:
    path = tmp_path / "admin.sock"
    routes = FakeRouteTable()

    async def scenario() -> dict[str, Any]:
        server = AdminServer(path, edge_status(routes).build)
        await server.start()
        try:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            with pytest.raises(AdminError, match="another edge is running"):
                await AdminServer(path, dict).start()
            reply = await asyncio.to_thread(fetch, path)
        finally:
            await server.close()
        assert not path.exists()
        return reply

    reply = asyncio.run(scenario())
    assert reply["routes"] == [
        {"route": "10.245.0.0/16", "edge": "vpc-b", "installed": False, "reason": None}
    ]
    json.dumps(reply)


def test_status_shows_why_a_colliding_route_is_not_installed() -> None:
    lan = "10.245.0.0/16 dev lan0 proto kernel"
    routes = FakeRouteTable()
    routes.foreign = {parse_route("10.245.0.0/16"): lan}
    applier = MapApplier(
        EdgeName("vpc-a"), tunnel("vpc-a", 1), routes, MemoryMapStore(), FakeForwarding()
    )
    assert applier.apply(MAP)
    status = EdgeStatus(
        endpoint=Endpoint.parse("198.18.0.1:51820"),
        tunnel=tunnel("vpc-a", 1),
        route_map=lambda: applier.route_map,
        controller=lambda: ControllerView(
            ("198.18.0.100:7000",), "198.18.0.100:7000", True, None, 3
        ),
        routes=routes,
        collisions=lambda: applier.collisions,
    ).build()
    reason = f"collides with an existing route {lan}"
    assert status["routes"] == [
        {"route": "10.245.0.0/16", "edge": "vpc-b", "installed": False, "reason": reason}
    ]
    assert problems(status) == [
        f"route 10.245.0.0/16 via vpc-b is not installed on the TUN: it {reason}"
    ]
    assert f"10.245.0.0/16  via vpc-b  NOT installed ({reason})" in render(status)


def test_a_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    import socket

    path = tmp_path / "admin.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens

    async def scenario() -> None:
        server = AdminServer(path, lambda: {"edge": "vpc-a"})
        await server.start()
        assert await asyncio.to_thread(fetch, path) == {"edge": "vpc-a"}
        await server.close()

    asyncio.run(scenario())


def test_map_cache_round_trip_and_bad_files(tmp_path: Path) -> None:
    clock = [float(NOW)]
    cache = MapCache(tmp_path, CONTROLLER.public, clock=lambda: clock[0])
    assert cache.load() is None
    signed = sign_map(CONTROLLER, EPOCH, MAP)
    cache.save(signed)
    assert cache.load() == signed
    assert stat.S_IMODE(cache.path.stat().st_mode) == 0o600
    # The file is a whole MapUpdate with every lease, the epoch and the map signature.
    assert cache.path.read_bytes() == map_to_pb(
        MAP, epoch=EPOCH, signature=signed.signature
    ).SerializeToString(deterministic=True)
    cache.path.write_bytes(b"\xff\xff\xff garbage")
    assert cache.load() is None
    cache.path.write_bytes(b"\x08\x01\x10\x01\x22\x04\x0a\x02UP")  # a bad edge name
    assert cache.load() is None
    delta = map_to_pb(MAP)
    delta.full = False
    cache.path.write_bytes(delta.SerializeToString())  # a delta is not a map
    assert cache.load() is None


def test_map_cache_verifies_leases_and_drops_expired_routes(tmp_path: Path) -> None:
    clock = [float(NOW)]
    cache = MapCache(tmp_path, CONTROLLER.public, clock=lambda: clock[0])
    short = RouteMap(
        4,
        (
            entry("vpc-a", 1, "10.244.0.0/16"),
            entry("vpc-b", 2, "10.245.0.0/16", expires=NOW + 10),
        ),
    ).validate()
    cache.save(sign_map(CONTROLLER, EPOCH, short))
    clock[0] = NOW + 11
    cached = cache.load()
    assert cached is not None and cached.route_map == short  # whole, as signed
    loaded, _ = drop_expired(cached.route_map, clock[0])
    assert loaded.version == 4
    assert [(e.name, [str(r) for r in e.routes]) for e in loaded.edges] == [
        ("vpc-a", ["10.244.0.0/16"]),
        ("vpc-b", []),
    ]
    # One flipped signature byte anywhere: the whole cache is ignored.
    good = cache.path.read_bytes()
    sig = MAP.edges[1].leases[0].signature
    for i in (0, 31, 63):
        tampered = bytearray(sig)
        tampered[i] ^= 0x80
        cache.save(sign_map(CONTROLLER, EPOCH, MAP))
        data = cache.path.read_bytes()
        assert data.count(sig) == 1
        cache.path.write_bytes(data.replace(sig, bytes(tampered)))
        assert cache.load() is None
    # A cache written for another controller key is ignored too.
    cache.path.write_bytes(good)
    other = MapCache(tmp_path, ControllerKey.from_seed(bytes(32)).public, clock=lambda: NOW)
    assert other.load() is None


def test_backoff_grows_with_jitter_up_to_the_maximum() -> None:
    backoff = Backoff(rng=random.Random(7))
    delays = [backoff.delay() for _ in range(15)]
    bases = [min(0.5 * 1.6**i, 15.0) for i in range(15)]
    for d, base in zip(delays, bases, strict=True):
        assert 0.8 * base <= d <= 1.2 * base
    assert max(delays) <= 18.0
    backoff.reset()
    assert 0.4 <= backoff.delay() <= 0.6


def test_map_cache_verifies_the_map_signature_and_loads_an_unsigned_cache_on_leases(
    tmp_path: Path,
) -> None:
    cache = MapCache(tmp_path, CONTROLLER.public, clock=lambda: NOW)
    signed = sign_map(CONTROLLER, EPOCH, MAP)
    cache.save(signed)
    data = cache.path.read_bytes()
    for i in (0, 40, 63):  # one bit of the map signature
        sig = bytearray(signed.signature)
        sig[i] ^= 0x01
        cache.path.write_bytes(data.replace(signed.signature, bytes(sig)))
        assert cache.load() is None
    later = new_epoch(NOW, lambda n: b"\x04" * n)  # signed for another epoch
    cache.path.write_bytes(data.replace(EPOCH, later))
    assert cache.load() is None
    # A cache of the previous release (no epoch, no signature) loads on its leases alone.
    cache.path.write_bytes(map_to_pb(MAP).SerializeToString(deterministic=True))
    assert cache.load() == SignedMap(MAP)
