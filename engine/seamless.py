"""Tile mode: circular padding in a network's convolutions for one block, restored afterwards.

A texture tiles without seams when its left edge continues its right edge and its top edge its
bottom. Zero padding makes every convolution see a black border there; with circular padding it
sees the opposite edge instead, so the UNet denoises (and the VAE decodes) a torus and the image
wraps. Setting ``padding_mode`` is enough: ``Conv2d._conv_forward`` reads it on every call and
pads with ``_reversed_padding_repeated_twice``, which ``__init__`` derives from ``padding`` for
every mode, so nothing else needs to change.

What it covers, in diffusers 0.42 with peft 0.21:

- SDXL's UNet: every spatial conv has ``padding=1`` (its ``Downsample2D`` too), and attention,
  group norm and nearest upsampling do not care where the edges are, so the UNet's output for
  latents rolled by a multiple of its total stride (4 for SDXL's two downsamples) is its output
  rolled the same, to float error. LoRA conv wrappers (peft's ``lora.layer.Conv2d``, present
  between ``load_lora_weights`` and ``unload_lora_weights``) are not ``Conv2d`` subclasses, but
  their ``base_layer`` and ``lora_A`` are, with the same padding, so both wrap; after
  ``fuse_lora`` + ``unload_lora_weights`` the convs are plain ``Conv2d`` again.
- The VAE decoder only upsamples, so any latent shift becomes a shift of ``vae_scale_factor``
  times as many pixels: the decoded image tiles.
- The VAE encoder (image-to-image sources) only partly: its ``Downsample2D`` convs have
  ``padding=0`` and pad one row and column at the bottom and right by hand with
  ``F.pad(..., mode="constant")``, which no conv attribute reaches. Its other convs wrap, so the
  latents of a tiling source still do not quite tile near those edges; the denoising sees that
  seam as part of a wrapped image, and the less strength, the more of it survives.
- Any other network that makes pixels from the batch (such as a TAESD preview decoder) shows
  seams unless it is passed too. diffusers' tiled VAE decode must be off in tile mode: it decodes
  overlapping pieces separately, and each piece would wrap onto itself instead of onto the
  opposite edge of the image.

Under ``torch.compile``, dynamo guards on ``padding_mode`` (``_conv_forward`` branches on it),
so the first tile batch through a compiled UNet or decoder recompiles it: minutes for SDXL, and
another graph per shape counted against the recompile limit. The engine runs tile batches
eagerly instead, inside ``torch.compiler.set_stance("force_eager")`` (a context manager in torch
>= 2.6); the compiled graphs stay valid for ordinary batches, whose guards match again once the
block has restored the padding modes.

The padding modes are module attributes, so a block affects every user of those modules until
it ends: another thread running the same UNet meanwhile would tile too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def padded_convs(*modules: torch.nn.Module) -> list[torch.nn.Conv2d]:
    """Every ``Conv2d`` in ``modules`` (and their submodules) that pads, each listed once.

    Convs with no padding (1x1 projections, ``padding=0`` downsamples) are left out: their
    ``padding_mode`` changes nothing.
    """
    convs: dict[torch.nn.Conv2d, None] = {}
    for module in modules:
        for sub in module.modules():
            if isinstance(sub, torch.nn.Conv2d) and any(sub._reversed_padding_repeated_twice):
                convs[sub] = None
    return list(convs)


@contextlib.contextmanager
def circular_padding(*modules: torch.nn.Module, on: bool = True) -> Iterator[None]:
    """Inside the block every padding Conv2d of ``modules`` pads circularly; then each is as it was.

    Modules may overlap or repeat (the pipeline's VAE and the engine's decoder may be one
    module); each conv is switched and restored once. With ``on=False`` nothing changes, so a
    caller can write ``with circular_padding(unet, vae, on=spec.tile):``. The previous modes
    come back also when the block raises.
    """
    convs = padded_convs(*modules) if on else []
    before = [conv.padding_mode for conv in convs]
    try:
        for conv in convs:
            conv.padding_mode = "circular"
        yield
    finally:
        for conv, mode in zip(convs, before, strict=True):
            conv.padding_mode = mode
