"""UDP endpoints: an IP address and a port, written "ip:port" or "[ipv6]:port"."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
ENDPOINT_RULE = "'ip:port' or '[ipv6]:port' with a literal IP address and a port 1-65535"


@dataclass(frozen=True, slots=True, order=True)
class Endpoint:
    """A UDP endpoint."""

    ip: IPAddress
    port: int

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is out of range 1-65535")

    @classmethod
    def parse(cls, text: object, *, allow_port_zero: bool = False) -> Endpoint:
        """Parse "ip:port" or "[ipv6]:port".

        Raises:
            ValueError: the message quotes the text and says what is allowed.
        """
        if not isinstance(text, str):
            raise ValueError(f"{text!r} is not an endpoint: use {ENDPOINT_RULE}")
        host, sep, port_text = text.rpartition(":")
        if not sep or not port_text.isdigit():
            raise ValueError(f"{text!r} is not an endpoint: use {ENDPOINT_RULE}")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{text!r} is not an endpoint: use {ENDPOINT_RULE}") from None
        port = int(port_text)
        if allow_port_zero and port == 0:
            return _zero_port(ip)
        if not 1 <= port <= 65535:
            raise ValueError(f"{text!r} is not an endpoint: use {ENDPOINT_RULE}")
        return cls(ip, port)

    def sockaddr(self) -> tuple[str, int]:
        """The (host, port) tuple sockets take."""
        return (str(self.ip), self.port)

    def __str__(self) -> str:
        return format_sockaddr(self.ip, self.port)


def format_sockaddr(host: str | IPAddress, port: int) -> str:
    """The one text form of an endpoint: "ip:port", or "[ipv6]:port" (an IPv6 host is the
    one with a colon)."""
    text = str(host)
    return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"


def _zero_port(ip: IPAddress) -> Endpoint:
    # Port 0 ("pick a free port") is only meaningful for a listen address.
    ep = object.__new__(Endpoint)
    object.__setattr__(ep, "ip", ip)
    object.__setattr__(ep, "port", 0)
    return ep
