"""Request validation, sizes from aspect ratios and seeds (no torch needed)."""

from __future__ import annotations

import dataclasses

import pytest

from engine import (
    ASPECT_RATIOS,
    EngineSettings,
    GenerationRequest,
    InvalidRequest,
    make_request,
    size_for_aspect_ratio,
)


@pytest.fixture
def settings() -> EngineSettings:
    return EngineSettings(_env_file=None, resolution=64, translator="")


@pytest.mark.parametrize(
    ("ratio", "size"),
    [
        ("1:1", (1024, 1024)),
        ("4:3", (1152, 896)),
        ("3:4", (896, 1152)),
        ("3:2", (1216, 832)),
        ("2:3", (832, 1216)),
        ("16:9", (1344, 768)),
        ("9:16", (768, 1344)),
    ],
)
def test_sdxl_sizes_at_1024(ratio: str, size: tuple[int, int]) -> None:
    assert size_for_aspect_ratio(ratio, 1024) == size


@pytest.mark.parametrize("ratio", list(ASPECT_RATIOS))
@pytest.mark.parametrize("base", [64, 512, 768, 1024])
def test_sizes_keep_area_and_grid(ratio: str, base: int) -> None:
    width, height = size_for_aspect_ratio(ratio, base)
    grid = 64 if base >= 512 else 8
    assert width % grid == 0 and height % grid == 0
    assert 0.75 * base * base <= width * height <= base * base
    ratio_w, ratio_h = ASPECT_RATIOS[ratio]
    assert (width >= height) == (ratio_w >= ratio_h)


def test_make_request_defaults(settings: EngineSettings) -> None:
    request = make_request("  a cat  ", settings=settings, seed=5)
    assert request.prompt == "a cat"
    assert (request.width, request.height) == (64, 64)
    assert request.count == settings.images_per_request == 4
    assert request.steps == 4 and request.guidance == 1.0
    assert request.seeds == (5, 6, 7, 8)
    assert request.notes == ()


def test_random_seed_in_range(settings: EngineSettings) -> None:
    seeds = {make_request("a cat", settings=settings).seed for _ in range(20)}
    assert len(seeds) > 1
    assert all(0 <= seed < 2**32 for seed in seeds)


def test_seeds_wrap_around(settings: EngineSettings) -> None:
    request = make_request("a cat", settings=settings, seed=2**32 - 2)
    assert request.seeds == (2**32 - 2, 2**32 - 1, 0, 1)


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_empty_prompt_is_invalid(settings: EngineSettings, prompt: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        make_request(prompt, settings=settings)
    assert "empty" in info.value.user_message


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, True])
def test_bad_seed_is_invalid(settings: EngineSettings, seed) -> None:
    with pytest.raises(InvalidRequest) as info:
        make_request("a cat", settings=settings, seed=seed)
    assert "seed" in info.value.user_message


def test_bad_aspect_is_invalid(settings: EngineSettings) -> None:
    with pytest.raises(InvalidRequest) as info:
        make_request("a cat", settings=settings, aspect_ratio="5:1")
    assert "5:1" in info.value.user_message and "16:9" in info.value.user_message


def test_bad_count_and_strength_are_invalid(settings: EngineSettings) -> None:
    with pytest.raises(InvalidRequest):
        make_request("a cat", settings=settings, count=0)
    with pytest.raises(InvalidRequest):
        make_request("a cat", settings=settings, init_image=b"png", strength=0.0)


def test_negative_prompt_raises_guidance_with_note(settings: EngineSettings) -> None:
    request = make_request("a cat", settings=settings, negative_prompt="blurry")
    assert request.guidance == settings.negative_guidance == 1.5
    assert len(request.notes) == 1 and "negative prompt" in request.notes[0]


def test_negative_prompt_keeps_higher_guidance() -> None:
    settings = EngineSettings(_env_file=None, guidance=2.0, resolution=64)
    request = make_request("a cat", settings=settings, negative_prompt="blurry")
    assert request.guidance == 2.0 and request.notes == ()


def test_batch_key_groups_compatible_requests(settings: EngineSettings) -> None:
    a = make_request("a cat", settings=settings, seed=1)
    b = make_request("a dog", settings=settings, seed=2, count=2)
    wide = make_request("a dog", settings=settings, aspect_ratio="16:9")
    variation = make_request("a dog", settings=settings, init_image=b"png")
    assert a.batch_key == b.batch_key
    assert a.batch_key != wide.batch_key
    assert a.batch_key != variation.batch_key


def test_requests_are_frozen_and_notes_do_not_affect_equality(settings: EngineSettings) -> None:
    request = make_request("a cat", settings=settings, seed=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.seed = 2  # type: ignore[misc]
    assert dataclasses.replace(request, notes=("x",)) == request
    assert isinstance(dataclasses.replace(request, seed=9), GenerationRequest)


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGINE_RESOLUTION", "768")
    monkeypatch.setenv("IMAGINE_LORA", "")
    settings = EngineSettings(_env_file=None)
    assert settings.resolution == 768 and settings.lora == ""
