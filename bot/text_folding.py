"""Character folding for prompt matching: one canonical spelling for text that looks the same.

``fold`` is what the blocklist compares; it is never shown to anyone and never sent to the model.
It keeps digits, punctuation and spaces (the word splitter and the age patterns need them) and
removes the ways a word can be disguised one character at a time:

- NFKC: full-width ``ＮＵＤＥ``, mathematical ``𝐧𝐮𝐝𝐞``, circled ``ⓝ``, superscript ``ⁿ``, ligatures,
  half-width katakana, CJK compatibility ideographs and Kangxi radicals.
- invisible characters deleted (format characters: zero-width space and joiners, soft hyphen,
  word joiner, bidi marks, tag characters); blank-looking letters (Hangul filler, braille blank)
  become spaces.
- Unicode confusables (UTS #39): look-alike letters from other scripts become the ASCII letter
  they imitate (Cyrillic ``е``, Greek ``ο``, ``ν`` -> ``v``). The table is derived from the
  confusables.txt data that the ``confusable_homoglyphs`` package ships (``confusables.json``),
  keeping only characters whose prototype is ASCII letters or digits, and never remapping CJK.
  (Not the ``confusables`` package: its wheel installs a top-level ``tests`` package that
  shadows this repository's.)
- Latin letter variants the confusables data leaves out, found by character name: small capitals
  ``ɴᴜᴅᴇ``, negative squared / circled letters ``🅽🆄🅳🅴``, regional indicators, letters with a
  stroke or bar (``ł``, ``ø``), dotless ``ı``.
- casefold, combining marks stripped (accents, strike-through overlays, zalgo), other scripts'
  decimal digits as ASCII digits, whitespace collapsed.

Digit and symbol swaps (``p0rn``) are per word and ambiguous (``1`` is ``i`` or ``l``), so they
are variants, made by ``leet_variants``, not part of the fold.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import re
import unicodedata
from pathlib import Path

log = logging.getLogger(__name__)

# Han ideographs (CJK unified, extension A, compatibility, extensions B-F), 々 and 〇.
HAN_CHARS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef\u3005\u3007"
# Hiragana and katakana with the prolonged sound mark, without the middle dot separator.
KANA_CHARS = "\u3041-\u3096\u309d-\u309f\u30a1-\u30fa\u30fc-\u30ff\u31f0-\u31ff"

# Characters that draw nothing but are letters or symbols, not format characters.
_BLANKS = {0x115F, 0x1160, 0x3164, 0xFFA0, 0x2800}

# Digit and symbol swaps ("leet"). "1" reads as i or l, so it makes two variants.
_LEET_I = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"}
)
_LEET_L = str.maketrans(
    {"0": "o", "1": "l", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"}
)
LEET_SYMBOLS = frozenset("@$")
_HAS_LEET = re.compile(r"[0134579@$]")
_HAS_LETTER = re.compile(r"[a-z]")
_NON_ASCII_DIGIT = re.compile(r"(?![0-9])\d")
_RUN3 = re.compile(r"(.)\1{2,}")
_RUN2 = re.compile(r"(.)\1+")

# Name patterns of Latin letter variants: group 1 is the letter.
_LETTER_NAME = re.compile(
    r"^(?:NEGATIVE SQUARED |NEGATIVE CIRCLED |SQUARED |CIRCLED |PARENTHESIZED )?"
    r"(?:LATIN |REGIONAL INDICATOR SYMBOL )(?:SMALL |CAPITAL )?LETTER "
    r"(?:SMALL CAPITAL |DOTLESS |SCRIPT )?([A-Z]|AE|OE)(?: WITH .*| BAR| STROKE)?$"
)
_NAME_RANGES = (
    (0x00C0, 0x02AF),  # Latin-1 supplement, extended A/B, IPA (small capitals ɴ ʀ ʟ ɪ ...)
    (0x1D00, 0x1DBF),  # phonetic extensions (small capitals ᴀ ᴅ ᴇ ᴜ ...)
    (0x1E00, 0x1EFF),
    (0x2C60, 0x2C7F),
    (0xA720, 0xA7FF),  # Latin extended D (ꜰ ꜱ ...)
    (0xAB30, 0xAB6F),
    (0x1F100, 0x1F1FF),  # enclosed alphanumeric supplement (🅽, 🅝, regional indicators)
)


def _is_cjk_or_hangul(code: int) -> bool:
    return (
        0x1100 <= code <= 0x11FF
        or 0x2E80 <= code <= 0xA4CF
        or 0xAC00 <= code <= 0xD7AF
        or 0xF900 <= code <= 0xFAFF
        or 0xFE30 <= code <= 0xFE4F
        or code >= 0x20000
    )


def _name_table() -> dict[str, str]:
    table: dict[str, str] = {}
    for low, high in _NAME_RANGES:
        for code in range(low, high + 1):
            name = unicodedata.name(chr(code), "")
            if any(word in name for word in ("TURNED", "REVERSED", "INVERTED", "SIDEWAYS")):
                continue
            match = _LETTER_NAME.match(name)
            if match:
                table[chr(code)] = match.group(1).lower()
    return table


def _confusables_data() -> dict[str, list[dict[str, str]]] | None:
    """``confusables.json`` of the ``confusable_homoglyphs`` package (Unicode confusables.txt as
    a two-way map), read without importing the package."""
    spec = importlib.util.find_spec("confusable_homoglyphs")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / "confusables.json"
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
    return None


def _confusable_table(names: dict[str, str]) -> dict[str, str]:
    """UTS #39 confusables whose prototype is ASCII: {source character: ascii letters}.

    confusables.txt maps each look-alike to a prototype; the package stores it both ways, so the
    prototype of a character is the nearest ASCII letter or digit string in its graph (searched
    without passing through ASCII, which would cross into another class).
    """
    try:
        data = _confusables_data()
        graph = {
            key: [entry["c"].strip("\u200e\u200f") for entry in entries]
            for key, entries in (data or {}).items()
        }
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        log.exception("confusables data unreadable")
        graph = {}
    if not graph:
        log.warning("confusables data not found: look-alike letters are only partly folded")
        return {}

    def latin(node: str) -> str | None:
        if node in names:
            return names[node]  # small capitals and the like are prototypes themselves
        plain = _plain(node)
        return plain if plain and plain.isascii() else None

    def prototype(source: str) -> str | None:
        seen, frontier = {source}, [source]
        for _ in range(3):
            neighbours = [n for node in frontier for n in graph.get(node, ()) if n not in seen]
            found = sorted(filter(None, map(latin, neighbours)))
            if found:
                return found[0]
            frontier = [n for n in neighbours if len(n) == 1]
            seen.update(frontier)
        return None

    table: dict[str, str] = {}
    for source in graph:
        if len(source) != 1:
            continue
        code = ord(source)
        if code < 0x80 or _is_cjk_or_hangul(code) or unicodedata.category(source) == "Nd":
            continue
        target = prototype(source)
        if target is None:
            continue
        folded = target.casefold()
        if folded == "rn":  # UTS #39 writes the prototype of m-like letters as "rn"
            folded = "m"
        if folded == "l" and unicodedata.name(source, "").startswith(
            ("GREEK CAPITAL", "CYRILLIC CAPITAL")
        ):
            folded = "i"  # capital I look-alikes (Greek Ι, Cyrillic І): the prototype is l
        if re.fullmatch(r"[a-z0-9]{1,2}", folded):
            table[source] = folded
    return table


@functools.cache
def _table() -> dict[int, str]:
    """The translate table of the fold: look-alikes to ASCII, blank letters to spaces."""
    names = _name_table()
    table = {ord(src): dst for src, dst in {**names, **_confusable_table(names)}.items()}
    table.update(dict.fromkeys(_BLANKS, " "))
    return table


# Kana voicing marks are combining marks too, but part of the letter: ド is not ト.
_KEPT_MARKS = frozenset("\u3099\u309a")


def _plain(text: str) -> str:
    return _strip_marks(unicodedata.normalize("NFKD", text))


def _strip_marks(text: str) -> str:
    return "".join(
        ch for ch in text if ch in _KEPT_MARKS or unicodedata.category(ch) not in ("Mn", "Me")
    )


def _drop_invisible(text: str) -> str:
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf")


def _fold_once(text: str) -> str:
    table = _table()
    text = _drop_invisible(unicodedata.normalize("NFKC", text))
    text = text.translate(table).casefold()  # capitals first: Greek Ν is N, its small ν is v
    text = _strip_marks(unicodedata.normalize("NFD", text)).translate(table)
    text = _NON_ASCII_DIGIT.sub(lambda m: str(unicodedata.decimal(m.group(), 0)), text)
    return " ".join(unicodedata.normalize("NFC", text).split())


def fold(text: str) -> str:
    """The canonical matching form of ``text`` (see the module docstring). Never raises."""
    for _ in range(4):  # a few passes reach a fixed point (casefold can expose new marks)
        folded = _fold_once(text)
        if folded == text:
            break
        text = folded
    return text


def leet_variants(word: str) -> set[str]:
    """Readings of ``word`` with digit and symbol swaps undone (``p0rn`` -> ``porn``).

    Empty for words without a swappable character, and for numbers (``1024`` stays a number).
    """
    if not _HAS_LEET.search(word) or not _HAS_LETTER.search(word):
        return set()
    return {word.translate(_LEET_I), word.translate(_LEET_L)} - {word}


def squeeze(word: str, *, doubles: bool = False) -> str:
    """``word`` with runs of one letter shortened to one: runs of three or more (``nuuude``),
    or with ``doubles`` also pairs (``sexx``)."""
    return (_RUN2 if doubles else _RUN3).sub(r"\1", word)


def warm_up() -> None:
    """Build the character tables now (a few milliseconds) instead of on first use."""
    _table()
