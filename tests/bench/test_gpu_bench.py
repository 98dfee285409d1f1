"""bench/gpu_bench.py end to end at toy sizes on the CPU, as its own process (like on the GPU)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "bench" / "gpu_bench.py"


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    # One thread: toy shapes gain nothing from more, and the CI machine's 2 cores are shared.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _numbers(row: dict) -> dict[str, float]:
    return {
        key: value
        for key, value in row.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, Path]:
    out = tmp_path_factory.mktemp("gpu_bench") / "gpu.json"
    proc = _run(
        "--tiny",
        "--device",
        "cpu",
        "--variants",
        "naive,default",
        "--runs",
        "1",
        "--warmup",
        "0",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text()), proc.stdout, out


@pytest.mark.timeout(150)
def test_both_variants_are_timed_with_finite_numbers(tiny_run: tuple[dict, str, Path]) -> None:
    result, _, _ = tiny_run
    rows = {row["variant"]: row for row in result["rows"]}
    assert list(rows) == ["naive", "default"]
    for row in rows.values():
        assert row["status"] == "ok", row["status"]
        for key in ("ms_per_request", "ms_per_image", "images_per_s", "unet_step_ms"):
            assert row[key] > 0, key
        assert row["vae_decode_ms"] > 0
        assert row["floor_request_ms"] > 0
        assert all(math.isfinite(v) for v in _numbers(row).values()), row
        assert row["nonfinite"] is False
        assert row["images"] == 4
    assert result["tiny"] is True
    assert result["work"]["unet_tflop_per_image_step"] > 0


@pytest.mark.timeout(150)
def test_naive_runs_an_unfused_lora_and_default_a_fused_one(
    tiny_run: tuple[dict, str, Path],
) -> None:
    result, _, _ = tiny_run
    rows = {row["variant"]: row for row in result["rows"]}
    # The real LCM-LoRA layout wraps every attention, feed-forward, resnet and sampler layer.
    assert rows["naive"]["lora_layers"] > 100
    assert rows["default"]["lora_layers"] == 0
    assert rows["naive"]["attn_processors"] == rows["default"]["attn_processors"]


@pytest.mark.timeout(150)
def test_markdown_table_is_printed_last_and_written(tiny_run: tuple[dict, str, Path]) -> None:
    _, stdout, out = tiny_run
    last_lines = stdout.strip().splitlines()[-2:]
    assert last_lines[0].startswith("| naive | 4 |")
    assert last_lines[1].startswith("| default | 4 |")
    assert "| naive | 4 |" in out.with_suffix(".md").read_text()


def test_unknown_variant_is_rejected() -> None:
    proc = _run("--tiny", "--variants", "naive,warp_speed", timeout=60)
    assert proc.returncode == 2
    assert "warp_speed" in proc.stderr


@pytest.mark.timeout(150)
def test_compiled_variant_reuses_its_graphs(tmp_path: Path) -> None:
    """The compile plumbing (eager backend on CPU): the UNet and VAE timings call exactly like
    the pipeline, so nothing recompiles (a recompile costs minutes with max-autotune on GPU)."""
    out = tmp_path / "gpu.json"
    proc = _run(
        *("--tiny", "--device", "cpu", "--variants", "all_compiled", "--runs", "1"),
        *("--warmup", "0", "--compile-backend", "eager", "--out", str(out)),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert row["status"] == "ok", row["status"]
    assert row["compiled_frames"] == 2  # UNet and vae.decode, each compiled once
    assert set(row["attn_processors"]) == {"FusedAttnProcessor2_0"}  # fused QKV is on
    assert row["ms_per_request"] > 0
    assert row["compile_s"] is not None
