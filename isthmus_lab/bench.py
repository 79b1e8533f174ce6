"""`isthmus bench`: the system benchmark, or with `core` the tunnel-core benchmark.

`isthmus bench [OPTIONS]` runs `python -m perf.harness OPTIONS` (two sites in network
namespaces; isthmus against the plain underlay, wireguard-go, nebula and tinc);
`isthmus bench core [OPTIONS]` runs `python -m perf.bench_core OPTIONS` (the tunnel core
on prebuilt packets, no I/O). See perf/README.md.

Rules: this module imports neither `controller`, `edge` nor `perf` (which imports both):
the benchmarks run as a child process, from the source checkout that holds this package,
because `perf/` ships with the repository and not in the installed package. The child
inherits the terminal, so its output and exit code are the command's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

MODULES = {"harness": "perf.harness", "core": "perf.bench_core"}


def checkout_root() -> Path | None:
    """The source checkout holding this package (<root>/isthmus_lab), if it has perf/."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "perf" / "harness" / "__main__.py").is_file() else None


def main(argv: list[str]) -> int:
    kind, rest = ("core", argv[1:]) if argv[:1] == ["core"] else ("harness", argv)
    root = checkout_root()
    if root is None:
        print(
            "isthmus bench: perf/ is not next to this isthmus package; run it from a source "
            "checkout (pip install -e .)",
            file=sys.stderr,
        )
        return 2
    paths = [str(root), str(root / "proto")]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    try:
        return subprocess.run([sys.executable, "-m", MODULES[kind], *rest], env=env).returncode
    except KeyboardInterrupt:
        return 130
