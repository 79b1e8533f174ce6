"""The outside direction: datagrams from UDP become packets for the TUN, or handshake work.

Owns everything this edge receives from the underlay: data on a session (the hot path) and
the three handshake messages. Anything it answers (responses, cookie replies, keepalives,
flushed queues) goes to the shared output list; data for the TUN is returned.

Rules:
- A datagram longer than wire.MAX_ACCEPTED (longer than any an edge sends) drops as
  oversize before anything else; the caller's buffer is never copied for it.
- Data: the index names the session (unknown_peer); a session older than
  REJECT_AFTER_TIME drops (expired_session); the replay window is checked (replay,
  too_old), then the box opened (decrypt_failed), and only then does the window advance.
  The inner source must lie in the sender's routes (bad_inner_source): this also refuses a
  packet reflected back at us. The inner destination must be ours to deliver
  (ForwardingTable.delivers: its owner by longest prefix over the map is one of our
  routes, or it is our TUN address), else bad_inner_destination: a peer, even with its
  real key, cannot make us forward to the metadata service, the internet or a third
  site. A plaintext that is not IP and starts with a byte below 0x10 goes to the prober
  (edge.tunnel.probe: a probe, or bad_probe), after the same session, replay and
  authentication checks.
- An initiation is checked cheapest first and no DH is done before the size and mac1
  (malformed), the per-source token bucket (ratelimited) and, under load, a valid mac2
  (else a cookie reply to the source and ratelimited). Every failure creates no state.
- A replayed initiation (timestamp not newer than the last accepted) never touches the
  peer's sessions.
- Only authenticated data (a data message that opened) or a response that opened moves a
  peer's endpoint to its source. An initiation never does, though it is answered at its
  source: it can be replayed (after a restart of ours, the freshness check knows no older
  timestamp), and a replayed one must not steer our traffic to whoever replayed it. A peer
  that moved confirms the new session with data from its new address, which moves it.
- `datagram` never raises for any input bytes; it drops and counts. The hot path is
  `open_in_place` (the box opened in the caller's buffer, no allocation); `datagram` is
  the same path through a scratch buffer.
"""

from __future__ import annotations

import ipaddress
from typing import Final

from edge.tunnel import cookie, crypto, handshake, ippacket, timers, wire
from edge.tunnel.context import Context
from edge.tunnel.drops import DropReason
from edge.tunnel.events import EndpointChanged, HandshakeCompleted
from edge.tunnel.inside import Buffer, Sender
from edge.tunnel.peer import HandshakeInput, PeerState, Sockaddr
from edge.tunnel.probe import FIRST_BYTE_LIMIT, Prober
from edge.tunnel.ratelimit import LoadMeter, SourceRateLimiter
from edge.tunnel.replay import Verdict
from edge.tunnel.session import Role, Session

# Initiations closer together than this from one peer are refused (protocol.md step 4).
MIN_INITIATION_INTERVAL: Final = 0.02
# The source-address cache (host string -> packed address) is cleared when this full.
_SOURCE_CACHE_LIMIT: Final = 4096
_EPHEMERAL_LEN: Final = wire.KEY_LEN

_OK: Final = Verdict.OK
_REPLAY_VERDICT: Final = Verdict.REPLAY
_MALFORMED: Final = DropReason.MALFORMED
_UNKNOWN_PEER: Final = DropReason.UNKNOWN_PEER
_DECRYPT_FAILED: Final = DropReason.DECRYPT_FAILED
_REPLAY: Final = DropReason.REPLAY
_TOO_OLD: Final = DropReason.TOO_OLD
_EXPIRED: Final = DropReason.EXPIRED_SESSION
_NOT_IP: Final = DropReason.NOT_IP
_BAD_INNER_SOURCE: Final = DropReason.BAD_INNER_SOURCE
_BAD_INNER_DESTINATION: Final = DropReason.BAD_INNER_DESTINATION
_OVERSIZE: Final = DropReason.OVERSIZE
_RATELIMITED: Final = DropReason.RATELIMITED
_MAX_ACCEPTED: Final = wire.MAX_ACCEPTED
_DATA_MIN_LEN: Final = wire.DATA_MIN_LEN
_OVERHEAD: Final = wire.OVERHEAD
_HEADER: Final = wire.DATA_HEADER_LEN
_TYPE_DATA: Final = wire.TYPE_DATA
_unpack_header: Final = wire.DATA_HEADER.unpack_from
_open_in_place: Final = crypto.open_in_place
_PROBE_FIRST_BYTE: Final = FIRST_BYTE_LIMIT
_data_authenticated: Final = timers.data_authenticated
_data_received: Final = timers.data_received


class Receiver:
    """The receiving half of a Tunnel; the map in use is `context.table`."""

    __slots__ = (
        "_context",
        "_cookies",
        "_drops",
        "_keepalive_timeout",
        "_limiter",
        "_load",
        "_mac1_key",
        "_out",
        "_probes",
        "_scratch",
        "_sender",
        "_sessions",
        "_sources",
    )

    def __init__(self, context: Context, *, sender: Sender, probes: Prober) -> None:
        self._context = context
        # Bound once: the hot path reaches them without a hop through the context.
        self._sessions = context.index.sessions
        self._drops = context.drops
        self._out = context.out
        self._keepalive_timeout = context.timers.keepalive_timeout
        self._sender = sender
        self._probes = probes
        self._mac1_key = cookie.mac1_key(context.static.public)
        self._cookies = cookie.CookieGenerator(context.static.public, context.random)
        self._limiter = SourceRateLimiter()
        self._load = LoadMeter()
        self._sources: dict[str, bytes] = {}
        self._scratch = bytearray(wire.MAX_ACCEPTED)

    # -- data: the hot path --------------------------------------------------------------

    def datagram(self, datagram: Buffer, addr: Sockaddr, now: float) -> bytes | None:
        """A datagram from `addr`: the packet for the TUN, or None. Never raises."""
        size = len(datagram)
        if size > _MAX_ACCEPTED:
            self._drops.add(_OVERSIZE)
            return None
        scratch = self._scratch
        scratch[:size] = datagram
        n = self.open_in_place(scratch, 0, size, addr, now)
        if n < 0:
            return None
        return bytes(scratch[_OVERHEAD : _OVERHEAD + n])

    def open_in_place(self, buf: bytearray, at: int, size: int, addr: Sockaddr, now: float) -> int:
        """The datagram buf[at : at + size] from `addr`: the length of the packet for the
        TUN, left at buf[at + OVERHEAD:], or -1 (nothing for the TUN). Never raises."""
        if size < _DATA_MIN_LEN or size > _MAX_ACCEPTED:
            if size > _MAX_ACCEPTED:
                self._drops.add(_OVERSIZE)
            else:
                self._handshake_message(memoryview(buf)[at : at + size], addr, now)
            return -1
        kind, index, counter = _unpack_header(buf, at)
        if kind != _TYPE_DATA:  # the type byte and three reserved zero bytes, as one word
            self._handshake_message(memoryview(buf)[at : at + size], addr, now)
            return -1
        session = self._sessions.get(index)
        if session is None:
            self._drops.add(_UNKNOWN_PEER)
            return -1
        if now >= session.reject_at:
            self._drops.add(_EXPIRED)
            return -1
        window = session.window
        verdict = window.check(counter)
        if verdict is not _OK:
            self._drops.add(_REPLAY if verdict is _REPLAY_VERDICT else _TOO_OLD)
            return -1
        n = _open_in_place(session.recv_key, counter, buf, at + _HEADER, size - _HEADER)
        if n < 0:
            self._drops.add(_DECRYPT_FAILED)
            return -1
        window.accept(counter)
        peer = session.peer
        _data_authenticated(peer, now)
        if addr != peer.endpoint:
            self._roam(peer, addr)  # first: a confirmed session's queue goes there
        if session is not peer.current and session is peer.next:
            self._confirm(peer, session, now)
        if not n:
            peer.rx_packets += 1  # a keepalive
            return -1
        start = at + _OVERHEAD
        parsed = ippacket.parse(memoryview(buf)[start : start + n])
        if parsed is None:
            if buf[start] < _PROBE_FIRST_BYTE:  # never IP: a probe or bad_probe
                self._probes.receive(peer, memoryview(buf)[start : start + n], now)
                return -1
            self._drops.add(_NOT_IP)
            return -1
        table = self._context.table
        route = table.owner(parsed[1])
        if route is None or route.peer is not peer:
            self._drops.add(_BAD_INNER_SOURCE)
            return -1
        route = table.owner(parsed[2])  # ForwardingTable.delivers, inlined
        if (route is None or not route.local) and parsed[2] not in table.addresses:
            self._drops.add(_BAD_INNER_DESTINATION)
            return -1
        _data_received(peer, now, n, self._keepalive_timeout)
        return n

    def _confirm(self, peer: PeerState, session: Session, now: float) -> None:
        """The first data packet on the responder's next session: it becomes current."""
        self._context.index.remove_sessions(peer.confirm(session))
        timers.handshake_complete(peer, now)
        self._context.events.append(HandshakeCompleted(peer.name, Role.RESPONDER))
        self._sender.flush(peer, now, keepalive=False)

    def _roam(self, peer: PeerState, addr: Sockaddr) -> None:
        endpoint = (addr[0], addr[1])
        if endpoint != peer.endpoint:
            peer.endpoint = endpoint
            self._context.events.append(EndpointChanged(peer.name, endpoint))

    # -- handshake messages --------------------------------------------------------------

    def _handshake_message(self, datagram: Buffer, addr: Sockaddr, now: float) -> None:
        try:
            kind = wire.message_type(datagram)
            message = bytes(datagram)
            if kind == wire.TYPE_INITIATION:
                self._initiation(message, addr, now)
            elif kind == wire.TYPE_RESPONSE:
                self._response(message, addr, now)
            elif kind == wire.TYPE_COOKIE_REPLY:
                self._cookie_reply(message, now)
            else:  # pragma: no cover - the data fast check takes every well-formed data packet
                self._drops.add(_MALFORMED)
        except wire.MalformedPacket:
            self._drops.add(_MALFORMED)

    def _source(self, host: str) -> bytes | None:
        """The packed address of `host`, cached; None when it is not an IP address."""
        packed = self._sources.get(host)
        if packed is None:
            try:
                packed = ipaddress.ip_address(host).packed
            except ValueError:
                return None
            if len(self._sources) >= _SOURCE_CACHE_LIMIT:
                self._sources.clear()
            self._sources[host] = packed
        return packed

    def _initiation(self, message: bytes, addr: Sockaddr, now: float) -> None:
        # Steps 1-3: no DH before they pass.
        if not handshake.verify_mac1(self._mac1_key, message, wire.INITIATION_MAC1_OFFSET):
            self._drops.add(_MALFORMED)
            return
        self._load.record(now)
        try:
            ip = self._source(addr[0])
            port = addr[1].to_bytes(2, "big")
        except (TypeError, AttributeError, IndexError, OverflowError):
            ip = None
        if ip is None:
            self._drops.add(_MALFORMED)
            return
        if not self._limiter.allow(ip, now):
            self._drops.add(_RATELIMITED)
            return
        initiation = wire.decode_initiation(message)
        if self._load.under_load(now):
            source = ip + port
            prefix = message[: wire.INITIATION_MAC2_OFFSET]
            if not self._cookies.valid_mac2(prefix, initiation.mac2, source, now):
                nonce, enc = self._cookies.seal_reply(
                    self._cookies.cookie_for(source, now), initiation.mac1
                )
                reply = wire.CookieReply(initiation.sender_index, nonce, enc)
                self._out.append((wire.encode_cookie_reply(reply), addr))
                self._drops.add(_RATELIMITED)
                return
        # Step 4.
        context = self._context
        consumed = handshake.consume_initiation(context.static, initiation)
        if consumed is None:
            self._drops.add(_DECRYPT_FAILED)
            return
        peer = context.table.by_key.get(consumed.peer_public)
        if peer is None:
            self._drops.add(_UNKNOWN_PEER)
            return
        if consumed.timestamp <= peer.last_timestamp:
            self._drops.add(_REPLAY)
            return
        last = peer.last_initiation_at
        if last is not None and now - last < MIN_INITIATION_INTERVAL:
            self._drops.add(_RATELIMITED)
            return
        # Step 5: respond; the session waits as next until I's first data packet.
        peer.last_timestamp = consumed.timestamp
        timers.initiation_accepted(peer, now)
        index = context.index.allocate()
        response, keys = handshake.create_response(
            context.static, consumed, index, context.random(_EPHEMERAL_LEN), peer.fresh_cookie(now)
        )
        session = Session(
            index=index,
            remote_index=consumed.sender_index,
            peer=peer,
            send_key=keys.send,
            recv_key=keys.recv,
            role=Role.RESPONDER,
            created=now,
            timers=context.timers,
        )
        context.index.remove_sessions(peer.install_responded(session))
        context.index.add_session(session)
        timers.handshake_received(peer, now)
        self._out.append((response, addr))  # to its source; the endpoint moves on its data
        timers.handshake_sent(peer, now)

    def _response(self, message: bytes, addr: Sockaddr, now: float) -> None:
        response = wire.decode_response(message)
        context = self._context
        peer = context.index.pending.get(response.receiver_index)
        pending = peer.pending if peer is not None else None
        if peer is None or pending is None:
            self._drops.add(_UNKNOWN_PEER)
            return
        if not handshake.verify_mac1(self._mac1_key, message, wire.RESPONSE_MAC1_OFFSET):
            self._drops.add(_MALFORMED)
            return
        self._load.record(now)
        keys = handshake.consume_response(context.static, pending.initiator, response)
        if keys is None:
            self._drops.add(_DECRYPT_FAILED)
            return
        session = Session(
            index=response.receiver_index,
            remote_index=response.sender_index,
            peer=peer,
            send_key=keys.send,
            recv_key=keys.recv,
            role=Role.INITIATOR,
            created=now,
            timers=context.timers,
        )
        peer.step(HandshakeInput.RESPONSE)
        context.index.remove_sessions(peer.install_initiated(session))
        context.index.add_session(session)  # takes the index over from the pending handshake
        timers.handshake_complete(peer, now)
        timers.handshake_received(peer, now)
        context.events.append(HandshakeCompleted(peer.name, Role.INITIATOR))
        self._roam(peer, addr)
        # Queued packets, or a keepalive, so the responder can confirm the session.
        self._sender.flush(peer, now, keepalive=True)

    def _cookie_reply(self, message: bytes, now: float) -> None:
        reply = wire.decode_cookie_reply(message)
        peer = self._context.index.pending.get(reply.receiver_index)
        pending = peer.pending if peer is not None else None
        if peer is None or pending is None:
            self._drops.add(_UNKNOWN_PEER)
            return
        value = cookie.open_reply(
            peer.public_key.raw, pending.initiator.mac1, reply.nonce, reply.enc_cookie
        )
        if value is None:
            self._drops.add(_DECRYPT_FAILED)
            return
        self._sender.cookie(peer, value, now)
