"""The nftables adapter (edge.nft) against a recording stand-in for `nft`, and the real
`nft` checking (`-c`: nothing is committed) that every generated batch parses."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from edge.masquerade import removal_batch, replace_batch
from edge.nft import NftError, NftMasquerade
from isthmus.routemap import parse_route

RANGES = (parse_route("10.100.0.0/16"), parse_route("fd00:100::/64"))

# Records each call (argv, then stdin) and answers `list table` as told by ANSWER.
FAKE = """#!/bin/sh
echo "argv: $*" >> "{log}"
if [ "$1" = "-f" ]; then cat >> "{log}"; exit 0; fi
case "$(cat "{answer}")" in
  present) exit 0 ;;
  absent) echo "Error: No such file or directory" >&2; exit 1 ;;
  *) echo "Error: Operation not permitted" >&2; exit 1 ;;
esac
"""


@pytest.fixture
def fake(tmp_path: Path) -> tuple[Path, Path, Path]:
    log, answer, script = tmp_path / "calls", tmp_path / "answer", tmp_path / "nft"
    answer.write_text("absent")
    script.write_text(FAKE.format(log=log, answer=answer))
    script.chmod(0o755)
    return script, log, answer


def test_apply_replaces_the_table_in_one_batch(fake: tuple[Path, Path, Path]) -> None:
    script, log, _ = fake
    NftMasquerade("isthmus0", RANGES, nft=str(script)).apply()
    assert log.read_text() == "argv: -f -\n" + replace_batch("isthmus0", RANGES)


def test_without_ranges_apply_and_remove_delete_a_stale_table(
    fake: tuple[Path, Path, Path],
) -> None:
    script, log, _ = fake
    nat = NftMasquerade("isthmus0", (), nft=str(script))
    nat.apply()
    nat.remove()
    assert log.read_text() == ("argv: -f -\n" + removal_batch("isthmus0")) * 2
    assert nat.state().as_dict() == {
        "ranges": [],
        "table": "inet isthmus_isthmus0",
        "installed": False,
    }
    assert "list" not in log.read_text()  # no ranges: status never asks nft


def test_installed_reads_the_kernel(fake: tuple[Path, Path, Path]) -> None:
    script, log, answer = fake
    nat = NftMasquerade("isthmus0", RANGES, nft=str(script))
    assert nat.installed() is False
    answer.write_text("present")
    assert nat.state().installed is True
    answer.write_text("denied")
    assert nat.installed() is None
    assert "argv: list table inet isthmus_isthmus0\n" in log.read_text()


def test_a_missing_nft_fails_the_start_only_when_ranges_are_configured(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-nft")
    with pytest.raises(NftError, match=r"masquerade needs the '.*no-such-nft' command"):
        NftMasquerade("isthmus0", RANGES, nft=missing).apply()
    NftMasquerade("isthmus0", (), nft=missing).apply()
    NftMasquerade("isthmus0", RANGES, nft=missing).remove()  # logged, never raised
    assert NftMasquerade("isthmus0", RANGES, nft=missing).installed() is None


def test_a_refused_batch_is_an_error_quoting_nft(tmp_path: Path) -> None:
    script = tmp_path / "nft"
    script.write_text("#!/bin/sh\necho 'Error: syntax error' >&2\nexit 1\n")
    script.chmod(0o755)
    with pytest.raises(NftError, match="exited 1: Error: syntax error"):
        NftMasquerade("isthmus0", RANGES, nft=str(script)).apply()


@pytest.mark.parametrize("tun", ["isthmus0", "wg.a-1_b", "0tun"])
def test_the_real_nft_accepts_every_batch(tun: str) -> None:
    nft = shutil.which("nft")
    assert nft is not None, "nftables is not installed (scripts/setup.sh installs it)"
    for batch in (replace_batch(tun, RANGES), replace_batch(tun, RANGES[:1]), removal_batch(tun)):
        done = subprocess.run(
            [nft, "-c", "-f", "-"], input=batch, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, f"{done.stderr}\n{batch}"
