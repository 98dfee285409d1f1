"""GPU speed benchmark of the engine on a random-weight, full-size SDXL + LCM-LoRA.

Times one bot request (4 images, 4 steps, 1024x1024) end to end through ``engine.Engine``
(text encoding, denoising, decoding, uint8 pixels in host memory) for a series of variants,
plus the UNet step and the decode alone, what is left ("other": text encoders, scheduler,
conversion and host copy), the PNG encoding of the request's images on one CPU core, and
compares each with the compute floor from the FLOP counts in shared/docs/FACTS.md. Random
weights: speed depends on shapes and kernels only, so nothing is downloaded.

    python bench/gpu_bench.py --device cuda                     # full size, ~4 min on an H100
    python bench/gpu_bench.py --tiny --device cpu               # toy sizes, proves the script

Variants run in one process on one model, in the order of ``DEFAULT_VARIANTS`` (the cheap
eager rows first, the compiles, then the cheap rows that depend on nothing); each is a
try/except (a failure is a row, never the end of the run) and is skipped when its estimated
time, plus that of the cheap rows still to come, would exceed ``--budget-s``. Every row is
printed to stdout (a markdown table, header first) and written to ``--out`` (JSON) and its
``.md`` as soon as it is measured, so a killed run keeps what it measured.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import gc
import json
import logging
import math
import platform
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_STARTED = time.perf_counter()  # the budget counts imports and model building too

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # `python bench/gpu_bench.py` puts only bench/ on the path

log = logging.getLogger("bench.gpu_bench")

PROMPT = "a photo of an astronaut riding a horse on mars, detailed, 35mm"
SEED = 1234
STEPS = 4  # LCM-LoRA: what the engine runs (IMAGINE_STEPS default)
ENCODE_LIMIT_BYTES = 10 * 2**20  # Discord's per-file limit for a server without boosts

# Work per image/prompt at 1024x1024, counted with torch.utils.flop_counter (FACTS.md).
UNET_TFLOP_PER_IMAGE_STEP = 6.76
VAE_DECODE_TFLOP_PER_IMAGE = 10.47
TEXT_TFLOP_PER_PROMPT = 0.11
DEFAULT_PEAK_TFLOPS = 790.0  # dense fp16/bf16 measured on this workplace's H100/H200

# Cold-cache guess (seconds) for compile_pipeline's reduce-overhead compile of the full-size
# UNet and VAE decoder on an H100; rescaled by what the first compiled variant really took.
COMPILE_ESTIMATE_S = 120.0
FP8_SETUP_ESTIMATE_S = 20.0  # a UNet copy, quantization and the reference forward


@dataclass(frozen=True)
class Variant:
    """One configuration of the pipeline to time; flags add up on top of the engine default."""

    name: str
    description: str
    images: int = 4
    unfused_lora: bool = False
    stock_vae: bool = False
    channels_last: bool = False
    fused_qkv: bool = False
    compiled: bool = False  # engine.compiling.compile_pipeline: what IMAGINE_COMPILE runs
    fp8: bool = False
    tiny_vae: bool = False  # decode with TAESD-XL: IMAGINE_VAE_DECODER=tiny
    in_default: bool = True  # part of the default list (the others only via --variants)


ALL_EAGER = {"channels_last": True, "fused_qkv": True}

# Order matters: what the report needs most first (naive, default, all eager tricks), then the
# compiles, whose time is hard to predict (the budget keeps room for the cheap rows after
# them), then the cheap rows. The rows that only confirm what is known come last, and only
# with --variants.
VARIANTS: tuple[Variant, ...] = (
    Variant(
        "naive",
        "original main.py: LoRA unfused, stock VAE decoded in fp32, diffusers' default attention",
        unfused_lora=True,
        stock_vae=True,
    ),
    Variant("default", "engine default: LoRA fused, fp16-fix VAE, SDPA, fp16"),
    Variant("all_eager", "default + channels_last + fused QKV (no compile)", **ALL_EAGER),
    Variant(
        "compiled",
        "IMAGINE_COMPILE: compile_pipeline (channels_last, fused QKV, torch.compile UNet and "
        "VAE decoder, mode reduce-overhead = CUDA graphs)",
        compiled=True,
    ),
    Variant(
        "fp8_compiled",
        "torchao float8 UNet linears + compile_pipeline (reduce-overhead)",
        fp8=True,
        compiled=True,
    ),
    Variant(
        "tiny_vae",
        "default, decoded by TAESD-XL (IMAGINE_VAE_DECODER=tiny)",
        tiny_vae=True,
    ),
    Variant("batch16", "default, 4 requests x 4 images in one call", images=16),
    # Only with --variants: each confirms what BENCHMARKS.md already says.
    Variant(
        "channels_last",
        "default + channels_last UNet and VAE",
        channels_last=True,
        in_default=False,
    ),
    Variant("fused_qkv", "default + pipe.fuse_qkv_projections()", fused_qkv=True, in_default=False),
    Variant("batch8", "default, 2 requests x 4 images in one call", images=8, in_default=False),
    Variant(
        "fp8",
        "default + torchao float8 dynamic-activation/weight UNet linears (eager)",
        fp8=True,
        in_default=False,
    ),
)
VARIANTS_BY_NAME = {v.name: v for v in VARIANTS}
DEFAULT_VARIANTS = tuple(v.name for v in VARIANTS if v.in_default)


@dataclass(frozen=True)
class Work:
    """TFLOP of each part of one request, the basis of the compute floor."""

    unet_tflop_per_image_step: float
    vae_tflop_per_image: float
    text_tflop_per_prompt: float
    source: str

    def floor_ms(self, tflop: float, peak_tflops: float) -> float:
        """Milliseconds ``tflop`` takes at ``peak_tflops``."""
        return tflop / peak_tflops * 1000.0


@dataclass
class Row:
    """One variant's measurements (None where not measured). Mutable while it is filled in."""

    variant: str
    description: str
    status: str = "ok"
    images: int = 4
    decoder: str | None = None  # class of what decoded the images
    ms_per_request: float | None = None
    ms_per_image: float | None = None
    images_per_s: float | None = None
    request_ms_runs: list[float] = field(default_factory=list)
    first_request_s: float | None = None
    setup_s: float | None = None
    compile_s: float | None = None
    unet_step_ms: float | None = None
    vae_decode_ms: float | None = None
    # ms/request - steps x UNet step - decode: text encoders, scheduler, uint8 + host copy.
    other_ms: float | None = None
    encode_ms: float | None = None  # encode_images of one request's images, one CPU core
    encode_kib: float | None = None  # their files, together
    image_shape: list[int] | None = None
    vae_tflop_per_image: float | None = None
    floor_request_ms: float | None = None
    floor_unet_step_ms: float | None = None
    floor_vae_ms: float | None = None
    request_of_floor: float | None = None
    unet_of_floor: float | None = None
    vae_of_floor: float | None = None
    peak_mem_gib: float | None = None
    nonfinite: bool | None = None
    fp8_rel_error: float | None = None
    lora_layers: int | None = None
    # Frames torch.compile compiled during the variant: 2 (UNet, VAE decoder) when compiled,
    # more = recompiles; 0 for an eager variant (a compile left behind would show here).
    compiled_frames: int | None = None
    channels_last: bool | None = None  # the UNet's memory format while it was timed
    attn_processors: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class BenchContext:
    """What the variants share: the one pipeline, its state, the clock and the settings."""

    pipe: Any
    args: argparse.Namespace
    device: Any  # torch.device
    dtype: Any  # torch.dtype
    size: int
    work: Work
    lora_fused: bool = False
    request_s_estimate: float = 0.0
    compile_scale: float = 1.0

    def elapsed_s(self) -> float:
        return time.perf_counter() - _STARTED

    def sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


# -- variant set-up (each context manager undoes itself, so variants share one model) --------


@contextlib.contextmanager
def _stock_vae(ctx: BenchContext) -> Iterator[None]:
    from bench.sdxl_random import set_vae_upcast

    set_vae_upcast(ctx.pipe, True)
    try:
        yield
    finally:
        set_vae_upcast(ctx.pipe, False)


@contextlib.contextmanager
def _channels_last(ctx: BenchContext) -> Iterator[None]:
    import torch

    ctx.pipe.unet.to(memory_format=torch.channels_last)
    ctx.pipe.vae.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        ctx.pipe.unet.to(memory_format=torch.contiguous_format)
        ctx.pipe.vae.to(memory_format=torch.contiguous_format)


@contextlib.contextmanager
def _fused_qkv(ctx: BenchContext) -> Iterator[None]:
    ctx.pipe.fuse_qkv_projections()
    try:
        yield
    finally:
        ctx.pipe.unfuse_qkv_projections()


def build_tiny_decoder(*, tiny: bool, device: Any, dtype: Any, seed: int = 7) -> Any:
    """TAESD-XL (``AutoencoderTiny``'s default config is its architecture), random weights.

    ``tiny``: the same structure at toy widths, for the CPU check.
    """
    from diffusers import AutoencoderTiny

    from bench.sdxl_random import init_small_

    config: dict[str, Any] = {}
    if tiny:
        config = {
            "encoder_block_out_channels": (16, 16, 16, 16),
            "decoder_block_out_channels": (16, 16, 16, 16),
            "num_encoder_blocks": (1, 1, 1, 1),
            "num_decoder_blocks": (1, 1, 1, 1),
        }
    taesd = AutoencoderTiny(**config).to(device=device, dtype=dtype)
    init_small_(taesd, seed=seed)
    return taesd.eval().requires_grad_(False)


# Cross-attention K/V see only 77 tokens (negligible work) and odd matmul shapes; skip them.
_FP8_SKIP = ("attn2.to_k", "attn2.to_v", "attn2.to_kv")


def _fp8_filter(module: Any, fqn: str) -> bool:
    """Quantize the transformer blocks' linears: nearly all of the UNet's matmul FLOPs."""
    import torch

    return (
        isinstance(module, torch.nn.Linear)
        and "transformer_blocks" in fqn
        and not fqn.endswith(_FP8_SKIP)
    )


def _quantize_fp8(unet: Any, granularity: str) -> None:
    """Swap the UNet's linears for torchao float8 (dynamic activation + weight scaling)."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("float8 matmuls need a CUDA GPU")
    major, minor = torch.cuda.get_device_capability()
    if (major, minor) < (8, 9):
        raise RuntimeError(f"float8 matmuls need compute capability >= 8.9, have {major}.{minor}")
    from torchao.quantization import quantize_

    try:  # torchao >= 0.9 config objects
        from torchao.quantization import (
            Float8DynamicActivationFloat8WeightConfig,
            PerRow,
            PerTensor,
        )

        scale = PerRow() if granularity == "row" else PerTensor()
        config = Float8DynamicActivationFloat8WeightConfig(granularity=scale)
    except ImportError:  # older torchao: function-style API
        from torchao.quantization import float8_dynamic_activation_float8_weight

        config = float8_dynamic_activation_float8_weight()
    quantize_(unet, config, filter_fn=_fp8_filter)


def _already_fused() -> None:
    """``fuse_qkv_projections`` of a UNet fused before it was quantized: nothing to do.

    Fusing again would rebuild ``to_qkv``/``to_kv`` from the quantized ``to_q``/``to_k``/
    ``to_v`` (unquantized, or broken). The fused linears are what runs, so they are what the
    float8 copy quantizes; compile_pipeline then does everything else as for the engine.
    """


@contextlib.contextmanager
def _fp8_unet(ctx: BenchContext, row: Row, *, fuse_qkv: bool) -> Iterator[None]:
    """A float8 copy of the UNet (per-row scales, else per-tensor) swapped into the pipeline.

    ``fuse_qkv``: the copy's QKV projections are fused before quantizing (for
    compile_pipeline, which fuses them too); the pipeline's own UNet is never changed.
    """
    import torch

    original = ctx.pipe.unet
    with torch.inference_mode():
        inputs = _unet_inputs(ctx, row.images)
        reference = call_unet(original, inputs)[0].float()
    quantized, errors = None, []
    for granularity in ("row", "tensor"):
        candidate = copy.deepcopy(original)
        try:
            if fuse_qkv:
                candidate.fuse_qkv_projections()
            _quantize_fp8(candidate, granularity)
            with torch.inference_mode():
                out = call_unet(candidate, inputs)[0].float()
        except ImportError:
            raise
        except Exception as exc:
            if "capability" in str(exc) or "CUDA GPU" in str(exc):
                raise
            errors.append(f"per-{granularity}: {type(exc).__name__}: {str(exc)[:150]}")
            del candidate
            _free(ctx)
            continue
        quantized = candidate
        if fuse_qkv:
            quantized.fuse_qkv_projections = _already_fused
        row.fp8_rel_error = float((out - reference).norm() / reference.norm())
        row.notes.append(f"fp8 per-{granularity} scales")
        break
    if quantized is None:
        raise RuntimeError("float8 failed: " + "; ".join(errors))
    row.notes += errors
    try:
        ctx.pipe.unet = quantized
        yield
    finally:
        ctx.pipe.unet = original
        del quantized
        _free(ctx)


@contextlib.contextmanager
def _engine_compiled(ctx: BenchContext, decoder: Any) -> Iterator[None]:
    """``engine.compiling.compile_pipeline`` (what IMAGINE_COMPILE runs), undone afterwards.

    It works in place: channels_last UNet and decoder, fused QKV (UNet and VAE), then
    ``Module.compile`` of the UNet and ``decoder.decoder``, which sets the module's
    ``_compiled_call_impl``; dropping that attribute makes the module eager again.
    """
    import torch
    import torch._dynamo

    from engine.compiling import compile_pipeline

    pipe = ctx.pipe
    unet = pipe.unet
    processors = {"unet": unet.attn_processors, "vae": pipe.vae.attn_processors}
    try:
        compile_pipeline(pipe, decoder, backend=ctx.args.compile_backend)
        yield
    finally:
        for module in (unet, decoder.decoder):
            vars(module).pop("_compiled_call_impl", None)  # back to the class default, None
        torch._dynamo.reset()
        unet.set_attn_processor(processors["unet"])
        pipe.vae.set_attn_processor(processors["vae"])
        pipe.fusing_unet = pipe.fusing_vae = False
        unet.to(memory_format=torch.contiguous_format)
        decoder.to(memory_format=torch.contiguous_format)


def _is_channels_last(unet: Any) -> bool:
    """Whether the UNet's convolutions are in channels_last memory format."""
    import torch

    weight = unet.conv_in.weight
    return weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()


def _free(ctx: BenchContext) -> None:
    import torch

    gc.collect()
    if ctx.device.type == "cuda":
        torch.cuda.empty_cache()


def _ensure_lora_state(ctx: BenchContext, unfused: bool) -> None:
    """The base model starts with an unfused LoRA; fuse it once, for good, when first needed."""
    from bench.sdxl_random import fuse_and_unload_lora

    if unfused and ctx.lora_fused:
        raise RuntimeError("the LoRA is already fused; run the naive variant first")
    if not unfused and not ctx.lora_fused:
        fuse_and_unload_lora(ctx.pipe)
        ctx.lora_fused = True


# -- measurements -------------------------------------------------------------------------------


def _unet_inputs(ctx: BenchContext, images: int) -> dict[str, Any]:
    return unet_inputs(ctx.pipe, ctx.size, ctx.device, ctx.dtype, images)


def call_unet(unet: Any, inputs: dict[str, Any]) -> Any:
    """Call ``unet`` the way the SDXL pipeline does: sample and timestep positional.

    torch.compile guards on how arguments are passed; any difference from the pipeline's call
    would recompile the UNet (and record new CUDA graphs) just for this measurement.
    """
    rest = {k: v for k, v in inputs.items() if k not in ("sample", "timestep")}
    return unet(inputs["sample"], inputs["timestep"], **rest)


def unet_inputs(pipe: Any, size: int, device: Any, dtype: Any, images: int) -> dict[str, Any]:
    """UNet inputs as the SDXL pipeline builds them: call under ``torch.inference_mode()``
    (inference tensors, like the engine's), pass through ``call_unet``."""
    import torch

    gen = torch.Generator(device=device).manual_seed(SEED)
    latent = size // pipe.vae_scale_factor
    hidden = pipe.unet.config.cross_attention_dim
    pooled = pipe.text_encoder_2.config.projection_dim

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, device=device, dtype=dtype)

    return {
        "sample": randn(images, 4, latent, latent),
        "timestep": torch.tensor(999, device=device),
        "encoder_hidden_states": randn(images, 77, hidden),
        "timestep_cond": None,
        "cross_attention_kwargs": None,
        "added_cond_kwargs": {
            "text_embeds": randn(images, pooled),
            "time_ids": torch.tensor(
                [[size, size, 0, 0, size, size]] * images, device=device, dtype=dtype
            ),
        },
        "return_dict": False,
    }


def _median_ms(ctx: BenchContext, fn: Callable[[], Any], runs: int) -> tuple[float, Any]:
    """Median wall time of ``fn`` over ``runs`` calls (synchronised), and its last output."""
    times, out = [], None
    for _ in range(max(1, runs)):
        ctx.sync()
        started = time.perf_counter()
        out = fn()
        ctx.sync()
        times.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(times), out


def _time_unet_step(ctx: BenchContext, images: int) -> tuple[float, bool]:
    """Median ms of one UNet forward at ``images`` batch; and whether its output is finite."""
    import torch

    with torch.inference_mode():
        inputs = _unet_inputs(ctx, images)
        call_unet(ctx.pipe.unet, inputs)  # warm-up (cuDNN/cuBLAS choice, graph replay set-up)
        ms, out = _median_ms(ctx, lambda: call_unet(ctx.pipe.unet, inputs), ctx.args.runs)
    return ms, bool(torch.isfinite(out[0]).all())


def _decoder_latents(ctx: BenchContext, images: int) -> Any:
    """Random latents as the pipeline hands them to ``engine.decoding``."""
    import torch

    gen = torch.Generator(device=ctx.device).manual_seed(SEED)
    latent = ctx.size // ctx.pipe.vae_scale_factor
    with torch.inference_mode():  # inference tensors like the pipeline's: no recompile
        latents = torch.randn(images, 4, latent, latent, generator=gen, device=ctx.device)
        return latents.to(ctx.dtype)


def _time_vae_decode(ctx: BenchContext, decoder: Any, images: int) -> tuple[float, bool]:
    """Median ms of the engine's decode (``engine.decoding.decode_on_device``: unscale,
    upcast when the VAE asks for it) on ``images`` latents, without the uint8 conversion and
    host copy that "other ms" counts."""
    import torch

    from engine.decoding import decode_on_device

    latents = _decoder_latents(ctx, images)
    with torch.inference_mode():
        decode_on_device(decoder, latents)
        ms, out = _median_ms(ctx, lambda: decode_on_device(decoder, latents), ctx.args.runs)
    return ms, bool(torch.isfinite(out).all())


def _decoder_tflop(ctx: BenchContext, decoder: Any) -> float:
    """TFLOP of one image's decode by ``decoder`` at the bench's size (torch's flop counter)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from engine.decoding import decode_on_device

    latents = _decoder_latents(ctx, 1)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        decode_on_device(decoder, latents)
    return counter.get_total_flops() / 1e12


def _time_requests(ctx: BenchContext, engine: Any, row: Row) -> list[Any]:
    """Warm-up and timed runs of one bot request (or ``images / 4`` requests batched).

    Returns the first request's images (``GeneratedImage``) of the last run.
    """
    from engine import EngineSettings, make_request

    settings: EngineSettings = engine.settings
    per_request = settings.images_per_request
    requests = [
        make_request(PROMPT, settings=settings, seed=SEED + i * per_request)
        for i in range(max(1, row.images // per_request))
    ]

    def run() -> list[Any]:
        results = engine.generate_batch(requests)
        # The pixels are what the engine hands over (uint8 in host memory): no PIL here.
        count = sum(len(result.images) for result in results)
        if count != row.images:
            raise RuntimeError(f"expected {row.images} images, got {count}")
        return list(results[0].images)

    ctx.sync()
    started = time.perf_counter()
    images = run()  # first call: lazy init, compilation, autotuning, CUDA graph recording
    row.first_request_s = time.perf_counter() - started
    for _ in range(ctx.args.warmup):
        run()
    for _ in range(ctx.args.runs):
        ctx.sync()
        started = time.perf_counter()
        images = run()
        ctx.sync()
        row.request_ms_runs.append((time.perf_counter() - started) * 1000.0)
    row.ms_per_request = statistics.median(row.request_ms_runs)
    row.ms_per_image = row.ms_per_request / row.images
    row.images_per_s = row.images / (row.ms_per_request / 1000.0)
    row.image_shape = list(images[0].pixels.shape)
    return images


def _time_encode(ctx: BenchContext, images: list[Any], row: Row) -> None:
    """Median ms of ``encode_images`` (the bot's PNG writer) on one request's images."""
    from engine.encoding import encode_images

    pixels = [image.pixels for image in images]
    times, files = [], []
    for _ in range(max(1, ctx.args.runs)):
        started = time.perf_counter()
        files = encode_images(pixels, ENCODE_LIMIT_BYTES)
        times.append((time.perf_counter() - started) * 1000.0)
    row.encode_ms = statistics.median(times)
    row.encode_kib = sum(len(f.data) for f in files) / 1024


def _fill_floor(ctx: BenchContext, row: Row) -> None:
    peak = ctx.args.peak_tflops
    work = ctx.work
    vae_tflop = row.vae_tflop_per_image or work.vae_tflop_per_image
    prompts = max(1, row.images // 4)
    request_tflop = (
        work.unet_tflop_per_image_step * row.images * STEPS
        + vae_tflop * row.images
        + work.text_tflop_per_prompt * prompts
    )
    row.floor_request_ms = work.floor_ms(request_tflop, peak)
    row.floor_unet_step_ms = work.floor_ms(work.unet_tflop_per_image_step * row.images, peak)
    row.floor_vae_ms = work.floor_ms(vae_tflop * row.images, peak)
    if row.ms_per_request:
        row.request_of_floor = row.floor_request_ms / row.ms_per_request
    if row.unet_step_ms:
        row.unet_of_floor = row.floor_unet_step_ms / row.unet_step_ms
    if row.vae_decode_ms:
        row.vae_of_floor = row.floor_vae_ms / row.vae_decode_ms


def _estimate_s(ctx: BenchContext, variant: Variant) -> float:
    """Rough seconds the variant will take: requests and timings, plus compilation."""
    calls = 1 + ctx.args.warmup + ctx.args.runs + 1  # + UNet and VAE timings ~ one request
    estimate = ctx.request_s_estimate * (variant.images / 4) * calls
    if variant.compiled and ctx.device.type == "cuda" and not ctx.args.tiny:
        estimate += COMPILE_ESTIMATE_S * ctx.compile_scale
    if variant.fp8:
        estimate += FP8_SETUP_ESTIMATE_S if not ctx.args.tiny else 1.0
    return estimate


def _runs_here(ctx: BenchContext, variant: Variant) -> str | None:
    """Why ``variant`` cannot run on this device, or None."""
    if variant.compiled and ctx.device.type != "cuda" and ctx.args.compile_backend == "inductor":
        return "skipped: torch.compile variants run on CUDA only (or --compile-backend eager)"
    return None


def run_variant(ctx: BenchContext, variant: Variant, later: tuple[Variant, ...] = ()) -> Row:
    """Set the variant up on the shared pipeline, time it, undo the set-up; never raises.

    ``later``: the variants still to run; a compile may not take the time the cheap ones need.
    """
    import torch

    from bench.sdxl_random import count_lora_layers
    from engine.compiling import compiled_frames

    row = Row(variant.name, variant.description, images=variant.images)
    why_not = _runs_here(ctx, variant)
    if why_not:
        row.status = why_not
        return row
    estimate = _estimate_s(ctx, variant)
    reserve = 0.0
    if variant.compiled:
        reserve = sum(
            _estimate_s(ctx, v) for v in later if not v.compiled and _runs_here(ctx, v) is None
        )
    left = ctx.args.budget_s - ctx.elapsed_s()
    if estimate + reserve > left:
        kept = f" + ~{reserve:.0f} s kept for the cheap rows after it" if reserve else ""
        row.status = (
            f"skipped: would exceed budget (needs ~{estimate:.0f} s{kept}, {left:.0f} s left)"
        )
        return row
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(ctx.device)
    try:
        _ensure_lora_state(ctx, unfused=variant.unfused_lora)
        with contextlib.ExitStack() as stack:
            started = time.perf_counter()
            decoder = ctx.pipe.vae
            if variant.tiny_vae:
                decoder = build_tiny_decoder(tiny=ctx.args.tiny, device=ctx.device, dtype=ctx.dtype)
                row.vae_tflop_per_image = _decoder_tflop(ctx, decoder)
            if variant.stock_vae:
                stack.enter_context(_stock_vae(ctx))
            if variant.channels_last:
                stack.enter_context(_channels_last(ctx))
            if variant.fused_qkv:
                stack.enter_context(_fused_qkv(ctx))
            if variant.fp8:
                stack.enter_context(_fp8_unet(ctx, row, fuse_qkv=variant.compiled))
            frames_before = compiled_frames()
            if variant.compiled:
                stack.enter_context(_engine_compiled(ctx, decoder))
            row.setup_s = time.perf_counter() - started
            row.decoder = type(decoder).__name__
            unet = ctx.pipe.unet
            row.lora_layers = count_lora_layers(unet)
            row.channels_last = _is_channels_last(unet)
            row.attn_processors = dict(
                Counter(type(p).__name__ for p in unet.attn_processors.values())
            )
            engine = _make_engine(ctx, decoder)
            images = _time_requests(ctx, engine, row)
            if variant.compiled:
                # The first call compiles (and records graphs); the rest of it is one request.
                row.compile_s = row.first_request_s - row.ms_per_request / 1000.0
            row.unet_step_ms, unet_finite = _time_unet_step(ctx, variant.images)
            row.vae_decode_ms, vae_finite = _time_vae_decode(ctx, decoder, variant.images)
            row.other_ms = row.ms_per_request - STEPS * row.unet_step_ms - row.vae_decode_ms
            row.nonfinite = not (unet_finite and vae_finite)
            row.compiled_frames = compiled_frames() - frames_before
            if variant.compiled and row.compiled_frames > 2:
                row.notes.append(f"{row.compiled_frames} compiled frames (recompiles?)")
            if not variant.compiled and row.compiled_frames:
                row.notes.append(f"{row.compiled_frames} compiled frames in an eager variant")
            if row.nonfinite:
                row.notes.append("NaN/inf in UNet or VAE output (random weights overflowed)")
            del engine
        # Off the GPU's clock: the bot encodes in a process pool while the GPU goes on.
        _time_encode(ctx, images, row)
        del images
        if ctx.device.type == "cuda":
            row.peak_mem_gib = torch.cuda.max_memory_allocated(ctx.device) / 2**30
        if not (variant.compiled or variant.fp8):
            # Eager, unquantized: the best guess for the cost of the variants still to come.
            ctx.request_s_estimate = row.ms_per_request / 1000.0 * 4 / variant.images
        if variant.compiled and row.compile_s is not None and not ctx.args.tiny:
            ctx.compile_scale = max(0.5, row.compile_s / COMPILE_ESTIMATE_S)
        _fill_floor(ctx, row)
    except ImportError as exc:
        row.status = f"unavailable: {type(exc).__name__}: {exc}"
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        if variant.fp8 and ("capability" in first or "CUDA GPU" in first):
            row.status = f"unavailable: {first}"  # expected on CPU / pre-Hopper: no traceback
        else:
            log.exception("variant %s failed", variant.name)
            row.status = f"error: {type(exc).__name__}: {first}"
    finally:
        _free(ctx)
    return row


def _make_engine(ctx: BenchContext, decoder: Any) -> Any:
    from engine import Engine, EngineSettings

    settings = EngineSettings(
        _env_file=None,
        device=ctx.device.type,
        dtype=str(ctx.dtype).removeprefix("torch."),
        resolution=ctx.size,
        steps=STEPS,
        guidance=1.0,
        images_per_request=4,
        max_batch_images=16,
        compile=False,  # the bench runs compile_pipeline itself, per variant
        vae_decoder="full" if decoder is ctx.pipe.vae else "tiny",
        preview_vae="",
        translator="",
    )
    return Engine(ctx.pipe, settings, decoder=decoder)


# -- tiny work model ------------------------------------------------------------------------------


def count_work(pipe: Any, size: int, device: Any, dtype: Any) -> Work:
    """Count FLOPs of one image's UNet step, VAE decode and one prompt (for toy sizes)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counts = []
    with torch.inference_mode():
        inputs = unet_inputs(pipe, size, device, dtype, 1)
        latent = size // pipe.vae_scale_factor
        latents = torch.zeros(1, 4, latent, latent, device=device, dtype=dtype)
        ids = torch.zeros(1, 77, dtype=torch.long, device=device)
        for fn in (
            lambda: call_unet(pipe.unet, inputs),
            lambda: pipe.vae.decode(latents),
            lambda: (pipe.text_encoder(ids), pipe.text_encoder_2(ids)),
        ):
            counter = FlopCounterMode(display=False)
            with counter:
                fn()
            counts.append(counter.get_total_flops() / 1e12)
    return Work(*counts, source="counted with torch.utils.flop_counter at toy sizes")


# -- output ---------------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, spec)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.3g}%"


TABLE_COLUMNS = (
    "variant",
    "images",
    "ms/request",
    "ms/image",
    "img/s",
    "UNet ms/step",
    "VAE ms",
    "other ms",
    "encode ms",
    "request % floor",
    "UNet % floor",
    "VAE % floor",
    "peak GiB",
    "first call s",
    "notes",
)


def table_header(header: dict[str, Any]) -> list[str]:
    """The lines above the table's rows: what was measured how, and the column titles."""
    return [
        f"{header['card']}, torch {header['torch']}, diffusers {header['diffusers']}, "
        f"{header['dtype']}, {header['size']}x{header['size']}, {STEPS} steps, "
        f"median of {header['runs']} after {header['warmup']} warm-up; "
        f"floor at {header['peak_tflops']:g} TFLOP/s "
        f"({header['work']['source']}). '% floor' = floor time / measured time. "
        f"other = ms/request - {STEPS} x UNet ms/step - VAE ms (text encoders, scheduler, "
        f"uint8 conversion, host copy); encode = encode_images of one request's "
        f"{header['images_per_request']} images on one CPU core ({header['png_encoder']}; "
        "random weights make noise (full VAE) or flat images (TAESD), not pictures: "
        "bench/encode_bench.py has the encoders on real ones).",
        "",
        "| " + " | ".join(TABLE_COLUMNS) + " |",
        "| --- " + "| ---: " * (len(TABLE_COLUMNS) - 2) + "| --- |",
    ]


def table_row(r: Row) -> str:
    """One markdown table row."""
    notes = [] if r.status == "ok" else [r.status]
    if r.decoder and r.decoder != "AutoencoderKL":
        notes.append(f"decoded by {r.decoder}")
    if r.fp8_rel_error is not None:
        notes.append(f"fp8 rel. error {r.fp8_rel_error:.2e}")
    if r.compile_s is not None and r.compile_s > 1:
        notes.append(f"compile ~{r.compile_s:.0f} s")
    if r.lora_layers:
        notes.append(f"{r.lora_layers} unfused LoRA layers")
    notes += r.notes
    return (
        f"| {r.variant} | {r.images} | {_fmt(r.ms_per_request, '.1f')} "
        f"| {_fmt(r.ms_per_image, '.1f')} | {_fmt(r.images_per_s, '.2f')} "
        f"| {_fmt(r.unet_step_ms, '.1f')} | {_fmt(r.vae_decode_ms, '.1f')} "
        f"| {_fmt(r.other_ms, '.1f')} | {_fmt(r.encode_ms, '.1f')} "
        f"| {_pct(r.request_of_floor)} | {_pct(r.unet_of_floor)} | {_pct(r.vae_of_floor)} "
        f"| {_fmt(r.peak_mem_gib, '.1f')} | {_fmt(r.first_request_s, '.1f')} "
        f"| {'; '.join(notes).replace('|', '/')} |"
    )


def markdown_table(rows: list[Row], header: dict[str, Any]) -> str:
    """The results as a markdown table, ready to paste into BENCHMARKS.md."""
    return "\n".join([*table_header(header), *(table_row(r) for r in rows)])


def _finite(value: Any) -> Any:
    """NaN/inf (a diverged measurement) as strings, so the JSON stays standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _write(out: Path, header: dict[str, Any], rows: list[Row]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {**header, "elapsed_s": time.perf_counter() - _STARTED}
    payload["rows"] = [dataclasses.asdict(r) for r in rows]
    tmp = out.with_suffix(out.suffix + ".tmp")
    text = json.dumps(_finite(payload), indent=2, allow_nan=False, default=str)
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    out.with_suffix(".md").write_text(markdown_table(rows, header) + "\n", encoding="utf-8")


def _versions() -> dict[str, str]:
    from importlib import metadata

    found = {}
    for name in (
        "torch",
        "diffusers",
        "transformers",
        "peft",
        "accelerate",
        "torchao",
        "triton",
        "fpng",
    ):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="toy-size model and 64x64 images")
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None)
    parser.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help="comma-separated, run in the built-in order: "
        + ", ".join(VARIANTS_BY_NAME)
        + " (default: "
        + ",".join(DEFAULT_VARIANTS)
        + ")",
    )
    parser.add_argument("--runs", type=int, default=3, help="timed runs, median (3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs after the first (1)")
    parser.add_argument("--budget-s", type=float, default=240.0, help="skip what would overrun")
    parser.add_argument("--peak-tflops", type=float, default=DEFAULT_PEAK_TFLOPS)
    parser.add_argument(
        "--compile-backend",
        choices=("inductor", "eager", "aot_eager"),
        default="inductor",
        help="eager/aot_eager: run the compile variants' compile_pipeline on a CPU (no speed-up)",
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "gpu.json")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS_BY_NAME]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS_BY_NAME)}")
    args.variant_list = [v for v in VARIANTS if v.name in names]
    return args


def _print(line: str) -> None:
    print(line, flush=True)  # stdout is the table: each line out as soon as it is known


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status (0 even when some variants failed)."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    import torch

    from bench.sdxl_random import add_lcm_lora, build_pipeline
    from engine.encoding import png_encoder

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    size = 64 if args.tiny else 1024
    if device.type == "cpu" and args.tiny:
        # Toy shapes gain nothing from threads, and on a shared CPU spinning OpenMP workers
        # make a 10 s run take a minute.
        torch.set_num_threads(1)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    # No inductor settings of its own: the compiled rows run what the engine runs.

    started = time.perf_counter()
    pipe = build_pipeline(tiny=args.tiny, device=device, dtype=dtype, force_upcast=False)
    add_lcm_lora(pipe, tiny=args.tiny)
    build_s = time.perf_counter() - started
    if args.tiny:
        work = count_work(pipe, size, device, dtype)
    else:
        work = Work(
            UNET_TFLOP_PER_IMAGE_STEP,
            VAE_DECODE_TFLOP_PER_IMAGE,
            TEXT_TFLOP_PER_PROMPT,
            source="FACTS.md flop counts at 1024x1024",
        )
    header: dict[str, Any] = {
        "card": card or "cpu",
        **_versions(),
        "python": platform.python_version(),
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "tiny": args.tiny,
        "size": size,
        "steps": STEPS,
        "images_per_request": 4,
        "runs": args.runs,
        "warmup": args.warmup,
        "budget_s": args.budget_s,
        "peak_tflops": args.peak_tflops,
        "compile_backend": args.compile_backend,
        "png_encoder": png_encoder(),
        "build_s": build_s,
        "work": dataclasses.asdict(work),
    }
    log.info(
        "model built in %.1f s on %s; %.0f s of budget used",
        build_s,
        card,
        time.perf_counter() - _STARTED,
    )
    ctx = BenchContext(pipe, args, device, dtype, size, work)
    # Guess for the first budget check; replaced by the first measured request.
    ctx.request_s_estimate = 0.5 if args.tiny else 3.0
    for line in table_header(header):
        _print(line)
    rows: list[Row] = []
    variants = tuple(args.variant_list)
    for index, variant in enumerate(variants):
        log.info("variant %s: %s", variant.name, variant.description)
        row = run_variant(ctx, variant, later=variants[index + 1 :])
        rows.append(row)
        _write(args.out, header, rows)
        _print(table_row(row))  # the CLI's output: paste into BENCHMARKS.md
        log.info(
            "variant %s: %s, %s ms/request, UNet %s ms/step, VAE %s ms (%.0f s elapsed)",
            row.variant,
            row.status,
            _fmt(row.ms_per_request, ".1f"),
            _fmt(row.unet_step_ms, ".1f"),
            _fmt(row.vae_decode_ms, ".1f"),
            ctx.elapsed_s(),
        )
    log.info("done in %.0f s; table in %s", ctx.elapsed_s(), args.out.with_suffix(".md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
