"""The host's own addresses, for admission's overlay check when the controller listens on a
wildcard (0.0.0.0 or ::) and the config names no `addresses`.

Owns reading every address of the host's interfaces (netlink, pyroute2) once; the process
root (controller.__main__) calls it at start and on reload and hands the result to the
pure core as data (`ControllerConfig.addresses`). Never called on a hot path.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from controller.config import ControllerConfig
from isthmus.endpoint import IPAddress


def host_addresses() -> tuple[IPAddress, ...]:
    """Every address of the host's interfaces (this network namespace), sorted, each once.

    Raises:
        OSError: netlink cannot be read; the message says to set `addresses` instead.
    """
    found: set[IPAddress] = set()
    try:
        with IPRoute() as ipr:
            for msg in ipr.get_addr():
                text = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
                if isinstance(text, str):
                    found.add(ipaddress.ip_address(text.split("%", 1)[0]))
    except (OSError, NetlinkError) as e:
        raise OSError(
            f"cannot read the host's addresses ({e}); with a wildcard listen, admission needs "
            "them: set `addresses` in the controller config"
        ) from None
    return tuple(sorted(found, key=lambda ip: (ip.version, int(ip))))


def with_host_addresses(config: ControllerConfig) -> ControllerConfig:
    """`config`, with the host's addresses as `addresses` when it listens on a wildcard
    and names none itself; else `config` unchanged."""
    if config.addresses or not config.listen.ip.is_unspecified:
        return config
    return replace(config, addresses=host_addresses())
