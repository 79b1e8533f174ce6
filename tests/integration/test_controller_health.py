"""grpc.health.v1 on the controller's listen address, with the FileStore (real gRPC).

SERVING while the store answers (FileStore: its state directory is writable), NOT_SERVING
otherwise, for services "" and "isthmus.v1.Controller"; unknown services are NOT_FOUND
(Check) or SERVICE_UNKNOWN (Watch). The etcd store losing its quorum is covered by the
end-to-end etcd tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest

from controller.__main__ import ControllerServer
from controller.admission import Policy
from controller.config import ControllerConfig, StoreConfig
from isthmus.endpoint import Endpoint
from isthmus.signing import ControllerKey
from isthmus.v1 import health_pb2, health_pb2_grpc
from isthmus_io.keyfiles import write_controller_key
from tests.integration.edgeclient import controller_channel

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


def config(tmp: Path) -> ControllerConfig:
    write_controller_key(tmp / "controller.key", ControllerKey.generate())
    return ControllerConfig(
        listen=Endpoint.parse("127.0.0.1:0", allow_port_zero=True),
        state_dir=tmp / "state",
        edges=(),
        signing_key_file=tmp / "controller.key",
        admin_socket=tmp / "admin.sock",
        lease_ttl=86400,
        store=StoreConfig(kind="file", endpoints=(), prefix="/isthmus/"),
        admission=Policy(),
    )


@asynccontextmanager
async def running(cfg: ControllerConfig) -> AsyncIterator[health_pb2_grpc.HealthStub]:
    server = ControllerServer(cfg)
    await server.start()
    try:
        async with controller_channel(server.address, server.public_key) as channel:
            yield health_pb2_grpc.HealthStub(channel)  # type: ignore[no-untyped-call]
    finally:
        await server.stop(grace=1)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout=60))


def test_check_says_serving_with_the_file_store(tmp_path: Path) -> None:
    async def body() -> None:
        async with running(config(tmp_path)) as health:
            for service in ("", "isthmus.v1.Controller"):
                reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
                assert reply.status == SERVING, service

    run(body)


def test_check_of_an_unknown_service_is_not_found(tmp_path: Path) -> None:
    async def body() -> None:
        async with running(config(tmp_path)) as health:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await health.Check(health_pb2.HealthCheckRequest(service="isthmus.v1.Admin"))
            assert e.value.code() == grpc.StatusCode.NOT_FOUND
            assert "isthmus.v1.Admin" in (e.value.details() or "")

    run(body)


def test_watch_follows_the_store(tmp_path: Path) -> None:
    """The state directory goes away (as a lost disk): NOT_SERVING; back: SERVING."""

    async def body() -> None:
        cfg = config(tmp_path)
        async with running(cfg) as health:
            watch = health.Watch(health_pb2.HealthCheckRequest(service="isthmus.v1.Controller"))
            assert (await asyncio.wait_for(watch.read(), 10)).status == SERVING
            moved = tmp_path / "moved"
            cfg.state_dir.rename(moved)
            assert (await asyncio.wait_for(watch.read(), 10)).status == NOT_SERVING
            reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
            assert reply.status == NOT_SERVING
            moved.rename(cfg.state_dir)
            assert (await asyncio.wait_for(watch.read(), 10)).status == SERVING
            watch.cancel()

    run(body)


def test_watch_of_an_unknown_service_says_service_unknown_and_stays_open(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        async with running(config(tmp_path)) as health:
            watch = health.Watch(health_pb2.HealthCheckRequest(service="nope"))
            assert (await asyncio.wait_for(watch.read(), 10)).status == SERVICE_UNKNOWN
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(asyncio.shield(watch.read()), 0.3)
            watch.cancel()

    run(body)
