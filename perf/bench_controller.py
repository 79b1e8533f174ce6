"""Benchmark the controller at scale: N simulated edges watching one controller process.

Measures, for N edges (default 1,000) registered and watching one real controller
(`python -m isthmus controller --config F`, a subprocess on 127.0.0.1, file store):

- setup: the time for every edge to Challenge + Register, then to open its Watch and
  hold the map that includes every registration;
- fan-out: K times (default 5) one edge re-registers with a route added or taken away
  (a new map version); for every edge, the time from the moment that Register call is
  sent to the edge's receipt of a MapUpdate at that version or newer. The Register reply
  carries the version, but the controller publishes before it replies, so watchers may
  hold the version before the reply arrives: timing from the send keeps every figure
  positive and includes the decision and the store write. p50, p99 and max per change
  and pooled over all changes; the target on the development machine is p99 < 2 s.
  The table's "first" column is the earliest edge: about the controller's decision and
  store write; the rest of the spread is the fan-out;
- the controller's memory from /proc/PID/status: VmRSS when started, after setup and at
  the end, and VmHWM (the peak).

Setup's watch time is mostly this process decoding N whole maps of N edges (one per
edge), not the controller, which encodes the map once.

The simulated edges live in this process (grpc.aio, one channel per EDGES_PER_CHANNEL
edges; gRPC multiplexes the streams), away from the controller's process. Each call but
Challenge is authenticated as docs/controller.md says (`isthmus.auth.auth_value`), and
every MapUpdate is decoded with `isthmus.convert.update_from_pb`, as an edge would. Both
ends of every interval are `time.monotonic()` in this process. With `--report` every
edge also calls Report (after a fresh Challenge) after each map, as real edges do; the
reports of one change may still be in flight when the next one starts.

Baseline, measured in the same run: the same client code watching a trivial grpc.aio
server (its own process, like the controller) that holds N streams and, on a unary Push,
sends every stream one prebuilt one-edge delta. The fan-out figures are also given as
ratios to the baseline's (a noisy machine moves both), so the ratio is the cost the
controller adds over bare gRPC fan-out to the same client.

The simulated edges are perf.fleet, the baseline server perf.fanout, and the child
processes perf.process; this module runs the controller, the two measurements and prints.

Run: .venv/bin/python -m perf.bench_controller [--edges N] [--changes K] [--report] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

from isthmus.signing import ControllerKey
from isthmus.v1 import isthmus_pb2 as pb
from isthmus_io.keyfiles import write_controller_key
from perf.fanout import bench_baseline
from perf.fleet import (
    EDGES_PER_CHANNEL,
    SETUP_CONCURRENCY,
    Fleet,
    SimEdge,
    Watchers,
    channels,
    make_edges,
    percentiles,
)
from perf.process import child, free_port, memory, raise_nofile, wait_ready

DEFAULT_EDGES: Final = 1_000
DEFAULT_CHANGES: Final = 5
MAX_EDGES: Final = 10_000  # isthmus.convert.MAX_EDGES: a bigger map is refused on the wire
TARGET_P99: Final = 2.0  # seconds, on the development machine (2 cores)


def controller_config(edges: tuple[SimEdge, ...], workdir: Path, port: int) -> str:
    """The controller's TOML: each edge allowed its /24."""
    lines = [
        f'listen = "127.0.0.1:{port}"',
        f"state_dir = {json.dumps(str(workdir / 'state'))}",
        f"signing_key_file = {json.dumps(str(workdir / 'controller.key'))}",
        f"admin_socket = {json.dumps(str(workdir / 'admin.sock'))}",
        "",
        # Every simulated edge calls from 127.0.0.1, as if behind one NAT: let them all
        # take their challenges at once (the default is 20/s per source address).
        "[limits]",
        f"challenge_rate = {max(20, 10 * len(edges))}",
        f"challenge_burst = {max(200, 10 * len(edges))}",
    ]
    for e in edges:
        lines += [
            "",
            "[[edges]]",
            f'name = "{e.name}"',
            f'public_key = "{e.public.to_base64()}"',
            f'routes = ["{e.block}"]',
        ]
    return "\n".join(lines) + "\n"


# --- the controller process -------------------------------------------------------------


async def bench_controller(
    edges: tuple[SimEdge, ...], changes: int, workdir: Path, report: bool
) -> dict[str, Any]:
    key = ControllerKey.generate()
    write_controller_key(workdir / "controller.key", key)
    port = free_port()
    config = workdir / "controller.toml"
    config.write_text(controller_config(edges, workdir, port))
    args = [sys.executable, "-m", "isthmus", "controller", "--config", str(config)]
    log = workdir / "controller.log"
    with child(args, log, stdout=subprocess.DEVNULL) as proc:
        chans = channels(f"127.0.0.1:{port}", len(edges), key.public)
        fleet = Fleet(edges, key.public, chans)
        watchers = Watchers(len(edges), fleet.report if report else None)
        try:

            async def challenge() -> object:
                return await fleet.stub(0).Challenge(pb.ChallengeRequest())

            await wait_ready(proc, challenge, log)
            mem_start = memory(proc.pid)

            start = time.monotonic()
            gate = asyncio.Semaphore(SETUP_CONCURRENCY)

            async def register(i: int) -> int:
                async with gate:
                    return (await fleet.register(i))[0]

            version = max(await asyncio.gather(*(register(i) for i in range(len(edges)))))
            registered = time.monotonic()
            await watchers.open_all(fleet.watch)
            await watchers.wait_all(version, timeout=600)
            ready = time.monotonic()
            mem_setup = memory(proc.pid)

            per_change = []
            pooled: list[float] = []
            for k in range(changes):
                i = (k * 7919) % len(edges)  # spread the changing edge over the channels
                fleet.extra[i] = not fleet.extra[i]
                version, sent, replied = await fleet.register(i)
                await watchers.wait_all(version, timeout=120)
                lat = watchers.latencies(version, sent)
                pooled += lat
                per_change.append(
                    {
                        "edge": edges[i].name,
                        "version": version,
                        "register_s": replied - sent,
                        **percentiles(lat),
                    }
                )
            mem_end = memory(proc.pid)
        finally:
            await watchers.close()
            for c in chans:
                await c.close(None)
    return {
        "setup": {
            "register_s": registered - start,
            "watch_s": ready - registered,
            "total_s": ready - start,
        },
        "per_change": per_change,
        "latency": percentiles(pooled),
        "memory_kib": {
            "rss_start": mem_start["VmRSS"],
            "rss_after_setup": mem_setup["VmRSS"],
            "rss_end": mem_end["VmRSS"],
            "hwm": mem_end["VmHWM"],
        },
        "exit_code": proc.returncode,
    }


# --- the run -----------------------------------------------------------------------------


def run(
    edges: int = DEFAULT_EDGES, changes: int = DEFAULT_CHANGES, report: bool = False
) -> dict[str, Any]:
    """Measure the baseline, then the controller; every figure in seconds or KiB."""
    if not 1 <= edges <= MAX_EDGES:
        raise ValueError(f"edges: {edges}; allowed: 1-{MAX_EDGES}")
    if changes < 1:
        raise ValueError(f"changes: {changes}; allowed: 1 or more")
    raise_nofile()
    sim = make_edges(edges)
    workdir = Path(tempfile.mkdtemp(prefix="isthmus-bench-"))
    try:
        baseline = asyncio.run(bench_baseline(edges, changes, workdir))
        controller = asyncio.run(bench_controller(sim, changes, workdir, report))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    lat, base = controller["latency"], baseline["latency"]
    return {
        "edges": edges,
        "changes": changes,
        "report": report,
        "edges_per_channel": EDGES_PER_CHANNEL,
        "target_p99_s": TARGET_P99,
        "meets_target": lat["p99_s"] < TARGET_P99,
        **controller,
        "baseline": baseline,
        "ratio": {k.removesuffix("_s"): lat[k] / base[k] for k in lat},
    }


FIGURES: Final = ("min_s", "p50_s", "p99_s", "max_s")


def _row(label: str, edge: str, version: str, register: str, figures: list[str]) -> str:
    return f"{label:>8} {edge:>12} {version:>8} {register:>9} " + " ".join(
        f"{f:>8}" for f in figures
    )


def text(r: dict[str, Any]) -> str:
    """The human-readable table of a `run` result (times in ms)."""
    s, m = r["setup"], r["memory_kib"]

    def ms(x: float) -> str:
        return f"{x * 1000:.1f}"

    out = [
        f"controller with {r['edges']} edges ({r['edges_per_channel']} per channel), "
        f"{r['changes']} changes{', edges report' if r['report'] else ''}",
        f"setup: register {s['register_s']:.2f} s, watch {s['watch_s']:.2f} s, "
        f"total {s['total_s']:.2f} s",
        f"memory: VmRSS {m['rss_start'] / 1024:.1f} MiB at start, "
        f"{m['rss_after_setup'] / 1024:.1f} after setup, {m['rss_end'] / 1024:.1f} at end; "
        f"VmHWM {m['hwm'] / 1024:.1f} MiB",
        "",
        "ms from sending Register (baseline: Push) to each edge holding that version:",
        _row("change", "edge", "version", "register", ["first", "p50", "p99", "max"]),
    ]
    for k, c in enumerate(r["per_change"]):
        figures = [ms(c[f]) for f in FIGURES]
        out.append(_row(str(k + 1), c["edge"], str(c["version"]), ms(c["register_s"]), figures))
    lat, base, ratio = r["latency"], r["baseline"]["latency"], r["ratio"]
    out += [
        _row("pooled", "", "", "", [ms(lat[f]) for f in FIGURES]),
        _row("baseline", "bare fan-out", "", "", [ms(base[f]) for f in FIGURES]),
        _row("ratio", "", "", "", [f"{ratio[f.removesuffix('_s')]:.2f}" for f in FIGURES]),
        "",
        f"target p99 < {r['target_p99_s']:g} s: {'met' if r['meets_target'] else 'NOT met'}",
    ]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", type=int, default=DEFAULT_EDGES, help="simulated edges")
    parser.add_argument("--changes", type=int, default=DEFAULT_CHANGES, help="route changes")
    parser.add_argument("--report", action="store_true", help="edges Report after each map")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = run(args.edges, args.changes, args.report)
    print(json.dumps(results, indent=2) if args.json else text(results))


if __name__ == "__main__":
    main()
