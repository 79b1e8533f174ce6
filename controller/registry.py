"""The registry: the controller's state and every transition of it.

Owns how registrations, config changes, operator approvals, lease renewal and other
replicas' writes change the `State` (controller.state), and the decisions
(controller.admission) that follow from it. Pure: no I/O, no clock (`now` comes in), no
asyncio, and leases are signed by an injected `Signer`; the service persists and
publishes what it decides. Not thread-safe: one owner (the service works on a `copy`).

Rules:
- An edge registers under a configured name with the configured public key, else
  `UnknownEdge` / `KeyMismatch` and nothing changes. Its routes are never an error:
  admission decides each one (serving, pending or refused).
- A registration whose endpoint is inside another edge's admitted or held route is
  refused (`InvalidRequest` naming endpoints[i]) and nothing changes.
- A registration replaces the edge's endpoints and advertised routes (kept in canonical
  route order, so the order an edge lists them in is no change). A route still
  advertised keeps its `since`; a route the edge holds gets the hold's `since` back; any
  other is a newcomer. After each decision an admitted newcomer's `since` is the version
  the change makes and a refused route's is None: a refused route holds no place.
  Approvals of routes the edge no longer advertises are dropped.
- Holds: an admitted route its edge stops advertising, or an edge's admitted routes when
  its configured key changes, keep their place for the edge's name for
  admission.hold_time seconds (none when 0). A hold ends when the edge advertises the
  route again, when it runs out (at the next change or `renew` from then on), or when
  the edge is no longer configured.
- Leases exist exactly for serving routes. A route that starts serving gets a lease
  signed at the new version, expiring at int(now) + lease_ttl; `renew` re-signs leases
  with less than lease_ttl / 2 left.
- The version rises by one on every change of the state (edges, advertised routes,
  approvals, leases) and never otherwise; `adopt` only ever moves it forward, and only
  to a state the controller key signed (controller.state_signature).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace

from controller.admission import (
    Decision,
    RouteState,
    decide,
    endpoint_conflict,
    hold_end,
    serving_map,
)
from controller.change import Change
from controller.config import AllowedEdge, ControllerConfig, overlay_addresses
from controller.errors import (
    AmbiguousRoute,
    InvalidRequest,
    KeyMismatch,
    NotPending,
    UnknownEdge,
    UnknownRoute,
)
from controller.state import (
    Advertised,
    EdgeRecord,
    Hold,
    State,
    hold_order,
    pair_order,
)
from controller.state_signature import Refusal, Signature, refusal
from isthmus.convert import Registration
from isthmus.endpoint import IPAddress, unicast_problem
from isthmus.ids import EdgeName
from isthmus.keys import PublicKey
from isthmus.lease import Lease
from isthmus.lpm import route_sort_key as route_order
from isthmus.routemap import Network, RouteMap

Signer = Callable[[PublicKey, Network, int, int], Lease]  # (edge key, route, version, expires)

_ROUTE_KINDS = {
    RouteState.SERVING: "route_serving",
    RouteState.PENDING: "route_pending",
    RouteState.REFUSED: "route_refused",
}


class Registry:
    """The state, the config it is decided under, and the decisions. One owner."""

    __slots__ = ("_by_key", "_config", "_decisions", "_overlay", "_signer", "_state")

    def __init__(
        self,
        state: State,
        config: ControllerConfig,
        signer: Signer,
        overlay: tuple[IPAddress, ...] = (),
    ) -> None:
        """Start from a stored state under `config`.

        `overlay` holds more of the controller's own addresses; those of the config
        (controller.config.overlay_addresses) and the edges' endpoint IPs are added. The
        state is taken as stored: call `apply_config` next to remove what the config no
        longer allows and sign what now serves.
        """
        self._state = state
        self._config = config
        self._signer = signer
        self._overlay = overlay
        self._by_key = {e.public_key.raw: e for e in config.edges}
        self._decisions = self._decide(state)

    @property
    def state(self) -> State:
        return self._state

    @property
    def version(self) -> int:
        return self._state.version

    @property
    def decisions(self) -> tuple[Decision, ...]:
        """One decision per advertised (edge, route), in decision order."""
        return self._decisions

    @property
    def config(self) -> ControllerConfig:
        return self._config

    def copy(self) -> Registry:
        """An independent registry with the same state (everything held is immutable)."""
        other = Registry.__new__(Registry)
        other._state = self._state
        other._config = self._config
        other._signer = self._signer
        other._overlay = self._overlay
        other._by_key = self._by_key
        other._decisions = self._decisions
        return other

    def allowed_key(self, key: PublicKey) -> AllowedEdge | None:
        """The configured edge whose public key is `key`, if any."""
        return self._by_key.get(key.raw)

    def snapshot(self) -> RouteMap:
        """The map: every registered edge with its serving routes and their leases."""
        return serving_map(self._state, self._decisions)

    def register(
        self, reg: Registration, now: float
    ) -> tuple[tuple[Decision, ...], tuple[Change, ...]]:
        """Replace the edge's endpoints and advertised routes; decide every route again.

        Returns the decisions for `reg.routes` in their order (a route listed twice
        counts once), and what changed.

        Raises:
            UnknownEdge: the name is not configured.
            KeyMismatch: the key is not the configured one.
            InvalidRequest: an endpoint is inside another edge's admitted or held route.
        """
        allowed = next((e for e in self._config.edges if e.name == reg.name), None)
        if allowed is None:
            raise UnknownEdge(f"edge {reg.name!r} is not configured on this controller")
        if reg.public_key != allowed.public_key:
            raise KeyMismatch(
                f"public key {reg.public_key} is not the key configured for edge {reg.name!r}"
            )
        live = [h for h in self._state.holds if h.until > now]
        conflict = endpoint_conflict(reg.name, reg.endpoints, self._decisions, live)
        if conflict is not None:
            i, why = conflict
            raise InvalidRequest(
                f"endpoints[{i}]: {why}; allowed: an endpoint outside every other edge's "
                "serving, pending or held routes (routing it into the overlay would loop "
                "the tunnel)"
            )
        old = self._state.edge(reg.name)
        since: dict[Network, int | None] = {
            h.route: h.since for h in self._state.holds if h.edge == reg.name
        }
        if old is not None:
            since.update((a.route, a.since) for a in old.advertised)
        routes = tuple(dict.fromkeys(reg.routes))
        record = EdgeRecord(
            name=reg.name,
            public_key=allowed.public_key,
            endpoints=reg.endpoints,
            advertised=tuple(Advertised(r, since.get(r)) for r in sorted(routes, key=route_order)),
        )
        edges = sorted((*(e for e in self._state.edges if e.name != reg.name), record), key=_name)
        approvals = tuple(
            (name, route)
            for name, route in self._state.approvals
            if name != reg.name or route in routes
        )
        gone = set(old.routes) - set(routes) if old is not None else set()
        holds = [h for h in self._state.holds if h.edge != reg.name or h.route not in routes]
        holds += self._holds(reg.name, gone, now)
        changes = self._commit(
            replace(self._state, edges=tuple(edges), approvals=approvals, holds=tuple(holds)),
            now,
        )
        mine = {d.route: d for d in self._decisions if d.edge == reg.name}
        return tuple(mine[r] for r in routes), changes

    def apply_config(self, config: ControllerConfig, now: float) -> tuple[Change, ...]:
        """Decide everything again under `config`.

        Edges no longer configured, or whose configured key changed, are removed with
        their approvals and leases; the admitted routes of an edge whose key changed are
        held for its name (the claim is the name's, not the key's), the holds of an edge
        no longer configured end. The routes of configured edges stay advertised; a route
        now outside the edge's allowed routes becomes refused (not_allowed). Stored
        endpoints that are not unicast (a state from before that rule) are dropped.
        """
        configured = {e.name: e for e in config.edges}
        removed: list[Change] = []
        edges: list[EdgeRecord] = []
        holds = [h for h in self._state.holds if h.edge in configured]
        for e in self._state.edges:
            conf = configured.get(e.name)
            if conf is None:
                why = "no longer configured"
            elif conf.public_key != e.public_key:
                why = "its configured public key changed"
                holds += self._holds(e.name, set(e.routes), now, config.admission.hold_time)
            else:
                # A state stored before the unicast rule may hold endpoints it now refuses.
                eps = tuple(ep for ep in e.endpoints if unicast_problem(ep.ip) is None)
                edges.append(e if eps == e.endpoints else replace(e, endpoints=eps))
                continue
            removed.append(Change("edge_removed", e.name, None, f"edge {e.name!r} {why}"))
        kept = {e.name for e in edges}
        candidate = replace(
            self._state,
            edges=tuple(edges),
            approvals=tuple(a for a in self._state.approvals if a[0] in kept),
            leases=tuple(lease for lease in self._state.leases if lease[0] in kept),
            holds=tuple(holds),
        )
        self._config = config
        self._by_key = {e.public_key.raw: e for e in config.edges}
        changes = self._commit(candidate, now)
        return tuple(removed) + tuple(c for c in changes if c.kind != "edge_removed")

    def approve(
        self, route: Network, edge: EdgeName | None, now: float
    ) -> tuple[Decision, tuple[Change, ...]]:
        """Approve a pending route; it serves from the version this makes.

        Raises:
            UnknownRoute: no edge (or not `edge`) advertises `route`.
            AmbiguousRoute: several edges advertise `route` and `edge` is None.
            NotPending: the route is serving or refused.
        """
        found = [d for d in self._decisions if d.route == route and edge in (None, d.edge)]
        if not found:
            if edge is None:
                raise UnknownRoute(f"no edge advertises route {route}")
            raise UnknownRoute(f"edge {edge!r} does not advertise route {route}")
        if len(found) > 1:
            names = ", ".join(repr(d.edge) for d in found)
            raise AmbiguousRoute(
                f"route {route} is advertised by edges {names}; name one with --edge"
            )
        d = found[0]
        if d.state is RouteState.SERVING:
            how = " (approved)" if d.approved else ""
            raise NotPending(f"route {route} of edge {d.edge!r} is serving already{how}")
        if d.state is RouteState.REFUSED:
            raise NotPending(
                f"route {route} of edge {d.edge!r} is refused, not pending: {d.detail}"
            )
        approvals = tuple(sorted((*self._state.approvals, (d.edge, route)), key=pair_order))
        changes = self._commit(replace(self._state, approvals=approvals), now)
        decision = next(x for x in self._decisions if x.edge == d.edge and x.route == route)
        approved = Change(
            "route_approved",
            d.edge,
            route,
            f"route {route} of edge {d.edge!r} approved by an operator; it serves",
        )
        rest = tuple(c for c in changes if not (c.edge == d.edge and c.route == route))
        return decision, (approved, *rest)

    def renew(self, now: float) -> tuple[Change, ...]:
        """End the holds that ran out (deciding again), then re-sign every lease with less
        than lease_ttl / 2 left; one version for all leases."""
        base = self.version
        ended: tuple[Change, ...] = ()
        if any(h.until <= now for h in self._state.holds):
            ended = self._commit(self._state, now)
        return ended + self._renew_leases(now, bump=self.version == base)

    def _renew_leases(self, now: float, bump: bool) -> tuple[Change, ...]:
        ttl = self._config.lease_ttl
        due = [item for item in self._state.leases if item[2].expires - now < ttl / 2]
        if not due:
            return ()
        version = self.version + 1 if bump else self.version
        keys = {e.name: e.public_key for e in self._state.edges}
        fresh = {
            (name, route): self._signer(keys[name], route, version, int(now) + ttl)
            for name, route, _ in due
        }
        leases = tuple(
            (name, route, fresh.get((name, route), lease))
            for name, route, lease in self._state.leases
        )
        self._state = replace(self._state, version=version, leases=leases)
        counts: dict[EdgeName, int] = {}
        for name, _, _ in due:
            counts[name] = counts.get(name, 0) + 1
        return tuple(
            Change("leases_renewed", name, None, f"{n} lease(s) of edge {name!r} re-signed")
            for name, n in sorted(counts.items())
        )

    def adopt(self, state: State, *, signature: Signature) -> Refusal | None:
        """Take a stored state (another replica's write) if `controller.state_signature.
        refusal` allows it; else change nothing and return why."""
        refused = refusal(self._state, state, signature)
        if refused is None and state.version > self.version:
            self._state = state
            self._decisions = self._decide(state)
        return refused

    # --- internals ------------------------------------------------------------------------

    def _decide(self, state: State) -> tuple[Decision, ...]:
        endpoints = (ep.ip for e in state.edges for ep in e.endpoints)
        allowed = {e.name: e for e in self._config.edges}
        overlay = (*self._overlay, *overlay_addresses(self._config), *endpoints)
        return decide(state, allowed, self._config.admission, overlay)

    def _holds(
        self, edge: EdgeName, routes: set[Network], now: float, hold_time: int | None = None
    ) -> list[Hold]:
        """Holds for those of `routes` of `edge` admitted now, ending hold_time from `now`."""
        hold_time = self._config.admission.hold_time if hold_time is None else hold_time
        if hold_time <= 0:
            return []
        return [
            Hold(edge, d.route, d.since, int(now) + hold_time)
            for d in self._decisions
            if d.edge == edge and d.route in routes and d.state is not RouteState.REFUSED
        ]

    def _commit(self, candidate: State, now: float) -> tuple[Change, ...]:
        """End run-out holds, decide `candidate`, set each route's place, give leases to
        exactly its serving routes, and take it.

        `candidate` holds the old version; the version rises by one if anything differs
        from the current state, and new leases are signed at that version.
        """
        version = self.version + 1
        holds = tuple(sorted((h for h in candidate.holds if h.until > now), key=hold_order))
        candidate = replace(candidate, holds=holds)
        # Decide, store each route's place, and decide again until the places hold still
        # (twice at most: a route that got its place, or lost it by a refusal, is decided
        # from its new place), so the decisions are what a restart or another replica
        # deciding the stored state gets: the same states and the same reasons.
        for _ in range(3):
            decisions = self._decide(candidate)
            places = {
                (d.edge, d.route): (None if d.state is RouteState.REFUSED else d.since)
                for d in decisions
            }
            if all(
                places[(e.name, a.route)] == a.since for e in candidate.edges for a in e.advertised
            ):
                break
            candidate = replace(
                candidate,
                edges=tuple(
                    replace(
                        e,
                        advertised=tuple(
                            Advertised(a.route, places[(e.name, a.route)]) for a in e.advertised
                        ),
                    )
                    for e in candidate.edges
                ),
            )
        keys = {e.name: e.public_key for e in candidate.edges}
        held = {(name, route): lease for name, route, lease in candidate.leases}
        expires = int(now) + self._config.lease_ttl
        leases: list[tuple[EdgeName, Network, Lease]] = []
        for d in decisions:
            if d.state is RouteState.SERVING:
                lease = held.get((d.edge, d.route))
                if lease is None:
                    lease = self._signer(keys[d.edge], d.route, version, expires)
                leases.append((d.edge, d.route, lease))
        candidate = replace(candidate, leases=tuple(sorted(leases, key=pair_order)))
        changes = _changes(self._state, self._decisions, candidate, decisions, now)
        if candidate != self._state:
            # `since` and leases are in the candidate already; decisions ignore the version.
            self._state = replace(candidate, version=version)
        self._decisions = decisions
        return changes


def _changes(
    old: State,
    old_decisions: Iterable[Decision],
    new: State,
    new_decisions: Iterable[Decision],
    at: float,
) -> tuple[Change, ...]:
    """What differs between two states and their decisions, edges in name order."""
    changes: list[Change] = []
    before = {e.name: e for e in old.edges}
    after = {e.name: e for e in new.edges}
    for name in sorted(before.keys() - after.keys()):
        changes.append(Change("edge_removed", name, None, f"edge {name!r} removed"))
    for name in sorted(after.keys() - before.keys()):
        eps = ", ".join(str(x) for x in after[name].endpoints) or "none"
        changes.append(Change("edge_joined", name, None, f"edge {name!r} joined (endpoints {eps})"))
    for name in sorted(after.keys() & before.keys()):
        if after[name].endpoints != before[name].endpoints:
            eps = ", ".join(str(x) for x in after[name].endpoints) or "none"
            changes.append(Change("edge_updated", name, None, f"edge {name!r} endpoints now {eps}"))
    held = {(h.edge, h.route): h for h in old.holds}
    holds = {(h.edge, h.route): h for h in new.holds}
    for pair in sorted(holds.keys() - held.keys(), key=_key):
        h = holds[pair]
        detail = (
            f"route {h.route} of edge {h.edge!r} is held for it until {hold_end(h.until)} "
            "(admission.hold_time): no other edge takes its place before"
        )
        changes.append(Change("route_held", h.edge, h.route, detail))
    for pair in sorted(held.keys() - holds.keys(), key=_key):
        h = held[pair]
        if h.until <= at:
            why = f"it ran out at {hold_end(h.until)}"
        elif any(a.route == h.route for a in (after[h.edge].advertised if h.edge in after else ())):
            why = "the edge advertises the route again"
        else:
            why = "the edge is no longer configured"
        detail = f"the hold of route {h.route} for edge {h.edge!r} ended: {why}"
        changes.append(Change("hold_ended", h.edge, h.route, detail))
    was = {(d.edge, d.route): d for d in old_decisions}
    now = {(d.edge, d.route): d for d in new_decisions}
    for (name, route), d in sorted(now.items(), key=lambda item: _key(item[0])):
        prev = was.get((name, route))
        if prev is not None and (prev.state, prev.reason, prev.approved) == (
            d.state,
            d.reason,
            d.approved,
        ):
            continue
        detail = d.detail or f"route {route} of edge {name!r} serves"
        changes.append(Change(_ROUTE_KINDS[d.state], name, route, detail))
    for name, route in sorted(was.keys() - now.keys(), key=_key):
        if name in after:
            detail = f"edge {name!r} no longer advertises route {route}"
            changes.append(Change("route_withdrawn", name, route, detail))
    return tuple(changes)


def _name(edge: EdgeRecord) -> str:
    return edge.name


def _key(pair: tuple[EdgeName, Network]) -> tuple[object, ...]:
    return pair_order(pair)
