"""The edge's authenticated calls to a controller: channel options, timeouts, metadata.

Owns the edge's side of the call contract (proto/isthmus/v1/isthmus.proto,
docs/controller.md) below the watch loop (edge.control). Rules:
- Every call but Challenge is authenticated: a fresh Challenge, then the call with
  `isthmus-auth-bin` = auth_value(edge key, controller key, method, challenge, request).
- Reports are best effort: a failed Report is logged and never raised.
- REFUSALS are the codes with which a controller refuses a registration; any other code
  means it could not be reached, could not authenticate us, or failed.
"""

from __future__ import annotations

import logging

import grpc
from google.protobuf.message import Message

from isthmus.auth import AUTH_METADATA, auth_value
from isthmus.convert import Registration
from isthmus.logfmt import kv
from isthmus.signing import ControllerPublicKey
from isthmus.v1 import isthmus_pb2 as pb
from isthmus.v1.isthmus_pb2_grpc import ControllerStub

MAX_MESSAGE = 16 * 1024 * 1024
# A dead controller (or path) is detected within KEEPALIVE_TIME + KEEPALIVE_TIMEOUT.
KEEPALIVE_TIME_MS = 20_000
KEEPALIVE_TIMEOUT_MS = 10_000
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    # What gRPC (1.5x and later) really enforces: an unanswered ping ends the connection
    # after this long; keepalive_timeout_ms alone is ignored (the default is 60 s).
    ("grpc.http2.ping_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    # The watch stream is idle between maps: keep pinging it (gRPC stops after 2 by default).
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
)
CALL_TIMEOUT = 5.0  # Challenge, Register, Report

METHOD_REGISTER = "/isthmus.v1.Controller/Register"
METHOD_WATCH = "/isthmus.v1.Controller/Watch"
METHOD_REPORT = "/isthmus.v1.Controller/Report"

REFUSALS = frozenset(
    {
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
    }
)

_log = logging.getLogger("edge.control")


def rpc_error(e: grpc.aio.AioRpcError) -> str:
    """ "CODE: details" of a failed call."""
    return f"{e.code().name}: {e.details() or ''}".rstrip(": ")


class ControllerCalls:
    """Authenticates calls as this edge, and reports."""

    __slots__ = ("_controller_key", "_private_key", "_registration")

    def __init__(
        self,
        registration: Registration,
        *,
        private_key: bytes,
        controller_key: ControllerPublicKey,
    ) -> None:
        self._registration = registration
        self._private_key = private_key
        self._controller_key = controller_key

    async def auth(
        self, stub: ControllerStub, method: str, request: Message
    ) -> tuple[tuple[str, bytes], ...]:
        """Metadata authenticating one call of `method` with `request`."""
        challenge = await stub.Challenge(pb.ChallengeRequest(), timeout=CALL_TIMEOUT)
        value = auth_value(
            self._private_key,
            self._registration.public_key,
            self._controller_key,
            method,
            challenge.challenge,
            request.SerializeToString(deterministic=True),
        )
        return ((AUTH_METADATA, value),)

    async def report(self, stub: ControllerStub, request: pb.ReportRequest) -> None:
        """Best effort: a failure is logged, never raised."""
        request.name = self._registration.name
        try:
            await stub.Report(
                request,
                metadata=await self.auth(stub, METHOD_REPORT, request),
                timeout=CALL_TIMEOUT,
            )
        except grpc.aio.AioRpcError as e:
            _log.warning(
                kv(
                    "report_failed",
                    applied_version=request.applied_version,
                    error=rpc_error(e),
                )
            )
