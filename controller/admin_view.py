"""What `isthmus routes` and `isthmus edges` show: the controller's admin replies as stable
JSON documents, the text tables made from them, and what makes each degraded.

Pure: no I/O, no clock (callers pass `now`). The documents are what `--json` prints; the
tables colour states only when asked (isthmus.clikit decides when) and show every cell
through `clikit.printable`, so an edge's last error cannot steer the operator's terminal.
Must not import `controller` or `edge`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Final

from isthmus.clikit import Style, paint, printable
from isthmus.keys import PublicKey
from isthmus.mapsig import epoch_text
from isthmus.v1 import isthmus_pb2 as pb

ROUTE_COLUMNS: Final = ("ROUTE", "EDGE", "STATE", "REASON")
HISTORY_COLUMNS: Final = ("TIME", "VERSION", "ACTOR", "KIND", "EDGE", "ROUTE", "REASON")
EDGE_COLUMNS: Final = (
    "EDGE",
    "STATE",
    "APPLIED",
    "EPOCH",
    "REPORTED",
    "REPLICA",
    "ENDPOINTS",
    "LAST ERROR",
)

_STATES: Final[dict[int, str]] = {
    pb.ROUTE_STATE_SERVING: "serving",
    pb.ROUTE_STATE_PENDING: "pending",
    pb.ROUTE_STATE_REFUSED: "refused",
}
_ROUTE_STYLES: Final[dict[str, Style]] = {"serving": "good", "pending": "warn", "refused": "bad"}
_EDGE_STYLES: Final[dict[str, Style]] = {"connected": "good"}


def state_name(state: int) -> str:
    return _STATES.get(state, "unspecified")


def routes_doc(reply: pb.ListRoutesResponse) -> dict[str, Any]:
    """The stable `isthmus routes --json` document."""
    return {
        "version": reply.version,
        "routes": [
            {
                "route": r.route,
                "edge": r.edge,
                "state": state_name(r.state),
                "reason_code": r.reason_code,
                "reason": r.reason,
                "since_version": r.since_version,
                "approved": r.approved,
            }
            for r in reply.routes
        ],
    }


def history_doc(reply: pb.ListHistoryResponse) -> dict[str, Any]:
    """The stable `isthmus routes --history --json` document (entries oldest first)."""
    return {
        "version": reply.version,
        "entries": [
            {
                "time": e.time,
                "version": e.version,
                "actor": e.actor,
                "kind": e.kind,
                "edge": e.edge,
                "route": e.route or None,
                "reason": e.reason,
            }
            for e in reply.entries
        ],
    }


def edges_doc(reply: pb.ListEdgesResponse) -> dict[str, Any]:
    """The stable `isthmus edges --json` document."""
    return {
        "version": reply.version,
        "epoch": epoch_text(reply.epoch),
        "edges": [
            {
                "name": e.name,
                "public_key": _key(e.public_key),
                "endpoints": list(e.endpoints),
                "state": e.state,
                "replica": e.replica,
                "applied_version": e.applied_version,
                "epoch": epoch_text(e.epoch),
                "last_error": e.last_error,
                "reported_at": e.reported_at,
            }
            for e in reply.edges
        ],
    }


def _key(raw: bytes) -> str:
    try:
        return PublicKey(raw).to_base64()
    except ValueError:
        return raw.hex()


def table(
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    styles: Sequence[Sequence[Style | None]] = (),
    colour: bool = False,
) -> str:
    """Left-aligned columns two spaces apart; the last column is not padded.

    `styles[i][j]` colours cell j of row i when `colour` (widths count the text only).
    Every cell is made `printable` first: cells come from edges and the controller.
    """
    rows = [tuple(printable(cell) for cell in row) for row in rows]
    widths = [max(len(r[i]) for r in (columns, *rows)) for i in range(len(columns) - 1)]
    lines = []
    for i, row in enumerate((columns, *rows)):
        marks = styles[i - 1] if 0 < i <= len(styles) else ()
        cells = []
        for j, cell in enumerate(row):
            style = marks[j] if j < len(marks) else None
            pad = " " * (widths[j] - len(cell)) if j < len(widths) else ""
            cells.append(paint(cell, style, colour) + pad)
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def route_problems(doc: dict[str, Any]) -> list[str]:
    """Why `isthmus routes` is degraded (exit 2): every route not serving."""
    return [
        f"route {r['route']} of edge {r['edge']!r} is {r['state']}"
        for r in doc["routes"]
        if r["state"] != "serving"
    ]


def edge_problems(doc: dict[str, Any]) -> list[str]:
    """Why `isthmus edges` is degraded (exit 2): a last error, an older applied version, or
    another epoch than the controller's (a map of another lineage: not in sync)."""
    found = []
    for e in doc["edges"]:
        if e["last_error"]:
            found.append(f"edge {e['name']!r} reports: {e['last_error']}")
        elif e["applied_version"] != doc["version"]:
            found.append(
                f"edge {e['name']!r} applied map version {e['applied_version']}, "
                f"not {doc['version']}"
            )
        elif e.get("epoch", "-") != doc.get("epoch", "-"):
            found.append(
                f"edge {e['name']!r} is on epoch {e.get('epoch', '-')}, "
                f"not the controller's {doc.get('epoch', '-')}"
            )
    return found


def render_routes(doc: dict[str, Any], colour: bool = False) -> str:
    """The routes as a text table; REASON is the detail of every route not serving."""
    rows = []
    styles: list[tuple[Style | None, ...]] = []
    for r in doc["routes"]:
        if r["state"] == "serving":
            reason = "approved" if r["approved"] else ""
        else:
            reason = r["reason"] or r["reason_code"]
        rows.append((r["route"], r["edge"], r["state"], reason))
        styles.append((None, None, _ROUTE_STYLES.get(r["state"], "bad"), None))
    text = table(ROUTE_COLUMNS, rows, styles, colour)
    return text if rows else text + "(no routes advertised)\n"


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def render_history(doc: dict[str, Any]) -> str:
    """The audit entries as a text table, oldest first, times in UTC."""
    rows = [
        (
            _utc(e["time"]),
            str(e["version"]),
            e["actor"],
            e["kind"],
            e["edge"],
            e["route"] or "-",
            e["reason"],
        )
        for e in doc["entries"]
    ]
    text = table(HISTORY_COLUMNS, rows)
    return text if rows else text + "(no map changes recorded)\n"


def _ago(then: float, now: float) -> str:
    if then <= 0:
        return "never"
    s = max(0, int(now - then))
    if s < 60:
        return f"{s}s ago"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s ago"
    return f"{s // 3600}h{s % 3600 // 60:02d}m ago"


def render_edges(doc: dict[str, Any], now: float, colour: bool = False) -> str:
    """The edges as a text table; `now` (unix time) dates the last reports."""
    rows = [
        (
            e["name"],
            e["state"],
            str(e["applied_version"]),
            e.get("epoch", "-"),
            _ago(e["reported_at"], now),
            e["replica"] or "-",
            ",".join(e["endpoints"]) or "-",
            e["last_error"] or "-",
        )
        for e in doc["edges"]
    ]
    styles: list[tuple[Style | None, ...]] = [
        (
            None,
            _EDGE_STYLES.get(e["state"], "warn"),
            None if e["applied_version"] == doc["version"] else "warn",
            None if e.get("epoch", "-") == doc.get("epoch", "-") else "warn",
            None,
            None,
            None,
            "bad" if e["last_error"] else None,
        )
        for e in doc["edges"]
    ]
    text = table(EDGE_COLUMNS, rows, styles, colour)
    return text if rows else text + "(no edges configured)\n"


# --- the commands --------------------------------------------------------------------------
