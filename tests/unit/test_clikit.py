"""The CLI conventions (isthmus.clikit): usage errors exit 1, --help 0, JSON or text on
stdout, colour only on a terminal with NO_COLOR unset and TERM not dumb."""

from __future__ import annotations

import io
import json
import os
import pty
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from isthmus import clikit


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_usage_errors_exit_1_and_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    p = clikit.parser("isthmus thing", "A thing.")
    p.add_argument("--n", type=int)
    sub = p.add_subparsers(dest="action")
    sub.add_parser("go").add_argument("target")
    assert clikit.parse(p, ["--n", "x"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("usage: isthmus thing")
    assert "isthmus thing: error: argument --n: invalid int value: 'x'" in err
    assert clikit.parse(p, ["go"]) == 1  # a sub-parser's usage error: exit 1 too
    assert "isthmus thing go: error: the following arguments are required: target" in (
        capsys.readouterr().err
    )
    assert clikit.parse(p, ["--help"]) == 0
    assert "A thing." in capsys.readouterr().out
    args = clikit.parse(p, ["--n", "3"])
    assert not isinstance(args, int) and args.n == 3
    with pytest.raises(SystemExit) as caught:
        p.parse_args(["--bogus"])
    assert caught.value.code == 1
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
    assert clikit.usage_error("isthmus thing", "--limit needs --history") == 1
    assert capsys.readouterr().err == "isthmus thing: error: --limit needs --history\n"
    assert clikit.fail("isthmus thing", "no edge") == 1
    assert capsys.readouterr().err == "isthmus thing: no edge\n"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, True),
        ({"TERM": "xterm-256color"}, True),
        ({"NO_COLOR": ""}, True),  # no-color.org: an empty NO_COLOR is unset
        ({"NO_COLOR": "1"}, False),
        ({"NO_COLOR": "0"}, False),  # any non-empty value
        ({"TERM": "dumb"}, False),
    ],
)
def test_colour_on_a_terminal_unless_no_color_or_dumb(
    environ: dict[str, str], expected: bool
) -> None:
    assert clikit.wants_colour(Tty(), environ) is expected
    assert clikit.wants_colour(io.StringIO(), environ) is False  # never when not a terminal


def test_colour_on_a_real_pty_and_not_on_a_pipe() -> None:
    main, secondary = pty.openpty()
    read, write = os.pipe()
    try:
        with open(secondary, "w", closefd=False) as tty, open(write, "w", closefd=False) as pipe:
            assert clikit.wants_colour(tty, {}) is True
            assert clikit.wants_colour(tty, {"NO_COLOR": "yes"}) is False
            assert clikit.wants_colour(pipe, {}) is False
    finally:
        for fd in (main, secondary, read, write):
            os.close(fd)
    closed = io.StringIO()
    closed.close()
    assert clikit.wants_colour(closed, {}) is False


def test_paint_marks_states_only_when_asked() -> None:
    assert clikit.paint("installed", "good", True) == "\x1b[32minstalled\x1b[0m"
    assert clikit.paint("NOT installed", "bad", True) == "\x1b[1;31mNOT installed\x1b[0m"
    assert clikit.paint("pending", "warn", True) == "\x1b[33mpending\x1b[0m"
    assert clikit.paint("pending", "warn", False) == "pending"
    assert clikit.paint("plain", None, True) == "plain"
    assert clikit.paint("", "bad", True) == ""


def test_emit_prints_json_or_text_with_one_trailing_newline() -> None:
    out = io.StringIO()
    clikit.emit({"valid": True, "kind": "edge"}, True, "ignored", out)
    assert json.loads(out.getvalue()) == {"valid": True, "kind": "edge"}
    assert out.getvalue().endswith("}\n") and "ignored" not in out.getvalue()
    for text in ("a line", "a line\n"):
        out = io.StringIO()
        clikit.emit({}, False, text, out)
        assert out.getvalue() == "a line\n"


def test_exit_codes() -> None:
    assert (clikit.EXIT_OK, clikit.EXIT_ERROR, clikit.EXIT_DEGRADED) == (0, 1, 2)
    assert clikit.exit_code([]) == 0
    assert clikit.exit_code(["route 10.0.0.0/8 is pending"]) == 2


# -- printable: data never steers the terminal ---------------------------------------------

HOSTILE = (
    "map refused\x1b[2J\x1b[H"  # clear the screen, cursor home
    "\x1b]52;c;ZWNobyBwd25lZA==\x07"  # OSC 52: write the clipboard
    "\r\nvpc-b  connected  7  1s ago  ctl-1  -  -"  # a fake line
    "\x9b31m\u202eevil\u2066\u2028\x7f\t"  # C1 CSI, bidi override and isolate, LS, DEL, tab
)


def _is_control(c: str) -> bool:
    return (
        unicodedata.category(c) == "Cc" or 0x2028 <= ord(c) <= 0x202E or 0x2066 <= ord(c) <= 0x2069
    )


def test_printable_writes_every_control_character_visibly() -> None:
    out = clikit.printable(HOSTILE)
    assert out == (
        "map refused\\x1b[2J\\x1b[H\\x1b]52;c;ZWNobyBwd25lZA==\\x07"
        "\\x0d\\x0avpc-b  connected  7  1s ago  ctl-1  -  -"
        "\\x9b31m\\u202eevil\\u2066\\u2028\\x7f\\x09"
    )
    assert clikit.printable("vpc-a: 10.244.0.0/16 ü → ok") == "vpc-a: 10.244.0.0/16 ü → ok"


@given(st.text())
def test_printable_output_has_no_control_character(text: str) -> None:
    out = clikit.printable(text)
    assert not any(_is_control(c) for c in out)
    assert not any(c in clikit.CONTROL for c in out)
    assert len(out.splitlines()) <= 1
    # Text without control characters is shown as it is.
    if not any(_is_control(c) for c in text):
        assert out == text


@given(
    st.recursive(
        st.text() | st.integers() | st.booleans() | st.none(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    )
)
def test_printable_doc_leaves_no_control_character_in_any_string(doc: object) -> None:
    def strings(d: object) -> list[str]:
        if isinstance(d, str):
            return [d]
        if isinstance(d, dict):
            return [s for k, v in d.items() for s in (*strings(k), *strings(v))]
        if isinstance(d, list):
            return [s for v in d for s in strings(v)]
        return []

    assert not any(_is_control(c) for s in strings(clikit.printable_doc(doc)) for c in s)


def test_fail_and_usage_error_print_messages_printable(capsys: pytest.CaptureFixture[str]) -> None:
    assert clikit.fail("isthmus edges", HOSTILE) == 1
    assert clikit.usage_error("isthmus edges", HOSTILE) == 1
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\r" not in err
    assert err.count("\n") == 2  # one line each
