"""The controller's persisted state: the admitted map and its version.

Owns the on-disk format and durable writes. `Store` is the port the service depends on;
`FileStore` keeps `<state_dir>/state.json`:

    {"version": 7,
     "edges": [{"name": "vpc-a", "public_key": "<base64>",
                "endpoints": ["198.18.0.11:51820"], "routes": ["10.244.0.0/16"]}]}

Writes are atomic: a temporary file in the same directory is written, fsynced and renamed
over state.json, then the directory is fsynced, so a crash leaves the old or the new state,
never a mix. A file that does not parse or breaks a map rule is an error naming the file;
it is never silently replaced. Holds public data only (no private keys).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

from controller.errors import StoreError
from isthmus.endpoint import Endpoint
from isthmus.ids import parse_edge_name
from isthmus.keys import PublicKey
from isthmus.routemap import EdgeEntry, RouteMap, parse_route

STATE_FILE = "state.json"
_TOP_KEYS = {"version", "edges"}
_EDGE_KEYS = {"name", "public_key", "endpoints", "routes"}


class Store(Protocol):
    """Where the controller keeps its map across restarts."""

    def load(self) -> RouteMap:
        """The stored map, or an empty map at version 0 when nothing is stored.

        Raises:
            StoreError: the stored state is unreadable or invalid.
        """
        ...

    def save(self, state: RouteMap) -> None:
        """Persist `state` durably before returning.

        Raises:
            StoreError: the state could not be written; the stored state is unchanged.
        """
        ...


class FileStore:
    """A `Store` in one JSON file under the state directory."""

    __slots__ = ("_dir", "_path")

    def __init__(self, state_dir: Path) -> None:
        self._dir = state_dir
        self._path = state_dir / STATE_FILE

    @property
    def path(self) -> Path:
        return self._path

    @classmethod
    def open(cls, state_dir: Path) -> FileStore:
        """Create `state_dir` (mode 0700) if missing and return a store on it.

        Raises:
            StoreError: the directory cannot be created or is not a directory.
        """
        try:
            state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create state directory {state_dir}: {_reason(e)}") from None
        return cls(state_dir)

    def load(self) -> RouteMap:
        try:
            text = self._path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return RouteMap(version=0)
        except (OSError, UnicodeDecodeError) as e:
            raise StoreError(f"cannot read {self._path}: {_reason(e)}") from None
        try:
            return decode(json.loads(text))
        except ValueError as e:  # JSONDecodeError, MapError and the parsers' errors
            raise StoreError(
                f"{self._path} is not a valid controller state file ({e}); "
                "restore it from a backup or remove it to start from an empty map"
            ) from None

    def save(self, state: RouteMap) -> None:
        data = (json.dumps(encode(state), indent=1, sort_keys=True) + "\n").encode("utf-8")
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


def encode(state: RouteMap) -> dict[str, Any]:
    """The JSON document for `state`."""
    return {
        "version": state.version,
        "edges": [
            {
                "name": e.name,
                "public_key": e.public_key.to_base64(),
                "endpoints": [str(x) for x in e.endpoints],
                "routes": [str(r) for r in e.routes],
            }
            for e in state.edges
        ],
    }


def decode(doc: object) -> RouteMap:
    """Parse and validate a JSON document written by `encode`.

    Raises:
        ValueError: naming the JSON path of the first problem.
    """
    if not isinstance(doc, dict) or set(doc) != _TOP_KEYS:
        raise ValueError("the top level must be an object with keys 'version' and 'edges'")
    version = doc["version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"version: {version!r} is not a non-negative integer")
    if not isinstance(doc["edges"], list):
        raise ValueError("edges: not a list")
    edges = []
    for i, item in enumerate(doc["edges"]):
        where = f"edges[{i}]"
        if not isinstance(item, dict) or set(item) != _EDGE_KEYS:
            raise ValueError(f"{where}: not an object with keys {', '.join(sorted(_EDGE_KEYS))}")
        try:
            if not isinstance(item["public_key"], str):
                raise ValueError("public_key: not a string")
            for key in ("endpoints", "routes"):
                if not isinstance(item[key], list):
                    raise ValueError(f"{key}: not a list")
            edges.append(
                EdgeEntry(
                    name=parse_edge_name(item["name"]),
                    public_key=PublicKey.from_base64(item["public_key"]),
                    endpoints=tuple(Endpoint.parse(x) for x in item["endpoints"]),
                    routes=tuple(parse_route(x) for x in item["routes"]),
                )
            )
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
    return RouteMap(version=version, edges=tuple(edges)).validate()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _reason(e: BaseException) -> str:
    return str(getattr(e, "strerror", None) or e)
