"""The systemd units in deploy/systemd: `systemd-analyze verify` clean, the sandbox we promise.

`systemd-analyze verify` checks that every Exec*= binary exists. /opt/isthmus/venv is not
installed on a test machine, so each test verifies a copy of the unit in which that one
prefix is replaced by this checkout's venv (which has the real `isthmus` script); every
other line is verified as shipped. Any output at all (stdout or stderr) fails the test.
systemd is not PID 1 on CI machines, so the units are verified, not started.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy" / "systemd"
INSTALLED_PREFIX = "/opt/isthmus/venv/bin/isthmus"
EDGE = "isthmus-edge.service"
CONTROLLER = "isthmus-controller.service"
# Exposure scores of `systemd-analyze security --offline=true` (0 safest, 10 unsafe) that the
# units must stay at or below: a change that loosens the sandbox fails here.
MAX_EXPOSURE = {EDGE: 2.5, CONTROLLER: 1.5}


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail("systemd-analyze not found: install Debian's systemd (scripts/setup.sh does)")
    return path


def local_copy(unit: str, tmp_path: Path) -> Path:
    """The unit with INSTALLED_PREFIX pointing at this checkout's venv, in tmp_path."""
    local = Path(sys.executable).parent / "isthmus"
    assert local.is_file(), f"{local} missing: run scripts/setup.sh"
    text = (UNITS / unit).read_text()
    assert text.count(INSTALLED_PREFIX) == 1, f"{unit}: expected one {INSTALLED_PREFIX}"
    out = tmp_path / unit
    out.write_text(text.replace(INSTALLED_PREFIX, str(local)))
    return out


def verify(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [systemd_analyze(), "verify", "--man=no", str(path)],
        capture_output=True,
        text=True,
        cwd=path.parent,
    )


def directives(unit: str) -> dict[str, list[str]]:
    """Key -> values in file order (comments and section headers skipped)."""
    found: dict[str, list[str]] = {}
    for line in (UNITS / unit).read_text().splitlines():
        if not line or line.startswith(("#", "[")):
            continue
        key, _, value = line.partition("=")
        found.setdefault(key, []).append(value)
    return found


@pytest.mark.parametrize("unit", [EDGE, CONTROLLER])
def test_verify_prints_nothing(unit: str, tmp_path: Path) -> None:
    proc = verify(local_copy(unit, tmp_path))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", ""), proc


def test_verify_catches_a_bad_unit(tmp_path: Path) -> None:
    # The check above can fail: a misspelt directive is a warning on stderr.
    path = local_copy(EDGE, tmp_path)
    path.write_text(path.read_text().replace("ProtectHome=yes", "ProtectHomes=yes"))
    proc = verify(path)
    assert "Unknown key 'ProtectHomes'" in proc.stderr


@pytest.mark.parametrize("unit", [EDGE, CONTROLLER])
def test_exposure_stays_low(unit: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", "--no-pager", unit],
        capture_output=True,
        text=True,
        cwd=local_copy(unit, tmp_path).parent,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert match, proc
    assert float(match.group(1)) <= MAX_EXPOSURE[unit], proc.stdout


def test_edge_has_cap_net_admin_only_and_its_directories() -> None:
    d = directives(EDGE)
    assert d["ExecStart"] == [f"{INSTALLED_PREFIX} edge --config /etc/isthmus/edge.toml"]
    assert d["CapabilityBoundingSet"] == ["CAP_NET_ADMIN"]
    assert d["AmbientCapabilities"] == ["CAP_NET_ADMIN"]
    # ip_forward is set with full privileges before the sandboxed edge starts, since
    # ProtectKernelTunables makes /proc/sys read-only to the edge itself.
    assert d["ExecStartPre"] == ["+/usr/sbin/sysctl -q -w net.ipv4.ip_forward=1"]
    assert d["ProtectKernelTunables"] == ["yes"]
    assert d["DeviceAllow"] == ["/dev/net/tun rw"]
    assert d["DevicePolicy"] == ["closed"]
    assert "AF_NETLINK" in d["RestrictAddressFamilies"][0].split()
    assert d["StateDirectory"] == ["isthmus"]
    assert d["RuntimeDirectory"] == ["isthmus"]
    common_hardening(d)


def test_controller_has_no_capability() -> None:
    d = directives(CONTROLLER)
    assert d["ExecStart"] == [
        f"{INSTALLED_PREFIX} controller --config /etc/isthmus/controller.toml"
    ]
    assert d["CapabilityBoundingSet"] == [""]
    assert d["AmbientCapabilities"] == [""]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert d["StateDirectory"] == ["isthmus-controller"]
    assert d["RuntimeDirectory"] == ["isthmus-controller"]
    assert d["PrivateDevices"] == ["yes"]
    common_hardening(d)


def common_hardening(d: dict[str, list[str]]) -> None:
    for key, value in {
        "Restart": "on-failure",
        "DynamicUser": "yes",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "StateDirectoryMode": "0700",
    }.items():
        assert d.get(key) == [value], f"{key}={d.get(key)}; want {value}"


def test_example_configs_match_the_units() -> None:
    # The documented examples put the state and the admin sockets where the units create
    # and own them.
    edge = (ROOT / "deploy/examples/edge.toml").read_text()
    controller = (ROOT / "deploy/examples/controller.toml").read_text()
    assert 'state_dir = "/var/lib/isthmus"' in edge
    assert 'state_dir = "/var/lib/isthmus-controller"' in controller
    assert 'admin_socket = "/run/isthmus-controller/admin.sock"' in controller
