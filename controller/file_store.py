"""`FileStore`: the `Store` (controller.store) of a single controller, in its state
directory.

- The state is `<state_dir>/state.json` (`controller.state.dumps`), written atomically: a
  temporary file in the same directory is written, fsynced and renamed over state.json,
  then the directory is fsynced, so a crash leaves the old or the new state, never a mix.
- Liveness stays in memory. Nothing else writes, so `changes()` never yields.
- The state is not signed (controller.state_signature): state_dir is the controller's own
  (mode 0700, beside or holding the signing key), so whoever can write state.json can read
  the key too, and a signature would prove nothing. Nothing is ever adopted from it.
- The audit log is `<state_dir>/audit.log`, JSON lines (`controller.audit.encode`),
  appended to and rotated by size (controller.auditfile, `[audit] max_bytes` and `keep`);
  a line that does not decode is skipped with a warning when reading, and reading goes
  across the rotated files.

Blocking file work runs in threads, never on the loop. Every failure is a `StoreError`
naming the file and the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from controller.audit import AuditEntry
from controller.audit import encode as encode_audit
from controller.auditfile import AuditFile
from controller.bounds import AuditConfig
from controller.errors import StoreConflict, StoreError
from controller.liveness import Liveness
from controller.state import State, dumps, loads
from controller.store import Stored, decode_lines, default_replica
from isthmus.ids import EdgeName

STATE_FILE = "state.json"
AUDIT_FILE = "audit.log"

# The store's logger: these lines are part of its log.
log = logging.getLogger("controller.store")


class FileStore:
    """A `Store` in one JSON file under the state directory, for a single controller."""

    __slots__ = (
        "_audit",
        "_audit_file",
        "_closed",
        "_dir",
        "_known",
        "_live",
        "_path",
        "replica",
    )

    def __init__(
        self, state_dir: Path, replica: str | None = None, audit: AuditConfig | None = None
    ) -> None:
        self.replica = replica or default_replica()
        self._dir = state_dir
        self._path = state_dir / STATE_FILE
        self._audit = state_dir / AUDIT_FILE
        audit = audit or AuditConfig()
        self._audit_file = AuditFile(self._audit, audit.max_bytes, audit.keep)
        self._known: int | None = None  # the version last loaded or saved
        self._live: dict[EdgeName, Liveness] = {}
        self._closed = asyncio.Event()

    @property
    def path(self) -> Path:
        return self._path

    @classmethod
    def open(
        cls, state_dir: Path, replica: str | None = None, audit: AuditConfig | None = None
    ) -> FileStore:
        """Create `state_dir` (mode 0700) if missing and return a store on it (blocking).

        Raises:
            StoreError: the directory cannot be created or is not a directory.
        """
        try:
            state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create state directory {state_dir}: {_reason(e)}") from None
        return cls(state_dir, replica, audit)

    async def load(self) -> State:
        state = await asyncio.to_thread(self._read)
        self._known = state.version
        return state

    async def save(self, state: State) -> None:
        if self._known is not None and state.version <= self._known:
            raise StoreConflict(
                f"cannot save version {state.version} to {self._path}: "
                f"version {self._known} is stored; only a newer version may replace it"
            )
        await asyncio.to_thread(self._write, dumps(state))
        self._known = state.version

    async def changes(self) -> AsyncIterator[Stored]:
        await self._closed.wait()
        return
        yield  # makes this an async generator that ends at close() without yielding

    async def healthy(self) -> bool:
        if self._closed.is_set():
            return False
        return await asyncio.to_thread(os.access, self._dir, os.W_OK)

    async def set_liveness(self, info: Liveness) -> None:
        self._live[info.edge] = info

    async def liveness(self) -> dict[EdgeName, Liveness]:
        return dict(self._live)

    async def append_audit(self, entries: Sequence[AuditEntry]) -> None:
        if entries:
            await asyncio.to_thread(self._append, b"".join(encode_audit(e) for e in entries))

    async def audit(self, limit: int) -> list[AuditEntry]:
        lines = await asyncio.to_thread(self._tail, limit)
        return decode_lines(lines, str(self._audit))[-limit:] if limit > 0 else []

    async def close(self) -> None:
        self._closed.set()

    @property
    def audit_path(self) -> Path:
        return self._audit

    def _append(self, data: bytes) -> None:
        try:
            self._audit_file.append(data)
        except OSError as e:
            raise StoreError(f"cannot append to {self._audit}: {_reason(e)}") from None

    def _tail(self, limit: int) -> list[bytes]:
        try:
            return self._audit_file.tail(limit)
        except OSError as e:
            raise StoreError(f"cannot read {self._audit}: {_reason(e)}") from None

    def _read(self) -> State:
        try:
            data = self._path.read_bytes()
        except FileNotFoundError:
            return State()
        except OSError as e:
            raise StoreError(f"cannot read {self._path}: {_reason(e)}") from None
        try:
            return loads(data)
        except ValueError as e:  # JSON, UTF-8 and the parsers' errors
            raise StoreError(
                f"{self._path} is not a valid controller state file ({e}); "
                "restore it from a backup or remove it to start from an empty state"
            ) from None

    def _write(self, data: bytes) -> None:
        tmp: str | None = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{STATE_FILE}.", suffix=".tmp", dir=self._dir)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path)
            tmp = None
            _fsync_dir(self._dir)
        except OSError as e:
            raise StoreError(f"cannot write {self._path}: {_reason(e)}") from None
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _reason(e: BaseException) -> str:
    return str(getattr(e, "strerror", None) or e)
