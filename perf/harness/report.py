"""The run's summary, ratios and targets, and its three outputs: JSON, Markdown, PNG.

Summary: per overlay and figure, the median over the rounds that produced it. Ratios:
value / baseline, for the plain underlay of the same run and for the best peer of the
same run (the best of wireguard-go, nebula and tinc for that figure: the highest for
throughput and packet rates, the lowest for RTT, loss and CPU), so a ratio above 1 is
better for a "higher" figure and worse for a "lower" one. A ratio is None when either
side is missing or the baseline is 0. Targets compare isthmus to the best peer.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from perf.harness.png import Canvas, text_width

Figures = Mapping[str, float | None]
SCHEMA = "isthmus-bench-harness/1"
PEERS = ("wireguard_go", "nebula", "tinc")


@dataclass(frozen=True, slots=True)
class Figure:
    key: str
    title: str
    unit: str
    better: Literal["higher", "lower"]
    digits: int
    headline: bool = True  # drawn in the chart


FIGURES = (
    Figure("tcp1_mbps", "TCP 1 stream", "Mbit/s", "higher", 0),
    Figure("tcp4_mbps", "TCP 4 streams", "Mbit/s", "higher", 0),
    Figure("udp64_pps", "UDP 64 B", "pkt/s", "higher", 0),
    Figure("udp64_loss_pct", "UDP 64 B loss", "%", "lower", 1, headline=False),
    Figure("udp1392_pps", "UDP 1392 B", "pkt/s", "higher", 0),
    Figure("udp1392_loss_pct", "UDP 1392 B loss", "%", "lower", 1, headline=False),
    Figure("rtt_ms", "ping RTT", "ms", "lower", 3),
    Figure("ping_loss_pct", "ping loss", "%", "lower", 1, headline=False),
    Figure("cpu_s_per_gb", "CPU per GB", "s/GB", "lower", 2),
)
BY_KEY = {figure.key: figure for figure in FIGURES}


@dataclass(frozen=True, slots=True)
class Target:
    key: str
    op: Literal[">=", "<="]
    ratio: float  # to the best peer


TARGETS = (
    Target("tcp1_mbps", ">=", 2.0),
    Target("udp64_pps", ">=", 1.5),
    Target("udp1392_pps", ">=", 2.0),
    Target("rtt_ms", "<=", 1.0),
    Target("cpu_s_per_gb", "<=", 0.5),
)


def median_figures(rounds: Sequence[Mapping[str, Figures]]) -> dict[str, dict[str, float | None]]:
    """Per overlay (in first-seen order) and figure: the median over the rounds with a value."""
    names: list[str] = []
    for one in rounds:
        names += [name for name in one if name not in names]
    summary: dict[str, dict[str, float | None]] = {}
    for name in names:
        summary[name] = {}
        for figure in FIGURES:
            values = [
                v for one in rounds if name in one and (v := one[name].get(figure.key)) is not None
            ]
            summary[name][figure.key] = statistics.median(values) if values else None
    return summary


def ratio(value: float | None, baseline: float | None) -> float | None:
    if value is None or baseline is None or baseline == 0:
        return None
    return value / baseline


def best_peers(summary: Mapping[str, Figures]) -> dict[str, str | None]:
    """Per figure, the peer with the best value (None when no peer has one)."""
    best: dict[str, str | None] = {}
    for figure in FIGURES:
        found = [
            (value, peer)
            for peer in PEERS
            if peer in summary and (value := summary[peer].get(figure.key)) is not None
        ]
        if not found:
            best[figure.key] = None
            continue
        # the first peer (in PEERS order) wins a tie
        pick = (
            max(found, key=lambda f: f[0])
            if figure.better == "higher"
            else min(found, key=lambda f: f[0])
        )
        best[figure.key] = pick[1]
    return best


def summarize(rounds: Sequence[Mapping[str, Figures]]) -> dict[str, Any]:
    """The `summary`, `best_peer`, `vs_plain`, `vs_best_peer` and `targets` of a run."""
    summary = median_figures(rounds)
    best = best_peers(summary)
    plain = summary.get("plain", {})
    vs_plain = {
        name: {key: ratio(value, plain.get(key)) for key, value in figures.items()}
        for name, figures in summary.items()
    }
    vs_best: dict[str, dict[str, float | None]] = {}
    for name, figures in summary.items():
        vs_best[name] = {}
        for key, value in figures.items():
            peer = best[key]
            vs_best[name][key] = None if peer is None else ratio(value, summary[peer][key])
    targets = []
    for target in TARGETS:
        got = vs_best.get("isthmus", {}).get(target.key)
        met = None
        if got is not None:
            met = got >= target.ratio if target.op == ">=" else got <= target.ratio
        targets.append(
            {
                "figure": target.key,
                "target": f"{target.op} {target.ratio:g}x best peer",
                "best_peer": best[target.key],
                "ratio": got,
                "met": met,
            }
        )
    return {
        "summary": summary,
        "best_peer": best,
        "vs_plain": vs_plain,
        "vs_best_peer": vs_best,
        "targets": targets,
    }


# -- Markdown ---------------------------------------------------------------------------------


def _value(key: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.{BY_KEY[key].digits}f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def markdown(doc: Mapping[str, Any]) -> str:
    """The run as Markdown: figures, ratios to plain and to the best peer, targets."""
    summary: Mapping[str, Figures] = doc["summary"]
    settings = doc["settings"]
    names = list(summary)
    best: Mapping[str, str | None] = doc["best_peer"]
    vs_plain: Mapping[str, Figures] = doc["vs_plain"]
    vs_best: Mapping[str, Figures] = doc["vs_best_peer"]
    lines = [
        f"# isthmus bench: {', '.join(names)}",
        "",
        f"{settings['rounds']} round(s), {settings['seconds']:g} s per iperf3 run, overlay MTU "
        f"{settings['overlay_mtu']}, underlay MTU {settings['underlay_mtu']}; started "
        f"{doc['started']}. Figures are medians over the rounds.",
        "",
        "## Figures",
        "",
        *_table(
            ["figure", "better", *names, "best peer"],
            [
                [
                    f"{f.title} ({f.unit})",
                    f.better,
                    *(_value(f.key, summary[n][f.key]) for n in names),
                    best[f.key] or "-",
                ]
                for f in FIGURES
            ],
        ),
        "",
        "## Ratios: to the plain underlay / to the best peer",
        "",
        *_table(
            ["figure", *names],
            [
                [
                    f.title,
                    *(f"{_ratio(vs_plain[n][f.key])} / {_ratio(vs_best[n][f.key])}" for n in names),
                ]
                for f in FIGURES
            ],
        ),
    ]
    lines += [
        "",
        "## isthmus targets (ratio to the best peer)",
        "",
        *_table(
            ["figure", "target", "best peer", "isthmus", "met"],
            [
                [
                    BY_KEY[t["figure"]].title,
                    t["target"],
                    t["best_peer"] or "-",
                    _ratio(t["ratio"]),
                    {True: "yes", False: "no", None: "-"}[t["met"]],
                ]
                for t in doc["targets"]
            ],
        ),
    ]
    errors: Mapping[str, list[str]] = doc.get("errors", {})
    if errors:
        lines += ["", "## Errors", ""]
        lines += [f"- {name}: {text}" for name, texts in errors.items() for text in texts]
    return "\n".join(lines) + "\n"


# -- PNG --------------------------------------------------------------------------------------

PALETTE: dict[str, tuple[int, int, int]] = {
    "plain": (150, 150, 150),
    "isthmus": (214, 96, 30),
    "wireguard_go": (60, 110, 180),
    "nebula": (80, 160, 90),
    "tinc": (150, 90, 170),
}
LABELS = {"plain": "PLAIN", "isthmus": "ISTHMUS", "wireguard_go": "WG-GO"}
_PANEL_W, _PANEL_H, _COLUMNS = 330, 230, 3
_INK = (30, 30, 30)


def chart(doc: Mapping[str, Any]) -> bytes:
    """One bar panel per headline figure (medians), bars labelled with value and ratio to
    the best peer."""
    summary: Mapping[str, Figures] = doc["summary"]
    vs_best: Mapping[str, Figures] = doc["vs_best_peer"]
    figures = [f for f in FIGURES if f.headline]
    rows = (len(figures) + _COLUMNS - 1) // _COLUMNS
    top = 30
    canvas = Canvas(_PANEL_W * _COLUMNS, top + _PANEL_H * rows)
    settings = doc["settings"]
    canvas.text(
        10,
        10,
        f"isthmus bench: median of {settings['rounds']} round(s), {settings['seconds']:g} s "
        f"per run. under bars: x best peer",
        _INK,
        scale=2 if _COLUMNS * _PANEL_W > 1200 else 1,
    )
    names = list(summary)
    for index, figure in enumerate(figures):
        x0 = (index % _COLUMNS) * _PANEL_W
        y0 = top + (index // _COLUMNS) * _PANEL_H
        better = "higher" if figure.better == "higher" else "lower"
        canvas.text(x0 + 10, y0 + 8, f"{figure.title} ({figure.unit}), {better} better", _INK)
        values = [summary[n][figure.key] for n in names]
        peak = _scale(names, values)
        base, height = y0 + _PANEL_H - 40, _PANEL_H - 80
        canvas.rect(x0 + 10, base, _PANEL_W - 20, 1, _INK)
        slot = (_PANEL_W - 20) // max(1, len(names))
        for i, name in enumerate(names):
            value = values[i]
            left = x0 + 10 + i * slot + 6
            width = slot - 12
            label = LABELS.get(name, name)[: max(1, (slot - 2) // 6)]
            canvas.text(left + (width - text_width(label)) // 2, base + 6, label, _INK)
            against = _ratio(vs_best[name][figure.key])
            canvas.text(left + (width - text_width(against)) // 2, base + 18, against, _INK)
            if value is None:
                canvas.text(left + (width - text_width("N/A")) // 2, base - 12, "N/A", _INK)
                continue
            bar = 0 if peak <= 0 else max(1, min(height, round(height * value / peak)))
            canvas.rect(left, base - bar, width, bar, PALETTE.get(name, (100, 100, 100)))
            if value > peak:  # clipped: a white band marks the broken bar
                canvas.rect(left, base - bar + bar // 4, width, 4, (255, 255, 255))
            text = _short(value)
            canvas.text(left + (width - text_width(text)) // 2, base - bar - 10, text, _INK)
    return canvas.png()


def _scale(names: Sequence[str], values: Sequence[float | None]) -> float:
    """The value drawn at full height: the largest, unless the plain underlay is more than
    3x every overlay (fast veth throughput), in which case plain's bar is clipped so the
    overlays' bars stay comparable."""
    found = [v for v in values if v is not None]
    others = [v for n, v in zip(names, values, strict=True) if n != "plain" and v is not None]
    if not found:
        return 0.0
    if others and max(found) > 3 * max(others) > 0:
        return 1.25 * max(others)
    return max(found)


def _short(value: float) -> str:
    """A value in at most 6 characters: 12345 -> 12.3K, 0.0421 -> 0.042."""
    for limit, unit, suffix in ((1e9, 1e9, "G"), (1e6, 1e6, "M"), (1e4, 1e3, "K")):
        if abs(value) >= limit:
            return f"{value / unit:.1f}{suffix}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def write(doc: Mapping[str, Any], out: Path) -> tuple[Path, Path, Path]:
    """Write `bench.json`, `bench.md` and `bench.png` into `out`; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = (out / "bench.json", out / "bench.md", out / "bench.png")
    paths[0].write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    paths[1].write_text(markdown(doc), encoding="utf-8")
    paths[2].write_bytes(chart(doc))
    return paths
