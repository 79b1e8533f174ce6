"""The `isthmus` command: one entry point that routes to each process's own `main`.

Rule: this module imports neither `controller`, `edge`, `isthmus_io` nor `isthmus_lab`. It
names their entry points as module paths and loads the one asked for, so each process keeps
its own composition root, the two packages stay independent and the shared package never
imports the lab, the servers or the key-file I/O.
Exit codes of every command (isthmus.clikit): 0 ok, 1 error (usage errors too),
2 degraded (status, routes, edges, explain: what they show is not fully healthy).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import cast

import isthmus
from isthmus import clikit
from isthmus.configfile import ConfigError, read_toml

# command -> ("module" or "module:function", one-line help); the function (default
# `main`) takes argv and returns the exit code.
COMMANDS: dict[str, tuple[str, str]] = {
    "controller": ("controller.__main__", "run the controller (--config FILE)"),
    "edge": ("edge.__main__", "run an edge (--config FILE)"),
    "status": ("edge.status", "show a running edge's status ([--json] [--config F | --socket P])"),
    "explain": (
        "edge.status:explain_main",
        "which route, edge, lease, MTU and health apply to an address on a running edge\n"
        f"{'':14}(IP [--json] [--config F | --socket P])",
    ),
    "ping": (
        "edge.ping",
        "probe an edge, or the edge that answers for an address, through the tunnel\n"
        f"{'':14}(EDGE|IP [-c COUNT] [-i SECONDS] [--json] [--config F | --socket P])",
    ),
    "routes": (
        "controller.admin_cli:routes_main",
        "show the controller's routes ([--json] [--config F | --socket P]);\n"
        f"{'':14}--history [--limit N]: the audit log of map changes;\n"
        f"{'':14}approve ROUTE [--edge NAME]: approve a pending route",
    ),
    "edges": (
        "controller.admin_cli:edges_main",
        "show the controller's edges ([--json] [--config F | --socket P])",
    ),
    "keygen": (
        "isthmus_io.keygen",
        "make an edge key pair (--out FILE), or the controller's (--controller --out FILE)\n"
        f"{'':14}[--json]",
    ),
    "demo": ("isthmus_lab.demo", "run a four-site demo mesh in network namespaces"),
    "bench": ("isthmus_lab.bench", "measure isthmus vs WireGuard, nebula, tinc ([core] [--help])"),
}

# config kind -> module with `load(path)` raising ConfigError
CONFIG_LOADERS = {"controller": "controller.config", "edge": "edge.config"}

USAGE = (
    "usage: isthmus COMMAND [ARGS]\n\ncommands:\n"
    + "".join(f"  {name:<12}{help_}\n" for name, (_, help_) in COMMANDS.items())
    + (
        "  config      check FILE [--kind controller|edge] [--json]: validate a config file,\n"
        f"{'':14}start nothing\n"
        "  version     print the version ([--json])\n"
        "\nexit codes: 0 ok, 1 error (usage errors too), 2 degraded (status, routes, edges,\n"
        "explain: the command worked and what it shows is not fully healthy)\n"
    )
)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print(USAGE, end="", file=sys.stderr)
        return clikit.EXIT_ERROR
    if args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return clikit.EXIT_OK
    command, rest = args[0], args[1:]
    if command == "version":
        return version_command(rest)
    if command == "config":
        return config_command(rest)
    if command not in COMMANDS:
        print(f"isthmus: unknown command {command!r}\n\n{USAGE}", end="", file=sys.stderr)
        return clikit.EXIT_ERROR
    module, _, function = COMMANDS[command][0].partition(":")
    entry = cast(Callable[[list[str]], int], _load(module, function or "main"))
    return entry(rest)


def version_command(argv: list[str]) -> int:
    """`isthmus version [--json]`: 0, or 1 on a usage error."""
    parser = clikit.parser("isthmus version", "Print the version.")
    parser.add_argument("--json", action="store_true", help='print {"version": ...}')
    args = clikit.parse(parser, argv)
    if isinstance(args, int):
        return args
    version = isthmus.__version__
    clikit.emit({"version": version}, args.json, f"isthmus {version}")
    return clikit.EXIT_OK


def config_command(argv: list[str]) -> int:
    """`isthmus config check FILE [--kind controller|edge] [--json]`: 0 valid, 1 invalid.

    `--json` prints {"valid": true, "file", "kind"} or {"valid": false, "file", "error"}.
    """
    parser = clikit.parser("isthmus config", "Check config files.")
    sub = parser.add_subparsers(dest="action", required=True)
    check = sub.add_parser("check", help="validate a config file; start nothing")
    check.add_argument("file")
    check.add_argument("--kind", choices=sorted(CONFIG_LOADERS), help="default: guessed")
    check.add_argument("--json", action="store_true", help="print the verdict as JSON")
    args = clikit.parse(parser, argv)
    if isinstance(args, int):
        return args
    try:
        kind = args.kind or guess_kind(args.file)
        load = cast(Callable[[Path], object], _load(CONFIG_LOADERS[kind], "load"))
        load(Path(args.file))
    except ConfigError as e:
        if args.json:
            clikit.emit({"valid": False, "file": args.file, "error": str(e)}, True, "")
        else:
            print(f"{args.file}: {e}", file=sys.stderr)
        return clikit.EXIT_ERROR
    doc = {"valid": True, "file": args.file, "kind": kind}
    clikit.emit(doc, args.json, f"{args.file}: valid {kind} config")
    return clikit.EXIT_OK


def guess_kind(path: str) -> str:
    """A controller config lists `edges`; an edge config does not."""
    return "controller" if "edges" in read_toml(Path(path)) else "edge"


def _load(module: str, attr: str) -> object:
    return getattr(importlib.import_module(module), attr)
