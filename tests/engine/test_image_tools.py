"""The image tools' pipeline paths on the tiny model: upscale in tiles, zoom out, variations."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from engine import Engine, GenerationRequest
from engine.pipeline import zoom_canvas
from engine.requests import UPSCALE_STRENGTH, VARY_STRONG, VARY_SUBTLE
from engine.tickets import Ticket, ticket_from_fields, ticket_to_fields
from engine.tiling import TiledUNet, layout, tile_starts


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def source(tiny_engine: Engine) -> bytes:
    """One 64x64 picture made by the tiny model: what the tools start from."""
    request = GenerationRequest(prompt="a red fox", seed=11, width=64, height=64, count=1)
    return png(tiny_engine.generate(request).images[0].pixels)


def upscale(engine: Engine, source: bytes, seed: int = 5, tile: int | None = None) -> np.ndarray:
    before = engine.upscale_tile
    engine.upscale_tile = tile or before
    try:
        request = GenerationRequest(
            prompt="a red fox",
            seed=seed,
            width=128,
            height=128,
            count=1,
            init_image=source,
            strength=UPSCALE_STRENGTH,
            operation="upscale",
        )
        [image] = engine.generate(request).images
    finally:
        engine.upscale_tile = before
    return image.pixels


# ------------------------------------------------------------------------------ tile layout
@settings(max_examples=200, deadline=None)
@given(
    length=st.integers(1, 400),
    tile=st.integers(1, 160),
    overlap_share=st.floats(0, 0.9),
)
def test_tiles_cover_every_cell_within_bounds(length: int, tile: int, overlap_share: float):
    overlap = min(tile - 1, int(tile * overlap_share))
    starts = tile_starts(length, tile, overlap)
    size = min(tile, length)
    assert starts[0] == 0 and starts[-1] + size == length
    assert all(0 <= s <= length - size for s in starts)
    covered = np.zeros(length, dtype=bool)
    for s in starts:
        covered[s : s + size] = True
    assert covered.all()
    # Neighbours overlap by at least what was asked.
    assert all(b - a <= size - overlap for a, b in itertools.pairwise(starts))


@settings(max_examples=60, deadline=None)
@given(height=st.integers(8, 120), width=st.integers(8, 120), tile=st.integers(8, 48))
def test_blend_weights_are_positive_and_add_to_one_where_two_tiles_meet(
    height: int, width: int, tile: int
):
    tiles = layout(height, width, tile, tile // 4)
    total = torch.zeros(height, width)
    count = torch.zeros(height, width)
    for t in tiles:
        assert (t.weight > 0).all() and t.weight.shape == (t.height, t.width)
        total[t.rows, t.cols] += t.weight
        count[t.rows, t.cols] += 1
    assert (count > 0).all()
    # Along each axis two neighbours fade over the same cells in opposite directions.
    two_per_axis = count <= 4
    assert torch.allclose(total[two_per_axis & (count <= 2)], torch.tensor(1.0))
    assert (total > 0).all()


class Pointwise(torch.nn.Module):
    """A stand-in UNet whose output at a cell depends on that cell only."""

    config = None

    def forward(self, sample, timestep, encoder_hidden_states, **kwargs):
        return (sample * 2 + 1,)


def test_tiled_equals_untiled_for_a_model_without_context():
    """Cropping and blending lose nothing: with a cell-by-cell model tiles change no value."""
    sample = torch.randn(2, 4, 40, 56)
    hidden = torch.randn(2, 3, 8)
    tiled = TiledUNet(Pointwise(), tile=16, overlap=4, max_batch=3)
    [out] = tiled(sample, 1, hidden, added_cond_kwargs={"time_ids": torch.zeros(2, 6)})
    assert torch.allclose(out, sample * 2 + 1, atol=1e-6)


class PerTileConstant(torch.nn.Module):
    """A stand-in UNet that paints each tile one flat value (from the crop SDXL is told of)."""

    def forward(self, sample, timestep, encoder_hidden_states, added_cond_kwargs=None, **kw):
        ids = added_cond_kwargs["time_ids"]
        value = (ids[:, 2] * 7 + ids[:, 3] * 3) % 100  # differs from tile to tile
        return (value.view(-1, 1, 1, 1).expand_as(sample).clone(),)


def test_neighbouring_tiles_blend_without_a_seam():
    """Even when tiles disagree completely, the blend steps gently from one to the next."""
    sample = torch.zeros(1, 4, 64, 64)
    tiled = TiledUNet(PerTileConstant(), tile=32, overlap=8, max_batch=4, vae_scale=8)
    ids = torch.zeros(1, 6)
    [out] = tiled(sample, 1, torch.zeros(1, 3, 8), added_cond_kwargs={"time_ids": ids})
    values = [
        PerTileConstant()(sample, 1, None, added_cond_kwargs={"time_ids": i})[0][0, 0, 0, 0]
        for i in _tile_ids(tiled, sample, ids)
    ]
    spread = float(max(values) - min(values))
    assert spread > 50  # the tiles really disagree
    steps = max(out.diff(dim=-1).abs().max(), out.diff(dim=-2).abs().max())
    # A hard cut would jump by up to `spread` between two cells; the ramps spread it over the
    # overlap (16 cells here, the tiles being spread evenly).
    assert steps <= spread / 8


def _tile_ids(tiled: TiledUNet, sample: torch.Tensor, ids: torch.Tensor) -> list[torch.Tensor]:
    out = []
    for t in layout(sample.shape[-2], sample.shape[-1], tiled.tile, tiled.overlap):
        tile_ids = ids.clone()
        tile_ids[:, 2], tile_ids[:, 3] = t.top * tiled.vae_scale, t.left * tiled.vae_scale
        out.append(tile_ids)
    return out


# ------------------------------------------------------------------------------ upscale
def test_upscale_doubles_the_size_and_its_seed_reproduces(tiny_engine: Engine, source: bytes):
    first = upscale(tiny_engine, source)
    assert first.shape == (128, 128, 3) and first.dtype == np.uint8
    assert np.array_equal(upscale(tiny_engine, source), first)
    assert not np.array_equal(upscale(tiny_engine, source, seed=6), first)


def test_tiled_upscale_is_close_to_an_untiled_one(tiny_engine: Engine, source: bytes):
    """A small picture fits one tile; split into 3x3 tiles it must come out nearly the same."""
    assert tiny_engine.upscale_tile == 32  # 64 px at the tiny VAE's scale of 2
    untiled = upscale(tiny_engine, source, tile=64).astype(int)  # one tile: the plain pass
    tiled = upscale(tiny_engine, source, tile=16).astype(int)  # 5x5 tiles of the 64x64 latent
    other_seed = upscale(tiny_engine, source, seed=99, tile=64).astype(int)
    assert len(layout(64, 64, 16, 4)) == 25
    difference = np.abs(tiled - untiled).mean()
    assert difference < np.abs(other_seed - untiled).mean() / 4
    assert difference < 8  # of 255, on average


# ------------------------------------------------------------------------------ zoom out
def zoom(engine: Engine, source: bytes, seed: int, factor: float = 2.0) -> list[np.ndarray]:
    request = GenerationRequest(
        prompt="a red fox",
        seed=seed,
        width=64,
        height=64,
        count=2,
        init_image=source,
        strength=1.0,
        operation="zoom",
        zoom=factor,
    )
    return [image.pixels for image in engine.generate(request).images]


def test_zoom_canvas_shrinks_the_picture_into_the_middle():
    picture = Image.new("RGB", (64, 64), (200, 10, 10))
    canvas, mask = zoom_canvas(picture, (64, 48), 2.0)
    assert canvas.size == mask.size == (64, 48)
    pixels, painted = np.asarray(canvas), np.asarray(mask)
    assert tuple(pixels[24, 32]) == (200, 10, 10) and tuple(pixels[2, 2]) == (127, 127, 127)
    assert painted[24, 32] == 0 and painted[2, 2] == 255  # keep the middle, paint the border
    assert painted[12, 16] == 255  # the edge of the shrunk picture is painted over too (seam)


def test_zoom_out_keeps_the_size_and_paints_only_the_border(tiny_engine: Engine, source: bytes):
    first = zoom(tiny_engine, source, seed=3)
    assert [p.shape for p in first] == [(64, 64, 3)] * 2
    assert all(
        np.array_equal(a, b) for a, b in zip(zoom(tiny_engine, source, 3), first, strict=True)
    )
    other = zoom(tiny_engine, source, seed=30)
    a, b = first[0].astype(int), other[0].astype(int)
    middle = (slice(24, 40), slice(24, 40))
    border = np.ones((64, 64), dtype=bool)
    border[12:52, 12:52] = False
    # Another seed paints another border around the same picture. (The middle's latents are
    # the picture's own with either seed; the tiny VAE's decoder, random and 64 px wide,
    # carries some of the border into them. Were the whole canvas painted, both would differ
    # alike.)
    assert np.abs(a - b)[border].mean() > 2 * np.abs(a[middle] - b[middle]).mean()


@pytest.mark.parametrize("factor", [1.5, 2.0])
def test_both_zoom_factors_run(tiny_engine: Engine, source: bytes, factor: float):
    assert len(zoom(tiny_engine, source, seed=1, factor=factor)) == 2


# ------------------------------------------------------------------------------ vary
def test_subtle_stays_closer_to_the_picture_than_strong(tiny_engine: Engine, source: bytes):
    def vary(strength: float) -> np.ndarray:
        request = GenerationRequest(
            prompt="a red fox",
            seed=8,
            width=64,
            height=64,
            count=1,
            init_image=source,
            strength=strength,
        )
        return tiny_engine.generate(request).images[0].pixels.astype(int)

    original = np.asarray(Image.open(io.BytesIO(source)), dtype=int)
    subtle, strong = vary(VARY_SUBTLE), vary(VARY_STRONG)
    assert np.abs(subtle - original).mean() < np.abs(strong - original).mean()


# ------------------------------------------------------------------------------ the wire
def test_tool_tickets_cross_the_wire_and_plain_ones_stay_as_before(source: bytes):
    request = GenerationRequest(
        prompt="p",
        seed=1,
        width=64,
        height=64,
        count=4,
        init_image=source,
        strength=1.0,
        operation="zoom",
        zoom=1.5,
    )
    ticket = Ticket(job_id=3, user_id=4, request=request)
    back = ticket_from_fields(ticket_to_fields(ticket))
    assert back == ticket and back.request.operation == "zoom" and back.request.zoom == 1.5
    plain = ticket_to_fields(Ticket(1, 2, GenerationRequest("p", 1, 64, 64)))
    # A release that knows no tools reads this ticket as it always did.
    assert b"operation" not in plain[b"meta"] and b"zoom" not in plain[b"meta"]


def test_an_upscale_counts_as_four_images_of_work():
    request = GenerationRequest("p", 1, 128, 128, count=1, init_image=b"x", operation="upscale")
    assert request.work == 4 and GenerationRequest("p", 1, 64, 64, count=4).work == 4
