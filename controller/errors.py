"""The controller's error contract: what a registration or a watch can fail with.

Every error the gRPC shell reports is a `ControllerError`; `controller.service.status_code`
is the one place that maps them to gRPC status codes:

    UnknownEdge      NOT_FOUND          the name is not in the controller config
    KeyMismatch      PERMISSION_DENIED  the key is not the one configured for the name
    RouteNotAllowed  PERMISSION_DENIED  a route is not inside the edge's allowed routes
    RouteConflict    ALREADY_EXISTS     a route overlaps a route admitted for another edge
    InvalidRequest   INVALID_ARGUMENT   a malformed request field (wraps isthmus WireError)
    StoreError       UNAVAILABLE        the state could not be persisted; nothing changed

The message of every error names the edge, route or field and the reason; it is sent to
the caller as the status details, so it never holds anything but public data.
"""

from __future__ import annotations


class ControllerError(Exception):
    """Base of every error the controller reports to a caller."""


class UnknownEdge(ControllerError):
    """The edge name is not configured."""


class KeyMismatch(ControllerError):
    """The public key differs from the one configured for the edge."""


class RouteNotAllowed(ControllerError):
    """A route is not inside any of the edge's allowed routes."""


class RouteConflict(ControllerError):
    """A route overlaps a route currently admitted for another edge."""


class InvalidRequest(ControllerError):
    """A request field is malformed; the message names the field (from WireError)."""


class StoreError(ControllerError):
    """The persisted state cannot be read or written; the message names the file."""
