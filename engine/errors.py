"""Engine errors. Each carries a one-line message that can be shown to a user as is."""

from __future__ import annotations


class EngineError(Exception):
    """Base class: ``user_message`` is safe and readable to show to a Discord user."""

    def __init__(self, user_message: str) -> None:
        super().__init__(user_message)
        self.user_message = user_message


class InvalidRequest(EngineError):
    """The user's input cannot become a request (empty prompt, bad seed, unknown ratio...)."""


class ModelNotFound(EngineError):
    """The model, LoRA or VAE named in the settings cannot be found locally or on the hub."""


class OutOfGPUMemory(EngineError):
    """The GPU ran out of memory, even after retrying with a smaller batch."""


class GenerationFailed(EngineError):
    """Anything else that went wrong inside the diffusion pipeline (the cause is chained)."""
