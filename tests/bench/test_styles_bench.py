"""bench/styles_bench.py end to end at toy sizes on the CPU, as its own process."""

from __future__ import annotations

from pathlib import Path

from tests.bench.loading import run_tiny


def test_switches_and_batches_are_timed_with_and_without_styles(tmp_path: Path):
    result, printed = run_tiny(
        "styles_bench", tmp_path / "styles.json", "--runs", "2", "--batches", "1"
    )
    rows = {r["what"]: r for r in result["rows"]}
    assert list(rows) == [
        "batch, no styles configured",
        "load 3 styles (once, at start)",
        "switch style -> another style",
        "switch style -> none -> style (two switches)",
        "same style again (no switch)",
        "batch, styles configured, none picked",
        "batch with a style (s2)",
        "batch, none picked, slot on with zeros (IMAGINE_COMPILE)",
    ]
    assert all(r["median_ms"] >= 0 for r in rows.values())
    assert rows["batch, no styles configured"]["median_ms"] > 0
    assert "| switch style -> another style |" in printed
