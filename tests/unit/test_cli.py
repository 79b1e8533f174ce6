"""The `isthmus` command: routing, `config check` on both kinds, usage errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "deploy" / "examples"


def isthmus(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "isthmus", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("name", "kind"), [("controller.toml", "controller"), ("edge.toml", "edge")]
)
def test_config_check_accepts_the_documented_examples(name: str, kind: str) -> None:
    proc = isthmus("config", "check", str(EXAMPLES / name))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{EXAMPLES / name}: valid {kind} config"


def test_config_check_names_the_dotted_key(tmp_path: Path) -> None:
    bad = tmp_path / "edge.toml"
    text = (EXAMPLES / "edge.toml").read_text().replace("mtu = 1420", "mtu = 99999")
    bad.write_text(text)
    proc = isthmus("config", "check", str(bad))
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"{bad}: tun.mtu: 99999 is out of range; allowed: an integer 576-9000"
    )


def test_config_check_controller_route_error(tmp_path: Path) -> None:
    bad = tmp_path / "controller.toml"
    text = (EXAMPLES / "controller.toml").read_text()
    bad.write_text(text.replace('"192.168.10.0/24"', '"192.168.10.1/24"'))
    proc = isthmus("config", "check", "--kind", "controller", str(bad))
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"{bad}: edges[2].routes[0]: '192.168.10.1/24' is not a route")


def test_unreadable_file_and_unknown_command(tmp_path: Path) -> None:
    proc = isthmus("config", "check", str(tmp_path / "missing.toml"))
    assert proc.returncode == 1 and "cannot read" in proc.stderr
    proc = isthmus("frobnicate")
    assert proc.returncode == 2 and "unknown command 'frobnicate'" in proc.stderr
    assert isthmus("version").stdout.startswith("isthmus ")
