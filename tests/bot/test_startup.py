"""`python -m bot` start-up: settings errors are one readable line and a non-zero exit."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from bot.settings import BotSettings

REPO = Path(__file__).resolve().parents[2]


def run_bot(
    tmp_path: Path, *, drop: tuple[str, ...] = (), **env: str
) -> subprocess.CompletedProcess:
    dropped = ("DISCORD_", "IMAGINE_", *drop)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
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


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("IMAGINE_RESOLUTION", "huge"),  # an engine setting (env_prefix IMAGINE_)
        ("IMAGINE_QUEUE_MAX_JOBS", "0"),  # a bot setting (validation alias)
        ("IMAGINE_QUEUE_URL", "localhost:6379"),  # no scheme: redis-py could not use it
    ],
)
def test_bad_setting_names_the_environment_variable(tmp_path, variable, value):
    done = run_bot(tmp_path, DISCORD_TOKEN="x", **{variable: value})
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith(f"Bad setting: {variable}: "), done.stderr


def test_settings_errors_name_variables_however_the_setting_was_given():
    from bot.__main__ import _settings_error
    from engine import EngineSettings

    with pytest.raises(ValidationError) as bot_error:
        BotSettings(_env_file=None, discord_token="x", queue_per_user=0, sync_guild_id="x")
    assert _settings_error(bot_error.value) == (
        "Bad setting: IMAGINE_QUEUE_PER_USER: Input should be greater than or equal to 1; "
        "IMAGINE_SYNC_GUILD_ID: Input should be a valid integer, unable to parse string as an "
        "integer"
    )
    with pytest.raises(ValidationError) as engine_error:
        EngineSettings(_env_file=None, device="tpu")
    assert _settings_error(engine_error.value).startswith("Bad setting: IMAGINE_DEVICE: ")
    with pytest.raises(ValidationError) as nested_error:
        BotSettings(_env_file=None, discord_token="x", engine={"steps": 0})
    assert _settings_error(nested_error.value).startswith("Bad setting: IMAGINE_STEPS: ")


def test_hub_settings_in_dotenv_reach_the_hub_client(tmp_path):
    """HF_ENDPOINT (a hub mirror) given in .env is where `python -m bot` downloads from."""
    from tests.engine.test_hub_endpoint import StandinHub

    hub = StandinHub()
    try:
        (tmp_path / ".env").write_text(
            "DISCORD_TOKEN=x\n"
            f"HF_ENDPOINT={hub.url}\n"
            "HF_HUB_OFFLINE=0\n"
            "IMAGINE_MODEL=imagine-test/no-such-sdxl\n"
            "IMAGINE_LORA=\nIMAGINE_VAE=\nIMAGINE_DEVICE=cpu\n"
            "DISCORD_API_BASE=http://127.0.0.1:9/api/v10\n"
            f"IMAGINE_DATA_DIR={tmp_path / 'data'}\n"
        )
        # The environment would win over .env: leave no HF_* setting in it but telemetry off.
        done = run_bot(tmp_path, drop=("HF_", "TRANSFORMERS_OFFLINE"), HF_HUB_DISABLE_TELEMETRY="1")
    finally:
        hub.close()
    assert done.returncode == 1, done.stderr
    assert any("/imagine-test/no-such-sdxl" in path for path in hub.paths()), hub.paths()
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("Engine could not start:") and "no-such-sdxl" in line


def test_environment_wins_over_dotenv_for_hub_settings(tmp_path, monkeypatch):
    from bot.__main__ import _export_hub_settings

    for key in ("HF_IMAGINE_TEST_FROM_FILE", "HF_IMAGINE_TEST_BOTH", "IMAGINE_TEST_NOT_HF"):
        monkeypatch.setenv(key, "placeholder")  # so that monkeypatch restores them afterwards
        monkeypatch.delenv(key)
    monkeypatch.setenv("HF_IMAGINE_TEST_BOTH", "from-environment")
    env_file = tmp_path / ".env"
    env_file.write_text(
        "HF_IMAGINE_TEST_FROM_FILE=from-file\nHF_IMAGINE_TEST_BOTH=from-file\n"
        "IMAGINE_TEST_NOT_HF=from-file\n"
    )
    _export_hub_settings(env_file)
    assert os.environ["HF_IMAGINE_TEST_FROM_FILE"] == "from-file"
    assert os.environ["HF_IMAGINE_TEST_BOTH"] == "from-environment"
    assert "IMAGINE_TEST_NOT_HF" not in os.environ  # pydantic-settings reads those itself
    _export_hub_settings(tmp_path / "missing.env")  # no .env: nothing to do


def test_nothing_imports_the_hub_client_before_the_hub_settings_are_exported():
    """`python -m bot` copies HF_* from .env in main(); the hub must not be imported by then."""
    code = (
        "import sys, bot.__main__, bot.client, bot.settings; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('huggingface_hub', 'transformers', 'diffusers', 'torch')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


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
    from engine.worker import WorkerSettings

    engine_keys = {f"IMAGINE_{name.upper()}" for name in EngineSettings.model_fields}
    engine_keys |= {f"IMAGINE_{name.upper()}" for name in WorkerSettings.model_fields}
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


async def test_a_taken_gallery_port_is_one_clear_line(tmp_path, standin, tiny_engine_settings):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "IMAGINE_"))}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env.update(
            PYTHONPATH=str(REPO),
            DISCORD_TOKEN=standin.token,
            DISCORD_API_BASE=standin.api_base,
            DISCORD_GATEWAY_URL=standin.gateway_url,
            IMAGINE_MODEL=tiny_engine_settings.model,
            IMAGINE_LORA="",
            IMAGINE_VAE="",
            IMAGINE_DEVICE="cpu",
            IMAGINE_RESOLUTION="64",
            IMAGINE_TRANSLATOR="",
            IMAGINE_DATA_DIR=str(tmp_path / "data"),
            IMAGINE_GALLERY_PORT=str(port),
            IMAGINE_GALLERY_HOST="127.0.0.1",
            HF_HUB_OFFLINE="1",
        )
        bot = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", cwd=tmp_path, env=env, stderr=asyncio.subprocess.PIPE
        )
        _, err = await asyncio.wait_for(bot.communicate(), timeout=120)
    stderr = err.decode()
    assert bot.returncode == 1, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == (
        f"Cannot listen on 127.0.0.1:{port} (Address already in use): free that port or "
        "choose another in IMAGINE_GALLERY_PORT (0 = off)"
    )


def test_exit_after_the_watchdog_does_not_wait_for_the_stuck_gpu_thread():
    """Exit status 3 leaves at once although a GPU-pool thread is still busy (a plain
    sys.exit would join that thread at interpreter exit, i.e. hang with the GPU)."""
    code = (
        "import time\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "from bot.__main__ import _exit\n"
        "from bot.client import EXIT_GPU_STUCK\n"
        "ThreadPoolExecutor(1).submit(time.sleep, 600)\n"
        "_exit(EXIT_GPU_STUCK)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 3, done.stderr
