"""The two log line formats: key=value (default) and JSON with stable keys; no key material."""

from __future__ import annotations

import base64
import io
import json
import logging
import sys

import nacl.bindings
import pytest

from isthmus.keys import PublicKey
from isthmus.logfmt import (
    FORMATS,
    JsonFormatter,
    KeyValueFormatter,
    configure,
    formatter,
    json_value,
    kv,
    parse_format,
)
from isthmus.routemap import parse_route
from isthmus.signing import ControllerKey

SEED = bytes(range(32))
EDGE_PUBLIC, EDGE_PRIVATE = nacl.bindings.crypto_box_seed_keypair(bytes([7]) * 32)


def record(
    msg: object, level: int = logging.INFO, name: str = "controller.service"
) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, None, None)


def test_json_lines_have_the_stable_keys_first_then_the_fields_in_order() -> None:
    line = JsonFormatter().format(
        record(kv("registered", edge="vpc-a", version=7, routes=(parse_route("10.0.0.0/8"),)))
    )
    doc = json.loads(line)
    assert list(doc) == ["ts", "level", "logger", "event", "edge", "version", "routes"]
    assert doc["level"] == "info" and doc["logger"] == "controller.service"
    assert doc["event"] == "registered"
    assert (doc["edge"], doc["version"], doc["routes"]) == ("vpc-a", 7, ["10.0.0.0/8"])
    assert doc["ts"].endswith("Z") and len(doc["ts"]) == len("2026-01-02T03:04:05.678Z")
    assert "\n" not in line


def test_json_keeps_types_and_renames_fields_that_clash_with_stable_keys() -> None:
    doc = json.loads(
        JsonFormatter().format(
            record(kv("x", level="mine", ok=True, none=None, ratio=0.5, ts=1), logging.WARNING)
        )
    )
    assert doc["level"] == "warning" and doc["level_"] == "mine" and doc["ts_"] == 1
    assert (doc["ok"], doc["none"], doc["ratio"]) == (True, None, 0.5)


def test_a_plain_message_is_event_message() -> None:
    doc = json.loads(JsonFormatter().format(record("plain %s", name="edge")))
    assert (doc["event"], doc["message"], doc["logger"]) == ("message", "plain %s", "edge")


def test_exceptions_are_one_field() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = logging.LogRecord("edge", logging.ERROR, __file__, 1, kv("x"), None, sys.exc_info())
    doc = json.loads(JsonFormatter().format(rec))
    assert list(doc)[-1] == "exception" and "ValueError: boom" in doc["exception"]
    line = KeyValueFormatter().format(rec)
    assert "\n" not in line and "exception=" in line


def test_key_value_lines_are_unchanged() -> None:
    msg = kv("registered", edge="vpc-a", reason="has spaces", routes=("a", "b"))
    assert msg == 'event=registered edge=vpc-a reason="has spaces" routes=a,b'
    line = KeyValueFormatter().format(record(msg))
    assert line.startswith("ts=") and line.endswith(" level=info " + msg)


def test_bytes_are_never_rendered_in_either_format() -> None:
    """Key material is bytes: whatever a caller passes, only the length shows."""
    key = ControllerKey.from_seed(SEED)
    secrets = [
        SEED.hex(),
        base64.b64encode(SEED).decode(),
        EDGE_PRIVATE.hex(),
        base64.b64encode(EDGE_PRIVATE).decode(),
        repr(EDGE_PRIVATE)[2:20],
    ]
    msg = kv(
        "started",
        public_key=PublicKey(EDGE_PUBLIC),
        controller=key,
        private=EDGE_PRIVATE,
        seeds=(SEED, bytearray(SEED)),
    )
    for fmt in (KeyValueFormatter(), JsonFormatter()):
        line = fmt.format(record(msg))
        for secret in secrets:
            assert secret not in line
        assert "<32 bytes>" in line
        assert PublicKey(EDGE_PUBLIC).to_base64() in line
        assert key.public.to_base64() in line  # the repr of the key names its public half


def test_json_value() -> None:
    assert json_value(float("nan")) == "nan"
    assert json_value({1}) == [1]
    assert json_value(parse_route("::/0")) == "::/0"
    assert json_value(b"\x00" * 4) == "<4 bytes>"


def test_format_selection() -> None:
    assert FORMATS == ("kv", "json")
    assert [parse_format(f) for f in FORMATS] == ["kv", "json"]
    assert isinstance(formatter("json"), JsonFormatter)
    assert isinstance(formatter("kv"), KeyValueFormatter)
    for bad in ("JSON", "", None, "logfmt"):
        with pytest.raises(ValueError, match="is not a log format"):
            parse_format(bad)


def test_configure_json_writes_json_lines_to_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    configure("h12test", fmt="json")
    try:
        logging.getLogger("h12test.child").info(kv("hello", n=1))
        logging.getLogger("h12test").debug(kv("hidden"))
    finally:
        logging.getLogger("h12test").handlers.clear()
    lines = err.getvalue().splitlines()
    assert [json.loads(x)["event"] for x in lines] == ["hello"]
    assert json.loads(lines[0])["logger"] == "h12test.child"
