"""Engine settings: one typed object built once (from the environment) and passed down."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

COMPILE_CACHE = "compile-cache"
"""The folder under IMAGINE_DATA_DIR where IMAGINE_COMPILE keeps compiled kernels."""


class EngineSettings(BaseSettings):
    """Everything the engine needs to load SDXL + LCM-LoRA and size requests.

    Read from ``IMAGINE_*`` environment variables (and ``.env``); see docs/architecture.md.
    """

    model_config = SettingsConfigDict(env_prefix="IMAGINE_", env_file=".env", extra="ignore")

    model: str = "stabilityai/stable-diffusion-xl-base-1.0"
    lora: str = "latent-consistency/lcm-lora-sdxl"
    vae: str = "madebyollin/sdxl-vae-fp16-fix"
    device: Literal["auto", "cuda", "cpu"] = "auto"
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    attention: Literal["sdpa", "xformers"] = "sdpa"
    resolution: int = Field(default=1024, ge=64, le=4096)
    steps: int = Field(default=4, ge=1, le=50)
    guidance: float = Field(default=1.0, ge=0.0, le=20.0)
    negative_guidance: float = Field(default=1.5, ge=0.0, le=20.0)
    images_per_request: int = Field(default=4, ge=1, le=16)
    max_batch_images: int = Field(default=16, ge=1, le=128)
    compile: bool = False
    vae_decoder: Literal["full", "tiny"] = "full"
    tiny_vae: str = "madebyollin/taesdxl"
    low_memory: bool = False
    image_format: Literal["png", "webp", "jpeg"] = "png"
    preview_vae: str = ""
    translator: str = "Helsinki-NLP/opus-mt-zh-en"
    safety_model: str = ""
    describe_model: str = ""  # /describe's image-to-text checkpoint (engine/describe.py); off
    styles: str = ""  # a TOML file of curated styles (engine/styles.py); empty: none
