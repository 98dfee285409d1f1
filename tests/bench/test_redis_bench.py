"""bench/redis_bench.py at toy sizes: it runs, and its table has the three rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(180)
def test_redis_bench_runs_local_and_one_and_two_workers(tmp_path, redis_url):
    out = tmp_path / "redis.json"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "bench" / "redis_bench.py"),
            "--redis-url",
            redis_url,
            "--jobs",
            "8",
            "--latency-jobs",
            "3",
            "--seconds-per-image",
            "0.01",
            "--out",
            str(out),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["row"] for r in rows] == ["local", "redis, 1 worker", "redis, 2 workers"]
    assert all(len(r["overheads"]) == 3 and r["seconds"] > 0 for r in rows)
    assert "| redis, 2 workers |" in done.stdout
