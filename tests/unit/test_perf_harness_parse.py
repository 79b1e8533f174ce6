"""The harness's parsers and report on captured tool output (no namespaces, no timing).

The iperf3 samples are the `end` sections of real iperf3 3.12 `--json` runs between the
two harness hosts; the ping samples are iputils' summary; the report tests build a run
from figures chosen so each ratio, best peer and target verdict is known in advance.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from perf.harness import report
from perf.harness.measure import (
    MeasureError,
    cpu_seconds,
    parse_iperf_tcp,
    parse_iperf_udp,
    parse_ping,
    parse_proc_stat,
)
from perf.harness.overlays import missing_packages
from perf.harness.png import FONT, GLYPH_H, GLYPH_W, Canvas
from perf.harness.run import parse_args

ROOT = Path(__file__).resolve().parents[2]

TCP_END = {
    "sum_sent": {
        "start": 0, "end": 1.000066, "seconds": 1.000066, "bytes": 1457389568,
        "bits_per_second": 11658347093.091858, "retransmits": 72, "sender": True,
    },
    "sum_received": {
        "start": 0, "end": 1.00178, "seconds": 1.00178, "bytes": 1450311680,
        "bits_per_second": 11581877697.6981, "sender": True,
    },
}  # fmt: skip
UDP_END = {
    "sum": {
        "start": 0, "end": 1.000409, "seconds": 1.000409, "bytes": 6345600,
        "bits_per_second": 50758252.18546807, "jitter_ms": 0.0014451283993054673,
        "lost_packets": 20353, "packets": 99150, "lost_percent": 20.527483610690872,
        "sender": True,
    },
    "sum_sent": {
        "start": 0, "end": 1.000129, "seconds": 1.000129, "bytes": 6345600,
        "bits_per_second": 50758252.18546807, "jitter_ms": 0, "lost_packets": 0,
        "packets": 99150, "lost_percent": 0, "sender": True,
    },
    "sum_received": {
        "start": 0, "end": 1.000409, "seconds": 1.000409, "bytes": 5043008,
        "bits_per_second": 40327570.02386024, "jitter_ms": 0.0014451283993054673,
        "lost_packets": 20353, "packets": 99150, "lost_percent": 20.527483610690872,
        "sender": False,
    },
}  # fmt: skip
IPERF_REFUSED = """{
	"start":	{
		"connected":	[],
		"version":	"iperf 3.12"
	},
	"intervals":	[],
	"end":	{
	},
	"error":	"unable to connect to server: Connection refused"
}"""
PING_OK = """PING 10.202.1.10 (10.202.1.10) 56(84) bytes of data.

--- 10.202.1.10 ping statistics ---
100 packets transmitted, 97 received, 3% packet loss, time 1234ms
rtt min/avg/max/mdev = 0.059/0.075/0.131/0.015 ms
"""
PING_ALL_LOST = """PING 10.202.1.10 (10.202.1.10) 56(84) bytes of data.

--- 10.202.1.10 ping statistics ---
100 packets transmitted, 0 received, 100% packet loss, time 2010ms
"""


def _iperf(end: object) -> str:
    return json.dumps({"start": {"version": "iperf 3.12"}, "intervals": [], "end": end})


# -- parsers ----------------------------------------------------------------------------------


def test_tcp_figures_are_the_receivers() -> None:
    tcp = parse_iperf_tcp(_iperf(TCP_END))
    assert tcp.bytes_received == 1450311680
    assert tcp.seconds == 1.00178
    assert tcp.mbps == pytest.approx(1450311680 * 8 / 1.00178 / 1e6)


def test_udp_rate_counts_received_packets() -> None:
    udp = parse_iperf_udp(_iperf(UDP_END))
    assert (udp.packets_sent, udp.packets_lost) == (99150, 20353)
    assert udp.pps == pytest.approx((99150 - 20353) / 1.000409)
    assert udp.loss_pct == pytest.approx(100 * 20353 / 99150)


def test_udp_falls_back_to_sum_on_older_iperf3() -> None:
    older = {"sum": UDP_END["sum"]}
    assert parse_iperf_udp(_iperf(older)).pps == pytest.approx((99150 - 20353) / 1.000409)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (IPERF_REFUSED, "iperf3: unable to connect to server: Connection refused"),
        ("iperf3: error - unable to connect", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        (json.dumps({"start": {}}), "no 'end' object"),
        (_iperf({"sum_sent": TCP_END["sum_sent"]}), "end has none of sum_received"),
    ],
)
def test_iperf_failures_raise_never_zero(text: str, message: str) -> None:
    with pytest.raises(MeasureError, match=message):
        parse_iperf_tcp(text)


def test_udp_with_no_packet_is_an_error() -> None:
    empty = {"sum_received": {**UDP_END["sum_received"], "packets": 0, "lost_packets": 0}}
    with pytest.raises(MeasureError, match="packets 0"):
        parse_iperf_udp(_iperf(empty))


def test_ping_summary() -> None:
    ping = parse_ping(PING_OK)
    assert (ping.transmitted, ping.received) == (100, 97)
    assert (ping.rtt_min_ms, ping.rtt_avg_ms, ping.rtt_max_ms) == (0.059, 0.075, 0.131)
    assert ping.loss_pct == pytest.approx(3.0)


def test_ping_without_replies_or_summary_is_an_error() -> None:
    with pytest.raises(MeasureError, match="no rtt line \\(0 of 100 replies\\)"):
        parse_ping(PING_ALL_LOST)
    with pytest.raises(MeasureError, match="no 'N packets transmitted"):
        parse_ping("ping: connect: Network is unreachable\n")


def test_proc_stat_counts_fields_after_the_last_parenthesis() -> None:
    ticks = os.sysconf("SC_CLK_TCK")
    # a command name with spaces and parentheses; utime 250 ticks, stime 50 ticks
    line = "4242 (we (ird) name) S 1 4242 4242 0 -1 4194560 10 0 0 0 250 50 0 0 20 0 3 0 99"
    assert parse_proc_stat(line) == pytest.approx(300 / ticks)
    with pytest.raises(MeasureError, match="malformed"):
        parse_proc_stat("4242 (short) S 1 2")


def test_cpu_seconds_reads_live_processes_and_refuses_gone_ones() -> None:
    spin = sum(i * i for i in range(300_000))  # burn a little CPU in this process
    assert spin > 0
    assert cpu_seconds([os.getpid()]) > 0
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    with pytest.raises(MeasureError, match=f"process {gone.pid} is gone"):
        cpu_seconds([gone.pid])


# -- report -----------------------------------------------------------------------------------


def _figures(tcp1: float, udp64: float, rtt: float, cpu: float | None) -> dict[str, float | None]:
    base = dict.fromkeys((f.key for f in report.FIGURES), 1.0)
    return {**base, "tcp1_mbps": tcp1, "udp64_pps": udp64, "rtt_ms": rtt, "cpu_s_per_gb": cpu}


ROUNDS = [
    {
        "plain": _figures(10000, 80000, 0.05, None),
        "isthmus": _figures(600, 30000, 0.4, 5.0),
        "wireguard_go": _figures(250, 20000, 0.5, 30.0),
        "nebula": _figures(300, 25000, 0.8, 20.0),
        "tinc": _figures(200, 35000, 0.3, 40.0),
    },
    {
        "plain": _figures(12000, 80000, 0.07, None),
        "isthmus": _figures(400, 30000, 0.6, 9.0),
        "wireguard_go": _figures(250, 20000, 0.5, 30.0),
        "nebula": _figures(300, 25000, 0.8, 20.0),
        "tinc": _figures(200, 35000, 0.3, 40.0),
    },
    # a round in which isthmus failed: its medians come from the other rounds
    {
        "plain": _figures(11000, 80000, 0.06, None),
        "wireguard_go": _figures(250, 20000, 0.5, 30.0),
        "nebula": _figures(300, 25000, 0.8, 20.0),
        "tinc": _figures(200, 35000, 0.3, 40.0),
    },
]


def _doc() -> dict[str, object]:
    doc: dict[str, object] = {
        "schema": report.SCHEMA,
        "started": "2026-01-01T00:00:00+00:00",
        "settings": {"rounds": 3, "seconds": 10.0, "overlay_mtu": 1420, "underlay_mtu": 1500},
        "errors": {"isthmus": ["round 3: edge exited 1"]},
    }
    doc.update(report.summarize(ROUNDS))
    return doc


def test_summary_is_the_median_over_rounds_with_a_value() -> None:
    summary = report.summarize(ROUNDS)["summary"]
    assert list(summary) == ["plain", "isthmus", "wireguard_go", "nebula", "tinc"]
    assert summary["plain"]["tcp1_mbps"] == 11000
    assert summary["isthmus"]["tcp1_mbps"] == 500  # median of 600 and 400
    assert summary["isthmus"]["cpu_s_per_gb"] == 7.0
    assert summary["plain"]["cpu_s_per_gb"] is None


def test_best_peer_is_highest_or_lowest_by_figure() -> None:
    best = report.summarize(ROUNDS)["best_peer"]
    assert best["tcp1_mbps"] == "nebula"  # highest throughput
    assert best["udp64_pps"] == "tinc"
    assert best["rtt_ms"] == "tinc"  # lowest RTT
    assert best["cpu_s_per_gb"] == "nebula"  # lowest CPU
    assert best["tcp4_mbps"] == "wireguard_go"  # a tie goes to the first peer


def test_ratios_to_plain_and_best_peer() -> None:
    got = report.summarize(ROUNDS)
    assert got["vs_plain"]["isthmus"]["tcp1_mbps"] == pytest.approx(500 / 11000)
    assert got["vs_plain"]["isthmus"]["cpu_s_per_gb"] is None  # plain has no process
    assert got["vs_best_peer"]["isthmus"]["tcp1_mbps"] == pytest.approx(500 / 300)
    assert got["vs_best_peer"]["isthmus"]["rtt_ms"] == pytest.approx(0.5 / 0.3)
    assert got["vs_best_peer"]["nebula"]["tcp1_mbps"] == 1.0


def test_targets_compare_isthmus_to_the_best_peer() -> None:
    targets = {t["figure"]: t for t in report.summarize(ROUNDS)["targets"]}
    assert set(targets) == {"tcp1_mbps", "udp64_pps", "udp1392_pps", "rtt_ms", "cpu_s_per_gb"}
    assert targets["tcp1_mbps"]["met"] is False  # 1.67x < 2.0x
    assert targets["udp1392_pps"]["met"] is False  # 1.0x < 2.0x
    assert targets["cpu_s_per_gb"]["ratio"] == pytest.approx(7.0 / 20.0)
    assert targets["cpu_s_per_gb"]["met"] is True  # 0.35x <= 0.5x
    assert targets["rtt_ms"]["met"] is False
    no_isthmus = report.summarize([{k: v for k, v in ROUNDS[2].items()}])["targets"]
    assert all(t["ratio"] is None and t["met"] is None for t in no_isthmus)


def test_markdown_has_every_figure_ratio_target_and_error() -> None:
    text = report.markdown(_doc())
    assert (
        "| figure | better | plain | isthmus | wireguard_go | nebula | tinc | best peer |" in text
    )
    assert "| TCP 1 stream (Mbit/s) | higher | 11,000 | 500 | 250 | 300 | 200 | nebula |" in text
    assert "| CPU per GB (s/GB) | lower | - | 7.00 | 30.00 | 20.00 | 40.00 | nebula |" in text
    assert "| TCP 1 stream | 1.00x / 36.67x | 0.05x / 1.67x |" in text
    assert "| TCP 1 stream | >= 2x best peer | nebula | 1.67x | no |" in text
    assert "| CPU per GB | <= 0.5x best peer | nebula | 0.35x | yes |" in text
    assert "- isthmus: round 3: edge exited 1" in text


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length : at + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, kind
        chunks.append((kind, body))
        at += 12 + length
    return chunks


def test_chart_is_a_valid_png_with_every_bar() -> None:
    chunks = _png_chunks(report.chart(_doc()))
    assert [kind for kind, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    width, height, depth, color = struct.unpack(">IIBB", chunks[0][1][:10])
    assert (depth, color) == (8, 2)
    raw = zlib.decompress(chunks[1][1])
    assert len(raw) == height * (1 + width * 3)
    pixels = b"".join(
        raw[y * (1 + width * 3) + 1 : (y + 1) * (1 + width * 3)] for y in range(height)
    )
    for name, rgb in report.PALETTE.items():
        assert bytes(rgb) in pixels, f"no bar of {name}"


def test_canvas_text_and_clipping() -> None:
    canvas = Canvas(20, 10)
    canvas.text(1, 1, "i", (0, 0, 0))  # lower case is drawn as the capital
    glyph = FONT["I"]
    for row in range(GLYPH_H):
        for col in range(GLYPH_W):
            black = canvas.pixel(1 + col, 1 + row) == (0, 0, 0)
            assert black == (glyph[row][col] == "1")
    canvas.rect(15, 5, 100, 100, (1, 2, 3))  # clipped, no error
    assert canvas.pixel(19, 9) == (1, 2, 3)
    with pytest.raises(ValueError, match="canvas size 0x5"):
        Canvas(0, 5)


# -- command line -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [["--overlays", "isthmus,openvpn"], ["--overlays", "tinc,tinc"], ["--rounds", "0"]],
)
def test_bad_options_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert "allowed" in capsys.readouterr().err


def test_isthmus_bench_core_dispatches_to_perf() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "isthmus", "bench", "core", "--seconds", "0.01", "--json"],
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
        env={**os.environ, "PYTHONPATH": str(ROOT / "proto")},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout)) == {"64B", "1400B"}


def test_missing_peers_map_to_their_debian_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    names = ["plain", "isthmus", "wireguard_go", "nebula", "tinc"]
    assert missing_packages(names) == ["wireguard-go", "wireguard-tools", "nebula", "tinc"]
    assert missing_packages(["plain", "isthmus"]) == []


def test_chart_clips_plain_only_when_it_dwarfs_every_overlay() -> None:
    names = ["plain", "isthmus", "tinc"]
    assert report._scale(names, [12000.0, 400.0, 500.0]) == 625.0  # 1.25x the best overlay
    assert report._scale(names, [1200.0, 400.0, 500.0]) == 1200.0  # not 3x: no clipping
    assert report._scale(names, [None, 30.0, 20.0]) == 30.0
    assert report._scale(names, [None, None, None]) == 0.0
