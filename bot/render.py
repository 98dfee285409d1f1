"""Turn jobs and results into what Discord shows: message text, files and buttons.

Pure functions of plain data, so they are unit-testable without a Discord connection.
"""

from __future__ import annotations

import io
from collections.abc import Sequence, Set

import discord

from bot.buttons import JobButton
from bot.i18n import t
from engine.errors import InvalidRequest
from engine.prompt_syntax import encoded_prompt
from engine.requests import UPSCALE_FACTOR, VARY_STRONG, VARY_SUBTLE
from gallery.pages import imagine_command
from lifecycle.storage import Job

MESSAGE_LIMIT = 2000
PROMPT_SHOWN = 600


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


def imagine_line(job: Job, seed: int) -> str:
    """The copyable ``/imagine`` line that makes ``job``'s images again from ``seed``, in code."""
    return f"`{_in_code(imagine_command(job, seed))}`"


def vary_label(strength: float | None) -> str:
    """What a variation of ``strength`` is called on its button."""
    if strength is not None and abs(strength - VARY_SUBTLE) < 1e-6:
        return "Vary (Subtle)"
    if strength is not None and abs(strength - VARY_STRONG) < 1e-6:
        return "Vary (Strong)"
    return f"Variation (strength {strength or 0:g})"


def _job_ref(job_id: int, source: Job | None) -> str:
    """``job N``, as a link to its result message when ``source`` is that job and posted
    (``<...>``: Discord shows no preview card for it)."""
    if source is None or source.id != job_id or source.result_message_id is None:
        return f"job {job_id}"
    link = message_link(source.guild_id, source.channel_id, source.result_message_id)
    return f"[job {job_id}](<{link}>)"


# How a job made from another one (not from one of its pictures) says so.
_MADE_FROM = {"reroll": "re-roll of {job}", "reply": "reply to {job}", "remix": "remix of {job}"}
# What each kind is called in /info's chain of sources.
_KIND_NAMES = {
    "imagine": "/imagine",
    "reroll": "re-roll",
    "variation": "variation",
    "upscale": "upscale",
    "single": "image alone",
    "zoom": "Zoom Out",
    "reply": "reply",
    "remix": "remix",
    "describe": "/describe",
}


def derivation(job: Job, source: Job | None = None) -> str | None:
    """Where ``job``'s pictures came from (None: from the prompt alone, a first /imagine).

    ``source``: the job it was made from; its number then links to its result message."""
    if job.kind == "describe":
        return "prompts for an uploaded picture (/describe)"
    if job.uploaded:
        return f"from an uploaded picture (strength {job.strength or 0:g})"
    if job.parent_job_id is None:
        return None
    parent = _job_ref(job.parent_job_id, source)
    if job.parent_index is None:
        made = _MADE_FROM.get(job.kind)
        return made.format(job=parent) if made else None
    picture = f"image {job.parent_index} of {parent}"
    if job.kind == "single":
        return picture
    if job.kind == "upscale":
        return f"upscaled {UPSCALE_FACTOR}× from {picture}"
    if job.kind == "zoom":
        return f"Zoom Out {job.zoom or 0:g}× of {picture}"
    if job.kind == "variation":
        return f"{vary_label(job.strength)} of {picture}"
    return None


def result_text(
    job: Job,
    *,
    seconds: float | None = None,
    notes: Sequence[str] = (),
    mention: bool = False,
    source: Job | None = None,
) -> str:
    """The text posted with ``job``'s images: prompt, seeds, size, steps, time (``seconds`` of
    GPU work, when known), who asked, where it came from (linked to ``source``'s message, the
    job it was made from) and ``notes``."""
    lines = [f"**{_escape(shorten(job.prompt, PROMPT_SHOWN))}**"]
    if job.interpreted_prompt and job.interpreted_prompt != job.prompt:
        shown = f"*{_escape(shorten(job.interpreted_prompt, 400))}*"
        lines.append(t("interpreted_as", job.locale, text=shown))
        lines.append(f"-# {t('translation_bypass_hint', job.locale)}")
    if job.negative_prompt:
        lines.append(f"Negative: {_escape(shorten(job.negative_prompt, 200))}")
    seeds = tuple(job.seeds or ())
    label = "Seed" if len(seeds) == 1 else "Seeds"
    parts = [
        f"{label} {' · '.join(str(s) for s in seeds)}",
        f"{job.width}×{job.height}" + (" tile" if job.tile else ""),
        *([f"style {_escape(job.style)}"] if job.style else []),
        f"{job.steps} steps",
        f"guidance {job.guidance:g}",
    ]
    if seconds is not None:
        parts.append(f"{seconds:.1f} s")
    parts.append(f"asked by <@{job.requester_id}>")
    made_from = derivation(job, source)
    if made_from:
        parts.append(made_from)
    lines.append(" · ".join(parts) + f" · job {job.id}")
    lines.extend(f"-# {_escape(note)}" for note in notes)
    text = "\n".join(lines)
    if mention:
        text = f"<@{job.requester_id}> your images are ready.\n" + text
    return text[:MESSAGE_LIMIT]


def _encoded(prompt: str) -> str | None:
    """What the text encoders read for ``prompt`` when its weighting syntax changes it (compel's
    syntax), else None. A prompt stored by an older release may no longer parse: then None."""
    try:
        return encoded_prompt(prompt) if prompt else None
    except InvalidRequest:
        return None


def info_text(job: Job, chain: Sequence[Job] = ()) -> str:
    """Every parameter needed to reproduce ``job``, as a copyable block.

    ``chain``: the jobs it was made from, nearest first, back to the first /imagine (each
    linked to its result message)."""
    if job.kind == "describe":
        return describe_info_text(job)
    seeds = tuple(job.seeds or ())
    lines = [
        f"Job {job.id} ({job.kind}) by <@{job.requester_id}>",
        "```",
        f"prompt:          {_in_code(job.prompt)}",
    ]
    if job.interpreted_prompt and job.interpreted_prompt != job.prompt:
        lines.append(f"interpreted as:  {_in_code(job.interpreted_prompt)}")
    encoded = _encoded(job.model_prompt)
    if encoded:
        lines.append(f"encoded as:      {_in_code(encoded)}")
    lines.append(f"negative prompt: {_in_code(job.negative_prompt or '') or '-'}")
    encoded = _encoded(job.negative_prompt or "")
    if encoded:
        lines.append(f"negative as:     {_in_code(encoded)}")
    lines += [
        f"seeds:           {', '.join(str(s) for s in seeds) or '-'}",
        f"size:            {job.width}x{job.height}",
        f"steps:           {job.steps}",
        f"guidance:        {job.guidance:g}",
    ]
    source = derivation(job)
    if source:
        lines.append(f"made as:         {source}")
    if (job.derived or job.uploaded) and job.strength is not None:
        lines.append(f"strength:        {job.strength:g}")
    if job.tile:
        lines.append("tile:            yes (seamless texture)")
    if job.style:
        lines.append(f"style:           {_in_code(job.style)}")
    lines.append("```")
    if seeds and (job.derived or job.uploaded):
        # The picture it started from is part of the recipe: a reply to the result runs the
        # same tool on the same picture, and --seed makes these very pixels again.
        picture = (
            "the uploaded picture"
            if job.uploaded
            else f"image {job.parent_index} of job {job.parent_job_id}"
        )
        lines.append(
            f"Reproduce image 1: reply to this result with `--seed {seeds[0]}` (while "
            f"{picture} is stored)"
        )
    elif seeds:
        lines.append(f"Reproduce image 1: {imagine_line(job, seeds[0])}")
    if chain:
        steps = [f"{_job_ref(j.id, j)} ({_KIND_NAMES.get(j.kind, j.kind)})" for j in chain]
        lines.append("Made from: " + " ← ".join(steps))
    return "\n".join(lines)[:MESSAGE_LIMIT]


def result_view(job_id: int, count: int, withheld: Sequence[int] = ()) -> discord.ui.View:
    """Persistent buttons for a result.

    A set: U1-U4 (upscale 2x) and re-roll, V1-V4 (Vary (Strong)) and share, S1-S4 (Vary
    (Subtle)) and delete. One image: Vary (Subtle), Vary (Strong), Zoom Out 2x and 1.5x, then
    re-roll, share, delete. Image numbers follow the seeds: a withheld image keeps its number
    and just has no buttons.
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
        for i in shown:
            view.add_item(JobButton("subtle", job_id, i, row=2))
        view.add_item(JobButton("delete", job_id, row=2))
    else:
        if 1 not in withheld:
            view.add_item(JobButton("subtle", job_id, 1, row=0, label=vary_label(VARY_SUBTLE)))
            view.add_item(JobButton("vary", job_id, 1, row=0, label=vary_label(VARY_STRONG)))
            view.add_item(JobButton("zoom2", job_id, 1, row=0))
            view.add_item(JobButton("zoom15", job_id, 1, row=0))
        view.add_item(JobButton("reroll", job_id, row=1))
        view.add_item(JobButton("share", job_id, row=1))
        view.add_item(JobButton("delete", job_id, row=1))
    return view


_NUMBERS = ("1️⃣", "2️⃣", "3️⃣", "4️⃣", "5️⃣", "6️⃣", "7️⃣", "8️⃣", "9️⃣")


def describe_text(job: Job, *, mention: bool = False, hidden: Set[int] = frozenset()) -> str:
    """What a 'describe' job posts: its proposed prompts, numbered like their buttons;
    ``hidden``: the numbers of those the blocklist refuses (not shown)."""
    locale = job.locale
    head = f"🔎 **{t('describe_title', locale)}**"
    if mention:
        head += f" <@{job.requester_id}>"
    lines = [head]
    for i, (number, caption) in enumerate(zip(_NUMBERS, job.captions, strict=False), start=1):
        shown = (
            f"*{t('describe_hidden', locale)}*"
            if i in hidden
            else _escape(shorten(caption, PROMPT_SHOWN))
        )
        lines.append(f"{number} {shown}")
    lines.append(f"-# {t('describe_hint', locale)} · job {job.id}")
    return "\n".join(lines)[:MESSAGE_LIMIT]


def describe_view(job_id: int, count: int, hidden: Set[int] = frozenset()) -> discord.ui.View:
    """Buttons of a 'describe' result: 1-4 run /imagine with that prompt, 🖼 1-4 the same
    with the picture as the image prompt (none for a ``hidden`` prompt); 🗑 deletes the
    message and the stored picture."""
    view = discord.ui.View(timeout=None)
    shown = [i for i in range(1, count + 1) if i not in hidden]
    for i in shown:
        view.add_item(JobButton("prompt", job_id, i, row=0, label=str(i)))
    for i in shown:
        view.add_item(JobButton("promptpic", job_id, i, row=1, label=str(i)))
    view.add_item(JobButton("delete", job_id, row=1))
    return view


def describe_info_text(job: Job) -> str:
    """/info of a 'describe' job: who asked and the prompts it proposed."""
    lines = [f"Job {job.id} (describe) by <@{job.requester_id}>", "```"]
    for number, caption in enumerate(job.captions, start=1):
        lines.append(f"prompt {number}: {_in_code(caption)}")
    if not job.captions:
        lines.append(f"status: {job.status}")
    lines += ["```", "-# from an uploaded picture (/describe)"]
    return "\n".join(lines)[:MESSAGE_LIMIT]


def showcase_view(job_id: int) -> discord.ui.View:
    """Buttons of a showcase post: Remix (anyone: their own images from this prompt) and 🗑
    (the set's author or a moderator: takes the post down, and off the gallery)."""
    view = discord.ui.View(timeout=None)
    view.add_item(JobButton("remix", job_id, row=0))
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
