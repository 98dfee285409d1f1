"""Turn jobs and results into what Discord shows: message text, files and buttons.

Pure functions of plain data, so they are unit-testable without a Discord connection.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import discord

from bot.buttons import JobButton
from bot.i18n import t
from lifecycle.storage import Job

MESSAGE_LIMIT = 2000
PROMPT_SHOWN = 600


@dataclass(frozen=True)
class ResultFacts:
    """What the result message says about a finished generation."""

    job_id: int
    requester_id: int
    prompt: str
    interpreted_prompt: str | None
    negative_prompt: str
    seeds: tuple[int, ...]
    width: int
    height: int
    steps: int
    guidance: float
    seconds: float | None
    notes: tuple[str, ...] = ()
    kind: str = "imagine"
    parent_index: int | None = None
    locale: str | None = None


def facts_for(job: Job, seconds: float | None = None, notes: Sequence[str] = ()) -> ResultFacts:
    """What the result message says about ``job``."""
    return ResultFacts(
        job_id=job.id,
        requester_id=job.requester_id,
        prompt=job.prompt,
        interpreted_prompt=job.interpreted_prompt,
        negative_prompt=job.negative_prompt or "",
        seeds=tuple(job.seeds or ()),
        width=job.width,
        height=job.height,
        steps=job.steps,
        guidance=job.guidance,
        seconds=seconds,
        notes=tuple(notes),
        kind=job.kind,
        parent_index=job.parent_index,
        locale=job.locale,
    )


def shorten(text: str, limit: int) -> str:
    """Cut ``text`` to at most ``limit`` characters, marking the cut with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _escape(text: str) -> str:
    return discord.utils.escape_mentions(discord.utils.escape_markdown(text))


def escape_user_text(text: str) -> str:
    """Make text that may echo user input safe to post: no @everyone/@here or user/role
    mention survives as a mention, even where allowed_mentions would let it ping."""
    return discord.utils.escape_mentions(text)


def _in_code(text: str) -> str:
    # A prompt with backticks must not close the code block it is shown in.
    return escape_user_text(text.replace("`", "ˋ"))


def result_text(facts: ResultFacts, *, mention: bool = False) -> str:
    """The text posted with the images: prompt, seeds, size, steps, time and who asked."""
    lines = [f"**{_escape(shorten(facts.prompt, PROMPT_SHOWN))}**"]
    if facts.interpreted_prompt and facts.interpreted_prompt != facts.prompt:
        shown = f"*{_escape(shorten(facts.interpreted_prompt, 400))}*"
        lines.append(t("interpreted_as", facts.locale, text=shown))
        lines.append(f"-# {t('translation_bypass_hint', facts.locale)}")
    if facts.negative_prompt:
        lines.append(f"Negative: {_escape(shorten(facts.negative_prompt, 200))}")
    seeds = " · ".join(str(s) for s in facts.seeds)
    label = "Seed" if len(facts.seeds) == 1 else "Seeds"
    parts = [
        f"{label} {seeds}",
        f"{facts.width}×{facts.height}",
        f"{facts.steps} steps",
        f"guidance {facts.guidance:g}",
    ]
    if facts.seconds is not None:
        parts.append(f"{facts.seconds:.1f} s")
    parts.append(f"asked by <@{facts.requester_id}>")
    if facts.kind == "upscale" and facts.parent_index:
        parts.append(f"image {facts.parent_index} of job {facts.job_id}")
    lines.append(" · ".join(parts) + f" · job {facts.job_id}")
    lines.extend(f"-# {_escape(note)}" for note in facts.notes)
    text = "\n".join(lines)
    if mention:
        text = f"<@{facts.requester_id}> your images are ready.\n" + text
    return text[:MESSAGE_LIMIT]


def info_text(facts: ResultFacts, *, aspect_hint: str | None = None) -> str:
    """Every parameter needed to reproduce a job, as a copyable block."""
    lines = [
        f"Job {facts.job_id} ({facts.kind}) by <@{facts.requester_id}>",
        "```",
        f"prompt:          {_in_code(facts.prompt)}",
    ]
    if facts.interpreted_prompt and facts.interpreted_prompt != facts.prompt:
        lines.append(f"interpreted as:  {_in_code(facts.interpreted_prompt)}")
    lines += [
        f"negative prompt: {_in_code(facts.negative_prompt) or '-'}",
        f"seeds:           {', '.join(str(s) for s in facts.seeds) or '-'}",
        f"size:            {facts.width}x{facts.height}",
        f"steps:           {facts.steps}",
        f"guidance:        {facts.guidance:g}",
        "```",
    ]
    if facts.seeds:
        lines.append(
            f"Reproduce image 1: `/imagine prompt:{_in_code(shorten(facts.prompt, 300))} "
            f"seed:{facts.seeds[0]}`" + (f" aspect_ratio:{aspect_hint}" if aspect_hint else "")
        )
    return "\n".join(lines)[:MESSAGE_LIMIT]


def result_view(job_id: int, count: int, withheld: Sequence[int] = ()) -> discord.ui.View:
    """Persistent buttons for a result: U1-U4, re-roll, V1-V4, share, delete.

    Image numbers follow the seeds: a withheld image keeps its number and just has no U/V.
    """
    view = discord.ui.View(timeout=None)
    if count > 1:
        shown = [i for i in range(1, count + 1) if i not in withheld]
        for i in shown:
            view.add_item(JobButton("upscale", job_id, i, row=0))
        view.add_item(JobButton("reroll", job_id, row=0))
        for i in shown:
            view.add_item(JobButton("vary", job_id, i, row=1))
        view.add_item(JobButton("share", job_id, row=1))
        view.add_item(JobButton("delete", job_id, row=2))
    else:
        view.add_item(JobButton("vary", job_id, 1, row=0))
        view.add_item(JobButton("reroll", job_id, row=0))
        view.add_item(JobButton("share", job_id, row=0))
        view.add_item(JobButton("delete", job_id, row=0))
    return view


def cancel_view(job_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(JobButton("cancel", job_id))
    return view


def queued_text(position: int, eta_seconds: float | None, locale: str | None = None) -> str:
    eta = format_eta(eta_seconds or 0)
    return "⏳ " + t("queued", locale, position=position, eta=eta)


def waiting_text(position: int, locale: str | None = None) -> str:
    """A queued job's status while no GPU worker is online (Redis mode)."""
    return "⏳ " + t("waiting_for_worker", locale, position=position)


def progress_text(step: int, total: int, locale: str | None = None) -> str:
    return "🎨 " + t("step_progress", locale, step=step, total=total)


def format_eta(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{max(seconds, 1)} s"
    return f"{seconds // 60} min {seconds % 60:02d} s"


def message_link(guild_id: int | None, channel_id: int, message_id: int) -> str:
    return f"https://discord.com/channels/{guild_id or '@me'}/{channel_id}/{message_id}"


def image_files(
    blobs: Sequence[tuple[str, bytes]], spoiler: Sequence[bool] | None = None
) -> list[discord.File]:
    """discord.File objects from (filename, bytes) pairs, optionally marked as spoilers."""
    files = []
    for i, (name, data) in enumerate(blobs):
        files.append(
            discord.File(io.BytesIO(data), filename=name, spoiler=bool(spoiler and spoiler[i]))
        )
    return files
