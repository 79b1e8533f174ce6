"""Test helper: run the `isthmus` command as a subprocess from a test's event loop, with
stdout piped, or on a pseudo-terminal (to see what a user's terminal gets: colour)."""

from __future__ import annotations

import asyncio
import os
import pty
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


async def isthmus(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "isthmus",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def isthmus_on_a_tty(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run the CLI with stdout on a pseudo-terminal; its exit code and what it printed."""
    main, secondary = pty.openpty()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "isthmus",
            *args,
            stdout=secondary,
            stderr=asyncio.subprocess.PIPE,
            cwd=REPO,
            env={**os.environ, "TERM": "xterm", **(env or {})},
        )
        os.close(secondary)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        chunks = []
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the terminal's other side is closed, all was read
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(main)
    assert proc.returncode is not None, err
    return proc.returncode, b"".join(chunks).decode().replace("\r\n", "\n")
