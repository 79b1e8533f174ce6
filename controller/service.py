"""One replica of the controller: the change path, its background work, and the backend
of both gRPC shells (controller.servicer for the edges, controller.admin for the operator).

Owns three things:

- The order of a change: decide (registry, on a copy) -> persist (store) -> commit ->
  publish -> reply, so a reply or a published version is always stored first and a
  failed write leaves nothing changed. A write that loses to another replica
  (StoreConflict) adopts the stored state and decides again, at most SAVE_ATTEMPTS times.
  Changes are serialised by one asyncio.Lock and shielded from cancellation (a caller
  that goes away never leaves the store and memory apart). Every registry Change is
  logged as one line, counted (controller.metrics) and appended to the audit log
  (`Store.append_audit`, controller.audit) with its actor: the edge's name for an edge's
  own registration, "operator" for an approval, "config" for a config (re)load,
  "controller" for lease renewal. The audit append follows the save; when it fails the
  change stands and the failure is logged (`audit_not_stored`) and counted.
- The background work of one replica: following the states other replicas write
  (`Store.changes` -> `Registry.adopt` -> publish) and re-signing leases every
  RENEW_INTERVAL seconds through the same change path.

- What the shells read: the registry's decisions and version, this replica's liveness
  view (controller.presence, whose writes run as this service's background tasks), the
  maps to watch and their encoded updates, and the audit log.

Protobuf stays at the seam: a RegisterRequest goes through `isthmus.convert` (a malformed
one is `InvalidRequest`); every failure is a `ControllerError` the shells report through
`controller.errors.to_status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import Any, Final, TypeVar

from controller.admin import EdgeView
from controller.admission import Decision
from controller.audit import CONFIG, CONTROLLER, OPERATOR, AuditEntry
from controller.audit import entries as audit_entries
from controller.change import Change
from controller.config import ControllerConfig
from controller.errors import InvalidRequest, StoreConflict, StoreError
from controller.guard import REGISTER, EdgeLimits, Guard
from controller.history import History
from controller.metrics import ControllerMetrics
from controller.presence import Presence
from controller.publisher import Publisher
from controller.registry import Registry
from controller.state import State
from controller.state_signature import Signature
from controller.store import Store
from isthmus.auth import Authenticator
from isthmus.convert import WireError, registration_from_pb
from isthmus.ids import EdgeName
from isthmus.logfmt import kv
from isthmus.mapsig import SignedMap
from isthmus.routemap import Network
from isthmus.v1 import isthmus_pb2 as pb

log = logging.getLogger("controller.service")

__all__ = ["ControllerService"]

T = TypeVar("T")
Step = Callable[[Registry, float], tuple[T, tuple[Change, ...]]]
Clock = Callable[[], float]

SAVE_ATTEMPTS: Final = 3
RENEW_INTERVAL: Final = 60.0
FOLLOW_RETRY: Final = 1.0
# Changes worth an operator's attention.
_WARN_CHANGES: Final = frozenset({"route_refused", "route_pending", "edge_removed"})


class ControllerService:
    """Owns the registry; shares the store, history and publisher given by the root.

    The backend of the edge calls (controller.servicer) and the
    `controller.admin.AdminBackend` of this replica.
    """

    def __init__(
        self,
        registry: Registry,
        config: ControllerConfig,
        store: Store,
        auth: Authenticator,
        history: History,
        publisher: Publisher,
        clock: Clock,
        metrics: ControllerMetrics | None = None,
    ) -> None:
        self._registry = registry
        self._config = config
        self._store = store
        self._history = history
        self._publisher = publisher
        self._clock = clock
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._metrics = metrics or ControllerMetrics()
        self._auth = auth
        self._presence = Presence(store, self._spawn)
        self._guard = Guard(
            config.limits,
            auth,
            lambda key: self._registry.allowed_key(key) is not None,
            self._metrics,
        )
        self._edge_limits = EdgeLimits(config.limits)

    # --- the registry and its changes ---------------------------------------------------

    @property
    def registry(self) -> Registry:
        return self._registry

    @property
    def config(self) -> ControllerConfig:
        return self._config

    @property
    def metrics(self) -> ControllerMetrics:
        return self._metrics

    @property
    def guard(self) -> Guard:
        """The interceptor that must front this service's listener (controller.guard)."""
        return self._guard

    @property
    def edge_limits(self) -> EdgeLimits:
        """Each edge's call limits (controller.guard), checked after authentication."""
        return self._edge_limits

    @property
    def watch_streams(self) -> int:
        """Watch streams open at this replica."""
        return self._presence.streams

    async def register(self, request: pb.RegisterRequest) -> tuple[tuple[Decision, ...], int]:
        """Decide, persist and publish a registration: the decisions in route order and the
        map version that holds them (read inside the change, not after it: another
        replica's state adopted meanwhile may have raised the registry's version).

        A request that decodes takes one of its edge's Register calls (`EdgeLimits`) before
        anything is decided: the limit guards the change path, while a malformed request
        is refused for what it is.

        Raises:
            ControllerError: InvalidRequest, RateLimited, UnknownEdge, KeyMismatch, or
                StoreError (not persisted; nothing changed).
        """
        try:
            reg = registration_from_pb(request)
        except WireError as e:
            raise InvalidRequest(str(e)) from None
        self._edge_limits.check(reg.name, REGISTER)

        def step(
            r: Registry, now: float
        ) -> tuple[tuple[tuple[Decision, ...], int], tuple[Change, ...]]:
            decisions, changes = r.register(reg, now)
            return (decisions, r.version), changes

        return await self._change(step, actor=reg.name)

    async def apply_config(
        self, config: ControllerConfig, actor: str = CONFIG
    ) -> tuple[Change, ...]:
        """Switch to a new config (edges, admission policy, lease_ttl); persist and publish.

        Raises:
            StoreError: the change could not be persisted; the old config stays.
        """

        def step(r: Registry, now: float) -> tuple[tuple[Change, ...], tuple[Change, ...]]:
            changes = r.apply_config(config, now)
            return changes, changes

        changes = await self._change(step, actor)
        self._config = config
        return changes

    async def renew(self) -> tuple[Change, ...]:
        """Re-sign the leases that are past half their lifetime (a new version if any).

        Raises:
            StoreError: not persisted; the old leases stay.
        """

        def step(r: Registry, now: float) -> tuple[tuple[Change, ...], tuple[Change, ...]]:
            changes = r.renew(now)
            return changes, changes

        return await self._change(step, CONTROLLER)

    async def _change(self, step: Step[T], actor: str) -> T:
        return await asyncio.shield(self._change_locked(step, actor))

    async def _change_locked(self, step: Step[T], actor: str) -> T:
        async with self._lock:
            attempt = 1
            while True:
                candidate = self._registry.copy()
                now = self._clock()
                result, changes = step(candidate, now)
                if candidate.version == self._registry.version:
                    # Nothing to persist, but keep the candidate: a reload may change the
                    # config (a new edge not yet registered, a policy) without the state.
                    self._registry = candidate
                    return result
                try:
                    await self._store.save(candidate.state)
                except StoreConflict as e:
                    self._metrics.count_store_conflict()
                    log.warning(
                        kv(
                            "store_conflict",
                            version=candidate.version,
                            attempt=attempt,
                            reason=str(e),
                        )
                    )
                    if attempt >= SAVE_ATTEMPTS:
                        raise
                    attempt += 1
                    # load() returns only a state the controller key signed.
                    await self._adopt_locked(await self._store.load(), Signature.VALID)
                    continue
                self._registry = candidate
                await self._publish()
                _log_changes(changes, candidate.version, actor)
                self._metrics.count_changes(changes)
                await self._audit(audit_entries(changes, candidate.version, actor, now))
                return result

    async def _audit(self, entries: list[AuditEntry]) -> None:
        try:
            await self._store.append_audit(entries)
        except StoreError as e:
            self._metrics.count_audit_failure(len(entries))
            log.error(kv("audit_not_stored", entries=len(entries), reason=str(e)))

    async def _adopt_locked(self, state: State, signature: Signature) -> None:
        before = self._registry.version
        refused = self._registry.adopt(state, signature=signature)
        if refused is not None:
            # Keep serving the current state; health is the store's reachability, unchanged.
            self._metrics.count_state_refused(refused)
            log.warning(
                kv(
                    "state_refused",
                    version=state.version,
                    current=before,
                    reason=refused.value,
                    signature=signature.value,
                )
            )
        elif self._registry.version != before:
            log.info(kv("state_adopted", version=self._registry.version, previous=before))
            await self._publish()

    async def _publish(self) -> None:
        # Signed once here, for every watcher (controller.history).
        # A state written by an older replica has no epoch: it stays in this one's lineage.
        epoch = self._registry.state.epoch or self._history.epoch
        signed = self._history.add(self._registry.snapshot(), epoch)
        await self._publisher.publish(signed)

    # --- background work ----------------------------------------------------------------

    def start(self, renew_interval: float = RENEW_INTERVAL) -> None:
        """Start following other replicas' writes and renewing leases."""
        self._spawn(self._follow(), "follow-store")
        self._spawn(self._renew_every(renew_interval), "renew-leases")

    async def close(self) -> None:
        """Stop the background work; wait for pending liveness writes."""
        tasks = list(self._tasks)
        for t in tasks:
            if t.get_name() in ("follow-store", "renew-leases"):
                t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _follow(self) -> None:
        while True:
            try:
                async for stored in self._store.changes():
                    async with self._lock:
                        await self._adopt_locked(stored.state, stored.signature)
                return  # the store was closed
            except StoreError as e:
                log.error(kv("store_feed_failed", reason=str(e), retry_in=FOLLOW_RETRY))
                await asyncio.sleep(FOLLOW_RETRY)

    async def _renew_every(self, interval: float) -> None:
        while True:
            try:
                await self.renew()
            except StoreError as e:
                log.error(kv("lease_renewal_failed", reason=str(e), retry_in=interval))
            await asyncio.sleep(interval)

    # --- what the edge calls use (controller.servicer) --------------------------------

    @property
    def auth(self) -> Authenticator:
        """What the edge calls are authenticated with (controller.authentication)."""
        return self._auth

    @property
    def presence(self) -> Presence:
        """This replica's watch streams and liveness records."""
        return self._presence

    def now(self) -> float:
        """The controller's clock (unix seconds)."""
        return self._clock()

    def watch_maps(self) -> AsyncGenerator[SignedMap, None]:
        """The current map, then every newer one this replica publishes."""
        return self._publisher.watch()

    def map_update(self, base: int, base_epoch: bytes, target: SignedMap) -> bytes:
        """The encoded update from version `base` of `base_epoch` to `target`, with its
        signature (controller.history): the whole map when the epochs differ."""
        return self._history.update(base, base_epoch, target)

    # --- the Admin backend (controller.admin.AdminBackend) ------------------------------

    def route_statuses(self) -> tuple[Decision, ...]:
        return self._registry.decisions

    @property
    def version(self) -> int:
        return self._registry.version

    async def approve(
        self, route: Network, edge: EdgeName | None, actor: str = OPERATOR
    ) -> Decision:
        """Approve a pending route through the change path; `actor` goes to the audit log.

        Raises:
            ControllerError: NotPending, UnknownRoute, AmbiguousRoute, or StoreError.
        """
        return await self._change(lambda r, now: r.approve(route, edge, now), actor)

    @property
    def epoch(self) -> bytes:
        """The epoch of the maps this replica publishes."""
        return self._history.epoch

    async def history(self, limit: int) -> list[AuditEntry]:
        """The last `limit` audit entries, oldest first.

        Raises:
            StoreError: the audit log cannot be read.
        """
        return await self._store.audit(limit)

    async def edge_statuses(self) -> tuple[EdgeView, ...]:
        live = await self._presence.shared()
        records = {e.name: e for e in self._registry.state.edges}
        views = []
        for allowed in self._config.edges:
            record = records.get(allowed.name)
            info = live.get(allowed.name)
            state = "never" if info is None else "connected" if info.connected else "disconnected"
            views.append(
                EdgeView(
                    name=allowed.name,
                    public_key=allowed.public_key,
                    endpoints=record.endpoints if record is not None else (),
                    state=state,
                    replica=info.replica if info is not None else "",
                    applied_version=info.applied_version if info is not None else 0,
                    last_error=info.last_error if info is not None else "",
                    reported_at=info.reported_at if info is not None else 0.0,
                    epoch=bytes.fromhex(info.epoch) if info is not None else b"",
                )
            )
        return tuple(sorted(views, key=lambda v: v.name))


def _log_changes(changes: tuple[Change, ...], version: int, actor: str) -> None:
    for c in changes:
        fields: dict[str, object] = {"edge": c.edge, "version": version, "actor": actor}
        if c.route is not None:
            fields["route"] = c.route
        if c.detail:
            fields["detail"] = c.detail
        log.log(
            logging.WARNING if c.kind in _WARN_CHANGES else logging.INFO,
            kv(c.kind, **fields),
        )
