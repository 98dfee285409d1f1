"""The engine's set-up choices: tiny VAE decoder, low-memory mode, what IMAGINE_COMPILE compiles."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import Engine, GenerationRequest, ModelNotFound
from engine.compiling import WarmupShape, compile_pipeline, compiled_frames, warmup_shapes
from engine.requests import ASPECT_RATIOS, size_for_aspect_ratio

REQUEST = GenerationRequest(prompt="a lighthouse at dusk", seed=21, width=64, height=64, count=2)


def close(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to 8-bit rounding (another batch shape may round a pixel the other way)."""
    difference = np.abs(a.astype(int) - b.astype(int))
    return difference.max() <= 1 and (difference == 0).mean() >= 0.99


@pytest.fixture(scope="module")
def reference(tiny_engine_settings):
    [result] = Engine.load(tiny_engine_settings).generate_batch([REQUEST])
    return [g.pixels for g in result.images]


def test_tiny_vae_decoder_makes_the_final_images(
    tiny_engine_settings, tiny_taesd_dir, reference
) -> None:
    from diffusers import AutoencoderTiny

    settings = tiny_engine_settings.model_copy(
        update={"vae_decoder": "tiny", "tiny_vae": str(tiny_taesd_dir)}
    )
    engine = Engine.load(settings)
    assert isinstance(engine.decoder, AutoencoderTiny) and engine.preview_vae is None
    [result] = engine.generate_batch([REQUEST])
    assert [g.pixels.shape for g in result.images] == [(64, 64, 3)] * 2
    # Same latents, another decoder: other pixels (and the same again for the same seed).
    assert not np.array_equal(result.images[0].pixels, reference[0])
    [again] = engine.generate_batch([REQUEST])
    assert np.array_equal(again.images[1].pixels, result.images[1].pixels)
    # Previews from the same TAESD share the one instance.
    shared = settings.model_copy(update={"preview_vae": str(tiny_taesd_dir)})
    engine = Engine.load(shared)
    assert engine.preview_vae is engine.decoder


def test_missing_tiny_vae_is_a_readable_error(tiny_engine_settings, tmp_path) -> None:
    settings = tiny_engine_settings.model_copy(
        update={"vae_decoder": "tiny", "tiny_vae": str(tmp_path / "nope")}
    )
    with pytest.raises(ModelNotFound, match="IMAGINE_TINY_VAE"):
        Engine.load(settings)


def test_low_memory_decodes_in_slices_with_the_same_pixels(tiny_engine_settings, reference) -> None:
    engine = Engine.load(tiny_engine_settings.model_copy(update={"low_memory": True}))
    assert engine.pipe.vae.use_slicing and engine.pipe.vae.use_tiling
    [result] = engine.generate_batch([REQUEST])
    for generated, expected in zip(result.images, reference, strict=True):
        assert close(generated.pixels, expected)


def test_warm_up_covers_every_size_batch_and_guidance(tiny_engine_settings) -> None:
    settings = tiny_engine_settings.model_copy(
        update={"resolution": 1024, "images_per_request": 4, "max_batch_images": 16}
    )
    shapes = warmup_shapes(settings)
    sizes = {size_for_aspect_ratio(r, 1024) for r in ASPECT_RATIOS}
    assert len(sizes) == 9
    assert set(shapes) == {
        WarmupShape(w, h, n, cfg) for w, h in sizes for n in (4, 8, 12, 16) for cfg in (False, True)
    }
    assert len(shapes) == len(set(shapes)) == 72
    assert shapes[0] == WarmupShape(1024, 1024, 4, False)  # the most common first
    # Guidance always on: no shape without it; no negative-prompt guidance: none with it.
    always = warmup_shapes(settings.model_copy(update={"guidance": 2.0}))
    assert {s.guidance for s in always} == {True} and len(always) == 36
    never = warmup_shapes(settings.model_copy(update={"negative_guidance": 1.0}))
    assert {s.guidance for s in never} == {False}
    odd = warmup_shapes(settings.model_copy(update={"max_batch_images": 6}))
    assert {s.images for s in odd} == {4}


def test_compile_on_cpu_is_skipped_and_says_so(tiny_engine_settings, caplog) -> None:
    engine = Engine.load(tiny_engine_settings.model_copy(update={"compile": True}))
    with caplog.at_level("INFO", logger="engine.pipeline"):
        engine.warm_up()
    assert "IMAGINE_COMPILE ignored" in caplog.text
    assert not engine._compiled


def test_what_compile_compiles_gives_the_same_pixels(tiny_engine_settings, reference) -> None:
    """The plumbing of compile_pipeline on a CPU (dynamo, no inductor): same images, the
    UNet and the decoder compiled, and no recompilation for a second request of that shape."""
    torch._dynamo.reset()
    engine = Engine.load(tiny_engine_settings)
    before = compiled_frames()
    compile_pipeline(engine.pipe, engine.decoder, backend="eager")
    assert engine.pipe.unet.original_attn_processors is not None  # fused QKV
    [result] = engine.generate_batch([REQUEST])
    for generated, expected in zip(result.images, reference, strict=True):
        assert close(generated.pixels, expected)
    frames = compiled_frames()
    assert frames - before >= 2  # the UNet and the VAE decoder
    engine.generate_batch([REQUEST])
    assert compiled_frames() == frames
    torch._dynamo.reset()
