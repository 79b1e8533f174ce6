"""The audit log of map changes: one `AuditEntry` per change, and its JSON line codec (pure).

Owns what an entry holds and how it is written: every registry `Change` the controller
persists (route serving, pending, refused, approved, withdrawn, held; hold ended; edge
joined, updated, removed; leases renewed) becomes one entry with the unix time, the map version that
change made, the actor and the reason. Actors: the edge's name for what an edge's own
call changed, "operator" for an approval on the admin socket ("operator uid=N" when the
uid is known), "config" for a config (re)load, "controller" for lease renewals.

    {"time": 1767323045.678, "version": 8, "actor": "operator", "kind": "route_approved",
     "edge": "rogue", "route": "10.97.1.0/24", "reason": "route 10.97.1.0/24 of ..."}

One entry is one line of JSON (keys sorted, no newline inside). `decode` checks every
field and raises ValueError naming it. Entries hold public data only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from controller.change import CHANGE_KINDS, Change
from isthmus.ids import EdgeName, parse_edge_name
from isthmus.routemap import Network, parse_route

OPERATOR: Final = "operator"
CONFIG: Final = "config"
CONTROLLER: Final = "controller"
MAX_ACTOR: Final = 80
MAX_REASON: Final = 2048
# At most this many entries a history request returns (and the default).
MAX_LIMIT: Final = 10_000
DEFAULT_LIMIT: Final = 100


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One map change: when, at which version, who, what, and why."""

    time: float  # unix seconds
    version: int  # the map version the change made
    actor: str
    kind: str  # one of controller.change.CHANGE_KINDS
    edge: EdgeName
    route: Network | None
    reason: str


def entries(changes: Iterable[Change], version: int, actor: str, now: float) -> list[AuditEntry]:
    """The audit entries of the changes that made `version`."""
    return [
        AuditEntry(
            time=now,
            version=version,
            actor=actor[:MAX_ACTOR],
            kind=c.kind,
            edge=c.edge,
            route=c.route,
            reason=c.detail[:MAX_REASON],
        )
        for c in changes
    ]


def encode(entry: AuditEntry) -> bytes:
    """One JSON line (with the trailing newline)."""
    doc = {
        "time": entry.time,
        "version": entry.version,
        "actor": entry.actor,
        "kind": entry.kind,
        "edge": entry.edge,
        "route": str(entry.route) if entry.route is not None else None,
        "reason": entry.reason,
    }
    return json.dumps(doc, sort_keys=True, ensure_ascii=True).encode("ascii") + b"\n"


def decode(line: bytes) -> AuditEntry:
    """An entry from one JSON line.

    Raises:
        ValueError: not JSON, not an object, or a field missing or invalid (named).
    """
    try:
        doc = json.loads(line)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    t = _get(doc, "time", (int, float), "a number")
    if not math.isfinite(t) or t < 0:
        raise ValueError(f"time: {t!r} is not a unix time")
    version = _get(doc, "version", (int,), "an integer")
    if version < 0:
        raise ValueError(f"version: {version} is negative")
    actor = _get(doc, "actor", (str,), "a string")
    kind = _get(doc, "kind", (str,), "a string")
    if kind not in CHANGE_KINDS:
        raise ValueError(f"kind: {kind!r} is not one of {', '.join(sorted(CHANGE_KINDS))}")
    try:
        edge = parse_edge_name(_get(doc, "edge", (str,), "a string"))
    except ValueError as e:
        raise ValueError(f"edge: {e}") from None
    raw_route = doc.get("route")
    route: Network | None = None
    if raw_route is not None:
        if not isinstance(raw_route, str):
            raise ValueError(f"route: {raw_route!r} is not a string or null")
        try:
            route = parse_route(raw_route)
        except ValueError as e:
            raise ValueError(f"route: {e}") from None
    reason = _get(doc, "reason", (str,), "a string")
    return AuditEntry(float(t), version, actor, kind, edge, route, reason)


def _get(doc: dict[str, Any], name: str, types: tuple[type, ...], kind: str) -> Any:
    if name not in doc:
        raise ValueError(f"{name}: missing")
    v = doc[name]
    if isinstance(v, bool) or not isinstance(v, types):
        raise ValueError(f"{name}: {v!r} is not {kind}")
    return v
