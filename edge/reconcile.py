"""Kernel routes: the desired set from a map, the diff against what is installed, applying it.

Owns the rule "install every route of every OTHER edge via the TUN, and nothing else".
`desired_routes` and `diff` are pure; `apply_changes` touches the kernel only through the
`RouteTable` port and is idempotent: replace what is missing, delete what is stale, so a
reconcile after a restart or a reconnect never leaves a stale or a missing route.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass

from edge.ports import RouteError, RouteTable
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


def diff(desired: Set[Network], current: Set[Network]) -> RouteChanges:
    """The changes that turn `current` into `desired`."""
    return RouteChanges(
        added=sorted_routes(desired - current),
        removed=sorted_routes(current - desired),
    )


def apply_changes(
    table: RouteTable, changes: RouteChanges, owners: Mapping[Network, str]
) -> list[RouteError]:
    """Replace every added route, delete every removed one; one log line per change.

    A failing route is logged and returned; the others are still applied (the next
    reconcile retries it).
    """
    errors: list[RouteError] = []
    if not changes:
        _log.info(kv("routes_up_to_date", detail="routes already up to date"))
        return errors
    for net in changes.added:
        try:
            table.replace_route(net)
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
