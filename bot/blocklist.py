"""Prompt blocklist: a short default list of explicit-sexual and sexual-minor terms.

Checked on the prompt as typed AND on its English translation, so neither the Chinese nor the
English form slips through. Pure functions, no torch, no discord: the cog calls ``find_blocked``
before a request is queued. Servers may add terms or remove defaults (guild settings).

This is a first line of defence that keeps the obvious out of community servers; it is not a
content classifier (see engine/safety.py for the image check).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable

# Modest on purpose: a long list mostly produces false positives. English terms match whole
# words; Chinese terms match anywhere (Chinese has no spaces). Traditional forms are listed
# where they differ, because the original prompt is checked before any opencc conversion.
DEFAULT_BLOCKLIST: tuple[str, ...] = (
    # English
    "nsfw",
    "nude",
    "nudes",
    "nudity",
    "naked",
    "topless",
    "porn",
    "porno",
    "pornographic",
    "pornography",
    "sex",
    "sexual",
    "erotic",
    "hentai",
    "xxx",
    "explicit",
    "genitals",
    "loli",
    "lolicon",
    "shota",
    "shotacon",
    "child porn",
    "underage",
    # Chinese (Simplified, then Traditional where different)
    "裸体",
    "裸體",
    "裸露",
    "全裸",
    "色情",
    "情色",
    "成人",
    "黄图",
    "黃圖",
    "性爱",
    "性愛",
    "做爱",
    "做愛",
    "无码",
    "無碼",
    "露点",
    "露點",
    "萝莉",
    "蘿莉",
    "正太",
    "幼女",
    "童妓",
)


def normalise(text: str) -> str:
    """Fold ``text`` for matching: NFKC (full-width ``ＮＳＦＷ`` == ``nsfw``), casefold, and
    collapse runs of whitespace to one space."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


@functools.lru_cache(maxsize=1024)
def _pattern(term: str) -> re.Pattern[str]:
    # Whole-word match for terms that are all ASCII (so "ass" would not match "class", "sex"
    # not "sussex"); substring match for CJK terms, which are written without spaces.
    body = r"\s+".join(re.escape(word) for word in term.split(" "))
    if term.isascii():
        return re.compile(rf"(?<![a-z0-9]){body}(?![a-z0-9])")
    return re.compile(body)


def active_terms(extra_terms: Iterable[str] = (), removed_terms: Iterable[str] = ()) -> list[str]:
    """The normalised terms in force: defaults plus ``extra_terms``, minus ``removed_terms``.

    Order is kept (defaults first) and duplicates dropped.
    """
    removed = {normalise(term) for term in removed_terms}
    terms: dict[str, None] = {}
    for term in (*DEFAULT_BLOCKLIST, *extra_terms):
        folded = normalise(term)
        if folded and folded not in removed:
            terms[folded] = None
    return list(terms)


def find_blocked(
    texts: Iterable[str],
    extra_terms: Iterable[str] = (),
    removed_terms: Iterable[str] = (),
) -> str | None:
    """Return the first blocked term found in any of ``texts``, or None.

    Args:
        texts: what to check, typically ``(original_prompt, translated_prompt)``. Leave the
            negative prompt out: it lists what the user does NOT want ("nsfw" belongs there).
        extra_terms: a server's additional terms.
        removed_terms: default (or extra) terms a server has switched off.

    Returns:
        The matching term in normalised form; texts are checked in order, and within a text
        the terms in list order.
    """
    terms = active_terms(extra_terms, removed_terms)
    for text in texts:
        folded = normalise(text)
        if not folded:
            continue
        for term in terms:
            if _pattern(term).search(folded):
                return term
    return None
