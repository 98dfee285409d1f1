"""Tile mode on the tiny SDXL networks: with circular padding, rolling the input rolls the output.

On the networks rather than through the pipeline, because the LCM scheduler adds fresh noise at
every step, which would hide whether the UNet itself wraps.
"""

from __future__ import annotations

import copy

import pytest
import torch

from engine.seamless import circular_padding, padded_convs

ATOL = 1e-4  # measured: rolled outputs differ by <= 1.3e-6 in float32
RTOL = 1e-4
# Measured: without tile mode the rolled outputs differ by 0.8-1.4, so the zero-padded seam is
# far above float error.
SEAM = 100 * ATOL


@pytest.fixture(scope="module")
def unet(tiny_model_dir):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(tiny_model_dir / "unet", torch_dtype=torch.float32)


@pytest.fixture(scope="module")
def vae(tiny_model_dir):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(tiny_model_dir / "vae", torch_dtype=torch.float32)


@pytest.fixture(scope="module")
def latents() -> torch.Tensor:
    return torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="module")
def conditioning(unet) -> dict:
    generator = torch.Generator().manual_seed(8)
    width = unet.config.cross_attention_dim  # both text encoders' hidden states side by side
    return {
        "encoder_hidden_states": torch.randn(1, 8, width, generator=generator),
        "added_cond_kwargs": {
            "text_embeds": torch.randn(1, 32, generator=generator),
            "time_ids": torch.tensor([[32.0, 32.0, 0.0, 0.0, 32.0, 32.0]]),
        },
    }


def _denoise(unet, latents: torch.Tensor, conditioning: dict) -> torch.Tensor:
    with torch.no_grad():
        return unet(latents, torch.tensor(500), **conditioning).sample


def _decode(vae, latents: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return vae.decode(latents).sample


def _roll(x: torch.Tensor, shifts: tuple[int, int], scale: int = 1) -> torch.Tensor:
    return x.roll((shifts[0] * scale, shifts[1] * scale), dims=(2, 3))


def _modes(*modules: torch.nn.Module) -> dict[str, str]:
    return {
        f"{i}.{name}": conv.padding_mode
        for i, module in enumerate(modules)
        for name, conv in module.named_modules()
        if isinstance(conv, torch.nn.Conv2d)
    }


def _vae_scale_factor(vae) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


# The tiny UNet downsamples once (its last block does not), so its total stride is 2.
@pytest.mark.parametrize("shifts", [(2, 2), (4, 4), (-2, 4)])
def test_unet_output_rolls_with_its_input_in_tile_mode(unet, latents, conditioning, shifts):
    with circular_padding(unet):
        rolled_first = _denoise(unet, _roll(latents, shifts), conditioning)
        rolled_after = _roll(_denoise(unet, latents, conditioning), shifts)
    torch.testing.assert_close(rolled_first, rolled_after, atol=ATOL, rtol=RTOL)

    plain_first = _denoise(unet, _roll(latents, shifts), conditioning)
    plain_after = _roll(_denoise(unet, latents, conditioning), shifts)
    assert (plain_first - plain_after).abs().max() > SEAM


@pytest.mark.parametrize("shifts", [(1, 1), (3, -2), (0, 5)])
def test_vae_decode_rolls_with_the_latents_in_tile_mode(vae, latents, shifts):
    scale = _vae_scale_factor(vae)
    assert scale == 2
    with circular_padding(vae):
        rolled_first = _decode(vae, _roll(latents, shifts))
        rolled_after = _roll(_decode(vae, latents), shifts, scale)
    torch.testing.assert_close(rolled_first, rolled_after, atol=ATOL, rtol=RTOL)

    plain_first = _decode(vae, _roll(latents, shifts))
    plain_after = _roll(_decode(vae, latents), shifts, scale)
    assert (plain_first - plain_after).abs().max() > SEAM


def test_every_padding_conv_is_circular_inside_and_as_before_afterwards(
    unet, vae, latents, conditioning
):
    before = _modes(unet, vae)
    denoised, decoded = _denoise(unet, latents, conditioning), _decode(vae, latents)
    padding = set(padded_convs(unet, vae))
    assert padding
    with circular_padding(unet, vae):
        for module in (unet, vae):
            for conv in module.modules():
                if conv in padding:
                    assert conv.padding_mode == "circular"
                elif isinstance(conv, torch.nn.Conv2d):
                    assert conv.padding_mode == "zeros"  # 1x1 and padding=0 convs are left alone
        assert not torch.equal(_decode(vae, latents), decoded)
    assert _modes(unet, vae) == before
    assert torch.equal(_denoise(unet, latents, conditioning), denoised)
    assert torch.equal(_decode(vae, latents), decoded)


def test_padding_modes_come_back_when_the_block_raises(unet, vae, latents):
    before = _modes(unet, vae)
    decoded = _decode(vae, latents)
    with pytest.raises(RuntimeError, match="boom"), circular_padding(unet, vae):
        assert set(_modes(unet, vae).values()) == {"zeros", "circular"}
        raise RuntimeError("boom")
    assert _modes(unet, vae) == before
    assert torch.equal(_decode(vae, latents), decoded)


def test_a_module_passed_twice_or_inside_another_is_switched_and_restored_once(vae, latents):
    before = _modes(vae)
    assert padded_convs(vae, vae, vae.decoder) == padded_convs(vae)
    with circular_padding(vae, vae.decoder, vae):
        rolled_first = _decode(vae, _roll(latents, (1, 1)))
        rolled_after = _roll(_decode(vae, latents), (1, 1), _vae_scale_factor(vae))
    torch.testing.assert_close(rolled_first, rolled_after, atol=ATOL, rtol=RTOL)
    assert _modes(vae) == before


def test_nested_blocks_restore_the_outer_blocks_modes(vae):
    convs = padded_convs(vae)
    with circular_padding(vae):
        with circular_padding(vae.decoder):
            pass
        assert all(conv.padding_mode == "circular" for conv in convs)
    assert all(conv.padding_mode == "zeros" for conv in convs)


def test_off_changes_nothing(unet, vae, latents, conditioning):
    before = _modes(unet, vae)
    denoised, decoded = _denoise(unet, latents, conditioning), _decode(vae, latents)
    with circular_padding(unet, vae, on=False):
        assert _modes(unet, vae) == before
        assert torch.equal(_denoise(unet, latents, conditioning), denoised)
        assert torch.equal(_decode(vae, latents), decoded)
    assert _modes(unet, vae) == before


def test_a_previous_non_zero_mode_comes_back():
    conv = torch.nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect")
    with circular_padding(conv):
        assert conv.padding_mode == "circular"
    assert conv.padding_mode == "reflect"


def test_peft_lora_conv_wrappers_wrap_too(unet, latents, conditioning):
    """Between load_lora_weights and unload, peft wraps convs; their inner convs must wrap."""
    from peft import LoraConfig

    torch.manual_seed(9)
    wrapped = copy.deepcopy(unet)
    wrapped.add_adapter(
        LoraConfig(r=4, lora_alpha=4, init_lora_weights=False, target_modules=["conv1", "conv2"])
    )
    wrappers = [m for m in wrapped.modules() if hasattr(m, "base_layer") and hasattr(m, "lora_A")]
    assert wrappers
    assert not any(isinstance(m, torch.nn.Conv2d) for m in wrappers)  # found through base_layer
    before = _modes(wrapped)
    with circular_padding(wrapped):
        for wrapper in wrappers:
            assert wrapper.base_layer.padding_mode == "circular"
            assert all(a.padding_mode == "circular" for a in wrapper.lora_A.values())
        rolled_first = _denoise(wrapped, _roll(latents, (2, 2)), conditioning)
        rolled_after = _roll(_denoise(wrapped, latents, conditioning), (2, 2))
    torch.testing.assert_close(rolled_first, rolled_after, atol=ATOL, rtol=RTOL)
    assert _modes(wrapped) == before


class _TwoConvs(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = torch.nn.Conv2d(2, 3, 3, padding=1)
        self.second = torch.nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x).relu())


def test_compiled_modules_recompile_unless_run_eagerly():
    """What the engine relies on: force_eager runs tile batches without touching the graphs."""
    torch.manual_seed(10)
    net = _TwoConvs()
    x = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        with circular_padding(net):
            circular = net(x)
        net.compile(backend="eager")  # in place, as engine/compiling.py does
        plain = net(x)
        with circular_padding(net), torch.compiler.set_stance("force_eager"):
            assert torch.equal(net(x), circular)
        with torch.compiler.set_stance("fail_on_recompile"):
            assert torch.equal(net(x), plain)  # the compiled graph's guards match again
            with pytest.raises(RuntimeError, match="recompile"), circular_padding(net):
                net(x)
