"""The core benchmark still runs and reports every figure (a smoke run, no timing asserted)."""

from __future__ import annotations

from perf.bench_core import SIZES, run


def test_core_benchmark_reports_every_figure() -> None:
    results = run(seconds=0.01)
    assert set(results) == {f"{s}B" for s in SIZES}
    for figures in results.values():
        assert set(figures) >= {"inside_pps", "outside_pps", "inside_vs_seal_ratio"}
        assert all(v > 0 for v in figures.values())
