"""How the lab runs isthmus and its helpers: the argv prefixes, `isthmus keygen`, and polling.

Every process runs as `python -m MODULE` with this interpreter, so the lab drives the
installed isthmus (and its own helper modules) and never imports `controller` or `edge`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from isthmus_lab.netns import LabError, Process, host_run

ISTHMUS = (sys.executable, "-m", "isthmus")
PROBE = (sys.executable, "-m", "isthmus_lab.probe")
HEALTH = (sys.executable, "-m", "isthmus_lab.health")
IMPAIR = (sys.executable, "-m", "isthmus_lab.impair")
READY_TIMEOUT = 20.0
POLL_INTERVAL = 0.05


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, detail: Callable[[], str] | None = None
) -> None:
    """Poll `check` until it holds.

    Raises:
        LabError: still false after `timeout` seconds; names `what` and adds `detail()`.
    """
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            extra = f"\n{detail()}" if detail is not None else ""
            raise LabError(f"{what}: not reached within {timeout:.1f} s{extra}")
        time.sleep(POLL_INTERVAL)


def tail(process: Process, lines: int = 20) -> str:
    """The last `lines` lines of the process's log, for error messages."""
    return "\n".join(process.log().splitlines()[-lines:]) or "(empty log)"


def keygen(path: Path, *, controller: bool = False) -> str:
    """`isthmus keygen [--controller] --out PATH` (private key file, 0600); returns the
    base64 public key it prints."""
    path.parent.mkdir(parents=True, exist_ok=True)
    argv = [*ISTHMUS, "keygen", *(["--controller"] if controller else []), "--out", str(path)]
    lines = host_run(argv).stdout.split()
    if not lines:
        raise LabError(f"'{' '.join(argv)}' printed no public key")
    return lines[-1]
