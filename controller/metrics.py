"""The controller's Prometheus metrics: what one replica exposes on `metrics` (/metrics).

Owns the metric names, their help and their labels. Counters are plain integers the
service bumps (`count_*`); everything else is read from the live service at scrape time by
a custom collector, after `refresh` awaited what needs awaiting (the edges' liveness,
from the store for every replica). Nothing here changes the controller.

    isthmus_controller_map_version                  gauge    the current map version
    isthmus_controller_store_up                     gauge    1 while the store answers reads
    isthmus_controller_edges{state}                 gauge    configured edges by state:
                                                             connected, disconnected, never
    isthmus_controller_edge_applied_version{edge}   gauge    the version an edge last applied
    isthmus_controller_watch_streams                gauge    Watch streams open at this replica
    isthmus_controller_routes{state}                gauge    advertised routes by state:
                                                             serving, pending, refused
    isthmus_controller_route_conflicts{reason}      gauge    routes pending or refused as they
                                                             overlap another edge's: exact,
                                                             more_specific, less_specific
    isthmus_controller_map_changes_total{kind}      counter  changes this replica made, by
                                                             controller.change.CHANGE_KINDS
    isthmus_controller_store_conflicts_total        counter  saves lost to another replica
    isthmus_controller_audit_failures_total         counter  audit entries not stored
    isthmus_controller_calls_refused_total{code}    counter  edge calls refused, by gRPC code
    isthmus_controller_refusals_total{reason}       counter  calls refused, by reason code:
                                                             isthmus.auth.AUTH_REASONS and
                                                             controller.guard's limits
    isthmus_controller_rate_limited_total{kind}     counter  calls refused by a rate limit or
                                                             cap: challenge, refused,
                                                             health_watch, register, report,
                                                             watch, watch_streams

Rules: every counter ends in `_total`; labels are only `state`, `edge`, `reason`, `kind`
and `code`, each from a bounded set (configured edge names, never addresses or keys).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Final, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from controller.admin import EdgeView
from controller.admission import Decision, Reason, RouteState
from controller.change import CHANGE_KINDS, Change

PREFIX: Final = "isthmus_controller_"
LABELS: Final = frozenset({"state", "edge", "reason", "kind", "code"})
EDGE_STATES: Final = ("connected", "disconnected", "never")
CONFLICTS: Final = (Reason.EXACT, Reason.MORE_SPECIFIC, Reason.LESS_SPECIFIC)


class ControllerSource(Protocol):
    """What the collector reads (controller.service.ControllerService conforms)."""

    @property
    def version(self) -> int: ...

    @property
    def watch_streams(self) -> int: ...

    def route_statuses(self) -> tuple[Decision, ...]: ...

    async def edge_statuses(self) -> tuple[EdgeView, ...]: ...


class ControllerMetrics:
    """The counters and the collector of one replica; `registry` is what /metrics renders."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.changes: dict[str, int] = dict.fromkeys(sorted(CHANGE_KINDS), 0)
        self.store_conflicts = 0
        self.audit_failures = 0
        self.calls_refused: dict[str, int] = {}
        self.refusals: dict[str, int] = {}
        self.rate_limited: dict[str, int] = {}
        self.states_refused: dict[str, int] = {}
        self._source: ControllerSource | None = None
        self._store_up: Callable[[], bool] = lambda: False
        self._edges: tuple[EdgeView, ...] = ()

    # --- what the service counts -------------------------------------------------------

    def count_changes(self, changes: Iterable[Change]) -> None:
        for c in changes:
            if c.kind in self.changes:
                self.changes[c.kind] += 1

    def count_store_conflict(self) -> None:
        self.store_conflicts += 1

    def count_audit_failure(self, entries: int) -> None:
        self.audit_failures += entries

    def count_refused_call(self, code: str) -> None:
        """`code`: a gRPC status code name (a bounded set)."""
        self.calls_refused[code] = self.calls_refused.get(code, 0) + 1

    def count_refusal(self, reason: str) -> None:
        """`reason`: a refusal's reason code (a bounded set, see the module)."""
        self.refusals[reason] = self.refusals.get(reason, 0) + 1

    def count_rate_limited(self, kind: str) -> None:
        """`kind`: the limit a call was refused by (a bounded set, see the module)."""
        self.rate_limited[kind] = self.rate_limited.get(kind, 0) + 1

    def count_state_refused(self, reason: str) -> None:
        """`reason`: a controller.state_signature.Refusal (a bounded set)."""
        self.states_refused[reason] = self.states_refused.get(reason, 0) + 1

    # --- scraping ----------------------------------------------------------------------

    def bind(self, source: ControllerSource, store_up: Callable[[], bool]) -> None:
        """Read `source` and `store_up` at every scrape from now on."""
        if self._source is None:
            self.registry.register(_Collector(self))
        self._source = source
        self._store_up = store_up

    async def refresh(self) -> None:
        """Read what needs awaiting before a scrape: every edge's liveness."""
        if self._source is not None:
            self._edges = await self._source.edge_statuses()

    def collect(self) -> Iterator[Metric]:
        source = self._source
        if source is None:
            return
        yield _gauge("map_version", "The current map version.", source.version)
        yield _gauge(
            "store_up",
            "1 while the store answers reads (health SERVING), else 0.",
            1 if self._store_up() else 0,
        )
        edges = GaugeMetricFamily(
            PREFIX + "edges", "Configured edges by connection state.", labels=["state"]
        )
        for state in EDGE_STATES:
            edges.add_metric([state], sum(1 for e in self._edges if e.state == state))
        yield edges
        applied = GaugeMetricFamily(
            PREFIX + "edge_applied_version",
            "The map version each configured edge last reported applied (0: none).",
            labels=["edge"],
        )
        for e in self._edges:
            applied.add_metric([e.name], e.applied_version)
        yield applied
        yield _gauge("watch_streams", "Watch streams open at this replica.", source.watch_streams)
        decisions = source.route_statuses()
        routes = GaugeMetricFamily(
            PREFIX + "routes", "Advertised routes by admission state.", labels=["state"]
        )
        for rs in RouteState:
            routes.add_metric([rs.value], sum(1 for d in decisions if d.state is rs))
        yield routes
        conflicts = GaugeMetricFamily(
            PREFIX + "route_conflicts",
            "Routes pending or refused because they overlap another edge's route.",
            labels=["reason"],
        )
        for reason in CONFLICTS:
            n = sum(
                1 for d in decisions if d.reason is reason and d.state is not RouteState.SERVING
            )
            conflicts.add_metric([reason.value], n)
        yield conflicts
        changes = CounterMetricFamily(
            PREFIX + "map_changes",
            "Map changes this replica made, by kind.",
            labels=["kind"],
        )
        for kind, n in self.changes.items():
            changes.add_metric([kind], n)
        yield changes
        yield CounterMetricFamily(
            PREFIX + "store_conflicts",
            "Saves this replica lost to another replica's write (then decided again).",
            value=self.store_conflicts,
        )
        yield CounterMetricFamily(
            PREFIX + "audit_failures",
            "Audit entries this replica could not store.",
            value=self.audit_failures,
        )
        refused = CounterMetricFamily(
            PREFIX + "calls_refused",
            "Edge calls refused (authentication, identity, registration), by gRPC code.",
            labels=["code"],
        )
        for code, n in sorted(self.calls_refused.items()):
            refused.add_metric([code], n)
        yield refused
        yield _counters(
            "refusals", "Calls refused, by reason code.", "reason", self.refusals.items()
        )
        yield _counters(
            "rate_limited",
            "Calls refused by a rate limit or a cap, by the limit.",
            "kind",
            self.rate_limited.items(),
        )
        states = CounterMetricFamily(
            PREFIX + "states_refused",
            "Stored states this replica did not adopt (unsigned, another key, not newer), "
            "by reason.",
            labels=["reason"],
        )
        for why, n in sorted(self.states_refused.items()):
            states.add_metric([why], n)
        yield states


class _Collector(Collector):
    def __init__(self, metrics: ControllerMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return list(self._metrics.collect())


def _counters(
    name: str, documentation: str, label: str, values: Iterable[tuple[str, int]]
) -> CounterMetricFamily:
    family = CounterMetricFamily(PREFIX + name, documentation, labels=[label])
    for key, n in sorted(values):
        family.add_metric([key], n)
    return family


def _gauge(name: str, documentation: str, v: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, documentation, value=v)
