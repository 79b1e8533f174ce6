"""The `Store` port: where the controller keeps its state across restarts and shares it
between replicas.

Owns the contract every adapter keeps, the replica id and what the adapters share:

- `controller.file_store.FileStore` (one controller): `<state_dir>/state.json`, written
  atomically; liveness in memory; the audit log `<state_dir>/audit.log`.
- `controller.etcd_store.EtcdStore` (replicas): the same JSON document at `<prefix>state`
  saved by compare-and-set, liveness records under an etcd lease, audit entries as keys.

Rules: `save()` succeeds only if the stored state is the one this store last loaded, saved
or yielded from `changes()`, and `state.version` is newer than that one's; else
`StoreConflict` (the caller loads, adopts and decides again). A stored state that does not
parse is an error naming the file or key; it is never silently replaced. Every failure is
a `StoreError` naming the file or the etcd endpoint(s) and the reason; etcd calls are
bounded by timeouts and never hang. Blocking work runs in threads, never on the loop.
An audit line that does not decode is skipped with a warning when reading
(`decode_lines`). Holds public data only (no private keys).

Trust: `load()` returns only a state this controller may take as it is (the file store's
own file; in etcd, a document the controller key signed, see controller.state_signature);
`changes()` yields every newer document with what its signature says, and the caller
decides (`Registry.adopt`): a shared store may hold what someone else wrote.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from controller.audit import AuditEntry
from controller.audit import decode as decode_audit
from controller.errors import StoreConflict as StoreConflict
from controller.errors import StoreError as StoreError
from controller.liveness import Liveness
from controller.state import State
from controller.state_signature import Signature
from isthmus.ids import EdgeName
from isthmus.logfmt import kv

HEALTH_TIMEOUT = 1.0  # seconds a linearizable read may take for the store to count healthy

log = logging.getLogger("controller.store")


@dataclass(frozen=True, slots=True)
class Stored:
    """A state read from the store, with what its signature says."""

    state: State
    signature: Signature


def default_replica() -> str:
    """This process's replica id: `<hostname>-<pid>`."""
    return f"{socket.gethostname()}-{os.getpid()}"


class Store(Protocol):
    """The controller's persisted state, liveness records and other replicas' writes."""

    replica: str

    async def load(self) -> State:
        """The stored state, or `State()` (version 0) when nothing is stored.

        Raises:
            StoreError: the store is unreachable, or the stored state is invalid or (in a
                shared store) not signed by the controller key.
        """
        ...

    async def save(self, state: State) -> None:
        """Persist `state` durably before returning (compare-and-set, see the module).

        Raises:
            StoreConflict: another replica wrote first; nothing was written.
            StoreError: not written (or, on a timeout, perhaps written: load to know).
        """
        ...

    def changes(self) -> AsyncIterator[Stored]:
        """States written by others (replicas, or not), in order, each with what its
        signature says; ends when the store is closed.

        Raises:
            StoreError: a stored state is invalid.
        """
        ...

    async def healthy(self) -> bool:
        """Whether the store answers a linearizable read within `HEALTH_TIMEOUT`."""
        ...

    async def set_liveness(self, info: Liveness) -> None:
        """Record `info` for its edge; best effort: logs failures, never raises."""
        ...

    async def liveness(self) -> dict[EdgeName, Liveness]:
        """Every edge's latest record, whichever replica wrote it.

        Raises:
            StoreError: the store is unreachable.
        """
        ...

    async def append_audit(self, entries: Sequence[AuditEntry]) -> None:
        """Append `entries` to the audit log, durably, after the save they describe.

        Raises:
            StoreError: not (or, on a timeout, perhaps partly) written.
        """
        ...

    async def audit(self, limit: int) -> list[AuditEntry]:
        """The last `limit` audit entries, oldest first.

        Raises:
            StoreError: the store is unreachable or the log unreadable.
        """
        ...

    async def close(self) -> None:
        """Stop background work, end `changes()`, drop this replica's liveness records."""
        ...


def decode_lines(lines: Sequence[bytes], where: str) -> list[AuditEntry]:
    """The entries of audit lines; a line that does not decode is skipped and logged."""
    out: list[AuditEntry] = []
    for line in lines:
        try:
            out.append(decode_audit(line))
        except ValueError as e:
            log.warning(kv("audit_entry_invalid", where=where, reason=str(e)))
    return out
