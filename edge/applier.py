"""Applying a map: the tunnel core, the kernel routes and the cached copy, in that order.

Owns "the map this edge uses now". `apply` is the one place a map takes effect, at start
(from the cache: fail-static), for each map from the controller, and when a lease runs
out (the same version with that route left out). It is idempotent: applying the same map
again changes nothing but re-checks the kernel routes. Callers hand it only maps whose
leases verified (edge.leases); it never withdraws routes on its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from edge.ports import Forwarding, MapStore, RouteError, RouteTable
from edge.reconcile import desired_routes, reconcile
from isthmus.ids import EdgeName
from isthmus.logfmt import kv
from isthmus.routemap import EdgeEntry, MapError, RouteMap

_log = logging.getLogger(__name__)


class MapTarget(Protocol):
    """What the tunnel core offers the applier (edge.tunnel.Tunnel conforms)."""

    def apply_map(self, route_map: RouteMap, now: float) -> None:
        """Forward by `route_map` from now on; raises MapError and keeps the old map."""
        ...


class MapApplier:
    """Makes a map take effect in the tunnel, the kernel and the cache."""

    def __init__(
        self,
        self_name: EdgeName,
        tunnel: MapTarget,
        routes: RouteTable,
        store: MapStore,
        forwarding: Forwarding,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._self_name = self_name
        self._tunnel = tunnel
        self._routes = routes
        self._store = store
        self._forwarding = forwarding
        self._clock = clock
        self._ipv6_enabled = False
        self.route_map = RouteMap(version=0)
        # Called after the tunnel took a map: the data plane sends what the map started
        # (greeting and new-key handshakes) and arms their timers at once, not on the next
        # packet (edge.__main__ sets it to Dataplane.after_input).
        self.on_applied: Callable[[], None] | None = None

    @property
    def version(self) -> int:
        return self.route_map.version

    def apply(self, route_map: RouteMap, *, save: bool = True) -> bool:
        """Use `route_map` from now on; False (and nothing changed) when the tunnel refuses it.

        Kernel route failures are logged; the next apply or `resync` retries them.
        """
        try:
            self._tunnel.apply_map(route_map, self._clock())
        except MapError as e:
            _log.error(kv("map_refused", version=route_map.version, error=str(e)))
            return False
        self.route_map = route_map
        if self.on_applied is not None:
            self.on_applied()
        _log.info(
            kv(
                "map_applied",
                version=route_map.version,
                edges=len(route_map.edges),
                peers=sum(1 for e in route_map.edges if e.name != self._self_name),
            )
        )
        self._check_self(route_map.edge(self._self_name))
        self.resync()
        if save:
            self._store.save(route_map)
        return True

    def resync(self) -> None:
        """Reconcile the kernel routes with the current map (idempotent)."""
        wanted = desired_routes(self.route_map, self._self_name)
        if not self._ipv6_enabled and any(net.version == 6 for net in wanted):
            self._forwarding.enable(6)
            self._ipv6_enabled = True
        try:
            reconcile(self._routes, self.route_map, self._self_name)
        except RouteError as e:
            _log.error(kv("routes_unreadable", error=str(e)))

    def _check_self(self, entry: EdgeEntry | None) -> None:
        if entry is None and self.route_map.version > 0:
            _log.warning(
                kv(
                    "self_not_in_map",
                    edge=self._self_name,
                    detail="this edge is not in the map; peers cannot send to it",
                )
            )
