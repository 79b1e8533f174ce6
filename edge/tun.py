"""The TUN adapter around pytun-pmd3: raw IP packets in and out of the kernel.

Owns opening the device (IFF_TUN | IFF_NO_PI, nonblocking) and moving packets. With
`offload` (the default) the device also has IFF_VNET_HDR: every read and write then starts
with the 10-byte virtio-net header (`edge.vnet`), and writes may be TCP (and UDP)
super-packets the kernel cuts; with `tso` too (TUNSETOFFLOAD CSUM, TSO4, TSO6) a read may
return a TCP super-packet of up to 64 KB for the data plane to cut into MTU-sized segments.
`udp_gso` says whether the kernel also takes UDP super-packets (GSO_UDP_L4) in writes. A
kernel that refuses the offloads gets a plain device.
Addresses, MTU and link state are set through netlink in `edge.routes`, because
pytun's IPv4 setters do not work. Closing the device makes the kernel drop it
together with its addresses and routes.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import struct

from pytun_pmd3.linux import IFF_NO_PI, IFF_TUN, IFF_VNET_HDR, TunTapDevice

from edge.vnet import VNET_HDR_LEN
from isthmus.logfmt import kv

TUN_DEV = "/dev/net/tun"
# <linux/if_tun.h>
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
SIOCGIFMTU = 0x8921  # <linux/sockios.h>
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_USO4 = 0x20
TUN_F_USO6 = 0x40
TSO_OFFLOADS = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6

_log = logging.getLogger(__name__)


class TunError(Exception):
    """The TUN device cannot be opened; the message says why and what to check."""


class Tun:
    """An open TUN device (implements edge.ports.TunDevice)."""

    def __init__(self, device: TunTapDevice, vnet_hdr: bool = False) -> None:
        self._device = device
        self._fd: int = device.fileno()
        self._name: str = device.name
        self._vnet_hdr = vnet_hdr
        self._udp_gso = False
        self._closed = False

    @classmethod
    def open(cls, name: str, offload: bool = True, tso: bool = False) -> Tun:
        """Create the TUN device `name`, nonblocking; with `offload`, with a virtio-net
        header (the data plane writes TCP and UDP super-packets, the kernel cuts them); with
        `tso` too, the kernel hands over TCP super-packets with partial checksums, which
        the data plane cuts and checksums itself. A kernel that refuses gets a plain device.

        `tso` is off by default: in Python, cutting and checksumming a segment costs about
        what the kernel's own segmentation plus one more read costs, and without it every
        packet read arrives with its checksum done in C (measured: equal TCP throughput,
        UDP 1392 B +40%; docs/design.md, "Data plane").

        Raises:
            TunError: /dev/net/tun is missing, permission denied, or the name is taken.
        """
        if offload:
            tun = cls._open(name, IFF_TUN | IFF_NO_PI | IFF_VNET_HDR)
            try:
                fcntl.ioctl(tun.fileno(), TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_LEN))
                fcntl.ioctl(tun.fileno(), TUNSETOFFLOAD, TSO_OFFLOADS)
            except OSError as e:
                _log.warning(kv("tun_offload_refused", tun=name, error=e.strerror))
                tun.close()
                return cls._open(name, IFF_TUN | IFF_NO_PI)
            tun._vnet_hdr = True
            # A kernel that knows UDP segmentation offload (Linux >= 6.2) takes GSO_UDP_L4
            # writes. The flags are only probed: with them set the kernel would also hand
            # over UDP super-packets, which the data plane does not cut.
            try:
                fcntl.ioctl(tun.fileno(), TUNSETOFFLOAD, TSO_OFFLOADS | TUN_F_USO4 | TUN_F_USO6)
                tun._udp_gso = True
            except OSError:
                pass
            fcntl.ioctl(tun.fileno(), TUNSETOFFLOAD, TSO_OFFLOADS if tso else 0)
            return tun
        return cls._open(name, IFF_TUN | IFF_NO_PI)

    @classmethod
    def _open(cls, name: str, flags: int) -> Tun:
        try:
            device = TunTapDevice(name, flags, TUN_DEV)
        except OSError as e:
            hint = {
                2: f"{TUN_DEV} is missing (load the tun module)",
                1: "needs root or CAP_NET_ADMIN",
                13: "needs root or CAP_NET_ADMIN",
                16: f"the interface {name!r} exists and is busy",
            }.get(e.errno or 0, e.strerror or str(e))
            raise TunError(f"cannot open TUN device {name!r}: {hint}") from None
        os.set_blocking(device.fileno(), False)
        return cls(device, vnet_hdr=False)

    @property
    def name(self) -> str:
        return self._name

    @property
    def vnet_hdr(self) -> bool:
        return self._vnet_hdr

    @property
    def udp_gso(self) -> bool:
        return self._udp_gso

    @property
    def mtu(self) -> int:
        request = struct.pack("16si", self._name.encode(), 0)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            reply = fcntl.ioctl(sock.fileno(), SIOCGIFMTU, request)
        mtu: int = struct.unpack_from("i", reply, 16)[0]
        return mtu

    def fileno(self) -> int:
        return self._fd

    def readinto(self, buf: memoryview) -> int:
        return os.readv(self._fd, (buf,))

    def write(self, packet: bytes | bytearray | memoryview) -> int:
        return os.write(self._fd, packet)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._device.close()
