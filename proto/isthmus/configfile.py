"""Reading TOML config files with errors that name the dotted key.

Owns the typed accessors both processes' `config.load` use. Every failure raises
`ConfigError(key, problem, allowed)`, rendered as
"<key>: <problem>; allowed: <allowed>". Nothing here knows a particular process's keys.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
Table = Mapping[str, Any]


class ConfigError(ValueError):
    """A config file is invalid; names the dotted key, what was wrong, what is allowed."""

    def __init__(self, key: str, problem: str, allowed: str = "") -> None:
        self.key = key
        self.problem = problem
        self.allowed = allowed
        text = f"{key}: {problem}" if key else problem
        super().__init__(f"{text}; allowed: {allowed}" if allowed else text)


def read_toml(path: Path) -> Table:
    """Raises: ConfigError when the file is unreadable or not TOML."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError("", f"cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("", f"{path} is not valid TOML: {e}") from None


def join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def check_keys(table: Table, prefix: str, known: set[str]) -> None:
    """Refuse unknown keys: a misspelt key silently ignored is a misconfiguration."""
    for key in table:
        if key not in known:
            raise ConfigError(
                join(prefix, key), "unknown key", "one of " + ", ".join(sorted(known))
            )


def require(table: Table, prefix: str, key: str) -> Any:
    if key not in table:
        raise ConfigError(join(prefix, key), "is missing")
    return table[key]


def get_str(table: Table, prefix: str, key: str, default: str | None = None) -> str:
    if key not in table and default is not None:
        return default
    value = require(table, prefix, key)
    if not isinstance(value, str) or not value:
        raise ConfigError(join(prefix, key), f"{value!r} is not a non-empty string", "a string")
    return value


def get_int(
    table: Table, prefix: str, key: str, lo: int, hi: int, default: int | None = None
) -> int:
    if key not in table and default is not None:
        return default
    value = require(table, prefix, key)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(join(prefix, key), f"{value!r} is out of range", f"an integer {lo}-{hi}")
    return value


def required(table: Table, prefix: str, key: str, allowed: str) -> Any:
    """The value at `key`; a missing key names what is allowed there."""
    if key not in table:
        raise ConfigError(join(prefix, key), "is missing", allowed)
    return table[key]


def domain(
    key: str, value: Any, parse: Callable[[Any], T], allowed: str, rule: str | None = None
) -> T:
    """Apply a domain parser, turning its ValueError into a ConfigError at `key`.

    The parser's own ": use <rule>" tail (rule defaults to `allowed`) is dropped from the
    problem, so what is allowed is said once, after "allowed:".
    """
    try:
        return parse(value)
    except ValueError as e:
        problem = str(e).removesuffix(f": use {rule or allowed}")
        raise ConfigError(key, problem, allowed) from None
