"""Permutation prompts: both syntaxes, Chinese punctuation, edge cases, the cap, properties."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time

import pytest
from dynamicprompts.generators import CombinatorialPromptGenerator
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.permutations import (
    MAX_DEPTH,
    MAX_EXPANSIONS_DEFAULT,
    PermutationError,
    count_expansions,
    expand,
    has_permutations,
    split_repeat,
)

BIG = 1000  # a limit that lets the table show whole expansions

EXPANSIONS = [
    # Midjourney commas
    ("a {red, blue} fox", ["a red fox", "a blue fox"]),
    ("{a,b} {x,y}", ["a x", "a y", "b x", "b y"]),
    # dynamicprompts pipes
    ("a {red|blue} fox", ["a red fox", "a blue fox"]),
    ("a { red | blue } fox", ["a red fox", "a blue fox"]),
    # a pipe makes commas text
    ("{red, dark|blue}", ["red, dark", "blue"]),
    # nested and several groups, first group slowest
    (
        "a {red, blue} {fox, {small, big} cat}",
        [
            "a red fox",
            "a red small cat",
            "a red big cat",
            "a blue fox",
            "a blue small cat",
            "a blue big cat",
        ],
    ),
    ("{a|{b, c}d}{x|y}", ["ax", "ay", "bdx", "bdy", "cdx", "cdy"]),
    ("{x, {a|b, c}}", ["x", "a", "b, c"]),
    # Chinese commas and full-width braces
    ("一只{红色，蓝色}的狐狸", ["一只红色的狐狸", "一只蓝色的狐狸"]),
    ("｛红、蓝｝狐狸", ["红狐狸", "蓝狐狸"]),
    ("｛红｜蓝｝狐狸", ["红狐狸", "蓝狐狸"]),
    ("{红，蓝｝狐狸", ["红狐狸", "蓝狐狸"]),
    ("{ 红 、　蓝 }", ["红", "蓝"]),
    # no braces: unchanged, to the byte
    ("a red fox", ["a red fox"]),
    ("  a fox:: snow::0.5 --no x  ", ["  a fox:: snow::0.5 --no x  "]),
    ("", [""]),
    # one option: the braces go
    ("a {red} fox", ["a red fox"]),
    ("{{{deep}}}", ["deep"]),
    # weights and everything outside the braces kept as typed
    ("a {(red:1.3), blue} fox", ["a (red:1.3) fox", "a blue fox"]),
    ("a fox:: {snow, rain}::0.5", ["a fox:: snow::0.5", "a fox:: rain::0.5"]),
    ("  (fox:1.3)   {a|b}  ", ["  (fox:1.3)   a  ", "  (fox:1.3)   b  "]),
    # identical options are kept, not merged
    ("{a, a}", ["a", "a"]),
    # empty options are empty strings; {} is one empty option
    ("{a,,b}", ["a", "", "b"]),
    ("a {} fox", ["a  fox"]),
    ("{ , }", ["", ""]),
    ("{|x}", ["", "x"]),
    # unbalanced braces are text
    ("a {red, blue fox", ["a {red, blue fox"]),
    ("a red} fox", ["a red} fox"]),
    ("{a} }", ["a }"]),
    ("{{a, b}", ["{a", "{b"]),
    ("}{a,b}{", ["}a{", "}b{"]),
    # dynamicprompts' other syntax is read literally
    ("a __animal__ {in snow|at night}", ["a __animal__ in snow", "a __animal__ at night"]),
    ("{__animal__, cat}", ["__animal__", "cat"]),
    ("{2$$a|b|c}", ["2$$a", "b", "c"]),
    ("{0.5::a|2::b}", ["0.5::a", "2::b"]),
    ("{~a|b}", ["~a", "b"]),
    ("#1 {a|b} // c /* d */", ["#1 a // c /* d */", "#1 b // c /* d */"]),
    ("${v=x} {a|b}", ["$v=x a", "$v=x b"]),
    ("%{x$$y}", ["%x$$y"]),
    ("{a, b}\ue000\U000f0000", ["a\ue000\U000f0000", "b\ue000\U000f0000"]),
]


@pytest.mark.parametrize(("prompt", "expected"), EXPANSIONS)
def test_expand(prompt: str, expected: list[str]) -> None:
    assert expand(prompt, limit=BIG) == expected


@pytest.mark.parametrize(("prompt", "expected"), EXPANSIONS)
def test_count_matches_expand(prompt: str, expected: list[str]) -> None:
    assert count_expansions(prompt) == len(expected)


@pytest.mark.parametrize(("prompt", "expected"), EXPANSIONS)
def test_has_permutations(prompt: str, expected: list[str]) -> None:
    assert has_permutations(prompt) == (expected != [prompt])


def test_no_braces_returns_the_same_string() -> None:
    prompt = "".join(["a red ", "fox"])  # built at run time, so not an interned constant
    assert all(p is prompt for p in expand(prompt, repeat=3))


def test_repeat_runs_the_whole_set_again() -> None:
    assert expand("{a,b} x", repeat=2) == ["a x", "b x", "a x", "b x"]
    assert expand("fox", repeat=3) == ["fox", "fox", "fox"]
    assert expand("{a|b}", repeat=3, limit=6) == ["a", "b"] * 3


@pytest.mark.parametrize("repeat", [0, -1])
def test_repeat_below_one(repeat: int) -> None:
    with pytest.raises(PermutationError) as caught:
        expand("a fox", repeat=repeat)
    assert "--repeat" in caught.value.user_message


def test_absurd_repeat() -> None:
    with pytest.raises(PermutationError) as caught:
        expand("a fox", repeat=10**100)
    message = caught.value.user_message
    assert "--repeat" in message and str(MAX_EXPANSIONS_DEFAULT) in message
    assert len(message) < 200


def test_cap_message_names_the_count_and_limit() -> None:
    with pytest.raises(PermutationError) as caught:
        expand("{a,b,c} {w,x,y,z}")
    assert caught.value.user_message == (
        "This prompt makes 12 prompts (3 x 4); the limit is 4. Use fewer options."
    )
    with pytest.raises(PermutationError) as caught:
        expand("{a,b,c}", repeat=2)
    assert caught.value.user_message == (
        "This prompt makes 6 prompts (3 x --repeat 2); the limit is 4. "
        "Use fewer options or a smaller --repeat."
    )
    with pytest.raises(PermutationError) as caught:
        expand("{a,b,c,d,e}")
    assert caught.value.user_message.startswith("This prompt makes 5 prompts; the limit is 4.")


def test_at_the_cap_is_allowed() -> None:
    assert len(expand("{a,b} {x,y}")) == MAX_EXPANSIONS_DEFAULT
    assert len(expand("{a,b}", repeat=2)) == MAX_EXPANSIONS_DEFAULT


def test_ten_groups_of_ten_fail_fast_without_expanding(monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_run(*args: object, **kwargs: object) -> list[str]:
        raise AssertionError("the expansions were built")

    monkeypatch.setattr(CombinatorialPromptGenerator, "generate", must_not_run)
    prompt = " ".join("{" + ", ".join(f"w{i}" for i in range(10)) + "}" for _ in range(10))
    started = time.perf_counter()
    assert count_expansions(prompt) == 10**10
    with pytest.raises(PermutationError) as caught:
        expand(prompt)
    assert time.perf_counter() - started < 2
    assert "10,000,000,000 prompts" in caught.value.user_message


def test_many_one_option_groups() -> None:
    # dynamicprompts recurses per item of a sequence: these must not reach it one by one.
    prompt = "{a}" * 3000 + " {x, y} " + "{b} " * 2000
    assert expand(prompt) == [
        "a" * 3000 + " x " + "b " * 2000,
        "a" * 3000 + " y " + "b " * 2000,
    ]


def test_nesting_depth() -> None:
    deep_enough = "{" * MAX_DEPTH + "a|b" + "}" * MAX_DEPTH
    assert expand(deep_enough) == ["a", "b"]
    too_deep = "{" * (MAX_DEPTH + 1) + "a|b" + "}" * (MAX_DEPTH + 1)
    with pytest.raises(PermutationError) as caught:
        expand(too_deep)
    assert str(MAX_DEPTH) in caught.value.user_message
    assert has_permutations(too_deep)
    # unmatched braces are text, however many
    assert expand("{" * 5000 + "a") == ["{" * 5000 + "a"]
    with pytest.raises(PermutationError):
        expand("{" * 5000 + "}" * 5000)


def test_dynamicprompts_failures_become_permutation_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: object, **kwargs: object) -> list[str]:
        raise RuntimeError("parser blew up")

    monkeypatch.setattr(CombinatorialPromptGenerator, "generate", broken)
    with pytest.raises(PermutationError) as caught:
        expand("{a|b}")
    assert caught.value.user_message
    # a prompt without groups never reaches dynamicprompts
    assert expand("a fox") == ["a fox"]


def test_wrong_count_from_dynamicprompts_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    real = CombinatorialPromptGenerator.generate

    def drops_one(self: CombinatorialPromptGenerator, *args: object, **kwargs: object):
        return real(self, *args, **kwargs)[1:]

    monkeypatch.setattr(CombinatorialPromptGenerator, "generate", drops_one)
    with pytest.raises(PermutationError):
        expand("{a|b}")


def test_caller_mistakes_are_not_user_errors() -> None:
    with pytest.raises(ValueError) as caught:
        expand("{a|b}", limit=0)
    assert not isinstance(caught.value, PermutationError)
    with pytest.raises(TypeError):
        expand("{a|b}", repeat=2.0)  # type: ignore[arg-type]


def test_import_is_cheap() -> None:
    code = (
        "import sys, bot.permutations\n"
        "heavy = {'torch', 'discord', 'dynamicprompts', 'pyparsing'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


_WORDS = st.lists(st.sampled_from(["red", "blue", "fox", "猫", "a b", "(x:1.2)"]), min_size=1)


@settings(max_examples=100, deadline=None)
@given(st.lists(_WORDS, min_size=1, max_size=3), st.sampled_from([", ", "|", "，", "、"]))
def test_groups_expand_like_a_product(groups: list[list[str]], separator: str) -> None:
    prompt = " ".join("{" + separator.join(options) + "}" for options in groups)
    expected = [" ".join(choice) for choice in itertools.product(*groups)]
    assert expand(prompt, limit=len(expected)) == expected


# Separators, braces and dynamicprompts' own syntax, so that odd mixtures come up often.
_PIECES = st.one_of(
    st.sampled_from(["{", "}", "|", ",", "，", "、", "｛", "｝", "｜", " ", "\u3000", "\n"]),
    st.sampled_from(["_", "__", "$$", "$", "::", "#", "//", "%", "~", "@", "!", "\\"]),
    st.sampled_from(["2", "0.5", "a", "red", "fox", "猫", "(x:1.3)"]),
)
_JUMBLE = st.lists(_PIECES, max_size=40).map("".join)
# Matched groups with jumbled options, nested, so that expansions (not just text) come up often.
_BRACED = st.recursive(
    st.lists(_PIECES, max_size=4).map("".join),
    lambda inner: st.one_of(
        st.builds(
            lambda opener, options, separator, closer: opener + separator.join(options) + closer,
            st.sampled_from("{｛"),
            st.lists(inner, max_size=4),
            st.sampled_from([",", "|", "，", "、", ", "]),
            st.sampled_from("}｝"),
        ),
        st.lists(inner, min_size=2, max_size=3).map("".join),
    ),
    max_leaves=12,
)
_PROMPTS = st.one_of(st.text(), _JUMBLE, _BRACED)


@settings(max_examples=300, deadline=None)
@given(_PROMPTS, st.integers(min_value=-2, max_value=5), st.integers(min_value=1, max_value=64))
def test_expand_never_fails_unexpectedly(prompt: str, repeat: int, limit: int) -> None:
    try:
        prompts = expand(prompt, repeat=repeat, limit=limit)
    except PermutationError as error:
        assert isinstance(error.user_message, str) and error.user_message.strip()
        return
    assert prompts and all(isinstance(p, str) for p in prompts)
    assert len(prompts) == count_expansions(prompt) * repeat <= limit
    if not has_permutations(prompt):
        assert prompts == [prompt] * repeat


def test_repeat_written_in_the_prompt():
    assert split_repeat("a fox --repeat 3 in snow") == ("a fox in snow", 3)
    assert split_repeat("--repeat=2 a boat") == ("a boat", 2)
    assert split_repeat("a fox --repeat 2 --repeat 4") == ("a fox", 4)
    assert split_repeat("a fox--repeat 2") == ("a fox--repeat 2", None)  # not a flag
    assert split_repeat("a fox") == ("a fox", None)
    for bad in ("x", "-1", "1.5", "٣"):
        with pytest.raises(PermutationError) as caught:
            split_repeat(f"a fox --repeat {bad}")
        assert "--repeat" in caught.value.user_message


@settings(max_examples=300, deadline=None)
@given(st.text() | st.builds("{} --repeat {}".format, st.text(max_size=20), st.text(max_size=4)))
def test_split_repeat_takes_any_text(text):
    try:
        prompt, repeat = split_repeat(text)
    except PermutationError as exc:
        assert exc.user_message
        return
    assert isinstance(prompt, str) and (repeat is None or repeat >= 0)
