"""Log lines as key=value pairs or JSON objects, one line per record.

    ts=2026-01-02T03:04:05.678Z level=info event=registered edge=vpc-a version=7
    {"ts": "2026-01-02T03:04:05.678Z", "level": "info", "logger": "controller.service",
     "event": "registered", "edge": "vpc-a", "version": 7}

Owns the two line formats the controller and the edge both log with (`log_format = "kv"`,
the default, or `"json"` in either config) and the stable keys: `ts` (UTC ISO 8601, ms),
`level`, then in JSON `logger`, then `event` and the caller's fields in the order given,
then `exception` when there is one. Callers build the message with `kv(event, **fields)`,
which keeps the fields for the JSON formatter; any other message is `event="message"`
with a `message` field.

Rules: callers pass only public data (names, routes, endpoints, public keys), never key
material; as a second line of defence a `bytes` value is never rendered, only its length
(`<32 bytes>`: private keys and seeds are bytes). In key=value lines, values with spaces,
quotes or '=' are quoted JSON-style so every line splits unambiguously. A field may not be
named like a stable key; such a field is renamed with a trailing underscore in JSON.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from typing import Final, Literal

LogFormat = Literal["kv", "json"]
FORMATS: Final[tuple[LogFormat, ...]] = ("kv", "json")
FORMAT_RULE: Final = '"kv" (key=value, the default) or "json" (one JSON object per line)'

_PLAIN: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:/[],+@"
)


class Line(str):
    """A `kv()` message: the key=value text, with its event and fields kept for JSON."""

    event: str
    fields: dict[str, object]

    def __new__(cls, event: str, fields: dict[str, object]) -> Line:
        parts = [f"event={value(event)}"]
        parts.extend(f"{k}={value(v)}" for k, v in fields.items())
        line = super().__new__(cls, " ".join(parts))
        line.event = event
        line.fields = fields
        return line


def _text(v: object) -> str:
    if isinstance(v, bytes | bytearray | memoryview):
        return f"<{len(v)} bytes>"
    return str(v)


def value(v: object) -> str:
    """Render one value: bare when it is made of plain characters, else quoted."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    text = ",".join(_text(x) for x in v) if isinstance(v, tuple | list) else _text(v)
    if text and all(c in _PLAIN for c in text):
        return text
    return json.dumps(text)


def json_value(v: object) -> object:
    """One value as JSON: null, booleans, numbers and strings stay; lists stay lists of
    such; anything else is its text (bytes: only their length)."""
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, float):
        return v if v == v and v not in (float("inf"), float("-inf")) else str(v)
    if isinstance(v, tuple | list | set | frozenset):
        return [json_value(x) for x in v]
    if isinstance(v, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return str(v)
    return _text(v)


def kv(event: str, **fields: object) -> Line:
    """The message part of a line: `event=<event> k=v ...` in the given order."""
    return Line(event, fields)


def _timestamp(record: logging.LogRecord) -> str:
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{ts}.{int(record.msecs):03d}Z"


class KeyValueFormatter(logging.Formatter):
    """Prefix each message with `ts=<UTC ISO 8601> level=<level>`."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"ts={_timestamp(record)} level={record.levelname.lower()} {record.getMessage()}"
        if record.exc_info:
            line += " exception=" + value(self.formatException(record.exc_info))
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, event, then the fields (see module)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        msg = record.msg
        if isinstance(msg, Line) and not record.args:
            doc["event"] = msg.event
            for k, v in msg.fields.items():
                doc[k + "_" if k in doc or k == "event" else k] = json_value(v)
        else:
            doc["event"] = "message"
            doc["message"] = record.getMessage()
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, separators=(", ", ": "))


def formatter(fmt: LogFormat) -> logging.Formatter:
    """The formatter for a `log_format` value."""
    return JsonFormatter() if fmt == "json" else KeyValueFormatter()


def parse_format(v: object) -> LogFormat:
    """A config's `log_format` value.

    Raises:
        ValueError: not one of FORMATS.
    """
    if v == "kv":
        return "kv"
    if v == "json":
        return "json"
    raise ValueError(f"{v!r} is not a log format")


def configure(root: str, level: int = logging.INFO, fmt: LogFormat = "kv") -> None:
    """Send the lines of logger `root` (a process's package) and its children to stderr."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(fmt))
    logger = logging.getLogger(root)
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
