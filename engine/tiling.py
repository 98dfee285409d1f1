"""Denoise a latent larger than the model's size in overlapping tiles that blend without seams.

MultiDiffusion (Bar-Tal et al., 2023) as a UNet wrapper: at every step the UNet sees each tile
at the size it was trained on, and the tiles' predictions are averaged where they overlap, with
weights that fall off linearly towards a tile's inner edges. Every step then starts from one
shared latent, so neighbouring tiles agree in their overlap instead of being stitched
afterwards. Being a UNet, the wrapper drops into diffusers' own image-to-image pipeline: the
scheduler, guidance, callbacks and VAE are untouched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Starts of tiles of ``tile`` cells that cover ``length`` cells, overlapping >= ``overlap``.

    The tiles are spread evenly (the last one ends at ``length``), so every overlap is at least
    ``overlap``; one tile at 0 when ``length <= tile``.

    Raises:
        ValueError: ``tile`` is not positive, or ``overlap`` is not in ``0..tile-1``.
    """
    if tile <= 0 or not 0 <= overlap < tile:
        raise ValueError(f"need tile > 0 and 0 <= overlap < tile (tile={tile}, overlap={overlap})")
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def ramp(size: int, fade_start: int, fade_end: int) -> torch.Tensor:
    """Weights of one tile along one axis: 1 inside, rising over the first ``fade_start`` cells
    and falling over the last ``fade_end`` (its overlaps with the neighbours), never 0.

    Two tiles that overlap by ``n`` cells fade over the same ``n`` cells in opposite
    directions, so their weights there add up to exactly 1.
    """
    weights = torch.ones(size, dtype=torch.float32)
    if fade_start > 0:
        n = min(fade_start, size)
        weights[:n] = torch.arange(1, n + 1, dtype=torch.float32) / (fade_start + 1)
    if fade_end > 0:
        n = min(fade_end, size)
        falling = torch.arange(n, 0, -1, dtype=torch.float32) / (fade_end + 1)
        weights[size - n :] = torch.minimum(weights[size - n :], falling)
    return weights


@dataclass(frozen=True)
class Tile:
    """One tile of a latent: rows ``top:top+height``, columns ``left:left+width``."""

    top: int
    left: int
    height: int
    width: int
    weight: torch.Tensor  # (height, width)

    @property
    def rows(self) -> slice:
        return slice(self.top, self.top + self.height)

    @property
    def cols(self) -> slice:
        return slice(self.left, self.left + self.width)


def layout(height: int, width: int, tile: int, overlap: int) -> list[Tile]:
    """Overlapping tiles that cover a ``height`` x ``width`` latent, with blending weights.

    Each weight falls off only towards edges shared with another tile (the image's own border
    keeps weight 1), and the weights of the tiles covering a cell sum to more than 0.
    """
    rows = tile_starts(height, tile, overlap)
    cols = tile_starts(width, tile, overlap)
    tile_h, tile_w = min(tile, height), min(tile, width)
    along_h = _ramps(rows, tile_h)
    along_w = _ramps(cols, tile_w)
    return [
        Tile(top, left, tile_h, tile_w, torch.outer(weight_h, weight_w))
        for top, weight_h in zip(rows, along_h, strict=True)
        for left, weight_w in zip(cols, along_w, strict=True)
    ]


def _ramps(starts: list[int], size: int) -> list[torch.Tensor]:
    """The weights along one axis of the tiles at ``starts``, each ``size`` long."""
    ramps = []
    for i, start in enumerate(starts):
        fade_start = starts[i - 1] + size - start if i > 0 else 0
        fade_end = start + size - starts[i + 1] if i + 1 < len(starts) else 0
        ramps.append(ramp(size, fade_start, fade_end))
    return ramps


class TiledUNet(torch.nn.Module):
    """A UNet that runs ``unet`` on overlapping ``tile`` x ``tile`` latent tiles and blends them.

    Args:
        unet: the pipeline's UNet (its config, dtype and embeddings are read through this).
        tile: tile side in latent cells (the model's native size: 128 for SDXL at 1024 px).
        overlap: least overlap between neighbouring tiles, in latent cells.
        max_batch: most tiles (times the batch) in one UNet call, to bound memory.
        vae_scale: pixels per latent cell, for SDXL's crop/size conditioning of each tile.
    """

    def __init__(self, unet: Any, tile: int, overlap: int, max_batch: int, vae_scale: int = 8):
        super().__init__()
        self.unet = unet
        self.tile = tile
        self.overlap = overlap
        self.max_batch = max(1, max_batch)
        self.vae_scale = vae_scale

    def __getattr__(self, name: str) -> Any:
        # config, dtype, device, add_embedding...: what the pipeline reads from its UNet.
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["unet"], name)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        *,
        timestep_cond: torch.Tensor | None = None,
        added_cond_kwargs: dict[str, torch.Tensor] | None = None,
        return_dict: bool = True,
        **kwargs: Any,
    ) -> tuple[torch.Tensor]:
        del return_dict  # the pipelines read [0]; a tuple serves both
        batch, _, height, width = sample.shape
        tiles = layout(height, width, self.tile, self.overlap)
        if len(tiles) == 1:
            return self._call(
                sample, timestep, encoder_hidden_states, timestep_cond, added_cond_kwargs, kwargs
            )
        total = torch.zeros_like(sample, dtype=torch.float32)
        weights = torch.zeros((height, width), dtype=torch.float32, device=sample.device)
        per_call = max(1, self.max_batch // batch)
        for first in range(0, len(tiles), per_call):
            group = tiles[first : first + per_call]
            outputs = self._call(
                torch.cat([sample[..., t.rows, t.cols] for t in group]),
                _repeat(timestep, len(group)),
                encoder_hidden_states.repeat(len(group), 1, 1),
                None if timestep_cond is None else timestep_cond.repeat(len(group), 1),
                _tile_conditions(added_cond_kwargs, group, self.vae_scale),
                kwargs,
            )[0]
            for i, t in enumerate(group):
                weight = t.weight.to(sample.device)
                total[..., t.rows, t.cols] += outputs[i * batch : (i + 1) * batch].float() * weight
                weights[t.rows, t.cols] += weight
        return ((total / weights).to(sample.dtype),)

    def _call(self, sample, timestep, hidden, timestep_cond, added, kwargs) -> tuple:
        return self.unet(
            sample,
            timestep,
            encoder_hidden_states=hidden,
            timestep_cond=timestep_cond,
            added_cond_kwargs=added,
            return_dict=False,
            **kwargs,
        )


def _repeat(timestep: torch.Tensor | float | int, times: int) -> torch.Tensor | float | int:
    if isinstance(timestep, torch.Tensor) and timestep.ndim > 0 and timestep.shape[0] > 1:
        return timestep.repeat(times)
    return timestep


def _tile_conditions(
    added: dict[str, torch.Tensor] | None, tiles: Sequence[Tile], vae_scale: int
) -> dict[str, torch.Tensor] | None:
    """SDXL's extra conditioning for each tile: the same text embeddings, and time ids that say
    "this is a crop at (top, left) of the whole picture, of the tile's size"."""
    if added is None:
        return None
    result = {name: value.repeat(len(tiles), 1) for name, value in added.items()}
    ids = added.get("time_ids")
    if ids is not None and ids.shape[-1] == 6:  # original (h, w), crop (top, left), target (h, w)
        per_tile = []
        for t in tiles:
            tile_ids = ids.clone()
            tile_ids[:, 2] = t.top * vae_scale
            tile_ids[:, 3] = t.left * vae_scale
            tile_ids[:, 4] = t.height * vae_scale
            tile_ids[:, 5] = t.width * vae_scale
            per_tile.append(tile_ids)
        result["time_ids"] = torch.cat(per_tile)
    return result
