"""Engine on the tiny SDXL pipeline (CPU, 64x64): sizes, seeds, batching, LoRA, img2img."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch
from PIL import Image

from engine import (
    Engine,
    EngineSettings,
    GenerationFailed,
    GenerationRequest,
    GenerationResult,
    ModelNotFound,
    OutOfGPUMemory,
    StepProgress,
    make_request,
)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def same(a: Image.Image, b: Image.Image) -> bool:
    return np.array_equal(pixels(a), pixels(b))


def matches(a: Image.Image, b: Image.Image) -> bool:
    """Same image up to 8-bit rounding.

    Per-image generators make each image independent of its batch, but BLAS kernels pick
    different paths for different batch sizes (a Linear at batch 1 is a GEMV), so latents can
    differ by ~1e-5 and an 8-bit pixel can round the other way. Typically all pixels are equal.
    """
    difference = np.abs(pixels(a).astype(int) - pixels(b).astype(int))
    return difference.max() <= 2 and (difference == 0).mean() >= 0.99


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def cat_result(tiny_engine: Engine, tiny_engine_settings: EngineSettings) -> GenerationResult:
    request = make_request("a photo of a cat", settings=tiny_engine_settings, seed=1000)
    return tiny_engine.generate(request)


def test_four_valid_images_of_the_right_size(cat_result: GenerationResult) -> None:
    assert len(cat_result.images) == 4
    assert cat_result.seeds == (1000, 1001, 1002, 1003)
    for generated in cat_result.images:
        assert generated.image.size == (64, 64)
        assert generated.image.mode == "RGB"
        assert pixels(generated.image).std() > 0  # not a blank image
    assert not same(cat_result.images[0].image, cat_result.images[1].image)
    assert cat_result.seconds > 0


def test_aspect_ratio_sets_the_size(tiny_engine: Engine, tiny_engine_settings) -> None:
    request = make_request("a cat", settings=tiny_engine_settings, aspect_ratio="16:9", count=1)
    result = tiny_engine.generate(request)
    assert result.images[0].image.size == (request.width, request.height) == (80, 48)


def test_each_seed_recreates_its_image(
    tiny_engine: Engine, tiny_engine_settings: EngineSettings, cat_result: GenerationResult
) -> None:
    single = make_request("a photo of a cat", settings=tiny_engine_settings, seed=1002, count=1)
    again = tiny_engine.generate(single)
    assert again.seeds == (1002,)
    assert matches(again.images[0].image, cat_result.images[2].image)


def test_batch_of_two_requests_equals_each_alone(
    tiny_engine: Engine, tiny_engine_settings: EngineSettings, cat_result: GenerationResult
) -> None:
    cat = cat_result.request
    dog = make_request("a red dog with a hat", settings=tiny_engine_settings, seed=7, count=2)
    dog_alone = tiny_engine.generate(dog)
    steps: list[StepProgress] = []
    batch = tiny_engine.generate_batch([cat, dog], steps.append)
    assert [r.request for r in batch] == [cat, dog]
    assert batch[1].seeds == (7, 8)
    for alone, batched in ((cat_result, batch[0]), (dog_alone, batch[1])):
        assert len(alone.images) == len(batched.images)
        for a, b in zip(alone.images, batched.images, strict=True):
            assert a.seed == b.seed and matches(a.image, b.image)
    # One pipeline call: one progress report per step for the whole batch.
    assert [(s.step, s.total) for s in steps] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert all(s.preview is None for s in steps)


def test_batch_needs_one_batch_key(tiny_engine: Engine, tiny_engine_settings) -> None:
    square = make_request("a cat", settings=tiny_engine_settings, count=1)
    wide = make_request("a cat", settings=tiny_engine_settings, count=1, aspect_ratio="16:9")
    with pytest.raises(ValueError, match="batch_key"):
        tiny_engine.generate_batch([square, wide])
    assert tiny_engine.generate_batch([]) == []


def test_lora_changes_the_output(
    tiny_engine_settings: EngineSettings, cat_result: GenerationResult
) -> None:
    plain = Engine.load(tiny_engine_settings.model_copy(update={"lora": ""}))
    request = dataclasses.replace(cat_result.request, count=1)
    without_lora = plain.generate(request).images[0].image
    difference = np.abs(
        pixels(without_lora).astype(int) - pixels(cat_result.images[0].image).astype(int)
    )
    assert difference.mean() > 2


def test_lora_from_a_folder(tiny_engine_settings: EngineSettings, tmp_path, tiny_lora_path):
    folder = tmp_path / "lora"
    folder.mkdir()
    (folder / "pytorch_lora_weights.safetensors").write_bytes(tiny_lora_path.read_bytes())
    engine = Engine.load(tiny_engine_settings.model_copy(update={"lora": str(folder)}))
    assert engine.pipe.unet is not None


def test_a_prompt_past_the_longest_encoded_is_cut_with_a_note(
    tiny_engine: Engine, tiny_engine_settings: EngineSettings
) -> None:
    # Each word is one token in the tiny vocab: 460 words do not fit in 6 windows of 75.
    base = " ".join(["red cat"] * 230)
    first = make_request(base + " blue hat", settings=tiny_engine_settings, seed=3, count=1)
    second = dataclasses.replace(first, prompt=base + " green dog")
    a, b = tiny_engine.generate(first), tiny_engine.generate(second)
    assert len(a.notes) == 1
    assert a.notes[0].startswith("Prompt was cut to 450 tokens; dropped: '")
    assert "blue hat" in a.notes[0]
    # Only the dropped tail differs, so the images are the same.
    assert same(a.images[0].image, b.images[0].image)
    assert a.request == first  # the result keeps the user's full request


def test_short_prompt_has_no_note(cat_result: GenerationResult) -> None:
    assert cat_result.notes == ()


def test_negative_prompt_raises_guidance_and_changes_images(
    tiny_engine: Engine, tiny_engine_settings: EngineSettings, cat_result: GenerationResult
) -> None:
    request = make_request(
        "a photo of a cat",
        settings=tiny_engine_settings,
        seed=1000,
        count=1,
        negative_prompt="a red dog",
    )
    assert request.guidance == 1.5
    result = tiny_engine.generate(request)
    assert any("Guidance raised to 1.5" in note for note in result.notes)
    assert not same(result.images[0].image, cat_result.images[0].image)


def test_img2img_makes_variations(
    tiny_engine: Engine, tiny_engine_settings: EngineSettings, cat_result: GenerationResult
) -> None:
    source = cat_result.images[0].image
    request = make_request(
        "a photo of a cat",
        settings=tiny_engine_settings,
        seed=55,
        init_image=png_bytes(source),
        strength=0.6,
    )
    steps: list[StepProgress] = []
    result = tiny_engine.generate(request, steps.append)
    assert len(result.images) == 4
    for generated in result.images:
        assert generated.image.size == (64, 64)
        assert not same(generated.image, source)
    # LCM img2img runs the requested number of steps despite strength < 1.
    assert [s.step for s in steps] == [1, 2, 3, 4]
    # The img2img pipeline shares the loaded components instead of loading a second copy.
    assert tiny_engine._img2img_pipe().unet is tiny_engine.pipe.unet
    # Each variation can be recreated from its seed.
    single = dataclasses.replace(request, seed=56, count=1)
    assert matches(tiny_engine.generate(single).images[0].image, result.images[1].image)


def test_unreadable_init_image_is_invalid(tiny_engine: Engine, tiny_engine_settings) -> None:
    from engine import InvalidRequest

    request = make_request("a cat", settings=tiny_engine_settings, init_image=b"not a png")
    with pytest.raises(InvalidRequest):
        tiny_engine.generate(request)


def test_previews_with_a_tiny_taesd(
    tiny_engine_settings: EngineSettings, tiny_taesd_dir, cat_result: GenerationResult
) -> None:
    settings = tiny_engine_settings.model_copy(update={"preview_vae": str(tiny_taesd_dir)})
    engine = Engine.load(settings)
    steps: list[StepProgress] = []
    result = engine.generate(dataclasses.replace(cat_result.request, count=2), steps.append)
    assert [s.step for s in steps] == [1, 2, 3, 4]
    # Every step but the last (the images follow at once) has a preview.
    assert [s.preview is not None for s in steps] == [True, True, True, False]
    for step in steps[:3]:
        assert isinstance(step.preview, Image.Image) and step.preview.size == (64, 64)
    # Previews do not change the result.
    assert matches(result.images[0].image, cat_result.images[0].image)
    # At most one preview per interval: the first step's, then none for a minute.
    steps.clear()
    engine.generate(cat_result.request, steps.append, preview_every=60.0)
    assert [s.preview is not None for s in steps] == [True, False, False, False]


def test_preview_is_shrunk_on_the_device(tiny_engine_settings, tiny_taesd_dir) -> None:
    from engine.decoding import preview_image

    settings = tiny_engine_settings.model_copy(update={"preview_vae": str(tiny_taesd_dir)})
    taesd = Engine.load(settings).preview_vae
    latents = torch.randn(2, 4, 256, 192)  # the tiny TAESD doubles: a 512x384 image
    assert taesd.decode(latents[:1]).sample.shape[-2:] == (512, 384)
    preview = preview_image(taesd, latents, 256)
    assert preview.size == (192, 256) and preview.mode == "RGB"


def test_pixels_equal_what_diffusers_makes_of_the_same_latents(tiny_engine) -> None:
    """The engine decodes itself (uint8 on the device); diffusers' own PIL output agrees."""
    request = GenerationRequest(prompt="a cat", seed=5, width=64, height=64, count=2)
    [ours] = tiny_engine.generate_batch([request])
    generators = [torch.Generator("cpu").manual_seed(s) for s in request.seeds]
    theirs = tiny_engine.pipe(
        prompt="a cat",
        num_images_per_prompt=2,
        height=64,
        width=64,
        num_inference_steps=request.steps,
        guidance_scale=request.guidance,
        generator=generators,
    ).images
    for generated, image in zip(ours.images, theirs, strict=True):
        assert generated.pixels.dtype == np.uint8 and generated.pixels.shape == (64, 64, 3)
        assert np.array_equal(generated.pixels, np.asarray(image))


def test_missing_model_is_a_readable_error(tmp_path, tiny_engine_settings) -> None:
    missing = tmp_path / "no-such-model"
    settings = tiny_engine_settings.model_copy(update={"model": str(missing), "lora": ""})
    with pytest.raises(ModelNotFound) as info:
        Engine.load(settings)
    message = info.value.user_message
    assert str(missing) in message and "not found" in message
    assert "\n" not in message and "Traceback" not in message


def test_missing_lora_file_is_a_readable_error(tmp_path, tiny_engine_settings) -> None:
    settings = tiny_engine_settings.model_copy(update={"lora": str(tmp_path / "x.safetensors")})
    with pytest.raises(ModelNotFound, match="LoRA"):
        Engine.load(settings)


def test_out_of_memory_retries_in_halves(
    tiny_engine: Engine,
    tiny_engine_settings: EngineSettings,
    cat_result: GenerationResult,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_run = Engine._run
    sizes: list[int] = []

    def run_with_small_gpu(self, spec, jobs, progress, preview_every):
        images = sum(len(job.seeds) for job in jobs)
        sizes.append(images)
        if images > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_run(self, spec, jobs, progress, preview_every)

    monkeypatch.setattr(Engine, "_run", run_with_small_gpu)
    dog = make_request("a dog", settings=tiny_engine_settings, seed=9, count=2)
    cat, dog_result = tiny_engine.generate_batch([cat_result.request, dog])
    assert sizes == [6, 3, 3]
    assert cat.seeds == cat_result.seeds
    for a, b in zip(cat.images, cat_result.images, strict=True):
        assert matches(a.image, b.image)
    assert dog_result.seeds == (9, 10)

    sizes.clear()
    monkeypatch.setattr(
        Engine,
        "_run",
        lambda self, spec, jobs, progress, preview_every: (_ for _ in ()).throw(
            torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        ),
    )
    with pytest.raises(OutOfGPUMemory, match="about 10 GB"):
        tiny_engine.generate(cat_result.request)


def test_other_failures_become_generation_failed(
    tiny_engine: Engine, cat_result: GenerationResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self, spec, jobs, progress, preview_every):
        raise RuntimeError("boom")

    monkeypatch.setattr(Engine, "_run", broken)
    with pytest.raises(GenerationFailed) as info:
        tiny_engine.generate(cat_result.request)
    assert isinstance(info.value.__cause__, RuntimeError)


def test_warm_up_runs(tiny_engine: Engine) -> None:
    tiny_engine.warm_up()


def test_img2img_keeps_the_engine_dtype(
    tiny_engine_settings: EngineSettings, cat_result: GenerationResult
) -> None:
    # diffusers' from_pipe casts shared components to float32 unless told otherwise, which
    # would silently turn an fp16 GPU pipeline into fp32. bfloat16 shows it on CPU.
    engine = Engine.load(tiny_engine_settings.model_copy(update={"dtype": "bfloat16"}))
    assert engine.pipe.unet.dtype == torch.bfloat16
    request = make_request(
        "a cat",
        settings=tiny_engine_settings,
        seed=1,
        count=1,
        init_image=png_bytes(cat_result.images[0].image),
    )
    result = engine.generate(request)
    assert result.images[0].image.size == (64, 64)
    assert engine.pipe.unet.dtype == torch.bfloat16
    assert engine.pipe.vae.dtype == torch.bfloat16


def test_failing_progress_callback_does_not_fail_generation(
    tiny_engine: Engine, cat_result: GenerationResult
) -> None:
    def broken(step: StepProgress) -> None:
        raise RuntimeError("display broke")

    result = tiny_engine.generate(dataclasses.replace(cat_result.request, count=1), broken)
    assert len(result.images) == 1


def test_compile_is_ignored_on_cpu(
    tiny_engine: Engine, tiny_engine_settings: EngineSettings, caplog: pytest.LogCaptureFixture
) -> None:
    settings = tiny_engine_settings.model_copy(update={"compile": True})
    engine = Engine(tiny_engine.pipe, settings)
    with caplog.at_level("INFO", logger="engine.pipeline"):
        engine.warm_up()
    assert "IMAGINE_COMPILE ignored" in caplog.text
    assert type(engine.pipe.unet).__name__ == "UNet2DConditionModel"
