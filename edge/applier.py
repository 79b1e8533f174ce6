"""Applying a map: the tunnel core, the kernel routes and the cached copy, in that order.

Owns "the map this edge uses now". `apply` is the one place a map takes effect, at start
(from the cache: fail-static), for each map from the controller, and when a lease runs
out (the same version with that route left out). It is idempotent: applying the same map
again changes nothing but re-checks the kernel routes. Callers hand it only maps whose
signature and leases verified (edge.lineage, edge.leases); it never withdraws routes on
its own. Beside the map in use it keeps the map as signed (`signed`: every route, the
epoch and the signature), which is what is cached and what the next delta patches.
Rules:
- A map whose routes would carry the edge's own underlay (edge.reconcile.loops: a route of
  another edge holding a controller address or an edge's endpoint) is refused whole before
  anything changes, like a map the tunnel refuses; `refusal` says why, for the report.
- A route that collides with a route isthmus did not install is left out, logged once,
  counted (`collisions_total`) and kept in `collisions` (route -> reason) for status and
  explain; `retry_collisions` (every ROUTE_RETRY_INTERVAL) tries it again, so it is
  installed once the other route is gone, and never flaps: nothing is removed to retry.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Sequence
from typing import Final, Protocol

from edge.ports import Forwarding, MapStore, RouteCollision, RouteError, RouteTable
from edge.reconcile import desired_routes, loops, reconcile
from isthmus.ids import EdgeName
from isthmus.logfmt import kv
from isthmus.mapsig import SignedMap
from isthmus.routemap import EdgeEntry, MapError, Network, RouteMap

ROUTE_RETRY_INTERVAL: Final = 5.0  # seconds between retries of colliding routes

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
        controllers: Sequence[str] = (),
    ) -> None:
        """`controllers`: the configured controller addresses, which no route may hold."""
        self._self_name = self_name
        self._controllers = tuple(controllers)
        self._tunnel = tunnel
        self._routes = routes
        self._store = store
        self._forwarding = forwarding
        self._clock = clock
        self._ipv6_enabled = False
        self.route_map = RouteMap(version=0)
        self.refusal: str | None = None  # why the last refused map was refused
        self.collisions: dict[Network, str] = {}  # wanted routes left out -> the reason
        self.collisions_total = 0  # routes found colliding (once per collision, not per retry)
        self.signed = SignedMap(RouteMap(version=0))
        # Called after the tunnel took a map: the data plane sends what the map started
        # (greeting and new-key handshakes) and arms their timers at once, not on the next
        # packet (edge.__main__ sets it to Dataplane.after_input).
        self.on_applied: Callable[[], None] | None = None

    @property
    def version(self) -> int:
        return self.route_map.version

    def apply(
        self, route_map: RouteMap, *, signed: SignedMap | None = None, save: bool = True
    ) -> bool:
        """Use `route_map` from now on; False (and nothing changed) when the tunnel refuses it.

        `signed` is the verified map `route_map` was made from (it becomes `signed`, and is
        cached unless `save` is False); None keeps the signed map as it is (a route whose
        lease ran out). Kernel route failures are logged; the next apply or `resync`
        retries them.
        """
        found = loops(route_map, self._self_name, self._controllers)
        if found:
            self.refusal = "; ".join(found)
            _log.error(kv("map_refused", version=route_map.version, error=self.refusal))
            return False
        try:
            self._tunnel.apply_map(route_map, self._clock())
        except MapError as e:
            self.refusal = str(e)
            _log.error(kv("map_refused", version=route_map.version, error=str(e)))
            return False
        self.refusal = None
        self.route_map = route_map
        if signed is not None:
            self.signed = signed
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
        if save and signed is not None:
            self._store.save(signed)
        return True

    def resync(self) -> None:
        """Reconcile the kernel routes with the current map (idempotent)."""
        wanted = desired_routes(self.route_map, self._self_name)
        if not self._ipv6_enabled and any(net.version == 6 for net in wanted):
            self._forwarding.enable(6)
            self._ipv6_enabled = True
        try:
            _, errors = reconcile(self._routes, self.route_map, self._self_name)
        except RouteError as e:
            _log.error(kv("routes_unreadable", error=str(e)))
            return
        self._note_collisions(
            {
                ipaddress.ip_network(e.cidr): e.reason
                for e in errors
                if isinstance(e, RouteCollision)
            },
            wanted,
        )

    def retry_collisions(self) -> None:
        """Try the colliding routes again (a resync); nothing to do without one."""
        if self.collisions:
            self.resync()

    def _note_collisions(self, now: dict[Network, str], wanted: dict[Network, EdgeName]) -> None:
        for net, reason in now.items():
            if self.collisions.get(net) != reason:
                self.collisions_total += 1
                _log.warning(
                    kv(
                        "route_collision",
                        route=net,
                        edge=wanted.get(net),
                        error=reason,
                        detail=f"not installed; retried every {ROUTE_RETRY_INTERVAL:g} s",
                    )
                )
        for net in self.collisions.keys() - now.keys():
            state = "installed" if net in wanted else "withdrawn"
            _log.info(kv("route_collision_cleared", route=net, detail=state))
        self.collisions = now

    def _check_self(self, entry: EdgeEntry | None) -> None:
        if entry is None and self.route_map.version > 0:
            _log.warning(
                kv(
                    "self_not_in_map",
                    edge=self._self_name,
                    detail="this edge is not in the map; peers cannot send to it",
                )
            )
