"""Tests for engine.prompt_syntax: every translation is checked against compel's own parser."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from compel import Compel
from compel.prompt_parser import Blend, FlattenedPrompt
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import prompt_syntax
from engine.errors import InvalidRequest
from engine.prompt_syntax import MAX_WEIGHT, encoded_prompt, has_syntax, to_compel

Fragments = list[tuple[str, float]]


def fragments(compel_prompt: str) -> Fragments:
    """compel's reading of a prompt that is not a blend: (text, weight) per fragment."""
    conjunction = Compel.parse_prompt_string(compel_prompt)
    assert len(conjunction.prompts) == 1, conjunction
    (prompt,) = conjunction.prompts
    assert isinstance(prompt, FlattenedPrompt), conjunction
    return [(fragment.text, fragment.weight) for fragment in prompt.children]


def blend(compel_prompt: str) -> tuple[list[Fragments], list[float]]:
    """compel's reading of a blend: the fragments of each part, and the part weights."""
    conjunction = Compel.parse_prompt_string(compel_prompt)
    assert len(conjunction.prompts) == 1, conjunction
    (prompt,) = conjunction.prompts
    assert isinstance(prompt, Blend), conjunction
    parts = [[(f.text, f.weight) for f in part.children] for part in prompt.prompts]
    return parts, prompt.weights


def assert_fragments(actual: Fragments, expected: Fragments) -> None:
    assert [text for text, _ in actual] == [text for text, _ in expected], actual
    for (_, weight), (_, want) in zip(actual, expected, strict=True):
        assert weight == pytest.approx(want, abs=1e-3), actual


# (what the user types, what compel gets, how compel reads it)
EXAMPLES: list[tuple[str, str, Fragments]] = [
    # AUTOMATIC1111 weights
    ("a (fox:1.3) in snow", "a (fox)1.3 in snow", [("a", 1), ("fox", 1.3), ("in snow", 1)]),
    ("a (fox) in snow", "a (fox)1.1 in snow", [("a", 1), ("fox", 1.1), ("in snow", 1)]),
    ("a [fox] in snow", "a (fox)0.9091 in snow", [("a", 1), ("fox", 1 / 1.1), ("in snow", 1)]),
    ("((a))", "(a)1.21", [("a", 1.21)]),
    ("[[a]]", "(a)0.8264", [("a", 1 / 1.21)]),
    ("(a (b) c)", "(a)1.1 (b)1.21 (c)1.1", [("a", 1.1), ("b", 1.21), ("c", 1.1)]),
    ("((fox:1.5) in snow)", "(fox)1.65 (in snow)1.1", [("fox", 1.65), ("in snow", 1.1)]),
    ("(a [b) c]", "(a)1.1 (b)1 (c)0.9091", [("a", 1.1), ("b", 1), ("c", 1 / 1.1)]),
    ("(fox:1.0)", "(fox)1", [("fox", 1)]),
    ("(fox:0)", "(fox)0", [("fox", 0)]),
    ("(fox:3)", "(fox)3", [("fox", 3)]),
    ("x(a)", "x (a)1.1", [("x", 1), ("a", 1.1)]),
    ("(a)(b)", "(a)1.1 (b)1.1", [("a b", 1.1)]),
    ("a[[]]-", "(a)0.9", [("a", 0.9)]),  # empty groups leave 'a-' behind
    # escapes are literal characters
    (r"a \(b\) c", r"a \(b\) c", [("a (b) c", 1)]),
    (r"a \[b\] c", "a [b] c", [("a [b] c", 1)]),
    (r"(a \(b\) \[c\])", r"(a \(b\) [c])1.1", [("a (b) [c]", 1.1)]),
    (r"a \\ b", r"a \ b", [("a \\ b", 1)]),
    (r"(a\\)", r"(a\ )1.1", [("a\\", 1.1)]),
    # unbalanced brackets are literal
    ("(a (b)", r"\(a (b)1.1", [("(a", 1), ("b", 1.1)]),
    ("a) (b)", r"a\) (b)1.1", [("a)", 1), ("b", 1.1)]),
    ("[a (b)", "[a (b)1.1", [("[a", 1), ("b", 1.1)]),
    ("(a] (b)", r"\(a] (b)1.1", [("(a]", 1), ("b", 1.1)]),
    ("(((a", r"\(\(\(a", [("(((a", 1)]),  # compel would take exponential time on them raw
    # a colon is a weight only as ':number)'
    ("(time: 12:30 pm)", "(time: 12:30 pm)1.1", [("time: 12:30 pm", 1.1)]),
    ("(ratio 16:9, wide)", "(ratio 16:9, wide)1.1", [("ratio 16:9 , wide", 1.1)]),
    # compel's own syntax keeps its meaning
    ("a (red)1.5 cat", "a (red)1.5 cat", [("a", 1), ("red", 1.5), ("cat", 1)]),
    ("(fox)++", "(fox)1.21", [("fox", 1.21)]),
    ("(fox)-", "(fox)0.9", [("fox", 0.9)]),
    (
        "a fox++ in snow-",
        "a (fox)1.21 in (snow)0.9",
        [("a", 1), ("fox", 1.21), ("in", 1), ("snow", 0.9)],
    ),
    ("(a (b)1.5 c)0.8", "(a)0.8 (b)1.2 (c)0.8", [("a", 0.8), ("b", 1.2), ("c", 0.8)]),
    ("(a:1.5)1.2", "(a:1.5)1.2", [("a:1 . 5", 1.2)]),
    (r"\(a\)1.5", r"\(a\)1.5", [("(a)1.5", 1)]),
    # text that compel cannot parse inside a group goes outside it
    ("(a - b:1.2)", "(a)1.2 - (b)1.2", [("a", 1.2), ("-", 1), ("b", 1.2)]),
    ("(a = b)", "(a)1.1 = (b)1.1", [("a", 1.1), ("=", 1), ("b", 1.1)]),
    ("(C++ code:1.2)", "(C)1.452 (code)1.2", [("C", 1.452), ("code", 1.2)]),
    # prose that compel would misread is escaped
    ('a sign that says "OPEN"', r"a sign that says \"OPEN\"", [('a sign that says "OPEN"', 1)]),
    ('a "red" (fox)', r"a \"red\" (fox)1.1", [('a "red"', 1), ("fox", 1.1)]),
    (":-)", r":-\)", [(":-)", 1)]),
    ("a+(b", r"a+\(b", [("a+(b", 1)]),
    ("a\x0bb", "a b", [("a b", 1)]),
    ("a fox.swap(dog)", "a fox (.swap)1 (dog)1.1", [("a fox . swap", 1), ("dog", 1.1)]),
    ("withLora(x) a", "(withLora)1 (x)1.1 a", [("withLora", 1), ("x", 1.1), ("a", 1)]),
    (r"a \\\(b (c)", r"a \ \(b (c)1.1", [("a \\ (b", 1), ("c", 1.1)]),
    # Midjourney multi-prompts with a single part
    ("a fox::", "a fox", [("a fox", 1)]),
    ("a (fox:1.2)::2", "a (fox)1.2", [("a", 1), ("fox", 1.2)]),
    (":: a fox", "a fox", [("a fox", 1)]),
]

# (what the user types, what compel gets, compel's reading: parts and weights)
BLENDS: list[tuple[str, str, list[Fragments], list[float]]] = [
    (
        "a fox:: snow::0.5",
        '("a fox", "snow").blend(1, 0.5)',
        [[("a fox", 1)], [("snow", 1)]],
        [1, 0.5],
    ),
    (
        "a (fox:1.2)::2 snow [ice]",
        '("a (fox)1.2", "snow (ice)0.9091").blend(2, 1)',
        [[("a", 1), ("fox", 1.2)], [("snow", 1), ("ice", 1 / 1.1)]],
        [2, 1],
    ),
    (
        "a fox::-0.5 snow::2",
        '("a fox", "snow").blend(-0.5, 2)',
        [[("a fox", 1)], [("snow", 1)]],
        [-0.5, 2],
    ),
    (
        'a "red" fox:: (snow)',
        r'("a \"red\" fox", "(snow)1.1").blend(1, 1)',
        [[('a "red" fox', 1)], [("snow", 1.1)]],
        [1, 1],
    ),
    (
        "a \\\\:: b\nc",  # a literal backslash ends the first part; a newline in the second
        '("a \\ ", "b c").blend(1, 1)',
        [[("a \\", 1)], [("b c", 1)]],
        [1, 1],
    ),
    (
        r"C:\new, C:\x41:: x",  # in a quoted string pyparsing would unescape \n and \x41
        r'("C:\ new, C:\ x41", "x").blend(1, 1)',
        [[("C:\\ new , C:\\ x41", 1)], [("x", 1)]],
        [1, 1],
    ),
    (
        '("a fox", "snow").blend(1, 0.5)',
        '("a fox", "snow").blend(1, 0.5)',
        [[("a fox", 1)], [("snow", 1)]],
        [1, 0.5],
    ),
    (
        '("a (fox)1.5", "snow").blend(1, 0.5, no_normalize)',
        '("a (fox)1.5", "snow").blend(1, 0.5, no_normalize)',
        [[("a", 1), ("fox", 1.5)], [("snow", 1)]],
        [1, 0.5],
    ),
]

PLAIN = [
    "a fox in snow",
    "a well-lit room, f/1.8, 8k, hdr,masterpiece",
    "time: 12:30, ratio 16:9",
    "the end. and more, a fox.and the hound, x.blend",
    'a 5" tall figurine',
    "C-3PO, x-ray, a+b, -5 degrees, +5",
    "a fox (in snow",
    "smile :) or ) or ] or [",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines",
    "",
]

ERRORS = [
    ("(fox:99)", "The weight 99 on 'fox' is out of range: use 0 to 3."),
    ("(fox:-1)", "The weight -1 on 'fox' is out of range: use 0 to 3."),
    ("(fox)5", "The weight 5 on 'fox' is out of range: use 0 to 3."),
    ("(time: 12:30)", "The weight 30 on 'time: 12' is out of range: use 0 to 3."),
    ("fox+++++++++++++", "The weight 3.4523 on 'fox' is out of range: use 0 to 3."),
    ("((((((((((((a))))))))))))", "The weight 3.1384 on 'a' is out of range"),
    ("a fox::-1", "The '::' weights add up to -1"),
    ("a fox:: snow::-1", "The '::' weights add up to 0"),
    ("a fox::20 snow", "The weight 20 after 'a fox::' is out of range: use -10 to 10."),
    (":: ::", "nothing but '::'"),
    ("a (fox:4):: snow", "The weight 4 on 'fox'"),
    ('("a", "b").blend(1)', "has 1 weights for 2 prompts"),
    ('("a", "b").blend(1, -1)', "weights add up to 0"),
    ('("a", "b").blend(x, y)', "must be numbers"),
    ('("a", "b").and(no_normalize)', "must be numbers"),
    ('("a (fox)9", "b").blend(1, 1)', "The weight 9 on 'fox'"),
    ('("a fox.swap(dog)", "b").blend(1, 1)', ".swap()"),
]


@pytest.mark.parametrize(("prompt", "expected", "reading"), EXAMPLES)
def test_examples(prompt: str, expected: str, reading: Fragments) -> None:
    assert to_compel(prompt) == expected
    assert_fragments(fragments(expected), reading)
    assert has_syntax(prompt)


@pytest.mark.parametrize(("prompt", "expected", "parts", "weights"), BLENDS)
def test_blends(prompt: str, expected: str, parts: list[Fragments], weights: list[float]) -> None:
    assert to_compel(prompt) == expected
    actual_parts, actual_weights = blend(expected)
    assert len(actual_parts) == len(parts)
    for actual, want in zip(actual_parts, parts, strict=True):
        assert_fragments(actual, want)
    assert actual_weights == pytest.approx(weights)
    assert has_syntax(prompt)


def test_a1111_weight_reads_as_compels_own() -> None:
    assert fragments(to_compel("(fox:1.5)")) == fragments("(fox)1.5")
    assert fragments(to_compel("a (fox:1.5) b")) == fragments("a (fox)1.5 b")


def test_compel_multiplies_nested_groups() -> None:
    # Why flat output is enough: compel's own nesting gives the same weights.
    assert_fragments(fragments("((a)1.1)1.1"), [("a", 1.21)])
    assert fragments(to_compel("((a))"))[0][1] == pytest.approx(1.21)
    assert fragments(to_compel("[a]"))[0][1] == pytest.approx(1 / 1.1, abs=1e-3)


def test_compel_syntax_means_what_it_meant() -> None:
    for prompt in ["a (red)1.5 cat", "(a (b)1.5 c)0.8", "a fox++ in snow-", "(x)+ (y)--"]:
        assert_fragments(fragments(to_compel(prompt)), fragments(prompt))


@pytest.mark.parametrize("prompt", PLAIN)
def test_plain_prose_is_unchanged(prompt: str) -> None:
    assert to_compel(prompt) == prompt
    assert not has_syntax(prompt)
    assert encoded_prompt(prompt) is None
    # and compel itself reads it as typed, so encoding it without compel changes nothing
    assert fragments(prompt) == [(compel_normalized(prompt), 1.0)]


@pytest.mark.parametrize(("prompt", "message"), ERRORS)
def test_errors_say_what_to_change(prompt: str, message: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        to_compel(prompt)
    assert message in raised.value.user_message
    assert has_syntax(prompt)  # has_syntax never raises


def test_encoded_prompt() -> None:
    assert encoded_prompt("a (fox:1.3)") == "a (fox)1.3"
    assert encoded_prompt("a (red)1.5 cat") is None  # compel syntax that needs no change
    assert encoded_prompt("a fox") is None


def test_max_weight() -> None:
    assert MAX_WEIGHT == 3
    assert to_compel("(fox:3)") == "(fox)3"
    with pytest.raises(InvalidRequest):
        to_compel("(fox:3.001)")


def test_import_stays_light() -> None:
    # The bot imports this module and must stay free of torch.
    code = (
        "import sys, engine.prompt_syntax\n"
        "heavy = {'torch', 'compel', 'pyparsing', 'diffusers', 'transformers'}\n"
        "print(sorted(heavy & {name.split('.')[0] for name in sys.modules}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


# --- properties ---------------------------------------------------------------------------

SYNTAX_CHARS = '()[]:\\.+-"=,'
_atoms = st.sampled_from(
    [
        *["(", ")", "[", "]", ":", "::", "\\", ".", "+", "-", '"', "=", ",", " ", "\n", ":1.5)"],
        *["::0.5", "::-1", "::2", "++", "--", "1.2", "0", "fox", "a b", ".swap(", "withLora("],
        *[".blend(1, 1)", ".and()", '("a", "b")', "\\(", "\\)", "\\[", "\\\\", '\\"', "\x0b"],
        *["\\n", "\\0", "\\101", "\\x41", "\\u0041"],  # pyparsing unescapes these in quotes
    ]
)
prompts = st.one_of(
    st.text(),
    st.text(alphabet=st.sampled_from(list(SYNTAX_CHARS + " ab19\n")), max_size=40),
    st.lists(st.one_of(_atoms, st.text(max_size=3)), max_size=14).map("".join),
)
plain_prompts = st.text(
    alphabet=st.characters(blacklist_characters=SYNTAX_CHARS + "\x0b\x0c", codec="utf-8")
)


def compel_normalized(prompt: str) -> str:
    """The text compel makes of plain prose: ', ' after commas, whitespace runs collapsed."""
    if not prompt.strip():
        return ""
    spaced = re.sub(r",(\S)", r", \1", prompt)
    return " ".join(word for word in re.split("[ \t\n\r]+", spaced) if word)


def squash(pieces: Fragments) -> Fragments:
    """Runs of equal weight without whitespace: what must survive compel's reading."""
    out: Fragments = []
    for text, weight in pieces:
        text = re.sub("[ \t\n\r]", "", text)
        weight = round(weight, 4)
        if not text:
            continue
        if out and out[-1][1] == weight:
            out[-1] = (out[-1][0] + text, weight)
        else:
            out.append((text, weight))
    return out


def intended(prompt: str) -> Fragments | list[tuple[Fragments, float]] | None:
    """What to_compel means the prompt to say, from its own reading (None: compel's blend)."""
    text = prompt_syntax._clean(prompt)
    if prompt_syntax._COMBINATION.fullmatch(text):
        return None
    if "::" in text:
        parts = prompt_syntax._multi_prompt(text)
        if len(parts) == 1:
            return squash([(p.text, p.weight) for p in parts[0][0]])
        return [(squash([(p.text, p.weight) for p in pieces]), w) for pieces, w in parts]
    pieces, _ = prompt_syntax._pieces(text)
    return squash([(p.text, p.weight) for p in pieces])


@settings(max_examples=300, deadline=None)
@given(prompts)
def test_to_compel_gives_compel_a_prompt_it_parses(prompt: str) -> None:
    syntax = has_syntax(prompt)  # never raises
    assert isinstance(syntax, bool)
    try:
        encoded = to_compel(prompt)
    except InvalidRequest as error:
        assert error.user_message.strip()
        return
    assert isinstance(encoded, str)
    Compel.parse_prompt_string(encoded)  # must not raise


@settings(max_examples=300, deadline=None)
@given(prompts)
def test_compel_reads_what_to_compel_means(prompt: str) -> None:
    try:
        encoded = to_compel(prompt)
        meaning = intended(prompt)
    except InvalidRequest:
        return
    if meaning is None:
        return
    if not encoded.strip():
        meaning = []  # compel reads a prompt of (Unicode) spaces as empty
    conjunction = Compel.parse_prompt_string(encoded)
    (read,) = conjunction.prompts
    if isinstance(read, Blend):
        got = [
            (squash([(f.text, f.weight) for f in part.children]), weight)
            for part, weight in zip(read.prompts, read.weights, strict=True)
        ]
        assert got == [(part, pytest.approx(weight)) for part, weight in meaning]
    else:
        assert squash([(f.text, f.weight) for f in read.children]) == meaning


@settings(max_examples=300, deadline=None)
@given(prompts)
def test_no_syntax_means_compel_reads_it_as_typed(prompt: str) -> None:
    if has_syntax(prompt):
        return
    assert to_compel(prompt) == prompt
    assert fragments(prompt) == [(compel_normalized(prompt), 1.0)]


@settings(max_examples=300, deadline=None)
@given(plain_prompts)
def test_text_without_syntax_characters_is_unchanged(prompt: str) -> None:
    assert to_compel(prompt) == prompt
    assert not has_syntax(prompt)
    assert encoded_prompt(prompt) is None
