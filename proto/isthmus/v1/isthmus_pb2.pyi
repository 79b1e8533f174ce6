from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RouteState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROUTE_STATE_UNSPECIFIED: _ClassVar[RouteState]
    ROUTE_STATE_SERVING: _ClassVar[RouteState]
    ROUTE_STATE_PENDING: _ClassVar[RouteState]
    ROUTE_STATE_REFUSED: _ClassVar[RouteState]
ROUTE_STATE_UNSPECIFIED: RouteState
ROUTE_STATE_SERVING: RouteState
ROUTE_STATE_PENDING: RouteState
ROUTE_STATE_REFUSED: RouteState

class ChallengeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ChallengeResponse(_message.Message):
    __slots__ = ("challenge",)
    CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    challenge: bytes
    def __init__(self, challenge: _Optional[bytes] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("name", "public_key", "endpoints", "routes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    public_key: bytes
    endpoints: _containers.RepeatedScalarFieldContainer[str]
    routes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., public_key: _Optional[bytes] = ..., endpoints: _Optional[_Iterable[str]] = ..., routes: _Optional[_Iterable[str]] = ...) -> None: ...

class RouteStatus(_message.Message):
    __slots__ = ("route", "edge", "state", "reason_code", "reason", "since_version", "approved")
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    EDGE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SINCE_VERSION_FIELD_NUMBER: _ClassVar[int]
    APPROVED_FIELD_NUMBER: _ClassVar[int]
    route: str
    edge: str
    state: RouteState
    reason_code: str
    reason: str
    since_version: int
    approved: bool
    def __init__(self, route: _Optional[str] = ..., edge: _Optional[str] = ..., state: _Optional[_Union[RouteState, str]] = ..., reason_code: _Optional[str] = ..., reason: _Optional[str] = ..., since_version: _Optional[int] = ..., approved: _Optional[bool] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("version", "routes")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    version: int
    routes: _containers.RepeatedCompositeFieldContainer[RouteStatus]
    def __init__(self, version: _Optional[int] = ..., routes: _Optional[_Iterable[_Union[RouteStatus, _Mapping]]] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("name", "known_version", "known_epoch")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KNOWN_VERSION_FIELD_NUMBER: _ClassVar[int]
    KNOWN_EPOCH_FIELD_NUMBER: _ClassVar[int]
    name: str
    known_version: int
    known_epoch: bytes
    def __init__(self, name: _Optional[str] = ..., known_version: _Optional[int] = ..., known_epoch: _Optional[bytes] = ...) -> None: ...

class Lease(_message.Message):
    __slots__ = ("version", "expires", "signature")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    version: int
    expires: int
    signature: bytes
    def __init__(self, version: _Optional[int] = ..., expires: _Optional[int] = ..., signature: _Optional[bytes] = ...) -> None: ...

class Route(_message.Message):
    __slots__ = ("cidr", "lease")
    CIDR_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    cidr: str
    lease: Lease
    def __init__(self, cidr: _Optional[str] = ..., lease: _Optional[_Union[Lease, _Mapping]] = ...) -> None: ...

class Edge(_message.Message):
    __slots__ = ("name", "public_key", "endpoints", "routes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    public_key: bytes
    endpoints: _containers.RepeatedScalarFieldContainer[str]
    routes: _containers.RepeatedCompositeFieldContainer[Route]
    def __init__(self, name: _Optional[str] = ..., public_key: _Optional[bytes] = ..., endpoints: _Optional[_Iterable[str]] = ..., routes: _Optional[_Iterable[_Union[Route, _Mapping]]] = ...) -> None: ...

class MapUpdate(_message.Message):
    __slots__ = ("version", "full", "base_version", "edges", "removed", "epoch", "signature")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FULL_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    EDGES_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    version: int
    full: bool
    base_version: int
    edges: _containers.RepeatedCompositeFieldContainer[Edge]
    removed: _containers.RepeatedScalarFieldContainer[str]
    epoch: bytes
    signature: bytes
    def __init__(self, version: _Optional[int] = ..., full: _Optional[bool] = ..., base_version: _Optional[int] = ..., edges: _Optional[_Iterable[_Union[Edge, _Mapping]]] = ..., removed: _Optional[_Iterable[str]] = ..., epoch: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class ReportRequest(_message.Message):
    __slots__ = ("name", "applied_version", "error", "refused_version", "epoch")
    NAME_FIELD_NUMBER: _ClassVar[int]
    APPLIED_VERSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REFUSED_VERSION_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    name: str
    applied_version: int
    error: str
    refused_version: int
    epoch: bytes
    def __init__(self, name: _Optional[str] = ..., applied_version: _Optional[int] = ..., error: _Optional[str] = ..., refused_version: _Optional[int] = ..., epoch: _Optional[bytes] = ...) -> None: ...

class ReportResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListRoutesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListRoutesResponse(_message.Message):
    __slots__ = ("version", "routes")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    version: int
    routes: _containers.RepeatedCompositeFieldContainer[RouteStatus]
    def __init__(self, version: _Optional[int] = ..., routes: _Optional[_Iterable[_Union[RouteStatus, _Mapping]]] = ...) -> None: ...

class ApproveRouteRequest(_message.Message):
    __slots__ = ("route", "edge")
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    EDGE_FIELD_NUMBER: _ClassVar[int]
    route: str
    edge: str
    def __init__(self, route: _Optional[str] = ..., edge: _Optional[str] = ...) -> None: ...

class ApproveRouteResponse(_message.Message):
    __slots__ = ("version", "route")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    version: int
    route: RouteStatus
    def __init__(self, version: _Optional[int] = ..., route: _Optional[_Union[RouteStatus, _Mapping]] = ...) -> None: ...

class ListEdgesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EdgeStatus(_message.Message):
    __slots__ = ("name", "public_key", "endpoints", "state", "replica", "applied_version", "last_error", "reported_at", "epoch")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    APPLIED_VERSION_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    REPORTED_AT_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    name: str
    public_key: bytes
    endpoints: _containers.RepeatedScalarFieldContainer[str]
    state: str
    replica: str
    applied_version: int
    last_error: str
    reported_at: float
    epoch: bytes
    def __init__(self, name: _Optional[str] = ..., public_key: _Optional[bytes] = ..., endpoints: _Optional[_Iterable[str]] = ..., state: _Optional[str] = ..., replica: _Optional[str] = ..., applied_version: _Optional[int] = ..., last_error: _Optional[str] = ..., reported_at: _Optional[float] = ..., epoch: _Optional[bytes] = ...) -> None: ...

class ListEdgesResponse(_message.Message):
    __slots__ = ("version", "edges", "epoch")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EDGES_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    version: int
    edges: _containers.RepeatedCompositeFieldContainer[EdgeStatus]
    epoch: bytes
    def __init__(self, version: _Optional[int] = ..., edges: _Optional[_Iterable[_Union[EdgeStatus, _Mapping]]] = ..., epoch: _Optional[bytes] = ...) -> None: ...

class ListHistoryRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class HistoryEntry(_message.Message):
    __slots__ = ("time", "version", "actor", "kind", "edge", "route", "reason")
    TIME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    EDGE_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    time: float
    version: int
    actor: str
    kind: str
    edge: str
    route: str
    reason: str
    def __init__(self, time: _Optional[float] = ..., version: _Optional[int] = ..., actor: _Optional[str] = ..., kind: _Optional[str] = ..., edge: _Optional[str] = ..., route: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ListHistoryResponse(_message.Message):
    __slots__ = ("version", "entries")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    version: int
    entries: _containers.RepeatedCompositeFieldContainer[HistoryEntry]
    def __init__(self, version: _Optional[int] = ..., entries: _Optional[_Iterable[_Union[HistoryEntry, _Mapping]]] = ...) -> None: ...
