"""The pure parts of the controller's guard: token buckets, the refusal log, sources,
the per-edge limits, the receive limit and the per-edge redeemed-challenge allowance."""

from __future__ import annotations

import logging

import pytest

from controller.bounds import Limits
from controller.errors import RateLimited
from controller.guard import (
    MAX_RECEIVE_BYTES,
    MAX_REGISTER_BYTES,
    REGISTER,
    REPORT,
    EdgeLimits,
    max_concurrent_calls,
    server_options,
    source_of,
)
from controller.ratelimit import Buckets, Rate, retry_text
from controller.refusals import RefusalLog
from isthmus.auth import AuthError, ChallengeBook
from isthmus.ids import EdgeName
from isthmus.signing import ControllerKey


def test_a_bucket_allows_its_burst_then_its_rate() -> None:
    b: Buckets[str] = Buckets(Rate(2.0, 3))
    assert [b.take("x", 0.0).allowed for _ in range(4)] == [True, True, True, False]
    refused = b.take("x", 0.0)
    assert not refused.allowed and refused.retry_after == pytest.approx(0.5)
    assert not b.peek("x", 0.25).allowed
    assert b.peek("x", 0.5).allowed
    assert b.take("x", 0.5).allowed and not b.take("x", 0.5).allowed
    assert b.take("y", 0.5).allowed  # another key has its own bucket
    # refilled up to the burst, never beyond
    assert [b.take("x", 100.0).allowed for _ in range(4)] == [True, True, True, False]


def test_a_rate_of_zero_is_no_limit_and_the_table_is_bounded() -> None:
    free: Buckets[int] = Buckets(Rate(0.0, 1))
    assert all(free.take(1, 0.0).allowed for _ in range(1000))
    assert len(free) == 0
    small: Buckets[int] = Buckets(Rate(1.0, 1), max_keys=3)
    for key in range(10):
        assert small.take(key, 0.0).allowed
    assert len(small) == 3
    assert not small.take(9, 0.0).allowed  # remembered
    assert small.take(0, 0.0).allowed  # forgotten: a full bucket again
    with pytest.raises(ValueError):
        Rate(-1.0, 1)
    with pytest.raises(ValueError):
        Rate(1.0, 0)


def test_rates_describe_themselves() -> None:
    assert Rate(2.0, 10).describe() == "2/s (burst 10)"
    assert Rate(0.1, 10).describe() == "6/min (burst 10)"
    assert retry_text(1.26) == "retry in 1.3 s"
    assert retry_text(0.0) == "retry in 0.1 s"


def test_the_refusal_log_writes_once_per_reason_and_source_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = RefusalLog(logging.getLogger("controller.test"), interval=10.0)
    with caplog.at_level(logging.INFO, logger="controller.test"):
        written = [
            log.refused(t * 0.1, "missing", "1.2.3.4", "UNAUTHENTICATED", "m") for t in range(50)
        ]
        assert written == [True] + [False] * 49
        assert log.refused(1.0, "expired", "1.2.3.4", "UNAUTHENTICATED", "m")
        assert log.refused(1.0, "missing", "5.6.7.8", "UNAUTHENTICATED", "m")
        assert log.refused(10.0, "missing", "1.2.3.4", "UNAUTHENTICATED", "again")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4
    assert lines[0].startswith("event=call_refused reason_code=missing source=1.2.3.4")
    assert lines[0].endswith("suppressed=0")
    assert "reason=again suppressed=49" in lines[3]
    assert all(r.levelno == logging.WARNING for r in caplog.records)


def test_sources_are_addresses_and_ipv6_counts_by_64() -> None:
    assert source_of("ipv4:198.51.100.7:40000") == "198.51.100.7"
    assert source_of("ipv6:[2001:db8:1:2:3:4:5:6]:40000") == "2001:db8:1:2::/64"
    assert source_of("ipv6:[2001:db8:1:2:ffff::1]:1") == "2001:db8:1:2::/64"
    assert source_of("ipv6:[::ffff:127.0.0.1]:5") == "127.0.0.1"
    assert source_of("unix:/run/x.sock") == "unix:/run/x.sock"
    assert source_of("ipv4:not-an-ip:1") == "ipv4:not-an-ip:1"


def test_edge_limits_are_per_edge_and_name_the_limit() -> None:
    now = [0.0]
    limits = EdgeLimits(Limits(register=Rate(0.1, 2), report=Rate(1.0, 1)), lambda: now[0])
    a, b = EdgeName("vpc-a"), EdgeName("vpc-b")
    limits.check(a, REGISTER)
    limits.check(a, REGISTER)
    with pytest.raises(RateLimited) as e:
        limits.check(a, REGISTER)
    assert e.value.kind == "register"
    assert str(e.value) == (
        "edge 'vpc-a' is over its Register limit of 6/min (burst 2) per edge; retry in 10.0 s"
    )
    limits.check(b, REGISTER)
    limits.check(a, REPORT)  # its own bucket per method
    now[0] = 10.0
    limits.check(a, REGISTER)
    limits.check(a, "/isthmus.v1.Controller/Challenge")  # not limited here
    limits.check_watches(a, 3)
    with pytest.raises(RateLimited) as e:
        limits.check_watches(a, 4)
    assert e.value.kind == "watch_streams"


def test_the_listener_limits() -> None:
    options = dict(server_options(Limits(streams_per_connection=7)))
    assert options["grpc.max_receive_message_length"] == MAX_RECEIVE_BYTES == 65536
    assert options["grpc.max_concurrent_streams"] == 7
    assert options["grpc.http2.max_ping_strikes"] > 0
    assert options["grpc.http2.bdp_probe"] == 0  # oversized bodies are not buffered whole
    assert options["grpc.keepalive_time_ms"] + options["grpc.keepalive_timeout_ms"] <= 60_000
    # edges ping every 20 s (edge.control): allowed with margin
    assert 0 < options["grpc.http2.min_recv_ping_interval_without_data_ms"] <= 20_000 // 2
    assert MAX_REGISTER_BYTES == 51_539
    assert max_concurrent_calls(Limits(), 1000) == 2000 + 1000 + 256
    assert max_concurrent_calls(Limits(max_concurrent_calls=64), 1000) == 64


def test_each_edge_key_has_its_own_redeemed_allowance() -> None:
    clock = [1_800_000_000.0]
    book = ChallengeBook(
        ControllerKey.from_seed(bytes(32)).challenge_secret,
        b"replica1",
        lambda: clock[0],
        lambda n: bytes(n),
        max_per_owner=3,
    )
    counter = iter(range(10**6))
    book._random = lambda n: next(counter).to_bytes(n, "big")  # distinct challenges
    for _ in range(3):
        book.redeem(book.issue(), b"A" * 32)
    with pytest.raises(AuthError) as e:
        book.redeem(book.issue(), b"A" * 32)
    assert e.value.code == "too_many"
    assert "redeemed by this edge key" in str(e.value)
    for _ in range(3):
        book.redeem(book.issue(), b"B" * 32)  # another key is not locked out
    assert book.redeemed_by(b"A" * 32) == 3
    clock[0] += 61  # the first ones expire: A may redeem again
    book.redeem(book.issue(), b"A" * 32)
    assert book.redeemed_by(b"A" * 32) == 1
    assert book.redeemed_by(b"B" * 32) == 0
