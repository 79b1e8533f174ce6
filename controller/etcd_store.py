"""`EtcdStore`: the `Store` (controller.store) shared by every replica of one controller,
in etcd (through controller.etcd).

- The key `<prefix>state` holds the state's JSON document (`controller.state.dumps`)
  signed with the controller key (`controller.state_signature`); a save is a transaction
  comparing the key's mod revision with the one this store last loaded, saved or saw.
- Whoever can write etcd can write that key. `load()` refuses a document that is not
  signed by the controller key (a `StoreError` saying how to recover); `changes()` yields
  every newer document with its `Signature`, for `Registry.adopt` to refuse. A refused
  document's mod revision counts as seen, so the next save replaces it with a signed one;
  its version never counts as stored.
- TLS (`tls`, controller.etcd.tls_context): https:// endpoints, the cluster's CA, this
  replica's client certificate.
- `<prefix>live/<edge>` holds a `Liveness` put with an etcd lease the store keeps alive
  every ttl/3, so the records of a replica that dies vanish after the TTL.
- Audit entries are keys `<prefix>audit/<version, 20 digits>-<index, 6 digits>` (so key
  order is time order), put right after the save of the state they describe (etcd.py's
  `put_if` takes one key per transaction); the replica that saved a version is its only
  writer. After each append the oldest keys beyond `[audit] max_entries` are deleted.

Every failure is a `StoreError` naming the etcd endpoint(s) and the reason; etcd calls are
bounded by timeouts and never hang. Blocking calls run in threads, never on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from controller.audit import AuditEntry
from controller.audit import encode as encode_audit
from controller.bounds import AuditConfig
from controller.errors import StoreConflict, StoreError
from controller.etcd import EtcdClient
from controller.etcd_wire import IDLE, EtcdError, WatchBatch, prefix_end
from controller.liveness import Liveness, liveness_from_json, liveness_to_json
from controller.state import State, dumps, loads
from controller.state_signature import Signature, sign, verify
from controller.store import HEALTH_TIMEOUT, Stored, decode_lines
from isthmus.ids import EdgeName
from isthmus.logfmt import kv
from isthmus.signing import ControllerKey

WATCH_IDLE = 30.0  # seconds after which a silent watch stream is reopened (after a reload)
_RETRY_FIRST, _RETRY_MAX = 0.5, 5.0  # backoff while no etcd endpoint answers a watch

# The store's logger: these lines are part of its log.
log = logging.getLogger("controller.store")
T = TypeVar("T")


class EtcdStore:
    """A `Store` in etcd, shared by every replica of one controller (see the module)."""

    def __init__(
        self,
        endpoints: Sequence[str],
        prefix: str,
        replica: str,
        timeout: float = 2.0,
        liveness_ttl: int = 10,
        retry_for: float = 5.0,
        audit: AuditConfig | None = None,
        *,
        key: ControllerKey,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """`timeout`: seconds one request may take at one endpoint; `retry_for`: seconds a
        call keeps going round the endpoints when none answers (see controller.etcd);
        `key`: the controller key, which signs and checks the state document; `tls`: the
        context for https:// endpoints (controller.etcd.tls_context).

        Raises:
            ValueError: no endpoints, one that is neither http:// nor https://host:port,
                or `tls` and the endpoints' scheme disagree.
        """
        self.replica = replica
        self._key = key
        self._client = EtcdClient(endpoints, timeout, retry_for, tls)
        self._state_key = (prefix + "state").encode("utf-8")
        self._live_prefix = (prefix + "live/").encode("utf-8")
        self._audit_prefix = (prefix + "audit/").encode("utf-8")
        self._audit_keep = (audit or AuditConfig()).max_entries
        self._ttl = liveness_ttl
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="etcd-store")
        self._lock = asyncio.Lock()  # orders save() against changes() bookkeeping
        self._revision: int | None = None  # mod revision of the state last loaded/saved/seen
        self._known: int | None = None  # and its version
        self._lease: int | None = None
        self._lease_lock = asyncio.Lock()
        self._keepalive: asyncio.Task[None] | None = None
        self._live: dict[EdgeName, Liveness] = {}  # what this replica reported, to re-put
        self._queues: set[asyncio.Queue[WatchBatch | EtcdError | None]] = set()
        self._closed = asyncio.Event()
        self._pool_down = False
        self.watch_idle = WATCH_IDLE

    @property
    def endpoints(self) -> tuple[str, ...]:
        return self._client.endpoints

    @property
    def state_key(self) -> str:
        return self._state_key.decode("utf-8")

    async def load(self) -> State:
        async with self._lock:
            try:
                result = await self._run(self._client.range, self._state_key)
            except EtcdError as e:
                raise StoreError(f"cannot read etcd key {self.state_key!r}: {e}") from None
            if not result.kvs:
                self._revision, self._known = 0, 0
                return State()
            kv_ = result.kvs[0]
            state, signature = await self._decode(kv_.value, kv_.mod_revision)
            if signature is not Signature.VALID:
                self._revision = kv_.mod_revision  # a later save may replace it
                what = "not signed" if signature is Signature.MISSING else "signed by another key"
                log.error(
                    kv("state_refused", key=self.state_key, signature=signature.value, at="load")
                )
                raise StoreError(
                    f"etcd key {self.state_key!r} (mod revision {kv_.mod_revision}) holds a "
                    f"state {what}: anyone with write access to etcd may have written it, so "
                    "it is not adopted; restore a signed copy from a backup, or delete the "
                    "key to start from an empty state (the edges register again)"
                )
            self._revision, self._known = kv_.mod_revision, state.version
            return state

    async def save(self, state: State) -> None:
        data = await asyncio.to_thread(lambda: sign(dumps(state), self._key))
        async with self._lock:
            self._check_open()
            if self._known is not None and state.version <= self._known:
                raise StoreConflict(
                    f"cannot save version {state.version} to etcd key {self.state_key!r}: "
                    f"version {self._known} is stored; only a newer version may replace it"
                )
            expected = self._revision or 0
            try:
                result = await self._run(
                    self._client.put_if, self._state_key, data, mod_revision=expected
                )
            except EtcdError as e:
                raise StoreError(f"cannot save to etcd key {self.state_key!r}: {e}") from None
            if result.succeeded:
                self._revision, self._known = result.revision, state.version
                return
            now = result.kvs[0] if result.kvs else None
            if result.ambiguous and now is not None and now.value == data:
                # An endpoint that timed out had applied this very write.
                self._revision, self._known = now.mod_revision, state.version
                return
            found = f"mod revision {now.mod_revision}" if now is not None else "no key"
            wanted = f"mod revision {expected}" if expected else "no key"
            raise StoreConflict(
                f"etcd key {self.state_key!r} was written by another replica: "
                f"found {found}, expected {wanted}"
            )

    async def changes(self) -> AsyncIterator[Stored]:
        queue: asyncio.Queue[WatchBatch | EtcdError | None] = asyncio.Queue()
        self._queues.add(queue)
        delay = _RETRY_FIRST
        try:
            while not self._closed.is_set():
                # (Re)start: read the key, yield it if it moved, then watch from there.
                try:
                    result = await self._run(self._client.range, self._state_key)
                except EtcdError as e:
                    log.warning(kv("store_watch_retry", reason=str(e), retry_in=delay))
                    await self._sleep(delay)
                    delay = min(delay * 2, _RETRY_MAX)
                    continue
                delay = _RETRY_FIRST
                if result.kvs:
                    stored = await self._seen(result.kvs[0].value, result.kvs[0].mod_revision)
                    if stored is not None:
                        yield stored
                watch = self._client.watch(
                    self._state_key,
                    result.revision + 1,
                    _handing_to(asyncio.get_running_loop(), queue),
                    idle_timeout=self.watch_idle,
                )
                try:
                    while True:
                        item = await queue.get()
                        if item is None:
                            return
                        if isinstance(item, EtcdError):
                            log.info(kv("store_watch_reopen", reason=str(item)))
                            break
                        for event in item.events:
                            if event.type == "put":
                                stored = await self._seen(event.kv.value, event.kv.mod_revision)
                                if stored is not None:
                                    yield stored
                            else:
                                log.warning(
                                    kv("store_state_deleted", key=self.state_key, by="etcd")
                                )
                        if item.canceled:
                            log.log(
                                logging.DEBUG if item.reason == IDLE else logging.INFO,
                                kv(
                                    "store_watch_reopen",
                                    reason=item.reason or "canceled",
                                    compact_revision=item.compact_revision,
                                ),
                            )
                            break
                finally:
                    watch.close()
                    while not queue.empty():  # drop what the old stream still delivered
                        queue.get_nowait()
        finally:
            self._queues.discard(queue)

    async def healthy(self) -> bool:
        if self._closed.is_set():
            return False
        loop = asyncio.get_running_loop()
        probes = [
            loop.run_in_executor(
                self._pool,
                functools.partial(
                    self._client.range,
                    self._state_key,
                    count_only=True,
                    endpoint=ep,
                    timeout=HEALTH_TIMEOUT,
                ),
            )
            for ep in self._client.endpoints
        ]
        try:
            for probe in asyncio.as_completed(probes):
                with contextlib.suppress(EtcdError):
                    await probe
                    return True
            return False
        finally:
            for p in probes:  # the rest end within HEALTH_TIMEOUT; nobody needs their result
                p.add_done_callback(_discard_result)

    async def set_liveness(self, info: Liveness) -> None:
        if self._closed.is_set():
            return
        self._live[info.edge] = info
        try:
            await self._put_liveness(info)
        except (EtcdError, StoreError) as e:
            log.warning(kv("liveness_not_stored", edge=info.edge, reason=str(e)))

    async def liveness(self) -> dict[EdgeName, Liveness]:
        try:
            result = await self._run(
                self._client.range, self._live_prefix, prefix_end(self._live_prefix)
            )
        except EtcdError as e:
            raise StoreError(
                f"cannot read etcd keys {self._live_prefix.decode()!r}*: {e}"
            ) from None
        out: dict[EdgeName, Liveness] = {}
        for item in result.kvs:
            try:
                info = liveness_from_json(item.value)
            except ValueError as e:
                log.warning(kv("liveness_invalid", key=item.key.decode(errors="replace"), reason=e))
                continue
            out[info.edge] = info
        return out

    async def append_audit(self, entries: Sequence[AuditEntry]) -> None:
        if not entries:
            return
        self._check_open()
        index: dict[int, int] = {}
        items: list[tuple[bytes, bytes]] = []
        for e in entries:
            i = index[e.version] = index.get(e.version, -1) + 1
            items.append((self._audit_prefix + b"%020d-%06d" % (e.version, i), encode_audit(e)))

        def put_all() -> None:
            for key, value in items:
                self._client.put(key, value)
            self._prune_audit()

        try:
            await self._run(put_all)
        except EtcdError as e:
            raise StoreError(
                f"cannot write etcd keys {self._audit_prefix.decode()!r}*: {e}"
            ) from None

    async def audit(self, limit: int) -> list[AuditEntry]:
        if limit <= 0:
            return []
        try:
            result = await self._run(
                self._client.range, self._audit_prefix, prefix_end(self._audit_prefix)
            )
        except EtcdError as e:
            raise StoreError(
                f"cannot read etcd keys {self._audit_prefix.decode()!r}*: {e}"
            ) from None
        kvs = sorted(result.kvs, key=lambda item: item.key)[-limit:]
        return decode_lines([item.value for item in kvs], f"etcd {self._audit_prefix.decode()!r}")

    async def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        for queue in self._queues:
            queue.put_nowait(None)
        if self._keepalive is not None:
            self._keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keepalive
        lease, self._lease = self._lease, None
        if lease is not None:
            try:
                await self._run(self._client.lease_revoke, lease, retry_for=0.0)
            except EtcdError as e:
                log.warning(kv("liveness_lease_not_revoked", reason=str(e), expires_in=self._ttl))
        self._pool_down = True
        self._pool.shutdown(wait=False)

    # -- internals ---------------------------------------------------------------------------

    def _prune_audit(self) -> None:
        """Delete the oldest audit keys beyond `max_entries` (blocking; in the pool)."""
        end = prefix_end(self._audit_prefix)
        count = self._client.range(self._audit_prefix, end, count_only=True).count
        if count <= self._audit_keep:
            return
        old = self._client.range(
            self._audit_prefix, end, keys_only=True, limit=count - self._audit_keep
        )
        if old.kvs:
            self._client.delete(self._audit_prefix, old.kvs[-1].key + b"\0")

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._pool_down:
            raise StoreError(f"the etcd store at {', '.join(self.endpoints)} is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    async def _decode(self, data: bytes, mod_revision: int) -> tuple[State, Signature]:
        def decode() -> tuple[State, Signature]:
            document, signature = verify(data, self._key.public)
            return loads(document), signature

        try:
            return await asyncio.to_thread(decode)
        except ValueError as e:
            raise StoreError(
                f"etcd key {self.state_key!r} (mod revision {mod_revision}) is not a valid "
                f"controller state ({e}); restore it from a backup or delete the key to start "
                "from an empty state"
            ) from None

    async def _seen(self, data: bytes, mod_revision: int) -> Stored | None:
        """The state at `mod_revision` if it is newer than what this store knows."""
        async with self._lock:
            if mod_revision <= (self._revision or 0):
                return None  # known: loaded, saved here, or seen before
            state, signature = await self._decode(data, mod_revision)
            self._revision = mod_revision
            if signature is Signature.VALID:
                self._known = max(self._known or 0, state.version)
            return Stored(state, signature)

    async def _sleep(self, seconds: float) -> None:
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
        # arrives as the store closes, and the loop sleeping here would never end.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._closed.wait()

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise StoreError(f"the etcd store at {', '.join(self.endpoints)} is closed")

    def _live_key(self, edge: EdgeName) -> bytes:
        return self._live_prefix + edge.encode("utf-8")

    async def _ensure_lease(self) -> int:
        async with self._lease_lock:
            if self._lease is None:
                lease = await self._run(self._client.lease_grant, self._ttl)
                self._lease = lease.id
            if self._keepalive is None:
                self._keepalive = asyncio.get_running_loop().create_task(
                    self._keep_alive(), name="etcd-liveness-keepalive"
                )
            return self._lease

    async def _put_liveness(self, info: Liveness, *, only_if_absent: bool = False) -> None:
        """Put `info` under this replica's lease. A connected record always wins (this
        replica serves the edge now); a disconnected one replaces only this replica's own
        record or none, so it never hides the replica the edge moved to."""
        key, data = self._live_key(info.edge), liveness_to_json(info)
        for attempt in (1, 2):
            lease = await self._ensure_lease()
            try:
                if info.connected and not only_if_absent:
                    await self._run(self._client.put, key, data, lease=lease)
                    return
                if not only_if_absent:
                    mine = await self._run(
                        self._client.put_if, key, data, owner_lease=lease, lease=lease
                    )
                    if mine.succeeded or mine.kvs:
                        return  # written, or another replica's record stays
                await self._run(self._client.put_if, key, data, mod_revision=0, lease=lease)
                return
            except EtcdError as e:
                if not e.not_found or attempt == 2:
                    raise
                self._drop_lease(lease)  # expired while etcd was unreachable: grant anew

    def _drop_lease(self, lease: int) -> None:
        if self._lease == lease:
            self._lease = None

    async def _keep_alive(self) -> None:
        interval = max(self._ttl / 3, 0.5)
        while True:
            await asyncio.sleep(interval)
            try:
                lease = self._lease
                if lease is not None:
                    ttl = await self._run(self._client.lease_keepalive, lease, retry_for=0.0)
                    if ttl > 0:
                        continue
                    log.warning(kv("liveness_lease_expired", lease=f"{lease:x}"))
                    self._drop_lease(lease)
                # The records went with the lease: put back those no other replica replaced.
                for info in list(self._live.values()):
                    await self._put_liveness(info, only_if_absent=True)
            except EtcdError as e:
                log.warning(kv("liveness_keepalive_failed", reason=str(e)))


def _handing_to(
    loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[WatchBatch | EtcdError | None]
) -> Callable[[WatchBatch | EtcdError], None]:
    """A watch callback (run on the watch thread) that queues each item on `loop`."""

    def deliver(item: WatchBatch | EtcdError) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening
            loop.call_soon_threadsafe(queue.put_nowait, item)

    return deliver


def _discard_result(f: asyncio.Future[Any]) -> None:
    if not f.cancelled():
        f.exception()
