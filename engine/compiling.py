"""What ``IMAGINE_COMPILE`` compiles, how, the shapes it warms up and where its cache lives.

One place, so that ``bench/gpu_bench.py`` times exactly what the engine serves with:

- the eager tricks first: channels_last UNet and VAE decoder, fused QKV projections;
- ``torch.compile`` of the UNet and the VAE decoder in mode ``reduce-overhead`` (inductor
  kernels replayed as CUDA graphs: at 4 steps a request is short enough that kernel launch
  overhead is a real share of it). The LCM-LoRA is fused before this and stays fused.
- Shapes: dynamo's automatic dynamic shapes (``dynamic=None``): the first shape compiles
  static, the first change of batch or size recompiles once with those dimensions symbolic, and
  every later shape reuses that graph (CUDA graphs still record once per new shape, which the
  warm-up does at start). ``warmup_shapes`` lists what the bot can send: every aspect ratio x
  every batch the feeder forms (multiples of ``IMAGINE_IMAGES_PER_REQUEST`` up to
  ``IMAGINE_MAX_BATCH_IMAGES``) x guidance on/off (a negative prompt doubles the UNet batch).
- The inductor/Triton caches go to one folder (``<IMAGINE_DATA_DIR>/compile-cache``): a
  restart loads compiled kernels from disk instead of compiling again.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.requests import ASPECT_RATIOS, size_for_aspect_ratio

if TYPE_CHECKING:
    from engine.settings import EngineSettings

log = logging.getLogger(__name__)

COMPILE_MODE = "reduce-overhead"
RECOMPILE_LIMIT = 64  # dynamo's default (8) is below the number of shapes the warm-up runs


@dataclass(frozen=True)
class WarmupShape:
    """One batch the bot can send to the GPU."""

    width: int
    height: int
    images: int
    guidance: bool  # classifier-free guidance on: the UNet sees twice the images


def warmup_shapes(settings: EngineSettings) -> list[WarmupShape]:
    """Every (size, batch, guidance) combination the feeder can form, most common first."""
    per_request = settings.images_per_request
    batches = sorted(
        {per_request * n for n in range(1, settings.max_batch_images // per_request + 1)}
        or {settings.max_batch_images}
    )
    if settings.guidance > 1.0:
        guidance = [True]  # every request runs with guidance
    elif settings.negative_guidance > 1.0:
        guidance = [False, True]  # a negative prompt turns guidance on
    else:
        guidance = [False]
    sizes: list[tuple[int, int]] = []
    for ratio in ASPECT_RATIOS:
        size = size_for_aspect_ratio(ratio, settings.resolution)
        if size not in sizes:
            sizes.append(size)
    return [
        WarmupShape(width, height, images, cfg)
        for cfg in guidance
        for images in batches
        for width, height in sizes
    ]


def use_cache_dir(cache_dir: Path) -> None:
    """Keep inductor's FX graph / autograd caches and Triton's kernels under ``cache_dir``.

    Must run before the first compilation. An operator's own ``TORCHINDUCTOR_CACHE_DIR`` or
    ``TRITON_CACHE_DIR`` wins.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir))
    os.environ.setdefault("TRITON_CACHE_DIR", str(cache_dir / "triton"))
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = True
    if hasattr(inductor_config, "autotune_local_cache"):
        inductor_config.autotune_local_cache = True
    try:
        import torch._functorch.config as functorch_config

        if hasattr(functorch_config, "enable_autograd_cache"):
            functorch_config.enable_autograd_cache = True
    except ImportError:  # pragma: no cover - older torch
        pass


def compile_pipeline(pipe: Any, decoder: Any, *, backend: str = "inductor") -> None:
    """The eager tricks, then ``torch.compile`` of the UNet and ``decoder``'s decoder, in place.

    ``decoder`` is what turns latents into pixels (the full VAE or TAESD). ``backend`` other
    than inductor (``eager``, ``aot_eager``) checks the plumbing on a CPU; modes are inductor's.
    """
    import torch
    import torch._dynamo

    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(
                torch._dynamo.config,
                name,
                max(RECOMPILE_LIMIT, getattr(torch._dynamo.config, name)),
            )
    pipe.unet.to(memory_format=torch.channels_last)
    decoder.to(memory_format=torch.channels_last)
    pipe.fuse_qkv_projections()
    options = {"mode": COMPILE_MODE} if backend == "inductor" else {}
    # Module.compile() compiles in place: the pipeline keeps its UNet2DConditionModel (and
    # from_pipe, config lookups and LoRA code keep working), unlike torch.compile(module).
    pipe.unet.compile(backend=backend, **options)
    decoder.decoder.compile(backend=backend, **options)


def compiled_frames() -> int:
    """Frames torch.compile has compiled so far in this process (each recompile adds one)."""
    from torch._dynamo.utils import counters

    return int(counters["frames"]["ok"])
