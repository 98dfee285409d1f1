"""Prompt weights and long prompts on the tiny SDXL pipeline: what compel changes, and what not."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import Engine, EngineSettings, InvalidRequest, make_request
from engine.prompt_encoding import CLIP_WINDOW


def pixels(result) -> list[np.ndarray]:
    return [image.pixels.astype(int) for image in result.images]


def same_pixels(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(pixels(a), pixels(b), strict=True))


def within_rounding(a, b) -> bool:
    """Equal to 8-bit rounding (ISSUE-NOTES: batch shape may flip a rounding, never more)."""
    return all(np.abs(x - y).max() <= 1 for x, y in zip(pixels(a), pixels(b), strict=True))


@pytest.fixture(scope="module")
def generate(tiny_engine: Engine, tiny_engine_settings: EngineSettings):
    def run(prompt: str, seed: int = 7, **options):
        request = make_request(prompt, settings=tiny_engine_settings, seed=seed, count=2, **options)
        return tiny_engine.generate(request)

    return run


def test_compel_encodes_a_plain_prompt_exactly_as_diffusers_does(tiny_engine: Engine) -> None:
    # The engine keeps diffusers' encoder for plain prompts; compel would give the same bits.
    encoder = tiny_engine.prompts
    plain = encoder.encode("a red cat with a hat", "", guidance=False)
    compel = encoder._encode_with_compel("a red cat with a hat", "", guidance=False)
    assert torch.equal(plain.embeds, compel.embeds)
    assert torch.equal(plain.pooled, compel.pooled)
    assert plain.chunks == compel.chunks == 1


def test_a_weight_of_one_gives_the_plain_prompts_pixels(generate) -> None:
    plain = generate("a red cat with a hat")
    for weighted in ("a (red:1.0) cat with a hat", "a (red)1 cat with a hat"):
        assert same_pixels(generate(weighted), plain), weighted


@pytest.mark.parametrize(
    "weighted", ["a (red:1.5) cat", "a red++ cat", "a (red) cat", "a [red] cat"]
)
def test_weights_change_the_embedding_and_the_pixels(tiny_engine: Engine, generate, weighted):
    encoder = tiny_engine.prompts
    plain = encoder.encode("a red cat", "", guidance=False)
    assert not torch.equal(encoder.encode(weighted, "", guidance=False).embeds, plain.embeds)
    assert not same_pixels(generate(weighted), generate("a red cat"))


def test_automatic1111_weights_equal_compels_own(tiny_engine: Engine, generate) -> None:
    encoder = tiny_engine.prompts
    a1111 = encoder.encode("a (red:1.5) cat", "", guidance=False)
    compel = encoder.encode("a (red)1.5 cat", "", guidance=False)
    assert torch.equal(a1111.embeds, compel.embeds)
    assert same_pixels(generate("a (red:1.5) cat"), generate("a (red)1.5 cat"))


def test_a_200_token_prompt_is_not_cut(tiny_engine: Engine, generate) -> None:
    # One token per word in the tiny vocab: the last words sit in the third 77-token window.
    filler = " ".join(["a cat"] * 99)
    red, blue = generate(filler + " red hat"), generate(filler + " blue hat")
    assert red.notes == ()
    assert not same_pixels(red, blue)
    conditioning = tiny_engine.prompts.encode(filler + " red hat", "", guidance=False)
    assert conditioning.chunks == 3
    assert conditioning.embeds.shape[1] == 3 * CLIP_WINDOW


def test_long_prompts_keep_the_first_windows_pooled_embedding(tiny_engine: Engine) -> None:
    # AUTOMATIC1111's rule: the pooled (projected EOS) embedding is the first chunk's.
    filler = " ".join(["a cat"] * 50)
    first = tiny_engine.prompts.encode(filler + " red hat", "", guidance=False)
    other = tiny_engine.prompts.encode(filler + " blue dog", "", guidance=False)
    assert first.chunks == other.chunks == 2
    assert torch.equal(first.pooled, other.pooled)
    assert not torch.equal(first.embeds, other.embeds)


def test_weighted_long_and_plain_prompts_batched_equal_each_alone(
    tiny_engine: Engine, tiny_engine_settings: EngineSettings
) -> None:
    def request(prompt: str, seed: int):
        return make_request(prompt, settings=tiny_engine_settings, seed=seed, count=2)

    long_prompt = " ".join(["a cat"] * 60) + " (red:1.2) hat"
    requests = [
        request("a red cat", 1),
        request("a (red:1.4) cat, [blue] hat", 2),
        request(long_prompt, 3),
        request("a dog++ on a hat", 4),
    ]
    batched = tiny_engine.generate_batch(requests)
    for request_alone, together in zip(requests, batched, strict=True):
        alone = tiny_engine.generate(request_alone)
        assert within_rounding(together, alone), request_alone.prompt
    # The long prompt ran in a call of its own: not even a rounding differs.
    assert same_pixels(batched[2], tiny_engine.generate(requests[2]))


def test_negative_prompts_with_weights_and_lengths_under_guidance(
    tiny_engine: Engine, tiny_engine_settings: EngineSettings
) -> None:
    def run(prompt: str, negative: str):
        request = make_request(
            prompt, settings=tiny_engine_settings, seed=5, count=1, negative_prompt=negative
        )
        return tiny_engine.generate(request)

    long_prompt = " ".join(["a cat"] * 50) + " red hat"
    base = run(long_prompt, "blue")
    assert base.request.guidance > 1.0  # a negative prompt turns guidance on
    assert not same_pixels(base, run(long_prompt, "(blue:1.5)"))
    conditioning = tiny_engine.prompts.encode(long_prompt, "(blue:1.5)", guidance=True)
    # Positive and negative are padded to one length: the UNet sees them in one batch.
    assert conditioning.negative.shape == conditioning.embeds.shape
    # The plain path is today's: no negative is a zero negative, as diffusers does for SDXL.
    plain = tiny_engine.prompts.encode("a (red:1.2) cat", "", guidance=True)
    assert not plain.negative.any() and not plain.negative_pooled.any()


def test_multi_prompts_blend(tiny_engine: Engine, generate) -> None:
    blend = generate("a red cat:: a blue dog::0.5")
    assert not same_pixels(blend, generate("a red cat"))
    assert not same_pixels(blend, generate("a blue dog"))
    assert same_pixels(blend, generate('("a red cat", "a blue dog").blend(1, 0.5)'))


@pytest.mark.parametrize("prompt", ["a (red:99) cat", "a cat::-2 dog::1", "a (red:-1) cat"])
def test_absurd_weights_are_refused_before_queueing(
    tiny_engine_settings: EngineSettings, prompt: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        make_request(prompt, settings=tiny_engine_settings)
    assert caught.value.user_message


@pytest.mark.parametrize("prompt", ["a (red cat", "a red) cat", "a [[red cat", r"a \(red\) cat"])
def test_unbalanced_brackets_are_read_literally(generate, prompt: str) -> None:
    result = generate(prompt)
    assert len(result.images) == 2
