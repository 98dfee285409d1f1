"""Milliseconds per image tool beside /imagine, on one engine, in one run.

Every action the bot offers goes through ``engine.Engine.generate`` exactly as the bot sends it:
/imagine (4 images), Vary (Subtle) and Vary (Strong) (4 images each, image-to-image), an image
prompt (4 images from a fitted upload), U (one image at twice the size, in blended tiles) and
Zoom Out 2x and 1.5x (4 images, inpainting). Random weights (``bench/sdxl_random.py``): speed
depends on shapes and kernels only, so nothing is downloaded. On CUDA each row also has the
peak GPU memory of the action (``torch.cuda.max_memory_allocated``), the figure the README's
memory promise is about.

    python bench/tools_bench.py --tiny --device cpu          # toy sizes on the CPU (CI-sized)
    python bench/tools_bench.py --device cuda                # full-size SDXL at 1024x1024

Rows are printed as a markdown table and written to ``--out`` (JSON) as soon as measured.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # `python bench/tools_bench.py` puts only bench/ on it

log = logging.getLogger("bench.tools_bench")

PROMPT = "a lighthouse on a cliff at dusk, detailed, 35mm"
SEED = 4321
STEPS = 4


@dataclass(frozen=True)
class Row:
    """One action, timed."""

    action: str
    images: int
    size: str  # of each output image
    median_ms: float
    ms_per_image: float
    vs_imagine: float  # median time / /imagine's
    peak_gib: float | None  # CUDA only


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="toy-size model and 64x64 images")
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None)
    parser.add_argument("--runs", type=int, default=3, help="timed runs, median (3)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "tools.json")
    return parser.parse_args(argv)


def _png(pixels: Any) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def actions(engine: Any, size: int) -> dict[str, Callable[[], Any]]:
    """What each button or option asks of the engine, as the bot builds it."""
    from engine import GenerationRequest
    from engine.requests import UPSCALE_FACTOR, UPSCALE_STRENGTH, VARY_STRONG, VARY_SUBTLE
    from engine.uploads import IMAGE_PROMPT_STRENGTH, fit_upload

    def request(**changes: Any) -> GenerationRequest:
        base = dict(prompt=PROMPT, seed=SEED, width=size, height=size, steps=STEPS, count=4)
        return GenerationRequest(**(base | changes))

    picture = _png(engine.generate(request(count=1)).images[0].pixels)
    upload = fit_upload(picture, size).png
    big = size * UPSCALE_FACTOR
    return {
        "/imagine": lambda: engine.generate(request()),
        "Vary (Subtle)": lambda: engine.generate(request(init_image=picture, strength=VARY_SUBTLE)),
        "Vary (Strong)": lambda: engine.generate(request(init_image=picture, strength=VARY_STRONG)),
        "image prompt": lambda: engine.generate(
            request(init_image=upload, strength=IMAGE_PROMPT_STRENGTH)
        ),
        f"U (upscale to {big}x{big})": lambda: engine.generate(
            request(
                count=1,
                width=big,
                height=big,
                init_image=picture,
                strength=UPSCALE_STRENGTH,
                operation="upscale",
            )
        ),
        "Zoom Out 2x": lambda: engine.generate(
            request(init_image=picture, strength=1.0, operation="zoom", zoom=2.0)
        ),
        "Zoom Out 1.5x": lambda: engine.generate(
            request(init_image=picture, strength=1.0, operation="zoom", zoom=1.5)
        ),
    }


def measure(name: str, run: Callable[[], Any], runs: int, device: Any) -> tuple[float, Any, Any]:
    """Median milliseconds of ``run`` (after one untimed run), its result and peak memory."""
    import torch

    run()  # first call: lazy pipelines, kernels
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    result = None
    for _ in range(runs):
        started = time.perf_counter()
        result = run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - started) * 1000)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    log.info("%s: %.1f ms", name, statistics.median(times))
    return statistics.median(times), result, peak


def table(rows: list[Row]) -> str:
    lines = [
        "| action | images | size | ms | ms/image | x /imagine | peak GiB |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        peak = f"{r.peak_gib:.1f}" if r.peak_gib is not None else "-"
        lines.append(
            f"| {r.action} | {r.images} | {r.size} | {r.median_ms:.0f} | {r.ms_per_image:.0f} "
            f"| {r.vs_imagine:.2f} | {peak} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    from bench.common import device_and_dtype, run_header
    from bench.sdxl_random import add_lcm_lora, build_pipeline, fuse_and_unload_lora
    from engine import Engine, EngineSettings

    device, dtype = device_and_dtype(args.device)
    size = 64 if args.tiny else 1024
    pipe = build_pipeline(tiny=args.tiny, device=device, dtype=dtype)
    add_lcm_lora(pipe, tiny=args.tiny)
    fuse_and_unload_lora(pipe)  # what the engine serves with
    settings = EngineSettings(
        _env_file=None,
        device=device.type,
        dtype=str(dtype).removeprefix("torch."),
        resolution=size,
        steps=STEPS,
        guidance=1.0,
        images_per_request=4,
        preview_vae="",
        translator="",
    )
    engine = Engine(pipe, settings)
    header = run_header(device, dtype, tiny=args.tiny, size=size, steps=STEPS, runs=args.runs)
    print(json.dumps(header))
    rows: list[Row] = []
    imagine_ms = None
    for name, run in actions(engine, size).items():
        ms, result, peak = measure(name, run, args.runs, device)
        imagine_ms = imagine_ms or ms
        image = result.images[0].pixels
        rows.append(
            Row(
                action=name,
                images=len(result.images),
                size=f"{image.shape[1]}x{image.shape[0]}",
                median_ms=ms,
                ms_per_image=ms / len(result.images),
                vs_imagine=ms / imagine_ms,
                peak_gib=peak,
            )
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"header": header, "rows": [asdict(r) for r in rows]}))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
