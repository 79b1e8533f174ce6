"""controller.config: the keys admission hardening added, admission.hold_time and
addresses, and which controller addresses the overlay check uses. The rest of the config is
in test_controller_config."""

from __future__ import annotations

import ipaddress

from controller.config import overlay_addresses, parse
from tests.unit.test_controller_config import error_of, good

HOLD_TIME_RULE = "an integer number of seconds 0-86400 (0: no hold)"
ADDRESSES_RULE = (
    "a list of 1-64 distinct IP addresses, each a literal IP address, not unspecified "
    "(0.0.0.0 or ::)"
)


def test_hold_time() -> None:
    t = good()
    assert parse(t).admission.hold_time == 600
    for value in (0, 86400, 30):
        t["admission"] = {"hold_time": value}
        assert parse(t).admission.hold_time == value
    for value, problem in (
        (-1, "-1 is out of range"),
        (86401, "86401 is out of range"),
        ("600", "'600' is not an integer"),
        (True, "True is not an integer"),
    ):
        t["admission"] = {"hold_time": value}
        assert error_of(t) == f"admission.hold_time: {problem}; allowed: {HOLD_TIME_RULE}"


def test_addresses() -> None:
    t = good()
    assert parse(t).addresses == ()
    t["addresses"] = ["198.18.0.1", "fd00::1"]
    assert parse(t).addresses == (
        ipaddress.ip_address("198.18.0.1"),
        ipaddress.ip_address("fd00::1"),
    )
    bad = [
        ([], "addresses: has 0 entries"),
        ("198.18.0.1", "addresses: '198.18.0.1' is not a list"),
        (["0.0.0.0"], "addresses[0]: '0.0.0.0' is unspecified"),
        (["host.example"], "addresses[0]: 'host.example' is not an IP address"),
        ([7], "addresses[0]: 7 is not a string"),
    ]
    for value, message in bad:
        t["addresses"] = value
        rule = (
            ADDRESSES_RULE
            if message.startswith("addresses:")
            else ("a literal IP address, not unspecified (0.0.0.0 or ::)")
        )
        assert error_of(t) == f"{message}; allowed: {rule}"
    t["addresses"] = ["198.18.0.1", "198.18.0.1"]
    assert error_of(t) == (
        "addresses[1]: 198.18.0.1 is listed twice (also addresses[0]); allowed: each address once"
    )


def test_overlay_addresses() -> None:
    t = good()
    assert overlay_addresses(parse(t)) == (ipaddress.ip_address("127.0.0.1"),)
    t["listen"] = "0.0.0.0:7000"
    assert overlay_addresses(parse(t)) == ()  # the process root reads the host's
    t["addresses"] = ["198.18.0.1"]
    assert overlay_addresses(parse(t)) == (ipaddress.ip_address("198.18.0.1"),)
    t["listen"] = "198.18.0.1:7000"  # the listen IP counts too, once
    t["addresses"] = ["203.0.113.7", "198.18.0.1"]
    assert overlay_addresses(parse(t)) == (
        ipaddress.ip_address("198.18.0.1"),
        ipaddress.ip_address("203.0.113.7"),
    )
