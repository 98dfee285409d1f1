"""bench/tools_bench.py end to end at toy sizes on the CPU, as its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "bench" / "tools_bench.py"


def test_every_action_is_timed_beside_imagine(tmp_path: Path):
    out = tmp_path / "tools.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--tiny",
            "--device",
            "cpu",
            "--runs",
            "1",
            "--out",
            str(out),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {r["action"]: r for r in json.loads(out.read_text())["rows"]}
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
    assert "| Zoom Out 1.5x | 4 | 64x64 |" in done.stdout
