"""Kernel routes: the desired set from a map, the diff against what is installed, applying it.

Owns the rule "install every route of every OTHER edge via the TUN, and nothing else".
`desired_routes`, `diff` and `loops` are pure; `apply_changes` touches the kernel only
through the `RouteTable` port and is idempotent: add what is missing, delete what is stale,
so a reconcile after a restart or a reconnect never leaves a stale or a missing route.
Rules:
- Only our own routes are added or deleted: a prefix the kernel already routes otherwise
  is a collision (RouteCollision), left as it is and returned with the other errors; the
  caller retries it later (the other route may go away) and logs it once.
- The tunnel must never carry its own underlay: a map in which a route of another edge
  holds a controller address or an edge's endpoint is refused whole (`loops` says which),
  since installing it would send the edge's gRPC or sealed UDP into its own TUN.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass

from edge.ports import RouteCollision, RouteError, RouteTable
from isthmus.endpoint import Endpoint, IPAddress
from isthmus.ids import EdgeName
from isthmus.logfmt import kv
from isthmus.lpm import route_sort_key
from isthmus.routemap import Network, RouteMap

_log = logging.getLogger(__name__)


def sorted_routes(nets: Iterable[Network]) -> tuple[Network, ...]:
    return tuple(sorted(nets, key=route_sort_key))


@dataclass(frozen=True, slots=True)
class RouteChanges:
    """What to do to the kernel: routes to install and routes to remove, each sorted."""

    added: tuple[Network, ...] = ()
    removed: tuple[Network, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)


def desired_routes(route_map: RouteMap, self_name: str) -> dict[Network, EdgeName]:
    """Every route of every edge other than `self_name`, with its owner."""
    return {net: edge.name for net, edge in route_map.routes() if edge.name != self_name}


def loops(route_map: RouteMap, self_name: str, controllers: Sequence[str]) -> list[str]:
    """Why installing `route_map`'s routes would route the edge's own underlay into the
    TUN: one sentence per (route, address) pair where a route of another edge holds a
    controller address (from `controllers`, "host:port"; a host name is not checked) or
    the endpoint of an edge other than this one. Empty when the map is safe."""
    guarded: list[tuple[IPAddress, str]] = []
    for target in controllers:
        try:
            guarded.append((Endpoint.parse(target).ip, f"controller address {target}"))
        except ValueError:
            continue
    for entry in route_map.edges:
        if entry.name != self_name:
            guarded += [(e.ip, f"the endpoint {e} of edge {entry.name!r}") for e in entry.endpoints]
    found = []
    wanted = desired_routes(route_map, self_name)
    for net in sorted_routes(wanted):
        owner = wanted[net]
        found += [
            f"route {net} of edge {owner!r} holds {what}: installing it would route "
            "this edge's own tunnel or controller traffic into the tunnel (a loop)"
            for ip, what in guarded
            if ip.version == net.version and ip in net
        ]
    return found


def diff(desired: Set[Network], current: Set[Network]) -> RouteChanges:
    """The changes that turn `current` into `desired`."""
    return RouteChanges(
        added=sorted_routes(desired - current),
        removed=sorted_routes(current - desired),
    )


def apply_changes(
    table: RouteTable, changes: RouteChanges, owners: Mapping[Network, str]
) -> list[RouteError]:
    """Add every added route, delete every removed one; one log line per change.

    A failing route is logged and returned; the others are still applied (the next
    reconcile retries it). A collision is returned but not logged: the caller logs it
    once, not at every retry.
    """
    errors: list[RouteError] = []
    if not changes:
        _log.info(kv("routes_up_to_date", detail="routes already up to date"))
        return errors
    for net in changes.added:
        try:
            table.add_route(net)
        except RouteCollision as e:
            errors.append(e)
        except RouteError as e:
            _log.error(kv("route_error", route=net, error=str(e)))
            errors.append(e)
        else:
            _log.info(kv("route_added", route=net, edge=owners.get(net)))
    for net in changes.removed:
        try:
            table.delete_route(net)
        except RouteError as e:
            _log.error(kv("route_error", route=net, error=str(e)))
            errors.append(e)
        else:
            _log.info(kv("route_removed", route=net))
    return errors


def reconcile(
    table: RouteTable, route_map: RouteMap, self_name: str
) -> tuple[RouteChanges, list[RouteError]]:
    """Make the kernel hold exactly the desired routes of `route_map`.

    Raises:
        RouteError: the installed routes could not be listed (nothing was changed).
    """
    desired = desired_routes(route_map, self_name)
    changes = diff(desired.keys(), table.list_routes())
    return changes, apply_changes(table, changes, desired)
