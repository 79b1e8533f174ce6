"""Authentication of the edge calls on `isthmus.v1.Controller` (docs/controller.md,
"Authentication").

Owns the check every call but Challenge passes before the controller service acts on it:
`isthmus.auth.Authenticator.verify` over the call's `isthmus-auth-bin` metadata, the full
method name and the deterministic serialization of the request; then the key must still
be configured and the request's `name` must be the edge that key belongs to. A failed
check aborts the call with the status `controller.errors.to_status` gives (auth failures
are `Unauthenticated`, another edge's name `WrongEdge`), is logged and counted.

Auth values, shared secrets and seeds are never logged: log lines name the method, the
edge, the peer and the reason only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final

import grpc

from controller.config import AllowedEdge
from controller.errors import ControllerError, Unauthenticated, WrongEdge, to_status
from controller.metrics import ControllerMetrics
from isthmus.auth import AUTH_METADATA, Authenticator, AuthError
from isthmus.ids import EdgeName
from isthmus.keys import PublicKey
from isthmus.logfmt import kv
from isthmus.v1 import isthmus_pb2 as pb

# The controller service's logger: these lines are part of its log.
log = logging.getLogger("controller.service")

SERVICE: Final = "isthmus.v1.Controller"
REGISTER: Final = f"/{SERVICE}/Register"
WATCH: Final = f"/{SERVICE}/Watch"
REPORT: Final = f"/{SERVICE}/Report"

# Names from requests are quoted in logs and errors only up to this length.
MAX_NAME: Final = 63

# The configured edge a key belongs to, at the time of the call (the config may change).
KeyLookup = Callable[[PublicKey], AllowedEdge | None]


class CallAuthentication:
    """Authenticates edge calls against the keys `lookup` knows; stateless."""

    def __init__(self, auth: Authenticator, lookup: KeyLookup, metrics: ControllerMetrics) -> None:
        self._auth = auth
        self._lookup = lookup
        self._metrics = metrics

    def challenge(self) -> bytes:
        """A fresh challenge for a Challenge call."""
        return self._auth.challenge()

    async def authenticate(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        method: str,
        request: pb.RegisterRequest | pb.WatchRequest | pb.ReportRequest,
    ) -> tuple[EdgeName, PublicKey]:
        """The authenticated edge named by `request`, or the call is aborted."""
        try:
            try:
                key = self._auth.verify(
                    _auth_value(context),
                    method,
                    request.SerializeToString(deterministic=True),
                    self._key_known,
                )
            except AuthError as e:
                raise Unauthenticated(str(e)) from None
            allowed = self._lookup(key)
            if allowed is None:  # the config changed under the call
                raise Unauthenticated(f"unknown edge key {key}: not in the controller config")
            if allowed.name != request.name:
                raise WrongEdge(
                    f"the authenticated key is the key of edge {allowed.name!r}, "
                    f"not of {request.name[:MAX_NAME]!r}; an edge may only act as itself"
                )
        except ControllerError as e:
            status = to_status(e)
            self._metrics.count_refused_call(status.code.name)
            log.warning(
                kv(
                    "call_refused",
                    method=method,
                    edge=request.name[:MAX_NAME],
                    peer=context.peer(),
                    code=status.code.name,
                    reason=str(e),
                )
            )
            await context.abort(status.code, status.message)
        return allowed.name, key

    def _key_known(self, key: PublicKey) -> bool:
        return self._lookup(key) is not None


def _auth_value(context: grpc.aio.ServicerContext[Any, Any]) -> bytes | str | None:
    for key, value in context.invocation_metadata() or ():
        if key == AUTH_METADATA:
            return value
    return None
