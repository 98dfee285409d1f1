"""bench/prompt_bench.py end to end at toy sizes on the CPU, as its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "bench" / "prompt_bench.py"


def test_each_prompt_kind_is_timed_beside_todays_encoder(tmp_path: Path):
    out = tmp_path / "prompts.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--tiny",
            "--device",
            "cpu",
            "--runs",
            "2",
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
    rows = {r["prompt_kind"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["plain (today)"] == rows["plain (today)"] | {"path": "diffusers", "vs_today": 1.0}
    assert rows["weights (red:1.3), [x], x++"]["path"] == "compel"
    assert rows["200 tokens"]["chunks"] == 3  # one token per character in the toy vocab
    assert {r["chunks"] for k, r in rows.items() if k != "200 tokens"} == {1}
    assert all(r["median_ms"] > 0 for r in rows.values())
    assert "| 200 tokens | compel | 3 |" in done.stdout
