"""The map cache: the last applied map in <state_dir>/map.pb, for a fail-static start.

Owns the file format (a serialized isthmus.v1.MapSnapshot, through isthmus.convert)
and writing it atomically (tmp file, fsync, rename, fsync of the directory). A missing,
corrupt or invalid cache is logged and treated as "no map": it never stops the edge.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from google.protobuf.message import DecodeError

from isthmus.convert import WireError, map_from_pb, map_to_pb
from isthmus.logfmt import kv
from isthmus.routemap import RouteMap
from isthmus.v1 import isthmus_pb2 as pb

FILE_NAME = "map.pb"

_log = logging.getLogger(__name__)


class MapCache:
    """The cache file (implements edge.ports.MapStore)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE_NAME

    def load(self) -> RouteMap | None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            _log.info(kv("map_cache_empty", path=self.path))
            return None
        except OSError as e:
            _log.warning(kv("map_cache_unreadable", path=self.path, error=e.strerror))
            return None
        try:
            msg = pb.MapSnapshot.FromString(data)
            route_map = map_from_pb(msg)
        except (DecodeError, WireError, ValueError) as e:
            _log.warning(kv("map_cache_invalid", path=self.path, error=str(e) or "not a map"))
            return None
        _log.info(kv("map_cache_loaded", path=self.path, version=route_map.version))
        return route_map

    def save(self, route_map: RouteMap) -> None:
        data = map_to_pb(route_map).SerializeToString()
        tmp = self.path.with_name(f".{FILE_NAME}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            dfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as e:
            _log.warning(kv("map_cache_not_saved", path=self.path, error=e.strerror))
