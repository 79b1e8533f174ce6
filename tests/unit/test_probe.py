"""Probes (edge.tunnel.probe): the codec, the table in flight, and probes through the core.

The core tests use the in-memory underlay of test_tunnel (`Net`: edges a, b, c with a
manual clock; d is in the map without an endpoint).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.tunnel import ProbeAnswered, ProbeError, crypto, ippacket, wire
from edge.tunnel.probe import (
    FIRST_BYTE_LIMIT,
    ID_LEN,
    PENDING_LIMIT,
    PROBE_LEN,
    PROBE_LIFETIME,
    InFlight,
    MalformedProbe,
    PendingProbes,
    Probe,
    ProbeKind,
    decode,
    encode,
)
from tests.unit.test_tunnel import A_TO_B, ADDR, B, C, Net, identity, nonzero, peer_view

ID = bytes(range(1, 9))


def seal(net: Net, src: str, dst: str, plaintext: bytes) -> bytes:
    """A data message with `plaintext` on `src`'s current session with `dst`."""
    key = {"a": identity("a"), "b": B, "c": C}[dst].public_key.raw
    session = net[src]._context.table.by_key[key].current
    assert session is not None
    counter = session.next_counter()
    return wire.pack_data(
        session.remote_index, counter, crypto.seal(session.send_key, counter, plaintext)
    )


def answered(net: Net, name: str) -> list[ProbeAnswered]:
    return [e for e in net.events[name] if isinstance(e, ProbeAnswered)]


# -- the codec -----------------------------------------------------------------------------


def test_encode_decode_round_trip() -> None:
    for kind in ProbeKind:
        plaintext = encode(Probe(kind, ID))
        assert plaintext == bytes((kind.value,)) + ID and len(plaintext) == PROBE_LEN
        assert decode(plaintext) == Probe(kind, ID)
        assert plaintext[0] < FIRST_BYTE_LIMIT


@pytest.mark.parametrize(
    "plaintext",
    [b"", b"\x01", b"\x01" + ID[:-1], b"\x01" + ID + b"\x00", b"\x00" + ID, b"\x03" + ID],
)
def test_malformed_probes_raise_the_one_error(plaintext: bytes) -> None:
    with pytest.raises(MalformedProbe):
        decode(plaintext)


@given(st.binary(max_size=32))
def test_any_bytes_decode_or_raise_malformed_probe(plaintext: bytes) -> None:
    try:
        probe = decode(plaintext)
    except MalformedProbe:
        return
    assert encode(probe) == plaintext


@given(st.integers(0, FIRST_BYTE_LIMIT - 1), st.binary(max_size=80))
def test_a_plaintext_below_the_first_byte_limit_is_never_ip(first: int, rest: bytes) -> None:
    # The receiver's probe branch relies on it: such plaintexts would otherwise be not_ip.
    assert ippacket.parse(bytes((first,)) + rest) is None
    assert ippacket.parse(A_TO_B) is not None and A_TO_B[0] >= FIRST_BYTE_LIMIT


def test_encode_refuses_a_bad_id() -> None:
    with pytest.raises(ValueError, match="8 bytes"):
        encode(Probe(ProbeKind.REQUEST, b"short"))


# -- the table of probes in flight -----------------------------------------------------------


def test_pending_table_is_bounded_oldest_forgotten_first() -> None:
    pending = PendingProbes()
    ids = [i.to_bytes(ID_LEN, "big") for i in range(PENDING_LIMIT + 1)]
    for n, probe_id in enumerate(ids):
        pending.add(probe_id, InFlight("b", 100.0 + n * 0.001, queued=False))
    assert len(pending) == PENDING_LIMIT
    assert pending.take(ids[0], "b", 100.1) is None
    assert pending.take(ids[1], "b", 100.1) == InFlight("b", 100.001, queued=False)
    assert pending.take(ids[1], "b", 100.1) is None  # answered once only
    assert len(pending) == PENDING_LIMIT - 1


def test_pending_probes_expire() -> None:
    pending = PendingProbes()
    pending.add(ID, InFlight("b", 100.0, queued=True))
    pending.add(b"\xff" * ID_LEN, InFlight("b", 101.0, queued=False))
    assert pending.take(ID, "b", 100.0 + PROBE_LIFETIME) is None
    assert len(pending) == 1
    pending.expire(101.0 + PROBE_LIFETIME)
    assert len(pending) == 0


def test_pending_probe_is_taken_only_by_the_peer_it_was_sent_to() -> None:
    pending = PendingProbes()
    pending.add(ID, InFlight("b", 100.0, queued=False))
    assert pending.take(ID, "c", 100.5) is None
    assert pending.take(ID, "b", 100.5) is not None


# -- probes through the core ---------------------------------------------------------------


def test_probe_on_a_session_is_answered_with_its_rtt() -> None:
    net = Net()
    net.connect()
    rx_before = peer_view(net["a"], "b").rx_packets
    probe_id = net["a"].probe("b", net.now)
    ((request, dst),) = net["a"].datagrams_to_send()
    assert dst == ADDR["b"] and len(request) == PROBE_LEN + wire.OVERHEAD
    net.now += 0.001
    assert net.deliver(request, ADDR["a"], ADDR["b"]) is None  # nothing for b's TUN
    ((reply, back),) = net["b"].datagrams_to_send()
    assert back == ADDR["a"] and len(reply) == len(request)  # no amplification
    net.now += 0.002
    assert net.deliver(reply, ADDR["b"], ADDR["a"]) is None
    net.drain_events()
    (event,) = answered(net, "a")
    assert event.peer == "b" and event.probe_id == probe_id
    assert event.rtt == pytest.approx(0.003)
    assert event.endpoint == ADDR["b"] and event.new_session is False
    assert answered(net, "b") == []
    assert peer_view(net["a"], "b").rx_packets == rx_before + 1
    assert all(not nonzero(t) for t in net.tunnels.values())


def test_probe_before_any_session_waits_for_the_handshake() -> None:
    net = Net()
    probe_id = net["a"].probe("b", net.now)
    ((initiation, dst),) = net["a"].datagrams_to_send()
    assert initiation[0] == wire.TYPE_INITIATION and dst == ADDR["b"]
    net.inflight.append((initiation, ADDR["a"], dst))
    net.pump()
    (event,) = answered(net, "a")
    assert event.probe_id == probe_id and event.new_session is True
    assert event.endpoint == ADDR["b"]
    assert net.tun["a"] == [] and net.tun["b"] == []
    assert all(not nonzero(t) for t in net.tunnels.values())
    # The session is now there: the next probe rides it.
    net["a"].probe("b", net.now)
    net.pump()
    assert [e.new_session for e in answered(net, "a")] == [True, False]


def test_replayed_probe_request_and_reply_are_dropped_by_the_window() -> None:
    net = Net()
    net.connect()
    net["a"].probe("b", net.now)
    ((request, _),) = net["a"].datagrams_to_send()
    net.deliver(request, ADDR["a"], ADDR["b"])
    net.deliver(request, ADDR["a"], ADDR["b"])
    ((reply, _),) = net["b"].datagrams_to_send()  # answered once
    assert nonzero(net["b"]) == {"replay": 1}
    net.deliver(reply, ADDR["b"], ADDR["a"])
    net.deliver(reply, ADDR["b"], ADDR["a"])
    net.drain_events()
    assert len(answered(net, "a")) == 1
    assert nonzero(net["a"]) == {"replay": 1}


def test_reply_with_an_unknown_id_is_dropped_and_counted() -> None:
    net = Net()
    net.connect()
    reply = seal(net, "b", "a", encode(Probe(ProbeKind.REPLY, ID)))
    assert net.deliver(reply, ADDR["b"], ADDR["a"]) is None
    net.drain_events()
    assert answered(net, "a") == []
    assert nonzero(net["a"]) == {"bad_probe": 1}
    assert net["a"].datagrams_to_send() == []


def test_reply_from_another_peer_than_the_one_probed_is_dropped() -> None:
    net = Net()
    net.connect("a", "b")
    net.connect("a", "c")
    net.collect()
    net.inflight.clear()
    probe_id = net["a"].probe("b", net.now)
    net.inflight.clear()
    net["a"].datagrams_to_send()  # the request never reaches b
    forged = seal(net, "c", "a", encode(Probe(ProbeKind.REPLY, probe_id)))
    net.deliver(forged, ADDR["c"], ADDR["a"])
    net.drain_events()
    assert answered(net, "a") == []
    assert nonzero(net["a"]) == {"bad_probe": 1}


def test_reply_after_the_probe_expired_is_dropped() -> None:
    net = Net()
    net.connect()
    net["a"].probe("b", net.now)
    ((request, _),) = net["a"].datagrams_to_send()
    net.deliver(request, ADDR["a"], ADDR["b"])
    ((reply, _),) = net["b"].datagrams_to_send()
    net.now += PROBE_LIFETIME
    net.deliver(reply, ADDR["b"], ADDR["a"])
    net.drain_events()
    assert answered(net, "a") == []
    assert nonzero(net["a"]) == {"bad_probe": 1}


@pytest.mark.parametrize(
    "plaintext",
    [
        b"\x00",
        b"\x01",
        b"\x01" + ID + b"\x00",  # longer than a probe: could amplify
        b"\x03" + ID,
        b"\x0f" + bytes(60),
    ],
)
def test_malformed_probe_plaintext_is_counted(plaintext: bytes) -> None:
    net = Net()
    net.connect()
    net.collect()
    net.inflight.clear()
    assert net.deliver(seal(net, "a", "b", plaintext), ADDR["a"], ADDR["b"]) is None
    net.drain_events()
    assert nonzero(net["b"]) == {"bad_probe": 1}
    assert net["b"].datagrams_to_send() == []
    assert answered(net, "b") == []


def test_request_is_answered_only_through_the_senders_session() -> None:
    net = Net()
    net.connect("b", "a")
    net.connect("c", "a")
    net.collect()
    net.inflight.clear()
    request = seal(net, "b", "a", encode(Probe(ProbeKind.REQUEST, ID)))
    net.deliver(request, ADDR["b"], ADDR["a"])
    ((reply, dst),) = net["a"].datagrams_to_send()
    assert dst == ADDR["b"]
    a_key = identity("a").public_key.raw
    b_session = net["b"]._context.table.by_key[a_key].current
    assert b_session is not None
    index, counter, box = wire.unpack_data(reply)
    assert index == b_session.index
    assert crypto.open_portable(b_session.recv_key, counter, box) == encode(
        Probe(ProbeKind.REPLY, ID)
    )
    # b's request relayed from c's address: the window refuses it, c gets nothing.
    assert net.deliver(request, ADDR["c"], ADDR["a"]) is None
    assert net["a"].datagrams_to_send() == []
    assert nonzero(net["a"]) == {"replay": 1}
    # c's own request is answered to c, on a's session with c.
    net.deliver(seal(net, "c", "a", encode(Probe(ProbeKind.REQUEST, ID))), ADDR["c"], ADDR["a"])
    ((to_c, dst_c),) = net["a"].datagrams_to_send()
    c_session = net["c"]._context.table.by_key[a_key].current
    assert c_session is not None and dst_c == ADDR["c"]
    assert wire.unpack_data(to_c)[0] == c_session.index


@pytest.mark.parametrize(
    ("edge", "message"),
    [
        ("a", "'a' is this edge"),
        ("nobody", "no peer named 'nobody'"),
        ("d", "edge 'd' has no endpoint"),
    ],
)
def test_probe_to_an_edge_that_cannot_answer_is_refused(edge: str, message: str) -> None:
    net = Net()
    with pytest.raises(ProbeError, match=message):
        net["a"].probe(edge, net.now)
    assert net["a"].datagrams_to_send() == []
    assert not nonzero(net["a"])


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 0x0F), st.binary(max_size=64))
def test_any_plaintext_with_high_nibble_0_is_a_probe_or_counted(first: int, rest: bytes) -> None:
    plaintext = bytes((first,)) + rest
    net = Net(idents=(identity("a"), B))
    net.connect()
    net.collect()
    net.inflight.clear()
    pending = net["a"].probe("b", net.now)  # a probe of a's in flight that b may answer
    net["a"].datagrams_to_send()
    datagram = seal(net, "b", "a", plaintext)
    assert net.deliver(datagram, ADDR["b"], ADDR["a"]) is None
    net.drain_events()
    try:
        probe = decode(plaintext)
    except MalformedProbe:
        assert nonzero(net["a"]) == {"bad_probe": 1}
        return
    if probe.kind is ProbeKind.REQUEST:
        assert [d[1] for d in net["a"].datagrams_to_send()] == [ADDR["b"]]
        assert not nonzero(net["a"])
    elif probe.probe_id == pending:
        assert [e.probe_id for e in answered(net, "a")] == [pending]
    else:
        assert nonzero(net["a"]) == {"bad_probe": 1}
