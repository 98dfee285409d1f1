"""bench/gpu_bench.py end to end at toy sizes on the CPU, as its own process (like on the GPU)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.gpu_bench import DEFAULT_VARIANTS, parse_args

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "bench" / "gpu_bench.py"

EXPECTED_DEFAULT = [
    "naive",
    "default",
    "all_eager",
    "compiled",
    "fp8_compiled",
    "tiny_vae",
    "batch16",
]


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
    """The default variant list, as the device runs it, at toy sizes on the CPU."""
    out = tmp_path_factory.mktemp("gpu_bench") / "gpu.json"
    proc = _run(
        *("--tiny", "--device", "cpu", "--runs", "1", "--warmup", "0", "--out", str(out)),
        timeout=140,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text()), proc.stdout, out


def test_default_variant_list_and_order() -> None:
    assert list(DEFAULT_VARIANTS) == EXPECTED_DEFAULT
    assert [v.name for v in parse_args([]).variant_list] == EXPECTED_DEFAULT
    args = parse_args([])
    assert (args.runs, args.warmup, args.budget_s) == (3, 1, 240.0)
    # What only confirms the known stays selectable, in the built-in order.
    chosen = parse_args(["--variants", "fp8,batch8,default"]).variant_list
    assert [v.name for v in chosen] == ["default", "batch8", "fp8"]
    assert [v.name for v in parse_args(["--variants", "fp8_compiled"]).variant_list] == [
        "fp8_compiled"
    ]


@pytest.mark.timeout(170)
def test_default_run_times_every_cpu_variant(tiny_run: tuple[dict, str, Path]) -> None:
    result, _, _ = tiny_run
    rows = {row["variant"]: row for row in result["rows"]}
    assert list(rows) == EXPECTED_DEFAULT
    assert rows["compiled"]["status"].startswith("skipped: torch.compile")
    assert rows["fp8_compiled"]["status"].startswith("skipped: torch.compile")
    for name in ("naive", "default", "all_eager", "tiny_vae", "batch16"):
        row = rows[name]
        assert row["status"] == "ok", (name, row["status"])
        for key in ("ms_per_request", "ms_per_image", "images_per_s", "unet_step_ms"):
            assert row[key] > 0, (name, key)
        assert row["vae_decode_ms"] > 0
        assert row["floor_request_ms"] > 0
        # Everything outside the UNet and the decode, and the PNGs of one request.
        assert row["other_ms"] is not None
        expected_other = row["ms_per_request"] - 4 * row["unet_step_ms"] - row["vae_decode_ms"]
        assert row["other_ms"] == pytest.approx(expected_other)
        assert row["encode_ms"] > 0
        assert row["encode_kib"] > 0
        assert row["image_shape"] == [64, 64, 3]
        assert all(math.isfinite(v) for v in _numbers(row).values()), row
        assert row["nonfinite"] is False
        assert row["compiled_frames"] == 0  # eager: nothing compiled
    assert rows["batch16"]["images"] == 16
    assert result["tiny"] is True
    assert result["png_encoder"] in ("fpng", "pillow")
    assert result["work"]["unet_tflop_per_image_step"] > 0


@pytest.mark.timeout(170)
def test_variants_change_what_they_say(tiny_run: tuple[dict, str, Path]) -> None:
    result, _, _ = tiny_run
    rows = {row["variant"]: row for row in result["rows"]}
    # The real LCM-LoRA layout wraps every attention, feed-forward, resnet and sampler layer.
    assert rows["naive"]["lora_layers"] > 100
    assert rows["default"]["lora_layers"] == 0
    assert rows["naive"]["attn_processors"] == rows["default"]["attn_processors"]
    assert set(rows["all_eager"]["attn_processors"]) == {"FusedAttnProcessor2_0"}
    assert rows["all_eager"]["channels_last"] is True
    # ... and undo it: the rows after it run the default UNet again.
    assert rows["tiny_vae"]["channels_last"] is False
    assert set(rows["tiny_vae"]["attn_processors"]) == {"AttnProcessor2_0"}


@pytest.mark.timeout(170)
def test_tiny_vae_row_decodes_with_taesd(tiny_run: tuple[dict, str, Path]) -> None:
    result, _, _ = tiny_run
    rows = {row["variant"]: row for row in result["rows"]}
    tiny, default = rows["tiny_vae"], rows["default"]
    assert tiny["decoder"] == "AutoencoderTiny"
    assert default["decoder"] == "AutoencoderKL"
    assert tiny["vae_decode_ms"] > 0
    # The floor uses TAESD's own (counted) work, not the full VAE's.
    assert 0 < tiny["vae_tflop_per_image"] < result["work"]["vae_tflop_per_image"]
    assert tiny["floor_vae_ms"] < default["floor_vae_ms"]


@pytest.mark.timeout(170)
def test_each_row_is_printed_as_a_table_line(tiny_run: tuple[dict, str, Path]) -> None:
    _, stdout, out = tiny_run
    lines = stdout.strip().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| variant |"))
    assert "other ms" in lines[header] and "encode ms" in lines[header]
    body = lines[header + 2 :]
    assert [line.split("|")[1].strip() for line in body] == EXPECTED_DEFAULT
    assert body[0].startswith("| naive | 4 |")
    assert body[-1].startswith("| batch16 | 16 |")
    assert len(lines[header].split("|")) == len(body[0].split("|"))
    assert "| tiny_vae | 4 |" in out.with_suffix(".md").read_text()


def test_unknown_variant_is_rejected() -> None:
    proc = _run("--tiny", "--variants", "naive,warp_speed", timeout=60)
    assert proc.returncode == 2
    assert "warp_speed" in proc.stderr


@pytest.mark.timeout(170)
def test_compiled_variant_runs_compile_pipeline(tmp_path: Path) -> None:
    """engine.compiling.compile_pipeline (eager backend on CPU): the UNet and the VAE decoder
    compile once each and the UNet/VAE timings reuse them (a recompile costs minutes on a GPU);
    afterwards the pipeline is eager again."""
    out = tmp_path / "gpu.json"
    proc = _run(
        *("--tiny", "--device", "cpu", "--variants", "compiled,fp8_compiled,tiny_vae"),
        *("--runs", "1", "--warmup", "0", "--compile-backend", "eager", "--out", str(out)),
        timeout=140,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = {row["variant"]: row for row in json.loads(out.read_text())["rows"]}
    row = rows["compiled"]
    assert row["status"] == "ok", row["status"]
    assert row["compiled_frames"] == 2  # UNet and VAE decoder, each compiled once
    assert set(row["attn_processors"]) == {"FusedAttnProcessor2_0"}  # fused QKV is on
    assert row["channels_last"] is True
    assert row["ms_per_request"] > 0
    assert row["other_ms"] is not None and row["encode_ms"] > 0
    assert row["compile_s"] is not None
    assert rows["fp8_compiled"]["status"].startswith("unavailable")  # no CUDA GPU
    after = rows["tiny_vae"]
    assert after["status"] == "ok", after["status"]
    assert after["compiled_frames"] == 0
    assert after["channels_last"] is False
    assert set(after["attn_processors"]) == {"AttnProcessor2_0"}
