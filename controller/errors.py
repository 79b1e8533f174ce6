"""The controller's error contract: what an edge's call or an operator's command can fail with.

Every error the gRPC shells report is a `ControllerError`; `to_status` (here) is the one
place that maps them to a gRPC status code and message (`status_code` is its code):

    Unauthenticated  UNAUTHENTICATED      the call's auth metadata failed a check (names which)
    UnknownEdge      NOT_FOUND            the name is not in the controller config
    KeyMismatch      PERMISSION_DENIED    the key is not the one configured for the name
    WrongEdge        PERMISSION_DENIED    an authenticated edge named another edge in its request
    InvalidRequest   INVALID_ARGUMENT     a malformed request field (wraps isthmus WireError), or
                                          an endpoint inside another edge's route
    NotPending       FAILED_PRECONDITION  approve: the route is serving or refused, not pending
    UnknownRoute     NOT_FOUND            approve: no edge (or not that edge) advertises the route
    AmbiguousRoute   INVALID_ARGUMENT     approve: several edges advertise it; name one (--edge)
    StoreError       UNAVAILABLE          the state could not be read or persisted; nothing changed
    StoreConflict    UNAVAILABLE          (a StoreError) another replica wrote the state first
    RateLimited      RESOURCE_EXHAUSTED   over a rate limit (names it and says when to retry)

Routes outside an edge's allowed routes or overlapping another edge's are no errors: the
registration succeeds and admission (controller.admission) gives each route a decision.

The message of every error names the edge, route or field and the reason; it is sent to
the caller as the status details, so it never holds anything but public data. An error
outside this table (a bare `ControllerError`) is INTERNAL. A Watch stream whose edge's key
is no longer configured ends as a `KeyMismatch`. Only `grpc.StatusCode` is used from grpc:
this module stays below every shell (the registry raises these errors).
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc


class ControllerError(Exception):
    """Base of every error the controller reports to a caller."""


class Unauthenticated(ControllerError):
    """The call's authentication failed; the message names the failed check only."""


class UnknownEdge(ControllerError):
    """The edge name is not configured."""


class KeyMismatch(ControllerError):
    """The public key differs from the one configured for the edge."""


class WrongEdge(ControllerError):
    """An authenticated edge named another edge in its request."""


class InvalidRequest(ControllerError):
    """A request field is malformed; the message names the field (from WireError)."""


class NotPending(ControllerError):
    """An approval names a route that is not pending (it serves already, or is refused)."""


class UnknownRoute(ControllerError):
    """An approval names a route no edge (or not the named edge) advertises."""


class AmbiguousRoute(ControllerError):
    """An approval names a route several edges advertise, without naming the edge."""


class StoreError(ControllerError):
    """The persisted state cannot be read or written; the message names the file or endpoint."""


class StoreConflict(StoreError):
    """Another replica wrote the state first; adopt the newer state and decide again."""


class RateLimited(ControllerError):
    """A caller is over a rate limit; the message names the limit and when to retry.

    `kind` names the limit (a bounded set: controller.guard's kinds, used as a metric label).
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Status:
    """What a gRPC shell aborts a call with: the code and the message sent as details."""

    code: grpc.StatusCode
    message: str


def to_status(error: ControllerError) -> Status:
    """The gRPC status a controller error is reported with (the table above)."""
    return Status(status_code(error), str(error))


def status_code(error: ControllerError) -> grpc.StatusCode:
    """The gRPC status code of a controller error (the table above)."""
    match error:
        case Unauthenticated():
            return grpc.StatusCode.UNAUTHENTICATED
        case WrongEdge() | KeyMismatch():
            return grpc.StatusCode.PERMISSION_DENIED
        case UnknownEdge() | UnknownRoute():
            return grpc.StatusCode.NOT_FOUND
        case InvalidRequest() | AmbiguousRoute():
            return grpc.StatusCode.INVALID_ARGUMENT
        case RateLimited():
            return grpc.StatusCode.RESOURCE_EXHAUSTED
        case NotPending():
            return grpc.StatusCode.FAILED_PRECONDITION
        case StoreError():
            return grpc.StatusCode.UNAVAILABLE
        case _:
            return grpc.StatusCode.INTERNAL
