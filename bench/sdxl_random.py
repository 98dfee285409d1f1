"""Random-weight SDXL + LCM-LoRA, built from config, for GPU speed benchmarks.

Speed does not depend on the weights, only on shapes, dtypes and kernels, so the benchmark
needs no download: this module builds the full-size SDXL architecture (configs from
shared/docs/FACTS.md, "Full-size SDXL architecture") straight on the target device and dtype,
or the same structure at toy sizes (``tiny=True``) for CPU tests.

Public API:
    build_pipeline(tiny, device, dtype, force_upcast) -> StableDiffusionXLPipeline
    add_lcm_lora(pipe, tiny) -> number of LoRA parameters added (peft adapter, unfused)
    fuse_and_unload_lora(pipe)  -> the engine's way: LoRA merged into the weights, layers gone
    count_lora_layers(module)   -> peft LoRA layers still present (0 once fused and unloaded)
    set_vae_upcast(pipe, on)    -> stock VAE (True: decoded in fp32) vs fp16-fix VAE (False)
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    LCMScheduler,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
)

log = logging.getLogger(__name__)

# The LCM-LoRA for SDXL (latent-consistency/lcm-lora-sdxl) adapts exactly these modules.
LCM_LORA_TARGETS: tuple[str, ...] = (
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "proj_in",
    "proj_out",
    "ff.net.0.proj",
    "ff.net.2",
    "conv1",
    "conv2",
    "conv_shortcut",
    "downsamplers.0.conv",
    "upsamplers.0.conv",
    "time_emb_proj",
)
LCM_LORA_RANK = 64
TINY_LORA_RANK = 4
LORA_ADAPTER_NAME = "lcm"

# Small-std init keeps a 2.6 B-parameter random net finite in fp16; speed is unaffected.
INIT_STD = 0.02


def unet_config(tiny: bool) -> dict[str, Any]:
    """UNet2DConditionModel config: SDXL base 1.0 (full) or a toy with the same structure."""
    if not tiny:
        return {
            "sample_size": 128,
            "in_channels": 4,
            "out_channels": 4,
            "block_out_channels": (320, 640, 1280),
            "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            "transformer_layers_per_block": (1, 2, 10),
            "attention_head_dim": (5, 10, 20),
            "cross_attention_dim": 2048,
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": 256,
            "projection_class_embeddings_input_dim": 2816,
            "use_linear_projection": True,
            "layers_per_block": 2,
            "norm_num_groups": 32,
        }
    # Toy: text hidden 32 + 32 -> cross-attention 64; 6 * 8 time ids + projection 32 = 80.
    return {
        "sample_size": 8,
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": (32, 64),
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
        "transformer_layers_per_block": (1, 2),
        "attention_head_dim": (2, 4),
        "cross_attention_dim": 64,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 8,
        "projection_class_embeddings_input_dim": 80,
        "use_linear_projection": True,
        "layers_per_block": 2,
        "norm_num_groups": 32,
    }


def vae_config(tiny: bool, force_upcast: bool) -> dict[str, Any]:
    """AutoencoderKL config; ``force_upcast`` True = stock SDXL VAE, False = fp16-fix VAE."""
    # Four levels at both sizes: the 8x latent downscale (what the UNet's shapes assume).
    channels = (32, 32, 32, 32) if tiny else (128, 256, 512, 512)
    return {
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": 4,
        "block_out_channels": channels,
        "down_block_types": ("DownEncoderBlock2D",) * len(channels),
        "up_block_types": ("UpDecoderBlock2D",) * len(channels),
        "layers_per_block": 1 if tiny else 2,
        "norm_num_groups": 32,
        "sample_size": 64 if tiny else 1024,
        "scaling_factor": 0.13025,
        "force_upcast": force_upcast,
    }


def text_encoder_configs(tiny: bool, vocab_size: int) -> tuple[CLIPTextConfig, CLIPTextConfig]:
    """CLIP text encoder configs (SDXL: CLIP ViT-L and OpenCLIP bigG text towers)."""
    if tiny:
        common = {"intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 2}
        te1 = CLIPTextConfig(hidden_size=32, projection_dim=32, hidden_act="quick_gelu", **common)
        te2 = CLIPTextConfig(hidden_size=32, projection_dim=32, hidden_act="gelu", **common)
    else:
        te1 = CLIPTextConfig(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            projection_dim=768,
            hidden_act="quick_gelu",
        )
        te2 = CLIPTextConfig(
            hidden_size=1280,
            intermediate_size=5120,
            num_hidden_layers=32,
            num_attention_heads=20,
            projection_dim=1280,
            hidden_act="gelu",
        )
    for cfg in (te1, te2):
        # Real vocab size even with a toy tokenizer: the embedding table's size is real work.
        cfg.vocab_size = vocab_size if tiny else 49408
        cfg.max_position_embeddings = 77
        cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id = 0, 1, 1
    return te1, te2


def scheduler_config() -> dict[str, Any]:
    """SDXL base 1.0's EulerDiscreteScheduler config (then swapped for LCMScheduler)."""
    return {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "prediction_type": "epsilon",
        "steps_offset": 1,
        "timestep_spacing": "leading",
        "interpolation_type": "linear",
        "use_karras_sigmas": False,
    }


def _byte_unicode_chars() -> list[str]:
    """The 256 printable stand-ins CLIP's byte-level BPE uses for raw bytes (GPT-2 table)."""
    keep = list(range(ord("!"), ord("~") + 1))
    keep += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def build_tokenizer() -> CLIPTokenizer:
    """A CLIPTokenizer with a hand-written byte-level vocab and no merges.

    Every character becomes one token. Tokenizing costs microseconds either way and the text
    encoders always see 77 padded positions, so a toy vocab changes no measured number.
    """
    chars = _byte_unicode_chars()
    tokens = ["<|startoftext|>", "<|endoftext|>", *chars, *(c + "</w>" for c in chars)]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file, merges_file = Path(tmp, "vocab.json"), Path(tmp, "merges.txt")
        vocab_file.write_text(json.dumps(vocab), encoding="utf-8")
        merges_file.write_text("#version: 0.2\n", encoding="utf-8")
        return CLIPTokenizer(
            str(vocab_file),
            str(merges_file),
            model_max_length=77,
            pad_token="<|endoftext|>",
        )


@contextlib.contextmanager
def _default_device_and_dtype(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Create parameters directly on ``device`` in ``dtype`` (no 10 GB fp32 CPU detour)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            yield
    finally:
        torch.set_default_dtype(previous)


@torch.no_grad()
def init_small_(module: torch.nn.Module, std: float = INIT_STD, seed: int = 0) -> None:
    """Re-initialise weights in place: N(0, std) for matrices/kernels/embeddings, zero biases.

    Norm layers keep weight 1 / bias 0. Deterministic for a given seed on a given device.
    """
    generator_device = next(module.parameters()).device
    gen = torch.Generator(device=generator_device).manual_seed(seed)
    for name, param in module.named_parameters():
        if param.ndim >= 2:
            param.normal_(0.0, std, generator=gen)
        elif name.endswith("bias"):
            param.zero_()
        # 1-D weights are norm scales (and CLIP's logit scale): keep the defaults.


def build_pipeline(
    *,
    tiny: bool,
    device: str | torch.device,
    dtype: torch.dtype,
    force_upcast: bool = False,
    seed: int = 0,
) -> StableDiffusionXLPipeline:
    """Build SDXL (UNet, VAE, two CLIP text encoders, tokenizers, LCMScheduler) from config.

    Args:
        tiny: toy sizes with the same structure (fast on CPU) instead of the real 2.6 B UNet.
        device: where the weights are created (created there directly, not moved).
        dtype: parameter dtype (fp16 on CUDA, fp32 on CPU).
        force_upcast: True = stock SDXL VAE (diffusers decodes in fp32), False = fp16-fix VAE.
        seed: weight init seed.

    Returns:
        A ready ``StableDiffusionXLPipeline`` with random small-std weights and no LoRA.
    """
    device = torch.device(device)
    tokenizer = build_tokenizer()
    te1_cfg, te2_cfg = text_encoder_configs(tiny, vocab_size=len(tokenizer))
    with _default_device_and_dtype(device, dtype):
        unet = UNet2DConditionModel(**unet_config(tiny))
        vae = AutoencoderKL(**vae_config(tiny, force_upcast))
        text_encoder = CLIPTextModel(te1_cfg)
        text_encoder_2 = CLIPTextModelWithProjection(te2_cfg)
    for i, model in enumerate((unet, vae, text_encoder, text_encoder_2)):
        model.to(device=device, dtype=dtype)
        init_small_(model, seed=seed + i)
        model.eval().requires_grad_(False)
    scheduler = LCMScheduler.from_config(EulerDiscreteScheduler(**scheduler_config()).config)
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=build_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    log.info(
        "built %s SDXL on %s/%s: unet %.3g params, text encoders %.3g, vae %.3g",
        "tiny" if tiny else "full-size",
        device,
        dtype,
        count_params(unet),
        count_params(text_encoder) + count_params(text_encoder_2),
        count_params(vae),
    )
    return pipe


def count_params(module: torch.nn.Module) -> int:
    """Number of parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())


def add_lcm_lora(pipe: StableDiffusionXLPipeline, *, tiny: bool, seed: int = 1) -> int:
    """Add a random LCM-LoRA with the real layout to the UNet as an unfused peft adapter.

    The adapter layers stay separate (lora_A/lora_B run on every forward), as in a pipeline
    that called ``load_lora_weights`` and never fused. Weights are small and random so the
    output stays finite.

    Returns:
        The number of LoRA parameters added (about 197 M for the real layout at rank 64).
    """
    from peft import LoraConfig

    rank = TINY_LORA_RANK if tiny else LCM_LORA_RANK
    before = count_params(pipe.unet)
    config = LoraConfig(
        r=rank,
        lora_alpha=rank,
        target_modules=list(LCM_LORA_TARGETS),
        init_lora_weights=False,
    )
    with pipe.unet.device:  # create the 197 M LoRA parameters on the GPU, not the CPU
        pipe.unet.add_adapter(config, adapter_name=LORA_ADAPTER_NAME)
    gen = torch.Generator(device=pipe.unet.device).manual_seed(seed)
    with torch.no_grad():
        for name, param in pipe.unet.named_parameters():
            if "lora_" in name:
                # std 1/sqrt(fan_in) on A and small B keeps the low-rank delta ~1% of W.
                fan_in = math.prod(param.shape[1:]) if param.ndim > 1 else 1
                std = 1.0 / math.sqrt(fan_in) if "lora_A" in name else INIT_STD / 10
                param.normal_(0.0, std, generator=gen)
    pipe.unet.requires_grad_(False)
    added = count_params(pipe.unet) - before
    log.info(
        "added LCM-LoRA rank %d: %d LoRA layers, %.3g params",
        rank,
        count_lora_layers(pipe.unet),
        added,
    )
    return added


def count_lora_layers(module: torch.nn.Module) -> int:
    """Number of peft LoRA layers (``BaseTunerLayer``) still present in ``module``."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return sum(isinstance(m, BaseTunerLayer) for m in module.modules())


def fuse_and_unload_lora(pipe: StableDiffusionXLPipeline) -> None:
    """Merge the LoRA into the UNet weights and remove its layers (what the engine does)."""
    pipe.fuse_lora(components=["unet"], lora_scale=1.0)
    pipe.unload_lora_weights()


def set_vae_upcast(pipe: StableDiffusionXLPipeline, force_upcast: bool) -> None:
    """Switch between stock-VAE behaviour (decode in fp32) and fp16-fix behaviour.

    The two VAEs share one architecture; diffusers only reads ``vae.config.force_upcast``.
    """
    pipe.vae.register_to_config(force_upcast=force_upcast)
