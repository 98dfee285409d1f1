"""bench/describe_bench.py end to end at toy size on the CPU, as its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "bench" / "describe_bench.py"


def test_describing_one_picture_and_a_batch_is_timed(tmp_path: Path):
    out = tmp_path / "describe.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            *(sys.executable, str(SCRIPT), "--tiny", "--device", "cpu"),
            *("--runs", "1", "--batch", "2", "--tokens", "8", "--out", str(out)),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["header"]["model"] == "tiny BLIP"
    rows = {r["what"]: r for r in result["rows"]}
    assert list(rows) == [
        "load (once, at start)",
        "describe 1 picture",
        "describe 2 pictures (one batch)",
    ]
    assert all(r["median_ms"] > 0 for r in rows.values())
    assert rows["describe 1 picture"]["note"] == "4 prompts"
