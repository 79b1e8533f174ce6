"""The map cache: the last applied map in <state_dir>/map.pb, for a fail-static start.

Owns the file format (a serialized full isthmus.v1.MapUpdate with every route's lease,
through isthmus.convert) and writing it atomically (tmp file, fsync, rename, fsync of
the directory). A loaded map is trusted no more than one from the wire: its leases are
verified against the controller's key (edge.leases) and routes whose lease ran out are
left out. A missing, corrupt or invalid cache, or one with a bad lease, is logged and
treated as "no map": it never stops the edge.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from google.protobuf.message import DecodeError

from edge.leases import LeaseError, verify_leases
from isthmus.convert import WireError, map_from_pb, map_to_pb
from isthmus.logfmt import kv
from isthmus.routemap import RouteMap
from isthmus.signing import ControllerPublicKey
from isthmus.v1 import isthmus_pb2 as pb

FILE_NAME = "map.pb"

_log = logging.getLogger(__name__)


class MapCache:
    """The cache file (implements edge.ports.MapStore)."""

    def __init__(
        self,
        state_dir: Path,
        controller_key: ControllerPublicKey,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = state_dir / FILE_NAME
        self._controller_key = controller_key
        self._clock = clock

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
            route_map = map_from_pb(pb.MapUpdate.FromString(data))
        except (DecodeError, WireError, ValueError) as e:
            _log.warning(kv("map_cache_invalid", path=self.path, error=str(e) or "not a map"))
            return None
        try:
            usable, dropped = verify_leases(route_map, self._controller_key, self._clock())
        except LeaseError as e:
            _log.error(
                kv(
                    "map_cache_ignored",
                    path=self.path,
                    version=route_map.version,
                    error=str(e),
                    detail="a lease does not verify against controller_public_key",
                )
            )
            return None
        for edge, route in dropped:
            _log.warning(kv("lease_expired", edge=edge, route=route, version=route_map.version))
        _log.info(kv("map_cache_loaded", path=self.path, version=usable.version))
        return usable

    def save(self, route_map: RouteMap) -> None:
        data = map_to_pb(route_map).SerializeToString(deterministic=True)
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
