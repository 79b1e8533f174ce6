"""The CLI conventions (isthmus.clikit): usage errors exit 1, --help 0, JSON or text on
stdout, colour only on a terminal with NO_COLOR unset and TERM not dumb."""

from __future__ import annotations

import io
import json
import os
import pty

import pytest

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
