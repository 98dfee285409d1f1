"""`python -m bot` start-up: settings errors are one readable line and a non-zero exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.settings import BotSettings

REPO = Path(__file__).resolve().parents[2]


def run_bot(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "IMAGINE_"))}
    clean["PYTHONPATH"] = str(REPO)
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-m", "bot"],
        cwd=tmp_path,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_missing_token_is_one_clear_line(tmp_path):
    done = run_bot(tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "DISCORD_TOKEN is not set: copy .env.example to .env and fill it in."
    )


def test_bad_setting_names_the_setting(tmp_path):
    done = run_bot(tmp_path, DISCORD_TOKEN="x", IMAGINE_RESOLUTION="huge")
    assert done.returncode == 2
    assert "RESOLUTION" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_settings_come_from_dotenv_and_the_token_is_never_shown(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):
        if key.startswith(("DISCORD_", "IMAGINE_")):
            monkeypatch.delenv(key)
    (tmp_path / ".env").write_text(
        "DISCORD_TOKEN=very-secret\nIMAGINE_RESOLUTION=768\nIMAGINE_QUEUE_PER_USER=5\n"
    )
    settings = BotSettings()
    assert settings.discord_token.get_secret_value() == "very-secret"
    assert settings.engine.resolution == 768
    assert settings.queue_per_user == 5
    assert "very-secret" not in repr(settings) and "very-secret" not in str(settings)


def test_env_example_lists_every_setting():
    from engine import EngineSettings

    example = (REPO / ".env.example").read_text()
    keys = {
        line.split("=", 1)[0] for line in example.splitlines() if line and not line.startswith("#")
    }
    engine_keys = {f"IMAGINE_{name.upper()}" for name in EngineSettings.model_fields}
    bot_keys = set()
    for name, field in BotSettings.model_fields.items():
        if name == "engine":
            continue
        alias = field.validation_alias
        bot_keys.add(alias.choices[0] if alias is not None else name.upper())
    assert engine_keys | bot_keys == keys
    readme = (REPO / "README.md").read_text()
    missing = [key for key in keys if f"`{key}`" not in readme]
    assert not missing, f"README does not document {missing}"


@pytest.mark.parametrize("module", ["bot", "engine"])
def test_packages_import_without_side_effects(module):
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def test_missing_model_is_one_clear_line_before_touching_discord(tmp_path):
    # The API base is a closed port: reaching it would fail differently.
    done = run_bot(
        tmp_path,
        DISCORD_TOKEN="x",
        IMAGINE_MODEL=str(tmp_path / "no-such-model"),
        IMAGINE_VAE="",
        IMAGINE_LORA="",
        IMAGINE_DEVICE="cpu",
        DISCORD_API_BASE="http://127.0.0.1:9/api/v10",
        HF_HUB_OFFLINE="1",
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("Engine could not start:") and "no-such-model" in line


def test_unreachable_discord_is_one_clear_line(tmp_path, tiny_engine_settings):
    done = run_bot(
        tmp_path,
        DISCORD_TOKEN="x",
        IMAGINE_MODEL=tiny_engine_settings.model,
        IMAGINE_LORA="",
        IMAGINE_VAE="",
        IMAGINE_DEVICE="cpu",
        IMAGINE_RESOLUTION="64",
        IMAGINE_TRANSLATOR="",
        DISCORD_API_BASE="http://127.0.0.1:9/api/v10",
        IMAGINE_DATA_DIR=str(tmp_path / "data"),
        HF_HUB_OFFLINE="1",
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith("Cannot reach Discord at http://127.0.0.1:9/api/v10")
    )
