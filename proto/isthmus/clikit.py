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
- Text output never passes a control character that came from data (an edge's report, a
  controller's message, a peer's name) to the terminal: every text renderer runs data
  through `printable` (or `printable_doc`), which writes C0 (tab and newline too), DEL, C1,
  U+2028/U+2029 and the bidi embeddings, overrides and isolates (U+202A-U+202E,
  U+2066-U+2069) visibly as `\\xNN` / `\\uNNNN`, so data can neither move the cursor,
  clear the screen, set the clipboard (OSC 52) nor start a line of its own. The colour
  codes `paint` adds are the only escape sequences written. `--json` is safe as it is:
  json.dumps escapes every control character.
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


# Every code point `printable` rewrites, with what it writes instead.
_ESCAPES: Final[dict[int, str]] = {
    **{c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))},
    **{c: f"\\u{c:04x}" for c in (0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A))},
}
CONTROL: Final = frozenset(chr(c) for c in _ESCAPES)  # what `printable` never lets through


def printable(text: str) -> str:
    """`text` with every control character written visibly (see the module), one line."""
    return text.translate(_ESCAPES)


def printable_doc(doc: Any) -> Any:
    """A copy of the JSON-like `doc` with `printable` applied to every string in it
    (keys too); other values are kept as they are."""
    if isinstance(doc, str):
        return printable(doc)
    if isinstance(doc, dict):
        return {printable_doc(k): printable_doc(v) for k, v in doc.items()}
    if isinstance(doc, list | tuple):
        return [printable_doc(v) for v in doc]
    return doc


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
    """Print a usage error found after parsing (made printable); returns 1."""
    print(f"{prog}: error: {printable(message)}", file=sys.stderr)
    return EXIT_ERROR


def fail(prog: str, message: str) -> int:
    """Print an error on stderr (made printable: it may quote a peer); returns 1."""
    print(f"{prog}: {printable(message)}", file=sys.stderr)
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
