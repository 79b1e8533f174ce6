"""The gRPC shell of the controller: Register and Watch over `isthmus.v1.Controller`.

Owns the order of a change: decide (registry, on a copy) -> persist (store) -> commit ->
publish -> reply, so a reply or a published version is always on disk first, and a
failed write leaves nothing changed. Changes are serialised by one asyncio.Lock and
shielded from cancellation (a caller that goes away never leaves disk and memory apart).
Protobuf stays here: requests go through `isthmus.convert`, errors through
`status_code`, the one mapping of controller errors to gRPC status codes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import aclosing

import grpc

from controller.config import AllowedEdge
from controller.errors import (
    ControllerError,
    InvalidRequest,
    KeyMismatch,
    RouteConflict,
    RouteNotAllowed,
    StoreError,
    UnknownEdge,
)
from controller.publisher import Publisher
from controller.registry import Registry, Withdrawn
from controller.store import Store
from isthmus.convert import Registration, WireError, map_to_pb, registration_from_pb
from isthmus.logfmt import kv
from isthmus.v1 import isthmus_pb2 as pb
from isthmus.v1 import isthmus_pb2_grpc as pb_grpc

log = logging.getLogger("controller.service")


def status_code(error: ControllerError) -> grpc.StatusCode:
    """The gRPC status code a controller error is reported with (see controller.errors)."""
    match error:
        case UnknownEdge():
            return grpc.StatusCode.NOT_FOUND
        case KeyMismatch() | RouteNotAllowed():
            return grpc.StatusCode.PERMISSION_DENIED
        case RouteConflict():
            return grpc.StatusCode.ALREADY_EXISTS
        case InvalidRequest():
            return grpc.StatusCode.INVALID_ARGUMENT
        case StoreError():
            return grpc.StatusCode.UNAVAILABLE
        case _:
            return grpc.StatusCode.INTERNAL


class ControllerService(pb_grpc.ControllerServicer):
    """Owns the registry; shares the store and publisher given by the composition root."""

    def __init__(self, registry: Registry, store: Store, publisher: Publisher) -> None:
        self._registry = registry
        self._store = store
        self._publisher = publisher
        self._lock = asyncio.Lock()

    @property
    def registry(self) -> Registry:
        return self._registry

    async def register(self, reg: Registration) -> int:
        """Admit `reg`, persist and publish the new map; return its version.

        Raises:
            ControllerError: refused (see Registry.register) or not persisted (StoreError).
        """
        return await asyncio.shield(self._register(reg))

    async def _register(self, reg: Registration) -> int:
        async with self._lock:
            candidate = self._registry.copy()
            version = candidate.register(reg)
            await self._commit(candidate)
            return version

    async def apply_config(self, edges: Iterable[AllowedEdge]) -> tuple[Withdrawn, ...]:
        """Switch to a new set of allowed edges; persist and publish any withdrawal.

        Raises:
            StoreError: the withdrawal could not be persisted; the old config stays.
            ValueError: duplicate names or keys in `edges`.
        """
        return await asyncio.shield(self._apply_config(tuple(edges)))

    async def _apply_config(self, edges: tuple[AllowedEdge, ...]) -> tuple[Withdrawn, ...]:
        async with self._lock:
            candidate = self._registry.copy()
            withdrawn = candidate.apply_config(edges)
            await self._commit(candidate)
            return withdrawn

    async def _commit(self, candidate: Registry) -> None:
        snapshot = candidate.snapshot()
        if snapshot.version != self._registry.version:
            await asyncio.to_thread(self._store.save, snapshot)
        self._registry = candidate
        await self._publisher.publish(snapshot)

    async def Register(
        self, request: pb.RegisterRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.RegisterResponse:
        peer = context.peer()
        try:
            try:
                reg = registration_from_pb(request)
            except WireError as e:
                raise InvalidRequest(str(e)) from None
            version = await self.register(reg)
        except ControllerError as e:
            code = status_code(e)
            log.log(
                logging.ERROR if isinstance(e, StoreError) else logging.WARNING,
                kv(
                    "registration_refused",
                    edge=request.name[:63],
                    peer=peer,
                    code=code.name,
                    reason=str(e),
                ),
            )
            await context.abort(code, str(e))
        log.info(
            kv(
                "registration_admitted",
                edge=reg.name,
                peer=peer,
                version=version,
                public_key=reg.public_key,
                endpoints=reg.endpoints,
                routes=reg.routes,
            )
        )
        return pb.RegisterResponse(version=version)

    async def Watch(
        self, request: pb.WatchRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncIterator[pb.MapSnapshot]:
        if self._registry.allowed(request.name) is None:
            error = UnknownEdge(f"edge {request.name[:63]!r} is not configured on this controller")
            log.warning(kv("watch_refused", edge=request.name[:63], reason=str(error)))
            await context.abort(status_code(error), str(error))
        log.info(kv("watch_started", edge=request.name, peer=context.peer()))
        sent = 0
        try:
            async with aclosing(self._publisher.watch()) as maps:
                async for snapshot in maps:
                    yield map_to_pb(snapshot)
                    sent = snapshot.version
        finally:
            log.info(kv("watch_ended", edge=request.name, version=sent))
