"""Tiny SDXL pipeline, LoRA and TAESD built from config with random weights, for tests.

Nothing here touches the network: the tokenizer comes from a small hand-written BPE vocab.
Weights are seeded, so every build gives the same model and the same pixels.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

TINY_SEED = 1234
MAX_TOKENS = 77  # what SDXL's CLIP tokenizers take, BOS and EOS included
TEXT_HIDDEN = 32
TEXT_PROJECTION = 32
TIME_EMBED_DIM = 8


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable character table (same as GPT-2's)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes), strict=True))


# A few merges so common test words become single tokens; everything else splits into bytes.
_WORDS = ("a", "cat", "dog", "red", "blue", "photo", "of", "the", "in", "on", "with", "hat")


def write_tiny_clip_vocab(directory: Path) -> tuple[Path, Path]:
    """Write vocab.json and merges.txt for a tiny CLIP BPE tokenizer; return their paths."""
    chars = list(_bytes_to_unicode().values())
    vocab: list[str] = []
    vocab += chars
    vocab += [c + "</w>" for c in chars]
    merges: list[str] = []
    for word in _WORDS:
        # Merge left to right: "c a", "ca t</w>" ... which makes each listed word one token.
        pieces = [*word[:-1], word[-1] + "</w>"]
        while len(pieces) > 1:
            merges.append(f"{pieces[0]} {pieces[1]}")
            merged = pieces[0] + pieces[1]
            if merged not in vocab:
                vocab.append(merged)
            pieces = [merged, *pieces[2:]]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    directory.mkdir(parents=True, exist_ok=True)
    vocab_path = directory / "vocab.json"
    merges_path = directory / "merges.txt"
    vocab_path.write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    merges_path.write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return vocab_path, merges_path


def _tiny_tokenizer(work_dir: Path, pad_token: str):
    from transformers import CLIPTokenizer

    write_tiny_clip_vocab(work_dir)
    return CLIPTokenizer.from_pretrained(
        str(work_dir), model_max_length=MAX_TOKENS, pad_token=pad_token
    )


def build_tiny_sdxl(path: str | Path):
    """Save a tiny SDXL pipeline (diffusers format) to ``path`` and return it.

    Shapes follow diffusers' own SDXL tests: a 2-block UNet with cross-attention on the second
    block, a 2-block VAE (scale factor 2), two 32-wide CLIP text encoders.
    """
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    path = Path(path)
    torch.manual_seed(TINY_SEED)
    tokenizer = _tiny_tokenizer(path / "_vocab", pad_token="<|endoftext|>")
    tokenizer_2 = _tiny_tokenizer(path / "_vocab", pad_token="!")
    vocab_size = len(tokenizer)
    text_config = CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=TEXT_HIDDEN,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=3,
        vocab_size=vocab_size,
        hidden_act="gelu",
        projection_dim=TEXT_PROJECTION,
        max_position_embeddings=MAX_TOKENS,
    )
    text_encoder = CLIPTextModel(text_config)
    text_encoder_2 = CLIPTextModelWithProjection(text_config)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED_DIM,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * TIME_EMBED_DIM + TEXT_PROJECTION,
        cross_attention_dim=2 * TEXT_HIDDEN,
        norm_num_groups=1,
    )
    vae = AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        sample_size=64,
        norm_num_groups=1,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        steps_offset=1,
        beta_schedule="scaled_linear",
        timestep_spacing="leading",
    )
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    pipe.save_pretrained(path)
    shutil.rmtree(path / "_vocab")  # the saved tokenizers carry their own copy
    return pipe


def build_tiny_lora(
    path: str | Path,
    unet,
    scale: float = 4.0,
    *,
    rank: int = 4,
    targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0"),
    seed: int = TINY_SEED + 1,
    text_encoder=None,
) -> Path:
    """Save a random LoRA for ``unet`` (attention projections) and return the .safetensors path.

    ``path`` is the file to write (``*.safetensors``) or a directory for
    ``pytorch_lora_weights.safetensors``. ``lora_B`` is scaled up so the LoRA visibly changes
    pixels. ``rank``, ``targets`` and ``seed`` make LoRAs that differ (styles); with
    ``text_encoder`` (a CLIP text model) the LoRA changes its q/v projections too. The models
    themselves are left untouched (copies get the adapters).
    """
    import copy

    from diffusers import StableDiffusionXLPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    path = Path(path)
    if path.suffix == ".safetensors":
        directory, weight_name = path.parent, path.name
    else:
        directory, weight_name = path, "pytorch_lora_weights.safetensors"
    torch.manual_seed(seed)

    def lora_of(model, target_modules) -> dict:
        model = copy.deepcopy(model)
        config = LoraConfig(
            r=rank, lora_alpha=rank, init_lora_weights=False, target_modules=list(target_modules)
        )
        inject_adapter_in_model(config, model)  # peft itself: any torch model
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "lora_B" in name:
                    parameter.mul_(scale)
        state = get_peft_model_state_dict(model)
        # diffusers names attention projections its own way (lora.down/up), the rest as peft
        # does (lora_A/B); it loads either, but not a mix, so mixed targets stay in peft names.
        if set(target_modules) <= {"to_q", "to_k", "to_v", "to_out.0"}:
            state = convert_state_dict_to_diffusers(state)
        return state

    layers = {"unet_lora_layers": lora_of(unet, targets)}
    if text_encoder is not None:
        layers["text_encoder_lora_layers"] = lora_of(text_encoder, ("q_proj", "v_proj"))
    directory.mkdir(parents=True, exist_ok=True)
    StableDiffusionXLPipeline.save_lora_weights(
        save_directory=str(directory), weight_name=weight_name, **layers
    )
    return directory / weight_name


def build_tiny_taesd(path: str | Path):
    """Save a tiny ``AutoencoderTiny`` (previews) whose upscale matches the tiny VAE (x2)."""
    from diffusers import AutoencoderTiny

    path = Path(path)
    torch.manual_seed(TINY_SEED + 2)
    taesd = AutoencoderTiny(
        in_channels=3,
        out_channels=3,
        encoder_block_out_channels=(16, 16),
        decoder_block_out_channels=(16, 16),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
        latent_channels=4,
    )
    taesd.save_pretrained(path)
    return taesd
