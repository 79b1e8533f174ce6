"""`Change`: one thing a registry transition changed, as the log, the metrics and the
audit log see it (pure).

The registry (controller.registry) returns the changes of every transition; the service
logs and counts them, and the audit log (controller.audit) stores one entry per change.
`kind` is always one of `CHANGE_KINDS`; `route` is None for a change of the edge itself
(joined, updated, removed); `detail` says why, in public words.
"""

from __future__ import annotations

from dataclasses import dataclass

from isthmus.ids import EdgeName
from isthmus.routemap import Network

CHANGE_KINDS = frozenset(
    {
        "edge_joined",
        "edge_updated",
        "edge_removed",
        "route_serving",
        "route_pending",
        "route_refused",
        "route_approved",
        "route_withdrawn",
        "leases_renewed",
        "route_held",
        "hold_ended",
    }
)


@dataclass(frozen=True, slots=True)
class Change:
    """One thing a transition changed, for the log; `kind` is one of CHANGE_KINDS."""

    kind: str
    edge: EdgeName
    route: Network | None
    detail: str
