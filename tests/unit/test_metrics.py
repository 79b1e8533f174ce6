"""Metric names and labels: every counter ends in _total, labels only from the allowed set,
values read from the live parts at scrape time (controller over a fake source, edge over a
real tunnel core)."""

from __future__ import annotations

import asyncio
import ipaddress
import random

import nacl.bindings
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from controller import metrics as controller_metrics
from controller.admin import EdgeView
from controller.admission import Decision, Reason, RouteState
from controller.change import CHANGE_KINDS, Change
from controller.metrics import ControllerMetrics
from edge import metrics as edge_metrics
from edge.control import ControllerView
from edge.droplog import DropLog
from edge.metrics import EdgeMetrics
from edge.testing import FakeRouteTable
from edge.tunnel import DropReason, Identity, Tunnel
from isthmus.endpoint import Endpoint
from isthmus.ids import EdgeName
from isthmus.keys import PublicKey
from isthmus.lease import sign_lease
from isthmus.routemap import EdgeEntry, RouteMap, parse_route
from isthmus.signing import ControllerKey

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(registry: object) -> tuple[dict[str, str], Samples]:
    """(family name -> type, (sample name, sorted labels) -> value) of one exposition."""
    text = generate_latest(registry).decode()  # type: ignore[arg-type]
    types: dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return types, samples


def check_names(
    types: dict[str, str], samples: Samples, prefix: str, allowed: frozenset[str]
) -> None:
    assert types, "no metrics at all"
    for name in types:
        assert name.startswith(prefix), name
    for (name, labels), _ in samples.items():
        family = next(f for f in types if name == f or name == f + "_total")
        if types[family] == "counter":
            assert name.endswith("_total"), f"counter sample {name} does not end in _total"
        else:
            assert not name.endswith("_total"), f"{types[family]} {name} ends in _total"
        assert {k for k, _ in labels} <= allowed, (name, labels)


def key(seed: int) -> PublicKey:
    return PublicKey(nacl.bindings.crypto_box_seed_keypair(bytes([seed]) * 32)[0])


def net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


class FakeController:
    """A ControllerSource: fixed decisions and edges (this tests the collector alone)."""

    version = 9
    watch_streams = 2

    def route_statuses(self) -> tuple[Decision, ...]:
        def d(edge: str, route: str, state: RouteState, reason: Reason, ok: bool) -> Decision:
            return Decision(EdgeName(edge), net(route), state, reason, "", 1, ok)

        return (
            d("a", "10.0.0.0/8", RouteState.SERVING, Reason.NONE, False),
            d("b", "10.1.0.0/16", RouteState.PENDING, Reason.MORE_SPECIFIC, False),
            d("c", "10.1.0.0/16", RouteState.REFUSED, Reason.EXACT, False),
            d("d", "10.2.0.0/16", RouteState.SERVING, Reason.MORE_SPECIFIC, True),
        )

    async def edge_statuses(self) -> tuple[EdgeView, ...]:
        def view(name: str, state: str, applied: int) -> EdgeView:
            return EdgeView(EdgeName(name), key(1), (), state, "", applied, "", 0.0)

        return (view("a", "connected", 9), view("b", "connected", 8), view("c", "never", 0))


def test_controller_metric_names_labels_and_values() -> None:
    m = ControllerMetrics()
    types, samples = scrape(m.registry)
    assert types == {}, "nothing before bind"
    up = [True]
    m.bind(FakeController(), lambda: up[0])
    m.count_changes([Change("edge_joined", EdgeName("a"), None, "")] * 2)
    m.count_changes([Change("route_pending", EdgeName("b"), net("10.1.0.0/16"), "")])
    m.count_store_conflict()
    m.count_audit_failure(3)
    m.count_refused_call("UNAUTHENTICATED")
    m.count_state_refused("since_lowered")
    asyncio.run(m.refresh())
    types, samples = scrape(m.registry)
    check_names(types, samples, "isthmus_controller_", controller_metrics.LABELS)
    assert types["isthmus_controller_map_changes"] == "counter"
    p = "isthmus_controller_"
    assert samples[(p + "map_version", ())] == 9
    assert samples[(p + "store_up", ())] == 1
    assert samples[(p + "watch_streams", ())] == 2
    assert samples[(p + "edges", (("state", "connected"),))] == 2
    assert samples[(p + "edges", (("state", "disconnected"),))] == 0
    assert samples[(p + "edges", (("state", "never"),))] == 1
    assert samples[(p + "edge_applied_version", (("edge", "b"),))] == 8
    assert samples[(p + "routes", (("state", "serving"),))] == 2
    assert samples[(p + "routes", (("state", "pending"),))] == 1
    assert samples[(p + "route_conflicts", (("reason", "more_specific"),))] == 1
    assert samples[(p + "route_conflicts", (("reason", "exact"),))] == 1
    assert samples[(p + "route_conflicts", (("reason", "less_specific"),))] == 0
    assert samples[(p + "map_changes_total", (("kind", "edge_joined"),))] == 2
    assert samples[(p + "map_changes_total", (("kind", "route_pending"),))] == 1
    assert {k for (n, k) in samples if n == p + "map_changes_total"} == {
        (("kind", kind),) for kind in CHANGE_KINDS
    }
    assert samples[(p + "store_conflicts_total", ())] == 1
    assert samples[(p + "audit_failures_total", ())] == 3
    assert samples[(p + "calls_refused_total", (("code", "UNAUTHENTICATED"),))] == 1
    assert samples[(p + "states_refused_total", (("reason", "since_lowered"),))] == 1
    up[0] = False
    assert scrape(m.registry)[1][(p + "store_up", ())] == 0


CONTROLLER = ControllerKey.from_seed(bytes(range(32)))


def entry(name: str, seed: int, route: str) -> EdgeEntry:
    public = key(seed)
    n = parse_route(route)
    return EdgeEntry(
        EdgeName(name),
        public,
        (Endpoint.parse(f"198.18.0.{seed}:51820"),),
        (n,),
        (sign_lease(CONTROLLER, public, n, 4, 2_000_000_000),),
    )


MAP = RouteMap(
    4,
    (
        entry("vpc-a", 1, "10.244.0.0/16"),
        entry("vpc-b", 2, "10.245.0.0/16"),
        entry("vpc-c", 3, "10.246.0.0/16"),
    ),
).validate()


def test_edge_metric_names_labels_and_values() -> None:
    private = nacl.bindings.crypto_box_seed_keypair(bytes([1]) * 32)[1]
    tunnel = Tunnel(
        Identity.from_private_key(EdgeName("vpc-a"), private),
        random=random.Random(1).randbytes,
        wall_clock=lambda: 1_800_000_000.0,
    )
    tunnel.apply_map(MAP, 0.0)
    tunnel.outside(b"\x01garbage", ("203.0.113.9", 9), 1.0)  # a malformed datagram
    tunnel.count_drop(DropReason.SEND_FAILED)
    routes = FakeRouteTable({parse_route("10.245.0.0/16")})
    connected = [True]
    m = EdgeMetrics(
        tunnel=tunnel,
        route_map=lambda: MAP,
        controller=lambda: ControllerView(("c:1",), "c:1", connected[0], None, 4),
        routes=routes,
        clock=lambda: 10.0,
        wall_clock=lambda: 1_800_000_010.0,
    )
    types, samples = scrape(m.registry)
    check_names(types, samples, "isthmus_edge_", edge_metrics.LABELS)
    p = "isthmus_edge_"
    for name in ("rx_bytes", "rx_packets", "tx_bytes", "tx_packets", "handshakes"):
        assert types[p + "peer_" + name] == "counter"
        for peer in ("vpc-b", "vpc-c"):
            assert samples[(p + f"peer_{name}_total", (("peer", peer),))] == 0
    assert not any(n == p + "peer_last_authenticated_timestamp_seconds" for n, _ in samples)
    assert samples[(p + "peers", ())] == 2
    assert samples[(p + "drops_total", (("reason", "malformed"),))] == 1
    assert samples[(p + "drops_total", (("reason", "send_failed"),))] == 1
    assert {k for (n, k) in samples if n == p + "drops_total"} == {
        (("reason", r.value),) for r in DropReason
    }
    assert samples[(p + "routes_wanted", ())] == 2
    assert samples[(p + "routes_installed", ())] == 1
    assert samples[(p + "map_version", ())] == 4
    assert samples[(p + "controller_connected", ())] == 1
    connected[0] = False
    routes.fail_list = True  # unreadable kernel routes: that one metric is left out
    _, samples = scrape(m.registry)
    assert samples[(p + "controller_connected", ())] == 0
    assert (p + "routes_installed", ()) not in samples


def test_drop_log_logs_each_rising_reason_once_per_check(caplog: pytest.LogCaptureFixture) -> None:
    counts = {"malformed": 0, "replay": 0}
    log = DropLog(lambda: dict(counts))
    caplog.set_level("DEBUG", logger="edge.droplog")
    counts["malformed"] = 1000  # a flood between two checks
    assert log.check() == [("malformed", 1000, 1000)]
    assert log.check() == []
    counts["malformed"] += 5
    counts["replay"] += 1
    assert log.check() == [("malformed", 5, 1005), ("replay", 1, 1)]
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "event=packets_dropped reason=malformed count=1000 total=1000",
        "event=packets_dropped reason=malformed count=5 total=1005",
        "event=packets_dropped reason=replay count=1 total=1",
    ]
    assert {r.levelname for r in caplog.records} == {"DEBUG"}
