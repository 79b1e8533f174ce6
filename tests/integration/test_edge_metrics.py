"""The edge's /metrics over real HTTP, read from a real tunnel core that carried packets.

FakeTun A -> Dataplane A -> FakeDatagramSocket A ~~(test copies)~~> FakeDatagramSocket B
          -> Dataplane B -> FakeTun B          (both with the real tunnel core)
EdgeMetrics(B) -> MetricsServer 127.0.0.1:0 <-- GET /metrics (urllib, another thread)
"""

from __future__ import annotations

import asyncio
import http.client

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edge.applier import MapApplier
from edge.control import ControllerView
from edge.dataplane import Dataplane
from edge.metrics import EdgeMetrics
from edge.testing import (
    FakeDatagramSocket,
    FakeForwarding,
    FakeRouteTable,
    FakeTun,
    MemoryMapStore,
)
from isthmus.endpoint import Endpoint
from isthmus.ids import EdgeName
from isthmus.routemap import parse_route
from isthmus_io.metricsserver import MetricsServer
from tests.integration.test_edge_shell import MAP, NOW, ipv4, pump, tunnel
from tests.integration.test_observability import scrape


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


def test_route_collisions_are_counted() -> None:
    routes = FakeRouteTable()
    routes.foreign = {parse_route("10.244.0.0/16"): "10.244.0.0/16 dev lan0 proto kernel"}
    tb = tunnel("vpc-b", 2)
    applier = MapApplier(EdgeName("vpc-b"), tb, routes, MemoryMapStore(), FakeForwarding())
    assert applier.apply(MAP)
    applier.retry_collisions()  # still colliding: counted once
    metrics = EdgeMetrics(
        tunnel=tb,
        route_map=lambda: applier.route_map,
        controller=lambda: ControllerView(("c:7000",), "c:7000", True, None, 3),
        routes=routes,
        collisions=applier,
    )
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
        for s in family.samples
    }
    assert samples[(E + "routes_wanted", ())] == 1
    assert samples[(E + "routes_installed", ())] == 0
    assert samples[(E + "routes_colliding", ())] == 1
    assert samples[(E + "route_collisions_total", ())] == 1
