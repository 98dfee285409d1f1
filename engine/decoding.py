"""Latents -> uint8 pixels in host memory, with every per-pixel step on the device.

diffusers' own ``output_type="pil"`` copies the decoded batch to the CPU as float32, scales,
rounds and casts it there and builds PIL images, all on the GPU thread: ~60-100 ms of CPU per
four 1024x1024 images, not overlapped with anything. Here the pipeline stops at the latents;
the VAE decodes them, the same arithmetic as diffusers (so the pixels are identical) runs on the
device, and one uint8 (batch, height, width, 3) copy lands in pinned host memory, which the
encoders read without another copy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.utils.torch_utils import get_module_execution_device
from PIL import Image


def _unscale(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    """What diffusers' SDXL pipelines do to the latents before ``vae.decode``."""
    config = vae.config
    mean = getattr(config, "latents_mean", None)
    std = getattr(config, "latents_std", None)
    if mean is not None and std is not None:
        mean_t = torch.tensor(mean).view(1, -1, 1, 1).to(latents.device, latents.dtype)
        std_t = torch.tensor(std).view(1, -1, 1, 1).to(latents.device, latents.dtype)
        return latents * std_t / config.scaling_factor + mean_t
    return latents / config.scaling_factor


def to_uint8_hwc(decoded: torch.Tensor) -> torch.Tensor:
    """VAE output in [-1, 1], (batch, 3, height, width) -> uint8 (batch, height, width, 3).

    The same steps as diffusers' ``VaeImageProcessor.postprocess`` + ``numpy_to_pil``
    (denormalise in the VAE's dtype, then float32, x255, round), on ``decoded``'s device.
    """
    pixels = (decoded / 2 + 0.5).clamp(0, 1).float()
    return (pixels * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def to_host(pixels: torch.Tensor) -> np.ndarray:
    """One copy of a device tensor into (pinned, on CUDA) host memory, as a numpy array.

    The numpy array keeps the host tensor alive; torch's caching host allocator reuses the
    pinned block once every view of it is gone.
    """
    if pixels.device.type != "cuda":
        return pixels.cpu().numpy()
    host = torch.empty(pixels.shape, dtype=pixels.dtype, pin_memory=True)
    host.copy_(pixels, non_blocking=True)
    torch.cuda.current_stream(pixels.device).synchronize()
    return host.numpy()


def decode_latents(vae: Any, latents: torch.Tensor) -> np.ndarray:
    """Decode a batch of latents with ``vae`` (an ``AutoencoderKL`` or ``AutoencoderTiny``).

    Returns uint8 (batch, height, width, 3) pixels in host memory.
    """
    return to_host(to_uint8_hwc(decode_on_device(vae, latents)))


def decode_on_device(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    """The pipeline's latents -> ``vae``'s output in [-1, 1], (batch, 3, height, width).

    Upcasts a VAE whose config asks for it (``force_upcast``, e.g. SDXL's stock VAE in fp16)
    for the decode, like diffusers.
    """
    upcast = vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
    if upcast:
        vae.to(dtype=torch.float32)
    try:
        # With CPU offload the weights sit on the CPU until decode's hook moves them.
        device = get_module_execution_device(vae)
        latents = _unscale(vae, latents.to(next(iter(vae.parameters())).dtype))
        decoded = vae.decode(latents.to(device), return_dict=False)[0]
    finally:
        if upcast:
            vae.to(dtype=torch.float16)
    return decoded


def preview_image(taesd: Any, latents: torch.Tensor, max_side: int) -> Image.Image:
    """The first image of a batch, decoded by a tiny VAE, shrunk to ``max_side`` on the device."""
    decoded = taesd.decode(latents[:1].to(taesd.dtype), return_dict=False)[0]
    height, width = decoded.shape[-2:]
    scale = min(1.0, max_side / max(height, width))
    if scale < 1.0:
        size = (max(1, math.floor(height * scale)), max(1, math.floor(width * scale)))
        decoded = F.interpolate(decoded.float(), size=size, mode="area")
    [pixels] = to_host(to_uint8_hwc(decoded))
    return Image.fromarray(pixels)
