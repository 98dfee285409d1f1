"""Translate a user's AUTOMATIC1111 and Midjourney prompt weighting into compel's prompt syntax.

Pure Python on purpose: the Discord bot imports this module to validate prompts and to show
``/info``, and the bot must not pull in torch or compel.

What the user may type (AUTOMATIC1111's rules, wiki "Attention/emphasis", unless noted):

- ``(text:1.3)`` weight 1.3; ``(text)`` weight 1.1; ``[text]`` weight 1/1.1; nesting multiplies,
  so ``((a))`` is 1.21. Every resulting weight must lie in [0, MAX_WEIGHT].
- ``\\(`` ``\\)`` ``\\[`` ``\\]`` ``\\\\`` (and compel's ``\\"``) are the literal characters.
- An unbalanced bracket is a literal character (AUTOMATIC1111 would weight the rest of the
  prompt instead). ``:`` is only a weight when ``:number)`` closes a round bracket, so
  ``(time: 12:30 pm)`` is the whole text at 1.1; note that ``(time: 12:30)`` ends in ``:30)``,
  which AUTOMATIC1111 reads as weight 30 (here: an error telling the user how to escape).
- compel's own syntax keeps its meaning: a ``(...)`` group directly followed by a number or by
  ``+``/``-`` signs is compel's (``(a)1.5``, ``(a)++``; this wins over ``:number)`` inside it),
  ``word++`` / ``word-`` are compel's (+ is x1.1, - is x0.9, per sign), and a whole prompt of
  the form ``("a", "b").blend(1, 0.5)`` or ``("a", "b").and()`` passes through as typed (after
  checking its weights, so that compel neither raises on it nor divides by a zero total).
- Midjourney multi-prompts: ``::`` splits the prompt into parts and a number directly after
  ``::`` weights the part before it (default 1), e.g. ``a fox:: snow::0.5`` becomes
  ``("a fox", "snow").blend(1, 0.5)``. Part weights lie in [-10, 10] and must add up to more
  than 0 (Midjourney's rule). ``::`` splits first, so brackets do not span parts.

Output form: weights are flattened, one compel group per run of equal weight, written with at
most 4 decimals (``((a))`` -> ``(a)1.21``, ``[a]`` -> ``(a)0.9091``, ``(a:1.0)`` -> ``(a)1``);
compel does multiply nested groups itself, but flat groups let every weight be range-checked
and written exactly once. A group is always set off from its neighbours by a space (compel
reads ``x(a)1.1`` as plain text, and ``(a)1.15 apples`` as weight 1.15).

What compel 2.5.1's parser (``Compel.parse_prompt_string``) does to ordinary text, found by
running it, and how this module handles each:

- Whitespace runs collapse to one space, the ends are stripped and ``,x`` becomes ``, x``;
  inside a group ``.`` and ``,`` become separate words (``(f/1.8)1.2`` -> ``'f/1 . 8'``).
  CLIP's tokenizer splits punctuation and digits apart anyway, so the tokens stay the same
  except where punctuation runs are split (``...``, ``,,``). Not escapable; left as is.
- Balanced double quotes group and are dropped (``say "OPEN"`` -> ``say OPEN``): escaped as
  ``\\"``. A lone quote (``5" tall``) is read literally.
- ``(text)`` alone is weight 1 with the parentheses dropped, and ``.swap(...)``,
  ``.attend(...)``, ``withLora(...)``/``useLora(...)`` are operators even with a space before
  the ``(``: every literal parenthesis is escaped, and an operator name just before one of the
  generated groups is put into a group of its own (``(.swap)1``) so it stays text.
- A word ending in ``+`` or ``-`` signs is weighted (``C++`` is ``C`` at 1.21, ``pre-`` is 0.9),
  also before ``(`` ``)`` ``"`` (``a+(b`` is ``a`` at 1.1). This is compel's syntax, kept.
  Hyphens and pluses inside words (``well-lit``, ``a+b``, ``-5``), ``f/1.8``, ``8k,``, colons,
  ``.and`` / ``.blend`` in prose are read literally.
- Inside a group ``=`` and a ``+``/``-`` not attached to a word (``(a - b)``) make compel read the
  whole group as plain text, parentheses and weight included: they are written outside the
  group, at weight 1.
- ``\\(`` ``\\)`` ``\\"`` are unescaped once per internal copy of a fragment, so backslashes
  right before them vanish: a literal backslash before a parenthesis or quote gets a space.
  Other backslashes (``\\,``, ``\\-``, ``\\[``) are kept as typed.
- A vertical tab or form feed makes the parser raise: they become spaces.
- The parser takes exponential time on unclosed ``(`` (about 4x per ``(``: 8 take a minute;
  escaped ones cost nothing), so a prompt with more than two is escaped, and compel must only
  ever be given this module's output, never a raw prompt.
- A quoted string (a blend part) cannot hold a newline, and pyparsing turns ``\\n``, ``\\t``,
  ``\\0``, ``\\x41`` and the like in it into characters: in parts, newlines become spaces
  and a backslash before such a letter or digit gets a space.

``has_syntax(p)`` is False only when compel would read ``p`` as one fragment at weight 1 equal
to ``p`` (up to the whitespace and comma spacing above) and ``to_compel(p)`` is ``p``; plain
prose, one or two unbalanced brackets and ``:)`` are False, so they take diffusers' own encoder
and a prompt without syntax gives exactly today's pixels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.errors import InvalidRequest

__all__ = ["MAX_PART_WEIGHT", "MAX_WEIGHT", "encoded_prompt", "has_syntax", "to_compel"]

MAX_WEIGHT = 3.0  # a token weight beyond this gives noise, not emphasis
MAX_PART_WEIGHT = 10.0  # Midjourney's '::' weights
ROUND_BRACKET = 1.1  # AUTOMATIC1111: (text)
SQUARE_BRACKET = 1 / 1.1  # AUTOMATIC1111: [text]
COMPEL_PLUS = 1.1  # compel: word+ (per sign)
COMPEL_MINUS = 0.9  # compel: word- (per sign)

# The whitespace pyparsing skips; compel's parser takes other Unicode spaces as letters.
_WS = " \t\n\r"
_S = "[ \t\n\r]*"

_A1111_TOKEN = re.compile(
    r"""
    \\[()\[\]\\"]                                           # an escaped character
    | :\s*(?P<weight>[+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*\)     # ':1.3)' closes a round bracket
    | [()\[\]]
    | [^\\()\[\]:]+
    | [\\:]
    """,
    re.VERBOSE,
)
# What compel reads as a group's weight right after its ')': sign runs first, then a number.
_COMPEL_SUFFIX = re.compile(r"\++|-+|\d+\.\d*|\.\d+|\d+")
# A word as compel's parser sees it once ( ) " are escaped: no space and none of , . = + -,
# except a sign followed by a word character (well-lit, -5) and backslash escapes (\, \-).
# Atomic, so a word ending in '\-' is never re-split to make '-' a weight suffix.
_WORD = r"(?>(?:\\[,.=+\-]|[+-](?=[^ \t\n\r,.=+\-])|[^ \t\n\r,.=+\-])+)"
# Starting only where a word starts: tried at every character of a long word (6000 '['), the
# greedy word would be re-read to its end each time, quadratic on the event loop.
_WORD_WEIGHT = re.compile(r"(?<![^ \t\n\r,.=+\-])" + _WORD + r"(?P<signs>\++|-+)")
# Characters compel cannot parse inside a group: '=' and signs not attached to a word.
_LOOSE = re.compile(_WORD + r"|(?P<loose>(?:=|[+-](?![^ \t\n\r,.=+\-]))+)")
# Operators that take the next '(' as their argument, even across whitespace.
_OPERATOR_TAIL = re.compile(r"(?:\.(?:swap|attend)|(?:use|with)Lora)(?=[ \t\n\r]*$)")

_MJ_SEPARATOR = re.compile(r"::(?P<weight>-?(?:\d+(?:\.\d*)?|\.\d+))?")

# compel's blend / conjunction, whole prompt only: compel silently drops text after '.and()'.
_QUOTED = r'(?>"(?:\\"|[^"\n\r])*")'  # pyparsing's QuotedString, first match wins
_BARE = r'[^ \t\n\r()",.+\-=\\]+'
_TARGET = re.compile(rf"{_QUOTED}|{_BARE}")
_COMBINATION = re.compile(
    rf"{_S}\({_S}(?P<targets>(?:{_QUOTED}|{_BARE})(?:{_S},{_S}(?:{_QUOTED}|{_BARE}))*){_S}\)"
    rf"{_S}\.(?P<op>blend|and|add){_S}\((?P<args>[^()]*)\){_S}"
)
_NUMBER = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+)|-?\d+")  # pyparsing's real | int
_UNSUPPORTED = re.compile(r"\.swap[ \t\n\r]*\(|(?:use|with)Lora[ \t\n\r]*\(")


@dataclass
class _Piece:
    """A run of literal text and the weight it gets."""

    text: str
    weight: float = 1.0
    depth: int = 0  # how many groups or sign suffixes multiply into the weight
    brackets: bool = False  # a bracket group (not only word+) gives it its weight
    loose: bool = False  # kept out of any group, but set off by spaces

    @property
    def grouped(self) -> bool:
        return self.depth > 0 and not self.loose


def to_compel(prompt: str) -> str:
    """Return ``prompt`` in compel's syntax; ``prompt`` itself when it has no syntax.

    Raises ``InvalidRequest`` (and nothing else) when a weight is out of range or a
    multi-prompt's weights do not add up to more than 0.
    """
    text = _clean(prompt)
    combination = _COMBINATION.fullmatch(text)
    if combination:
        _check_combination(combination)
        return text
    if "::" in text:
        return _render_multi_prompt(_multi_prompt(text))
    pieces, syntax = _pieces(text)
    if not syntax and _compel_reads_literally(prompt):
        return prompt
    _check_weights(pieces)
    return _render(pieces)


def has_syntax(prompt: str) -> bool:
    """Whether ``to_compel`` or compel would read anything in ``prompt`` other than plain text.

    False means: compel would read the prompt as it is, at weight 1, and ``to_compel`` returns
    it unchanged, so the engine can encode it without compel. Never raises.
    """
    text = _clean(prompt)
    if _COMBINATION.fullmatch(text) or "::" in text:
        return True
    _, syntax = _pieces(text)
    return syntax or not _compel_reads_literally(prompt)


def encoded_prompt(prompt: str) -> str | None:
    """The compel prompt that ``prompt`` is encoded as, for ``/info``; None when it is the same."""
    encoded = to_compel(prompt)
    return None if encoded == prompt else encoded


def _clean(prompt: str) -> str:
    # compel's parser raises on vertical tabs and form feeds; CLIP reads them as spaces anyway.
    return prompt.replace("\x0b", " ").replace("\x0c", " ")


def _compel_reads_literally(prompt: str) -> bool:
    """Whether compel reads a prompt that has no syntax of ours as plain text, and quickly."""
    # An unclosed '(' is read as text, but compel's parser backtracks over each one: time
    # grows about 4x per '(' (8 take a minute), so more than two are escaped instead.
    return not (
        "\x0b" in prompt
        or "\x0c" in prompt
        or prompt.count("(") > 2
        or prompt.count('"') >= 2  # quotes that compel would group and drop
        or re.search(r'[+-][()"]', prompt)  # 'a+(' : compel weights 'a'
    )


def _pieces(text: str, *, compel_only: bool = False) -> tuple[list[_Piece], bool]:
    """Split ``text`` into weighted literal pieces; also say whether any syntax was read.

    ``compel_only`` reads compel's syntax alone (a bare ``(a)`` is weight 1, ``[`` is text).
    """
    pieces: list[_Piece] = []
    open_round: list[int] = []
    open_square: list[int] = []
    groups: list[tuple[str, int, int, float]] = []  # kind, first and past-last piece, weight
    syntax = False
    pos = 0
    while pos < len(text):
        match = _A1111_TOKEN.match(text, pos)
        assert match is not None  # the last two alternatives match any character
        token, pos = match.group(), match.end()
        explicit = match.group("weight")
        if len(token) == 2 and token[0] == "\\":
            pieces.append(_Piece(token[1]))
            syntax = True
        elif token == "(" or (token == "[" and not compel_only):
            # The bracket stays as a literal piece unless it gets closed.
            (open_round if token == "(" else open_square).append(len(pieces))
            pieces.append(_Piece(token))
        elif (token == ")" or explicit is not None) and open_round:
            suffix = _COMPEL_SUFFIX.match(text, pos)
            if explicit is not None and (suffix or compel_only):
                pieces.append(_Piece(token[:-1]))  # compel reads ':1.3' as text
                explicit = None
            if suffix:
                weight, pos = _suffix_weight(suffix.group()), suffix.end()
            elif explicit is not None:
                weight = float(explicit)
            else:
                weight = 1.0 if compel_only else ROUND_BRACKET
            start = open_round.pop()
            pieces[start].text = ""  # the bracket was syntax after all
            groups.append(("(", start + 1, len(pieces), weight))
            syntax = True
        elif token == "]" and open_square:
            start = open_square.pop()
            pieces[start].text = ""
            groups.append(("[", start + 1, len(pieces), SQUARE_BRACKET))
            syntax = True
        else:
            pieces.append(_Piece(token))
    boundaries = _apply_groups(pieces, groups)
    out: list[_Piece] = []
    for piece in _merge(pieces, boundaries):
        for part in _split_word_weights(piece):
            syntax = syntax or part.depth > piece.depth
            out.extend(_split_loose(part) if part.grouped else [part])
    return out, syntax


def _apply_groups(pieces: list[_Piece], groups: list[tuple[str, int, int, float]]) -> set[int]:
    """Weight each piece by the groups around it; return the indexes where a group starts or ends.

    One pass, so deep nesting costs no more than flat text. Round groups nest properly among
    themselves and so do square ones (only the two kinds may cross), so a stack of running
    products per kind gives each product exactly.
    """
    enter: dict[int, list[tuple[str, float]]] = {}
    leave: dict[int, list[str]] = {}
    for kind, start, end, weight in groups:
        if start < end:  # an empty group weights nothing (and would pop before it pushed)
            enter.setdefault(start, []).append((kind, weight))
            leave.setdefault(end, []).append(kind)
    products = {"(": [1.0], "[": [1.0]}
    for index, piece in enumerate(pieces):
        for kind in leave.get(index, ()):
            products[kind].pop()
        for kind, weight in enter.get(index, ()):
            products[kind].append(products[kind][-1] * weight)
        piece.weight = products["("][-1] * products["["][-1]
        piece.depth = len(products["("]) + len(products["["]) - 2
        piece.brackets = piece.depth > 0
    return set(enter) | set(leave)


def _suffix_weight(suffix: str) -> float:
    if suffix[0] == "+":
        return COMPEL_PLUS ** len(suffix)
    if suffix[0] == "-":
        return COMPEL_MINUS ** len(suffix)
    return float(suffix)


def _merge(pieces: list[_Piece], boundaries: set[int]) -> list[_Piece]:
    # Join the characters of one group (escapes, stray brackets) and all text outside groups
    # into single texts, so that '+' signs are judged in context. Unlike AUTOMATIC1111, '(a)(b)'
    # stays two groups: compel reads 'a b' there, as it does for '(a)1.1(b)1.1'.
    merged: list[_Piece] = []
    crossed = False
    for index, piece in enumerate(pieces):
        crossed = crossed or index in boundaries
        if not piece.text:
            continue
        outside = piece.depth == 0 and bool(merged) and merged[-1].depth == 0
        if merged and (outside or not crossed):
            merged[-1].text += piece.text
        else:
            merged.append(piece)
        crossed = False
    return merged


def _split_word_weights(piece: _Piece) -> list[_Piece]:
    """Split off compel's ``word++`` / ``word-`` as pieces of their own."""
    out: list[_Piece] = []
    pos = 0
    for match in _WORD_WEIGHT.finditer(piece.text):
        signs = match.group("signs")
        word = match.group()[: -len(signs)]
        weight = piece.weight * _suffix_weight(signs)
        before = piece.text[pos : match.start()]
        out.append(_Piece(before, piece.weight, piece.depth, piece.brackets))
        out.append(_Piece(word, weight, piece.depth + 1, piece.brackets))
        pos = match.end()
    out.append(_Piece(piece.text[pos:], piece.weight, piece.depth, piece.brackets))
    return [part for part in out if part.text]


def _split_loose(piece: _Piece) -> list[_Piece]:
    """Take out of a grouped piece what compel cannot parse inside a group."""
    out: list[_Piece] = []
    pos = 0
    for match in _LOOSE.finditer(piece.text):
        if match.group("loose"):
            before = piece.text[pos : match.start()]
            out.append(_Piece(before, piece.weight, piece.depth, piece.brackets))
            out.append(_Piece(match.group(), 1.0, piece.depth, piece.brackets, loose=True))
            pos = match.end()
    out.append(_Piece(piece.text[pos:], piece.weight, piece.depth, piece.brackets))
    return [part for part in out if part.text]


def _check_weights(pieces: list[_Piece]) -> None:
    for piece in pieces:
        weight = round(piece.weight, 4)
        if piece.grouped and piece.text.strip(_WS) and not 0 <= weight <= MAX_WEIGHT:
            message = (
                f"The weight {_fmt(weight)} on '{_snippet(piece.text)}' is out of range: "
                f"use 0 to {_fmt(MAX_WEIGHT)}."
            )
            if piece.depth > 1:
                message += " Nested weights multiply."
            if piece.brackets:
                message += r" For brackets meant as text, write \( and \)."
            raise InvalidRequest(message)


def _render(pieces: list[_Piece]) -> str:
    """Write pieces in compel's syntax: text escaped, each weight as a group of its own."""
    out = ""
    set_off = False  # the last chunk must be kept apart from a following word
    for index, piece in enumerate(pieces):
        following = pieces[index + 1] if index + 1 < len(pieces) else None
        if piece.grouped:
            core = piece.text.strip(_WS)
            if not core:
                out, set_off = out + piece.text, False
                continue
            lead = piece.text[: len(piece.text) - len(piece.text.lstrip(_WS))]
            trail = piece.text[len(lead) + len(core) :]
            # A trailing backslash would escape the closing parenthesis.
            body = _escape(core) + (" " if core.endswith("\\") else "")
            chunk, next_set_off = f"{lead}({body}){_fmt(piece.weight)}{trail}", True
        elif piece.loose:
            chunk, next_set_off = piece.text, True
        else:
            chunk, next_set_off = _escape(piece.text), False
            operator = _OPERATOR_TAIL.search(piece.text)
            if operator and following is not None and following.grouped:
                # '.swap (a)1.1' would make compel swap: keep the operator's name as text.
                start = operator.start()
                if start and piece.text[start - 1] in "+-":
                    start -= 1  # left behind, 'x+' would weight 'x'
                before = _escape(piece.text[:start])
                name = piece.text[start : operator.end()]
                chunk = _join(before, f"({name})1") + piece.text[operator.end() :]
        if set_off or next_set_off:
            out = _join(out, chunk)
        else:
            out += chunk
        set_off = next_set_off
    return out


def _join(left: str, right: str) -> str:
    if left and right and left[-1] not in _WS and right[0] not in _WS:
        return f"{left} {right}"
    return left + right


def _escape(text: str) -> str:
    out = []
    for index, char in enumerate(text):
        if char in '()"':
            out.append("\\" + char)
        elif char == "\\" and text[index + 1 : index + 2] in ("(", ")", '"'):
            out.append("\\ ")  # compel would take '\\(' as an escaped '(' and eat both
        else:
            out.append(char)
    return "".join(out)


def _multi_prompt(text: str) -> list[tuple[list[_Piece], float]]:
    """Split a Midjourney multi-prompt into checked parts and their weights."""
    raw: list[tuple[str, float]] = []
    start = 0
    for match in _MJ_SEPARATOR.finditer(text):
        weight = match.group("weight")
        raw.append((text[start : match.start()], float(weight) if weight else 1.0))
        start = match.end()
    raw.append((text[start:], 1.0))
    parts = []
    for part, weight in raw:
        pieces, _ = _pieces(part.strip(_WS))
        if not _render(pieces).strip():
            continue  # nothing to draw (compel drops Unicode spaces too): no weight either
        _check_weights(pieces)
        if not -MAX_PART_WEIGHT <= weight <= MAX_PART_WEIGHT:
            raise InvalidRequest(
                f"The weight {_fmt(weight)} after '{_snippet(part)}::' is out of range: "
                f"use {_fmt(-MAX_PART_WEIGHT)} to {_fmt(MAX_PART_WEIGHT)}."
            )
        parts.append((pieces, weight))
    if not parts:
        raise InvalidRequest("The prompt has nothing but '::' in it: write what to draw.")
    total = sum(weight for _, weight in parts)
    if round(total, 4) <= 0:
        raise InvalidRequest(
            f"The '::' weights add up to {_fmt(total)}: they must add up to more than 0, "
            "so raise a weight or drop a negative one."
        )
    return parts


def _render_multi_prompt(parts: list[tuple[list[_Piece], float]]) -> str:
    if len(parts) == 1:
        return _render(parts[0][0])
    quoted = []
    for pieces, _ in parts:
        body = re.sub("[\n\r]", " ", _render(pieces))  # a quoted string ends at a line end
        body = re.sub(r"\\(?=[tnfr0-7xu])", r"\\ ", body)  # pyparsing would unescape '\t' etc.
        if body.endswith("\\"):
            body += " "  # or it would escape the closing quote
        quoted.append(f'"{body}"')
    weights = ", ".join(_fmt(weight) for _, weight in parts)
    return f"({', '.join(quoted)}).blend({weights})"


def _check_combination(match: re.Match[str]) -> None:
    """Check a typed compel ``.blend()`` / ``.and()`` so that compel can use it as it is."""
    op = match.group("op")
    targets = _TARGET.findall(match.group("targets"))
    args = [arg.strip(_WS) for arg in match.group("args").split(",")]
    args = [] if args == [""] else args
    normalize = op == "blend" and (not args or args[-1] != "no_normalize")
    if op == "blend" and not normalize:
        args = args[:-1]
    if not all(_NUMBER.fullmatch(arg) for arg in args):
        raise InvalidRequest(
            f"The weights in .{op}(...) must be numbers, e.g. .{op}(1, 0.5)"
            + (" or .blend(1, 0.5, no_normalize)." if op == "blend" else ".")
        )
    weights = [float(arg) for arg in args]
    if weights and len(weights) != len(targets):
        raise InvalidRequest(
            f".{op}(...) has {len(weights)} weights for {len(targets)} prompts: "
            "give one weight per prompt, or none."
        )
    low, high = (-MAX_PART_WEIGHT, MAX_PART_WEIGHT) if op == "blend" else (0.0, MAX_WEIGHT)
    for weight in weights:
        if not low <= weight <= high:
            raise InvalidRequest(
                f"The weight {_fmt(weight)} in .{op}(...) is out of range: "
                f"use {_fmt(low)} to {_fmt(high)}."
            )
    if normalize and weights and round(sum(weights), 4) <= 0:
        raise InvalidRequest(
            f"The .blend(...) weights add up to {_fmt(sum(weights))}: "
            "they must add up to more than 0."
        )
    for target in targets:
        if not target.startswith('"'):
            continue
        content = target[1:-1].replace('\\"', '"')
        if _UNSUPPORTED.search(content):
            raise InvalidRequest(
                "compel's .swap() and withLora() are not supported here: take them out."
            )
        _check_weights(_pieces(content, compel_only=True)[0])


def _fmt(weight: float) -> str:
    text = f"{weight:.4f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _snippet(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 40 else text[:39] + "…"
