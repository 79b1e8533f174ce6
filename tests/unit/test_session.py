"""Session predicates at their boundaries, on a manual clock (edge/tunnel/session.py)."""

from __future__ import annotations

import pytest

from edge.tunnel.peer import PeerState
from edge.tunnel.replay import ReplayWindow
from edge.tunnel.session import Role, Session
from edge.tunnel.timers import Timers
from isthmus.ids import EdgeName
from isthmus.keys import PublicKey
from isthmus.routemap import EdgeEntry

T0 = 1000.0
PEER = PeerState(EdgeEntry(EdgeName("b"), PublicKey(bytes(range(1, 33))), (), ()), T0)


def make(role: Role, timers: Timers | None = None) -> Session:
    return Session(
        index=7,
        remote_index=9,
        peer=PEER,
        send_key=b"s" * 32,
        recv_key=b"r" * 32,
        role=role,
        created=T0,
        timers=timers or Timers(),
    )


@pytest.mark.parametrize("role", list(Role))
def test_usable_until_reject_after_time(role: Role) -> None:
    session = make(role)
    assert session.can_send(T0) and not session.expired(T0)
    assert session.can_send(T0 + 179.999) and not session.expired(T0 + 179.999)
    assert not session.can_send(T0 + 180) and session.expired(T0 + 180)


def test_initiator_rekeys_at_rekey_after_time() -> None:
    session = make(Role.INITIATOR)
    assert session.confirmed
    assert not session.needs_rekey(T0 + 119.999)
    assert session.needs_rekey(T0 + 120)


def test_responder_rekeys_rekey_timeout_later() -> None:
    session = make(Role.RESPONDER)
    assert not session.confirmed
    assert not session.needs_rekey(T0 + 124.999)
    assert session.needs_rekey(T0 + 125)


@pytest.mark.parametrize("role", list(Role))
def test_message_limits(role: Role) -> None:
    session = make(role, Timers(rekey_after_messages=3, reject_after_messages=5))
    assert [session.next_counter() for _ in range(3)] == [0, 1, 2]
    assert session.needs_rekey(T0) and session.can_send(T0)
    session.next_counter()
    session.next_counter()
    assert session.send_counter == 5
    assert not session.can_send(T0) and not session.expired(T0)


def test_fresh_state() -> None:
    session = make(Role.INITIATOR)
    assert session.send_counter == 0
    assert isinstance(session.window, ReplayWindow)
    assert (session.index, session.remote_index) == (7, 9)
    assert "sss" not in repr(session) and "rrr" not in repr(session)
