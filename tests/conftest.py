"""Shared test fixtures: tiny SDXL models built from config, and a no-network guard.

Nothing heavy is imported at module level, so tests that do not use the tiny models (most of
tests/bot) do not pay for importing torch and diffusers.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from pathlib import Path

import pytest

# Nothing may come from the Hugging Face hub: fail fast instead of trying the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
# The repo root makes `engine` and `bot` importable without installing the project (plain
# `pytest` does not put the working directory on sys.path); tests/ makes `tiny_models` one.
for _path in (TESTS_DIR, REPO_ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


class NetworkBlocked(RuntimeError):
    """A test tried to connect to a non-loopback address."""


def _is_loopback(address: object) -> bool:
    host = address[0] if isinstance(address, tuple) and address else address
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False  # a host name other than localhost would need DNS: not allowed either


def _network_guard(event: str, args: tuple) -> None:
    if event != "socket.connect":
        return
    sock, address = args
    family = getattr(sock, "family", None)
    if family == getattr(socket, "AF_UNIX", object()):
        return
    if not _is_loopback(address):
        raise NetworkBlocked(f"tests must not use the network: connect to {address!r} blocked")


_guard_installed = False


@pytest.fixture(autouse=True, scope="session")
def no_network_guard() -> None:
    """Fail any socket connection to a non-loopback address (audit hooks cannot be removed)."""
    global _guard_installed
    if not _guard_installed:
        sys.addaudithook(_network_guard)
        _guard_installed = True


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight SDXL pipeline saved in diffusers format."""
    from tiny_models import build_tiny_sdxl

    path = tmp_path_factory.mktemp("tiny_sdxl")
    build_tiny_sdxl(path)
    return path


@pytest.fixture(scope="session")
def tiny_lora_path(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A random LoRA (.safetensors) for the tiny UNet, strong enough to change pixels."""
    from diffusers import UNet2DConditionModel
    from tiny_models import build_tiny_lora

    unet = UNet2DConditionModel.from_pretrained(tiny_model_dir / "unet")
    return build_tiny_lora(tmp_path_factory.mktemp("tiny_lora") / "tiny_lora.safetensors", unet)


@pytest.fixture(scope="session")
def tiny_taesd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny AutoencoderTiny for progress previews of the tiny pipeline."""
    from tiny_models import build_tiny_taesd

    path = tmp_path_factory.mktemp("tiny_taesd")
    build_tiny_taesd(path)
    return path


@pytest.fixture(scope="session")
def tiny_engine_settings(tiny_model_dir: Path, tiny_lora_path: Path):
    """EngineSettings for the tiny pipeline on CPU at 64x64, with no network-bound extras."""
    from engine import EngineSettings

    return EngineSettings(
        _env_file=None,
        model=str(tiny_model_dir),
        lora=str(tiny_lora_path),
        vae="",
        device="cpu",
        dtype="float32",
        resolution=64,
        translator="",
        safety_model="",
    )


# Rates measured by table-driven tests (tests/bot/test_blocklist.py), shown in the terminal
# summary because `pytest -q` captures what tests print. Tests call the `report_rate` fixture.
_REPORTED_RATES = pytest.StashKey[dict[str, str]]()


@pytest.fixture
def report_rate(pytestconfig: pytest.Config):
    """``report_rate(name, line)``: print ``name: line`` in the terminal summary."""

    def report(name: str, line: str) -> None:
        pytestconfig.stash.setdefault(_REPORTED_RATES, {})[name] = line

    return report


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    rates = config.stash.get(_REPORTED_RATES, {})
    if rates:
        terminalreporter.section("measured rates")
        for name, line in rates.items():
            terminalreporter.write_line(f"{name}: {line}")


# ------------------------------------------------------------------------------- Redis
@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory):
    """A Redis that tests may use but not flush or restart: the machine's at 127.0.0.1:6379
    when it runs, else a throwaway server for this test session."""
    from redis_support import MACHINE_REDIS, RedisServer, answers_ping

    if answers_ping(*MACHINE_REDIS):
        host, port = MACHINE_REDIS
        yield f"redis://{host}:{port}/0"
        return
    try:
        server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def queue_prefix(redis_url: str):
    """A key prefix of this test's own, so that tests sharing a Redis never meet; its keys
    are removed from the shared Redis afterwards."""
    import uuid

    import redis

    prefix = f"imagine-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=2)
    try:
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)
    except redis.RedisError:
        pass  # the shared server went away: nothing left to tidy
    finally:
        client.close()


@pytest.fixture
def own_redis(tmp_path: Path):
    """A ``redis-server`` of this test's own, which the test may flush, kill or restart."""
    from redis_support import RedisServer

    try:
        server = RedisServer(tmp_path / "redis").start()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def tiny_styles_file(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """An IMAGINE_STYLES file for the tiny pipeline: ``ink`` (a UNet + text-encoder LoRA, with
    trigger and negative words), ``neon`` (another rank and other modules), ``velvet``
    (``nsfw_only``), and one broken entry (no ``lora``) that must be left out."""
    from diffusers import UNet2DConditionModel
    from tiny_models import build_tiny_lora
    from transformers import CLIPTextModel

    folder = tmp_path_factory.mktemp("tiny_styles")
    unet = UNet2DConditionModel.from_pretrained(tiny_model_dir / "unet")
    text_encoder = CLIPTextModel.from_pretrained(tiny_model_dir / "text_encoder")
    ink = build_tiny_lora(folder / "ink.safetensors", unet, text_encoder=text_encoder, seed=11)
    neon = build_tiny_lora(
        folder / "neon", unet, rank=8, targets=("to_k", "ff.net.2", "proj_in"), seed=12
    )
    velvet = build_tiny_lora(folder / "velvet.safetensors", unet, seed=13)
    path = folder / "styles.toml"
    path.write_text(
        f"""
[ink]
lora = "{ink}"
weight = 0.8
trigger = "ink wash painting"
negative = "color"

[neon]
lora = "{neon}"

[velvet]
lora = "{velvet}"
weight = 1.5
nsfw_only = true

[broken]
weight = 0.5
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def hub():
    """A stand-in Hugging Face Hub on loopback for one test (``tests/hub_standin.py``)."""
    from tests.hub_standin import StandinHub

    server = StandinHub()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def tiny_captioner_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An IMAGINE_DESCRIBE_MODEL folder: a tiny random-weight BLIP (tests/tiny_captioner.py)."""
    from tests.tiny_captioner import build_tiny_captioner

    return build_tiny_captioner(tmp_path_factory.mktemp("tiny_captioner"))
