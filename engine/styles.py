"""The operator's curated styles (``IMAGINE_STYLES``, a TOML file): what each one is and who may
pick it.

One table per style::

    [ink]                           # the name users pick
    lora = "path/or/hub-id"         # hub id, folder or .safetensors
    weight = 0.8                    # adapter weight next to the LCM-LoRA (default 1.0)
    trigger = "ink wash painting"   # words put before the prompt (optional)
    negative = "color"              # added to the negative prompt (optional)
    nsfw_only = false               # true: offered only in age-restricted channels

Pure Python (no torch): the bot reads the same file for autocomplete and checks, the engine for
the LoRAs (``engine/style_adapters.py``). An entry that cannot be used (no ``lora``, a weight out
of range, an unknown key, a trigger whose weighting cannot be read) is logged once and left
out; a file that cannot be read leaves no styles. Neither stops the bot.
"""

from __future__ import annotations

import logging
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from engine.errors import InvalidRequest
from engine.prompt_syntax import to_compel

log = logging.getLogger(__name__)

MAX_SUGGESTIONS = 25
"""Discord shows at most 25 autocomplete choices per answer."""
MAX_NAME_CHARS = 32
MAX_WEIGHT = 2.0
_NAME = re.compile(rf"^\w[\w.-]{{0,{MAX_NAME_CHARS - 1}}}$")  # one word: ``--style ink``
_KEYS = {"lora", "weight", "trigger", "negative", "nsfw_only"}
NONE_WORDS = frozenset({"none", "off"})
"""What a user types for "no style" (``--style none``): no style may be called that."""


@dataclass(frozen=True)
class Style:
    """One style: a LoRA, its adapter weight, and the words it adds."""

    name: str
    lora: str
    weight: float = 1.0
    trigger: str = ""
    negative: str = ""
    nsfw_only: bool = False

    @property
    def key(self) -> str:
        """The name as looked up (case-insensitive)."""
        return style_key(self.name)


def style_key(name: str) -> str:
    """How a style name is compared: case and surrounding spaces do not matter."""
    return " ".join(name.split()).casefold()


def styled_texts(style: Style | None, prompt: str, negative: str) -> tuple[str, str]:
    """The prompt and negative prompt the model gets with ``style``: its trigger words first
    (they name what the LoRA was trained on), its negative after the user's."""
    if style is None:
        return prompt, negative
    if style.trigger:
        prompt = f"{style.trigger}, {prompt}" if prompt else style.trigger
    if style.negative:
        negative = f"{negative}, {style.negative}" if negative else style.negative
    return prompt, negative


class StyleCatalog:
    """The styles that can be picked, in the file's order, found by name."""

    def __init__(self, styles: Iterable[Style] = ()):
        self._styles: dict[str, Style] = {}
        for style in styles:
            self._styles.setdefault(style.key, style)

    def __len__(self) -> int:
        return len(self._styles)

    def __iter__(self):
        return iter(self._styles.values())

    def get(self, name: str | None) -> Style | None:
        """The style called ``name`` (any case), or None."""
        return self._styles.get(style_key(name or ""))

    def only(self, keys: Iterable[str]) -> StyleCatalog:
        """The styles whose keys are in ``keys`` (e.g. those whose LoRA loaded)."""
        wanted = set(keys)
        return StyleCatalog(s for s in self if s.key in wanted)

    def offered(self, allowed: Iterable[str] = (), *, nsfw: bool) -> list[Style]:
        """The styles a channel offers: those its server allows (``allowed`` empty: all), and
        ``nsfw_only`` ones only in age-restricted channels."""
        keys = {style_key(a) for a in allowed}
        return [s for s in self if (not keys or s.key in keys) and (nsfw or not s.nsfw_only)]

    def suggest(self, typed: str, allowed: Iterable[str] = (), *, nsfw: bool) -> list[Style]:
        """Autocomplete: offered styles whose name contains what was typed (names that start
        with it first), at most ``MAX_SUGGESTIONS``."""
        typed = style_key(typed)
        offered = [s for s in self.offered(allowed, nsfw=nsfw) if typed in s.key]
        offered.sort(key=lambda s: not s.key.startswith(typed))  # stable: file order otherwise
        return offered[:MAX_SUGGESTIONS]

    def choose(self, name: str, allowed: Iterable[str] = (), *, nsfw: bool) -> Style:
        """The style a user submitted, checked: autocomplete is only a suggestion.

        Raises:
            InvalidRequest: no such style, this server does not offer it, or it is for
                age-restricted channels only.
        """
        style = self.get(name)
        offered = self.offered(allowed, nsfw=True)
        if style is None or style not in offered:
            names = ", ".join(s.name for s in self.offered(allowed, nsfw=nsfw)[:10])
            hint = f" Pick one of: {names}." if names else " This server offers no styles."
            shown = " ".join(name.split())[:MAX_NAME_CHARS]
            raise InvalidRequest(f"There is no style '{shown}' here.{hint}")
        if style.nsfw_only and not nsfw:
            raise InvalidRequest(
                f"The style '{style.name}' is only offered in age-restricted channels."
            )
        return style


def parse_styles(text: str, source: str = "IMAGINE_STYLES") -> StyleCatalog:
    """The usable styles of a TOML text; every entry left out is logged once, with why.

    Raises:
        tomllib.TOMLDecodeError: the text is not TOML at all.
    """
    data = tomllib.loads(text)
    styles = []
    seen: set[str] = set()
    for name, entry in data.items():
        try:
            style = _style(name, entry)
            if style.key in seen:
                raise ValueError("another style already has this name (names ignore case)")
        except ValueError as exc:
            log.warning("%s: style '%s' left out: %s", source, name, exc)
            continue
        seen.add(style.key)
        styles.append(style)
    return StyleCatalog(styles)


def load_styles(path: str | Path | None) -> StyleCatalog:
    """The styles in the file at ``path`` (empty: none configured). A file that cannot be read
    is logged and gives no styles: the bot serves without them."""
    if not path:
        return StyleCatalog()
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
        catalog = parse_styles(text, source=f"IMAGINE_STYLES ({path})")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        log.error("IMAGINE_STYLES: cannot read %s (%s); serving without styles", path, exc)
        return StyleCatalog()
    log.info("IMAGINE_STYLES: %d style(s): %s", len(catalog), ", ".join(s.name for s in catalog))
    return catalog


def _style(name: str, entry: object) -> Style:
    """One table of the file as a Style. Raises ValueError saying what is wrong."""
    if not isinstance(entry, dict):
        raise ValueError("it is not a table ([name] followed by lora = ...)")
    if not _NAME.match(name):
        raise ValueError(
            f"a name is one word of 1 to {MAX_NAME_CHARS} letters, digits, '-', '_' or '.'"
        )
    if style_key(name) in NONE_WORDS:
        raise ValueError(f"'{name}' is reserved: it means no style")
    unknown = sorted(set(entry) - _KEYS)
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_KEYS))})")
    lora = entry.get("lora")
    if not isinstance(lora, str) or not lora.strip():
        raise ValueError("'lora' (a hub id, folder or .safetensors file) is missing")
    weight = entry.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float):
        raise ValueError("'weight' must be a number")
    if not 0 < weight <= MAX_WEIGHT:
        raise ValueError(f"'weight' must be above 0 and at most {MAX_WEIGHT:g}")
    texts = {}
    for key in ("trigger", "negative"):
        value = entry.get(key, "")
        if not isinstance(value, str):
            raise ValueError(f"'{key}' must be text")
        value = " ".join(value.split())
        if value:
            try:
                to_compel(value)
            except InvalidRequest as exc:
                raise ValueError(f"'{key}': {exc.user_message}") from None
        texts[key] = value
    nsfw_only = entry.get("nsfw_only", False)
    if not isinstance(nsfw_only, bool):
        raise ValueError("'nsfw_only' must be true or false")
    return Style(
        name=name.strip(),
        lora=lora.strip(),
        weight=float(weight),
        trigger=texts["trigger"],
        negative=texts["negative"],
        nsfw_only=nsfw_only,
    )
