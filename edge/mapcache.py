"""The map cache: the last applied map in <state_dir>/map.pb, for a fail-static start.

Owns the file format (a serialized full isthmus.v1.MapUpdate with every route's lease,
the map's epoch and its signature, through isthmus.convert) and writing it atomically
(tmp file, fsync, rename, fsync of the directory). The cache holds the whole map as
signed (no route left out), so its signature verifies again at load and its (epoch,
version) is the floor the edge never goes below across restarts (edge.lineage). A
loaded map is trusted no more than one from the wire: its signature and its leases are
verified against the controller's key. A missing, corrupt or invalid cache, or one with
a bad signature or lease, is logged and treated as "no map": it never stops the edge.
A cache written before maps were signed (no epoch, no signature) is loaded on its
leases alone, as an unsigned map: the next signed map from the controller replaces it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from google.protobuf.message import DecodeError

from edge.leases import LeaseError, verify_leases
from isthmus.convert import WireError, signed_map_from_pb, signed_map_to_pb
from isthmus.logfmt import kv
from isthmus.mapsig import SignedMap, epoch_text, verify_map
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

    def load(self) -> SignedMap | None:
        """The cached map, whole (expired routes are still in it: `edge.leases.drop_expired`
        leaves them out), or None."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            _log.info(kv("map_cache_empty", path=self.path))
            return None
        except OSError as e:
            _log.warning(kv("map_cache_unreadable", path=self.path, error=e.strerror))
            return None
        try:
            signed = signed_map_from_pb(pb.MapUpdate.FromString(data))
        except (DecodeError, WireError, ValueError) as e:
            _log.warning(kv("map_cache_invalid", path=self.path, error=str(e) or "not a map"))
            return None
        route_map = signed.route_map
        if (signed.signature or signed.epoch) and not verify_map(self._controller_key, signed):
            _log.error(
                kv(
                    "map_cache_ignored",
                    path=self.path,
                    version=route_map.version,
                    detail="the map signature does not verify against controller_public_key",
                )
            )
            return None
        try:
            _, dropped = verify_leases(route_map, self._controller_key, self._clock())
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
        _log.info(
            kv(
                "map_cache_loaded",
                path=self.path,
                version=route_map.version,
                epoch=epoch_text(signed.epoch),
                signed=bool(signed.signature),
            )
        )
        return signed

    def save(self, signed: SignedMap) -> None:
        data = signed_map_to_pb(signed).SerializeToString(deterministic=True)
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
