"""The committed generated protobuf code is what scripts/codegen.sh produces now."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "codegen.sh"), str(tmp_path)],
        check=True,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
    )
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.py*"))
    assert generated, "codegen produced nothing"
    for rel in generated:
        committed = ROOT / "proto" / rel
        assert committed.exists(), f"{rel} is generated but not committed: run scripts/codegen.sh"
        assert committed.read_bytes() == (tmp_path / rel).read_bytes(), (
            f"proto/{rel} is stale: run scripts/codegen.sh and commit the result"
        )
