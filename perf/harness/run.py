"""The harness's composition root: options, host checks, the rounds, the outputs.

`python -m perf.harness [--overlays plain,isthmus,...] [--rounds N] [--seconds S]
[--out DIR] [--no-install] [--keep]`: builds the two sites once, then in every round sets
up, measures and tears down each overlay in turn (interleaved, so drift on a shared
machine hits every overlay alike), and writes DIR/bench.json, bench.md and bench.png.
An overlay that fails in a round is recorded under `errors` and the run goes on; the
exit code is then 1. Needs root; apt-installs missing peers unless --no-install.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import isthmus
from isthmus_lab.netns import Lab, LabError, host_problems
from perf.harness import report
from perf.harness.measure import MeasureError, Runner
from perf.harness.overlays import OVERLAYS, ensure_installed, missing_packages
from perf.harness.topology import OVERLAY_MTU, UNDERLAY_MTU, build

DEFAULT_OVERLAYS = ("plain", "isthmus", "wireguard_go", "nebula", "tinc")
_VERSION_COMMANDS = {
    "iperf3": ["iperf3", "--version"],
    "wireguard_go": ["wireguard-go", "--version"],
    "nebula": ["nebula", "-version"],
    "tinc": ["tincd", "--version"],
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="isthmus bench",
        description="Measure isthmus against the plain underlay and its peers in namespaces.",
    )
    parser.add_argument(
        "--overlays",
        default=",".join(DEFAULT_OVERLAYS),
        help=f"comma-separated, in run order (default and allowed: {','.join(DEFAULT_OVERLAYS)})",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="seconds per iperf3 run (default 10)"
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="output directory")
    parser.add_argument(
        "--no-install", action="store_true", help="fail instead of apt-installing missing peers"
    )
    parser.add_argument("--keep", action="store_true", help="keep the lab directory (logs)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.overlays.split(",") if n.strip()]
    unknown = [n for n in names if n not in OVERLAYS]
    if not names or unknown or len(set(names)) != len(names):
        parser.error(
            f"--overlays: {args.overlays!r} has unknown, repeated or no names; "
            f"allowed: {', '.join(DEFAULT_OVERLAYS)}, each at most once"
        )
    if args.rounds < 1:
        parser.error(f"--rounds: {args.rounds}; allowed: 1 or more")
    if not 1 <= args.seconds <= 600:
        parser.error(f"--seconds: {args.seconds:g}; allowed: 1-600")
    args.names = names
    return args


def progress(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def _progress_step(step: str, text: str) -> None:
    progress(f"{step}: {text}")


def host_info(names: list[str]) -> dict[str, Any]:
    versions: dict[str, str] = {"isthmus": isthmus.__version__}
    for name in ("iperf3", *names):
        argv = _VERSION_COMMANDS.get(name)
        if argv is None or shutil.which(argv[0]) is None:
            continue
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
        lines = (done.stdout or done.stderr).strip().splitlines()
        versions[name] = lines[0] if lines else f"exit {done.returncode}"
    return {
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "versions": versions,
    }


def run(names: list[str], rounds: int, seconds: float, *, keep: bool = False) -> dict[str, Any]:
    """Measure `names` for `rounds` rounds; the result document (see report.summarize).

    Raises:
        LabError: the sites could not be built (an overlay's failure is recorded instead).
    """
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    per_round: list[dict[str, dict[str, float | None]]] = []
    raw_rounds: list[dict[str, Any]] = []
    errors: dict[str, list[str]] = {}
    with Lab() as lab:
        lab.keep_dir = keep
        progress(f"building two sites in namespaces {lab.prefix}* ({lab.dir})")
        sites = build(lab)
        runner = Runner(lab, sites, seconds)
        for number in range(1, rounds + 1):
            figures: dict[str, dict[str, float | None]] = {}
            raw: dict[str, Any] = {}
            for name in names:
                overlay = OVERLAYS[name]()
                workdir = lab.dir / f"round{number}-{name}"
                workdir.mkdir(parents=True)
                step = f"round {number}/{rounds} {name}"
                try:
                    progress(f"{step}: setting up")
                    begun = time.monotonic()
                    overlay.setup(lab, sites, workdir)
                    progress(f"{step}: ready in {time.monotonic() - begun:.1f} s")
                    figures[name], raw[name] = runner.measure(
                        overlay.pids(), functools.partial(_progress_step, step)
                    )
                except (LabError, MeasureError, OSError) as e:
                    lab.keep_dir = True
                    text = f"round {number}: {e}"
                    errors.setdefault(name, []).append(text)
                    progress(f"{step}: FAILED: {e} (logs in {workdir})")
                finally:
                    try:
                        overlay.teardown()
                    except LabError as e:
                        errors.setdefault(name, []).append(f"round {number}: teardown: {e}")
            per_round.append(figures)
            raw_rounds.append({"round": number, "figures": figures, "raw": raw})
        if lab.keep_dir:
            progress(f"lab directory kept: {lab.dir}")
    doc: dict[str, Any] = {
        "schema": report.SCHEMA,
        "started": started,
        "host": host_info(names),
        "settings": {
            "overlays": names,
            "rounds": rounds,
            "seconds": seconds,
            "overlay_mtu": OVERLAY_MTU,
            "underlay_mtu": UNDERLAY_MTU,
        },
        "rounds": raw_rounds,
        "errors": errors,
    }
    doc.update(report.summarize(per_round))
    return doc


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    problems = host_problems()
    problems += [
        f"'{tool}' is not installed (scripts/setup.sh installs it)"
        for tool in ("iperf3", "ss")
        if shutil.which(tool) is None
    ]
    if problems:
        text = "\n  ".join(problems)
        print(f"bench: this host cannot run the harness:\n  {text}", file=sys.stderr)
        return 2
    missing = missing_packages(args.names)
    if missing:
        if args.no_install:
            print(f"bench: missing Debian packages: {' '.join(missing)}", file=sys.stderr)
            return 2
        progress(f"installing {' '.join(missing)} with apt-get")
        args.out.mkdir(parents=True, exist_ok=True)
        try:
            ensure_installed(args.names, args.out / "apt.log")
        except LabError as e:
            print(f"bench: {e}", file=sys.stderr)
            return 2

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt("SIGTERM")  # so the lab still tears down

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        doc = run(args.names, args.rounds, args.seconds, keep=args.keep)
    except LabError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    paths = report.write(doc, args.out)
    print(report.markdown(doc), end="")
    progress("wrote " + ", ".join(str(p) for p in paths))
    return 1 if doc["errors"] else 0
