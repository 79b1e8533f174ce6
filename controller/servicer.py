"""The gRPC shell of the edges' calls: Challenge, Register, Watch and Report over
`isthmus.v1.Controller`, on top of one replica's `controller.service.ControllerService`.

Owns the handlers and nothing they decide:

- Every call but Challenge is authenticated first (controller.authentication); the
  request's `name` must be the calling edge.
- Register decides, persists and publishes through the service's change path, then
  replies with every route's decision (`controller.admin.route_status`).
- Watch sends the current map, then every newer version, each encoded once for all
  watchers (`controller.history`, hence `add_to_server`'s serializer), and ends the stream
  (PERMISSION_DENIED) when the edge's key is no longer configured. Its stream makes the
  edge connected here (controller.presence) until the last one ends.
- Report records what the edge applied or refused (bounded, public text) in its liveness.

Refusals go through `controller.errors.to_status`, the one mapping of controller errors to
gRPC status codes and messages; each is logged (the edge, the peer, the code and the
reason; never an auth value) and counted.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, Final

import grpc

from controller.admin import route_status
from controller.admission import RouteState
from controller.authentication import CallAuthentication
from controller.errors import ControllerError, KeyMismatch, RateLimited, StoreError, to_status
from controller.guard import REGISTER, REPORT, SERVICE, WATCH
from isthmus.logfmt import kv
from isthmus.mapsig import EPOCH_LEN, epoch_text
from isthmus.v1 import isthmus_pb2 as pb
from isthmus.v1 import isthmus_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from controller.service import ControllerService

# The controller service's logger: these lines are part of its log.
log = logging.getLogger("controller.service")

# What an edge may say about a refused map: kept (for `isthmus edges`) and logged, bounded.
MAX_REPORT_ERROR: Final = 1024


def add_to_server(service: ControllerService, server: grpc.aio.Server) -> None:
    """Serve the edge calls of `service` on `server`.

    Like the generated `add_ControllerServicer_to_server`, except that Watch yields maps
    already encoded (`controller.history` encodes each update once for all watchers).
    """
    servicer = ControllerServicer(service)
    handlers = {
        "Challenge": grpc.unary_unary_rpc_method_handler(
            servicer.Challenge,
            request_deserializer=pb.ChallengeRequest.FromString,
            response_serializer=pb.ChallengeResponse.SerializeToString,
        ),
        "Register": grpc.unary_unary_rpc_method_handler(
            servicer.Register,
            request_deserializer=pb.RegisterRequest.FromString,
            response_serializer=pb.RegisterResponse.SerializeToString,
        ),
        "Watch": grpc.unary_stream_rpc_method_handler(
            servicer.Watch,
            request_deserializer=pb.WatchRequest.FromString,
            response_serializer=_encoded,
        ),
        "Report": grpc.unary_unary_rpc_method_handler(
            servicer.Report,
            request_deserializer=pb.ReportRequest.FromString,
            response_serializer=pb.ReportResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


def _encoded(message: bytes | pb.MapUpdate) -> bytes:
    return message if isinstance(message, bytes) else message.SerializeToString()


class ControllerServicer(pb_grpc.ControllerServicer):
    """`isthmus.v1.Controller` over one replica's service; holds no state of its own."""

    def __init__(self, service: ControllerService) -> None:
        self._service = service
        self._calls = CallAuthentication(
            service.auth,
            lambda key: service.registry.allowed_key(key),
            service.guard,
            service.edge_limits,
            service.presence.watching,
        )

    async def Challenge(
        self, request: pb.ChallengeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ChallengeResponse:
        return pb.ChallengeResponse(challenge=self._calls.challenge())

    async def Register(
        self, request: pb.RegisterRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RegisterResponse:
        name, _ = await self._calls.authenticate(context, REGISTER, request)
        try:
            decisions, version = await self._service.register(request)
        except RateLimited as e:
            limit = to_status(e).message
            await self._service.guard.limited(context, REGISTER, e.kind, limit, edge=name)
        except ControllerError as e:
            status = to_status(e)
            self._service.metrics.count_refused_call(status.code.name)
            log.log(
                logging.ERROR if isinstance(e, StoreError) else logging.WARNING,
                kv(
                    "registration_refused",
                    edge=name,
                    peer=context.peer(),
                    code=status.code.name,
                    reason=str(e),
                ),
            )
            await context.abort(status.code, status.message)
        log.info(
            kv(
                "registered",
                edge=name,
                peer=context.peer(),
                version=version,
                endpoints=tuple(request.endpoints),
                serving=tuple(str(d.route) for d in decisions if d.state == RouteState.SERVING),
                pending=tuple(str(d.route) for d in decisions if d.state == RouteState.PENDING),
                refused=tuple(str(d.route) for d in decisions if d.state == RouteState.REFUSED),
            )
        )
        return pb.RegisterResponse(version=version, routes=[route_status(d) for d in decisions])

    async def Watch(
        self, request: pb.WatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        name, key = await self._calls.authenticate(context, WATCH, request)
        peer = context.peer()
        log.info(
            kv(
                "watch_started",
                edge=name,
                peer=peer,
                known_version=request.known_version,
                known_epoch=epoch_text(request.known_epoch),
            )
        )
        self._service.presence.watch_started(name)
        sent: int | None = None
        # The edge's lineage; a map of another epoch goes out whole (controller.history).
        epoch = bytes(request.known_epoch)
        try:
            # The liveness write is not awaited (announce spawns it): the map goes out
            # first even when the store is slow.
            await self._service.presence.announce(name)
            async with aclosing(self._service.watch_maps()) as maps:
                async for m in maps:
                    allowed = self._service.registry.allowed_key(key)
                    if allowed is None or allowed.name != name:
                        ended = to_status(
                            KeyMismatch(f"edge {name!r} is no longer configured with this key")
                        )
                        log.warning(kv("watch_ended_by_config", edge=name, reason=ended.message))
                        await context.abort(ended.code, ended.message)
                    base = request.known_version if sent is None else sent
                    yield self._service.map_update(base, epoch, m)
                    sent, epoch = m.version, m.epoch
        finally:
            self._service.presence.watch_ended(name)
            log.info(kv("watch_ended", edge=name, peer=peer, version=sent))

    async def Report(
        self, request: pb.ReportRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ReportResponse:
        name, _ = await self._calls.authenticate(context, REPORT, request)
        error = request.error[:MAX_REPORT_ERROR]
        info = await self._service.presence.record(
            name,
            applied_version=request.applied_version,
            last_error=error,
            reported_at=self._service.now(),
            epoch=bytes(request.epoch[:EPOCH_LEN]).hex(),
        )
        await self._service.presence.put(info)
        if error:
            log.warning(
                kv(
                    "map_refused_by_edge",
                    edge=name,
                    refused_version=request.refused_version,
                    applied_version=request.applied_version,
                    reason=error,
                )
            )
        else:
            log.info(kv("map_applied", edge=name, version=request.applied_version))
        return pb.ReportResponse()
