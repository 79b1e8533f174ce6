"""The baseline of perf.bench_controller: a trivial fan-out server, and its measurement.

The same client code (perf.fleet.Watchers) watches a trivial grpc.aio server (its own
process, like the controller) that holds N streams and, on a unary Push, sends every
stream one prebuilt one-edge delta shaped like the controller's. The controller's
fan-out figures are given as ratios to these.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import grpc

from isthmus.v1 import isthmus_pb2 as pb
from perf.fleet import (
    CALL_TIMEOUT,
    CHANNEL_OPTIONS,
    EDGES_PER_CHANNEL,
    Watchers,
    channels,
    make_edges,
    percentiles,
)
from perf.process import START_TIMEOUT, child

FANOUT_SERVICE: Final = "bench.Fanout"
FANOUT_WATCH: Final = f"/{FANOUT_SERVICE}/Watch"
FANOUT_PUSH: Final = f"/{FANOUT_SERVICE}/Push"


def sample_delta(version: int) -> bytes:
    """A one-edge delta shaped like the controller's (two routes with 64-byte leases)."""
    edge = make_edges(1)[0]
    routes = [
        pb.Route(cidr=r, lease=pb.Lease(version=version, expires=2**32, signature=bytes(64)))
        for r in edge.routes(True)
    ]
    return pb.MapUpdate(
        version=version,
        full=False,
        base_version=version - 1,
        edges=[
            pb.Edge(
                name=edge.name,
                public_key=edge.public.raw,
                endpoints=[edge.endpoint],
                routes=routes,
            )
        ],
    ).SerializeToString(deterministic=True)


async def _serve_baseline() -> None:
    version = 1
    data = pb.MapUpdate(version=1, base_version=1).SerializeToString()
    changed = asyncio.Condition()

    async def watch(request: bytes, context: Any) -> AsyncIterator[bytes]:
        sent = 0
        while True:
            async with changed:
                while version <= sent:
                    await changed.wait()
                sent = version
                message = data
            yield message

    async def push(request: bytes, context: Any) -> bytes:
        nonlocal version, data
        async with changed:
            version += 1
            data = sample_delta(version)
            changed.notify_all()
        return version.to_bytes(8, "big")

    server = grpc.aio.server(options=list(CHANNEL_OPTIONS[:2]))
    handlers = {
        "Watch": grpc.unary_stream_rpc_method_handler(watch),
        "Push": grpc.unary_unary_rpc_method_handler(push),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(FANOUT_SERVICE, handlers),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(1)


def serve_baseline() -> None:
    """Entry point of the baseline server process: prints its port, serves until SIGTERM."""
    asyncio.run(_serve_baseline())


async def bench_baseline(n: int, changes: int, workdir: Path) -> dict[str, Any]:
    code = "from perf.fanout import serve_baseline; serve_baseline()"
    log = workdir / "baseline.log"
    with child([sys.executable, "-c", code], log, stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), START_TIMEOUT)
        if not line.strip():
            raise RuntimeError(f"baseline server gave no port:\n{log.read_text()[-2000:]}")
        chans = channels(f"127.0.0.1:{int(line)}", n)
        decode = pb.MapUpdate.FromString
        watch = [c.unary_stream(FANOUT_WATCH, None, decode) for c in chans]
        push = chans[0].unary_unary(FANOUT_PUSH, None, None)
        watchers = Watchers(n)

        async def opener(i: int) -> AsyncIterator[pb.MapUpdate]:
            call = watch[i // EDGES_PER_CHANNEL](b"")
            it: AsyncIterator[pb.MapUpdate] = call.__aiter__()
            return it

        try:
            await watchers.open_all(opener)
            await watchers.wait_all(1, timeout=120)
            pushes = []
            pooled: list[float] = []
            for _ in range(changes):
                sent = time.monotonic()
                version = int.from_bytes(await push(b"", timeout=CALL_TIMEOUT), "big")
                await watchers.wait_all(version, timeout=120)
                lat = watchers.latencies(version, sent)
                pooled += lat
                pushes.append({"version": version, **percentiles(lat)})
        finally:
            await watchers.close()
            for c in chans:
                await c.close(None)
    return {"per_push": pushes, "latency": percentiles(pooled)}
