"""The edge's /metrics over real HTTP, read from a real tunnel core that carried packets.

FakeTun A -> Dataplane A -> FakeDatagramSocket A ~~(test copies)~~> FakeDatagramSocket B
          -> Dataplane B -> FakeTun B          (both with the real tunnel core)
EdgeMetrics(B) -> MetricsServer 127.0.0.1:0 <-- GET /metrics (urllib, another thread)
"""

from __future__ import annotations

import asyncio
import http.client
import ipaddress
import random
import struct
import urllib.request

import nacl.bindings
from prometheus_client.parser import text_string_to_metric_families

from edge.control import ControllerView
from edge.dataplane import Dataplane
from edge.metrics import EdgeMetrics
from edge.testing import FakeDatagramSocket, FakeRouteTable, FakeTun
from edge.tunnel import Identity, Tunnel
from isthmus.endpoint import Endpoint
from isthmus.ids import EdgeName
from isthmus.keys import PublicKey
from isthmus.lease import sign_lease
from isthmus.metricsserver import MetricsServer
from isthmus.routemap import EdgeEntry, RouteMap, parse_route
from isthmus.signing import ControllerKey

CONTROLLER = ControllerKey.from_seed(bytes(range(32)))
NOW = 1_800_000_000


def keys(seed: int) -> tuple[bytes, bytes]:
    return nacl.bindings.crypto_box_seed_keypair(bytes([seed]) * 32)  # type: ignore[no-any-return]


def entry(name: str, seed: int, route: str) -> EdgeEntry:
    public = PublicKey(keys(seed)[0])
    n = parse_route(route)
    return EdgeEntry(
        EdgeName(name),
        public,
        (Endpoint.parse(f"198.18.0.{seed}:51820"),),
        (n,),
        (sign_lease(CONTROLLER, public, n, 3, NOW + 3600),),
    )


MAP = RouteMap(
    3, (entry("vpc-a", 1, "10.244.0.0/16"), entry("vpc-b", 2, "10.245.0.0/16"))
).validate()


def tunnel(name: str, seed: int) -> Tunnel:
    t = Tunnel(
        Identity.from_private_key(EdgeName(name), keys(seed)[1]),
        random=random.Random(seed).randbytes,
        wall_clock=lambda: float(NOW),
    )
    t.apply_map(MAP, 0.0)
    return t


def ipv4(src: str, dst: str, payload: bytes) -> bytes:
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


def pump(pairs: list[tuple[Dataplane, FakeDatagramSocket, str]]) -> None:
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


def scrape(address: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def request(address: str, method: str, path: str) -> tuple[int, bytes]:
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path)
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


E = "isthmus_edge_"


def test_edge_metrics_over_http_after_packets_crossed() -> None:
    ta, tb = tunnel("vpc-a", 1), tunnel("vpc-b", 2)
    tun_a, udp_a, tun_b, udp_b = FakeTun(), FakeDatagramSocket(), FakeTun(), FakeDatagramSocket()
    dp_a = Dataplane(ta, tun_a, udp_a, lambda: 10.0)
    dp_b = Dataplane(tb, tun_b, udp_b, lambda: 10.0)
    edges = [(dp_a, udp_a, "198.18.0.1:51820"), (dp_b, udp_b, "198.18.0.2:51820")]
    packets = [ipv4("10.244.0.5", "10.245.0.7", bytes([i]) * 10) for i in range(20)]
    tun_a.inbound.extend(packets)
    dp_a.on_tun_readable()
    pump(edges)
    assert tun_b.written == packets
    udp_b.inbound.append((b"\x01garbage", ("203.0.113.9", 9)))
    dp_b.on_udp_readable()
    [peer] = tb.peers(10.0)

    metrics = EdgeMetrics(
        tunnel=tb,
        route_map=lambda: MAP,
        controller=lambda: ControllerView(("c:7000",), "c:7000", True, None, 3),
        routes=FakeRouteTable({parse_route("10.244.0.0/16")}),
        clock=lambda: 10.0,
        wall_clock=lambda: float(NOW) + 10.0,
    )

    async def body() -> None:
        server = MetricsServer(
            Endpoint.parse("127.0.0.1:0", allow_port_zero=True), metrics.registry
        )
        await server.start()
        try:
            samples = await asyncio.to_thread(scrape, server.address)
            who = (("peer", "vpc-a"),)
            assert samples[(E + "peer_rx_packets_total", who)] == peer.rx_packets == 20
            assert samples[(E + "peer_rx_bytes_total", who)] == peer.rx_bytes > 0
            assert samples[(E + "peer_tx_packets_total", who)] == peer.tx_packets
            assert samples[(E + "peer_tx_bytes_total", who)] == peer.tx_bytes
            assert samples[(E + "peer_handshakes_total", who)] == 1
            assert samples[(E + "peer_last_authenticated_timestamp_seconds", who)] == NOW + 10.0
            assert samples[(E + "drops_total", (("reason", "malformed"),))] == 1
            assert samples[(E + "routes_installed", ())] == 1
            assert samples[(E + "routes_wanted", ())] == 1
            assert samples[(E + "map_version", ())] == 3
            assert samples[(E + "controller_connected", ())] == 1

            more = [ipv4("10.244.0.5", "10.245.0.7", b"x" * 50)] * 5
            tun_a.inbound.extend(more)
            dp_a.on_tun_readable()
            pump(edges)
            again = await asyncio.to_thread(scrape, server.address)
            assert again[(E + "peer_rx_packets_total", who)] == 25, "read at scrape time"

            status, body = await asyncio.to_thread(request, server.address, "HEAD", "/metrics")
            assert (status, body) == (200, b"")
            status, _ = await asyncio.to_thread(request, server.address, "POST", "/metrics")
            assert status == 405
            status, _ = await asyncio.to_thread(request, server.address, "GET", "/nope")
            assert status == 404
        finally:
            await server.close()

    asyncio.run(asyncio.wait_for(body(), 60))
