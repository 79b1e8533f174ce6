"""The overlays under test, one class each: plain underlay, isthmus, wireguard-go, nebula, tinc.

Each runs on the two gateways of `topology.Sites` and routes each site's subnet to the
other through itself, so every overlay carries the same host-to-host traffic:
`setup(lab, sites, workdir)` starts it and returns once host a reaches host b through it,
`pids()` are the processes whose CPU is charged to it (both sites' data-plane processes;
the isthmus controller is control plane, idle while measuring, and not charged), and
`teardown()` stops those processes by PID (their tunnel devices and routes go with them).

Rules: every process is started through `Lab.spawn` (so the lab ends it even after a
failure), every name an overlay creates outside its namespaces (wireguard-go's UAPI socket
in /var/run/wireguard) carries the lab's unique prefix, and the peers run with their
packaged defaults apart from the MTU. `ensure_installed` apt-installs missing peers.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import ClassVar, Protocol

from isthmus.routemap import ROUTE_PROTO
from isthmus_lab.netns import Lab, LabError, Process, host_run
from perf.harness.topology import OVERLAY_MTU, UNDERLAY_IF, Site, Sites, reachable, wait_until

SETUP_TIMEOUT = 30.0
OVERLAY_PREFIXLEN = 24


class Overlay(Protocol):
    name: ClassVar[str]
    # tool -> Debian package that provides it
    tools: ClassVar[dict[str, str]]

    def setup(self, lab: Lab, sites: Sites, workdir: Path) -> None: ...

    def pids(self) -> tuple[int, ...]: ...

    def teardown(self) -> None: ...


def _short(lab: Lab) -> str:
    """The lab's unique 6 hex digits, for names outside the namespaces."""
    return lab.prefix.removeprefix("ism").rstrip("-")


def _stop(processes: list[Process]) -> None:
    for process in processes:
        process.stop()
    processes.clear()


class _Daemons:
    """An overlay run by daemons of its own, one or more per gateway: all of them are
    charged CPU and stopped at teardown."""

    def __init__(self) -> None:
        self._processes: list[Process] = []

    def pids(self) -> tuple[int, ...]:
        return tuple(process.pid for process in self._processes)

    def teardown(self) -> None:
        _stop(self._processes)


class Plain:
    """The plain underlay: each gateway routes the other site's subnet via the underlay."""

    name: ClassVar[str] = "plain"
    tools: ClassVar[dict[str, str]] = {}

    def __init__(self) -> None:
        self._routes: list[tuple[Lab, str, str]] = []

    def setup(self, lab: Lab, sites: Sites, workdir: Path) -> None:
        for site in sites.both:
            other = sites.other(site)
            lab.add_route(site.gateway_ns, other.subnet, via=other.underlay_ip)
            self._routes.append((lab, site.gateway_ns, other.subnet))
        reachable(lab, sites)

    def pids(self) -> tuple[int, ...]:
        return ()

    def teardown(self) -> None:
        for lab, ns, subnet in self._routes:
            lab.ip(ns, "route", "del", subnet)
        self._routes.clear()


class Isthmus:
    """A controller on gateway a (listening on its underlay address) and an edge per site,
    `python -m isthmus controller|edge --config FILE`; ready once each gateway has the other
    site's route with protocol 149."""

    name: ClassVar[str] = "isthmus"
    tools: ClassVar[dict[str, str]] = {}
    controller_port = 7000
    udp_port = 51820

    def __init__(self) -> None:
        self._processes: list[Process] = []
        self._edges: list[Process] = []

    def setup(self, lab: Lab, sites: Sites, workdir: Path) -> None:
        isthmus = (sys.executable, "-m", "isthmus")
        controller_dir = workdir / "controller"
        controller_dir.mkdir(parents=True, exist_ok=True)
        signing_key = controller_dir / "controller.key"
        controller_public = _keygen([*isthmus, "keygen", "--controller", "--out", str(signing_key)])
        listen = f"{sites.a.underlay_ip}:{self.controller_port}"
        public_keys: dict[str, str] = {}
        for site in sites.both:
            edge_dir = workdir / f"edge-{site.name}"
            edge_dir.mkdir(parents=True, exist_ok=True)
            key = edge_dir / "private.key"
            public_keys[site.name] = _keygen([*isthmus, "keygen", "--out", str(key)])
            tun_address = site.subnet.replace(".0.0/16", ".255.254/32")
            (edge_dir / "edge.toml").write_text(
                "\n".join(
                    [
                        f"name = {_s('site-' + site.name)}",
                        f"private_key_file = {_s(str(key))}",
                        f"controller = {_s(listen)}",
                        f"controller_public_key = {_s(controller_public)}",
                        f"listen = {_s(f'0.0.0.0:{self.udp_port}')}",
                        f"endpoint = {_s(f'{site.underlay_ip}:{self.udp_port}')}",
                        f"routes = [{_s(site.subnet)}]",
                        f"state_dir = {_s(str(edge_dir / 'state'))}",
                        f"admin_socket = {_s(str(edge_dir / 'admin.sock'))}",
                        "",
                        "[tun]",
                        f"name = {_s('isthmus0')}",
                        f"address = {_s(tun_address)}",
                        f"mtu = {OVERLAY_MTU}",
                        "",
                    ]
                ),
                encoding="utf-8",
            )
        lines = [
            f"listen = {_s(listen)}",
            f"state_dir = {_s(str(controller_dir / 'state'))}",
            f"signing_key_file = {_s(str(signing_key))}",
            f"admin_socket = {_s(str(controller_dir / 'admin.sock'))}",
        ]
        for site in sites.both:
            lines += [
                "",
                "[[edges]]",
                f"name = {_s('site-' + site.name)}",
                f"public_key = {_s(public_keys[site.name])}",
                f"routes = [{_s(site.subnet)}]",
            ]
        config = controller_dir / "controller.toml"
        config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self._processes.append(
            lab.spawn(
                sites.a.gateway_ns,
                [*isthmus, "controller", "--config", str(config)],
                controller_dir / "controller.log",
            )
        )
        for site in sites.both:
            edge_dir = workdir / f"edge-{site.name}"
            edge = lab.spawn(
                site.gateway_ns,
                [*isthmus, "edge", "--config", str(edge_dir / "edge.toml")],
                edge_dir / "edge.log",
            )
            self._processes.append(edge)
            self._edges.append(edge)
        for site in sites.both:
            self._wait_route(lab, site, sites.other(site).subnet)
        reachable(lab, sites)

    def _wait_route(self, lab: Lab, site: Site, subnet: str) -> None:
        def installed() -> bool:
            _check_alive(self._processes)
            text = lab.ip(site.gateway_ns, "route", "show", "proto", str(ROUTE_PROTO))
            return any(line.split()[:1] == [subnet] for line in text.splitlines())

        wait_until(installed, SETUP_TIMEOUT, f"gateway {site.name} has route {subnet} (proto 149)")

    def pids(self) -> tuple[int, ...]:
        return tuple(edge.pid for edge in self._edges)

    def teardown(self) -> None:
        self._edges.clear()
        _stop(self._processes)


class WireguardGo(_Daemons):
    """`wireguard-go -f wg<hex><site>` per gateway, configured with `wg set` and `ip`."""

    name: ClassVar[str] = "wireguard_go"
    tools: ClassVar[dict[str, str]] = {"wireguard-go": "wireguard-go", "wg": "wireguard-tools"}
    port = 51820

    def __init__(self) -> None:
        super().__init__()
        self._sockets: list[Path] = []

    def setup(self, lab: Lab, sites: Sites, workdir: Path) -> None:
        names = {site.name: f"wg{_short(lab)}{site.name}" for site in sites.both}
        self._sockets = [Path(f"/var/run/wireguard/{name}.sock") for name in names.values()]
        public: dict[str, str] = {}
        for site in sites.both:
            private = host_run(["wg", "genkey"]).stdout.strip()
            key_file = workdir / f"wg-{site.name}.key"
            key_file.write_text(private + "\n", encoding="utf-8")
            key_file.chmod(0o600)
            public[site.name] = host_run(["wg", "pubkey"], input=private + "\n").stdout.strip()
        env = {"WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1", "LOG_LEVEL": "error"}
        for site in sites.both:
            ifname = names[site.name]
            self._processes.append(
                lab.spawn(
                    site.gateway_ns,
                    ["wireguard-go", "-f", ifname],
                    workdir / f"wireguard-go-{site.name}.log",
                    env=env,
                )
            )
            wait_until(
                functools.partial(_wireguard_up, lab, site.gateway_ns, ifname, self._processes),
                SETUP_TIMEOUT,
                f"wireguard-go device {ifname} in gateway {site.name}",
            )
        for site in sites.both:
            other = sites.other(site)
            ifname = names[site.name]
            lab.run(
                site.gateway_ns,
                [
                    "wg", "set", ifname,
                    "private-key", str(workdir / f"wg-{site.name}.key"),
                    "listen-port", str(self.port),
                    "peer", public[other.name],
                    "endpoint", f"{other.underlay_ip}:{self.port}",
                    "allowed-ips", f"{other.subnet},{other.overlay_ip}/32",
                ],
            )  # fmt: skip
            lab.add_address(site.gateway_ns, ifname, f"{site.overlay_ip}/{OVERLAY_PREFIXLEN}")
            lab.ip(site.gateway_ns, "link", "set", ifname, "mtu", str(OVERLAY_MTU), "up")
            lab.add_route(site.gateway_ns, other.subnet, dev=ifname)
        reachable(lab, sites)

    def teardown(self) -> None:
        super().teardown()
        for socket in self._sockets:  # left behind only if wireguard-go was killed
            socket.unlink(missing_ok=True)


class Nebula(_Daemons):
    """A CA and a certificate per gateway (its nebula IP, its site's subnet as an unsafe
    subnet) from `nebula-cert`; two lighthouse-free nodes that know each other through
    `static_host_map` and route the other site's subnet as an unsafe route."""

    name: ClassVar[str] = "nebula"
    tools: ClassVar[dict[str, str]] = {"nebula": "nebula", "nebula-cert": "nebula"}
    port = 4242

    def setup(self, lab: Lab, sites: Sites, workdir: Path) -> None:
        ca_crt, ca_key = workdir / "nebula-ca.crt", workdir / "nebula-ca.key"
        ca = ["nebula-cert", "ca", "-name", "bench", "-out-crt", str(ca_crt)]
        host_run([*ca, "-out-key", str(ca_key)])
        for site in sites.both:
            other = sites.other(site)
            crt, key = workdir / f"nebula-{site.name}.crt", workdir / f"nebula-{site.name}.key"
            host_run(
                [
                    "nebula-cert", "sign", "-name", f"site-{site.name}",
                    "-ip", f"{site.overlay_ip}/{OVERLAY_PREFIXLEN}", "-subnets", site.subnet,
                    "-ca-crt", str(ca_crt), "-ca-key", str(ca_key),
                    "-out-crt", str(crt), "-out-key", str(key),
                ]
            )  # fmt: skip
            ifname = f"nb{_short(lab)}{site.name}"
            anything = [{"port": "any", "proto": "any", "host": "any"}]
            config = {
                "pki": {"ca": str(ca_crt), "cert": str(crt), "key": str(key)},
                "static_host_map": {other.overlay_ip: [f"{other.underlay_ip}:{self.port}"]},
                "lighthouse": {"am_lighthouse": False, "hosts": []},
                "listen": {"host": "0.0.0.0", "port": self.port},
                "punchy": {"punch": False},
                "tun": {
                    "disabled": False,
                    "dev": ifname,
                    "mtu": OVERLAY_MTU,
                    "unsafe_routes": [{"route": other.subnet, "via": other.overlay_ip}],
                },
                "logging": {"level": "warning", "format": "text"},
                "firewall": {"outbound": anything, "inbound": anything},
            }
            path = workdir / f"nebula-{site.name}.yml"
            path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")  # JSON is YAML
            self._processes.append(
                lab.spawn(
                    site.gateway_ns,
                    ["nebula", "-config", str(path)],
                    workdir / f"nebula-{site.name}.log",
                )
            )
        for site in sites.both:
            _wait_route_via_device(lab, site, sites.other(site).subnet, self._processes)
        reachable(lab, sites)


class Tinc(_Daemons):
    """tinc 1.0 in router mode, one node per gateway: `Subnet =` the site's subnet, gateway
    a connects to b over the underlay; `tinc-up` sets the MTU and routes the other site."""

    name: ClassVar[str] = "tinc"
    tools: ClassVar[dict[str, str]] = {"tincd": "tinc"}
    port = 655

    def setup(self, lab: Lab, sites: Sites, workdir: Path) -> None:
        confs = {site.name: workdir / f"tinc-{site.name}" for site in sites.both}
        for site in sites.both:
            other = sites.other(site)
            conf = confs[site.name]
            (conf / "hosts").mkdir(parents=True, exist_ok=True)
            lines = [
                f"Name = site{site.name}",
                "Mode = router",
                f"Interface = tc{_short(lab)}{site.name}",
                "Device = /dev/net/tun",
                "AddressFamily = ipv4",
                f"Port = {self.port}",
            ]
            if site.name == sites.a.name:
                lines.append(f"ConnectTo = site{other.name}")
            (conf / "tinc.conf").write_text("\n".join(lines) + "\n", encoding="utf-8")
            (conf / "hosts" / f"site{site.name}").write_text(
                f"Address = {site.underlay_ip}\nPort = {self.port}\nSubnet = {site.subnet}\n",
                encoding="utf-8",
            )
            up = conf / "tinc-up"
            up.write_text(
                "#!/bin/sh\n"
                f'ip link set "$INTERFACE" mtu {OVERLAY_MTU} up\n'
                f'ip address add {site.overlay_ip}/32 dev "$INTERFACE"\n'
                f'ip route add {other.subnet} dev "$INTERFACE"\n',
                encoding="utf-8",
            )
            up.chmod(0o755)
            host_run(["tincd", "-c", str(conf), "-K", "2048"], timeout=120.0)
        for site in sites.both:
            other = sites.other(site)
            host = f"site{other.name}"
            shutil.copy(confs[other.name] / "hosts" / host, confs[site.name] / "hosts" / host)
        for site in sites.both:
            conf = confs[site.name]
            self._processes.append(
                lab.spawn(
                    site.gateway_ns,
                    ["tincd", "-c", str(conf), "-D", f"--pidfile={conf / 'tinc.pid'}"],
                    workdir / f"tinc-{site.name}.log",
                )
            )
        for site in sites.both:
            _wait_route_via_device(lab, site, sites.other(site).subnet, self._processes)
        reachable(lab, sites)


OVERLAYS: dict[str, type[Plain | Isthmus | WireguardGo | Nebula | Tinc]] = {
    cls.name: cls for cls in (Plain, Isthmus, WireguardGo, Nebula, Tinc)
}
PEERS = ("wireguard_go", "nebula", "tinc")


def missing_packages(names: list[str]) -> list[str]:
    """The Debian packages the named overlays need whose tools are not on PATH."""
    wanted: list[str] = []
    for name in names:
        for tool, package in OVERLAYS[name].tools.items():
            if shutil.which(tool) is None and package not in wanted:
                wanted.append(package)
    return wanted


def ensure_installed(names: list[str], log: Path) -> None:
    """apt-get install (no recommends) the peers' packages that are missing.

    Raises:
        LabError: apt-get failed; names the packages and points at `log`.
    """
    packages = missing_packages(names)
    if not packages:
        return
    with open(log, "ab") as out:
        for argv in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        ):
            done = subprocess.run(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                check=False,
            )
            if done.returncode != 0:
                raise LabError(
                    f"'{' '.join(argv)}' exited {done.returncode} installing "
                    f"{', '.join(packages)}; see {log}"
                )


def _keygen(argv: list[str]) -> str:
    words = host_run(argv).stdout.split()
    if not words:
        raise LabError(f"'{' '.join(argv)}' printed no public key")
    return words[-1]


def _has_link(lab: Lab, ns: str, ifname: str) -> bool:
    return lab.run(ns, ["ip", "link", "show", ifname], check=False).returncode == 0


def _check_alive(processes: list[Process]) -> None:
    for process in processes:
        if not process.alive():
            raise LabError(f"{process} exited {process.returncode}:\n{process.log()}")


def _wireguard_up(lab: Lab, ns: str, ifname: str, processes: list[Process]) -> bool:
    _check_alive(processes)
    return _has_link(lab, ns, ifname) and Path(f"/var/run/wireguard/{ifname}.sock").exists()


def _wait_route_via_device(lab: Lab, site: Site, subnet: str, processes: list[Process]) -> None:
    """Wait until `site`'s gateway routes `subnet` through a device other than the underlay."""

    def routed() -> bool:
        _check_alive(processes)
        text = lab.ip(site.gateway_ns, "route", "show", subnet)
        return bool(text.strip()) and f"dev {UNDERLAY_IF}" not in text

    wait_until(routed, SETUP_TIMEOUT, f"gateway {site.name} routes {subnet} through the overlay")


def _s(text: str) -> str:
    return json.dumps(text, ensure_ascii=True)  # a printable-ASCII JSON string is TOML too
