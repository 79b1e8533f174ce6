"""scripts/root.sh: demo.sh and test.sh run as root, re-run through sudo, or say why not.

README's commands are `scripts/demo.sh` and `scripts/test.sh`, no `sudo` in front, so they
work where the user is root and sudo is absent. Each case runs the real script (or
`as_root` itself) under /bin/bash with a PATH holding only a fake `id`, optionally a fake
`sudo` that prints its arguments and exits 7, and `dirname`; nothing else can run.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUDO_EXIT = 7


def run(tmp_path: Path, uid: int, sudo: bool, argv: list[str]) -> subprocess.CompletedProcess[str]:
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "id").write_text(f'#!/bin/sh\n[ "$1" = -u ] && echo {uid}\n')
    if sudo:
        (fake / "sudo").write_text(f'#!/bin/sh\necho "sudo $*"\nexit {SUDO_EXIT}\n')
    dirname = shutil.which("dirname")
    assert dirname is not None
    (fake / "dirname").symlink_to(dirname)
    for tool in fake.iterdir():
        tool.chmod(0o755)
    env = {"PATH": str(fake), "HOME": str(tmp_path)}
    return subprocess.run(
        ["/bin/bash", *argv], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=30
    )


def as_root(tmp_path: Path, uid: int, sudo: bool) -> subprocess.CompletedProcess[str]:
    code = f'source {ROOT}/scripts/root.sh; as_root "why" /x/y.sh "a b" c; echo continued'
    return run(tmp_path, uid, sudo, ["-c", code])


def test_as_root_returns_when_root(tmp_path: Path) -> None:
    done = as_root(tmp_path, 0, sudo=True)
    assert (done.returncode, done.stdout) == (0, "continued\n"), done.stderr


def test_as_root_reexecutes_through_sudo_when_not_root(tmp_path: Path) -> None:
    done = as_root(tmp_path, 1000, sudo=True)
    assert done.returncode == SUDO_EXIT, done.stderr
    assert done.stdout == "sudo -- bash /x/y.sh a b c\n"  # exec: nothing after it ran
    assert "y.sh: not root; re-running through sudo" in done.stderr


def test_as_root_fails_clearly_without_root_and_sudo(tmp_path: Path) -> None:
    done = as_root(tmp_path, 1000, sudo=False)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == "y.sh: needs root (why), and sudo is not installed: run it as root\n"


@pytest.mark.parametrize("script", ["demo.sh", "test.sh"])
def test_scripts_reexecute_through_sudo_before_anything_else(tmp_path: Path, script: str) -> None:
    path = ROOT / "scripts" / script
    done = run(tmp_path, 1000, True, [str(path), "--keep", "-q"])
    assert done.returncode == SUDO_EXIT, done.stderr
    assert done.stdout == f"sudo -- bash {path} --keep -q\n"


@pytest.mark.parametrize("script", ["demo.sh", "test.sh"])
def test_scripts_say_why_without_root_and_sudo(tmp_path: Path, script: str) -> None:
    done = run(tmp_path, 1000, False, [str(ROOT / "scripts" / script)])
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.startswith(f"{script}: needs root (network namespaces")
    assert done.stderr.endswith("and sudo is not installed: run it as root\n")


def test_readme_commands_need_no_sudo_and_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = re.search(r"```sh\n(.*?)```", readme, re.S)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands == ["scripts/demo.sh", "scripts/test.sh"]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert f"exec {commands[1]}" in ci
