"""The per-peer handshake state machine and session slots (edge/tunnel/peer.py)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.tunnel.handshake import InitiatorState
from edge.tunnel.peer import (
    QUEUE_LIMIT,
    TRANSITIONS,
    HandshakeInput,
    HandshakeState,
    PeerState,
    Pending,
)
from edge.tunnel.session import Role, Session
from edge.tunnel.timers import Timers
from isthmus.endpoint import Endpoint, format_sockaddr
from isthmus.ids import EdgeName
from isthmus.keys import PublicKey
from isthmus.routemap import EdgeEntry

IDLE, INITIATED = HandshakeState.IDLE, HandshakeState.INITIATED
In = HandshakeInput

# The documented table (peer.py module doc); None: refused.
EXPECTED: dict[HandshakeState, dict[HandshakeInput, HandshakeState | None]] = {
    IDLE: {
        In.START: INITIATED,
        In.RETRY: None,
        In.COOKIE: None,
        In.RESPONSE: None,
        In.GIVE_UP: None,
        In.RESET: IDLE,
    },
    INITIATED: {
        In.START: None,
        In.RETRY: INITIATED,
        In.COOKIE: INITIATED,
        In.RESPONSE: IDLE,
        In.GIVE_UP: IDLE,
        In.RESET: IDLE,
    },
}

ENTRY = EdgeEntry(
    EdgeName("b"), PublicKey(bytes(range(1, 33))), (Endpoint.parse("192.0.2.2:51820"),), ()
)


def pending(n: int = 1) -> Pending:
    state = InitiatorState(n, bytes(32), bytes(32), bytes(32), bytes(32), bytes(16))
    return Pending(state, 0.0, 5.0, 0.0)


def peer_in(state: HandshakeState) -> PeerState:
    peer = PeerState(ENTRY, 0.0)
    if state is INITIATED:
        assert peer.step(In.START, pending())
    assert peer.state is state
    return peer


def session(peer: PeerState, index: int, role: Role = Role.INITIATOR) -> Session:
    return Session(
        index=index,
        remote_index=index + 100,
        peer=peer,
        send_key=bytes(32),
        recv_key=bytes(32),
        role=role,
        created=0.0,
        timers=Timers(),
    )


def test_the_table_covers_every_pair_as_documented() -> None:
    assert set(EXPECTED) == set(HandshakeState)
    for state in HandshakeState:
        assert set(EXPECTED[state]) == set(HandshakeInput)
    documented = {
        (s, i): to for s, row in EXPECTED.items() for i, to in row.items() if to is not None
    }
    assert documented == TRANSITIONS


@pytest.mark.parametrize(("state", "event"), list(itertools.product(HandshakeState, In)))
def test_every_input_moves_or_is_refused(state: HandshakeState, event: HandshakeInput) -> None:
    peer = peer_in(state)
    before = peer.pending
    new = pending(2)
    expected = EXPECTED[state][event]
    moved = peer.step(event, new)
    if expected is None:
        assert moved is False
        assert peer.state is state and peer.pending is before  # nothing changed
    else:
        assert moved is True
        assert peer.state is expected
        assert peer.pending is (new if expected is INITIATED else None)


@given(st.lists(st.sampled_from(list(In)), max_size=40))
def test_pending_is_set_exactly_when_initiated(events: list[HandshakeInput]) -> None:
    peer = PeerState(ENTRY, 0.0)
    state = IDLE
    for n, event in enumerate(events):
        expected = EXPECTED[state][event]
        assert peer.step(event, pending(n)) is (expected is not None)
        state = expected or state
        assert peer.state is state
        assert (peer.pending is not None) == (state is INITIATED)


def test_moving_to_initiated_needs_the_pending_initiation() -> None:
    peer = PeerState(ENTRY, 0.0)
    with pytest.raises(ValueError):
        peer.step(In.START)
    assert peer.state is IDLE


def test_initiator_session_becomes_current_at_once() -> None:
    peer = PeerState(ENTRY, 0.0)
    first, second, third = session(peer, 1), session(peer, 2), session(peer, 3)
    assert peer.install_initiated(first) == []
    assert peer.install_initiated(second) == []
    assert (peer.current, peer.previous) == (second, first)
    assert peer.install_initiated(third) == [first]
    assert (peer.current, peer.previous, peer.next) == (third, second, None)


def test_responder_session_waits_as_next_until_data_confirms_it() -> None:
    peer = PeerState(ENTRY, 0.0)
    old, older = session(peer, 1), session(peer, 0)
    peer.install_initiated(older)
    peer.install_initiated(old)
    responded = session(peer, 2, Role.RESPONDER)
    assert not responded.confirmed
    assert peer.install_responded(responded) == [older]
    assert (peer.current, peer.previous, peer.next) == (old, None, responded)
    replacement = session(peer, 3, Role.RESPONDER)
    assert peer.install_responded(replacement) == [responded]
    assert peer.confirm(replacement) == []
    assert replacement.confirmed
    assert (peer.current, peer.previous, peer.next) == (replacement, old, None)


def test_initiator_session_while_a_next_waits_keeps_next_receivable() -> None:
    peer = PeerState(ENTRY, 0.0)
    old = session(peer, 1)
    peer.install_initiated(old)
    waiting = session(peer, 2, Role.RESPONDER)
    peer.install_responded(waiting)
    ours = session(peer, 3)
    assert peer.install_initiated(ours) == [old]
    assert (peer.current, peer.previous, peer.next) == (ours, waiting, None)


def test_expire_and_drop() -> None:
    peer = PeerState(ENTRY, 0.0)
    a, b = session(peer, 1), session(peer, 2)
    peer.install_initiated(a)
    peer.install_initiated(b)
    assert peer.expire(179.9) == ([], False)
    assert peer.expire(180.0) == ([b, a], True)
    assert peer.sessions() == []
    peer.install_initiated(a)
    assert peer.drop_sessions() == [a]


def test_queue_drops_the_oldest_beyond_its_limit() -> None:
    peer = PeerState(ENTRY, 0.0)
    assert not any(peer.enqueue(bytes([i])) for i in range(QUEUE_LIMIT))
    assert peer.enqueue(b"new")
    assert len(peer.queue) == QUEUE_LIMIT and peer.queue[0] == b"\x01"


def test_cookie_is_fresh_for_120_seconds() -> None:
    peer = PeerState(ENTRY, 0.0)
    assert peer.fresh_cookie(0.0) is None
    peer.cookie, peer.cookie_at = bytes(16), 10.0
    assert peer.fresh_cookie(129.9) == bytes(16)
    assert peer.fresh_cookie(130.0) is None


def test_endpoints() -> None:
    peer = PeerState(ENTRY, 0.0)
    assert peer.endpoint == peer.advertised == ("192.0.2.2", 51820)
    assert peer.endpoint_text() == "192.0.2.2:51820"
    assert format_sockaddr("2001:db8::1", 7) == "[2001:db8::1]:7"
    assert PeerState(EdgeEntry(EdgeName("d"), ENTRY.public_key, (), ()), 0.0).endpoint is None
