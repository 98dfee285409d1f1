"""A server's gallery page as HTML: shared sets as cards, rendered from stored rows.

Pure functions of plain data. Everything users typed goes through Jinja2's autoescaping; the
page loads nothing from elsewhere (no fonts, scripts or styles from other hosts).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import jinja2

from engine.requests import aspect_ratio_of
from gallery.thumbnails import THUMBNAIL_SIZE
from lifecycle.storage import GalleryEntry, Job

#: Cards per page: a few screens on a phone, one query of 24 rows.
PER_PAGE = 24
UNKNOWN_NAME = "a member"
#: Kinds whose pictures come from the prompt and seed alone, so ``/imagine`` makes them again.
#: A variation or an upscale starts from another picture: its line only reuses the prompt.
REPRODUCIBLE_KINDS = frozenset({"imagine", "reroll", "reply", "remix"})

_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("gallery", "templates"),
    autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True)
class Picture:
    """One image of a card: its thumbnail and full-size addresses (relative to the page)."""

    index: int
    seed: int
    thumbnail: str
    full: str
    width: int
    height: int


@dataclass(frozen=True)
class Card:
    """What the page shows of one shared set (or one shared image of a set)."""

    key: str
    prompt: str
    interpreted_prompt: str | None
    negative_prompt: str
    seeds: str
    size: str
    made_by: str
    shared_by: str
    shared_on: str
    discord_url: str
    command: str
    reproduces: bool  # the command makes these very pictures (not a variation or upscale)
    pictures: tuple[Picture, ...]
    hidden: int  # images of the set not shown (flagged by the safety filter)


def imagine_command(job: Job, seed: int) -> str:
    """The ``/imagine`` line that makes ``job``'s images again, starting at ``seed``."""
    parts = [f"/imagine prompt:{' '.join(job.prompt.split())}"]
    if job.negative_prompt:
        parts.append(f"negative_prompt:{' '.join(job.negative_prompt.split())}")
    parts.append(f"seed:{seed}")
    ratio = aspect_ratio_of(job.width, job.height)
    if ratio != "1:1":
        parts.append(f"aspect_ratio:{ratio}")
    if job.raw:
        parts.append("raw:True")
    if job.tile:
        parts.append("tile:True")
    if job.style:
        parts.append(f"style:{job.style}")
    return " ".join(parts)


def shown_indexes(entry: GalleryEntry) -> tuple[list[int], int]:
    """The 1-based images a card shows, and how many it hides (flagged by the safety filter:
    a spoiler in Discord, which a web page cannot offer)."""
    job = entry.job
    wanted = (
        [entry.share.image_index]
        if entry.share.image_index
        else [i for i in range(1, len(job.seeds) + 1) if i not in job.withheld]
    )
    shown = [i for i in wanted if i not in job.flagged and 1 <= i <= len(job.seeds)]
    return shown, len(wanted) - len(shown)


def picture_name(job_id: int, index: int) -> str:
    """The file part of a picture's addresses: ``<job>-<index>``."""
    return f"{job_id}-{index}"


def card_for(entry: GalleryEntry, *, discord_url: str) -> Card:
    """The card of one gallery entry; ``discord_url`` is the showcase post's link."""
    job, share = entry.job, entry.share
    indexes, hidden = shown_indexes(entry)
    scale = THUMBNAIL_SIZE / max(job.width, job.height, 1)
    width, height = (
        (job.width, job.height)
        if scale >= 1
        else (max(1, round(job.width * scale)), max(1, round(job.height * scale)))
    )
    pictures = tuple(
        Picture(
            index=i,
            seed=job.seeds[i - 1],
            thumbnail=f"thumb/{picture_name(job.id, i)}.webp",
            full=f"image/{picture_name(job.id, i)}",
            width=width,
            height=height,
        )
        for i in indexes
    )
    seeds = [job.seeds[i - 1] for i in indexes] if share.image_index else list(job.seeds)
    first_seed = job.seeds[share.image_index - 1] if share.image_index else job.seed
    return Card(
        key=f"{job.id}-{share.image_index}",
        prompt=job.prompt,
        interpreted_prompt=(
            job.interpreted_prompt if job.interpreted_prompt not in (None, job.prompt) else None
        ),
        negative_prompt=job.negative_prompt,
        seeds=", ".join(str(s) for s in seeds),
        size=f"{job.width}×{job.height}",
        made_by=job.requester_name or UNKNOWN_NAME,
        shared_by=share.shared_by_name or UNKNOWN_NAME,
        shared_on=time.strftime("%Y-%m-%d", time.gmtime(share.shared_at)),
        discord_url=discord_url,
        command=imagine_command(job, first_seed),
        reproduces=job.kind in REPRODUCIBLE_KINDS and not job.uploaded,
        pictures=pictures,
        hidden=hidden,
    )


def render_page(cards: Sequence[Card], *, page: int, pages: int, total: int) -> str:
    """The whole HTML page: ``cards`` of page ``page`` (1-based) of ``pages``."""
    return _TEMPLATES.get_template("gallery.html").render(
        cards=cards, page=page, pages=pages, total=total
    )


def page_count(total: int, per_page: int = PER_PAGE) -> int:
    """Pages needed for ``total`` entries (an empty gallery still has its one page)."""
    return max(1, -(-total // per_page))
