"""Optional models and the Hugging Face Hub: HF_ENDPOINT is honoured, a bad hub fails fast.

huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE when it is imported, and this test session
is offline (tests/conftest.py), so the loaders run in a subprocess with HF_HUB_OFFLINE unset
and HF_ENDPOINT pointing at a local stand-in hub. Nothing leaves the machine: the subprocess
blocks every connection that is not to 127.0.0.1.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.hub_standin import StandinHub

REPO = Path(__file__).resolve().parents[2]

# What the loaders' start-up may cost at most when the hub is unreachable. Without the fast
# path, transformers retried every file for ~25 s: 4m40s for the default translator.
FAIL_FAST_S = 15.0


def online_env(endpoint: str, **extra: str) -> dict[str, str]:
    """This process's environment with the hub online at ``endpoint``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "IMAGINE_", "DISCORD_")) and k != "TRANSFORMERS_OFFLINE"
    }
    env.update(
        HF_ENDPOINT=endpoint,
        HF_HUB_DISABLE_TELEMETRY="1",
        PYTHONPATH=str(REPO),
        **extra,
    )
    return env


# Run in the subprocess: block the network, then try each loader and report as JSON.
LOADERS = """
import ipaddress, json, socket, sys, time

def guard(event, args):
    if event == "socket.connect" and args[0].family in (socket.AF_INET, socket.AF_INET6):
        if not ipaddress.ip_address(args[1][0]).is_loopback:
            raise RuntimeError(f"network blocked: {args[1]!r}")

sys.addaudithook(guard)

import torch
from engine.errors import ModelNotFound
from engine.pipeline import _load_preview_vae
from engine.safety import SafetyChecker
from engine.translation import Translator

loaders = {
    "translator": Translator,
    "safety": SafetyChecker,
    "preview": lambda name: _load_preview_vae(name, torch.device("cpu"), torch.float32),
}
results = []
for kind, name in json.loads(sys.argv[1]):
    started = time.monotonic()
    try:
        outcome = {"returned": repr(loaders[kind](name))}
    except ModelNotFound as exc:
        outcome = {"error": "ModelNotFound", "message": exc.user_message}
    except Exception as exc:
        outcome = {"error": type(exc).__name__, "message": str(exc)}
    results.append({"kind": kind, "name": name, "seconds": time.monotonic() - started, **outcome})
print(json.dumps(results))
"""


def load_in_subprocess(env: dict[str, str], loads: list[tuple[str, str]]) -> list[dict]:
    done = subprocess.run(
        [sys.executable, "-c", LOADERS, json.dumps(loads)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_optional_models_come_from_hf_endpoint_and_fail_fast(hub: StandinHub) -> None:
    loads = [
        ("translator", "imagine-test/down"),
        ("safety", "imagine-test/no-such-classifier"),
        ("translator", "imagine-test/hangs"),
        ("preview", "imagine-test/down"),
    ]
    results = load_in_subprocess(online_env(hub.url, HF_HUB_ETAG_TIMEOUT="2"), loads)

    translator_down, safety_missing, translator_hangs, preview_down = results
    for result in (translator_down, safety_missing, translator_hangs):
        assert result["error"] == "ModelNotFound", result
        assert result["seconds"] < FAIL_FAST_S, result
        assert hub.url in result["message"], result  # says which hub it asked
    assert "IMAGINE_TRANSLATOR" in translator_down["message"]
    assert "500" in translator_down["message"]
    assert "IMAGINE_SAFETY_MODEL" in safety_missing["message"]
    assert "IMAGINE_TRANSLATOR" in translator_hangs["message"]
    assert "Timeout" in translator_hangs["message"]
    # A preview VAE is optional: no previews (None) rather than an error.
    assert preview_down["returned"] == "None" and preview_down["seconds"] < FAIL_FAST_S
    paths = hub.paths()
    for _, name in loads:
        assert f"/{name}/resolve/main/config.json" in paths, paths


def test_unreachable_hub_fails_fast(tmp_path: Path) -> None:
    with socket.socket() as closed:  # a port that was free a moment ago: connection refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    started = time.monotonic()
    [result] = load_in_subprocess(
        online_env(f"http://127.0.0.1:{port}"), [("translator", "Helsinki-NLP/opus-mt-zh-en")]
    )
    assert result["error"] == "ModelNotFound", result
    assert "IMAGINE_TRANSLATOR" in result["message"]
    assert "could not be loaded" in result["message"]
    assert result["seconds"] < FAIL_FAST_S, result
    assert time.monotonic() - started < 120


def test_preview_vae_that_cannot_load_only_turns_previews_off(caplog) -> None:
    import torch

    from engine.pipeline import _load_preview_vae

    with caplog.at_level(logging.WARNING, logger="engine.pipeline"):
        taesd = _load_preview_vae("imagine-test/no-such-taesd", torch.device("cpu"), torch.float32)
    assert taesd is None
    [warning] = [r for r in caplog.records if r.name == "engine.pipeline"]
    assert warning.levelno == logging.WARNING
    assert warning.getMessage().startswith("IMAGINE_PREVIEW_VAE: ")
    assert "imagine-test/no-such-taesd" in warning.getMessage() and warning.exc_info is None
