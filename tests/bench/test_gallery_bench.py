"""bench/gallery_bench.py at toy sizes: it serves real pages, and its checks catch a leak."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import lifecycle.storage
from tests.bench.loading import load_bench

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCH = REPO_ROOT / "bench" / "gallery_bench.py"


@pytest.mark.timeout(120)
def test_gallery_bench_times_three_pages_and_lists_only_the_servers_safe_shares(tmp_path):
    out = tmp_path / "gallery.json"
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--sets",
            "60",
            "--repeat",
            "2",
            "--warmup",
            "1",
            "--out",
            str(out),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # 60 sets, 24 a page: 3 pages, the last with 12 cards; 12 other-server, 6 NSFW-channel and
    # 3 NSFW-showcase shares are in the database but not on the pages.
    assert (
        "built 60 listed sets" in done.stderr and "12 other-server, 6 NSFW-channel" in done.stderr
    )
    rows = re.findall(
        r"^\| (first|middle|last) \((\d+) of (\d+)\) \| (\d+) \| (\d+) \|",
        done.stdout,
        re.MULTILINE,
    )
    assert [(n, int(p), int(m), int(c), int(t)) for n, p, m, c, t in rows] == [
        ("first", 1, 3, 24, 60),
        ("middle", 2, 3, 24, 60),
        ("last", 3, 3, 12, 60),
    ]
    assert "listed total: 60 (expected 60)" in done.stdout
    assert re.search(r"^verdict: (PASS|MISS): slowest p95 [0-9.]+ ms", done.stdout, re.MULTILINE)
    assert "check failed" not in done.stdout
    result = json.loads(out.read_text())
    assert result["expected_listed"] == 60
    assert [r["problems"] for r in result["rows"]] == [[], [], []]
    assert all(0 < r["p50_ms"] <= r["p95_ms"] <= r["max_ms"] for r in result["rows"])


@pytest.mark.timeout(120)
def test_gallery_bench_exits_non_zero_when_nsfw_channel_rows_get_listed(monkeypatch, capsys):
    bench = load_bench("gallery_bench")
    # The storage's filter without its "made in an age-restricted channel" condition.
    leaky = lifecycle.storage._LISTABLE.replace(" AND jobs.nsfw_channel = 0", "")
    assert leaky != lifecycle.storage._LISTABLE
    monkeypatch.setattr(lifecycle.storage, "_LISTABLE", leaky)
    assert bench.main(["--sets", "48", "--repeat", "1", "--warmup", "0"]) == 1
    printed = capsys.readouterr().out
    assert "listed total: 52 (expected 48)" in printed  # 48 // 10 = 4 NSFW-channel shares
    assert "check failed: page 1: states 52 sets, expected 48" in printed
