"""What the controller's gRPC listener lets in before any work is done for a caller.

Owns the limits of an exposed controller (docs/controller.md, "Exposing the controller"):

- `Guard`, a grpc.aio server interceptor. For Register, Watch and Report it checks the
  `isthmus-auth-bin` metadata (`Authenticator.precheck`: form, challenge mac, replica, age,
  not used, the key's allowance, the key known) from the call's metadata alone; a call that
  fails gets a handler with no request deserializer, so its body is never parsed, and is
  refused UNAUTHENTICATED. The proof over the body is checked later, by the service.
  Challenge calls take a token of their source address's bucket; refused calls take one
  of the source's refused-call bucket; beyond either, RESOURCE_EXHAUSTED with a message
  saying when to retry. Health Watch streams are capped overall and per source.
- `EdgeLimits`: Register, Report and Watch calls per authenticated edge (token buckets;
  RESOURCE_EXHAUSTED naming the limit) and Watch streams open per edge, checked by the
  service after authentication.
- `server_options`: the listener's HTTP/2 and message limits (`MAX_RECEIVE_BYTES`, the
  largest legitimate request with margin; streams per connection; ping abuse strikes).

Every refusal is counted (controller.metrics, by reason code) and logged through
`controller.refusals.RefusalLog`: at most one line per (reason, source) every 10 s.
A source is the caller's IP address; IPv6 addresses count by /64 (what one host gets).

Rules: nothing here parses a request body or touches a secret; refusal messages hold
public data only.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

import grpc

from controller.bounds import Limits
from controller.errors import RateLimited
from controller.metrics import ControllerMetrics
from controller.ratelimit import Buckets, retry_text
from controller.refusals import RefusalLog
from isthmus.auth import AUTH_METADATA, Authenticator, AuthError
from isthmus.convert import MAX_ENDPOINTS_PER_EDGE, MAX_ROUTES_PER_EDGE
from isthmus.ids import EdgeName
from isthmus.keys import PublicKey

log = logging.getLogger("controller.guard")

SERVICE: Final = "isthmus.v1.Controller"
CHALLENGE: Final = f"/{SERVICE}/Challenge"
REGISTER: Final = f"/{SERVICE}/Register"
WATCH: Final = f"/{SERVICE}/Watch"
REPORT: Final = f"/{SERVICE}/Report"
AUTHENTICATED: Final = frozenset({REGISTER, WATCH, REPORT})
HEALTH_WATCH: Final = "/grpc.health.v1.Health/Watch"


def _field(length: int) -> int:
    """Bytes of one length-delimited protobuf field (tag < 16) of `length` bytes."""
    return 1 + len(_varint(length)) + length


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


# The largest legitimate request: a Register of a 63-character name, a 32-byte key, the
# most endpoints ("[v6]:port", at most 53 characters) and the most routes (an IPv6 route
# in its longest text form, "ffff:...:255.255.255.255/128", 49 characters).
LONGEST_ENDPOINT: Final = len("[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535")
LONGEST_ROUTE: Final = len("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255/128")
MAX_REGISTER_BYTES: Final = (
    _field(63)
    + _field(32)
    + MAX_ENDPOINTS_PER_EDGE * _field(LONGEST_ENDPOINT)
    + MAX_ROUTES_PER_EDGE * _field(LONGEST_ROUTE)
)
# What the listener accepts in one message: the largest Register (51,539 bytes) with room
# for a Report's error text. Bigger messages are refused RESOURCE_EXHAUSTED by gRPC itself.
MAX_RECEIVE_BYTES: Final = 64 * 1024
# What it sends: a whole map of 10,000 edges (isthmus.convert.MAX_EDGES).
MAX_SEND_BYTES: Final = 16 * 1024 * 1024
# Edges ping every 20 s (edge.control); pings closer than this without data are strikes.
MIN_PING_INTERVAL_MS: Final = 10_000
MAX_PING_STRIKES: Final = 2
# The listener pings every connection this often and drops it when no answer comes in the
# timeout, so a frozen or vanished edge's Watch stream ends, and `isthmus edges` shows it
# disconnected, within KEEPALIVE_MS + KEEPALIVE_TIMEOUT_MS (without it a half-open stream
# stays "connected" for gRPC's default two hours).
KEEPALIVE_MS: Final = 10_000
KEEPALIVE_TIMEOUT_MS: Final = 5_000
CALL_MARGIN: Final = 256
# Watch streams one edge may hold open at once (a reconnect may overlap the old stream).
MAX_WATCHES_PER_EDGE: Final = 4


def server_options(limits: Limits) -> list[tuple[str, int]]:
    """The grpc.aio server options of the controller's listener."""
    return [
        ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
        ("grpc.max_send_message_length", MAX_SEND_BYTES),
        ("grpc.max_concurrent_streams", limits.streams_per_connection),
        # No bandwidth-delay probing of what callers send: it grows the receive windows
        # until a whole oversized message is buffered before the size check refuses it
        # (8 connections of 15 MiB: +150 MiB RSS with it, +3 MiB without). Requests are
        # small; what the controller sends follows the edges' windows, not these.
        ("grpc.http2.bdp_probe", 0),
        # Edges keep idle connections alive with pings: allow them, but not a flood.
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", MIN_PING_INTERVAL_MS),
        ("grpc.http2.max_ping_strikes", MAX_PING_STRIKES),
        ("grpc.keepalive_time_ms", KEEPALIVE_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        # What gRPC (1.5x and later) really enforces: an unanswered ping ends the
        # connection after this long; keepalive_timeout_ms alone is ignored (default 60 s).
        ("grpc.http2.ping_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        # A watch stream is idle between maps: keep pinging it (gRPC stops after 2).
        ("grpc.http2.max_pings_without_data", 0),
    ]


def max_concurrent_calls(limits: Limits, edges: int) -> int:
    """Calls in progress at once (Watch streams included): the configured figure, or two
    per configured edge (a Watch and a call) plus the health watches and a margin."""
    if limits.max_concurrent_calls:
        return limits.max_concurrent_calls
    return 2 * edges + limits.health_watches + CALL_MARGIN


def source_of(peer: str) -> str:
    """The rate-limit key of a gRPC peer ("ipv4:1.2.3.4:5", "ipv6:[::1]:5"): its IP
    address; an IPv6 address by its /64; anything else (unix sockets) as given."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return peer
    host = rest.rpartition(":")[0].strip("[]")
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return peer
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:  # generic in the stubs only
    Handler = grpc.RpcMethodHandler
    _Interceptor = grpc.aio.ServerInterceptor
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler]]


class Guard(_Interceptor):
    """The interceptor of the controller's listener (see the module)."""

    def __init__(
        self,
        limits: Limits,
        auth: Authenticator,
        key_known: Callable[[PublicKey], bool],
        metrics: ControllerMetrics,
        clock: Callable[[], float] = time.monotonic,
        refusals: RefusalLog | None = None,
    ) -> None:
        self._limits = limits
        self._auth = auth
        self._key_known = key_known
        self._metrics = metrics
        self._clock = clock
        self._log = refusals or RefusalLog(log)
        self._challenges: Buckets[str] = Buckets(limits.challenge)
        self._refused: Buckets[str] = Buckets(limits.refused)
        self._health_total = 0
        self._health_by_source: dict[str, int] = {}

    @property
    def health_watches(self) -> int:
        return self._health_total

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> Handler:
        method: str = details.method
        if method in AUTHENTICATED:
            try:
                self._auth.precheck(_auth_value(details.invocation_metadata), self._key_known)
            except AuthError as e:
                return _refusal(method, self._refuse_unauthenticated(method, e))
            return await continuation(details)
        if method == CHALLENGE:
            return self._challenge(await continuation(details))
        if method == HEALTH_WATCH:
            handler = await continuation(details)
            return self._health_watch(handler) if handler is not None else handler
        return await continuation(details)

    async def refused(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        method: str,
        reason: str,
        code: grpc.StatusCode,
        message: str,
        **fields: object,
    ) -> None:
        """Refuse a call (abort `context`): with `code`, or RESOURCE_EXHAUSTED when its
        source has used up its refused calls; counted and logged (rate limited)."""
        source = source_of(context.peer())
        verdict = self._refused.take(source, self._clock())
        if not verdict.allowed:
            self._metrics.count_rate_limited("refused")
            code = grpc.StatusCode.RESOURCE_EXHAUSTED
            reason = "refused_rate"
            message = (
                f"too many refused calls from {source}: at most "
                f"{self._limits.refused.describe()}; {retry_text(verdict.retry_after)}"
            )
        await self.reject(context, method, reason, code, message, **fields)

    async def limited(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        method: str,
        kind: str,
        message: str,
        **fields: object,
    ) -> None:
        """Refuse a call over the limit `kind` (an `EdgeLimits` kind) RESOURCE_EXHAUSTED."""
        self._metrics.count_rate_limited(kind)
        reason = kind if kind == "watch_streams" else f"{kind}_rate"
        code = grpc.StatusCode.RESOURCE_EXHAUSTED
        await self.reject(context, method, reason, code, message, **fields)

    async def reject(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        method: str,
        reason: str,
        code: grpc.StatusCode,
        message: str,
        **fields: object,
    ) -> None:
        """Abort `context` with `code` and `message`; counted by `reason`, logged (rate
        limited). Takes nothing of the source's refused calls (see `refused`)."""
        source = source_of(context.peer())
        self._metrics.count_refusal(reason)
        self._metrics.count_refused_call(code.name)
        self._log.refused(
            self._clock(), reason, source, code.name, message, method=method, **fields
        )
        await context.abort(code, message)

    def _refuse_unauthenticated(
        self, method: str, error: AuthError
    ) -> Callable[[grpc.aio.ServicerContext[Any, Any]], Awaitable[None]]:
        async def refuse(context: grpc.aio.ServicerContext[Any, Any]) -> None:
            await self.refused(
                context, method, error.code, grpc.StatusCode.UNAUTHENTICATED, str(error)
            )

        return refuse

    def _challenge(self, handler: Handler) -> Handler:
        inner: Any = handler.unary_unary

        async def challenge(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            source = source_of(context.peer())
            verdict = self._challenges.take(source, self._clock())
            if not verdict.allowed:
                self._metrics.count_rate_limited("challenge")
                await self.reject(
                    context,
                    CHALLENGE,
                    "challenge_rate",
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"too many Challenge calls from {source}: at most "
                    f"{self._limits.challenge.describe()}; {retry_text(verdict.retry_after)}",
                )
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            challenge,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _health_watch(self, handler: Handler) -> Handler:
        inner: Any = handler.unary_stream

        async def watch(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            source = source_of(context.peer())
            mine = self._health_by_source.get(source, 0)
            if self._health_total >= self._limits.health_watches:
                problem = f"{self._health_total} Health Watch streams are open (the limit)"
            elif mine >= self._limits.health_watches_per_source:
                problem = f"{mine} Health Watch streams are open from {source} (the limit)"
            else:
                problem = ""
            if problem:
                self._metrics.count_rate_limited("health_watch")
                await self.reject(
                    context,
                    HEALTH_WATCH,
                    "health_watches",
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"{problem}; use Check, or retry when one ends",
                )
            self._health_total += 1
            self._health_by_source[source] = mine + 1
            try:
                async for reply in inner(request, context):
                    yield reply
            finally:
                self._health_total -= 1
                left = self._health_by_source.get(source, 1) - 1
                if left > 0:
                    self._health_by_source[source] = left
                else:
                    self._health_by_source.pop(source, None)

        return grpc.unary_stream_rpc_method_handler(
            watch,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _refusal(
    method: str, refuse: Callable[[grpc.aio.ServicerContext[Any, Any]], Awaitable[None]]
) -> Handler:
    """A handler of `method`'s shape that never parses the body (no deserializer: the
    request arrives as bytes and is dropped) and runs `refuse`."""
    if method == WATCH:

        async def stream(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await refuse(context)
            return
            yield  # an async generator that ends without a message

        return grpc.unary_stream_rpc_method_handler(stream)

    async def unary(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await refuse(context)

    return grpc.unary_unary_rpc_method_handler(unary)


def _auth_value(metadata: Sequence[tuple[str, str | bytes]] | None) -> bytes | str | None:
    for key, value in metadata or ():
        if key == AUTH_METADATA:
            return value
    return None


class EdgeLimits:
    """Register, Report and Watch calls per authenticated edge (see the module)."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[str, Buckets[EdgeName]]] = {
            REGISTER: ("register", Buckets(limits.register)),
            REPORT: ("report", Buckets(limits.report)),
            WATCH: ("watch", Buckets(limits.watch)),
        }

    def check_watches(self, edge: EdgeName, open_now: int) -> None:
        """Whether `edge` may open another Watch stream with `open_now` open.

        Raises:
            RateLimited: it holds MAX_WATCHES_PER_EDGE already.
        """
        if open_now >= MAX_WATCHES_PER_EDGE:
            raise RateLimited(
                "watch_streams",
                f"edge {edge!r} has {open_now} Watch streams open, the most an edge may "
                "have; retry when one ends",
            )

    def check(self, edge: EdgeName, method: str) -> None:
        """Take one of `edge`'s calls of `method`.

        Raises:
            RateLimited: the edge is over its limit; the message names it and when to retry.
        """
        found = self._buckets.get(method)
        if found is None:
            return
        kind, buckets = found
        verdict = buckets.take(edge, self._clock())
        if not verdict.allowed:
            raise RateLimited(
                kind,
                f"edge {edge!r} is over its {method.rpartition('/')[2]} limit of "
                f"{buckets.rate.describe()} per edge; {retry_text(verdict.retry_after)}",
            )
