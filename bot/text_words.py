"""Cut folded text (``bot.text_folding.fold``) into the words the blocklist compares.

Latin-script words come with the readings a disguise may hide behind:

- digit and symbol swaps (``p0rn``, ``l0l1``) and letter runs squeezed (``nuuude``);
- single letters spaced or dotted out, glued back (``n u d e``, ``n.u.d.e``, ``a n u d e``): only
  runs of one-character words are glued across spaces, so ordinary words are never joined into
  new ones (``class extra`` stays two words);
- words cut by punctuation without a space, glued back (``nu-de``, ``n@ked``, ``p_o_r_n``);
- two known words written as one (``nudewoman``, ``sexyschoolgirl``), split only where one half
  is a blocklist term and the other a term or a common prompt word, so ``sextant``, ``Essex``
  and ``Middlesex`` stay whole.

Han text is first joined across spaces and separators (``裸 体``), converted to Simplified
Chinese (OpenCC ``t2s``) and then segmented into words with ``jieba``, so a term is found only
where it is a word: 真正太阳 is 真正/太阳, not 正太. Kana runs are single words. jieba's
dictionary takes about a second to load; it is loaded lazily and thread-safely on the first Han
text, or ahead of time by ``Segmenter.warm_up``. If jieba cannot be loaded, Han text falls back to
substring matching (more refusals, never fewer).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from bot.text_folding import HAN_CHARS, KANA_CHARS, LEET_SYMBOLS, leet_variants, squeeze

log = logging.getLogger(__name__)

# Between two Han characters, anything but letters, digits and phrase punctuation is a disguise.
_HAN_GLUE = re.compile(rf"(?<=[{HAN_CHARS}])(?:[^\w,;:()\[\]{{}}<>|!?\n。、]|_)+(?=[{HAN_CHARS}])")
_APOSTROPHE = re.compile(r"(?<=[^\W_])['’‘ʼ`´](?=[^\W_])")
_TOKEN = re.compile(
    rf"(?P<han>[{HAN_CHARS}]+)|(?P<kana>[{KANA_CHARS}]+)|(?P<word>[^\W_{HAN_CHARS}{KANA_CHARS}]+)"
)
# Punctuation that separates phrases: multi-word terms do not match across it.
_HARD_BREAKS = frozenset(",;:()[]{}<>|!?\n。、")
_MAX_SEPARATOR = 3  # longest separator between glued single letters / chained word pieces
MAX_GLUED = 24  # longest glued candidate worth comparing (no term is longer)


@dataclass(frozen=True)
class HanRun:
    """A stretch of Han text in Simplified form, with the offsets where its words start."""

    text: str
    offsets: tuple[int, ...]  # where each word starts, then len(text); every offset if unsegmented
    words: tuple[str, ...]  # the segmented words, in order (empty when segmentation failed)


@dataclass(frozen=True)
class Words:
    """The words of one text, ready for matching."""

    positions: tuple[frozenset[str] | None, ...]  # each word's strict readings; None: a break
    singles: frozenset[str]  # strict readings of every word and glued or split candidate
    loose: frozenset[str]  # singles plus doubled letters squeezed (``sexx``)
    han_runs: tuple[HanRun, ...]
    kana: frozenset[str]


@dataclass(frozen=True)
class Compounds:
    """Which halves may split one written word in two: a head and a head-or-part."""

    heads: frozenset[str] = frozenset()
    parts: frozenset[str] = frozenset()


class Segmenter:
    """jieba and OpenCC, loaded once on first use (thread-safe); ``words`` join jieba's
    dictionary so the blocklist's own terms are segmented as words."""

    def __init__(self, words: Iterable[str] = ()) -> None:
        self._words = tuple(words)
        self._lock = threading.Lock()
        self._jieba: object | None = None
        self._jieba_failed = False
        self._opencc: object | None = None
        self._opencc_failed = False

    def warm_up(self) -> None:
        """Load OpenCC and jieba now (about a second) instead of on the first Han text."""
        self._converter()
        self._tokenizer()

    def to_simplified(self, text: str) -> str:
        converter = self._converter()
        if converter is None:
            return text
        try:
            return converter.convert(text)  # type: ignore[attr-defined]
        except Exception:  # a conversion failure must not let text through unchecked
            log.exception("OpenCC t2s failed; Han text is matched as written")
            return text

    def segment(self, text: str) -> list[str] | None:
        """jieba's words of ``text`` (dictionary only, no HMM guessing), or None if jieba is
        unavailable."""
        tokenizer = self._tokenizer()
        if tokenizer is None:
            return None
        try:
            return [w for w in tokenizer.lcut(text, HMM=False) if w]  # type: ignore[attr-defined]
        except Exception:
            log.exception("jieba failed; Han text falls back to substring matching")
            return None

    def _converter(self) -> object | None:
        if self._opencc is None and not self._opencc_failed:
            with self._lock:
                if self._opencc is None and not self._opencc_failed:
                    try:
                        from opencc import OpenCC

                        self._opencc = OpenCC("t2s")
                    except Exception:
                        log.exception("OpenCC unavailable; Traditional Han is matched as written")
                        self._opencc_failed = True
        return self._opencc

    def _tokenizer(self) -> object | None:
        if self._jieba is None and not self._jieba_failed:
            with self._lock:
                if self._jieba is None and not self._jieba_failed:
                    try:
                        self._jieba = self._load_jieba()
                    except Exception:
                        log.exception("jieba unavailable; Han text falls back to substrings")
                        self._jieba_failed = True
        return self._jieba

    def _load_jieba(self) -> object:
        import jieba

        jieba.setLogLevel(logging.WARNING)  # it logs "Building prefix dict..." to stderr
        tokenizer = jieba.Tokenizer()  # our own: add_word must not change anyone else's jieba
        tokenizer.initialize()
        for word in self._words:
            if not tokenizer.FREQ.get(word):
                tokenizer.add_word(word)
        return tokenizer


def _readings(word: str) -> tuple[set[str], set[str]]:
    """Strict readings (as written, swaps undone, long runs squeezed) and loose extras."""
    strict = {word, *leet_variants(word)}
    strict |= {squeeze(w) for w in strict}
    loose = {squeeze(w, doubles=True) for w in strict} - strict
    return strict, loose


def _glue(pieces: list[str], separators: list[str]) -> set[str]:
    """``pieces`` joined: with separators dropped, and with ``@``/``$`` read as letters."""
    dropped = "".join(pieces)
    read = pieces[0] + "".join(
        (sep if len(sep) == 1 and sep in LEET_SYMBOLS else "") + piece
        for sep, piece in zip(separators, pieces[1:], strict=True)
    )
    return {dropped, read}


def _spans(items: list[tuple[str, str]], seps: list[str], single: bool) -> Iterable[set[str]]:
    """Glued candidates of runs of Latin words: single letters across any short separator
    (``single``), or pieces cut by punctuation without spaces."""
    start = 0
    while start < len(items):
        end = start
        while (
            end + 1 < len(items)
            and items[end][0] == items[end + 1][0] == "word"
            and len(seps[end]) <= _MAX_SEPARATOR
            and (
                (len(items[end][1]) == 1 and len(items[end + 1][1]) == 1)
                if single
                else (seps[end] != "" and not any(ch.isspace() for ch in seps[end]))
            )
        ):
            end += 1
        if end > start:
            for i in range(start, end + 1):
                length = len(items[i][1])
                for j in range(i + 1, end + 1):
                    length += len(items[j][1])
                    if length > MAX_GLUED:
                        break
                    yield _glue([w for _, w in items[i : j + 1]], seps[i:j])
        start = end + 1


def _splits(word: str, compounds: Compounds) -> set[str]:
    found: set[str] = set()
    if len(word) < 6 or len(word) > MAX_GLUED or not compounds.heads:
        return found
    for cut in range(3, len(word) - 2):
        left, right = word[:cut], word[cut:]
        if (left in compounds.heads and (right in compounds.heads or right in compounds.parts)) or (
            right in compounds.heads and left in compounds.parts
        ):
            found |= {left, right}
    return found


def split_words(text: str, segmenter: Segmenter, compounds: Compounds = Compounds()) -> Words:
    """The words of ``text``, which must already be folded (``fold``)."""
    text = _APOSTROPHE.sub("", _HAN_GLUE.sub("", text))
    items: list[tuple[str, str]] = []  # (kind, text)
    seps: list[str] = []  # separator after each item
    last_end = 0
    for match in _TOKEN.finditer(text):
        if items:
            seps.append(text[last_end : match.start()])
        kind = match.lastgroup or "word"
        items.append((kind, match.group()))
        last_end = match.end()
    seps.append(text[last_end:])

    positions: list[frozenset[str] | None] = []
    singles: set[str] = set()
    loose: set[str] = set()
    han_runs: list[HanRun] = []
    kana: set[str] = set()

    def add(word: str) -> frozenset[str]:
        strict, extra = _readings(word)
        singles.update(strict)
        loose.update(extra)
        return frozenset(strict)

    for index, (kind, value) in enumerate(items):
        if kind == "word":
            positions.append(add(value))
        elif kind == "kana":
            kana.add(value)
            positions.append(frozenset({value}))
        else:
            simplified = segmenter.to_simplified(value)
            words = segmenter.segment(simplified)
            if words is None or "".join(words) != simplified:
                offsets = list(range(len(simplified) + 1))  # every substring is a word
                words = []
            else:
                offsets = [0]
                for word in words:
                    offsets.append(offsets[-1] + len(word))
            han_runs.append(HanRun(simplified, tuple(offsets), tuple(words)))
            positions.extend(frozenset({word}) for word in words)
        if any(ch in _HARD_BREAKS for ch in seps[index]):
            positions.append(None)

    for single in (True, False):
        for glued in _spans(items, seps, single):
            for candidate in glued:
                add(candidate)
    for reading in list(singles):
        for part in _splits(reading, compounds):
            add(part)
    loose |= singles
    return Words(
        tuple(positions), frozenset(singles), frozenset(loose), tuple(han_runs), frozenset(kana)
    )
