"""Log lines as key=value pairs: `ts=... level=info event=registered edge=vpc-a ...`.

Owns the one line format the controller and the edge both log with. Values with
spaces, quotes or '=' are quoted JSON-style so every line splits unambiguously.
Callers pass only public data: names, routes, endpoints, public keys; never key material.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Final

_PLAIN: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:/[],+@"
)


def value(v: object) -> str:
    """Render one value: bare when it is made of plain characters, else quoted."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    text = ",".join(str(x) for x in v) if isinstance(v, tuple | list) else str(v)
    if text and all(c in _PLAIN for c in text):
        return text
    return json.dumps(text)


def kv(event: str, **fields: object) -> str:
    """The message part of a line: `event=<event> k=v ...` in the given order."""
    parts = [f"event={value(event)}"]
    parts.extend(f"{k}={value(v)}" for k, v in fields.items())
    return " ".join(parts)


class KeyValueFormatter(logging.Formatter):
    """Prefix each message with `ts=<UTC ISO 8601> level=<level>`."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        ms = int(record.msecs)
        line = f"ts={ts}.{ms:03d}Z level={record.levelname.lower()} {record.getMessage()}"
        if record.exc_info:
            line += " exception=" + value(self.formatException(record.exc_info))
        return line


def configure(root: str, level: int = logging.INFO) -> None:
    """Send the lines of logger `root` (a process's package) and its children to stderr."""
    handler = logging.StreamHandler()
    handler.setFormatter(KeyValueFormatter())
    logger = logging.getLogger(root)
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
