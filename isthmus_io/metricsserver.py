"""The Prometheus scrape endpoint both processes serve: `GET /metrics` over plain HTTP.

Owns the `metrics` config value (`"127.0.0.1:9586"` controller, `"127.0.0.1:9587"` edge by
default; `""` or `"off"` disables) and a small asyncio HTTP server on the process's event
loop. A scrape first awaits `refresh` (the process reads what needs awaiting), then renders
the collector registry with `prometheus_client.generate_latest`, all on the loop: the
collectors read the live objects at scrape time, with no thread racing the loop and no
per-packet metric call anywhere.

Rules: one request per connection (HTTP/1.0 style, `Connection: close`); only GET (and
HEAD) of `/metrics` (or `/`) answer 200, anything else 404 or 405; a request line and
headers larger than MAX_REQUEST or slower than READ_TIMEOUT are dropped. Binding
127.0.0.1 by default: metrics name edges and routes, so exposing them is an operator's
choice. The overlay never depends on its metrics: a process whose metrics address cannot
be bound logs `metrics_unavailable` and runs on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from isthmus.endpoint import ENDPOINT_RULE, Endpoint, format_sockaddr
from isthmus.logfmt import kv

CONTROLLER_DEFAULT: Final = "127.0.0.1:9586"
EDGE_DEFAULT: Final = "127.0.0.1:9587"
METRICS_RULE: Final = (
    "'ip:port' or '[ipv6]:port' to serve Prometheus metrics on (port 0 = any free port), "
    'or "" or "off" to serve none'
)
OFF: Final = ("", "off")
READ_TIMEOUT: Final = 5.0
MAX_REQUEST: Final = 8192

Refresh = Callable[[], Awaitable[None]]


def parse_listen(value: object) -> Endpoint | None:
    """A config's `metrics` value: the address to serve on, or None when off.

    Raises:
        ValueError: neither an address nor "" / "off"; the message ends ": use <rule>".
    """
    if isinstance(value, str) and value.strip().lower() in OFF:
        return None
    try:
        return Endpoint.parse(value, allow_port_zero=True)
    except ValueError as e:
        problem = str(e).removesuffix(f": use {ENDPOINT_RULE}")
        raise ValueError(f"{problem}: use {METRICS_RULE}") from None


class MetricsServer:
    """`GET /metrics` for one collector registry on `listen`; `start`, then `close`."""

    def __init__(
        self,
        listen: Endpoint,
        registry: CollectorRegistry,
        refresh: Refresh | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        """`logger`: the process's (e.g. "controller.metrics"), so its lines are formatted."""
        self.log = logger or logging.getLogger("isthmus.metrics")
        self._listen = listen
        self._registry = registry
        self._refresh = refresh
        self._server: asyncio.Server | None = None
        self._port = 0

    @property
    def port(self) -> int:
        """The bound port (the free port picked for port 0)."""
        return self._port

    @property
    def address(self) -> str:
        return format_sockaddr(self._listen.ip, self._port)

    async def start(self) -> None:
        """Bind and serve.

        Raises:
            OSError: the address cannot be bound; the message names it.
        """
        try:
            self._server = await asyncio.start_server(
                self._handle, str(self._listen.ip), self._listen.port, reuse_address=True
            )
        except OSError as e:
            raise OSError(
                f"cannot serve metrics on {self._listen}: {e.strerror or e}; "
                'set metrics to another address or "off"'
            ) from None
        self._port = self._server.sockets[0].getsockname()[1]
        self.log.info(kv("metrics_listening", address=self.address))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return
            if len(head) > MAX_REQUEST:
                return
            parts = head.split(b"\r\n", 1)[0].split()
            if len(parts) != 3:
                await _reply(writer, 400, b"text/plain", b"bad request\n")
                return
            method, target = parts[0], parts[1].split(b"?", 1)[0]
            if target not in (b"/metrics", b"/"):
                await _reply(writer, 404, b"text/plain", b"not found: try /metrics\n")
                return
            if method not in (b"GET", b"HEAD"):
                await _reply(writer, 405, b"text/plain", b"only GET\n")
                return
            if self._refresh is not None:
                await self._refresh()
            body = generate_latest(self._registry)
            await _reply(
                writer, 200, CONTENT_TYPE_LATEST.encode("ascii"), body, head_only=method == b"HEAD"
            )
        except Exception as e:  # a scrape must never take the process down
            self.log.warning(kv("metrics_scrape_failed", reason=str(e) or type(e).__name__))
            with contextlib.suppress(Exception):
                await _reply(writer, 500, b"text/plain", b"internal error\n")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


_REASONS: Final = {
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    500: b"Internal Server Error",
}


async def _reply(
    writer: asyncio.StreamWriter,
    status: int,
    content_type: bytes,
    body: bytes,
    *,
    head_only: bool = False,
) -> None:
    writer.write(
        b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
        % (status, _REASONS[status], content_type, len(body))
    )
    if not head_only:
        writer.write(body)
    await writer.drain()


async def start_or_log(server: MetricsServer) -> MetricsServer | None:
    """Start `server`; when it cannot bind, log `metrics_unavailable` and return None."""
    try:
        await server.start()
    except OSError as e:
        server.log.error(kv("metrics_unavailable", reason=str(e)))
        return None
    return server
