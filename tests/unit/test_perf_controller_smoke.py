"""The controller scale benchmark still runs end to end and reports every figure.

A smoke run with a few edges against a real controller process: it checks that the
harness produces a well-formed result, never how fast anything was.
"""

from __future__ import annotations

import json
import math

from perf.bench_controller import FIGURES, run, text

EDGES = 3
CHANGES = 2


def test_controller_benchmark_reports_every_figure() -> None:
    r = run(edges=EDGES, changes=CHANGES)
    assert r["exit_code"] == 0, "the controller must stop cleanly on SIGTERM"
    assert (r["edges"], r["changes"]) == (EDGES, CHANGES)
    assert set(r["setup"]) == {"register_s", "watch_s", "total_s"}
    assert all(v > 0 for v in r["setup"].values())

    assert len(r["per_change"]) == CHANGES
    versions = [c["version"] for c in r["per_change"]]
    assert versions == sorted(set(versions)), "each change makes a newer map version"
    assert versions[0] > EDGES, "every registration made a version before the changes"
    for figures in [*r["per_change"], r["latency"], r["baseline"]["latency"]]:
        values = [figures[f] for f in FIGURES]
        assert all(math.isfinite(v) and v > 0 for v in values)
        assert values == sorted(values), "min <= p50 <= p99 <= max"
    assert len(r["baseline"]["per_push"]) == CHANGES
    assert set(r["ratio"]) == {f.removesuffix("_s") for f in FIGURES}
    assert all(v > 0 for v in r["ratio"].values())

    memory = r["memory_kib"]
    assert set(memory) == {"rss_start", "rss_after_setup", "rss_end", "hwm"}
    assert all(v > 0 for v in memory.values())
    assert memory["hwm"] >= memory["rss_end"]

    json.dumps(r)  # --json must be able to print it
    assert "pooled" in text(r)
