"""bench/describe_bench.py end to end at toy size on the CPU, as its own process."""

from __future__ import annotations

from pathlib import Path

from tests.bench.loading import run_tiny


def test_describing_one_picture_and_a_batch_is_timed(tmp_path: Path):
    result, _ = run_tiny(
        "describe_bench", tmp_path / "describe.json", "--runs", "1", "--batch", "2", "--tokens", "8"
    )
    assert result["header"]["model"] == "tiny BLIP"
    rows = {r["what"]: r for r in result["rows"]}
    assert list(rows) == [
        "load (once, at start)",
        "describe 1 picture",
        "describe 2 pictures (one batch)",
    ]
    assert all(r["median_ms"] > 0 for r in rows.values())
    assert rows["describe 1 picture"]["note"] == "4 prompts"
