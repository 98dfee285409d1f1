"""A user's /prefer presets applied to a prompt they typed: options, suffix and defaults.

Midjourney's ``/prefer suffix`` and ``/prefer option set``: ``--name`` anywhere in a new prompt
becomes the option's value, the suffix is appended, and the negative prompt and aspect ratio
default to the user's own. What a preset added is listed, so the result can say so; the job
stores the expanded prompt, which is what /info shows and what re-rolls and replies keep.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.replies import FLAGS
from lifecycle.storage import Presets

OPTION_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
"""What ``/prefer option set name:`` takes: a short lowercase word (``--name`` in prompts)."""
RESERVED_OPTIONS = frozenset({*FLAGS, "repeat"})
"""Reply flags and /imagine's ``--repeat``: an option of one of these names would clash."""
MAX_OPTIONS = 25
MAX_PRESET_CHARS = 1000


@dataclass(frozen=True)
class Applied:
    """A prompt with a user's presets applied, and what they added (for the result's note)."""

    prompt: str
    negative_prompt: str
    aspect_ratio: str | None
    added: tuple[str, ...] = ()


def option_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be an option's name (None: it can)."""
    if not OPTION_NAME.fullmatch(name):
        return (
            "An option name is one lowercase word of letters, digits, - or _ (at most 32), "
            "starting with a letter: `/prefer option set name:film value:kodak portra 400`."
        )
    if name in RESERVED_OPTIONS:
        return f"`--{name}` is a reply flag already; choose another name."
    return None


def _option_pattern(name: str) -> re.Pattern[str]:
    # ``--name`` standing alone: not inside a longer word or flag (``--films``, ``x--film``).
    return re.compile(rf"(?<!\S)--{re.escape(name)}(?![\w-])")


def apply_presets(
    prompt: str, negative_prompt: str, aspect_ratio: str | None, presets: Presets
) -> Applied:
    """``prompt`` with ``presets``: the suffix appended, then every ``--name`` of an option
    replaced by its value (the suffix may use options too), and the negative prompt and
    aspect ratio filled in where the user gave none."""
    added: list[str] = []
    if presets.suffix:
        prompt = f"{prompt.rstrip().rstrip(',')}, {presets.suffix}"
        added.append(f"suffix “{presets.suffix}”")
    for name, value in presets.options:
        pattern = _option_pattern(name)
        if pattern.search(prompt):
            prompt = pattern.sub(lambda _match, value=value: value, prompt)
            added.append(f"--{name} → “{value}”")
    prompt = prompt.strip()
    if not negative_prompt and presets.negative:
        negative_prompt = presets.negative
        added.append(f"negative prompt “{presets.negative}”")
    if aspect_ratio is None and presets.aspect_ratio:
        aspect_ratio = presets.aspect_ratio
        added.append(f"aspect ratio {presets.aspect_ratio}")
    return Applied(prompt, negative_prompt, aspect_ratio, tuple(added))


def describe(presets: Presets) -> str:
    """``/prefer list``: every preset of the user, as they set them."""
    if presets.empty:
        return (
            "You have no presets. `/prefer suffix`, `/prefer option set`, `/prefer negative` "
            "and `/prefer aspect_ratio` set them."
        )

    def shown(text: str) -> str:
        return "`" + text.replace("`", "'") + "`"  # a backtick would end the code span

    lines = ["Your presets (only you see them; they apply in every server):"]
    if presets.suffix:
        lines.append(f"- suffix: {shown(presets.suffix)}")
    if presets.negative:
        lines.append(f"- negative prompt: {shown(presets.negative)}")
    if presets.aspect_ratio:
        lines.append(f"- aspect ratio: {shown(presets.aspect_ratio)}")
    lines.extend(f"- `--{name}` → {shown(value)}" for name, value in presets.options)
    return "\n".join(lines)
