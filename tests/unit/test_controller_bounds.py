"""controller.bounds through controller.config: the [limits] and [audit] tables, their
defaults and their errors. The rest of the config is in test_controller_config."""

from __future__ import annotations

import pytest

from controller.bounds import AuditConfig, Limits
from controller.config import parse
from controller.ratelimit import Rate
from tests.unit.test_controller_config import error_of, good


def test_limits_and_audit_default_and_parse() -> None:
    config = parse(good())
    assert config.limits == Limits()
    assert config.audit == AuditConfig(max_bytes=16 * 1024 * 1024, keep=4, max_entries=100_000)
    t = good()
    t["limits"] = {"challenge_rate": 50, "challenge_burst": 500, "register_rate": 0.5}
    t["audit"] = {"max_bytes": 4096, "keep": 2, "max_entries": 100}
    config = parse(t)
    assert config.limits.challenge == Rate(50.0, 500)
    assert config.limits.register == Rate(0.5, Limits().register.burst)
    assert config.audit == AuditConfig(max_bytes=4096, keep=2, max_entries=100)


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        (
            "limits",
            "report_rate",
            -1,
            "limits.report_rate: -1 is out of range; allowed: a number of calls a second, "
            "0-1000000 (0: no limit)",
        ),
        (
            "limits",
            "watch_rate",
            "fast",
            "limits.watch_rate: 'fast' is out of range; allowed: a number of calls a second, "
            "0-1000000 (0: no limit)",
        ),
        (
            "limits",
            "register_burst",
            0,
            "limits.register_burst: 0 is out of range; allowed: an integer 1-100000",
        ),
        (
            "limits",
            "max_concurrent_calls",
            8,
            "limits.max_concurrent_calls: 8 is too small; allowed: 0 (2 x the configured "
            "edges + health_watches + 256) or an integer 16-1000000",
        ),
        ("limits", "burst", 1, None),
        (
            "audit",
            "max_bytes",
            100,
            "audit.max_bytes: 100 is out of range; allowed: an integer 4096-1099511627776",
        ),
        ("audit", "keep", 0, "audit.keep: 0 is out of range; allowed: an integer 1-1000"),
        (
            "audit",
            "max_entries",
            10,
            "audit.max_entries: 10 is out of range; allowed: an integer 100-100000000",
        ),
    ],
)
def test_limits_and_audit_errors_name_the_key(
    section: str, key: str, value: object, message: str | None
) -> None:
    t = good()
    t[section] = {key: value}
    text = error_of(t)
    if message is None:
        assert text.startswith(f"{section}.{key}: unknown key")
    else:
        assert text == message
