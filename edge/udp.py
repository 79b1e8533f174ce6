"""The UDP adapter: the one nonblocking socket every tunnel packet goes through.

Owns binding the listen address and the family details: an IPv6 socket sees IPv4
peers as ::ffff:a.b.c.d, which is turned back into a.b.c.d (and the other way on
send), so the tunnel core only ever sees plain (ip, port) pairs. Never raises
OSError on send or receive: a refusal is reported as False or None.
"""

from __future__ import annotations

import ipaddress
import logging
import socket

from edge.ports import SockAddr
from isthmus.endpoint import Endpoint
from isthmus.logfmt import kv

BUFFER_BYTES = 4 * 1024 * 1024

_log = logging.getLogger(__name__)


class UdpSocket:
    """A bound UDP socket (implements edge.ports.DatagramSocket)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self._v6 = sock.family == socket.AF_INET6

    @classmethod
    def bind(cls, listen: Endpoint) -> UdpSocket:
        """Bind `listen` (port 0 = any free port), nonblocking, with 4 MiB buffers.

        Raises:
            OSError: the address cannot be bound (in use, not local).
        """
        family = socket.AF_INET6 if listen.ip.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                # Dual stack when bound to ::, so IPv4 peers can reach us too.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, opt, BUFFER_BYTES)
                except OSError as e:
                    _log.warning(kv("udp_buffer_not_set", option=opt, error=e.strerror))
            sock.bind(listen.sockaddr())
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return cls(sock)

    def local_address(self) -> str:
        """The bound "ip:port" (shows the port the kernel picked for port 0)."""
        host, port = self._sock.getsockname()[:2]
        return f"[{host}]:{port}" if self._v6 else f"{host}:{port}"

    def fileno(self) -> int:
        return self._fd

    def recv_into(self, buf: memoryview) -> tuple[int, SockAddr] | None:
        try:
            n, addr = self._sock.recvfrom_into(buf)
        except OSError:
            # EAGAIN: drained. Anything else (a queued ICMP error) consumed one error;
            # the loop calls us again while data is pending.
            return None
        host: str = addr[0]
        if self._v6 and host.startswith("::ffff:"):
            mapped = ipaddress.IPv6Address(host).ipv4_mapped
            if mapped is not None:
                host = str(mapped)
        return n, (host, int(addr[1]))

    def send(self, datagram: bytes, addr: SockAddr) -> bool:
        host = addr[0]
        if self._v6 and ":" not in host:
            host = "::ffff:" + host
        try:
            self._sock.sendto(datagram, (host, addr[1]))
        except OSError:
            return False
        return True

    def close(self) -> None:
        self._sock.close()
