"""``python -m engine.worker`` as an operator starts it: settings errors, and its imports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_a_worker_without_a_queue_url_says_which_setting_is_missing(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGINE_")}
    done = subprocess.run(
        [sys.executable, "-m", "engine.worker"],
        cwd=tmp_path,  # no .env
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "IMAGINE_QUEUE_URL" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_worker_imports_no_lifecycle_or_discord_code():
    code = (
        "import sys, engine.worker, engine.streams, engine.monitoring; "
        "bad = sorted(m for m in sys.modules "
        "if m.split('.')[0] in {'discord', 'bot', 'lifecycle'}); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
