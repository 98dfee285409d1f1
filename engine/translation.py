"""Chinese prompt -> English text for SDXL's text encoders.

SDXL's CLIP tokenizers have no Chinese in their vocabulary: a Chinese prompt becomes byte
fragments that carry almost no meaning (docs/FACTS.md). So CJK runs in a prompt are translated
with a small MarianMT model (default ``Helsinki-NLP/opus-mt-zh-en``) on the CPU, while English
parts of a mixed prompt (``赛博朋克 city, 8k``) are kept exactly as typed.

Never imports ``discord``. ``Translator.interpret`` is blocking: the bot calls it off the event
loop (``asyncio.to_thread``); a lock makes that safe from several threads.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.hub import load_optional

log = logging.getLogger(__name__)

# Han (unified + extension A + compatibility + extensions B..F), plus Japanese kana and Korean
# Hangul: all scripts CLIP cannot read. A regex over code-point ranges is enough for a yes/no
# "is this not English" decision and costs microseconds; a language-identification library
# would add a dependency and still be wrong on 2-character prompts.
_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
_KANA = "\u3040-\u309f\u30a0-\u30ff\u31f0-\u31ff"
_HANGUL = "\u1100-\u11ff\u3130-\u318f\uac00-\ud7af"
_CJK_CLASS = f"[{_HAN}{_KANA}{_HANGUL}]"
_CJK = re.compile(_CJK_CLASS)

# One translatable run: CJK characters, possibly with spaces, digits or the CJK middle dot
# between them ("赛博朋克 城市 夜晚", "3只猫"). English words and ASCII punctuation end a run,
# so they are kept verbatim around it.
_RUN = re.compile(
    rf"(?:[0-9]+\s*)?{_CJK_CLASS}(?:[{_HAN}{_KANA}{_HANGUL}\s0-9·・ー]*{_CJK_CLASS})?"
)

# CJK punctuation mapped to ASCII so that part separators survive as something CLIP understands.
# Chinese writes no space after a separator, so one is added. (NFKC, applied after this, turns
# the remaining full-width forms such as "：（）" and full-width letters into ASCII.)
_PUNCTUATION = str.maketrans(
    {
        "，": ", ",
        "、": ", ",
        "；": "; ",
        "。": ". ",
        "！": "! ",
        "？": "? ",
        "「": '"',
        "」": '"',
        "『": '"',
        "』": '"',
        "《": '"',
        "》": '"',
        "【": "(",
        "】": ")",
        "〔": "(",
        "〕": ")",
        "～": "~",
    }
)

DEFAULT_NUM_BEAMS = 4
DEFAULT_MAX_NEW_TOKENS = 128
DEFAULT_CACHE_SIZE = 1024


def needs_translation(text: str) -> bool:
    """Whether ``text`` contains CJK script (Han, Hiragana/Katakana or Hangul).

    Only Chinese is translated well by the default zh->en model; Japanese and Korean are still
    "not English" and are sent to whatever model ``IMAGINE_TRANSLATOR`` names.
    """
    return _CJK.search(text) is not None


@dataclass(frozen=True)
class Interpretation:
    """What the bot made of a prompt.

    Attributes:
        original: the prompt as the user typed it.
        text: what goes to the text encoders (the translation, or ``original``).
        translated: True when ``text`` differs from ``original`` because of translation.
    """

    original: str
    text: str
    translated: bool


class Translator:
    """Translates the CJK parts of prompts to English with a MarianMT model.

    ``Translator("")`` is a disabled translator: ``interpret`` returns prompts unchanged.
    """

    def __init__(
        self,
        model_id_or_path: str | None,
        device: str = "cpu",
        *,
        num_beams: int = DEFAULT_NUM_BEAMS,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        """Load the model once (blocking; seconds for the real model).

        Args:
            model_id_or_path: hub id or local directory of a MarianMT model; "" or None
                disables translation (the ``IMAGINE_TRANSLATOR=""`` setting).
            device: torch device; CPU by default, the model is small and the GPU is busy.
            num_beams: beam search width (1 = greedy); decoding is deterministic either way.
            max_new_tokens: cap on each translated segment.
            cache_size: how many translated segments to remember (LRU).

        Raises:
            ModelNotFound: the model or its tokenizer cannot be loaded.
        """
        self.model_id = model_id_or_path or ""
        self.device = device
        self.num_beams = num_beams
        self.max_new_tokens = max_new_tokens
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._cache_size = cache_size
        # One lock for the model and the cache: generate() is not documented as thread-safe
        # and the OrderedDict is mutated on every hit.
        self._lock = threading.Lock()
        self._model: Any = None
        self._tokenizer: Any = None
        self._to_simplified: Any = None
        self.model_calls = 0  # number of generate() calls, for logs and tests
        if self.model_id:
            self._load()

    @property
    def enabled(self) -> bool:
        """False when no model is configured."""
        return self._model is not None

    def _load(self) -> None:
        # Imported here so that importing this module (and the bot's light users) stays cheap.
        import torch  # noqa: F401  (transformers needs it; fail early with a clear message)
        from opencc import OpenCC
        from transformers import MarianMTModel, MarianTokenizer

        def load(local_files_only: bool) -> tuple[Any, Any]:
            return (
                MarianTokenizer.from_pretrained(self.model_id, local_files_only=local_files_only),
                MarianMTModel.from_pretrained(self.model_id, local_files_only=local_files_only),
            )

        tokenizer, model = load_optional(
            self.model_id,
            load,
            what="prompt translator",
            setting="IMAGINE_TRANSLATOR",
            off="turn translation off",
        )
        self._tokenizer = tokenizer
        self._model = model.to(self.device).eval()
        # Traditional -> Simplified first: opus-mt-zh-en was trained mostly on Simplified text.
        self._to_simplified = OpenCC("t2s")
        log.info("translator loaded: %s on %s", self.model_id, self.device)

    def interpret(self, prompt: str, raw: bool = False) -> Interpretation:
        """Turn a user prompt into what the text encoders get.

        Args:
            prompt: the prompt as typed.
            raw: the user's ``--raw`` bypass: use the prompt as is.

        Returns:
            ``Interpretation``; ``text`` is the prompt unchanged when ``raw``, when translation
            is disabled, or when the prompt has no CJK script.
        """
        if raw or not self.enabled or not needs_translation(prompt):
            return Interpretation(original=prompt, text=prompt, translated=False)
        text = self._translate_prompt(prompt)
        return Interpretation(original=prompt, text=text, translated=text != prompt)

    def _translate_prompt(self, prompt: str) -> str:
        text = unicodedata.normalize("NFKC", prompt.translate(_PUNCTUATION))
        text = self._to_simplified.convert(text)
        runs = list(_RUN.finditer(text))
        translations = self.translate_segments([match.group(0) for match in runs])
        pieces: list[str] = []
        position = 0
        for match, english in zip(runs, translations, strict=True):
            pieces.append(text[position : match.start()])
            # Space the translation off from adjacent Latin letters/digits ("猫in" -> "cat in").
            if pieces[-1] and pieces[-1][-1].isalnum():
                pieces.append(" ")
            pieces.append(english)
            following = text[match.end() : match.end() + 1]
            if following and following.isalnum():
                pieces.append(" ")
            position = match.end()
        pieces.append(text[position:])
        return _tidy("".join(pieces))

    def translate_segments(self, segments: Sequence[str]) -> list[str]:
        """Translate CJK segments (no English in them) to English, with the LRU cache.

        All cache misses go to the model in one batched call.
        """
        keys = [_segment_key(segment) for segment in segments]
        with self._lock:
            results: dict[str, str] = {}
            missing: list[str] = []
            for key in keys:
                if key in self._cache:
                    self._cache.move_to_end(key)
                    results[key] = self._cache[key]
                elif key not in missing:
                    missing.append(key)
            if missing:
                for key, english in zip(missing, self._generate(missing), strict=True):
                    # A model that produces nothing is better answered with the source text
                    # than with an empty prompt.
                    results[key] = english or key
                    self._cache[key] = results[key]
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return [results[key] for key in keys]

    def _generate(self, segments: list[str]) -> list[str]:
        import torch

        self.model_calls += 1
        batch = self._tokenizer(
            segments, return_tensors="pt", padding=True, truncation=True, max_length=256
        ).to(self.device)
        with torch.inference_mode():
            output = self._model.generate(
                **batch,
                num_beams=self.num_beams,
                do_sample=False,
                max_new_tokens=self.max_new_tokens,
            )
        decoded = self._tokenizer.batch_decode(output, skip_special_tokens=True)
        english = [_clean_segment(text) for text in decoded]
        log.debug("translated %d segment(s): %r -> %r", len(segments), segments, english)
        return english


def _segment_key(segment: str) -> str:
    return " ".join(segment.split())


def _clean_segment(text: str) -> str:
    # Marian ends most outputs with a full stop; inside a comma-separated prompt it is noise.
    return " ".join(text.split()).rstrip(".。").strip()


def _tidy(text: str) -> str:
    text = " ".join(text.split())
    return re.sub(r"\s+([,.;:!?)])", r"\1", text)
