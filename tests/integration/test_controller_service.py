"""The controller over real gRPC: a grpc.aio server on 127.0.0.1:0, a real channel and stub.

Each test runs its own event loop (asyncio.run) and its own controller on a fresh state_dir.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import nacl.bindings
import pytest

from controller.__main__ import ControllerServer, main
from controller.config import AllowedEdge, ControllerConfig
from controller.errors import (
    ControllerError,
    InvalidRequest,
    KeyMismatch,
    RouteConflict,
    RouteNotAllowed,
    StoreError,
    UnknownEdge,
)
from controller.service import status_code
from isthmus.endpoint import Endpoint
from isthmus.ids import EdgeName
from isthmus.keys import PublicKey
from isthmus.routemap import RouteMap
from isthmus.v1 import isthmus_pb2 as pb
from isthmus.v1 import isthmus_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[2]


def key(seed: int) -> PublicKey:
    pk, _ = nacl.bindings.crypto_box_seed_keypair(bytes([seed]) * 32)
    return PublicKey(pk)


def edge(name: str, seed: int, *routes: str) -> AllowedEdge:
    return AllowedEdge(EdgeName(name), key(seed), tuple(ipaddress.ip_network(r) for r in routes))


A = edge("vpc-a", 1, "10.244.0.0/16", "10.96.0.0/16")
B = edge("vpc-b", 2, "10.245.0.0/16")


def config(state_dir: Path, *edges: AllowedEdge) -> ControllerConfig:
    return ControllerConfig(
        listen=Endpoint.parse("127.0.0.1:0", allow_port_zero=True),
        state_dir=state_dir,
        edges=edges or (A, B),
    )


def request(
    name: str, seed: int, *routes: str, endpoint: str = "198.18.0.11:51820"
) -> pb.RegisterRequest:
    return pb.RegisterRequest(
        name=name, public_key=key(seed).raw, endpoints=[endpoint], routes=list(routes)
    )


@asynccontextmanager
async def running(
    cfg: ControllerConfig,
) -> AsyncIterator[tuple[ControllerServer, pb_grpc.ControllerStub]]:
    server = ControllerServer(cfg)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            yield server, pb_grpc.ControllerStub(channel)
    finally:
        await server.stop(grace=1)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout=30))


async def refused(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call
    return e.value


def test_register_admits_and_returns_version(tmp_path: Path) -> None:
    async def body() -> None:
        async with running(config(tmp_path)) as (_, stub):
            r1 = await stub.Register(request("vpc-a", 1, "10.244.0.0/16"))
            assert r1.version == 1
            again = await stub.Register(request("vpc-a", 1, "10.244.0.0/16"))
            assert again.version == 1
            moved = await stub.Register(
                request("vpc-a", 1, "10.244.0.0/16", endpoint="198.18.0.12:1")
            )
            assert moved.version == 2

    run(body)


def test_unknown_key_is_permission_denied(tmp_path: Path) -> None:
    async def body() -> None:
        async with running(config(tmp_path)) as (_, stub):
            e = await refused(stub.Register(request("vpc-a", 9, "10.244.0.0/16")))
            assert e.code() == grpc.StatusCode.PERMISSION_DENIED
            assert e.details() == f"public key {key(9)} is not the key configured for edge 'vpc-a'"

    run(body)


def test_unknown_name_is_not_found(tmp_path: Path) -> None:
    async def body() -> None:
        async with running(config(tmp_path)) as (_, stub):
            e = await refused(stub.Register(request("vpc-z", 1, "10.244.0.0/16")))
            assert e.code() == grpc.StatusCode.NOT_FOUND
            assert e.details() == "edge 'vpc-z' is not configured on this controller"

    run(body)


def test_route_outside_allowed_is_permission_denied(tmp_path: Path) -> None:
    async def body() -> None:
        async with running(config(tmp_path)) as (server, stub):
            e = await refused(stub.Register(request("vpc-a", 1, "10.244.0.0/16", "10.0.0.0/8")))
            assert e.code() == grpc.StatusCode.PERMISSION_DENIED
            assert e.details() == (
                "route 10.0.0.0/8 is not inside the routes allowed for edge 'vpc-a'; "
                "allowed: 10.244.0.0/16, 10.96.0.0/16"
            )
            assert server.service.registry.version == 0  # all or nothing

    run(body)


def test_overlap_with_another_edge_is_already_exists(tmp_path: Path) -> None:
    # config.parse refuses overlapping allowed routes; built directly, the registry still guards.
    cfg = config(tmp_path, edge("vpc-a", 1, "10.0.0.0/8"), edge("vpc-b", 2, "10.0.0.0/8"))

    async def body() -> None:
        async with running(cfg) as (_, stub):
            await stub.Register(request("vpc-a", 1, "10.1.0.0/16"))
            e = await refused(stub.Register(request("vpc-b", 2, "10.1.2.0/24")))
            assert e.code() == grpc.StatusCode.ALREADY_EXISTS
            assert e.details() == (
                "route 10.1.2.0/24 overlaps route 10.1.0.0/16 admitted for edge 'vpc-a'"
            )

    run(body)


def test_malformed_request_is_invalid_argument(tmp_path: Path) -> None:
    async def body() -> None:
        async with running(config(tmp_path)) as (_, stub):
            e = await refused(stub.Register(request("vpc-a", 1, "10.244.0/16")))
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert (e.details() or "").startswith("routes[0]: '10.244.0/16' is not a route")
            bad_key = pb.RegisterRequest(name="vpc-a", public_key=b"short")
            e = await refused(stub.Register(bad_key))
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert e.details() == "public_key: a public key is 32 bytes, got 5"

    run(body)


def test_watcher_sees_next_version_within_one_second(tmp_path: Path) -> None:
    async def body() -> None:
        async with running(config(tmp_path)) as (_, stub):
            await stub.Register(request("vpc-a", 1, "10.244.0.0/16"))
            watch = stub.Watch(pb.WatchRequest(name="vpc-a"))
            first = await asyncio.wait_for(watch.read(), 5)
            assert first.version == 1
            assert [e.name for e in first.edges] == ["vpc-a"]
            assert list(first.edges[0].routes) == ["10.244.0.0/16"]
            assert first.edges[0].public_key == key(1).raw
            await stub.Register(request("vpc-b", 2, "10.245.0.0/16", endpoint="198.18.0.12:51820"))
            t0 = time.monotonic()
            second = await asyncio.wait_for(watch.read(), 1)
            assert time.monotonic() - t0 < 1
            assert second.version == 2
            assert [(e.name, list(e.endpoints)) for e in second.edges] == [
                ("vpc-a", ["198.18.0.11:51820"]),
                ("vpc-b", ["198.18.0.12:51820"]),
            ]
            watch.cancel()

    run(body)


def test_watch_of_unknown_name_is_not_found(tmp_path: Path) -> None:
    async def body() -> None:
        async with running(config(tmp_path)) as (_, stub):
            watch = stub.Watch(pb.WatchRequest(name="nobody"))
            e = await refused(watch.read())
            assert e.code() == grpc.StatusCode.NOT_FOUND
            assert e.details() == "edge 'nobody' is not configured on this controller"

    run(body)


def test_state_survives_a_restart(tmp_path: Path) -> None:
    async def body() -> None:
        async with running(config(tmp_path)) as (_, stub):
            await stub.Register(request("vpc-a", 1, "10.244.0.0/16"))
            await stub.Register(request("vpc-b", 2, "10.245.0.0/16"))
        async with running(config(tmp_path)) as (server, stub):
            assert server.service.registry.version == 2
            watch = stub.Watch(pb.WatchRequest(name="vpc-b"))
            snap = await asyncio.wait_for(watch.read(), 5)
            assert snap.version == 2
            assert [e.name for e in snap.edges] == ["vpc-a", "vpc-b"]
            watch.cancel()
            # a change after the restart continues from the stored version
            r = await stub.Register(request("vpc-a", 1, "10.96.0.0/16"))
            assert r.version == 3

    run(body)


def test_restart_with_smaller_config_withdraws_and_bumps(tmp_path: Path) -> None:
    async def body() -> None:
        async with running(config(tmp_path)) as (_, stub):
            await stub.Register(request("vpc-a", 1, "10.244.0.0/16"))
            await stub.Register(request("vpc-b", 2, "10.245.0.0/16"))
        async with running(config(tmp_path, B)) as (server, _):
            snap = server.service.registry.snapshot()
            assert snap.version == 3
            assert [e.name for e in snap.edges] == ["vpc-b"]

    run(body)


def test_config_reload_withdrawal_reaches_a_watcher(tmp_path: Path) -> None:
    async def body() -> None:
        async with running(config(tmp_path)) as (server, stub):
            await stub.Register(request("vpc-a", 1, "10.244.0.0/16", "10.96.0.0/16"))
            await stub.Register(request("vpc-b", 2, "10.245.0.0/16"))
            watch = stub.Watch(pb.WatchRequest(name="vpc-b"))
            assert (await asyncio.wait_for(watch.read(), 5)).version == 2
            narrowed = edge("vpc-a", 1, "10.96.0.0/16")
            withdrawn = await server.reload(config(tmp_path, narrowed, B))
            assert [(w.edge, [str(r) for r in w.routes]) for w in withdrawn] == [
                ("vpc-a", ["10.244.0.0/16"])
            ]
            snap = await asyncio.wait_for(watch.read(), 1)
            assert snap.version == 3
            assert {e.name: list(e.routes) for e in snap.edges} == {
                "vpc-a": ["10.96.0.0/16"],
                "vpc-b": ["10.245.0.0/16"],
            }
            # an edge dropped from the config can neither register nor watch any more
            await server.reload(config(tmp_path, B))
            assert (await asyncio.wait_for(watch.read(), 1)).version == 4
            e = await refused(stub.Register(request("vpc-a", 1, "10.96.0.0/16")))
            assert e.code() == grpc.StatusCode.NOT_FOUND
            watch.cancel()

    run(body)


def test_stop_ends_watches_cleanly(tmp_path: Path) -> None:
    async def body() -> None:
        server = ControllerServer(config(tmp_path))
        await server.start()
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = pb_grpc.ControllerStub(channel)
            watch = stub.Watch(pb.WatchRequest(name="vpc-a"))
            assert (await asyncio.wait_for(watch.read(), 5)).version == 0
            await asyncio.wait_for(server.stop(grace=5), 5)
            assert await asyncio.wait_for(watch.read(), 5) is grpc.aio.EOF
            assert await watch.code() == grpc.StatusCode.OK

    run(body)


def test_main_reports_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "c.toml"
    f.write_text('listen = "127.0.0.1:0"\n')
    assert main(["--config", str(f)]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"isthmus controller: {f}: state_dir: is missing; allowed: a directory path, "
        "e.g. /var/lib/isthmus-controller\n"
    )
    assert main([]) == 2


def _write_config(path: Path, state_dir: Path, *edges: AllowedEdge) -> None:
    lines = ['listen = "127.0.0.1:0"', f'state_dir = "{state_dir}"']
    for e in edges:
        routes = ", ".join(f'"{r}"' for r in e.routes)
        lines += ["[[edges]]", f'name = "{e.name}"', f'public_key = "{e.public_key}"']
        lines.append(f"routes = [{routes}]")
    path.write_text("\n".join(lines) + "\n")


def _read_until(proc: subprocess.Popen[str], needle: str, timeout: float = 20) -> str:
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        if needle in line:
            return line
    raise AssertionError(f"no line with {needle!r} from the controller")


def test_process_sighup_and_sigterm(tmp_path: Path) -> None:
    """The real process: logs its port; SIGHUP reloads (a bad file is refused); SIGTERM exits 0."""
    cfg = tmp_path / "controller.toml"
    state = tmp_path / "state"
    _write_config(cfg, state, A, B)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "proto")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller", "--config", str(cfg)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        line = _read_until(proc, "event=listening")
        assert " level=info " in line and line.startswith("ts=")
        address = line.split("address=")[1].split()[0]
        assert address.startswith("127.0.0.1:") and not address.endswith(":0")

        async def register() -> int:
            async with grpc.aio.insecure_channel(address) as channel:
                stub = pb_grpc.ControllerStub(channel)
                return (await stub.Register(request("vpc-a", 1, "10.244.0.0/16"))).version

        assert asyncio.run(register()) == 1
        assert "event=registration_admitted edge=vpc-a" in _read_until(proc, "registration_")

        cfg.write_text("listen = 1\n")
        proc.send_signal(signal.SIGHUP)
        refused_line = _read_until(proc, "event=reload_refused")
        assert "listen: 1 is not an endpoint" in refused_line

        _write_config(cfg, state, B)
        proc.send_signal(signal.SIGHUP)
        withdrawn = _read_until(proc, "event=withdrawn")
        assert "edge=vpc-a" in withdrawn and "routes=10.244.0.0/16" in withdrawn
        _read_until(proc, "event=reloaded")

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert '"version": 2' in (state / "state.json").read_text()


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (UnknownEdge("x"), grpc.StatusCode.NOT_FOUND),
        (KeyMismatch("x"), grpc.StatusCode.PERMISSION_DENIED),
        (RouteNotAllowed("x"), grpc.StatusCode.PERMISSION_DENIED),
        (RouteConflict("x"), grpc.StatusCode.ALREADY_EXISTS),
        (InvalidRequest("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (StoreError("x"), grpc.StatusCode.UNAVAILABLE),
        (ControllerError("x"), grpc.StatusCode.INTERNAL),
    ],
)
def test_status_code_mapping(error: ControllerError, code: grpc.StatusCode) -> None:
    assert status_code(error) == code


class FailingStore:
    """A store whose writes fail, as on a full disk."""

    def load(self) -> RouteMap:
        return RouteMap(version=0)

    def save(self, state: RouteMap) -> None:
        raise StoreError("cannot write /state/state.json: No space left on device")


def test_failed_persist_is_unavailable_and_changes_nothing(tmp_path: Path) -> None:
    async def body() -> None:
        server = ControllerServer(config(tmp_path), store=FailingStore())
        await server.start()
        try:
            async with grpc.aio.insecure_channel(server.address) as channel:
                stub = pb_grpc.ControllerStub(channel)
                watch = stub.Watch(pb.WatchRequest(name="vpc-a"))
                assert (await asyncio.wait_for(watch.read(), 5)).version == 0
                e = await refused(stub.Register(request("vpc-a", 1, "10.244.0.0/16")))
                assert e.code() == grpc.StatusCode.UNAVAILABLE
                assert e.details() == "cannot write /state/state.json: No space left on device"
                assert server.service.registry.snapshot() == RouteMap(version=0)
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(watch.read()), 0.3)
                watch.cancel()
        finally:
            await server.stop(grace=1)

    run(body)
