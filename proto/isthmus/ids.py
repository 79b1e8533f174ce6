"""Edge names: the identifiers every map, metric and log line uses."""

from __future__ import annotations

import re
from typing import NewType

EdgeName = NewType("EdgeName", str)

_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
NAME_RULE = "1-63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit"


def parse_edge_name(value: object) -> EdgeName:
    """Return `value` as an EdgeName.

    Raises:
        ValueError: not a string or not matching NAME_RULE; the message says what is allowed.
    """
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise ValueError(f"{value!r} is not a valid edge name: use {NAME_RULE}")
    return EdgeName(value)
