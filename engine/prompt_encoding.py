"""Turn a job's prompt and negative prompt into the SDXL conditioning the UNet reads.

Prompts with weighting syntax (``engine/prompt_syntax.py``) or past one CLIP window (75 tokens
between BOS and EOS) go through compel's ``CompelForSDXL``: both text encoders, the pooled
embedding, weights applied per token and long prompts encoded in chunks of 77 tokens, each
chunk its own BOS ... EOS window (AUTOMATIC1111's scheme; the pooled embedding is the first
chunk's). Every other prompt goes through diffusers' own ``encode_prompt``, the exact code
path of the releases before compel, so a prompt without syntax gives exactly the pixels it
gave then. (For such prompts the two agree bit for bit anyway, as
``tests/engine/test_prompt_weights.py`` checks; diffusers is kept for them because compel's
parser would read some plain prose as syntax: ``engine/prompt_syntax.py`` lists what.)

The number of chunks is the cross-attention's sequence length (77 per chunk): jobs with
different counts cannot share a UNet call without padding one of them, which would change its
pixels, so the engine runs them in separate calls (``Conditioning.chunks``).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

import torch

from engine.errors import InvalidRequest
from engine.prompt_syntax import has_syntax, to_compel

log = logging.getLogger(__name__)

CLIP_WINDOW = 77
"""Tokens per text-encoder call, BOS and EOS included."""
MAX_CHUNKS = 6
"""Longest prompt encoded: 6 windows of 75 tokens (450), about 340 English words. Past that
the prompt is cut, with a note: each chunk adds 77 keys to every cross-attention of every
step, and nobody writes prompts that long on purpose."""

PARSED_PROMPTS = 256
"""Prompts whose parse is remembered: re-rolls, replies and the halves of an OOM retry."""


@dataclass(frozen=True)
class Conditioning:
    """One prompt's conditioning, for one image (the engine repeats it per seed).

    ``negative``/``negative_pooled``: None when classifier-free guidance is off.
    """

    embeds: torch.Tensor  # (1, 77 * chunks, 2048 for SDXL)
    pooled: torch.Tensor  # (1, 1280 for SDXL)
    negative: torch.Tensor | None
    negative_pooled: torch.Tensor | None

    @property
    def chunks(self) -> int:
        """77-token windows in the sequence: what cross-attention's length depends on."""
        return self.embeds.shape[1] // CLIP_WINDOW


class PromptEncoder:
    """Encodes prompts for one loaded SDXL pipeline (compel built on first use)."""

    def __init__(self, pipe: Any, device: torch.device) -> None:
        self.pipe = pipe
        self.device = device
        self._compel: Any = None
        self._parser: Any = None
        self._conjunction = functools.lru_cache(maxsize=PARSED_PROMPTS)(self._parse)

    def window_tokens(self, text: str) -> int:
        """Tokens of ``text`` without BOS/EOS, by the longer-counting of the two tokenizers."""
        counts = [
            len(
                tokenizer(text, add_special_tokens=False, truncation=False, verbose=False).input_ids
            )
            for tokenizer in (self.pipe.tokenizer, self.pipe.tokenizer_2)
            if tokenizer is not None
        ]
        return max(counts, default=0)

    def needs_compel(self, prompt: str, negative: str) -> bool:
        """Whether either text has weighting syntax or is longer than one window."""
        limit = CLIP_WINDOW - 2
        return any(
            text and (has_syntax(text) or self.window_tokens(text) > limit)
            for text in (prompt, negative)
        )

    @torch.inference_mode()
    def encode(self, prompt: str, negative: str, *, guidance: bool) -> Conditioning:
        """The conditioning of ``prompt`` (and of ``negative`` when ``guidance`` is on).

        Raises:
            InvalidRequest: the prompt's syntax cannot be read (``to_compel`` says why).
        """
        if not self.needs_compel(prompt, negative):
            embeds, negative_embeds, pooled, negative_pooled = self.pipe.encode_prompt(
                prompt,
                device=self.device,
                num_images_per_prompt=1,
                do_classifier_free_guidance=guidance,
                negative_prompt=negative or None,
            )
            return Conditioning(embeds, pooled, negative_embeds, negative_pooled)
        negative = to_compel(negative) if negative else ""
        return self._encode_with_compel(to_compel(prompt), negative, guidance=guidance)

    def _encode_with_compel(self, prompt: str, negative: str, *, guidance: bool) -> Conditioning:
        """Both encoders' conditioning of compel-syntax texts, side by side (what
        ``CompelForSDXL`` does), from prompts parsed once (see ``_conjunction``)."""
        compel = self._compel_for_sdxl()
        # diffusers' SDXL pipelines (force_zeros_for_empty_prompt) guide away from zeros, not
        # from the embedding of "", when there is no negative prompt.
        zeros = getattr(self.pipe.config, "force_zeros_for_empty_prompt", True)
        texts = [prompt]
        if guidance and (negative or not zeros):
            texts.append(negative)
        try:
            conjunctions = [self._conjunction(text) for text in texts]
            halves = [
                [encoder.build_conditioning_tensor_for_conjunction(c)[0] for c in conjunctions]
                for encoder in (compel.compel_1, compel.compel_2)
            ]
        except Exception as exc:  # compel's parser or builder: syntax to_compel let through
            log.warning("compel could not read %r: %s", prompt[:80], exc)
            raise InvalidRequest(
                "The prompt's weighting syntax could not be read. Check its brackets, or put "
                "a backslash before a bracket you mean literally: \\( \\)."
            ) from exc
        # Positive and negative (and the two encoders, should they tokenize apart) pad to one
        # length with empty chunks, as compel pads them.
        length = max(c.shape[1] for half in halves for c in half)
        halves = [
            self._padded(encoder, half, length)
            for encoder, half in zip((compel.compel_1, compel.compel_2), halves, strict=True)
        ]
        dtype = self.pipe.text_encoder_2.dtype if self.pipe.text_encoder_2 else halves[0][0].dtype
        embeds = [
            torch.cat(pair, dim=-1).to(self.device, dtype) for pair in zip(*halves, strict=True)
        ]
        pooled = [self._pooled(c).to(self.device, dtype) for c in conjunctions]
        if not guidance:
            return Conditioning(embeds[0], pooled[0], None, None)
        if len(embeds) == 2:
            return Conditioning(embeds[0], pooled[0], embeds[1], pooled[1])
        zero = torch.zeros_like
        return Conditioning(embeds[0], pooled[0], zero(embeds[0]), zero(pooled[0]))

    def _padded(self, encoder: Any, tensors: list[torch.Tensor], length: int) -> list:
        """``tensors`` padded to ``length`` tokens with chunks of the encoder's empty prompt."""
        if all(t.shape[1] == length for t in tensors):
            return tensors
        empty = encoder.build_conditioning_tensor_for_conjunction(self._conjunction(""))[0]
        return [
            torch.cat([t, empty.repeat(1, (length - t.shape[1]) // empty.shape[1], 1)], dim=1)
            for t in tensors
        ]

    def _parse(self, text: str) -> Any:
        """compel's reading of ``text`` (a ``Conjunction``).

        compel's own ``__call__`` builds a new pyparsing grammar and parses the prompt again
        for each encoder and for the pooled embedding: measured, that is nine tenths of its
        time (bench/prompt_bench.py). Here one parser is built, each text is parsed once (and
        remembered), and text without syntax is not parsed at all: it is one fragment."""
        from compel.prompt_parser import Conjunction, FlattenedPrompt, Fragment, PromptParser

        if not has_syntax(text):
            return Conjunction([FlattenedPrompt([Fragment(text, 1.0)])])
        if self._parser is None:
            self._parser = PromptParser()
        return self._parser.parse_conjunction(text)

    def _pooled(self, conjunction: Any) -> torch.Tensor:
        """The pooled embedding of a prompt's words, without its syntax, from its first window.

        compel pools the prompt string as written, brackets and weights included, so that
        ``(red)1`` would not pool like ``red``. AUTOMATIC1111 pools the first chunk's words,
        unweighted: so do we. A blend pools its prompts' words and blends those alike."""
        first = conjunction.prompts[0]  # a Blend or a FlattenedPrompt
        parts = getattr(first, "prompts", None) or [first]
        weights = list(getattr(first, "weights", None) or [1.0])
        provider = self._compel_for_sdxl().compel_2.conditioning_provider
        texts = [" ".join(fragment.text for fragment in part.children) for part in parts]
        pooled = provider.get_pooled_embeddings(texts, device=str(self.device))
        if len(texts) == 1:
            return pooled
        scale = torch.tensor(weights, dtype=pooled.dtype, device=pooled.device)[:, None]
        if getattr(first, "normalize_weights", True):
            scale = scale / scale.sum()
        return (pooled * scale).sum(dim=0, keepdim=True)

    def _compel_for_sdxl(self) -> Any:
        if self._compel is None:
            from compel import CompelForSDXL

            # Device: where the token ids go; with CPU offload the encoders' hooks move them.
            self._compel = CompelForSDXL(self.pipe, device=str(self.device))
        return self._compel
