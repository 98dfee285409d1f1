"""Imagine's image engine: SDXL + LCM-LoRA behind plain request/result types.

Knows torch, diffusers, transformers and PIL; never imports ``discord`` or ``bot``.
``Engine`` (and so torch/diffusers) is imported lazily, so light users of the types, such as
the bot's validation code and its tests, do not pay for importing diffusers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.encoding import EncodedImage, encode_images
from engine.errors import (
    EngineError,
    GenerationFailed,
    InvalidRequest,
    ModelNotFound,
    OutOfGPUMemory,
)
from engine.requests import (
    ASPECT_RATIOS,
    GeneratedImage,
    GenerationRequest,
    GenerationResult,
    StepProgress,
    make_request,
    size_for_aspect_ratio,
)
from engine.runner import EngineRunner
from engine.settings import EngineSettings

if TYPE_CHECKING:
    from engine.pipeline import Engine

__all__ = [
    "ASPECT_RATIOS",
    "EncodedImage",
    "Engine",
    "EngineError",
    "EngineRunner",
    "EngineSettings",
    "GeneratedImage",
    "GenerationFailed",
    "GenerationRequest",
    "GenerationResult",
    "InvalidRequest",
    "ModelNotFound",
    "OutOfGPUMemory",
    "StepProgress",
    "encode_images",
    "make_request",
    "size_for_aspect_ratio",
]


def __getattr__(name: str) -> Any:
    if name == "Engine":
        from engine.pipeline import Engine

        return Engine
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
