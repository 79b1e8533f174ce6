"""`Liveness`, the per-edge connection record `isthmus edges` shows, and its JSON codec
(pure).

A record says which replica last saw the edge, whether its Watch stream is open there,
the map version it last applied and its epoch, the error it last reported and when. One
record is one JSON object (keys sorted); `liveness_from_json` checks every field and
raises ValueError naming it. Records hold public data only.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from isthmus.ids import EdgeName, parse_edge_name


@dataclass(frozen=True, slots=True)
class Liveness:
    """What a replica last knew about an edge's connection."""

    edge: EdgeName
    replica: str
    connected: bool
    applied_version: int
    last_error: str
    reported_at: float  # unix seconds
    epoch: str = ""  # hex of the epoch of the applied map; "" for none (or an older edge)


def liveness_to_json(info: Liveness) -> bytes:
    """The record as JSON; "epoch" only when the edge reported one (as older records)."""
    doc = asdict(info)
    if not info.epoch:
        del doc["epoch"]
    return json.dumps(doc, sort_keys=True).encode("utf-8")


def liveness_from_json(data: bytes) -> Liveness:
    """Raises: ValueError naming the field."""
    doc = json.loads(data)
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    fields: dict[str, tuple[str, tuple[type, ...]]] = {
        "edge": ("a string", (str,)),
        "replica": ("a string", (str,)),
        "connected": ("a boolean", (bool,)),
        "applied_version": ("an integer", (int,)),
        "last_error": ("a string", (str,)),
        "reported_at": ("a number", (int, float)),
    }
    for name, (kind, types) in fields.items():
        v = doc.get(name)
        if not isinstance(v, types) or (bool not in types and isinstance(v, bool)):
            raise ValueError(f"{name}: {v!r} is not {kind}")
    try:
        edge = parse_edge_name(doc["edge"])
    except ValueError as e:
        raise ValueError(f"edge: {e}") from None
    return Liveness(
        edge=edge,
        replica=doc["replica"],
        connected=doc["connected"],
        applied_version=doc["applied_version"],
        last_error=doc["last_error"],
        reported_at=float(doc["reported_at"]),
        epoch=_epoch(doc.get("epoch", "")),
    )


def _epoch(value: object) -> str:
    """A record of an older release has no epoch: ""."""
    if not isinstance(value, str) or len(value) > 32:
        raise ValueError(f"epoch: {value!r} is not the hex of an epoch")
    try:
        bytes.fromhex(value)
    except ValueError:
        raise ValueError(f"epoch: {value!r} is not the hex of an epoch") from None
    return value
