"""Styles: what switching a style LoRA between batches costs, and what the slot costs a batch.

Random style LoRAs (rank 8, 32 and 64 over the LCM-LoRA's modules, in diffusers' file format)
are written to a temporary folder and loaded the way the engine loads ``IMAGINE_STYLES``
(``engine.style_adapters.StyleAdapters.load``). Then, on one ``engine.Engine``:

- the switch: ``StyleAdapters.activate`` from one style to another (the tensor copies into the
  slot), and to "no style", median of ``--runs``;
- a batch of ``--images`` images at the engine's size: with no styles configured (no slot),
  with styles configured and none picked (the slot turned off), with a style (the slot's
  extra matmuls), and none picked with the slot on and zeroed (what a compiled engine does).

Random weights (``bench/sdxl_random.py``): speed depends on shapes only.

    python bench/styles_bench.py --tiny --device cpu     # toy sizes on the CPU (CI-sized)
    python bench/styles_bench.py --device cuda           # full-size SDXL at 1024x1024

Rows are printed as a markdown table and written to ``--out`` (JSON) as soon as measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # `python bench/styles_bench.py` puts only bench/ on it

log = logging.getLogger("bench.styles_bench")

PROMPT = "a lighthouse on a cliff at dusk, detailed, 35mm"
RANKS = (8, 32, 64)


@dataclass(frozen=True)
class Row:
    """One measured thing."""

    what: str
    median_ms: float
    note: str = ""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="toy-size SDXL")
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None)
    parser.add_argument("--runs", type=int, default=20, help="timed switches, median (20)")
    parser.add_argument("--batches", type=int, default=3, help="timed batches, median (3)")
    parser.add_argument("--images", type=int, default=4, help="images per batch (4)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "styles.json")
    return parser.parse_args(argv)


def write_style_loras(pipe: Any, folder: Path, *, tiny: bool) -> list[Path]:
    """One random LoRA file per rank of ``RANKS`` over the LCM-LoRA's UNet modules."""
    import torch
    from safetensors.torch import save_file

    from bench.sdxl_random import LCM_LORA_TARGETS

    paths = []
    for number, rank in enumerate((2, 4, 8) if tiny else RANKS):
        generator = torch.Generator().manual_seed(100 + number)
        state = {}
        for name, module in pipe.unet.named_modules():
            if not any(name.endswith(target) for target in LCM_LORA_TARGETS):
                continue
            weight = getattr(module, "weight", None)
            if not isinstance(module, torch.nn.Linear | torch.nn.Conv2d) or weight is None:
                continue
            fan_in = weight[0].numel()
            shape_a = (rank, *weight.shape[1:])
            shape_b = (weight.shape[0], rank, *([1] * (weight.dim() - 2)))
            down = torch.randn(shape_a, generator=generator) / fan_in**0.5
            up = torch.randn(shape_b, generator=generator) * 1e-3
            state[f"unet.{name}.lora_A.weight"] = down.half()
            state[f"unet.{name}.lora_B.weight"] = up.half()
        path = folder / f"style_rank{rank}.safetensors"
        save_file(state, str(path))
        paths.append(path)
    return paths


def table(rows: list[Row]) -> str:
    lines = ["| what | ms | note |", "| --- | --- | --- |"]
    lines += [f"| {r.what} | {r.median_ms:.2f} | {r.note} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    from bench.common import device_and_dtype, median_ms, run_header
    from bench.sdxl_random import add_lcm_lora, build_pipeline, fuse_and_unload_lora
    from engine import EngineSettings
    from engine.pipeline import Engine
    from engine.requests import GenerationRequest
    from engine.style_adapters import StyleAdapters
    from engine.styles import Style, StyleCatalog

    device, dtype = device_and_dtype(args.device)
    pipe = build_pipeline(tiny=args.tiny, device=device, dtype=dtype)
    add_lcm_lora(pipe, tiny=args.tiny)
    fuse_and_unload_lora(pipe)  # as the engine serves: the LCM-LoRA fused
    side = 64 if args.tiny else 1024
    settings = EngineSettings(
        _env_file=None, device=device.type, resolution=side, translator="", safety_model=""
    )
    header = run_header(device, dtype, tiny=args.tiny, size=side, images=args.images)
    print(json.dumps(header), flush=True)
    rows: list[Row] = []

    def median(run: Callable[[], Any], runs: int, device: Any) -> float:
        return median_ms(run, runs, device)[0]

    def report(row: Row) -> None:
        rows.append(row)
        log.info("%s: %.2f ms %s", row.what, row.median_ms, row.note)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        payload = {"header": header, "rows": [asdict(r) for r in rows]}
        args.out.write_text(json.dumps(payload, indent=2))

    request = GenerationRequest(prompt=PROMPT, seed=1, width=side, height=side, count=args.images)

    def batch(engine: Engine, style: str = "") -> Callable[[], Any]:
        styled = dataclasses.replace(request, style=style)
        return lambda: engine.generate_batch([styled])

    plain_engine = Engine(pipe, settings)
    baseline = median(batch(plain_engine), args.batches, device)
    report(Row("batch, no styles configured", baseline, f"{args.images} images, {side}px"))

    with tempfile.TemporaryDirectory() as folder:
        paths = write_style_loras(pipe, Path(folder), tiny=args.tiny)
        catalog = StyleCatalog(
            Style(f"s{i}", str(path), weight=0.8) for i, path in enumerate(paths)
        )
        started = time.perf_counter()
        adapters = StyleAdapters.load(pipe, catalog)
        loaded_ms = (time.perf_counter() - started) * 1000
    report(Row(f"load {len(paths)} styles (once, at start)", loaded_ms, "files to slot"))
    names = adapters.names
    steps = iter(range(10**9))

    def switch() -> None:
        adapters.activate(names[next(steps) % len(names)])

    report(Row("switch style -> another style", median(switch, args.runs, device), "copy"))

    def to_none() -> None:
        adapters.activate(names[0])
        adapters.activate(None)

    both = median(to_none, args.runs, device)
    report(Row("switch style -> none -> style (two switches)", both, ""))
    adapters.activate(names[0])
    report(
        Row(
            "same style again (no switch)",
            median(lambda: adapters.activate(names[0]), args.runs, device),
        )
    )

    engine = Engine(pipe, settings, styles=adapters)
    slot_off = median(batch(engine), args.batches, device)
    report(Row("batch, styles configured, none picked", slot_off, f"x{slot_off / baseline:.3f}"))
    styled = median(batch(engine, names[-1]), args.batches, device)
    report(Row(f"batch with a style ({names[-1]})", styled, f"x{styled / baseline:.3f}"))
    # Under IMAGINE_COMPILE the slot stays on with zeros for unstyled batches (turning it off
    # would recompile): the engine's choice, taken here without compiling.
    engine._compiled = True
    zeros = median(batch(engine), args.batches, device)
    note = f"x{zeros / baseline:.3f}, eager here"
    report(Row("batch, none picked, slot on with zeros (IMAGINE_COMPILE)", zeros, note))
    print(table(rows), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
