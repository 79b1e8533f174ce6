"""Authentication of the edge calls on `isthmus.v1.Controller` (docs/controller.md,
"Authentication").

Owns the check every call but Challenge passes before the controller service acts on it:
`isthmus.auth.Authenticator.verify` over the call's `isthmus-auth-bin` metadata, the full
method name and the deterministic serialization of the request; then the key must still
be configured and the request's `name` must be the edge that key belongs to. A failed
check aborts the call with the status `controller.errors.to_status` gives (auth failures
are `Unauthenticated`, another edge's name `WrongEdge`); `controller.guard.Guard.refused`
counts it, logs it (rate limited) and may answer RESOURCE_EXHAUSTED instead when the
caller's source is over its refused calls. Then the edge's own limits
(`controller.guard.EdgeLimits`: Report and Watch calls, Watch streams open) must allow the
call, else RESOURCE_EXHAUSTED naming the limit (Register's is checked by the service, once
the request decodes).

Auth values, shared secrets and seeds are never logged: log lines name the method, the
edge, the peer and the reason only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final

import grpc

from controller.config import AllowedEdge
from controller.errors import ControllerError, RateLimited, Unauthenticated, WrongEdge, to_status
from controller.guard import REGISTER, WATCH, EdgeLimits, Guard
from isthmus.auth import AUTH_METADATA, Authenticator, AuthError
from isthmus.ids import EdgeName
from isthmus.keys import PublicKey
from isthmus.v1 import isthmus_pb2 as pb

# The controller service's logger: these lines are part of its log.
log = logging.getLogger("controller.service")


# Names from requests are quoted in logs and errors only up to this length.
MAX_NAME: Final = 63

# The configured edge a key belongs to, at the time of the call (the config may change).
KeyLookup = Callable[[PublicKey], AllowedEdge | None]


class CallAuthentication:
    """Authenticates edge calls against the keys `lookup` knows; stateless."""

    def __init__(
        self,
        auth: Authenticator,
        lookup: KeyLookup,
        guard: Guard,
        limits: EdgeLimits,
        watching: Callable[[EdgeName], int],
    ) -> None:
        self._auth = auth
        self._lookup = lookup
        self._guard = guard
        self._limits = limits
        self._watching = watching

    def challenge(self) -> bytes:
        """A fresh challenge for a Challenge call."""
        return self._auth.challenge()

    async def authenticate(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        method: str,
        request: pb.RegisterRequest | pb.WatchRequest | pb.ReportRequest,
    ) -> tuple[EdgeName, PublicKey]:
        """The authenticated edge named by `request`, within its limits, or the call is
        aborted."""
        reason = "unknown_key"
        try:
            try:
                key = self._auth.verify(
                    _auth_value(context),
                    method,
                    request.SerializeToString(deterministic=True),
                    self._key_known,
                )
            except AuthError as e:
                reason = e.code
                raise Unauthenticated(str(e)) from None
            allowed = self._lookup(key)
            if allowed is None:  # the config changed under the call
                raise Unauthenticated(f"unknown edge key {key}: not in the controller config")
            if allowed.name != request.name:
                reason = "wrong_edge"
                raise WrongEdge(
                    f"the authenticated key is the key of edge {allowed.name!r}, "
                    f"not of {request.name[:MAX_NAME]!r}; an edge may only act as itself"
                )
        except ControllerError as e:
            status = to_status(e)
            await self._guard.refused(
                context, method, reason, status.code, status.message, edge=request.name[:MAX_NAME]
            )
        assert allowed is not None  # context.abort raised otherwise
        try:
            if method != REGISTER:  # Register's limit guards the change path (service)
                self._limits.check(allowed.name, method)
            if method == WATCH:
                self._limits.check_watches(allowed.name, self._watching(allowed.name))
        except RateLimited as e:
            status = to_status(e)
            await self._guard.limited(context, method, e.kind, status.message, edge=allowed.name)
        return allowed.name, key

    def _key_known(self, key: PublicKey) -> bool:
        return self._lookup(key) is not None


def _auth_value(context: grpc.aio.ServicerContext[Any, Any]) -> bytes | str | None:
    for key, value in context.invocation_metadata() or ():
        if key == AUTH_METADATA:
            return value
    return None
