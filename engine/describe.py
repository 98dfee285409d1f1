"""Picture -> four prompts (``/describe``), with an optional ``transformers`` captioning model.

``IMAGINE_DESCRIBE_MODEL`` names an image-to-text checkpoint (BLIP, BLIP-2, GIT, or Florence-2
in transformers' own format) loaded with ``AutoProcessor`` + ``AutoModelForImageTextToText``;
checkpoints that need ``trust_remote_code`` are refused (no downloaded code is run). Four
prompts per picture: the model's best caption (beam search), then captions sampled from it
(seeded, so a job asks the same thing again after a restart), then the other beams, with
duplicates dropped. Runs on the GPU thread next to generation (``EngineRunner.run``); never
imports ``discord``.
"""

from __future__ import annotations

import io
import logging
import re
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from engine.errors import GenerationFailed
from engine.hub import load_optional

log = logging.getLogger(__name__)

SUGGESTIONS = 4
"""Prompts proposed per picture (buttons 1-4)."""
MAX_SUGGESTION_CHARS = 300
"""Longest suggestion kept: a caption longer than this is cut at a word."""
MAX_NEW_TOKENS = 60  # a prompt, not an essay: SDXL reads 77 tokens per window
SAMPLED = 6  # sampled captions per picture, to find three that differ from the best one
NOT_DESCRIBED = "The captioning model found nothing to say about that picture. Try another one."

# Models that caption only when asked with a task token.
_TASK_PROMPTS = {"florence2": "<MORE_DETAILED_CAPTION>"}
# BLIP's well-known artefacts of its training captions ("arafed dog"), and empty openings.
_ARTEFACTS = re.compile(r"\b(?:arafed|araffe|arafe|araf)\b\s*", re.IGNORECASE)
_OPENINGS = re.compile(r"^(?:there is |this is |the image shows |an image of )", re.IGNORECASE)


def suggestions(captions: Iterable[str], count: int = SUGGESTIONS) -> tuple[str, ...]:
    """At most ``count`` distinct prompts from ``captions``, in order: artefacts and empty
    openings removed, whitespace collapsed, cut at ``MAX_SUGGESTION_CHARS``; a caption equal
    to an earlier one (ignoring case and punctuation at the ends) is dropped."""
    kept: list[str] = []
    seen: set[str] = set()
    for caption in captions:
        text = " ".join(_ARTEFACTS.sub("", caption).split())
        text = _OPENINGS.sub("", text).strip(" ,.;:")
        if len(text) > MAX_SUGGESTION_CHARS:
            text = text[: MAX_SUGGESTION_CHARS + 1].rsplit(" ", 1)[0].rstrip(" ,.;:")
        key = text.casefold()
        if not text or key in seen:
            continue
        seen.add(key)
        kept.append(text)
        if len(kept) == count:
            break
    return tuple(kept)


class Describer:
    """Captions pictures with a transformers image-to-text model, loaded once.

    ``Describer("")`` is a disabled describer (the ``IMAGINE_DESCRIBE_MODEL=""`` default).
    """

    def __init__(self, model_id_or_path: str | None, device: str = "auto", dtype: str = "auto"):
        """Load the model (blocking).

        Args:
            model_id_or_path: hub id or local directory; "" or None disables /describe.
            device, dtype: as ``IMAGINE_DEVICE`` and ``IMAGINE_DTYPE`` (``auto``: the GPU in
                fp16 when there is one).

        Raises:
            ModelNotFound: the model or its processor cannot be loaded.
        """
        self.model_id = model_id_or_path or ""
        self._lock = threading.Lock()  # one generate() at a time
        self._model: Any = None
        self._processor: Any = None
        self._task_prompt: str | None = None
        self._suppressed: list[int] = []
        if self.model_id:
            self._load(device, dtype)

    @property
    def enabled(self) -> bool:
        """False when no model is configured."""
        return self._model is not None

    def _load(self, device: str, dtype: str) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        from engine.pipeline import resolve_device, resolve_dtype

        def load(local_files_only: bool) -> tuple[Any, Any]:
            # torchvision is not a dependency: the PIL-backed image processor, outright.
            return (
                AutoProcessor.from_pretrained(
                    self.model_id, backend="pil", local_files_only=local_files_only
                ),
                AutoModelForImageTextToText.from_pretrained(
                    self.model_id, local_files_only=local_files_only
                ),
            )

        processor, model = load_optional(
            self.model_id,
            load,
            what="describe model",
            setting="IMAGINE_DESCRIBE_MODEL",
            off="turn /describe off",
        )
        torch_device = resolve_device(device)
        self._model = model.to(torch_device, resolve_dtype(dtype, torch_device)).eval()
        self._processor = processor
        self._task_prompt = _TASK_PROMPTS.get(model.config.model_type)
        tokenizer = getattr(processor, "tokenizer", None)
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos])
        # Padding, unknown and mask tokens never make a prompt; the end token stays allowed.
        self._suppressed = sorted(
            set(getattr(tokenizer, "all_special_ids", ()) or ()) - eos_ids - {None}
        )
        log.info("describe model loaded: %s on %s", self.model_id, torch_device)

    def describe(self, pictures: Sequence[bytes], seeds: Sequence[int]) -> list[tuple[str, ...]]:
        """Up to ``SUGGESTIONS`` prompts for each picture (encoded image bytes), in order.

        Blocking: call it on the GPU thread. A picture's ``seeds`` entry makes its sampled
        captions repeatable, whatever else is in the batch.

        Raises:
            GenerationFailed: the model is off, or it produced no text for a picture.
        """
        if not self.enabled:
            raise GenerationFailed("Describing pictures is turned off on this bot.")
        if len(seeds) != len(pictures):
            raise ValueError("one seed per picture")
        if not pictures:
            return []
        import torch
        from PIL import Image

        images = [Image.open(io.BytesIO(data)).convert("RGB") for data in pictures]
        with self._lock, torch.inference_mode():
            model = self._model
            inputs = self._processor(
                images=images,
                text=[self._task_prompt] * len(images) if self._task_prompt else None,
                return_tensors="pt",
            ).to(model.device)
            if "pixel_values" in inputs:
                inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
            common = {
                "max_new_tokens": MAX_NEW_TOKENS,
                "min_new_tokens": 2,
                "suppress_tokens": self._suppressed or None,
            }
            beams = model.generate(
                **inputs, num_beams=SUGGESTIONS, num_return_sequences=SUGGESTIONS, **common
            )
            devices = [model.device] if model.device.type == "cuda" else []
            sampled = []
            for i, seed in enumerate(seeds):
                # One picture at a time, each from its own seed: what a job is told does not
                # depend on its batch-mates.
                one = {key: value[i : i + 1] for key, value in inputs.items()}
                with torch.random.fork_rng(devices=devices):
                    torch.manual_seed(seed)
                    drawn = model.generate(
                        **one, do_sample=True, top_p=0.9, num_return_sequences=SAMPLED, **common
                    )
                sampled.append(self._decode(drawn, one))
        beam_texts = self._decode(beams, inputs)
        result = []
        for i, drawn in enumerate(sampled):
            mine = beam_texts[i * SUGGESTIONS : (i + 1) * SUGGESTIONS]
            found = suggestions([*mine[:1], *drawn, *mine[1:]])
            if not found:
                raise GenerationFailed(NOT_DESCRIBED)
            result.append(found)
        return result

    def _decode(self, output: Any, inputs: Any) -> list[str]:
        # Decoder-only models return the prompt tokens first: keep only what was generated.
        if "input_ids" in inputs and not self._model.config.is_encoder_decoder:
            output = output[:, inputs["input_ids"].shape[1] :]
        texts = self._processor.batch_decode(output, skip_special_tokens=True)
        if self._task_prompt:  # some processors echo the task token
            texts = [text.replace(self._task_prompt, "") for text in texts]
        return texts
