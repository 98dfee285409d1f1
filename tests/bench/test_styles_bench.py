"""bench/styles_bench.py end to end at toy sizes on the CPU, as its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "bench" / "styles_bench.py"


def test_switches_and_batches_are_timed_with_and_without_styles(tmp_path: Path):
    out = tmp_path / "styles.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            *(sys.executable, str(SCRIPT), "--tiny", "--device", "cpu"),
            *("--runs", "2", "--batches", "1", "--out", str(out)),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {r["what"]: r for r in json.loads(out.read_text())["rows"]}
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
    assert "| switch style -> another style |" in done.stdout
