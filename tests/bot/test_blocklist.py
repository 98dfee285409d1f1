"""Blocklist matching: whole words for English, substrings for Chinese, width/case folding."""

from __future__ import annotations

import pytest

from bot.blocklist import DEFAULT_BLOCKLIST, active_terms, find_blocked, normalise


def test_normalise_folds_width_case_and_space() -> None:
    assert normalise("ＮＳＦＷ") == "nsfw"
    assert normalise("  Nude\t\n Art ") == "nude art"
    assert normalise("ẞ") == "ss"  # casefold, not lower


@pytest.mark.parametrize(
    "prompt",
    [
        "a nude statue",
        "NSFW anime girl",
        "ＮＳＦＷ",
        "Porn, 8k",
        "(hentai:1.3)",
        "naked\nman",
        "child   porn",
        "裸体的女人",
        "一张色情图片",
        "裸體",
        "蘿莉",
    ],
)
def test_blocked_prompts(prompt: str) -> None:
    assert find_blocked([prompt]) is not None


@pytest.mark.parametrize(
    "prompt",
    [
        "a class photo of a brass band",  # no "ass"-style substring matches
        "sussex countryside",  # contains "sex"
        "essex",
        "pornstar",  # whole words only: not in the list, not matched by "porn"
        "nudelman family portrait",
        "lolipop candy",
        "a cat in a hat",
        "赛博朋克 城市",
        "",
    ],
)
def test_allowed_prompts(prompt: str) -> None:
    assert find_blocked([prompt]) is None


def test_returns_the_matching_term() -> None:
    assert find_blocked(["a NUDE statue"]) == "nude"
    assert find_blocked(["一张色情图片"]) == "色情"


def test_translation_is_checked_too() -> None:
    # The original is harmless to the list (a word it does not know); the translation is not.
    assert find_blocked(["某个词", "a naked person"]) == "naked"
    assert find_blocked(["某个词", "a person"]) is None


def test_extra_terms() -> None:
    assert find_blocked(["a clown"]) is None
    assert find_blocked(["a clown"], extra_terms=["Clown"]) == "clown"
    assert find_blocked(["一个小丑"], extra_terms=["小丑"]) == "小丑"
    assert find_blocked(["evil clowns"], extra_terms=["clown"]) is None  # whole words


def test_extra_multi_word_term_matches_any_spacing() -> None:
    assert find_blocked(["blood   bath"], extra_terms=["blood bath"]) == "blood bath"


def test_removed_terms() -> None:
    assert find_blocked(["sex education poster"]) == "sex"
    assert find_blocked(["sex education poster"], removed_terms=["SEX"]) is None
    assert find_blocked(["a clown"], extra_terms=["clown"], removed_terms=["clown"]) is None


def test_active_terms_are_normalised_and_unique() -> None:
    terms = active_terms(extra_terms=["NSFW", " Gore ", ""])
    assert terms.count("nsfw") == 1
    assert "gore" in terms
    assert "" not in terms
    assert len(terms) == len(DEFAULT_BLOCKLIST) + 1
