"""The RFC 6479 replay window: WireGuard's vectors, a brute-force model, check() is pure."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from edge.tunnel.replay import REJECT_AFTER_MESSAGES, WINDOW_BITS, ReplayWindow, Verdict

OK, REPLAY, TOO_OLD = Verdict.OK, Verdict.REPLAY, Verdict.TOO_OLD
T_LIM = WINDOW_BITS + 1
R = REJECT_AFTER_MESSAGES


def run(window: ReplayWindow, cases: list[tuple[int, Verdict]]) -> None:
    """Each case numbered from 1 like the C and Go originals; check() must agree with accept()."""
    for number, (counter, expected) in enumerate(cases, start=1):
        assert window.check(counter) is expected, f"case {number}: check({counter})"
        assert window.accept(counter) is expected, f"case {number}: accept({counter})"


def test_constants() -> None:
    assert WINDOW_BITS == 8192 - 64
    assert REJECT_AFTER_MESSAGES == 2**64 - 2**13 - 1
    assert [v.value for v in Verdict] == ["ok", "replay", "too_old"]


# Linux drivers/net/wireguard/selftest/counter.c, as ported by wireguard-go replay_test.go;
# "false" split into REPLAY (seen) or TOO_OLD (behind the window or past the limit).
VECTORS: list[tuple[int, Verdict]] = [
    (0, OK),  # 1
    (1, OK),  # 2
    (1, REPLAY),  # 3
    (9, OK),  # 4
    (8, OK),  # 5
    (7, OK),  # 6
    (7, REPLAY),  # 7
    (T_LIM, OK),  # 8
    (T_LIM - 1, OK),  # 9
    (T_LIM - 1, REPLAY),  # 10
    (T_LIM - 2, OK),  # 11
    (2, OK),  # 12: exactly WINDOW_BITS behind: still inside
    (2, REPLAY),  # 13
    (T_LIM + 16, OK),  # 14
    (3, TOO_OLD),  # 15
    (T_LIM + 16, REPLAY),  # 16
    (T_LIM * 4, OK),  # 17
    (T_LIM * 4 - (T_LIM - 1), OK),  # 18: WINDOW_BITS behind
    (10, TOO_OLD),  # 19
    (T_LIM * 4 - T_LIM, TOO_OLD),  # 20: WINDOW_BITS + 1 behind
    (T_LIM * 4 - (T_LIM + 1), TOO_OLD),  # 21
    (T_LIM * 4 - (T_LIM - 2), OK),  # 22
    (T_LIM * 4 + 1 - T_LIM, REPLAY),  # 23: same counter as 18
    (0, TOO_OLD),  # 24
    (R, TOO_OLD),  # 25
    (R - 1, OK),  # 26
    (R, TOO_OLD),  # 27
    (R - 1, REPLAY),  # 28
    (R - 2, OK),  # 29
    (R + 1, TOO_OLD),  # 30
    (R + 2, TOO_OLD),  # 31
    (R - 2, REPLAY),  # 32
    (R - 3, OK),  # 33
    (0, TOO_OLD),  # 34
]


def test_counter_c_vectors() -> None:
    run(ReplayWindow(), VECTORS)


def test_bulk_1_ascending_full_window_then_zero() -> None:
    run(ReplayWindow(), [(i, OK) for i in range(1, WINDOW_BITS + 1)] + [(0, OK), (0, REPLAY)])


def test_bulk_2_ascending_then_one_inside_zero_outside() -> None:
    cases = [(i, OK) for i in range(2, WINDOW_BITS + 2)] + [(1, OK), (0, TOO_OLD)]
    run(ReplayWindow(), cases)


def test_bulk_3_descending_fill() -> None:
    run(ReplayWindow(), [(i, OK) for i in range(WINDOW_BITS + 1, 0, -1)])


def test_bulk_4_descending_fill_then_zero_too_old() -> None:
    cases = [(i, OK) for i in range(WINDOW_BITS + 2, 1, -1)] + [(0, TOO_OLD)]
    run(ReplayWindow(), cases)


def test_bulk_5_descending_then_ahead_pushes_zero_out() -> None:
    cases = [(i, OK) for i in range(WINDOW_BITS, 0, -1)] + [(WINDOW_BITS + 1, OK), (0, TOO_OLD)]
    run(ReplayWindow(), cases)


def test_bulk_6_descending_then_zero_then_ahead() -> None:
    cases = [(i, OK) for i in range(WINDOW_BITS, 0, -1)] + [(0, OK), (WINDOW_BITS + 1, OK)]
    run(ReplayWindow(), cases)


@pytest.mark.parametrize("words_ahead", [1, 2, 64, 127, 128, 129, 1000])
def test_a_jump_leaves_no_stale_bits(words_ahead: int) -> None:
    window = ReplayWindow()
    run(window, [(c, OK) for c in range(200)])  # words 0-3
    jump = words_ahead * 64
    top = jump + 250
    assert window.accept(top) is OK
    # The ring slots of words 0-3 are reused (or kept) but only accepted counters are set.
    for c in range(200):
        later = c + jump
        if later != top and top - later <= WINDOW_BITS:
            expected = REPLAY if later < 200 else OK
            assert window.check(later) is expected, later
        if top - c > WINDOW_BITS:
            assert window.check(c) is TOO_OLD
        else:
            assert window.check(c) is REPLAY


def test_one_word_at_a_time_round_the_ring_clears_each_word() -> None:
    window = ReplayWindow()
    run(window, [(c, OK) for c in range(64)])  # word 0, ring slot 0
    run(window, [(64 * word, OK) for word in range(1, 128)])
    assert window.accept(64 * 128 + 63) is OK  # word 128 reuses slot 0
    run(window, [(64 * 128 + c, OK) for c in range(63)])


def test_a_multi_word_slide_clears_its_first_word() -> None:
    window = ReplayWindow()
    run(window, [(c, OK) for c in range(64, 128)])  # word 1, slot 1
    run(window, [(64 * 127, OK), (64 * 128, OK)])
    # From word 128 to word 130 clears 129 (slot 1, still holding word 1) and 130.
    assert window.accept(64 * 130) is OK
    run(window, [(64 * 129 + c, OK) for c in range(64)])


@pytest.mark.parametrize("bad", [-1, -(2**70), R, R + 1, 2**64 - 1, 2**64, 2**80])
def test_out_of_range_counters_are_too_old_and_change_nothing(bad: int) -> None:
    window = ReplayWindow()
    assert window.accept(5) is OK
    assert window.check(bad) is TOO_OLD
    assert window.accept(bad) is TOO_OLD
    run(window, [(5, REPLAY), (4, OK), (6, OK)])


def test_check_never_mutates() -> None:
    window = ReplayWindow()
    for c in (0, 3, 64, 100, 9000, 8999):
        window.accept(c)
    before = (window._last, list(window._ring))
    for c in (0, 1, 3, 872, 873, 9000, 9001, 10**6, R - 1, R, -1):
        window.check(c)
    assert (window._last, list(window._ring)) == before


class Model:
    """Brute force: every accepted counter, and the highest (0 before any).

    c is TOO_OLD iff c is outside [0, R) or top - c > WINDOW_BITS; else REPLAY iff accepted
    before; else OK. Accepting an OK counter records it and raises top to it.
    """

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.top = 0

    def verdict(self, c: int) -> Verdict:
        if not 0 <= c < R or self.top - c > WINDOW_BITS:
            return TOO_OLD
        return REPLAY if c in self.seen else OK

    def accept(self, c: int) -> Verdict:
        verdict = self.verdict(c)
        if verdict is OK:
            self.seen.add(c)
            self.top = max(self.top, c)
        return verdict


# Offsets from the model's highest counter: the window's edges, reordering, word and ring
# boundaries, far jumps; plus absolute counters near 0 and near the limit.
OFFSETS = st.one_of(
    st.integers(-WINDOW_BITS - 70, 70),
    st.sampled_from([-WINDOW_BITS - 1, -WINDOW_BITS, -WINDOW_BITS + 1, 0, 1, 63, 64, 65]),
    st.integers(1, 140 * 64),
    st.integers(1, 2**66),
)
ABSOLUTE = st.one_of(st.integers(-3, 70), st.integers(R - 70, R + 3))


class WindowMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.window = ReplayWindow()
        self.model = Model()

    def counter(self, offset: int | None, absolute: int) -> int:
        return absolute if offset is None else self.model.top + offset

    @rule(offset=st.none() | OFFSETS, absolute=ABSOLUTE)
    def accept(self, offset: int | None, absolute: int) -> None:
        c = self.counter(offset, absolute)
        assert self.window.accept(c) is self.model.accept(c)

    @rule(offset=st.none() | OFFSETS, absolute=ABSOLUTE)
    def check(self, offset: int | None, absolute: int) -> None:
        c = self.counter(offset, absolute)
        assert self.window.check(c) is self.model.verdict(c)

    @rule(offset=st.integers(-WINDOW_BITS - 70, 130 * 64), length=st.integers(1, 300))
    def accept_run(self, offset: int, length: int) -> None:
        start = self.model.top + offset
        for c in range(start, start + length):
            assert self.window.accept(c) is self.model.accept(c)

    @rule(words=st.integers(1, 130), bit=st.integers(0, 63))
    def jump_words(self, words: int, bit: int) -> None:
        c = (self.model.top // 64 + words) * 64 + bit
        assert self.window.accept(c) is self.model.accept(c)

    @rule(back=st.integers(0, WINDOW_BITS + 64))
    def replay_a_seen_counter(self, back: int) -> None:
        # Re-send the seen counter closest below top - back, if any.
        candidates = [c for c in self.model.seen if c <= self.model.top - back]
        if candidates:
            c = max(candidates)
            assert self.window.check(c) is self.model.verdict(c)
            assert self.window.accept(c) is self.model.accept(c)

    @invariant()
    def everything_near_the_top_agrees(self) -> None:
        top = self.model.top
        for c in range(max(0, top - WINDOW_BITS - 2), top + 2, 29):
            assert self.window.check(c) is self.model.verdict(c)


WindowMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=50)
TestWindowMachine = WindowMachine.TestCase
