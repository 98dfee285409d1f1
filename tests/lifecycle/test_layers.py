"""The layers: engine <- lifecycle <- bot. The job lifecycle never imports Discord or the bot."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import lifecycle

ROOT = Path(__file__).resolve().parents[2]


def test_every_lifecycle_module_imports_without_discord_or_the_bot() -> None:
    modules = sorted(f"lifecycle.{m.name}" for m in pkgutil.iter_modules(lifecycle.__path__))
    assert {"lifecycle.service", "lifecycle.local", "lifecycle.backend"} <= set(modules)
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('discord', 'bot'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
