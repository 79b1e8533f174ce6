"""The CI smoke of the system benchmark: one overlay (isthmus), one round, 1 s per run.

```
  [host-a] 10.201.1.10 -- [gw-a] edge + controller == veth underlay == [gw-b] edge -- [host-b]
```
Runs the real command, `python -m perf.harness`, and checks its outputs are well formed
with a positive value for every figure, and that it removed its namespaces. It asserts no
timing: the figures are whatever this machine gives (the full run is on demand, see
perf/README.md).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from perf.harness import report

pytestmark = pytest.mark.netns
ROOT = Path(__file__).resolve().parents[2]


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def test_harness_smoke_isthmus_one_second(netns_host: None, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    options = ["--overlays", "isthmus", "--rounds", "1", "--seconds", "1", "--no-install"]
    done = subprocess.run(
        [sys.executable, "-m", "perf.harness", *options, "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=240,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    prefix = re.search(r"namespaces (ism[0-9a-f]{6}-)\*", done.stderr)
    assert prefix is not None, done.stderr
    assert not {ns for ns in _namespaces() if ns.startswith(prefix.group(1))}

    doc = json.loads((out / "bench.json").read_text(encoding="utf-8"))
    assert doc["schema"] == report.SCHEMA
    assert doc["settings"]["overlays"] == ["isthmus"]
    assert doc["errors"] == {}
    assert [r["round"] for r in doc["rounds"]] == [1]
    figures = doc["summary"]["isthmus"]
    assert set(figures) == {f.key for f in report.FIGURES}
    for key in ("tcp1_mbps", "tcp4_mbps", "udp64_pps", "udp1392_pps", "rtt_ms", "cpu_s_per_gb"):
        assert isinstance(figures[key], float) and figures[key] > 0, (key, figures[key])
    for key in ("udp64_loss_pct", "udp1392_loss_pct", "ping_loss_pct"):
        assert 0 <= figures[key] <= 100, (key, figures[key])
    raw = doc["rounds"][0]["raw"]["isthmus"]
    assert raw["tcp1"]["bytes"] > 0 and raw["tcp1"]["cpu_s"] > 0
    assert raw["ping"]["received"] > 0

    markdown = (out / "bench.md").read_text(encoding="utf-8")
    assert "| figure | better | isthmus | best peer |" in markdown
    assert markdown in done.stdout
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
