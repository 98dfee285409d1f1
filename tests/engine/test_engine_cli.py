"""Process-level checks: engine never imports discord, and `python -m engine` works."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGINE_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    env["OMP_NUM_THREADS"] = "1"  # see tests/engine/conftest.py: one thread is faster here
    env.update(extra)
    return env


def test_engine_does_not_import_discord() -> None:
    code = (
        "import engine, sys\n"
        "from engine import Engine, EngineRunner\n"
        "assert 'discord' not in sys.modules, 'engine imported discord'\n"
        "assert not any(m == 'bot' or m.startswith('bot.') for m in sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=_env(), timeout=120)


def test_cli_writes_four_pngs(tmp_path: Path, tiny_model_dir: Path, tiny_lora_path) -> None:
    env = _env(
        IMAGINE_MODEL=str(tiny_model_dir),
        IMAGINE_LORA=str(tiny_lora_path),
        IMAGINE_VAE="",
        IMAGINE_DEVICE="cpu",
        IMAGINE_RESOLUTION="64",
        IMAGINE_TRANSLATOR="",
    )
    out = tmp_path / "outputs"
    process = subprocess.run(
        [sys.executable, "-m", "engine", "a red cat", "--seed", "123", "--out", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert process.returncode == 0, process.stderr
    files = sorted(out.glob("*.png"))
    assert len(files) == 4
    assert {f.stem.rsplit("_", 1)[1] for f in files} == {"123", "124", "125", "126"}
    for seed in (123, 124, 125, 126):
        assert f"seed={seed}" in process.stdout


def test_cli_prints_one_line_for_engine_errors(tmp_path: Path) -> None:
    env = _env(IMAGINE_MODEL=str(tmp_path / "missing"), IMAGINE_LORA="", IMAGINE_VAE="")
    process = subprocess.run(
        [sys.executable, "-m", "engine", "a cat"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert process.returncode == 1
    assert "Traceback" not in process.stderr
    assert "error: Model" in process.stderr and "not found" in process.stderr
