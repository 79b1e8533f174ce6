"""An exposed controller (docs/controller.md, "Exposing the controller") over real gRPC.

    attacker  --IPv4 127.0.0.1--+
                                +--> controller on [::]:0 (ControllerServer, file store)
    edge      --IPv6 ::1--------+

Two sources: the controller listens on [::] and the attacker dials 127.0.0.1 while the
legitimate edge dials ::1, so per-source limits tell them apart. Limits are set low in
each test's config so a flood is a few hundred calls. Covers reliability.md S02 (the gRPC
part: oversize messages), S10 (unauthenticated clients) and S22 (a join flood at the
controller), and the findings F1 and F9 of "A control plane you can expose".
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from controller.__main__ import ControllerServer
from controller.bounds import AuditConfig, Limits
from controller.config import ControllerConfig
from controller.guard import MAX_RECEIVE_BYTES, MAX_REGISTER_BYTES
from controller.ratelimit import Rate
from isthmus.auth import AUTH_METADATA
from isthmus.endpoint import Endpoint
from isthmus.signing import ControllerKey
from isthmus.tlscert import channel_credentials, channel_options
from isthmus.v1 import health_pb2, health_pb2_grpc
from isthmus.v1 import isthmus_pb2 as pb
from isthmus_io.keyfiles import write_controller_key
from tests.integration.clirun import isthmus
from tests.integration.edgeclient import EdgeClient, edge_keys

A = edge_keys("vpc-a", 1)
B = edge_keys("vpc-b", 2)
STRANGER = edge_keys("vpc-a", 9)  # not configured
REGISTER = "/isthmus.v1.Controller/Register"
WATCH = "/isthmus.v1.Controller/Watch"
MIB = 1024 * 1024
BIG = (("grpc.max_send_message_length", 32 * MIB), ("grpc.use_local_subchannel_pool", 1))


def config(tmp: Path, limits: Limits | None = None, **kw: Any) -> ControllerConfig:
    key_file = tmp / "controller.key"
    if not key_file.exists():
        write_controller_key(key_file, ControllerKey.generate())
    return ControllerConfig(
        listen=Endpoint.parse("[::]:0", allow_port_zero=True),
        state_dir=tmp / "state",
        edges=(A.allowed("10.244.0.0/16"), B.allowed("10.245.0.0/16")),
        signing_key_file=key_file,
        admin_socket=tmp / "admin.sock",
        metrics=None,
        limits=limits or Limits(),
        **kw,
    )


class Controller:
    """A running controller and channels to it from the two sources."""

    def __init__(self, server: ControllerServer) -> None:
        self.server = server
        # TLS pinned to the controller key, as edges (and any attacker who knows that
        # public key) dial.
        credentials = channel_credentials(server.public_key)
        options = (*BIG, *channel_options())
        self.v4 = grpc.aio.secure_channel(f"127.0.0.1:{server.port}", credentials, options=options)
        self.v6 = grpc.aio.secure_channel(f"[::1]:{server.port}", credentials, options=options)

    def edge(self, keys: Any, channel: grpc.aio.Channel | None = None) -> EdgeClient:
        return EdgeClient(channel or self.v6, self.server.public_key, keys)

    async def healthy(self) -> bool:
        stub = health_pb2_grpc.HealthStub(self.v6)  # type: ignore[no-untyped-call]
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    async def close(self) -> None:
        await self.v4.close(None)
        await self.v6.close(None)


@asynccontextmanager
async def running(cfg: ControllerConfig) -> AsyncIterator[Controller]:
    server = ControllerServer(cfg)
    await server.start()
    c = Controller(server)
    try:
        yield c
    finally:
        await c.close()
        await server.stop(grace=1)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout=90))


async def code_of(call: Awaitable[object]) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as e:
        return e.code(), e.details() or ""
    return grpc.StatusCode.OK, ""


def raw_register(channel: grpc.aio.Channel) -> Any:
    """Register with the body sent as given bytes (no serializer, no parsing here)."""
    return channel.unary_unary(REGISTER, request_serializer=None, response_deserializer=None)


# --- F1, S02: nothing expensive before authentication ---------------------------------------


def test_the_receive_limit_fits_the_largest_register() -> None:
    routes = [
        f"ffff:ffff:ffff:ffff:ffff:ffff:255.255.{i // 256}.{i % 256}/128" for i in range(1000)
    ]
    endpoints = ["[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535"] * 8
    largest = pb.RegisterRequest(
        name="e" * 63, public_key=bytes(32), endpoints=endpoints, routes=routes
    )
    assert largest.ByteSize() <= MAX_REGISTER_BYTES < MAX_RECEIVE_BYTES


def test_a_junk_15_mib_register_is_refused_and_an_unparsable_one_is_never_parsed(
    tmp_path: Path,
) -> None:
    """S02 (gRPC): above the limit RESOURCE_EXHAUSTED; below it, bad auth is refused
    UNAUTHENTICATED before the body is parsed: a body that cannot parse would otherwise
    fail as UNKNOWN, gRPC's answer to a failed deserialization (shown with a call whose
    auth passes the metadata checks)."""

    async def body() -> None:
        async with running(config(tmp_path)) as c:
            junk = os.urandom(15 * MIB)
            calls = [
                raw_register(c.v4)(junk, metadata=((AUTH_METADATA, os.urandom(113)),))
                for _ in range(8)
            ]
            for code, details in await asyncio.gather(*(code_of(x) for x in calls)):
                assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details
            unparsable = b"\xff" * 1000  # an invalid tag: protobuf cannot decode it
            bad_auth = ((AUTH_METADATA, A.public.raw + os.urandom(81)),)
            code, details = await code_of(raw_register(c.v4)(unparsable, metadata=bad_auth))
            assert code == grpc.StatusCode.UNAUTHENTICATED, details
            assert "challenge" in details
            code, _ = await code_of(raw_register(c.v4)(unparsable))
            assert code == grpc.StatusCode.UNAUTHENTICATED
            # The control: with metadata that passes every check but the proof, the body
            # is parsed, and this one cannot be.
            good = await c.edge(A).metadata("Register", c.edge(A).request("10.244.0.0/16"))
            code, _ = await code_of(raw_register(c.v4)(unparsable, metadata=good))
            assert code == grpc.StatusCode.UNKNOWN
            assert await c.healthy()
            assert (await c.edge(A).register("10.244.0.0/16")).version == 1

    run(body)


def test_a_challenge_flood_from_one_source_spares_another_source(tmp_path: Path) -> None:
    limits = Limits(challenge=Rate(1.0, 20), refused=Rate(1.0, 5))

    async def body() -> None:
        async with running(config(tmp_path, limits)) as c:
            attacker = c.edge(A, c.v4)
            gate = asyncio.Semaphore(50)  # under the 100 streams a connection may have

            async def challenge() -> tuple[grpc.StatusCode, str]:
                async with gate:
                    return await code_of(attacker.stub.Challenge(pb.ChallengeRequest()))

            results = await asyncio.gather(*(challenge() for _ in range(200)))
            ok = [code for code, _ in results].count(grpc.StatusCode.OK)
            assert 20 <= ok <= 40, set(results)  # the burst, and 1/s
            exhausted = [d for code, d in results if code == grpc.StatusCode.RESOURCE_EXHAUSTED]
            assert len(exhausted) == 200 - ok
            assert "too many Challenge calls from 127.0.0.1: at most 1/s (burst 20)" in exhausted[0]
            assert "retry in" in exhausted[0]
            # vpc-a, from the other source, still registers and watches
            edge = c.edge(A)
            assert (await edge.register("10.244.0.0/16")).version == 1
            call = await edge.watch()
            assert (await asyncio.wait_for(call.read(), 10)).version == 1
            call.cancel()
            assert c.server.metrics.rate_limited["challenge"] == len(exhausted)

    run(body)


def test_refusals_are_logged_once_per_reason_and_source(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    limits = Limits(refused=Rate(1.0, 30))

    async def body() -> None:
        async with running(config(tmp_path, limits)) as c:
            req = c.edge(A).request("10.244.0.0/16")
            stub = c.edge(A, c.v4).stub
            missing = [code_of(stub.Register(req)) for _ in range(40)]
            forged = [
                code_of(stub.Register(req, metadata=((AUTH_METADATA, os.urandom(113)),)))
                for _ in range(40)
            ]
            results = await asyncio.gather(*missing, *forged)
            codes = {code for code, _ in results}
            assert codes == {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.RESOURCE_EXHAUSTED}
            exhausted = [d for code, d in results if code == grpc.StatusCode.RESOURCE_EXHAUSTED]
            assert len(exhausted) >= 45 and "too many refused calls" in exhausted[0]
            assert c.server.metrics.refusals["missing"] >= 1
            assert c.server.metrics.rate_limited["refused"] == len(exhausted)

    with caplog.at_level(logging.INFO, logger="controller"):
        run(body)
    refused = [r for r in caplog.records if "event=call_refused" in r.getMessage()]
    # one line per (reason, source): missing, a forged or malformed challenge, refused_rate
    assert 2 <= len(refused) <= 4, [r.getMessage() for r in refused]
    assert all("source=127.0.0.1" in r.getMessage() for r in refused)


def test_health_watch_streams_are_capped(tmp_path: Path) -> None:
    limits = Limits(health_watches=3, health_watches_per_source=2)

    async def body() -> None:
        async with running(config(tmp_path, limits)) as c:
            calls = []

            async def watch(channel: grpc.aio.Channel) -> grpc.StatusCode:
                stub = health_pb2_grpc.HealthStub(channel)  # type: ignore[no-untyped-call]
                call = stub.Watch(health_pb2.HealthCheckRequest(service=""))
                calls.append(call)
                try:
                    reply = await asyncio.wait_for(call.read(), 10)
                except grpc.aio.AioRpcError as e:
                    return e.code()
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
                return grpc.StatusCode.OK

            ok, limited = grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED
            assert [await watch(c.v4) for _ in range(3)] == [ok, ok, limited]  # per source
            assert [await watch(c.v6) for _ in range(2)] == [ok, limited]  # in all
            calls[0].cancel()
            for _ in range(50):
                if c.server.service.guard.health_watches == 2:
                    break
                await asyncio.sleep(0.05)
            assert await watch(c.v6) == ok
            assert await c.healthy()  # Check is never capped
            for call in calls:
                call.cancel()

    run(body)


def test_s10_unauthenticated_clients_get_unauthenticated_and_nothing_leaks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """S10: no creds, a bad token, an expired and a replayed challenge, each with a body
    that would not even parse: UNAUTHENTICATED, the server healthy, no token in the logs."""
    clock = [1_760_000_000.0]
    tokens: list[bytes] = []

    async def body() -> None:
        server = ControllerServer(config(tmp_path), clock=lambda: clock[0])
        await server.start()
        c = Controller(server)
        try:
            a = c.edge(A, c.v4)
            req = a.request("10.244.0.0/16")
            unparsable = b"\xff" * 64
            stale = await a.metadata("Register", req)
            clock[0] += 61
            used = await a.metadata("Register", req)
            await a.stub.Register(req, metadata=used)
            bad = ((AUTH_METADATA, os.urandom(113)),)
            tokens.extend([stale[0][1], used[0][1]])
            for md in ((), bad, stale, used):
                code, details = await code_of(raw_register(c.v4)(unparsable, metadata=md))
                assert code == grpc.StatusCode.UNAUTHENTICATED, details
                watch = c.v4.unary_stream(WATCH, request_serializer=None)
                code, _ = await code_of(watch(unparsable, metadata=md).read())
                assert code == grpc.StatusCode.UNAUTHENTICATED
            for md in (stale, used):
                code, details = await code_of(a.stub.Register(req, metadata=md))
                assert code == grpc.StatusCode.UNAUTHENTICATED
                assert "expired" in details or "already used" in details
            assert await c.healthy()
        finally:
            await c.close()
            await server.stop(grace=1)

    with caplog.at_level(logging.DEBUG, logger="controller"):
        run(body)
    text = caplog.text
    assert "event=call_refused" in text
    for token in tokens:
        for form in (token.hex(), base64.b64encode(token).decode(), token[-32:].hex()):
            assert form not in text


# --- F9, S22: per-edge limits ---------------------------------------------------------------


def test_s22_a_register_flood_is_rate_limited_while_another_edge_registers(
    tmp_path: Path,
) -> None:
    limits = Limits(register=Rate(0.1, 3), report=Rate(1.0, 4))

    async def body() -> None:
        async with running(config(tmp_path, limits)) as c:
            flood, other = c.edge(A, c.v4), c.edge(B)
            codes = []
            for i in range(8):
                code, details = await code_of(flood.register(f"10.244.{i}.0/24"))
                codes.append(code)
            assert codes[:3] == [grpc.StatusCode.OK] * 3
            assert codes[3:] == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 5
            assert "'vpc-a' is over its Register limit of 6/min (burst 3) per edge" in details
            assert "retry in" in details
            # unknown keys flooding Register are refused before any work
            stranger = c.edge(STRANGER, c.v4)
            strangers = await asyncio.gather(
                *(code_of(stranger.register("10.244.0.0/16")) for _ in range(10))
            )
            assert {code for code, _ in strangers} <= {
                grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
            }
            assert (await other.register("10.245.0.0/16")).routes[0].state == (
                pb.ROUTE_STATE_SERVING
            )
            call = await other.watch()
            assert (await asyncio.wait_for(call.read(), 10)).version == 4
            call.cancel()
            for _ in range(4):
                await flood.report(1)
            code, details = await code_of(flood.report(1))
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "Report limit of 1/s (burst 4)" in details
            await other.report(4)  # vpc-b's reports are its own
            assert c.server.metrics.rate_limited == {"register": 5, "report": 1}

    run(body)


def test_an_edge_holds_at_most_four_watch_streams(tmp_path: Path) -> None:
    async def body() -> None:
        async with running(config(tmp_path)) as c:
            a, b = c.edge(A, c.v4), c.edge(B)
            calls = [await a.watch() for _ in range(4)]
            for call in calls:
                assert (await asyncio.wait_for(call.read(), 10)).version == 0
            code, details = await code_of((await a.watch()).read())
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "'vpc-a' has 4 Watch streams open" in details
            other = await b.watch()
            assert (await asyncio.wait_for(other.read(), 10)).version == 0
            calls[0].cancel()
            for _ in range(50):
                if c.server.service.watch_streams == 4:
                    break
                await asyncio.sleep(0.05)
            again = await a.watch()
            assert (await asyncio.wait_for(again.read(), 10)).version == 0
            for call in (*calls, other, again):
                call.cancel()

    run(body)


def test_one_edge_using_up_its_challenges_does_not_lock_out_another(tmp_path: Path) -> None:
    limits = Limits(challenges_per_edge=5, report=Rate(0.0, 1))

    async def body() -> None:
        async with running(config(tmp_path, limits)) as c:
            a, b = c.edge(A, c.v4), c.edge(B)
            for _ in range(5):
                await a.report(0)
            code, details = await code_of(a.report(0))
            assert code == grpc.StatusCode.UNAUTHENTICATED
            assert "too many challenges redeemed by this edge key" in details
            for _ in range(5):
                await b.report(0)

    run(body)


# --- F9: audit rotation ---------------------------------------------------------------------


def test_audit_log_rotates_by_size_and_history_reads_across_files(tmp_path: Path) -> None:
    limits = Limits(register=Rate(0.0, 1))
    cfg = config(tmp_path, limits, audit=AuditConfig(max_bytes=4096, keep=2))

    async def body() -> None:
        async with running(cfg) as c:
            a = c.edge(A)
            for i in range(40):  # each change: a route withdrawn, another serving
                await a.register(f"10.244.{i}.0/24")
            state = tmp_path / "state"
            log = state / "audit.log"
            assert log.stat().st_size <= 4096
            assert (state / "audit.log.1").stat().st_size <= 4096
            assert (state / "audit.log.2").exists()
            assert not (state / "audit.log.3").exists()
            code, out, err = await isthmus(
                "routes",
                "--history",
                "--json",
                "--limit",
                "60",
                "--socket",
                str(c.server.admin_socket),
            )
            assert code == 0, err
            entries = json.loads(out)["entries"]
            assert len(entries) == 60
            assert entries[-1]["version"] == 40
            versions = [e["version"] for e in entries]
            assert versions == sorted(versions)
            first_in_current = json.loads(log.read_text().splitlines()[0])["version"]
            assert versions[0] < first_in_current  # some came from a rotated file

    run(body)
