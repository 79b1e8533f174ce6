"""The timer constants and their consistency rules (edge/tunnel/timers.py)."""

from __future__ import annotations

import math

import pytest

from edge.tunnel.timers import MAX_REJECT_AFTER_MESSAGES, Timers


def test_defaults_are_wireguards() -> None:
    t = Timers()
    assert (t.rekey_after_time, t.reject_after_time, t.rekey_timeout) == (120, 180, 5)
    assert (t.rekey_timeout_jitter, t.rekey_attempt_time, t.keepalive_timeout) == (0.333, 90, 10)
    assert t.persistent_keepalive == 0
    assert t.rekey_after_messages == 2**60
    assert t.reject_after_messages == MAX_REJECT_AFTER_MESSAGES == 2**64 - 2**13 - 1


def test_shrunk_for_tests() -> None:
    t = Timers(rekey_after_time=2, reject_after_time=3, rekey_timeout=0.5, rekey_attempt_time=1)
    assert t.reject_after_time == 3


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rekey_after_time": 0}, "rekey_after_time must be positive"),
        ({"keepalive_timeout": -1}, "keepalive_timeout must be positive"),
        ({"rekey_timeout_jitter": -0.1}, "rekey_timeout_jitter must be at least 0"),
        ({"persistent_keepalive": -1}, "persistent_keepalive must be at least 0"),
        ({"reject_after_time": math.inf}, "reject_after_time must be finite"),
        ({"rekey_timeout": math.nan}, "rekey_timeout must be finite"),
        ({"rekey_timeout": "5"}, "rekey_timeout must be a number"),
        ({"rekey_timeout": True}, "rekey_timeout must be a number"),
        ({"reject_after_time": 125.333}, "reject_after_time (125.333) must be greater than"),
        ({"rekey_attempt_time": 4.9}, "rekey_attempt_time (4.9) must be at least"),
        ({"rekey_after_messages": 1.5}, "rekey_after_messages must be an integer"),
        ({"reject_after_messages": 2**60}, "reject_after_messages (1152921504606846976) must"),
        ({"reject_after_messages": 2**64}, "reject_after_messages must be at most"),
    ],
)
def test_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Timers(**changes)  # type: ignore[arg-type]


def test_boundaries_accepted() -> None:
    Timers(reject_after_time=125.334)
    Timers(rekey_attempt_time=5)
    Timers(rekey_timeout_jitter=0, persistent_keepalive=0)
    Timers(rekey_after_messages=1, reject_after_messages=2)
