"""The data path shell: moves packets between the TUN, the tunnel core and the UDP socket.

Owns the readers on the event loop and nothing else: no protocol decisions here, the
core decides. Each wakeup drains up to BATCH packets into a preallocated buffer, so a
busy side cannot starve the other, and leaves the rest for the next wakeup (the
readers are level-triggered). Must never raise out of a reader callback.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from edge.ports import DatagramSocket, TunDevice
from edge.tunnel import DropReason, Tunnel

BATCH = 64
BUFFER_BYTES = 65535


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

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start watching both file descriptors on `loop`."""
        self._loop = loop
        loop.add_reader(self._tun.fileno(), self.on_tun_readable)
        loop.add_reader(self._udp.fileno(), self.on_udp_readable)

    def stop(self) -> None:
        """Stop watching; idempotent."""
        if self._loop is not None:
            self._loop.remove_reader(self._tun.fileno())
            self._loop.remove_reader(self._udp.fileno())
            self._loop = None

    def on_tun_readable(self) -> None:
        """Drain packets from the TUN, seal each and send it to its peer."""
        tunnel, tun, udp, view = self._tunnel, self._tun, self._udp, self._tun_view
        now = self._clock()
        for _ in range(BATCH):
            try:
                n = tun.readinto(view)
            except OSError:  # BlockingIOError: drained
                return
            out = tunnel.inside(view[:n], now)
            if out is not None and not udp.send(out[0], out[1]):
                tunnel.count_drop(DropReason.SEND_FAILED)

    def on_udp_readable(self) -> None:
        """Drain datagrams from the socket, open each and write its packet to the TUN."""
        tunnel, tun, udp, view = self._tunnel, self._tun, self._udp, self._udp_view
        now = self._clock()
        for _ in range(BATCH):
            got = udp.recv_into(view)
            if got is None:
                return
            n, addr = got
            packet = tunnel.outside(view[:n], addr, now)
            if packet is not None:
                try:
                    tun.write(packet)
                except OSError:
                    self.tun_write_errors += 1
