"""bench/tools_bench.py end to end at toy sizes on the CPU, as its own process."""

from __future__ import annotations

from pathlib import Path

from tests.bench.loading import run_tiny


def test_every_action_is_timed_beside_imagine(tmp_path: Path):
    result, printed = run_tiny("tools_bench", tmp_path / "tools.json", "--runs", "1")
    rows = {r["action"]: r for r in result["rows"]}
    assert list(rows) == [
        "/imagine",
        "Vary (Subtle)",
        "Vary (Strong)",
        "image prompt",
        "U (upscale to 128x128)",
        "Zoom Out 2x",
        "Zoom Out 1.5x",
    ]
    assert all(r["median_ms"] > 0 and r["peak_gib"] is None for r in rows.values())
    assert rows["/imagine"]["vs_imagine"] == 1.0
    assert (rows["U (upscale to 128x128)"]["images"], rows["U (upscale to 128x128)"]["size"]) == (
        1,
        "128x128",
    )
    assert {r["size"] for a, r in rows.items() if not a.startswith("U")} == {"64x64"}
    assert "| Zoom Out 1.5x | 4 | 64x64 |" in printed
