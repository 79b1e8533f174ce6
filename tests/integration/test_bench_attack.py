"""The smoke of the attack benchmark: 2 s per phase, 10 watching edges, 300 Challenge/s.

    bench (this test's subprocess) --127.0.0.1: junk, Challenge flood--> controller [::]
                                   --::1: probes, 10 watchers--------->
Runs the real command, `python -m perf.bench_attack`, and checks its JSON: both phases
measured, every junk call refused RESOURCE_EXHAUSTED, the flood rate limited, the
controller alive and its peak RSS within idle + 64 MiB. No timing is asserted (the full
run is on demand, see perf/README.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_attack_smoke() -> None:
    options = ["--seconds", "2", "--watchers", "10", "--challenge-rate", "300", "--json"]
    done = subprocess.run(
        [sys.executable, "-m", "perf.bench_attack", *options],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=240,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    r = json.loads(done.stdout)
    assert r["controller_alive"] is True
    for phase in ("baseline", "attack"):
        assert r[phase]["probes"] >= 1
        assert 0 < r[phase]["probe"]["p50_s"] <= r[phase]["probe"]["p99_s"]
        assert r[phase]["fanout"]["p99_s"] > 0
        assert r[phase]["memory_kib"]["VmHWM"] >= r["idle_rss_kib"] > 0
    junk = r["attacker"]["junk_register"]
    assert set(junk) == {"RESOURCE_EXHAUSTED"} and junk["RESOURCE_EXHAUSTED"] >= 8
    assert r["attacker"]["challenge"].get("RESOURCE_EXHAUSTED", 0) > 0
    assert r["goals"]["peak_rss_ok"], r["goals"]
    assert set(r["ratio"]) == {"probe_p50", "probe_p99", "fanout_p99"}
