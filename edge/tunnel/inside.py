"""The inside direction: packets from the TUN become data datagrams; all we send to peers.

Owns everything this edge sends to a peer: data on the current session (the hot path),
the queue of packets waiting for a session, keepalives, and our initiations (first send,
retry with a new ephemeral, re-send after a cookie reply, give-up).

Rules:
- A packet goes out only on `current`, and only while the session `can_send` (the hot path
  asks `Session.sending`, which can_send and needs_rekey read); otherwise it
  is queued (at most QUEUE_LIMIT per peer, the oldest dropped as no_session) and a
  handshake starts unless one is in flight.
- Sending on a session that `needs_rekey` starts a handshake but still sends on it: the
  old session serves until the new one is in place.
- Every initiation has a fresh ephemeral key, a fresh index and a TAI64N timestamp newer
  than any this Tunnel sent before (the wall clock may stand still or step back).
- Hot path (`seal_in_place`): one LPM lookup, one seal in the caller's buffer, one header
  packed in place; no allocation. `packet` is the same path through a scratch buffer.
  `seal_run_in_place` takes the segments of one super-packet: one lookup and one session
  decision for the run, then a seal and a header per segment, each with its own counter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from edge.tunnel import crypto, handshake, ippacket, timers, wire
from edge.tunnel.context import Context, Datagram
from edge.tunnel.drops import DropReason
from edge.tunnel.events import HandshakeFailed
from edge.tunnel.peer import HandshakeInput, PeerState, Pending, Sockaddr
from edge.tunnel.session import REFUSED, REKEY, Session

_MAX_PLAINTEXT: Final = wire.MAX_PLAINTEXT
_OVERHEAD: Final = wire.OVERHEAD
_HEADER: Final = wire.DATA_HEADER_LEN
_TYPE_DATA: Final = wire.TYPE_DATA
_pack_header: Final = wire.DATA_HEADER.pack_into
_data_sent: Final = timers.data_sent
_REFUSED: Final = REFUSED
_REKEY: Final = REKEY
_NOT_IP: Final = DropReason.NOT_IP
_NO_ROUTE: Final = DropReason.NO_ROUTE
_NO_SESSION: Final = DropReason.NO_SESSION
_EPHEMERAL_LEN: Final = wire.KEY_LEN
_JITTER_BYTES: Final = 2
_TAI64N: Final = handshake.TAI64N

Buffer = bytes | bytearray | memoryview


class Sender:
    """The sending half of a Tunnel; the map in use is `context.table`."""

    __slots__ = ("_context", "_drops", "_last_timestamp", "_out", "_scratch")

    def __init__(self, context: Context) -> None:
        self._context = context
        self._drops = context.drops  # bound once: the hot path counts through it
        self._out = context.out
        self._last_timestamp = bytes(wire.TIMESTAMP_LEN)
        self._scratch = bytearray(wire.MAX_DATAGRAM)

    # -- data: the hot path ------------------------------------------------------------

    def packet(self, packet: Buffer, now: float) -> Datagram | None:
        """A packet from the TUN: (datagram, endpoint) to send now, or None (queued or
        dropped and counted: not_ip, no_route, no_session). Never raises."""
        size = len(packet)
        if size > _MAX_PLAINTEXT:
            self._drops.add(_NOT_IP)
            return None
        scratch = self._scratch
        scratch[_OVERHEAD : _OVERHEAD + size] = packet
        endpoint = self.seal_in_place(scratch, 0, size, now)
        if endpoint is None:
            return None
        return bytes(scratch[: _OVERHEAD + size]), endpoint

    def seal_in_place(self, buf: bytearray, at: int, size: int, now: float) -> Sockaddr | None:
        """The packet buf[at + OVERHEAD : at + OVERHEAD + size] from the TUN: seal it into
        the datagram buf[at : at + OVERHEAD + size] and return its endpoint, or None (queued
        or dropped and counted, as `packet`). Never raises for any packet bytes."""
        start = at + _OVERHEAD
        packet = memoryview(buf)[start : start + size]
        parsed = ippacket.parse(packet)
        if parsed is None or size > _MAX_PLAINTEXT:
            self._drops.add(_NOT_IP)
            return None
        route = self._context.table.owner(parsed[2])
        if route is None or (peer := route.peer) is None:
            self._drops.add(_NO_ROUTE)
            return None
        endpoint = peer.endpoint
        if endpoint is None:
            self._drops.add(_NO_ROUTE)
            return None
        session = peer.current
        if session is not None:
            verdict = session.sending(now)  # not REFUSED: can_send; REKEY: needs_rekey
            if verdict:
                counter = session.send_counter  # next_counter, inline
                session.send_counter = counter + 1
                crypto.seal_in_place(session.send_key, counter, buf, at + _HEADER, size)
                _pack_header(buf, at, _TYPE_DATA, session.remote_index, counter)
                _data_sent(peer, now, 1, size, True)
                if verdict == _REKEY and peer.pending is None:
                    self.start(peer, now)
                return endpoint
        if peer.enqueue(bytes(packet)):
            self._drops.add(_NO_SESSION)
        self.start(peer, now)
        return None

    def seal_run_in_place(
        self, buf: bytearray, at: int, stride: int, sizes: Sequence[int], now: float
    ) -> Sockaddr | None:
        """A run of packets from the TUN that share their IP header's addresses (the
        segments of one super-packet): packet i is buf[p + OVERHEAD : p + OVERHEAD +
        sizes[i]] with p = at + i * stride. Seal each into its datagram at p, as
        `seal_in_place` would one by one, and return their one endpoint; or None when none
        was sealed (each queued or dropped and counted, as `seal_in_place`). The route and
        session are decided once for the run: a session that cannot carry all of it
        carries none, and the run waits for the next one. Never raises for any bytes."""
        count = len(sizes)
        if not count:
            return None
        first = at + _OVERHEAD
        parsed = ippacket.parse(memoryview(buf)[first : first + sizes[0]])
        if parsed is None or max(sizes) > _MAX_PLAINTEXT or stride < _OVERHEAD + max(sizes):
            self._drops.add(_NOT_IP, count)
            return None
        route = self._context.table.owner(parsed[2])
        if route is None or (peer := route.peer) is None or peer.endpoint is None:
            self._drops.add(_NO_ROUTE, count)
            return None
        session = peer.current
        verdict = session.sending(now, count) if session is not None else _REFUSED
        if session is not None and verdict:
            counter = session.next_counter(count)
            crypto.seal_run_in_place(session.send_key, counter, buf, at + _HEADER, stride, sizes)
            index = session.remote_index
            pos = at
            for i in range(count):
                _pack_header(buf, pos, _TYPE_DATA, index, counter + i)
                pos += stride
            _data_sent(peer, now, count, sum(sizes), True)
            if verdict == _REKEY and peer.pending is None:
                self.start(peer, now)
            return peer.endpoint
        for i, size in enumerate(sizes):
            start = at + i * stride + _OVERHEAD
            if peer.enqueue(bytes(buf[start : start + size])):
                self._drops.add(_NO_SESSION)
        self.start(peer, now)
        return None

    def _seal(self, peer: PeerState, session: Session, packet: bytes, now: float) -> None:
        counter = session.next_counter()
        datagram = wire.pack_data(
            session.remote_index, counter, crypto.seal(session.send_key, counter, packet)
        )
        if peer.endpoint is not None:
            self._out.append((datagram, peer.endpoint))
        _data_sent(peer, now, 1 if packet else 0, len(packet), False)

    def flush(self, peer: PeerState, now: float, *, keepalive: bool) -> None:
        """Send the peer's queue on its current session; when empty, a keepalive if asked."""
        session = peer.current
        if session is None or peer.endpoint is None:
            return
        queue = peer.queue
        if not queue:
            if keepalive and session.can_send(now):
                self._seal(peer, session, b"", now)
            return
        while queue and session.can_send(now):
            self._seal(peer, session, queue.popleft(), now)
        if queue and peer.pending is None:
            self.start(peer, now)

    def keepalive(self, peer: PeerState, now: float) -> bool:
        """Send an empty data packet on the current session; False when it cannot send."""
        session = peer.current
        if session is None or peer.endpoint is None or not session.can_send(now):
            return False
        self._seal(peer, session, b"", now)
        return True

    # -- initiations ---------------------------------------------------------------------

    def start(self, peer: PeerState, now: float) -> None:
        """Begin a handshake attempt unless one is in flight (the machine refuses START)."""
        if peer.pending is not None:
            return
        pending = self._initiate(peer, now, attempt_start=now, cookie=None)
        peer.step(HandshakeInput.START, pending)

    def retry(self, peer: PeerState, now: float) -> None:
        """REKEY_TIMEOUT passed: a new initiation, or give up after REKEY_ATTEMPT_TIME."""
        old = peer.pending
        if old is None:
            return
        context = self._context
        context.index.remove_pending(old.initiator.sender_index)
        if now >= old.attempt_start + context.timers.rekey_attempt_time:
            peer.step(HandshakeInput.GIVE_UP)
            if peer.queue:
                self._drops.add(_NO_SESSION, len(peer.queue))
                peer.queue.clear()
            context.events.append(HandshakeFailed(peer.name))
            return
        pending = self._initiate(peer, now, attempt_start=old.attempt_start, cookie=None)
        peer.step(HandshakeInput.RETRY, pending)

    def cookie(self, peer: PeerState, cookie: bytes, now: float) -> None:
        """A cookie reply opened: keep the cookie, re-send at once (once per cookie)."""
        peer.cookie = cookie
        peer.cookie_at = now
        old = peer.pending
        if old is None or old.cookie == cookie:
            return
        self._context.index.remove_pending(old.initiator.sender_index)
        pending = self._initiate(peer, now, attempt_start=old.attempt_start, cookie=cookie)
        peer.step(HandshakeInput.COOKIE, pending)

    def _initiate(
        self, peer: PeerState, now: float, *, attempt_start: float, cookie: bytes | None
    ) -> Pending:
        context = self._context
        index = context.index.allocate()
        if cookie is None:
            cookie = peer.fresh_cookie(now)
        message, state = handshake.create_initiation(
            context.static,
            peer.public_key.raw,
            index,
            context.random(_EPHEMERAL_LEN),
            self._timestamp(),
            cookie,
        )
        context.index.add_pending(index, peer)
        if peer.endpoint is not None:
            self._out.append((message, peer.endpoint))
            timers.handshake_sent(peer, now)
        constants = context.timers
        jitter = int.from_bytes(context.random(_JITTER_BYTES), "little") / 2 ** (8 * _JITTER_BYTES)
        retry_at = now + constants.rekey_timeout + jitter * constants.rekey_timeout_jitter
        return Pending(state, now, retry_at, attempt_start, cookie)

    def _timestamp(self) -> bytes:
        """TAI64N of the wall clock, strictly newer than the last one this Tunnel sent."""
        stamp = handshake.tai64n(self._context.wall_clock())
        if stamp <= self._last_timestamp:
            seconds, nanoseconds = _TAI64N.unpack(self._last_timestamp)
            nanoseconds += 1
            if nanoseconds >= 10**9:
                seconds, nanoseconds = seconds + 1, 0
            stamp = _TAI64N.pack(seconds, nanoseconds)
        self._last_timestamp = stamp
        return stamp
