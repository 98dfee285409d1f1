"""Optional image safety check after generation (an image classifier, e.g. an NSFW detector).

Safety is a separate step after generation (as in replicate/cog-sdxl): the engine makes the
images, this module scores them, and the bot decides what to do with a flagged image (send it
as a spoiler in an age-restricted channel, or withhold it). Never imports ``discord``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from engine.hub import load_optional

log = logging.getLogger(__name__)

# Label names used by common open NSFW classifiers (Falconsai/nsfw_image_detection: normal/nsfw;
# the GantMan-style ones: drawings/hentai/neutral/porn/sexy). Compared case-insensitively.
UNSAFE_LABELS = frozenset({"nsfw", "porn", "hentai", "sexy", "unsafe", "explicit"})


@dataclass(frozen=True)
class SafetyVerdict:
    """The check's answer for one image.

    Attributes:
        flagged: an unsafe label reached the threshold.
        label: the unsafe label that flagged the image, or else the most likely label.
        score: that label's probability (0..1).
    """

    flagged: bool
    label: str
    score: float


class SafetyChecker:
    """Scores images with a transformers image-classification model, loaded once.

    ``SafetyChecker("")`` is a disabled checker: ``check`` flags nothing.
    """

    def __init__(
        self, model_id_or_path: str | None, threshold: float = 0.5, device: str = "cpu"
    ) -> None:
        """Load the classifier (blocking).

        Args:
            model_id_or_path: hub id or local directory; "" or None disables the check (the
                ``IMAGINE_SAFETY_MODEL=""`` setting).
            threshold: probability at which an unsafe label flags an image.
            device: torch device; CPU by default (a ViT-base costs ~0.1 s per image there).

        Raises:
            ModelNotFound: the model or its image processor cannot be loaded.
        """
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be within 0..1, got {threshold}")
        self.model_id = model_id_or_path or ""
        self.threshold = threshold
        self.device = device
        self._lock = threading.Lock()  # one forward pass at a time; the bot may call from threads
        self._model: Any = None
        self._processor: Any = None
        if self.model_id:
            self._load()

    @property
    def enabled(self) -> bool:
        """False when no model is configured."""
        return self._model is not None

    def _load(self) -> None:
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        def load(local_files_only: bool) -> tuple[Any, Any]:
            # torchvision is not a dependency: ask for the PIL-backed processor outright
            # rather than relying on transformers' fallback (which warns on every load).
            return (
                AutoImageProcessor.from_pretrained(
                    self.model_id, backend="pil", local_files_only=local_files_only
                ),
                AutoModelForImageClassification.from_pretrained(
                    self.model_id, local_files_only=local_files_only
                ),
            )

        processor, model = load_optional(
            self.model_id,
            load,
            what="safety model",
            setting="IMAGINE_SAFETY_MODEL",
            off="turn the image check off",
        )
        self._processor = processor
        self._model = model.to(self.device).eval()
        labels = model.config.id2label.values()
        unsafe = [label for label in labels if label.casefold() in UNSAFE_LABELS]
        if not unsafe:
            # A classifier without any unsafe label would silently pass everything.
            log.warning("safety model %s has no unsafe label among %s", self.model_id, labels)
        log.info("safety checker loaded: %s (unsafe labels %s)", self.model_id, unsafe)

    def check(self, images: Sequence[Image.Image]) -> list[SafetyVerdict]:
        """Score ``images`` in one batch.

        Returns:
            One verdict per image, in order. With the checker disabled every verdict is
            ``SafetyVerdict(False, "", 0.0)``.
        """
        if not images:
            return []
        if not self.enabled:
            return [SafetyVerdict(flagged=False, label="", score=0.0) for _ in images]
        import torch

        rgb = [image.convert("RGB") for image in images]
        with self._lock, torch.inference_mode():
            inputs = self._processor(images=rgb, return_tensors="pt").to(self.device)
            probabilities = self._model(**inputs).logits.float().softmax(dim=-1).cpu()
        id2label = self._model.config.id2label
        verdicts = [self._verdict(row.tolist(), id2label) for row in probabilities]
        flagged = sum(verdict.flagged for verdict in verdicts)
        if flagged:
            log.info("safety: %d of %d image(s) flagged", flagged, len(verdicts))
        return verdicts

    def _verdict(self, probabilities: list[float], id2label: dict[int, str]) -> SafetyVerdict:
        unsafe = [
            (score, id2label[index])
            for index, score in enumerate(probabilities)
            if id2label[index].casefold() in UNSAFE_LABELS
        ]
        if unsafe:
            score, label = max(unsafe)
            if score >= self.threshold:
                return SafetyVerdict(flagged=True, label=label, score=score)
        top = max(range(len(probabilities)), key=probabilities.__getitem__)
        return SafetyVerdict(flagged=False, label=id2label[top], score=probabilities[top])
