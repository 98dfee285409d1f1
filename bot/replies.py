"""Reading a user's reply to a result message: a new prompt, flags, or a plain re-roll."""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.requests import MAX_STRENGTH, MIN_STRENGTH
from engine.styles import NONE_WORDS

REROLL_WORDS = {"", "🔄", "again", "reroll", "re-roll", "more", "再来", "再來", "重来", "重來"}
_MENTION = re.compile(r"^\s*<@!?(\d+)>\s*")
FLAGS = ("seed", "no", "ar", "aspect", "raw", "strength", "tile", "style")
"""The ``--flags`` a reply may carry."""
_FLAG_SPLIT = re.compile(rf"\s--({'|'.join(FLAGS)})\b=?")


@dataclass(frozen=True)
class ReplyCommand:
    """What a reply asks for. ``prompt`` None means: re-roll the replied job."""

    prompt: str | None
    seed: int | None = None
    negative_prompt: str | None = None
    aspect_ratio: str | None = None
    raw: bool = False
    bad_seed: str | None = None
    strength: float | None = None  # with a picture attached: how far from it (0.1-1.0)
    bad_strength: str | None = None
    tile: bool = False  # seamless texture
    style: str | None = None  # ``--style NAME``: that style; "" (``--style none``): no style


def is_blank(text: str) -> bool:
    """True when ``text`` has nothing printable in it (spaces, zero-width and other format or
    control characters only): such a prompt is an empty prompt."""
    return not any(ch.isprintable() and not ch.isspace() for ch in text)


def strip_bot_mention(content: str, bot_id: int) -> str:
    """Drop a leading mention of the bot (``<@id>`` or ``<@!id>``); other mentions stay."""
    match = _MENTION.match(content)
    if match and int(match.group(1)) == bot_id:
        return content[match.end() :]
    return content


def parse_reply(content: str) -> ReplyCommand:
    """Parse ``a red fox --seed 42 --ar 16:9 --raw --no blurry, text`` style replies.

    ``--seed``, ``--ar``, ``--strength``, ``--style`` take one word (``--style none``: no
    style); ``--raw`` and ``--tile`` take none; ``--no`` takes everything up to the next flag.
    What is left is the new prompt. An empty remainder (or a re-roll word such as ``again`` or
    ``🔄``) keeps the replied job's prompt.
    """
    chunks = _FLAG_SPLIT.split(" " + content)
    prompt_parts = [chunks[0]]
    seed: int | None = None
    bad_seed: str | None = None
    negative: str | None = None
    aspect: str | None = None
    strength: float | None = None
    bad_strength: str | None = None
    raw = False
    tile = False
    style: str | None = None
    for name, body in zip(chunks[1::2], chunks[2::2], strict=True):
        value, _, rest = body.strip().partition(" ")
        if name == "no":
            negative = body.strip()
            continue
        if name in ("raw", "tile"):
            raw = raw or name == "raw"
            tile = tile or name == "tile"
            prompt_parts.append(body)
            continue
        if name == "seed":
            if value.isdigit() and int(value) < 2**32:
                seed = int(value)
            else:
                bad_seed = value
        elif name == "style":
            style = "" if value.casefold() in NONE_WORDS else value or None
        elif name == "strength":
            strength = _strength(value)
            if strength is None:
                bad_strength = value
        else:
            aspect = value or None
        prompt_parts.append(rest)
    text = " ".join(" ".join(prompt_parts).split())
    prompt = None if is_blank(text) or text.casefold() in REROLL_WORDS else text
    return ReplyCommand(
        prompt=prompt,
        seed=seed,
        negative_prompt=negative,
        aspect_ratio=aspect,
        raw=raw,
        bad_seed=bad_seed,
        strength=strength,
        bad_strength=bad_strength,
        tile=tile,
        style=style,
    )


def _strength(value: str) -> float | None:
    """A strength from 0.1 to 1.0 written as a plain decimal, else None."""
    if not re.fullmatch(r"\d{0,2}(\.\d{1,4})?", value, re.ASCII) or value in ("", "."):
        return None
    number = float(value)
    return number if MIN_STRENGTH <= number <= MAX_STRENGTH else None
