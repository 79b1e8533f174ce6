"""Handshake flood control: per-source token buckets with a bounded table, the load meter."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.tunnel.ratelimit import LoadMeter, SourceRateLimiter

A = bytes([192, 0, 2, 1])
B = bytes([192, 0, 2, 2])
V6 = bytes(range(16))


def test_burst_then_refill_at_the_rate() -> None:
    # Times are binary fractions so the arithmetic is exact.
    limiter = SourceRateLimiter(rate=16.0, burst=5)
    assert [limiter.allow(A, 100.0) for _ in range(6)] == [True] * 5 + [False]
    # One token every 1/16 s.
    assert not limiter.allow(A, 100.0 + 1 / 32)
    assert limiter.allow(A, 100.0 + 1 / 16)
    assert not limiter.allow(A, 100.0 + 1 / 16 + 1 / 32)
    assert limiter.allow(A, 100.0 + 2 / 16)
    # Refill stops at the burst.
    assert [limiter.allow(A, 200.0) for _ in range(6)] == [True] * 5 + [False]


def test_default_is_20_per_second_burst_5() -> None:
    limiter = SourceRateLimiter()
    assert [limiter.allow(A, 0.0) for _ in range(6)] == [True] * 5 + [False]
    assert not limiter.allow(A, 0.049)
    assert limiter.allow(A, 0.051)


def test_refused_messages_take_no_token() -> None:
    limiter = SourceRateLimiter(rate=10.0, burst=1)
    assert limiter.allow(A, 0.0)
    for step in range(1, 10):
        assert not limiter.allow(A, step * 0.01)
    assert limiter.allow(A, 0.1)


def test_sources_are_independent() -> None:
    limiter = SourceRateLimiter(rate=1.0, burst=2)
    assert [limiter.allow(A, 0.0) for _ in range(3)] == [True, True, False]
    assert [limiter.allow(B, 0.0) for _ in range(3)] == [True, True, False]
    assert [limiter.allow(V6, 0.0) for _ in range(3)] == [True, True, False]
    assert limiter.allow(B, 1.0)
    assert not limiter.allow(B, 1.0)
    assert limiter.allow(A, 1.0)
    assert len(limiter) == 3


def test_a_clock_going_backwards_refills_nothing() -> None:
    limiter = SourceRateLimiter(rate=16.0, burst=1)
    assert limiter.allow(A, 10.0)
    assert not limiter.allow(A, 5.0)
    assert not limiter.allow(A, 10.0 + 1 / 32)
    assert limiter.allow(A, 10.0 + 1 / 16)


def test_a_full_table_purges_idle_buckets_then_refuses_new_sources() -> None:
    limiter = SourceRateLimiter(rate=20.0, burst=5, max_sources=3)
    for i in range(3):
        assert limiter.allow(bytes([10, 0, 0, i]), 0.0)
    # All three are refilling: a fourth source is refused and not stored.
    assert not limiter.allow(B, 0.01)
    assert len(limiter) == 3
    # Known sources still get their tokens.
    assert limiter.allow(bytes([10, 0, 0, 1]), 0.02)
    # 1/rate after their use the first and third buckets are full again: purged, B gets in.
    assert limiter.allow(B, 0.06)
    assert len(limiter) == 2
    assert limiter.allow(bytes([10, 0, 0, 7]), 0.061)
    assert len(limiter) == 3


def test_purge_stops_at_the_first_busy_bucket_in_last_use_order() -> None:
    limiter = SourceRateLimiter(rate=1.0, burst=2, max_sources=2)
    assert limiter.allow(A, 0.0)
    assert limiter.allow(A, 0.0)  # A empty, least recently used
    assert limiter.allow(B, 0.5)  # B holds 1 of 2
    # At 1.6 B is full again but A, in front of it, still refills (1.6 of 2): no purge.
    assert not limiter.allow(V6, 1.6)
    assert len(limiter) == 2
    # Every bucket unused for burst/rate seconds is full, so both go.
    assert limiter.allow(V6, 2.5)
    assert len(limiter) == 1


@given(
    st.lists(
        st.tuples(st.binary(min_size=4, max_size=4), st.floats(0.0, 0.5)),
        min_size=1,
        max_size=400,
    ),
    st.integers(1, 16),
)
def test_the_table_never_grows_past_max_sources(
    flood: list[tuple[bytes, float]], max_sources: int
) -> None:
    limiter = SourceRateLimiter(rate=20.0, burst=5, max_sources=max_sources)
    now = 0.0
    for source, step in flood:
        now += step
        limiter.allow(source, now)
        assert len(limiter) <= max_sources


def test_a_flood_of_distinct_sources_admits_at_most_a_table_per_refill() -> None:
    rate, max_sources = 20.0, 100
    limiter = SourceRateLimiter(rate=rate, burst=5, max_sources=max_sources)
    now = 0.0
    admitted = 0
    for i in range(50_000):
        now += 0.0001
        admitted += limiter.allow(i.to_bytes(4, "big"), now)
        assert len(limiter) <= max_sources
    # A bucket used once is full again 1/rate later, so the table turns over at most that often.
    assert admitted <= max_sources * (now * rate + 1)
    assert admitted >= max_sources


def test_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        SourceRateLimiter(rate=0.0)
    with pytest.raises(ValueError):
        SourceRateLimiter(burst=0)
    with pytest.raises(ValueError):
        SourceRateLimiter(max_sources=0)
    with pytest.raises(ValueError):
        LoadMeter(threshold=-1)
    with pytest.raises(ValueError):
        LoadMeter(window=0.0)
    with pytest.raises(ValueError):
        LoadMeter(hold=-1.0)


def test_load_meter_turns_on_above_threshold_and_holds() -> None:
    meter = LoadMeter(threshold=3, window=1.0, hold=1.0)
    assert not meter.under_load(0.0)
    for t in (0.0, 0.1, 0.2):
        meter.record(t)
    assert not meter.under_load(0.2)  # exactly threshold: not more
    meter.record(0.3)
    assert meter.under_load(0.3)
    # The 4 messages are within the last second until 1.0 (when the one at 0.0 leaves) ...
    assert meter.under_load(0.99)
    # ... and the meter holds for 1 s after that.
    assert meter.under_load(1.99)
    assert not meter.under_load(2.0)
    assert not meter.under_load(50.0)


def test_load_meter_off_when_spread_out() -> None:
    meter = LoadMeter(threshold=3, window=1.0, hold=1.0)
    for i in range(100):
        meter.record(i * 0.375)  # never more than 3 in any second
        assert not meter.under_load(i * 0.375)


def test_load_meter_sustained_load_extends_the_hold() -> None:
    meter = LoadMeter(threshold=2, window=1.0, hold=0.5)
    for i in range(50):
        meter.record(i / 8)
    last = 49 / 8
    assert meter.under_load(last)
    # The last three messages were 2/8 s apart at most: on until the first of them is a
    # window old, then held.
    off = last - 2 / 8 + 1.0 + 0.5
    assert meter.under_load(off - 1 / 64)
    assert not meter.under_load(off)
    # Light traffic afterwards neither extends nor restarts it.
    meter.record(last + 5.0)
    assert not meter.under_load(last + 5.0)


def test_load_meter_zero_hold_and_zero_threshold() -> None:
    meter = LoadMeter(threshold=0, window=1.0, hold=0.0)
    assert not meter.under_load(0.0)
    meter.record(3.0)
    assert meter.under_load(3.0)
    assert meter.under_load(3.999)
    assert not meter.under_load(4.0)


# Steps in 1/64 s so every sum is exact.
@given(
    st.lists(st.integers(0, 20).map(lambda k: k / 64), min_size=1, max_size=200),
    st.integers(0, 8),
)
def test_load_meter_matches_a_brute_force_count(steps: list[float], threshold: int) -> None:
    window, hold = 1.0, 0.7
    meter = LoadMeter(threshold=threshold, window=window, hold=hold)
    times: list[float] = []
    last_on = float("-inf")
    now = 0.0
    for step in steps:
        now += step
        meter.record(now)
        times.append(now)
        # Brute force: the condition is on from the record until the (threshold+1)-th most
        # recent message leaves the window.
        if len(times) > threshold and now - times[-threshold - 1] < window:
            last_on = max(last_on, times[-threshold - 1] + window)
        for probe in (now, now + 0.05, now + 0.3, now + 1.0, now + 1.69):
            count = sum(1 for t in times if probe - window < t <= probe)
            expected = count > threshold or probe < last_on + hold
            assert meter.under_load(probe) is expected
