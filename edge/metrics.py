"""The edge's Prometheus metrics: what one edge exposes on `metrics` (/metrics).

Owns the metric names, their help and their labels. Everything is read at scrape time by a
custom collector from the tunnel core's own counters (`Tunnel.peers`, `Tunnel.drops`,
`Tunnel.map_version`), the control loop's view and the kernel's routes, on the event loop:
the data path makes no metric call per packet. Nothing here changes the edge.

    isthmus_edge_peer_rx_bytes_total{peer}         counter  bytes of authenticated packets from
                                                            the peer (the edge named `peer`)
    isthmus_edge_peer_rx_packets_total{peer}       counter  authenticated packets from the peer
    isthmus_edge_peer_tx_bytes_total{peer}         counter  bytes sent to the peer
    isthmus_edge_peer_tx_packets_total{peer}       counter  packets sent to the peer
    isthmus_edge_peer_handshakes_total{peer}       counter  completed handshakes with the peer
    isthmus_edge_peer_last_authenticated_timestamp_seconds{peer}
                                                   gauge    unix time of the peer's last
                                                            authenticated packet (peers with one)
    isthmus_edge_peers                             gauge    peers in the map in use
    isthmus_edge_drops_total{reason}               counter  packets dropped, by edge.tunnel.drops
                                                            reason (every reason, from 0)
    isthmus_edge_routes_wanted                     gauge    remote routes of the map in use
    isthmus_edge_routes_installed                  gauge    of those, installed in the kernel
    isthmus_edge_routes_colliding                  gauge    of those, left out: the kernel holds
                                                            a route to the prefix isthmus did
                                                            not install (retried)
    isthmus_edge_route_collisions_total            counter  routes found colliding so far
    isthmus_edge_map_version                       gauge    the version of the map in use
    isthmus_edge_controller_connected              gauge    1 while the watch stream is open

A peer's counters start again from 0 when it leaves the map and comes back (the core
forgets a peer that leaves). Rules: every counter ends in `_total`; labels are only
`peer` (an edge name from the map, never an address or key) and `reason` (a fixed set).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Final, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edge.control import ControllerView
from edge.ports import RouteError, RouteTable
from edge.reconcile import desired_routes
from edge.tunnel import Tunnel
from isthmus.logfmt import kv
from isthmus.routemap import Network, RouteMap

PREFIX: Final = "isthmus_edge_"
LABELS: Final = frozenset({"peer", "reason"})

_log = logging.getLogger(__name__)


class Collisions(Protocol):
    """The routes left out as collisions (edge.applier.MapApplier conforms)."""

    @property
    def collisions(self) -> Mapping[Network, str]: ...

    @property
    def collisions_total(self) -> int: ...


class EdgeMetrics(Collector):
    """The collector of one edge over its live parts; `registry` is what /metrics renders.

    `clock` is the clock the tunnel core is driven with (the dataplane's, monotonic);
    `wall_clock` turns its times into unix times.
    """

    def __init__(
        self,
        *,
        tunnel: Tunnel,
        route_map: Callable[[], RouteMap],
        controller: Callable[[], ControllerView],
        routes: RouteTable,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        collisions: Collisions | None = None,
    ) -> None:
        self._tunnel = tunnel
        self._collisions = collisions
        self._route_map = route_map
        self._controller = controller
        self._routes = routes
        self._clock = clock
        self._wall_clock = wall_clock
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def collect(self) -> Iterable[Metric]:
        return list(self._metrics())

    def _metrics(self) -> Iterator[Metric]:
        now = self._clock()
        to_unix = self._wall_clock() - now
        peers = self._tunnel.peers(now)
        families = {
            name: CounterMetricFamily(PREFIX + f"peer_{name}", text, labels=["peer"])
            for name, text in (
                ("rx_bytes", "Bytes of authenticated packets received from the peer."),
                ("rx_packets", "Authenticated packets received from the peer."),
                ("tx_bytes", "Bytes sent to the peer."),
                ("tx_packets", "Packets sent to the peer."),
                ("handshakes", "Handshakes completed with the peer."),
            )
        }
        last = GaugeMetricFamily(
            PREFIX + "peer_last_authenticated_timestamp_seconds",
            "Unix time of the last authenticated packet from the peer.",
            labels=["peer"],
        )
        for p in peers:
            families["rx_bytes"].add_metric([p.name], p.rx_bytes)
            families["rx_packets"].add_metric([p.name], p.rx_packets)
            families["tx_bytes"].add_metric([p.name], p.tx_bytes)
            families["tx_packets"].add_metric([p.name], p.tx_packets)
            families["handshakes"].add_metric([p.name], p.handshakes)
            if p.last_rx is not None:
                last.add_metric([p.name], round(p.last_rx + to_unix, 3))
        yield from families.values()
        yield last
        yield GaugeMetricFamily(PREFIX + "peers", "Peers in the map in use.", value=len(peers))
        drops = CounterMetricFamily(
            PREFIX + "drops", "Packets dropped, by reason.", labels=["reason"]
        )
        for reason, count in self._tunnel.drops().items():
            drops.add_metric([reason], count)
        yield drops
        wanted = desired_routes(self._route_map(), self._tunnel.identity.name)
        yield GaugeMetricFamily(
            PREFIX + "routes_wanted", "Remote routes of the map in use.", value=len(wanted)
        )
        try:
            kernel = self._routes.list_routes()
        except RouteError as e:
            _log.warning(kv("metrics_routes_unreadable", error=str(e)))
        else:
            yield GaugeMetricFamily(
                PREFIX + "routes_installed",
                "Remote routes of the map in use that are installed in the kernel.",
                value=sum(1 for net in wanted if net in kernel),
            )
        if self._collisions is not None:
            yield GaugeMetricFamily(
                PREFIX + "routes_colliding",
                "Remote routes left out: the kernel holds a route to the prefix isthmus did "
                "not install.",
                value=len(self._collisions.collisions),
            )
            yield CounterMetricFamily(
                PREFIX + "route_collisions",
                "Routes found colliding with a route isthmus did not install.",
                value=self._collisions.collisions_total,
            )
        yield GaugeMetricFamily(
            PREFIX + "map_version",
            "The version of the map in use.",
            value=self._tunnel.map_version,
        )
        yield GaugeMetricFamily(
            PREFIX + "controller_connected",
            "1 while the watch stream to a controller is open, else 0.",
            value=1 if self._controller().connected else 0,
        )
