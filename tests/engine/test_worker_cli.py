"""``python -m engine.worker`` as an operator starts it: settings errors, and its imports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (None, "Field required"),
        ("", "is empty"),  # as in a .env copied from .env.example
        (":secret@localhost:6379", "must start with redis://"),
    ],
)
def test_a_worker_with_no_usable_queue_url_says_which_setting_is_wrong(tmp_path, url, says):
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGINE_")}
    if url is not None:
        env["IMAGINE_QUEUE_URL"] = url
    done = subprocess.run(
        [sys.executable, "-m", "engine.worker"],
        cwd=tmp_path,  # no .env
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "IMAGINE_QUEUE_URL" in done.stderr and says in done.stderr
    assert "Traceback" not in done.stderr
    assert "secret" not in done.stderr  # a URL may hold a password: never echoed


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
