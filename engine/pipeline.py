"""The synchronous engine: load SDXL + LCM-LoRA once, then turn batches of requests into images.

Used from one thread only (``EngineRunner`` owns that thread).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderTiny,
    LCMScheduler,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
)
from huggingface_hub.errors import EntryNotFoundError
from PIL import Image

from engine.compiling import (
    COMPILE_MODE,
    compile_pipeline,
    compiled_frames,
    use_cache_dir,
    warmup_shapes,
)
from engine.decoding import decode_latents, preview_image
from engine.errors import (
    EngineError,
    GenerationFailed,
    InvalidRequest,
    ModelNotFound,
    OutOfGPUMemory,
)
from engine.hub import describe, load_pretrained
from engine.prompt_encoding import MAX_CHUNKS, Conditioning, PromptEncoder
from engine.requests import (
    SEED_LIMIT,
    GeneratedImage,
    GenerationRequest,
    GenerationResult,
    StepProgress,
)
from engine.seamless import circular_padding
from engine.settings import EngineSettings
from engine.style_adapters import StyleAdapters, lora_location
from engine.styles import Style, StyleCatalog, load_styles, styled_texts
from engine.tiling import TiledUNet

log = logging.getLogger(__name__)

ProgressCallback = Callable[[StepProgress], object]

PREVIEW_MAX_SIDE = 256
CLIP_MAX_TOKENS = 77  # SDXL's CLIP text encoders, BOS and EOS included
MEMORY_HINT = (
    "SDXL in fp16 needs about 10 GB of free GPU memory for 1024x1024 images in a batch of 4 "
    "(IMAGINE_LOW_MEMORY=true makes it fit 8 GB cards)"
)
_DROPPED_PREVIEW_CHARS = 80
# What diffusers/huggingface_hub raise for a missing folder, file, repo or bad id (offline too).
_MISSING = (OSError, ValueError, EntryNotFoundError)
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass(frozen=True)
class _Job:
    """A slice of one request's images (all of them unless an OOM retry split it)."""

    index: int  # position of the request in the batch
    conditioning: Conditioning  # the request's prompt, encoded once for all its images
    seeds: tuple[int, ...]
    init_image: Image.Image | None
    mask: Image.Image | None = None  # zoom: white where the border is painted


def _first_line(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 1] + "…"


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise EngineError("IMAGINE_DEVICE is 'cuda' but no CUDA GPU is available to PyTorch.")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` -> fp16 on CUDA, fp32 on CPU (fp16 on CPU works but is ~15x slower)."""
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if device.type == "cpu" and dtype == "float16":
        log.warning("float16 on CPU is very slow; IMAGINE_DTYPE=float32 is the better choice")
    return _DTYPES[dtype]


def _is_local(name: str) -> bool:
    return Path(name).expanduser().exists()


def _not_found(what: str, name: str, exc: BaseException) -> ModelNotFound:
    where = (
        "could not be loaded from that folder"
        if _is_local(name)
        else "is not a local folder or file and could not be loaded from the Hugging Face Hub"
    )
    reason = _first_line(exc).rstrip(".")
    if not _is_local(name) and os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true"):
        reason += "; HF_HUB_OFFLINE is set, so nothing is downloaded"
    return ModelNotFound(f"{what} '{name}' not found: it {where} ({reason}).")


def _load_lora(pipe: StableDiffusionXLPipeline, lora: str) -> None:
    """Load a LoRA from a .safetensors file, a folder or a hub id, fuse it and drop the adapter."""
    try:
        source, weight_name = lora_location(lora)
    except FileNotFoundError as exc:
        raise ModelNotFound(str(exc)) from None
    try:
        pipe.load_lora_weights(source, weight_name=weight_name)
    except _MISSING as exc:
        raise _not_found("LoRA", lora, exc) from exc
    # Fusing removes the LoRA's extra matmuls and kernels from every step; unloading then drops
    # the now unused adapter weights (the fused base weights stay).
    pipe.fuse_lora()
    pipe.unload_lora_weights()


def _load_preview_vae(
    name: str, device: torch.device, dtype: torch.dtype
) -> AutoencoderTiny | None:
    """TAESD for progress previews, or None (after one warning) when it cannot be loaded.

    Previews are optional: a missing preview VAE must not keep the bot from serving, nor hold
    the start-up in hub retries (``load_pretrained`` fails fast when the hub is unreachable).
    """

    def load(local_files_only: bool) -> AutoencoderTiny:
        return AutoencoderTiny.from_pretrained(name, dtype=dtype, local_files_only=local_files_only)

    try:
        taesd = load_pretrained(name, load)
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as exc:  # offline, hub down, wrong id, broken files: all "cannot load"
        log.warning(
            "IMAGINE_PREVIEW_VAE: the preview VAE '%s' could not be loaded (%s); serving "
            "without progress previews.",
            name,
            describe(exc).rstrip("."),
        )
        return None
    return taesd.to(device).eval()


def _load_tiny_decoder(name: str, device: torch.device, dtype: torch.dtype) -> AutoencoderTiny:
    """TAESD-XL for the final images (IMAGINE_VAE_DECODER=tiny): required, like IMAGINE_VAE."""
    try:
        taesd = AutoencoderTiny.from_pretrained(name, dtype=dtype)
    except _MISSING as exc:
        raise _not_found("IMAGINE_TINY_VAE", name, exc) from exc
    return taesd.to(device).eval()


def _save_memory(pipe: StableDiffusionXLPipeline, device: torch.device, offload: bool) -> None:
    """IMAGINE_LOW_MEMORY: decode one image at a time in tiles; on a GPU, offload idle models.

    Model CPU offload keeps only the running model (a text encoder, the UNet or the VAE) on the
    GPU and moves it back to system RAM afterwards: SDXL then fits 8 GB cards, at the cost of
    moving ~7 GB over PCIe for every request.
    """
    pipe.vae.enable_slicing()
    pipe.vae.enable_tiling()
    if offload:
        pipe.enable_model_cpu_offload(device=device)
        log.info("IMAGINE_LOW_MEMORY: model CPU offload, VAE slicing and tiling")
    else:
        log.info("IMAGINE_LOW_MEMORY: VAE slicing and tiling (CPU offload is for GPUs)")


def _effective_img2img_steps(steps: int, strength: float, limit: int) -> tuple[int, int]:
    """Return (num_inference_steps, steps actually run) so img2img runs ``steps`` steps.

    diffusers runs only ``int(num_inference_steps * strength)`` of the schedule, so raise
    ``num_inference_steps`` until that equals ``steps`` (LCM caps the schedule at ``limit``).
    """
    total = max(steps, math.ceil(steps / strength))
    while int(total * strength) < steps and total < limit:
        total += 1  # float rounding, e.g. 100 * 0.29 == 28.999...
    total = min(total, limit)
    return total, max(1, min(int(total * strength), total))


class Engine:
    """Owns a loaded SDXL pipeline and generates batches of requests.

    Not thread-safe: call it from one thread (``EngineRunner`` does).
    """

    def __init__(
        self,
        pipe: StableDiffusionXLPipeline,
        settings: EngineSettings,
        *,
        preview_vae: AutoencoderTiny | None = None,
        decoder: AutoencoderKL | AutoencoderTiny | None = None,
        compile_cache: Path | None = None,
        styles: StyleAdapters | None = None,
    ) -> None:
        self.pipe = pipe
        self.settings = settings
        self.preview_vae = preview_vae
        # What turns the final latents into pixels: the pipeline's VAE, or TAESD-XL
        # (IMAGINE_VAE_DECODER=tiny).
        self.decoder = decoder if decoder is not None else pipe.vae
        self.compile_cache = compile_cache
        # With CPU offload (IMAGINE_LOW_MEMORY) the weights sit on the CPU between calls.
        self.device = pipe._execution_device
        self.dtype = pipe.unet.dtype
        self.prompts = PromptEncoder(pipe, self.device)
        # IMAGINE_STYLES: every style's LoRA, one in the pipeline per batch (none: no slots).
        self.styles = styles if styles is not None else StyleAdapters(pipe, {})
        self._img2img: StableDiffusionXLImg2ImgPipeline | None = None
        self._tiled: StableDiffusionXLImg2ImgPipeline | None = None
        self._inpaint: StableDiffusionXLInpaintPipeline | None = None
        # Upscale tiles: the model's own size (128 latent cells for SDXL at 1024 px), a quarter
        # of it overlapping; as many tiles per UNet call as images in a request.
        self.upscale_tile = max(1, settings.resolution // pipe.vae_scale_factor)
        self._compiled = False
        self._compile_tried = False
        self._frames_after_warm_up: int | None = None
        pipe.set_progress_bar_config(disable=True)
        tokenizer = pipe.tokenizer or pipe.tokenizer_2
        max_length = getattr(tokenizer, "model_max_length", CLIP_MAX_TOKENS)
        self.max_tokens = max_length if max_length < 10_000 else CLIP_MAX_TOKENS

    # -- loading ------------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        settings: EngineSettings,
        *,
        compile_cache: Path | None = None,
        styles: StyleCatalog | None = None,
    ) -> Engine:
        """Load the pipeline, swap in LCMScheduler, fuse the LoRA, move to the device.

        ``compile_cache``: where ``IMAGINE_COMPILE`` keeps compiled kernels across restarts
        (the bot and the worker pass ``<IMAGINE_DATA_DIR>/compile-cache``). ``styles``: the
        styles of ``IMAGINE_STYLES`` when the caller has read them already (else read here).

        Raises:
            ModelNotFound: the model, LoRA or VAE cannot be found. (A preview VAE that cannot
                be loaded only turns progress previews off.)
            OutOfGPUMemory: the GPU is too small for the model.
            EngineError: bad device or attention settings.
        """
        device = resolve_device(settings.device)
        dtype = resolve_dtype(settings.dtype, device)
        started = time.perf_counter()
        log.info("loading %s on %s (%s)", settings.model, device, str(dtype).removeprefix("torch."))
        components = {}
        if settings.vae:
            try:
                components["vae"] = AutoencoderKL.from_pretrained(settings.vae, dtype=dtype)
            except _MISSING as exc:
                raise _not_found("VAE", settings.vae, exc) from exc
        try:
            pipe = StableDiffusionXLPipeline.from_pretrained(
                settings.model, dtype=dtype, **components
            )
        except _MISSING as exc:
            raise _not_found("Model", settings.model, exc) from exc
        pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
        offload = settings.low_memory and device.type == "cuda"
        try:
            if not offload:
                pipe.to(device)
            if settings.lora:
                # After the move, so the LoRA is fused on the GPU rather than the CPU.
                _load_lora(pipe, settings.lora)
            # After the LCM-LoRA is fused: the style slots are the only adapters.
            catalog = styles if styles is not None else load_styles(settings.styles)
            adapters = StyleAdapters.load(pipe, catalog)
            if settings.low_memory:
                _save_memory(pipe, device, offload)
            decoder = None
            if settings.vae_decoder == "tiny":
                decoder = _load_tiny_decoder(settings.tiny_vae, device, dtype)
            preview_vae = None
            if (
                settings.preview_vae
                and decoder is not None
                and settings.preview_vae == settings.tiny_vae
            ):
                preview_vae = decoder  # one TAESD for previews and final images
            elif settings.preview_vae:
                preview_vae = _load_preview_vae(settings.preview_vae, device, dtype)
        except torch.cuda.OutOfMemoryError as exc:
            raise OutOfGPUMemory(
                f"Not enough GPU memory to load the model: {MEMORY_HINT}."
            ) from exc
        if settings.attention == "xformers":
            try:
                import xformers  # noqa: F401
            except ImportError as exc:
                raise EngineError(
                    "IMAGINE_ATTENTION is 'xformers' but xformers is not installed "
                    "(pip install xformers, or use 'sdpa')."
                ) from exc
            pipe.enable_xformers_memory_efficient_attention()
        # Otherwise diffusers uses PyTorch's scaled_dot_product_attention (SDPA) by default.
        log.info("model ready in %.1f s", time.perf_counter() - started)
        return cls(
            pipe,
            settings,
            preview_vae=preview_vae,
            decoder=decoder,
            compile_cache=compile_cache,
            styles=adapters,
        )

    def _compile(self) -> bool:
        """Compile once (CUDA only); whether the engine runs compiled."""
        if self._compile_tried:
            return self._compiled
        self._compile_tried = True
        if self.device.type != "cuda" or self.settings.low_memory:
            why = "on CUDA only" if self.device.type != "cuda" else "not with IMAGINE_LOW_MEMORY"
            log.info("IMAGINE_COMPILE ignored: torch.compile is used %s", why)
            return False
        if self.compile_cache is not None:
            use_cache_dir(self.compile_cache)
        log.info("compiling UNet and VAE decoder (%s)", COMPILE_MODE)
        compile_pipeline(self.pipe, self.decoder)
        self._compiled = True
        return True

    def warm_up(self) -> None:
        """Run generations now so lazy initialisation (and compilation) does not hit a user.

        Eager: one small image. Compiled: every shape the bot can send (``warmup_shapes``),
        so serving never compiles; a recompilation later is logged as a warning.
        """
        started = time.perf_counter()
        if self.settings.compile and self._compile():
            shapes = warmup_shapes(self.settings)
            for number, shape in enumerate(shapes, start=1):
                per_request = min(self.settings.images_per_request, shape.images)
                guidance = self.settings.guidance
                if shape.guidance and guidance <= 1.0:
                    guidance = self.settings.negative_guidance
                requests = [
                    GenerationRequest(
                        prompt="warm-up",
                        seed=i,
                        width=shape.width,
                        height=shape.height,
                        steps=self.settings.steps,
                        guidance=guidance,
                        count=per_request,
                    )
                    for i in range(shape.images // per_request)
                ]
                shape_started = time.perf_counter()
                self.generate_batch(requests)
                log.info(
                    "compile warm-up %d/%d: %dx%d, %d images%s, %.1f s",
                    number,
                    len(shapes),
                    shape.width,
                    shape.height,
                    shape.images,
                    ", guidance" if shape.guidance else "",
                    time.perf_counter() - shape_started,
                )
            self._frames_after_warm_up = compiled_frames()
            torch._logging.set_logs(recompiles=True)  # says why, should it ever happen
        else:
            side = min(self.settings.resolution, 512)
            request = GenerationRequest(
                prompt="warm-up",
                seed=0,
                width=side,
                height=side,
                steps=1,
                guidance=self.settings.guidance,
                count=1,
            )
            self.generate(request)
        log.info("warm-up done in %.1f s", time.perf_counter() - started)

    def _check_recompiles(self, spec: GenerationRequest, images: int) -> None:
        if self._frames_after_warm_up is None:
            return
        frames = compiled_frames()
        if frames > self._frames_after_warm_up:
            log.warning(
                "torch.compile recompiled while serving (%dx%d, %d images): that batch was "
                "slow; this shape was not in the warm-up",
                spec.width,
                spec.height,
                images,
            )
            self._frames_after_warm_up = frames

    # -- generation ---------------------------------------------------------------------------

    def generate(
        self,
        request: GenerationRequest,
        progress: ProgressCallback | None = None,
        *,
        preview_every: float = 0.0,
    ) -> GenerationResult:
        """Generate one request's images. See ``generate_batch``."""
        return self.generate_batch([request], progress, preview_every=preview_every)[0]

    def generate_batch(
        self,
        requests: Sequence[GenerationRequest],
        progress: ProgressCallback | None = None,
        *,
        preview_every: float = 0.0,
    ) -> list[GenerationResult]:
        """Generate several requests in one pipeline call.

        Each request's images equal what ``generate(request)`` alone gives, pixel for pixel:
        every image has its own generator seeded with its own seed.

        Args:
            requests: requests that all share one ``batch_key``.
            progress: called on this thread after every step with a ``StepProgress``.
            preview_every: least seconds between two previews (with a preview VAE). The
                first step gets one, the last never does (the images follow at once).

        Returns:
            One ``GenerationResult`` per request, in order.

        Raises:
            ValueError: the requests do not share a ``batch_key``.
            InvalidRequest: an init image cannot be read, or the batch's style is not loaded.
            OutOfGPUMemory: still out of GPU memory after retrying in two halves.
            GenerationFailed: anything else that failed inside the pipeline.
        """
        requests = list(requests)
        if not requests:
            return []
        if len({r.batch_key for r in requests}) != 1:
            raise ValueError("generate_batch() needs requests that share one batch_key")
        first = requests[0]
        style = self._style(first)
        started = time.perf_counter()
        notes: list[list[str]] = []
        jobs: list[_Job] = []
        try:
            # Before encoding: a style's LoRA may change the text encoders too.
            self.styles.activate(style.name if style else None, keep_graphs=self._compiled)
            for index, request in enumerate(requests):
                request_notes = list(request.notes)
                text, negative_text = styled_texts(style, request.prompt, request.negative_prompt)
                prompt = self._fit_prompt(text, "Prompt", request_notes)
                negative = self._fit_prompt(negative_text, "Negative prompt", request_notes)
                conditioning = self.prompts.encode(prompt, negative, guidance=self._cfg(first))
                init_image, mask = self._read_source(request)
                notes.append(request_notes)
                jobs.append(_Job(index, conditioning, request.seeds, init_image, mask))
            images = self._generate_by_length(first, jobs, progress, preview_every)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
        except EngineError:
            raise
        except Exception as exc:
            raise GenerationFailed(f"Image generation failed: {_first_line(exc)}") from exc
        seconds = time.perf_counter() - started
        self._check_recompiles(first, sum(r.count for r in requests))

        results = [
            GenerationResult(
                request=request,
                images=tuple(
                    GeneratedImage(seed, image)
                    for seed, image in zip(request.seeds, images[i], strict=True)
                ),
                seconds=seconds,
                notes=tuple(notes[i]),
            )
            for i, request in enumerate(requests)
        ]
        log.info(
            "batch: %d request(s), %d image(s), %dx%d, %d step(s), %s, seeds %s, %.2f s",
            len(requests),
            sum(r.count for r in requests),
            first.width,
            first.height,
            first.steps,
            "img2img" if first.init_image is not None else "txt2img",
            ",".join(str(r.seed) for r in requests),
            seconds,
        )
        return results

    def _style(self, spec: GenerationRequest) -> Style | None:
        """The loaded style a batch asks for (None: no style).

        Raises:
            InvalidRequest: a style this engine did not load (its LoRA failed, or this worker
                has another IMAGINE_STYLES file than the bot).
        """
        if not spec.style:
            return None
        style = self.styles.style(spec.style)
        if style is None:
            raise InvalidRequest(
                f"The style '{spec.style}' is not available right now (its LoRA is not loaded "
                "where the images are made). Pick another style or none."
            )
        return style

    def _cfg(self, spec: GenerationRequest) -> bool:
        """Whether classifier-free guidance runs (LCM's guidance-embedding UNets never do)."""
        return spec.guidance > 1.0 and self.pipe.unet.config.time_cond_proj_dim is None

    def _fit_prompt(self, text: str, label: str, notes: list[str]) -> str:
        """Cut ``text`` to the longest prompt encoded (``MAX_CHUNKS`` windows) and note what
        was dropped."""
        if not text:
            return text
        limit = MAX_CHUNKS * (self.max_tokens - 2)  # BOS and EOS in every window
        kept = text
        for tokenizer in (self.pipe.tokenizer, self.pipe.tokenizer_2):
            if tokenizer is None:
                continue
            kept = _cut_to_tokens(tokenizer, kept, limit)
        if kept == text:
            return text
        dropped = text[len(kept) :].strip()
        if len(dropped) > _DROPPED_PREVIEW_CHARS:
            dropped = dropped[: _DROPPED_PREVIEW_CHARS - 1].rstrip() + "…"
        notes.append(f"{label} was cut to {limit} tokens; dropped: '{dropped}'")
        log.info("%s cut to %d tokens", label.lower(), limit)
        return kept.rstrip()

    @staticmethod
    def _read_source(request: GenerationRequest) -> tuple[Image.Image | None, Image.Image | None]:
        """The picture a request starts from, at its output size, and the zoom's mask."""
        if request.init_image is None:
            return None, None
        try:
            image = Image.open(io.BytesIO(request.init_image))
            image.load()
        except Exception as exc:
            raise InvalidRequest("The source image could not be read as an image.") from exc
        image = image.convert("RGB")
        size = (request.width, request.height)
        if request.operation == "zoom":
            return zoom_canvas(image, size, request.zoom)
        if image.size != size:
            # An upscale starts here: Lanczos to twice the size, then the tiled pass.
            image = image.resize(size, Image.Resampling.LANCZOS)
        return image, None

    def _generate_by_length(
        self,
        spec: GenerationRequest,
        jobs: list[_Job],
        progress: ProgressCallback | None,
        preview_every: float,
    ) -> list[list[np.ndarray]]:
        """One pipeline call per prompt length (in 77-token chunks), in order of first use.

        Padding a one-chunk prompt to two would change its pixels: a request gives the same
        images batched with longer prompts as alone."""
        groups: dict[int, list[_Job]] = {}
        for job in jobs:
            groups.setdefault(job.conditioning.chunks, []).append(job)
        if len(groups) == 1:
            return self._generate_with_retry(spec, jobs, progress, preview_every)
        log.info("batch split by prompt length: %s chunk(s)", ", ".join(map(str, groups)))
        parts = [
            (group, self._generate_with_retry(spec, group, progress, preview_every))
            for group in groups.values()
        ]
        by_request: dict[int, list[np.ndarray]] = {}
        for group, images in parts:
            for job, pictures in zip(group, images, strict=True):
                by_request[job.index] = pictures
        return [by_request[job.index] for job in jobs]

    def _generate_with_retry(
        self,
        spec: GenerationRequest,
        jobs: list[_Job],
        progress: ProgressCallback | None,
        preview_every: float,
    ) -> list[list[np.ndarray]]:
        """Run the batch; on CUDA OOM retry once as two half batches."""
        try:
            return self._merge(jobs, [(jobs, self._run(spec, jobs, progress, preview_every))])
        except torch.cuda.OutOfMemoryError as exc:
            total = sum(len(job.seeds) for job in jobs)
            if total < 2:
                raise OutOfGPUMemory(f"The GPU ran out of memory: {MEMORY_HINT}.") from exc
            log.warning("CUDA out of memory with %d images; retrying in two halves", total)
        self._free_memory()
        halves = _split_in_half(jobs)
        try:
            parts = [(half, self._run(spec, half, progress, preview_every)) for half in halves]
        except torch.cuda.OutOfMemoryError as exc:
            self._free_memory()
            raise OutOfGPUMemory(
                f"The GPU ran out of memory even with half the batch: {MEMORY_HINT}."
            ) from exc
        return self._merge(jobs, parts)

    def _free_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    @staticmethod
    def _merge(
        jobs: list[_Job], parts: list[tuple[list[_Job], list[np.ndarray]]]
    ) -> list[list[np.ndarray]]:
        """Gather the images of each request (by job index) from one or more pipeline calls."""
        by_request: dict[int, list[np.ndarray]] = {job.index: [] for job in jobs}
        for part_jobs, images in parts:
            position = 0
            for job in part_jobs:
                by_request[job.index].extend(images[position : position + len(job.seeds)])
                position += len(job.seeds)
        return [by_request[index] for index in sorted(by_request)]

    def _upscale_pipe(self) -> StableDiffusionXLImg2ImgPipeline:
        """Image-to-image whose UNet works in overlapping tiles (``engine/tiling.py``)."""
        if self._tiled is None:
            tiled = TiledUNet(
                self.pipe.unet,
                tile=self.upscale_tile,
                overlap=self.upscale_tile // 4,
                max_batch=self.settings.images_per_request,
                vae_scale=self.pipe.vae_scale_factor,
            )
            self._tiled = StableDiffusionXLImg2ImgPipeline.from_pipe(
                self.pipe, unet=tiled, dtype=self.dtype
            )
            self._tiled.set_progress_bar_config(disable=True)
        unet = self._tiled.unet
        unet.tile, unet.overlap = self.upscale_tile, self.upscale_tile // 4
        return self._tiled

    def _inpaint_pipe(self) -> StableDiffusionXLInpaintPipeline:
        """Inpainting with the loaded (4-channel) UNet: the same components, no second model.

        diffusers keeps the unmasked latents at the source's own at every step, so only the
        border is painted, in the light of the picture it surrounds."""
        if self._inpaint is None:
            self._inpaint = StableDiffusionXLInpaintPipeline.from_pipe(self.pipe, dtype=self.dtype)
            self._inpaint.set_progress_bar_config(disable=True)
        return self._inpaint

    def _img2img_pipe(self) -> StableDiffusionXLImg2ImgPipeline:
        if self._img2img is None:
            # Shares every component with the text-to-image pipeline: no second copy in memory.
            # from_pipe casts all components to `dtype`, float32 unless told: that would turn
            # the shared fp16 UNet into fp32 for both pipelines.
            self._img2img = StableDiffusionXLImg2ImgPipeline.from_pipe(self.pipe, dtype=self.dtype)
            self._img2img.set_progress_bar_config(disable=True)
        return self._img2img

    @torch.inference_mode()
    def _run(
        self,
        spec: GenerationRequest,
        jobs: list[_Job],
        progress: ProgressCallback | None,
        preview_every: float,
    ) -> list[np.ndarray]:
        """One diffusers call for all images of ``jobs``; their pixels, in job order.

        The pipeline stops at the latents (``output_type="latent"``): ``decode_latents``
        decodes them and makes uint8 pixels on the device, one copy to host memory.
        """
        pipe = self.pipe
        guidance = spec.guidance
        use_cfg = self._cfg(spec)

        def per_image(name: str) -> torch.Tensor:
            # Each request's prompt was encoded once; every one of its images gets a copy.
            return torch.cat(
                [
                    getattr(job.conditioning, name).repeat_interleave(len(job.seeds), dim=0)
                    for job in jobs
                ]
            )

        kwargs: dict = {
            "prompt_embeds": per_image("embeds"),
            "pooled_prompt_embeds": per_image("pooled"),
            "guidance_scale": guidance,
            "output_type": "latent",
            "generator": [
                torch.Generator(self.device).manual_seed(seed % SEED_LIMIT)
                for job in jobs
                for seed in job.seeds
            ],
        }
        if use_cfg:
            kwargs["negative_prompt_embeds"] = per_image("negative")
            kwargs["negative_pooled_prompt_embeds"] = per_image("negative_pooled")

        total_steps = spec.steps
        if spec.operation == "zoom":
            runner = self._inpaint_pipe()
            kwargs |= {
                "image": [job.init_image for job in jobs for _ in job.seeds],
                "mask_image": [job.mask for job in jobs for _ in job.seeds],
                "height": spec.height,
                "width": spec.width,
                "strength": 1.0,  # the border starts from noise; the picture stays as it is
                "num_inference_steps": spec.steps,
            }
        elif spec.init_image is not None:
            runner = self._upscale_pipe() if spec.operation == "upscale" else self._img2img_pipe()
            limit = getattr(pipe.scheduler.config, "original_inference_steps", 1000) or 1000
            num_steps, total_steps = _effective_img2img_steps(spec.steps, spec.strength, limit)
            kwargs |= {
                "image": [job.init_image for job in jobs for _ in job.seeds],
                "strength": spec.strength,
                "num_inference_steps": num_steps,
            }
        else:
            runner = pipe
            kwargs |= {
                "height": spec.height,
                "width": spec.width,
                "num_inference_steps": spec.steps,
            }
        if progress is not None:
            kwargs["callback_on_step_end"] = self._progress_callback(
                progress, total_steps, preview_every
            )
            kwargs["callback_on_step_end_tensor_inputs"] = ["latents"]
        # Shapes and padding the compile warm-up does not cover run eagerly (no recompile).
        eager = self._compiled and (jobs[0].conditioning.chunks != 1 or spec.tile)
        with (
            _eager(eager),
            circular_padding(*self._networks(), on=spec.tile),
            _vae_tiling(self.pipe.vae, self.decoder, on=spec.operation == "upscale"),
        ):
            # An upscaled picture has four times the pixels of a generated one: the VAE encodes
            # and decodes it in blended tiles, so it needs no more memory than a batch of four.
            latents = runner(**kwargs).images
            return list(decode_latents(self.decoder, latents))

    def _networks(self) -> list[torch.nn.Module]:
        """Every network that draws: tile mode pads them all circularly (previews included)."""
        found = [self.pipe.unet, self.pipe.vae, self.decoder, self.preview_vae]
        return [network for network in found if network is not None]

    def _progress_callback(self, progress: ProgressCallback, total: int, preview_every: float):
        last_preview = -math.inf

        def on_step_end(_pipe, step: int, _timestep, tensors: dict) -> dict:
            nonlocal last_preview
            done = min(step + 1, total)
            preview = None
            now = time.perf_counter()
            if (
                self.preview_vae is not None
                and done < total
                and now - last_preview >= preview_every
            ):
                last_preview = now
                preview = self._preview(tensors["latents"])
            try:
                progress(StepProgress(step=done, total=total, preview=preview))
            except Exception:
                # A broken progress display must not cost the user their images.
                log.exception("progress callback failed; generation continues")
            return tensors

        return on_step_end

    def _preview(self, latents: torch.Tensor) -> Image.Image | None:
        """Decode the first image's latents with TAESD into a small preview."""
        assert self.preview_vae is not None
        try:
            return preview_image(self.preview_vae, latents, PREVIEW_MAX_SIDE)
        except Exception:
            log.exception("preview decode failed; continuing without a preview")
            return None


ZOOM_SEAM = 16
"""Pixels of the shrunk picture's edge that are painted over with the border, so the two meet
without a visible line (two latent cells at SDXL's scale)."""
ZOOM_FILL = (127, 127, 127)


def zoom_canvas(
    image: Image.Image, size: tuple[int, int], zoom: float
) -> tuple[Image.Image, Image.Image]:
    """Zoom Out's start: ``image`` shrunk by ``zoom`` into the middle of a ``size`` canvas, and
    the inpainting mask (white: paint here) covering the border and a thin seam."""
    width, height = size
    inner = (max(1, round(width / zoom)), max(1, round(height / zoom)))
    left, top = (width - inner[0]) // 2, (height - inner[1]) // 2
    canvas = Image.new("RGB", size, ZOOM_FILL)
    canvas.paste(image.resize(inner, Image.Resampling.LANCZOS), (left, top))
    mask = Image.new("L", size, 255)
    seam = min(ZOOM_SEAM, inner[0] // 4, inner[1] // 4)
    keep = (left + seam, top + seam, left + inner[0] - seam, top + inner[1] - seam)
    if keep[2] > keep[0] and keep[3] > keep[1]:
        mask.paste(0, keep)
    return canvas, mask


@contextlib.contextmanager
def _eager(on: bool) -> Iterator[None]:
    """Under ``IMAGINE_COMPILE``, run a block eagerly (when ``on``) instead of compiling it.

    For batches the warm-up does not cover (prompts past one 77-token window, whose
    cross-attention is longer, and tile batches, whose padding mode the graphs guard on):
    a recompilation would hold every queued user for tens of seconds, while one eager batch
    costs only the difference between eager and compiled speed (BENCHMARKS.md)."""
    if not on:
        yield
        return
    with torch.compiler.set_stance("force_eager"):
        yield


@contextlib.contextmanager
def _vae_tiling(*vaes: object, on: bool) -> Iterator[None]:
    """Turn diffusers' VAE tiling on for a block (when ``on``), then back to what it was."""
    vaes = tuple(v for v in dict.fromkeys(vaes) if on and hasattr(v, "use_tiling"))
    before = [bool(v.use_tiling) for v in vaes]
    for vae in vaes:
        vae.use_tiling = True
    try:
        yield
    finally:
        for vae, was in zip(vaes, before, strict=True):
            vae.use_tiling = was


def _cut_to_tokens(tokenizer, text: str, limit: int) -> str:
    """The longest prefix of ``text`` (at a token boundary) that is at most ``limit`` tokens."""
    encoding = tokenizer(
        text,
        add_special_tokens=False,
        truncation=False,
        return_offsets_mapping=True,
        verbose=False,  # we know it may be too long: that is why we are counting
    )
    ids = encoding["input_ids"]
    if len(ids) <= limit:
        return text
    offsets = encoding.get("offset_mapping")
    if offsets:
        return text[: offsets[limit - 1][1]]
    # Slow tokenizers have no offsets: decode the kept tokens instead (may normalise case).
    return tokenizer.decode(ids[:limit])


def _split_in_half(jobs: list[_Job]) -> list[list[_Job]]:
    """Split jobs into two lists with half the images each (a request may be split)."""
    images = [(job, i) for job in jobs for i in range(len(job.seeds))]
    middle = len(images) // 2
    halves: list[list[_Job]] = []
    for part in (images[:middle], images[middle:]):
        grouped: list[_Job] = []
        for job, i in part:
            if grouped and grouped[-1].index == job.index:
                last = grouped[-1]
                grouped[-1] = replace(last, seeds=(*last.seeds, job.seeds[i]))
            else:
                grouped.append(replace(job, seeds=(job.seeds[i],)))
        halves.append(grouped)
    return halves
