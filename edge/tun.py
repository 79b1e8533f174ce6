"""The TUN adapter around pytun-pmd3: raw IP packets in and out of the kernel.

Owns opening the device (IFF_TUN | IFF_NO_PI, nonblocking) and moving packets.
Addresses, MTU and link state are set through netlink in `edge.routes`, because
pytun's IPv4 setters do not work. Closing the device makes the kernel drop it
together with its addresses and routes.
"""

from __future__ import annotations

import os

from pytun_pmd3.linux import IFF_NO_PI, IFF_TUN, TunTapDevice

TUN_DEV = "/dev/net/tun"


class TunError(Exception):
    """The TUN device cannot be opened; the message says why and what to check."""


class Tun:
    """An open TUN device (implements edge.ports.TunDevice)."""

    def __init__(self, device: TunTapDevice) -> None:
        self._device = device
        self._fd: int = device.fileno()
        self._name: str = device.name
        self._closed = False

    @classmethod
    def open(cls, name: str) -> Tun:
        """Create the TUN device `name`, nonblocking.

        Raises:
            TunError: /dev/net/tun is missing, permission denied, or the name is taken.
        """
        try:
            device = TunTapDevice(name, IFF_TUN | IFF_NO_PI, TUN_DEV)
        except OSError as e:
            hint = {
                2: f"{TUN_DEV} is missing (load the tun module)",
                1: "needs root or CAP_NET_ADMIN",
                13: "needs root or CAP_NET_ADMIN",
                16: f"the interface {name!r} exists and is busy",
            }.get(e.errno or 0, e.strerror or str(e))
            raise TunError(f"cannot open TUN device {name!r}: {hint}") from None
        os.set_blocking(device.fileno(), False)
        return cls(device)

    @property
    def name(self) -> str:
        return self._name

    def fileno(self) -> int:
        return self._fd

    def readinto(self, buf: memoryview) -> int:
        return os.readv(self._fd, (buf,))

    def write(self, packet: bytes | memoryview) -> int:
        return os.write(self._fd, packet)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._device.close()
