"""The conventions every `isthmus` command shares: exit codes, usage errors, JSON, colour.

Owns these rules (README "Command line", docs/design.md "CLI contract"):
- Exit codes: 0 ok; 1 error, usage errors included (a bad option, a bad argument: the
  message names it and what is allowed); 2 degraded: the command worked, and what it shows
  is not fully healthy (each command documents when). `--help` exits 0.
- `--json` prints exactly one JSON document on stdout and nothing else there; errors go to
  stderr in either mode.
- Colour only when stdout is a terminal, NO_COLOR is unset or empty (no-color.org) and
  TERM is not "dumb"; never in `--json`. Colour marks states only; the words carry the
  meaning, so a colourless copy says the same.
Must not import `controller` or `edge`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from typing import IO, Any, Final, Literal, NoReturn

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_DEGRADED: Final = 2

Style = Literal["good", "bad", "warn"]

# ANSI SGR codes: green, bold red, yellow.
_SGR: Final[dict[str, str]] = {"good": "32", "bad": "1;31", "warn": "33"}


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors exit 1 (argparse's own default is 2).

    Sub-parsers made with `add_subparsers` are of this class too.
    """

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def parser(prog: str, description: str, epilog: str | None = None) -> Parser:
    return Parser(prog=prog, description=description, epilog=epilog)


def parse(p: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace | int:
    """The parsed arguments, or the exit code when parsing ended (0 `--help`, 1 usage)."""
    try:
        return p.parse_args(argv)
    except SystemExit as e:
        return EXIT_OK if e.code in (0, None) else EXIT_ERROR


def usage_error(prog: str, message: str) -> int:
    """Print a usage error found after parsing; returns 1."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return EXIT_ERROR


def fail(prog: str, message: str) -> int:
    """Print an error on stderr; returns 1."""
    print(f"{prog}: {message}", file=sys.stderr)
    return EXIT_ERROR


def wants_colour(stream: IO[str], environ: Mapping[str, str] | None = None) -> bool:
    """True when `stream` is a terminal, NO_COLOR is unset or empty and TERM is not dumb."""
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR", "") != "" or env.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def paint(text: str, style: Style | None, colour: bool) -> str:
    """`text` in the colour of `style` when `colour`; else `text` unchanged."""
    if not colour or style is None or not text:
        return text
    return f"\x1b[{_SGR[style]}m{text}\x1b[0m"


def emit(doc: Any, as_json: bool, text: str, stream: IO[str] | None = None) -> None:
    """Print `doc` as indented JSON, or `text` (one trailing newline ensured)."""
    out = sys.stdout if stream is None else stream
    if as_json:
        out.write(json.dumps(doc, indent=2) + "\n")
    else:
        out.write(text if text.endswith("\n") or not text else text + "\n")
    out.flush()


def exit_code(problems: list[str]) -> int:
    """0 when nothing is wrong, 2 (degraded) otherwise."""
    return EXIT_DEGRADED if problems else EXIT_OK
