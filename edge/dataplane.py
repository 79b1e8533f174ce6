"""The data path shell: moves packets between the TUN, the tunnel core and the UDP socket.

Owns the readers on the event loop and the core's one timer, nothing else: no protocol
decisions here, the core decides. Each wakeup drains up to BATCH packets into a
preallocated buffer, so a busy side cannot starve the other, and leaves the rest for the
next wakeup (the readers are level-triggered). After each batch and each timer it sends
the core's side output (handshakes, cookie replies, keepalives, queued packets), logs its
events and re-arms the timer at the core's next deadline. Must never raise out of a
reader callback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from edge.ports import DatagramSocket, TunDevice
from edge.tunnel import (
    DropReason,
    EndpointChanged,
    HandshakeCompleted,
    HandshakeFailed,
    SessionExpired,
    Tunnel,
    TunnelEvent,
)
from isthmus.logfmt import kv

BATCH = 64
BUFFER_BYTES = 65535

_log = logging.getLogger(__name__)


class Dataplane:
    """Packets TUN -> core.inside -> UDP, and UDP -> core.outside -> TUN."""

    def __init__(
        self,
        tunnel: Tunnel,
        tun: TunDevice,
        udp: DatagramSocket,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tunnel = tunnel
        self._tun = tun
        self._udp = udp
        self._clock = clock
        self._tun_view = memoryview(bytearray(BUFFER_BYTES))
        self._udp_view = memoryview(bytearray(BUFFER_BYTES))
        self.tun_write_errors = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: float | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start watching both file descriptors and the core's timer on `loop`."""
        self._loop = loop
        loop.add_reader(self._tun.fileno(), self.on_tun_readable)
        loop.add_reader(self._udp.fileno(), self.on_udp_readable)
        self.after_input()

    def stop(self) -> None:
        """Stop watching; idempotent."""
        if self._loop is not None:
            self._loop.remove_reader(self._tun.fileno())
            self._loop.remove_reader(self._udp.fileno())
            self._loop = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._deadline = None

    def on_tun_readable(self) -> None:
        """Drain packets from the TUN, seal each and send it to its peer."""
        tunnel, tun, udp, view = self._tunnel, self._tun, self._udp, self._tun_view
        now = self._clock()
        for _ in range(BATCH):
            try:
                n = tun.readinto(view)
            except OSError:  # BlockingIOError: drained
                break
            out = tunnel.inside(view[:n], now)
            if out is not None and not udp.send(out[0], out[1]):
                tunnel.count_drop(DropReason.SEND_FAILED)
        self.after_input()

    def on_udp_readable(self) -> None:
        """Drain datagrams from the socket, open each and write its packet to the TUN."""
        tunnel, tun, udp, view = self._tunnel, self._tun, self._udp, self._udp_view
        now = self._clock()
        for _ in range(BATCH):
            got = udp.recv_into(view)
            if got is None:
                break
            n, addr = got
            packet = tunnel.outside(view[:n], addr, now)
            if packet is not None:
                try:
                    tun.write(packet)
                except OSError:
                    self.tun_write_errors += 1
        self.after_input()

    def on_timer(self) -> None:
        """The core's deadline passed: let it fire what is due."""
        self._timer = None
        self._deadline = None
        self._tunnel.handle_timer(self._clock())
        self.after_input()

    def after_input(self) -> None:
        """Send the core's side output, log its events, re-arm its timer."""
        tunnel, udp = self._tunnel, self._udp
        for datagram, addr in tunnel.datagrams_to_send():
            if not udp.send(datagram, addr):
                tunnel.count_drop(DropReason.SEND_FAILED)
        while (event := tunnel.next_event()) is not None:
            log_event(event)
        self._arm(tunnel.get_timer())

    def _arm(self, deadline: float | None) -> None:
        if deadline == self._deadline or self._loop is None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._deadline = deadline
        if deadline is not None:
            delay = max(0.0, deadline - self._clock())
            self._timer = self._loop.call_later(delay, self.on_timer)


def log_event(event: TunnelEvent) -> None:
    """One log line per core event."""
    match event:
        case HandshakeCompleted(peer=peer, role=role):
            _log.info(kv("handshake_completed", peer=peer, role=role.value))
        case SessionExpired(peer=peer):
            _log.info(kv("session_expired", peer=peer))
        case EndpointChanged(peer=peer, endpoint=(host, port)):
            shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            _log.info(kv("endpoint_changed", peer=peer, endpoint=shown))
        case HandshakeFailed(peer=peer):
            _log.warning(kv("handshake_failed", peer=peer, detail="no answer; packets dropped"))
