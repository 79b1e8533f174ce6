"""Authentication of edge calls over real gRPC (docs/controller.md, "Authentication").

A real controller on 127.0.0.1:0 with a fresh Ed25519 key and real X25519 edge keys. Every
Controller call but Challenge must carry a fresh, unused challenge of this replica and a
proof bound to the method and the request body, made with the key of a configured edge;
else UNAUTHENTICATED with the reason. An authenticated edge naming another edge gets
PERMISSION_DENIED. The controller's clock is injected so a challenge can expire.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import nacl.bindings
import pytest

from controller.__main__ import ControllerServer
from controller.admission import Policy
from controller.config import AllowedEdge, ControllerConfig, StoreConfig
from isthmus.auth import AUTH_METADATA, auth_value, edge_shared_secret
from isthmus.endpoint import Endpoint
from isthmus.ids import EdgeName
from isthmus.keys import PublicKey
from isthmus.signing import ControllerKey, ControllerPublicKey
from isthmus.v1 import isthmus_pb2 as pb
from isthmus.v1 import isthmus_pb2_grpc as pb_grpc
from isthmus_io.keyfiles import write_controller_key
from tests.integration.edgeclient import controller_channel

SERVICE = "/isthmus.v1.Controller/"
METHODS = ("Register", "Watch", "Report")


class Edge:
    def __init__(self, name: str, seed: int) -> None:
        pk, sk = nacl.bindings.crypto_box_seed_keypair(bytes([seed]) * 32)
        self.name, self.private, self.public = name, sk, PublicKey(pk)

    def allowed(self, *routes: str) -> AllowedEdge:
        nets = tuple(ipaddress.ip_network(r) for r in routes)
        return AllowedEdge(EdgeName(self.name), self.public, nets)


A = Edge("vpc-a", 1)
B = Edge("vpc-b", 2)
STRANGER = Edge("vpc-a", 9)  # calls itself vpc-a, but its key is not configured


class Clock:
    """The controller's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1_760_000_000.0

    def __call__(self) -> float:
        return self.now


def request(method: str, name: str, edge: Edge | None = None, **kw: Any) -> Any:
    """A valid request of `method` for the edge called `name` (keyed by `edge`, default A)."""
    key = (edge or A).public
    if method == "Register":
        return pb.RegisterRequest(
            name=name,
            public_key=key.raw,
            endpoints=["198.18.0.11:51820"],
            routes=kw.get("routes", ["10.244.0.0/16"]),
        )
    if method == "Watch":
        return pb.WatchRequest(name=name, known_version=kw.get("known", 0))
    return pb.ReportRequest(name=name, applied_version=kw.get("applied", 0))


class Harness:
    def __init__(self, channel: grpc.aio.Channel, controller: ControllerPublicKey) -> None:
        self.stub = pb_grpc.ControllerStub(channel)
        self.controller = controller

    async def challenge(self) -> bytes:
        return (await self.stub.Challenge(pb.ChallengeRequest())).challenge  # type: ignore[no-any-return]

    async def value(
        self,
        edge: Edge,
        method: str,
        req: Any,
        challenge: bytes | None = None,
        controller: ControllerPublicKey | None = None,
    ) -> bytes:
        return auth_value(
            edge.private,
            edge.public,
            controller or self.controller,
            SERVICE + method,
            challenge if challenge is not None else await self.challenge(),
            req.SerializeToString(deterministic=True),
        )

    async def call(self, method: str, req: Any, value: bytes | str | None) -> Any:
        """Make the call with `value` as the auth metadata (None: no metadata)."""
        md = () if value is None else ((AUTH_METADATA, value),)
        if method == "Watch":
            stream = self.stub.Watch(req, metadata=md)
            try:
                return await asyncio.wait_for(stream.read(), 10)
            finally:
                stream.cancel()
        return await getattr(self.stub, method)(req, metadata=md)


def config(tmp: Path, name: str = "") -> ControllerConfig:
    key_file = tmp / "controller.key"
    if not key_file.exists():
        write_controller_key(key_file, ControllerKey.generate())
    return ControllerConfig(
        listen=Endpoint.parse("127.0.0.1:0", allow_port_zero=True),
        state_dir=tmp / f"state{name}",
        edges=(A.allowed("10.244.0.0/16"), B.allowed("10.245.0.0/16")),
        signing_key_file=key_file,
        admin_socket=tmp / f"admin{name}.sock",
        lease_ttl=86400,
        store=StoreConfig(kind="file", endpoints=(), prefix="/isthmus/"),
        admission=Policy(),
    )


@asynccontextmanager
async def running(
    cfg: ControllerConfig, clock: Clock | None = None
) -> AsyncIterator[tuple[ControllerServer, Harness]]:
    server = ControllerServer(cfg, clock=clock or Clock())
    await server.start()
    try:
        async with controller_channel(server.address, server.public_key) as channel:
            yield server, Harness(channel, server.public_key)
    finally:
        await server.stop(grace=1)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout=60))


async def unauthenticated(call: Awaitable[object]) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, e.value.details()
    return e.value.details() or ""


@pytest.mark.parametrize("method", METHODS)
def test_a_proper_call_is_accepted(tmp_path: Path, method: str) -> None:
    async def body() -> None:
        async with running(config(tmp_path)) as (_, h):
            req = request(method, "vpc-a")
            reply = await h.call(method, req, await h.value(A, method, req))
            assert reply is not grpc.aio.EOF

    run(body)


@pytest.mark.parametrize("method", METHODS)
def test_missing_or_garbage_metadata_is_unauthenticated(tmp_path: Path, method: str) -> None:
    async def body() -> None:
        async with running(config(tmp_path)) as (server, h):
            req = request(method, "vpc-a")
            assert (await unauthenticated(h.call(method, req, None))).startswith("missing")
            assert "113" in await unauthenticated(h.call(method, req, b"\x00" * 7))
            assert "113" in await unauthenticated(h.call(method, req, os.urandom(200)))
            forged = A.public.raw + os.urandom(49 + 32)
            assert "challenge" in await unauthenticated(h.call(method, req, forged))
            assert server.service.version == 0

    run(body)


@pytest.mark.parametrize("method", METHODS)
def test_a_challenge_is_good_for_one_call(tmp_path: Path, method: str) -> None:
    async def body() -> None:
        async with running(config(tmp_path)) as (_, h):
            req = request(method, "vpc-a")
            value = await h.value(A, method, req)
            await h.call(method, req, value)
            assert "already used" in await unauthenticated(h.call(method, req, value))

    run(body)


@pytest.mark.parametrize("method", METHODS)
def test_an_expired_challenge_is_unauthenticated(tmp_path: Path, method: str) -> None:
    async def body() -> None:
        clock = Clock()
        async with running(config(tmp_path), clock) as (_, h):
            req = request(method, "vpc-a")
            challenge = await h.challenge()
            clock.now += 61
            value = await h.value(A, method, req, challenge)
            assert "expired" in await unauthenticated(h.call(method, req, value))
            # a fresh one at the new time works
            await h.call(method, req, await h.value(A, method, req))
            clock.now -= 30  # a challenge issued "in the future" beyond the slack
            req = request(method, "vpc-a", known=1, applied=1, routes=["10.244.1.0/24"])
            early = await h.challenge()
            clock.now -= 10
            value = await h.value(A, method, req, early)
            assert "future" in await unauthenticated(h.call(method, req, value))

    run(body)


@pytest.mark.parametrize("method", METHODS)
def test_a_proof_is_bound_to_its_method_and_body(tmp_path: Path, method: str) -> None:
    async def body() -> None:
        async with running(config(tmp_path)) as (server, h):
            req = request(method, "vpc-a")
            other_method = next(m for m in METHODS if m != method)
            value = await h.value(A, other_method, request(other_method, "vpc-a"))
            assert "proof wrong" in await unauthenticated(h.call(method, req, value))
            other_body = request(method, "vpc-a", routes=["10.244.9.0/24"], known=7, applied=7)
            value = await h.value(A, method, other_body)
            assert "proof wrong" in await unauthenticated(h.call(method, req, value))
            # a proof made for another controller's key
            other = ControllerKey.generate().public
            value = await h.value(A, method, req, controller=other)
            assert "proof wrong" in await unauthenticated(h.call(method, req, value))
            assert server.service.version == 0

    run(body)


@pytest.mark.parametrize("method", METHODS)
def test_an_unconfigured_key_is_unauthenticated(tmp_path: Path, method: str) -> None:
    async def body() -> None:
        async with running(config(tmp_path)) as (_, h):
            req = request(method, "vpc-a", edge=STRANGER)
            value = await h.value(STRANGER, method, req)
            assert "unknown edge key" in await unauthenticated(h.call(method, req, value))

    run(body)


@pytest.mark.parametrize("method", METHODS)
def test_a_challenge_of_another_replica_is_unauthenticated(tmp_path: Path, method: str) -> None:
    """Two replicas share the key file; a challenge from one is refused at the other."""

    async def body() -> None:
        async with (
            running(config(tmp_path, "1")) as (_, h1),
            running(config(tmp_path, "2")) as (_, h2),
        ):
            req = request(method, "vpc-a")
            value = await h1.value(A, method, req)
            assert "another replica" in await unauthenticated(h2.call(method, req, value))
            await h1.call(method, req, value)  # still good where it was issued

    run(body)


@pytest.mark.parametrize("method", METHODS)
def test_an_edge_naming_another_edge_is_permission_denied(tmp_path: Path, method: str) -> None:
    async def body() -> None:
        async with running(config(tmp_path)) as (server, h):
            req = request(method, "vpc-b", edge=A)  # vpc-a's key, vpc-b's name
            value = await h.value(A, method, req)
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await h.call(method, req, value)
            assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "'vpc-a'" in (e.value.details() or "")
            assert "'vpc-b'" in (e.value.details() or "")
            assert server.service.version == 0

    run(body)


def test_logs_name_the_reason_never_the_secrets(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secrets: list[bytes] = []

    async def body() -> None:
        async with running(config(tmp_path)) as (server, h):
            req = request("Register", "vpc-b", edge=A)
            value = await h.value(A, "Register", req)
            secrets.append(value)
            secrets.append(edge_shared_secret(A.private, server.public_key))
            with pytest.raises(grpc.aio.AioRpcError):
                await h.call("Register", req, value)
            bad = await h.value(A, "Report", request("Report", "vpc-a"))
            secrets.append(bad)
            await unauthenticated(h.call("Register", request("Register", "vpc-a"), bad))
            ok = request("Register", "vpc-a")
            value = await h.value(A, "Register", ok)
            secrets.append(value)
            await h.call("Register", ok, value)

    with caplog.at_level(logging.INFO, logger="controller"):
        run(body)
    text = caplog.text
    assert "event=call_refused" in text and "proof wrong" in text
    assert "PERMISSION_DENIED" in text
    seed = (tmp_path / "controller.key").read_text().strip()
    for secret in secrets:
        for form in (secret.hex(), base64.b64encode(secret).decode(), repr(secret)[2:-1]):
            assert form not in text
        # nor its proof alone (the last 32 bytes of an auth value)
        assert secret[-32:].hex() not in text
    assert seed not in text
