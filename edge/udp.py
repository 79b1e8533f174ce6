"""The UDP adapter: the one nonblocking socket every tunnel packet goes through.

Owns binding the listen address and the family details: an IPv6 socket sees IPv4
peers as ::ffff:a.b.c.d, which is turned back into a.b.c.d (and the other way on
send), so the tunnel core only ever sees plain (ip, port) pairs. Never raises
OSError on send or receive: a refusal is reported as False or None.

Offloads: UDP_GRO on receive (`recv_segments_into` gets a run of datagrams from one sender
in one call, with their segment size) and UDP_SEGMENT on send (`send_segments` hands the
kernel a run of datagrams in one call; each still leaves as its own datagram of at most
the segment size, so GSO never makes a datagram larger or fragments it). A kernel without
them gets one datagram per call, the same bytes on the wire.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import struct
import sys

from edge.ports import SockAddr
from isthmus.endpoint import Endpoint, format_sockaddr
from isthmus.logfmt import kv

BUFFER_BYTES = 4 * 1024 * 1024
# <linux/udp.h>
SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
# The kernel takes at most this many segments in one UDP_SEGMENT send (UDP_MAX_SEGMENTS)
# and at most a 64 KB UDP payload in all.
MAX_SEGMENTS = 64
MAX_GSO_BYTES = 65000
_CMSG_SPACE = socket.CMSG_SPACE(4)
_GSO_SIZE = struct.Struct("=H")
_ORDER = sys.byteorder
_RETRYABLE = (errno.EAGAIN, errno.ENOBUFS, errno.ECONNREFUSED, errno.EHOSTUNREACH)

_log = logging.getLogger(__name__)


class UdpSocket:
    """A bound UDP socket (implements edge.ports.DatagramSocket)."""

    def __init__(self, sock: socket.socket, gso: bool = False, gro: bool = False) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self._v6 = sock.family == socket.AF_INET6
        self.gso = gso
        self.gro = gro
        self._cmsgs: dict[int, list[tuple[int, int, bytes]]] = {}

    @classmethod
    def bind(cls, listen: Endpoint, offload: bool = True) -> UdpSocket:
        """Bind `listen` (port 0 = any free port), nonblocking, with 4 MiB buffers; with
        `offload`, UDP GRO and GSO where the kernel has them.

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
        gro = gso = False
        if offload:
            try:
                sock.setsockopt(SOL_UDP, UDP_GRO, 1)
                gro = True
            except OSError as e:
                _log.warning(kv("udp_gro_not_set", error=e.strerror))
            try:  # probe: a zero segment size is valid and means "per sendmsg"
                sock.setsockopt(SOL_UDP, UDP_SEGMENT, 0)
                gso = True
            except OSError as e:
                _log.warning(kv("udp_gso_not_set", error=e.strerror))
        return cls(sock, gso=gso, gro=gro)

    def local_address(self) -> str:
        """The bound "ip:port" (shows the port the kernel picked for port 0)."""
        host, port = self._sock.getsockname()[:2]
        return format_sockaddr(host, port)

    def fileno(self) -> int:
        return self._fd

    def _from_socket(self, addr: tuple[str, int]) -> SockAddr:
        """A peer address as the core sees it: an IPv4-mapped ::ffff:a.b.c.d is a.b.c.d."""
        host: str = addr[0]
        if self._v6 and host.startswith("::ffff:"):
            mapped = ipaddress.IPv6Address(host).ipv4_mapped
            if mapped is not None:
                host = str(mapped)
        return host, int(addr[1])

    def _to_socket(self, addr: SockAddr) -> tuple[str, int]:
        """A core address as this socket takes it: on an IPv6 socket a.b.c.d is mapped."""
        host = addr[0]
        if self._v6 and ":" not in host:
            host = "::ffff:" + host
        return host, addr[1]

    def recv_into(self, buf: memoryview) -> tuple[int, SockAddr] | None:
        try:
            n, addr = self._sock.recvfrom_into(buf)
        except OSError:
            # EAGAIN: drained. Anything else (a queued ICMP error) consumed one error;
            # the loop calls us again while data is pending.
            return None
        return n, self._from_socket(addr)

    def recv_segments_into(self, buf: memoryview) -> tuple[int, SockAddr, int] | None:
        if not self.gro:
            got = self.recv_into(buf)
            return None if got is None else (got[0], got[1], got[0])
        try:
            n, ancdata, _, addr = self._sock.recvmsg_into((buf,), _CMSG_SPACE)
        except OSError:
            return None
        segment = n
        for level, kind, data in ancdata:
            if level == SOL_UDP and kind == UDP_GRO:
                segment = int.from_bytes(data[:4], _ORDER) or n
        return n, self._from_socket(addr), segment

    def send_segments(self, buf: memoryview, segment: int, addr: SockAddr) -> bool:
        total = len(buf)
        if total <= segment:
            return self.send(buf, addr)
        target = self._to_socket(addr)
        if self.gso and segment <= MAX_GSO_BYTES:
            cmsg = self._cmsgs.get(segment)
            if cmsg is None:
                cmsg = self._cmsgs[segment] = [(SOL_UDP, UDP_SEGMENT, _GSO_SIZE.pack(segment))]
            per_call = min(MAX_SEGMENTS, MAX_GSO_BYTES // segment) * segment
            sock = self._sock
            ok = True
            for start in range(0, total, per_call):
                part = buf[start : start + per_call]
                try:
                    if len(part) > segment:
                        sock.sendmsg((part,), cmsg, 0, target)
                    else:
                        sock.sendto(part, target)
                except OSError as e:
                    if e.errno in _RETRYABLE:
                        ok = False
                        continue
                    if e.errno == errno.EMSGSIZE:
                        # The datagrams are larger than the path MTU the kernel holds for
                        # this peer (a GSO send never fragments): send them one by one,
                        # as any UDP sender would, and keep GSO for the next run.
                        ok = self._send_each(part, segment, target) and ok
                        continue
                    # Either the destination is refused (then each datagram fails on its
                    # own too) or the kernel refuses GSO itself (no checksum offload on
                    # the route, an old kernel): only then is it one datagram per call
                    # from now on.
                    if not self._send_each(part, segment, target):
                        ok = False
                        continue
                    _log.warning(kv("udp_gso_disabled", error=e.strerror))
                    self.gso = False
                    return self._send_each(buf[start + per_call :], segment, target) and ok
            return ok
        return self._send_each(buf, segment, target)

    def _send_each(self, buf: memoryview, segment: int, target: tuple[str, int]) -> bool:
        ok = True
        sendto = self._sock.sendto
        for start in range(0, len(buf), segment):
            try:
                sendto(buf[start : start + segment], target)
            except OSError:
                ok = False
        return ok

    def send(self, datagram: bytes | memoryview, addr: SockAddr) -> bool:
        try:
            self._sock.sendto(datagram, self._to_socket(addr))
        except OSError:
            return False
        return True

    def close(self) -> None:
        self._sock.close()
