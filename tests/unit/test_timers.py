"""edge/tunnel/timers.py: the constants and their consistency rules, and the hooks that
are the only writers of a peer's timer slots, on a manual clock."""

from __future__ import annotations

import math

import pytest

from edge.tunnel import timers
from edge.tunnel.peer import PeerState
from edge.tunnel.timers import MAX_REJECT_AFTER_MESSAGES, Timers
from isthmus.endpoint import Endpoint
from isthmus.ids import EdgeName
from isthmus.keys import PublicKey
from isthmus.routemap import EdgeEntry

T0 = 100.0
ENTRY = EdgeEntry(
    EdgeName("b"), PublicKey(bytes(range(1, 33))), (Endpoint.parse("192.0.2.2:51820"),), ()
)


def fresh() -> PeerState:
    return PeerState(ENTRY, T0)


def test_defaults_are_wireguards() -> None:
    t = Timers()
    assert (t.rekey_after_time, t.reject_after_time, t.rekey_timeout) == (120, 180, 5)
    assert (t.rekey_timeout_jitter, t.rekey_attempt_time, t.keepalive_timeout) == (0.333, 90, 10)
    assert t.persistent_keepalive == 0
    assert t.rekey_after_messages == 2**60
    assert t.reject_after_messages == MAX_REJECT_AFTER_MESSAGES == 2**64 - 2**13 - 1


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


def test_data_sent_counts_and_starts_the_unanswered_clock_once() -> None:
    peer = fresh()
    peer.keepalive_at = T0 + 10
    timers.data_sent(peer, T0 + 1, 1, 100, True)
    assert (peer.tx_packets, peer.tx_bytes, peer.last_sent) == (1, 100, T0 + 1)
    assert peer.keepalive_at is None and peer.unanswered_since == T0 + 1
    timers.data_sent(peer, T0 + 2, 3, 300, True)  # a run: the clock keeps its start
    assert (peer.tx_packets, peer.tx_bytes, peer.last_sent) == (4, 400, T0 + 2)
    assert peer.unanswered_since == T0 + 1


def test_a_flushed_queue_or_keepalive_does_not_start_the_unanswered_clock() -> None:
    peer = fresh()
    peer.keepalive_at = T0 + 10
    timers.data_sent(peer, T0 + 1, 0, 0, False)  # a keepalive
    assert (peer.tx_packets, peer.tx_bytes, peer.last_sent) == (0, 0, T0 + 1)
    assert peer.keepalive_at is None and peer.unanswered_since is None


def test_authenticated_data_stops_the_unanswered_clock_and_data_arms_a_keepalive() -> None:
    peer = fresh()
    timers.data_sent(peer, T0, 1, 10, True)
    timers.data_authenticated(peer, T0 + 2)
    assert peer.last_received == T0 + 2 and peer.unanswered_since is None
    timers.data_received(peer, T0 + 2, 60, keepalive_timeout=10.0)
    assert (peer.rx_packets, peer.rx_bytes, peer.keepalive_at) == (1, 60, T0 + 12)
    timers.data_received(peer, T0 + 5, 40, keepalive_timeout=10.0)  # already armed
    assert (peer.rx_packets, peer.rx_bytes, peer.keepalive_at) == (2, 100, T0 + 12)
    timers.keepalive_fired(peer)
    assert peer.keepalive_at is None


def test_handshake_hooks() -> None:
    peer = fresh()
    timers.handshake_sent(peer, T0 + 1)
    assert peer.last_sent == T0 + 1 and peer.unanswered_since is None
    timers.handshake_received(peer, T0 + 2)
    assert peer.last_received == T0 + 2
    timers.initiation_accepted(peer, T0 + 3)
    assert peer.last_initiation_at == T0 + 3
    timers.handshake_complete(peer, T0 + 4)
    timers.handshake_complete(peer, T0 + 5)
    assert (peer.handshakes, peer.last_handshake) == (2, T0 + 5)


def test_probe_sent_and_unanswered_fired() -> None:
    peer = fresh()
    timers.probe_sent(peer, T0 + 1)
    timers.probe_sent(peer, T0 + 2)
    assert peer.unanswered_since == T0 + 1
    timers.unanswered_fired(peer)
    assert peer.unanswered_since is None


def test_deadlines_on_a_manual_clock() -> None:
    t = Timers(persistent_keepalive=25.0)
    peer = fresh()
    assert timers.last_sent(peer) == T0  # never sent: from creation
    assert timers.deadlines(peer, t) == [T0 + 25]
    timers.data_sent(peer, T0 + 1, 1, 10, True)
    timers.data_received(peer, T0 + 2, 10, t.keepalive_timeout)
    assert sorted(timers.deadlines(peer, t)) == [
        T0 + 2 + t.keepalive_timeout,  # 112
        T0 + 1 + timers.unanswered_timeout(t),  # 116
        T0 + 1 + 25,  # 126
    ]
    assert timers.unanswered_timeout(t) == t.keepalive_timeout + t.rekey_timeout == 15
    timers.persistent_keepalive_fired(peer, T0 + 30)
    assert max(timers.deadlines(peer, t)) == T0 + 30 + 25
    off = Timers()  # persistent keepalive off: only the keepalive and unanswered deadlines
    assert sorted(timers.deadlines(peer, off)) == [
        T0 + 2 + off.keepalive_timeout,
        T0 + 1 + timers.unanswered_timeout(off),
    ]
