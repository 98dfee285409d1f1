"""Expand permutation prompts (``a {red, blue} fox``) into every prompt they stand for.

Why: Midjourney users separate options with commas and Stable Diffusion users with ``|``
(dynamicprompts' syntax); one reader accepts both, checks the cap before building anything, and
keeps the rest of the prompt exactly as typed, so prompt weights and other syntax reach the model
untouched.

Rules:

- A brace group is ``{`` ... ``}``; full-width ``｛`` ``｝`` are braces too (and may pair with
  the ASCII ones). Groups nest: ``{fox, {small, big} cat}``.
- Options are split at the group's own nesting level: on ``|`` (or full-width ``｜``) if the
  group has one there, otherwise on commas (``,``, ``，``, ``、``). So ``{red, dark|blue}`` has
  the two options "red, dark" and "blue". Commas inside parentheses split too (``{(a, b:1.2), c}``
  has three options); write ``|`` to keep them.
- Whitespace around each option is trimmed; everything outside the braces is kept as typed.
- The first group varies slowest, in the order the options are written (like Midjourney);
  identical expansions are kept, not merged.
- Unbalanced braces are text: a ``{`` with no matching ``}`` and a stray ``}`` stay as typed.
- An empty option is an empty string: ``{a,,b}`` makes "a", "" and "b"; ``{}`` makes one empty
  option (the braces vanish). An expansion that is empty or only whitespace is returned as it is;
  refusing empty prompts is the caller's job.
- Only braces and separators are syntax. dynamicprompts' other features (wildcards ``__name__``,
  ``{2$$a|b}`` bounds, ``0.5::`` option weights, ``~``/``@`` samplers, ``${var}``, ``%{}``
  wraps, ``#`` and ``//`` comments) are not offered: that text is read literally, so no wildcard
  file is ever looked up.
- Groups may nest at most ``MAX_DEPTH`` deep.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
from dataclasses import dataclass

log = logging.getLogger(__name__)

MAX_EXPANSIONS_DEFAULT = 4
MAX_DEPTH = 10  # far beyond real prompts, well inside dynamicprompts' recursion budget

_OPENERS = frozenset("{｛")
_CLOSERS = frozenset("}｝")
_PIPES = frozenset("|｜")
_COMMAS = frozenset(",，、")

# dynamicprompts is only ever handed braces, pipes and these private-use placeholders, one per
# piece of user text, so none of its other syntax can fire on what the user typed.
_PLACEHOLDER_BASE = 0xF0000
_MAX_PIECES = 0xFFFFE - _PLACEHOLDER_BASE

# Beyond this a count is only said to be huge: a digit string that long helps nobody.
_SHOW_EXACT_BELOW = 10**12
_MAX_FACTORS_SHOWN = 6

_UNREADABLE = (
    "Could not expand the {…} options in this prompt. Write them as {red, blue} or {red|blue}."
)


class PermutationError(ValueError):
    """A permutation prompt cannot be expanded; ``user_message`` tells the user what to change."""

    def __init__(self, user_message: str) -> None:
        super().__init__(user_message)
        self.user_message = user_message


@dataclass(frozen=True, slots=True)
class _Group:
    # Each option is a sequence of literal text and nested groups.
    options: tuple[tuple[str | _Group, ...], ...]


_REPEAT = re.compile(r"(?<!\S)--repeat(?:\s+|=)(\S+)")


def split_repeat(prompt: str) -> tuple[str, int | None]:
    """``prompt`` without Midjourney's ``--repeat N`` (anywhere in it), and N (None: not
    given). The last one wins when there are several.

    Raises:
        PermutationError: ``--repeat`` is followed by something other than a whole number.
    """
    found = list(_REPEAT.finditer(prompt))
    if not found:
        return prompt, None
    value = found[-1].group(1)
    if not value.isascii() or not value.isdigit() or len(value) > 6:
        raise PermutationError(
            f"`--repeat` needs a whole number, like `--repeat 2` (not {value!r})."
        )
    return " ".join(_REPEAT.sub(" ", prompt).split()), int(value)


def has_permutations(prompt: str) -> bool:
    """Whether ``prompt`` has at least one matched brace group (one option is enough).

    True means ``expand`` rewrites the prompt (it removes the braces even of ``{red}``); it may
    still refuse it, e.g. for nesting deeper than ``MAX_DEPTH``. Never raises.
    """
    return bool(_match_braces(prompt))


def count_expansions(prompt: str) -> int:
    """How many prompts ``expand`` makes from ``prompt`` before ``repeat``, without building them.

    Raises ``PermutationError`` where ``expand`` would for the prompt itself (too deep nesting).
    """
    return _count_seq(_parse(prompt))


def expand(prompt: str, *, repeat: int = 1, limit: int = MAX_EXPANSIONS_DEFAULT) -> list[str]:
    """Every prompt ``prompt`` stands for, ``repeat`` times over, at most ``limit`` in all.

    The expansions come in writing order with the first group varying slowest (``{a,b} {x,y}``:
    "a x", "a y", "b x", "b y"). ``repeat`` is Midjourney's ``--repeat``: the whole set again,
    so repeat 2 gives ``[p1, p2, p1, p2]``. A prompt without brace groups comes back as the very
    same string. Raises ``PermutationError`` when ``repeat`` is below 1, when the total would pass
    ``limit`` (checked from the count, before anything is built) or when the braces cannot be
    expanded; ``ValueError`` for a ``limit`` below 1 (the caller's mistake, not the user's).
    """
    if isinstance(repeat, bool) or not isinstance(repeat, int):
        raise TypeError(f"repeat must be an int, not {type(repeat).__name__}")
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    if repeat < 1:
        raise PermutationError("--repeat must be 1 or more.")
    if repeat > limit:
        asked = f"--repeat {repeat:,}" if repeat < _SHOW_EXACT_BELOW else "That --repeat"
        raise PermutationError(
            f"{asked} makes more than the limit of {limit} prompts. Use --repeat {limit} or less."
        )
    nodes = _parse(prompt)
    count = _count_seq(nodes)
    if count * repeat > limit:
        raise PermutationError(_too_many(nodes, count, repeat, limit))
    if not any(isinstance(node, _Group) for node in nodes):
        return [prompt] * repeat
    return _generate(nodes, count) * repeat


def _match_braces(prompt: str) -> dict[int, int]:
    """The matched brace pairs, as opening index -> closing index."""
    if not any(ch in _OPENERS for ch in prompt):
        return {}
    pairs: dict[int, int] = {}
    open_at: list[int] = []
    for i, ch in enumerate(prompt):
        if ch in _OPENERS:
            open_at.append(i)
        elif ch in _CLOSERS and open_at:
            pairs[open_at.pop()] = i
    return pairs


def _parse(prompt: str) -> tuple[str | _Group, ...]:
    pairs = _match_braces(prompt)
    if not pairs:
        return (prompt,)
    # Checked before the recursive descent so that neither it nor dynamicprompts can run out of
    # stack; unmatched braces do not count, they are text.
    depth = deepest = 0
    closers = set(pairs.values())
    for i in range(len(prompt)):
        if i in pairs:
            depth += 1
            deepest = max(deepest, depth)
        elif i in closers:
            depth -= 1
    if deepest > MAX_DEPTH:
        raise PermutationError(
            f"The {{…}} groups in this prompt are nested {deepest} deep; the most is {MAX_DEPTH}."
        )
    return tuple(_parse_seq(prompt, 0, len(prompt), pairs))


def _parse_seq(text: str, start: int, end: int, pairs: dict[int, int]) -> list[str | _Group]:
    nodes: list[str | _Group] = []
    literal_from = i = start
    while i < end:
        close = pairs.get(i)
        if close is None:
            i += 1
            continue
        if literal_from < i:
            nodes.append(text[literal_from:i])
        nodes.append(_parse_group(text, i + 1, close, pairs))
        i = literal_from = close + 1
    if literal_from < end:
        nodes.append(text[literal_from:end])
    return nodes


def _parse_group(text: str, start: int, end: int, pairs: dict[int, int]) -> _Group:
    pipes: list[int] = []
    commas: list[int] = []
    i = start
    while i < end:
        close = pairs.get(i)
        if close is not None:  # a nested group's separators are its own
            i = close + 1
            continue
        if text[i] in _PIPES:
            pipes.append(i)
        elif text[i] in _COMMAS:
            commas.append(i)
        i += 1
    # A pipe means the user writes dynamicprompts' syntax, where commas are just text.
    bounds = [start - 1, *(pipes or commas), end]
    options = tuple(_trim(_parse_seq(text, a + 1, b, pairs)) for a, b in itertools.pairwise(bounds))
    return _Group(options)


def _trim(nodes: list[str | _Group]) -> tuple[str | _Group, ...]:
    if nodes and isinstance(nodes[0], str):
        nodes[0] = nodes[0].lstrip()
    if nodes and isinstance(nodes[-1], str):
        nodes[-1] = nodes[-1].rstrip()
    return tuple(node for node in nodes if node != "")


def _count_seq(nodes: tuple[str | _Group, ...]) -> int:
    return math.prod(_count_group(node) for node in nodes if isinstance(node, _Group))


def _count_group(group: _Group) -> int:
    return sum(_count_seq(option) for option in group.options)


def _too_many(nodes: tuple[str | _Group, ...], count: int, repeat: int, limit: int) -> str:
    factors = [str(n) for n in (_count_group(g) for g in nodes if isinstance(g, _Group)) if n > 1]
    if repeat > 1:
        factors.append(f"--repeat {repeat}")
    breakdown = f" ({' x '.join(factors)})" if 2 <= len(factors) <= _MAX_FACTORS_SHOWN else ""
    advice = "Use fewer options or a smaller --repeat." if repeat > 1 else "Use fewer options."
    total = _show(count * repeat)
    return f"This prompt makes {total} prompts{breakdown}; the limit is {limit}. {advice}"


def _show(n: int) -> str:
    return f"{n:,}" if n < _SHOW_EXACT_BELOW else "more than a trillion"


def _template(nodes: tuple[str | _Group, ...], pieces: list[str]) -> str:
    out: list[str] = []
    for node in nodes:
        if isinstance(node, str):
            out.append(_placeholder(node, pieces))
            continue
        # Every option starts with a placeholder of its own, even an empty one, so no two
        # choices give the same string and dynamicprompts (which drops duplicates) keeps all.
        options = (_placeholder("", pieces) + _template(option, pieces) for option in node.options)
        out.append("{" + "|".join(options) + "}")
    return "".join(out)


def _placeholder(text: str, pieces: list[str]) -> str:
    if len(pieces) >= _MAX_PIECES:
        raise PermutationError("This prompt has too many {…} groups. Use fewer of them.")
    pieces.append(text)
    return chr(_PLACEHOLDER_BASE + len(pieces) - 1)


def _generate(nodes: tuple[str | _Group, ...], count: int) -> list[str]:
    nodes = _simplify(nodes)
    if not any(isinstance(node, _Group) for node in nodes):
        return ["".join(nodes)]  # only one-option groups: nothing left to combine
    pieces: list[str] = []
    template = _template(nodes, pieces)
    try:
        # Imported here: the bot imports this module at start-up, and only permutation
        # prompts need dynamicprompts (and pyparsing) loaded.
        from dynamicprompts.generators import CombinatorialPromptGenerator

        raw = CombinatorialPromptGenerator().generate(template, max_prompts=count)
        prompts = [_decode(text, pieces) for text in raw]
    except Exception:
        log.warning("dynamicprompts could not expand a %d-prompt template", count, exc_info=True)
        raise PermutationError(_UNREADABLE) from None
    if len(prompts) != count:
        log.warning("dynamicprompts made %d prompts where %d were counted", len(prompts), count)
        raise PermutationError(_UNREADABLE)
    return prompts


def _simplify(nodes: tuple[str | _Group, ...]) -> tuple[str | _Group, ...]:
    """``nodes`` with one-option groups spliced in and neighbouring text joined.

    dynamicprompts' combinatorial sampler recurses once per item of a sequence, so a prompt of a
    few hundred ``{word}`` groups would overflow the stack. Left are only groups of two or more
    options, and as the count is within the limit, few of them: at most log2(limit) per sequence.
    """
    out: list[str | _Group] = []
    text: list[str] = []
    for node in nodes:
        if isinstance(node, str):
            text.append(node)
            continue
        options = tuple(_simplify(option) for option in node.options)
        if len(options) > 1:
            if text:
                out.append("".join(text))
                text = []
            out.append(_Group(options))
            continue
        for part in options[0]:
            if isinstance(part, str):
                text.append(part)
            else:
                if text:
                    out.append("".join(text))
                    text = []
                out.append(part)
    if text:
        out.append("".join(text))
    return tuple(out)


def _decode(text: str, pieces: list[str]) -> str:
    indexes = [ord(ch) - _PLACEHOLDER_BASE for ch in text]
    if not all(0 <= index < len(pieces) for index in indexes):
        raise ValueError(f"dynamicprompts returned text that is no placeholder: {text!r}")
    return "".join(pieces[index] for index in indexes)
