"""The engine's setup checks: models, GPU, disk, Redis, ports, and ``python -m engine.worker
doctor`` against a local stand-in hub and a closed Redis port.

Nothing leaves the machine: models are local folders or a hub cache laid out on disk, the hub
is an HTTP server on 127.0.0.1, Redis is the machine's (tests that need it skip without one) or
a closed port.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from engine.doctor import (
    Check,
    HubAccess,
    ModelSpec,
    Status,
    check_disk,
    check_gpu,
    check_model,
    check_port,
    check_redis,
    exit_code,
    memory_needed_gib,
    models_to_check,
    report,
)
from engine.settings import EngineSettings
from engine.streams import StreamKeys, WorkerBeat
from tests.redis_support import free_port

REPO = Path(__file__).resolve().parents[2]
OFFLINE = HubAccess(offline=True, endpoint="http://127.0.0.1:9")


def settings(**values) -> EngineSettings:
    return EngineSettings(_env_file=None, **values)


# ------------------------------------------------------------------------ lines and codes
def test_a_line_names_the_check_then_the_fix_and_only_failures_set_the_exit_code():
    good = Check.ok("token", "logged in as Imagine")
    warned = Check.warn("GPU workers", "none online", "start python -m engine.worker")
    failed = Check.fail("Redis", "cannot reach the Redis at 127.0.0.1:1/0.", "start Redis there")

    assert good.line() == "ok   token: logged in as Imagine"
    assert warned.line() == "warn GPU workers: none online. Fix: start python -m engine.worker"
    assert failed.line() == (
        "FAIL Redis: cannot reach the Redis at 127.0.0.1:1/0. Fix: start Redis there"
    )
    assert exit_code([good, warned]) == 0
    assert exit_code([good, warned, failed]) == 1
    assert report([good, warned]).splitlines()[-1] == (
        "2 checks: serving can work; 1 warning(s) above."
    )
    assert report([good, failed]).splitlines()[-1].startswith("1 of 2 checks failed")
    assert report([good]).splitlines()[-1] == "all 1 checks passed."


# --------------------------------------------------------------------------------- models
def hub_cache(root: Path, repo: str, files: dict[str, bytes]) -> Path:
    """Lay out ``repo`` in huggingface_hub's cache format under ``root``, as a download does."""
    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    snapshot = folder / "snapshots" / ("0" * 40)
    for name, data in files.items():
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).write_bytes(data)
    return root


def test_local_folders_and_files_are_found(tmp_path):
    model = tmp_path / "sdxl"
    model.mkdir()
    (model / "model_index.json").write_text("{}")
    lora = tmp_path / "style.safetensors"
    lora.write_bytes(b"weights")
    specs = models_to_check(
        settings(model=str(model), lora=str(lora), vae="", translator=""),
        generation=True,
        translation=True,
    )

    lines = [check_model(spec, OFFLINE).line() for spec in specs]

    assert lines == [
        f"ok   IMAGINE_MODEL: local folder {model}",
        f"ok   IMAGINE_LORA: local file {lora}",
    ]


def test_a_folder_that_is_no_model_fails(tmp_path):
    spec = ModelSpec("IMAGINE_MODEL", str(tmp_path), "model_index.json")

    check = check_model(spec, OFFLINE)

    assert check.failed and "has no model_index.json" in check.detail
    assert "diffusers" in check.fix


def test_offline_a_model_must_be_in_the_cache(tmp_path):
    cache = hub_cache(tmp_path, "imagine-test/cached-vae", {"config.json": b"{}"})
    hub = HubAccess(offline=True, endpoint="http://127.0.0.1:9", cache_dir=cache)

    cached = check_model(ModelSpec("IMAGINE_VAE", "imagine-test/cached-vae", "config.json"), hub)
    missing = check_model(ModelSpec("IMAGINE_MODEL", "imagine-test/sdxl", "model_index.json"), hub)
    optional = check_model(
        ModelSpec("IMAGINE_TRANSLATOR", "imagine-test/opus", "config.json", required=False), hub
    )

    assert cached.line() == "ok   IMAGINE_VAE: imagine-test/cached-vae is in the Hugging Face cache"
    assert missing.failed
    assert "HF_HUB_OFFLINE is set" in missing.detail
    assert "hf download imagine-test/sdxl" in missing.fix and "local folder" in missing.fix
    assert optional.status is Status.WARN  # the bot serves without a translator
    assert "serving without it (Chinese prompts are used as typed)" in optional.detail


def test_a_lora_inside_a_hub_repository_is_looked_up_by_its_file(tmp_path):
    cache = hub_cache(tmp_path, "imagine-test/styles", {"ink.safetensors": b"weights"})
    hub = HubAccess(offline=True, endpoint="http://127.0.0.1:9", cache_dir=cache)
    [lora] = [
        s
        for s in models_to_check(
            settings(lora="imagine-test/styles/ink.safetensors"), generation=True, translation=False
        )
        if s.setting == "IMAGINE_LORA"
    ]

    assert (lora.repo, lora.probe) == ("imagine-test/styles", "ink.safetensors")
    assert check_model(lora, hub).status is Status.OK


def test_which_models_each_side_loads():
    every = settings(
        preview_vae="madebyollin/taesdxl",
        vae_decoder="tiny",
        safety_model="imagine-test/classifier",
        describe_model="imagine-test/captioner",
    )
    worker = [s.setting for s in models_to_check(every, generation=True, translation=False)]
    bot_with_workers = [
        s.setting for s in models_to_check(every, generation=False, translation=True)
    ]

    # The preview VAE is the tiny decoder itself here: checked once.
    assert worker == [
        "IMAGINE_MODEL",
        "IMAGINE_LORA",
        "IMAGINE_VAE",
        "IMAGINE_TINY_VAE",
        "IMAGINE_SAFETY_MODEL",
        "IMAGINE_DESCRIBE_MODEL",
    ]
    assert bot_with_workers == ["IMAGINE_TRANSLATOR"]
    # The captioner is optional: missing, it is a warning that says what /describe does then.
    [captioner] = [
        s
        for s in models_to_check(every, generation=True, translation=False)
        if s.setting == "IMAGINE_DESCRIBE_MODEL"
    ]
    check = check_model(captioner, OFFLINE)
    assert check.status is Status.WARN and "/describe answers that it is not set up" in check.detail


# ------------------------------------------------------------------------------------ GPU
def test_the_cpu_is_a_warning_and_the_memory_figures_follow_the_readme():
    check = check_gpu(settings(device="cpu"))

    assert check.status is Status.WARN and "minutes" in check.detail
    # README, Hardware: 6.5 GiB of weights + ~3 GB for a request of four 1024x1024 images.
    assert memory_needed_gib(settings()) == pytest.approx(9.5)
    assert memory_needed_gib(settings(low_memory=True)) < 8  # fits 8 GB cards
    assert memory_needed_gib(settings(resolution=512)) < memory_needed_gib(settings())


# ----------------------------------------------------------------------------------- disk
def test_disk_room_under_the_data_dir(tmp_path):
    missing_yet = tmp_path / "not" / "made" / "yet"  # the bot creates it at start

    assert check_disk(missing_yet).status is Status.OK
    tight = check_disk(tmp_path, want_bytes=2**60, purpose="stored results may take")
    assert tight.status is Status.WARN and "stored results may take" in tight.detail
    assert "IMAGINE_DATA_DIR" in tight.fix


def test_a_data_dir_under_a_file_fails(tmp_path):
    """The one unwritable data dir root cannot write either (the test below needs a user)."""
    (tmp_path / "imagine.db").write_bytes(b"")

    check = check_disk(tmp_path / "imagine.db" / "data")

    assert check.failed and "is a file" in check.detail and "IMAGINE_DATA_DIR" in check.fix


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_data_dir_this_user_cannot_write_fails(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)

    check = check_disk(locked / "data")

    assert check.failed and "cannot be written" in check.detail


# ---------------------------------------------------------------------------------- ports
def test_a_port_in_use_fails_and_a_free_one_passes():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = check_port("127.0.0.1", port, "IMAGINE_METRICS_PORT")

    assert busy.failed and f"127.0.0.1:{port}" in busy.detail
    assert "choose another IMAGINE_METRICS_PORT (0 = off)" in busy.fix
    assert check_port("127.0.0.1", free_port(), "IMAGINE_METRICS_PORT").status is Status.OK
    assert check_port("0.0.0.0", 0, "IMAGINE_GALLERY_PORT").line() == (
        "ok   IMAGINE_GALLERY_PORT: off"
    )


# ---------------------------------------------------------------------------------- Redis
async def test_an_unreachable_redis_fails_without_showing_its_password():
    port = free_port()

    [check] = await check_redis(
        f"redis://:hunter2@127.0.0.1:{port}/0", StreamKeys("imagine"), workers=True
    )

    assert check.failed
    assert check.detail.startswith(f"cannot reach the Redis at 127.0.0.1:{port}/0")
    assert "IMAGINE_QUEUE_URL" in check.fix
    assert "hunter2" not in check.line()


async def test_workers_are_seen_by_their_heartbeats(redis_url, queue_prefix):
    from engine.streams import connect

    keys = StreamKeys(queue_prefix)
    redis, workers = await check_redis(redis_url, keys, workers=True)
    assert redis.status is Status.OK and redis.detail.startswith("Redis ")
    assert workers.status is Status.WARN and "none online" in workers.detail

    client = connect(redis_url)  # a heartbeat, as engine.worker writes it
    try:
        await client.set(keys.worker("gpu-a"), WorkerBeat("gpu-a", 32).to_json(), px=10_000)
        await client.sadd(keys.workers, "gpu-a", "gpu-gone")  # gpu-gone's beat expired
    finally:
        await client.aclose()
    _, workers = await check_redis(redis_url, keys, workers=True)

    assert workers.line() == "ok   GPU workers: 1 online: gpu-a (32 images)"


# ------------------------------------------------------------- python -m engine.worker doctor
def test_the_worker_doctor_names_each_problem_with_its_fix(tmp_path, hub):
    redis_port = free_port()  # nothing listens there
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("HF_", "IMAGINE_")) and k != "TRANSFORMERS_OFFLINE"
        },
        "PYTHONPATH": str(REPO),
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(tmp_path / "hf"),  # an empty cache
        "IMAGINE_QUEUE_URL": f"redis://127.0.0.1:{redis_port}/0",
        "IMAGINE_DATA_DIR": str(tmp_path / "data"),
        "IMAGINE_DEVICE": "cpu",
        "IMAGINE_MODEL": "imagine-test/no-such-sdxl",
        "IMAGINE_VAE": "imagine-test/present",
        "IMAGINE_LORA": "",
    }
    guard = (
        "import ipaddress, socket, sys\n"
        "def guard(event, args):\n"
        "    inet = (socket.AF_INET, socket.AF_INET6)\n"
        "    if event == 'socket.connect' and args[0].family in inet:\n"
        "        if not ipaddress.ip_address(args[1][0]).is_loopback:\n"
        "            raise RuntimeError(f'network blocked: {args[1]!r}')\n"
        "sys.addaudithook(guard)\n"
        "sys.argv = ['engine.worker', 'doctor']\n"
        "import engine.worker\n"
        "engine.worker.main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", guard],
        cwd=tmp_path,  # no .env
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    lines = done.stdout.splitlines()

    assert done.returncode == 1, (lines, done.stderr)
    by_name = {line[5:].split(":", 1)[0]: line for line in lines[:-1]}
    assert by_name["GPU"].startswith("warn GPU: IMAGINE_DEVICE=cpu")
    assert by_name["IMAGINE_MODEL"] == (
        f"FAIL IMAGINE_MODEL: {hub.url} has no model imagine-test/no-such-sdxl. Fix: check the "
        "spelling of IMAGINE_MODEL (imagine-test/no-such-sdxl)"
    )
    assert by_name["IMAGINE_VAE"] == (
        f"ok   IMAGINE_VAE: imagine-test/present is not cached yet: it is downloaded from "
        f"{hub.url} at start"
    )
    redis = by_name["Redis"]
    assert redis.startswith(f"FAIL Redis: cannot reach the Redis at 127.0.0.1:{redis_port}")
    assert "Fix: start Redis there" in redis
    assert by_name["disk (IMAGINE_DATA_DIR)"].startswith("ok")
    assert by_name["IMAGINE_METRICS_PORT"] == "ok   IMAGINE_METRICS_PORT: off"
    assert lines[-1].startswith("2 of 6 checks failed")
    assert "/imagine-test/present/resolve/main/config.json" in hub.paths()
    assert "Traceback" not in done.stderr


def test_style_loras_are_checked_and_a_missing_one_only_warns(tmp_path):
    ink = tmp_path / "ink.safetensors"
    ink.write_bytes(b"weights")
    styles = tmp_path / "styles.toml"
    styles.write_text(
        f'[ink]\nlora = "{ink}"\n\n[gone]\nlora = "{tmp_path / "gone.safetensors"}"\n',
        encoding="utf-8",
    )
    specs = models_to_check(
        settings(styles=str(styles), lora="", vae=""), generation=True, translation=False
    )
    checks = {s.setting: check_model(s, OFFLINE) for s in specs}
    assert checks["IMAGINE_STYLES [ink]"].status is Status.OK
    assert checks["IMAGINE_STYLES [gone]"].status is Status.WARN  # left out, the bot serves
    # The bot side with workers loads no LoRA: it does not check them.
    bot_side = models_to_check(settings(styles=str(styles)), generation=False, translation=True)
    assert not any(s.setting.startswith("IMAGINE_STYLES") for s in bot_side)
