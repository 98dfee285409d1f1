"""Load a script under ``bench/`` as a module, or run it as its own process, for its tests."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"


def load_bench(name: str) -> ModuleType:
    """``bench/<name>.py``, imported as module ``name``."""
    spec = importlib.util.spec_from_file_location(name, BENCH_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run_tiny(name: str, out: Path, *args: str, timeout: float = 240) -> tuple[dict[str, Any], str]:
    """Run ``bench/<name>.py --tiny --device cpu ARGS --out OUT`` as its own process (offline,
    one thread), assert that it succeeded; the JSON it wrote, and what it printed."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            *(sys.executable, str(BENCH_DIR / f"{name}.py"), "--tiny", "--device", "cpu"),
            *(*args, "--out", str(out)),
        ],
        cwd=BENCH_DIR.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text()), done.stdout
