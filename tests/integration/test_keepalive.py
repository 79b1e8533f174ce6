"""gRPC keepalive on both ends of the watch stream finds a peer that stopped answering.

A frozen edge (SIGSTOP), a dead host or a dropped path leaves the TCP connection open:
only an HTTP/2 ping nobody acknowledges reveals it. gRPC 1.5x and later end the connection
on `grpc.http2.ping_timeout_ms` (default 60 s) and ignore `grpc.keepalive_timeout_ms`, and
stop pinging an idle connection after `grpc.http2.max_pings_without_data` (default 2).
So the edge's channel and the controller's server must set all of them, or a dead
controller is noticed after 80 s instead of 30 s and a dead edge stays "connected" in
`isthmus edges` for two hours (found by tests/e2e/test_edge_flap.py).

Each test runs the real option set against a raw-socket HTTP/2 peer that completes the
SETTINGS exchange and then never answers, with only the three times scaled down (the
keys must stay the same: scaling the times must be all it takes to detect faster).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import grpc

from controller.bounds import Limits
from controller.guard import KEEPALIVE_MS as SERVER_TIME_MS
from controller.guard import KEEPALIVE_TIMEOUT_MS as SERVER_TIMEOUT_MS
from controller.guard import server_options
from edge.controlcalls import CHANNEL_OPTIONS, KEEPALIVE_TIME_MS, KEEPALIVE_TIMEOUT_MS

SERVER_OPTIONS = server_options(Limits())

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS = bytes.fromhex("000000040000000000")  # an empty SETTINGS frame
SETTINGS_ACK = bytes.fromhex("000000040100000000")
SCALED_TIME_MS = 300
SCALED_TIMEOUT_MS = 300
BOUND = 3.0  # seconds; 0.6 s expected, unscaled leftovers would take 20 s or more
TIMING_KEYS = ("grpc.keepalive_time_ms", "grpc.keepalive_timeout_ms", "grpc.http2.ping_timeout_ms")


def _scaled(options: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    times = {
        "grpc.keepalive_time_ms": SCALED_TIME_MS,
        "grpc.keepalive_timeout_ms": SCALED_TIMEOUT_MS,
        "grpc.http2.ping_timeout_ms": SCALED_TIMEOUT_MS,
    }
    return [(key, times.get(key, value)) for key, value in options]


def test_both_ends_enforce_the_documented_ping_timeout() -> None:
    edge, server = dict(CHANNEL_OPTIONS), dict(SERVER_OPTIONS)
    assert (edge["grpc.keepalive_time_ms"], KEEPALIVE_TIME_MS) == (20_000, 20_000)
    assert edge["grpc.keepalive_timeout_ms"] == edge["grpc.http2.ping_timeout_ms"] == 10_000
    assert edge["grpc.http2.max_pings_without_data"] == 0
    assert KEEPALIVE_TIMEOUT_MS == 10_000
    assert server["grpc.keepalive_time_ms"] == SERVER_TIME_MS == 10_000
    assert server["grpc.keepalive_timeout_ms"] == server["grpc.http2.ping_timeout_ms"]
    assert server["grpc.http2.ping_timeout_ms"] == SERVER_TIMEOUT_MS == 5_000
    assert server["grpc.http2.max_pings_without_data"] == 0
    for key in TIMING_KEYS:
        assert key in edge and key in server, key


@contextmanager
def _silent_http2_server() -> Iterator[int]:
    """A TCP server that sends SETTINGS, acknowledges the client's, then reads forever."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.sendall(SETTINGS)
            acked = False
            while data := conn.recv(65536):
                if not acked and len(data) > len(PREFACE):
                    conn.sendall(SETTINGS_ACK)
                    acked = True

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        listener.close()


def test_the_edge_channel_ends_a_watch_whose_controller_stopped_answering() -> None:
    async def watch(port: int) -> tuple[grpc.StatusCode, float]:
        start = time.monotonic()
        options = _scaled(CHANNEL_OPTIONS)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            call = channel.unary_stream("/isthmus.v1.Controller/Watch")(b"")
            try:
                async with asyncio.timeout(BOUND * 4):
                    async for _ in call:
                        pass
            except grpc.aio.AioRpcError as e:
                return e.code(), time.monotonic() - start
        raise AssertionError("the stream ended without an error")

    with _silent_http2_server() as port:
        code, seconds = asyncio.run(watch(port))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert seconds < BOUND, f"a silent controller was noticed after {seconds:.1f} s"


def test_the_controller_closes_a_connection_whose_edge_stopped_answering() -> None:
    async def serve_one_silent_client() -> float:
        server = grpc.aio.server(options=_scaled(SERVER_OPTIONS))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            return await asyncio.get_running_loop().run_in_executor(None, _silent_client, port)
        finally:
            await server.stop(0)

    seconds = asyncio.run(serve_one_silent_client())
    assert seconds < BOUND, f"a silent edge was disconnected after {seconds:.1f} s"


def _silent_client(port: int) -> float:
    """Connect, exchange SETTINGS, never answer a ping; seconds until the server closes."""
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(PREFACE + SETTINGS)
        conn.settimeout(0.2)
        start = time.monotonic()
        acked = False
        while time.monotonic() - start < BOUND * 4:
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            if not data:
                return time.monotonic() - start
            if not acked:
                conn.sendall(SETTINGS_ACK)
                acked = True
    raise AssertionError(f"the server kept a silent client for {BOUND * 4} s")
