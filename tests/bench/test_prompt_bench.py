"""bench/prompt_bench.py end to end at toy sizes on the CPU, as its own process."""

from __future__ import annotations

from pathlib import Path

from tests.bench.loading import run_tiny


def test_each_prompt_kind_is_timed_beside_todays_encoder(tmp_path: Path):
    result, printed = run_tiny("prompt_bench", tmp_path / "prompts.json", "--runs", "2")
    rows = {r["prompt_kind"]: r for r in result["rows"]}
    assert rows["plain (today)"] == rows["plain (today)"] | {"path": "diffusers", "vs_today": 1.0}
    assert rows["weights (red:1.3), [x], x++"]["path"] == "compel"
    assert rows["200 tokens"]["chunks"] == 3  # one token per character in the toy vocab
    assert {r["chunks"] for k, r in rows.items() if k != "200 tokens"} == {1}
    assert all(r["median_ms"] > 0 for r in rows.values())
    assert "| 200 tokens | compel | 3 |" in printed
