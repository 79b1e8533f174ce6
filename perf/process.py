"""The benchmark's child processes (the controller, the baseline server): start them with
the repository on PYTHONPATH, wait until they serve, read their memory, stop them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Final

import grpc

REPO: Final = Path(__file__).resolve().parents[1]
START_TIMEOUT: Final = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of `pid` in KiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found


def _env() -> dict[str, str]:
    paths = [str(REPO), str(REPO / "proto"), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


@contextlib.contextmanager
def child(args: list[str], log: Path, **kw: Any) -> Iterator[subprocess.Popen[bytes]]:
    """A child process (stderr to `log`), stopped with SIGTERM, then SIGKILL, on exit."""
    with log.open("wb") as err:
        proc = subprocess.Popen(args, stderr=err, env=_env(), **kw)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


async def wait_ready(
    proc: subprocess.Popen[bytes], call: Callable[[], Awaitable[object]], log: Path
) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"process {proc.pid} exited with {proc.returncode}:\n{tail}")
        try:
            await asyncio.wait_for(call(), 1.0)
            return
        except (grpc.aio.AioRpcError, TimeoutError):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"process {proc.pid} not serving in {START_TIMEOUT:g} s"
                ) from None
            await asyncio.sleep(0.1)


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
