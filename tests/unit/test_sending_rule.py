"""The data path obeys the session's own predicates (edge.tunnel.inside, edge.tunnel.session):
over random sequences of time advances, counter states and packets (single and runs), a
packet is sealed exactly when `Session.can_send` allows it, and a handshake starts on a
sealed packet exactly when `Session.needs_rekey` says so (and none is in flight)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.tunnel import OVERHEAD
from edge.tunnel.timers import Timers
from tests.unit.test_tunnel import A_TO_B, B, Net

# Small message limits so random counter jumps cross both of them.
TIMERS = Timers(rekey_after_messages=6, reject_after_messages=11)
RUN = 3

steps = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=70.0, allow_nan=False),  # time advance
        st.integers(min_value=0, max_value=8),  # counter jump before sending
        st.booleans(),  # a run of RUN packets (a cut super-packet) instead of one
        st.booleans(),  # deliver what is in flight afterwards (handshakes complete)
    ),
    min_size=1,
    max_size=25,
)


def _run_buffer() -> tuple[bytearray, int, list[int]]:
    stride = OVERHEAD + len(A_TO_B)
    buf = bytearray(stride * RUN)
    for i in range(RUN):
        buf[i * stride + OVERHEAD : (i + 1) * stride] = A_TO_B
    return buf, stride, [len(A_TO_B)] * RUN


@settings(max_examples=80, deadline=None)
@given(steps)
def test_sealed_exactly_when_can_send_and_rekeyed_exactly_when_needs_rekey(
    script: list[tuple[float, int, bool, bool]],
) -> None:
    net = Net(timers=TIMERS)
    net.connect()
    tunnel = net["a"]
    peer = tunnel.forwarding.by_key[B.public_key.raw]
    for advance, jump, run, deliver in script:
        net.now += advance
        session = peer.current
        if session is not None:
            session.send_counter = min(session.send_counter + jump, TIMERS.reject_after_messages)
        count = RUN if run else 1
        allowed = session is not None and session.can_send(net.now, count)
        rekey = allowed and session is not None and session.needs_rekey(net.now, count)
        in_flight = peer.pending is not None
        before = session.send_counter if session is not None else 0
        if run:
            buf, stride, sizes = _run_buffer()
            sealed = tunnel.inside_run_in_place(buf, 0, stride, sizes, net.now) is not None
        else:
            sealed = tunnel.inside(A_TO_B, net.now) is not None
        assert sealed == allowed
        if sealed:
            assert session is not None and session.send_counter == before + count
            assert (not in_flight and peer.pending is not None) == (rekey and not in_flight)
        else:
            assert session is None or session.send_counter == before  # nothing sealed
            assert peer.pending is not None  # queued, and a handshake runs for it
        if deliver:
            net.pump()
