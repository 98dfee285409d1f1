"""What users do: start a generation (command, button, reply, remix), delete, share, cancel.

Every path that makes new images goes through ``submit`` and so through the same queue.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

import discord

from bot import render
from bot.blocklist import Refusal, check_prompt
from bot.buttons import ZOOMS
from bot.errors import explain
from bot.i18n import t
from bot.presets import apply_presets
from bot.remix import RemixForm, RemixModal
from bot.replies import is_blank, parse_reply, strip_bot_mention
from bot.uploads import first_picture, read_upload
from engine import InvalidRequest, make_request
from engine.requests import (
    SEED_LIMIT,
    UPSCALE_FACTOR,
    UPSCALE_STRENGTH,
    VARY_STRONG,
    VARY_SUBTLE,
)
from engine.styles import Style
from engine.translation import needs_translation
from engine.uploads import IMAGE_PROMPT_STRENGTH
from lifecycle.service import JobRejected
from lifecycle.storage import GuildSettings, Job, NewJob

if TYPE_CHECKING:
    from bot.client import ImagineBot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Origin:
    """Who asked and where the answer goes."""

    requester_id: int
    channel_id: int
    guild_id: int | None
    locale: str | None
    nsfw_channel: bool
    interaction: discord.Interaction | None = None
    reply_to: discord.Message | None = None
    requester_name: str | None = None  # display name, for the gallery's "made by"


@dataclass(frozen=True)
class Ask:
    """What to generate, before translation and validation."""

    prompt: str
    negative_prompt: str = ""
    seed: int | None = None
    aspect_ratio: str | None = None  # None: the requester's preset, else 1:1
    raw: bool = False
    kind: str = "imagine"
    parent_id: int | None = None  # the job it re-rolls, or whose picture it starts from
    parent_index: int | None = None  # that picture's number (derived kinds)
    count: int | None = None
    interpreted_prompt: str | None = None  # reuse a stored translation (re-rolls, replies)
    size: tuple[int, int] | None = None  # keep the parent's size instead of an aspect ratio
    strength: float | None = None  # image-to-image strength (variations, upscales, uploads)
    zoom: float | None = None  # Zoom Out: how much the picture shrinks
    upload: bytes | None = None  # an image prompt's picture, fitted to ``size`` (PNG)
    from_upload: bool = False  # its pictures trace back to an upload: non-NSFW rules apply
    tile: bool = False  # seamless texture (circular padding)
    typed: bool = False  # the requester just typed the prompt: their /prefer presets apply
    group_id: int | None = None  # the first job of the set this one belongs to (permutations)
    style: str = ""  # an IMAGINE_STYLES style's name ("": none); checked in ``submit``


# Most characters of a prompt that go to the translator: ~500 Chinese characters already fill
# the longest prompt the engine encodes (MAX_CHUNKS windows of 75 tokens), and a 6000-character
# prompt would hold the one translator for every user for many seconds.
MAX_TRANSLATED_CHARS = 500


def is_age_restricted(channel: object) -> bool:
    """Whether ``channel`` is age-restricted (NSFW). DMs never are: Discord has no age gate
    for them that a bot can check. Threads inherit their parent's flag (``is_nsfw``)."""
    if isinstance(channel, discord.DMChannel | discord.GroupChannel):
        return False
    is_nsfw = getattr(channel, "is_nsfw", None)
    return bool(is_nsfw()) if callable(is_nsfw) else bool(getattr(channel, "nsfw", False))


def origin_from_interaction(interaction: discord.Interaction) -> Origin:
    nsfw = is_age_restricted(interaction.channel)
    return Origin(
        requester_id=interaction.user.id,
        channel_id=interaction.channel_id or 0,
        guild_id=interaction.guild_id,
        locale=str(interaction.locale),
        nsfw_channel=nsfw,
        interaction=interaction,
        requester_name=interaction.user.display_name,
    )


def origin_from_message(message: discord.Message) -> Origin:
    nsfw = is_age_restricted(message.channel)
    locale = str(message.guild.preferred_locale) if message.guild else None
    return Origin(
        requester_id=message.author.id,
        channel_id=message.channel.id,
        guild_id=message.guild.id if message.guild else None,
        locale=locale,
        nsfw_channel=nsfw,
        reply_to=message,
        requester_name=message.author.display_name,
    )


def _may_run_in(settings: GuildSettings, channel_id: int, kind: str) -> bool:
    """Whether a job of ``kind`` may run in ``channel_id``: where /imagine is allowed, and a
    Remix also in the showcase channel it was clicked in."""
    return settings.allows_channel(channel_id) or (
        kind == "remix" and channel_id == settings.showcase_channel_id
    )


async def guild_rules(bot: ImagineBot, origin: Origin, kind: str) -> GuildSettings | None:
    """The guild's settings; raise JobRejected when /imagine is not allowed in this channel."""
    if origin.guild_id is None:
        return None
    settings = await bot.storage.guild_settings(origin.guild_id)
    if not _may_run_in(settings, origin.channel_id, kind):
        allowed = ", ".join(f"<#{c}>" for c in settings.allowed_channel_ids)
        raise JobRejected(f"Image generation is not enabled in this channel. Try {allowed}.")
    return settings


def _check_texts(
    origin: Origin,
    settings: GuildSettings | None,
    prompts: list[str],
    negatives: list[str],
    *,
    nsfw: bool,
) -> None:
    """Raise JobRejected when the safety floor or the channel's blocklist refuses the texts.

    The floor applies everywhere; the blocklist outside age-restricted channels (DMs are
    ordinary channels and get the default list). ``nsfw``: the age-restricted rules apply.
    """
    refusal: Refusal | None = check_prompt(
        prompts,
        negatives,
        nsfw_channel=nsfw,
        extra_terms=settings.blocklist_add if settings else (),
        removed_terms=settings.blocklist_remove if settings else (),
    )
    if refusal is None:
        return
    # No job exists yet (nothing is stored for a refused prompt): log who and where, and the
    # matched rule and term for moderators, never the prompt itself.
    log.info(
        "prompt refused: rule=%s term=%r user=%s guild=%s channel=%s",
        refusal.rule,
        refusal.term,
        origin.requester_id,
        origin.guild_id,
        origin.channel_id,
    )
    key = "prompt_refused_floor" if refusal.floor else "prompt_blocked"
    raise JobRejected(t(key, origin.locale))


async def _interpret(bot: ImagineBot, ask: Ask, locale: str | None) -> tuple[str | None, list[str]]:
    """The English the model gets (None: the prompt as typed) and notes for the user."""
    if ask.interpreted_prompt is not None:
        return ask.interpreted_prompt, []
    if ask.raw or not needs_translation(ask.prompt):
        return None, []
    if not bot.translation_available:
        return None, [t("translation_unavailable", locale)]
    notes = []
    text = ask.prompt
    if len(text) > MAX_TRANSLATED_CHARS:
        text = text[:MAX_TRANSLATED_CHARS]
        notes.append(t("translation_cut", locale, limit=MAX_TRANSLATED_CHARS))
    return await bot.interpret(text), notes


async def _with_presets(bot: ImagineBot, origin: Origin, ask: Ask) -> tuple[Ask, list[str]]:
    """``ask`` with the requester's own presets applied when they just typed its prompt (a
    re-roll keeps the prompt its job stored, presets and all), and the note saying what they
    added. Another user's presets never apply: they are looked up by the requester."""
    if not ask.typed:
        return ask, []
    presets = await bot.storage.presets(origin.requester_id)
    if presets.empty:
        return ask, []
    applied = apply_presets(ask.prompt, ask.negative_prompt, ask.aspect_ratio, presets)
    ask = dataclasses.replace(
        ask,
        prompt=applied.prompt,
        negative_prompt=applied.negative_prompt,
        aspect_ratio=applied.aspect_ratio,
        typed=False,
    )
    notes = [t("preset_added", origin.locale, what="; ".join(applied.added))]
    return ask, notes if applied.added else []


def _style(
    bot: ImagineBot, settings: GuildSettings | None, name: str, *, nsfw: bool
) -> Style | None:
    """The style ``name`` (None for no style), checked for this channel: autocomplete only
    suggests, so the submitted name may be anything.

    Raises:
        InvalidRequest: a style this server does not offer here, with the ones it does.
    """
    if not name:
        return None
    allowed = settings.allowed_styles if settings else ()
    return bot.styles.choose(name, allowed, nsfw=nsfw)


async def submit(bot: ImagineBot, origin: Origin, ask: Ask) -> Job:
    """Check the guild's rules, translate, validate, store and queue a generation.

    Cheap checks come first (channel, floor and blocklist on the text as typed, queue limits),
    so a refused prompt never waits for or holds the translator; the translation is checked
    again afterwards. For interactions the caller must have deferred (or answer the rejection
    ephemerally) when translation may be slow.

    Raises:
        JobRejected: with a user-facing message; nothing was queued.
    """
    settings = await guild_rules(bot, origin, ask.kind)
    ask, preset_notes = await _with_presets(bot, origin, ask)
    negatives = [ask.negative_prompt] if ask.negative_prompt else []
    from_upload = ask.from_upload or ask.upload is not None
    # An uploaded picture never combines with adult content: the ordinary channel's rules apply
    # to it and to all that is made from it, even in an age-restricted channel or a DM.
    nsfw = origin.nsfw_channel and not from_upload
    _check_texts(origin, settings, [ask.prompt], negatives, nsfw=nsfw)
    per_user_limit = settings.per_user_limit if settings else None
    bot.jobs.check_capacity(ask.kind, origin.requester_id, per_user_limit, origin.locale)
    try:
        style = _style(bot, settings, ask.style, nsfw=nsfw)
    except InvalidRequest as exc:
        raise JobRejected(exc.user_message) from exc
    interpreted, notes = await _interpret(bot, ask, origin.locale)
    if interpreted and interpreted != ask.prompt:
        _check_texts(origin, settings, [ask.prompt, interpreted], negatives, nsfw=nsfw)
    model_prompt = interpreted or ask.prompt
    try:
        request = make_request(
            model_prompt,
            settings=bot.settings.engine,
            negative_prompt=ask.negative_prompt,
            seed=ask.seed,
            aspect_ratio=ask.aspect_ratio or "1:1",
            count=ask.count,
            strength=ask.strength if ask.strength is not None else VARY_STRONG,
            tile=ask.tile,
            style=style,
        )
    except InvalidRequest as exc:
        raise JobRejected(exc.user_message) from exc
    width, height = ask.size or (request.width, request.height)
    interaction = origin.interaction
    new = NewJob(
        kind=ask.kind,  # type: ignore[arg-type]
        requester_id=origin.requester_id,
        channel_id=origin.channel_id,
        guild_id=origin.guild_id,
        locale=origin.locale,
        prompt=ask.prompt,
        interpreted_prompt=interpreted if interpreted != ask.prompt else None,
        raw=ask.raw,
        negative_prompt=request.negative_prompt,
        seed=request.seed,
        width=width,
        height=height,
        steps=request.steps,
        guidance=request.guidance,
        count=request.count,
        strength=ask.strength,
        zoom=ask.zoom,
        parent_job_id=ask.parent_id,
        parent_index=ask.parent_index,
        interaction_id=interaction.id if interaction else None,
        application_id=interaction.application_id if interaction else None,
        interaction_token=interaction.token if interaction else None,
        reply_to_message_id=origin.reply_to.id if origin.reply_to else None,
        nsfw_channel=origin.nsfw_channel,
        requester_name=origin.requester_name,
        uploaded=ask.upload is not None,
        from_upload=from_upload,
        tile=request.tile,
        group_id=ask.group_id,
        style=request.style,
    )
    job = await bot.jobs.accept(new, per_user_limit=per_user_limit, source=ask.upload)
    bot.jobs.set_notes(job.id, [*preset_notes, *notes, *request.notes])
    return job


async def reject(interaction: discord.Interaction, message: str) -> None:
    """Tell the user why, ephemerally, whether or not the interaction was deferred."""
    message = render.escape_user_text(message)  # rejections may echo what the user typed
    if interaction.response.is_done():
        with contextlib.suppress(discord.HTTPException):
            await interaction.delete_original_response()
        await interaction.followup.send(message, ephemeral=True)
    else:
        await interaction.response.send_message(message, ephemeral=True)


async def start_from_interaction(
    bot: ImagineBot, interaction: discord.Interaction, ask: Ask
) -> None:
    """Accept a generation asked for by a slash command or button; ack within 3 s."""
    origin = origin_from_interaction(interaction)
    slow = ask.interpreted_prompt is None and not ask.raw and needs_translation(ask.prompt)
    if slow and not interaction.response.is_done():
        # Translation may take a moment on the CPU: acknowledge first, then decide.
        await interaction.response.defer(thinking=True)
    try:
        job = await submit(bot, origin, ask)
    except JobRejected as exc:
        await reject(interaction, exc.user_message)
        return
    if not interaction.response.is_done():
        await interaction.response.defer(thinking=True)
    message = await interaction.original_response()
    await bot.jobs.attach_status_message(job.id, message.id)


async def start_set_from_interaction(
    bot: ImagineBot, interaction: discord.Interaction, asks: list[Ask]
) -> None:
    """Accept the jobs of one command that made several prompts (permutations, --repeat).

    Each is its own job and result message (a follow-up each); together they take one of the
    user's queue places, the first job's. A job that cannot be queued after the first (the
    queue filled up) ends the set, with a word."""
    origin = origin_from_interaction(interaction)
    if not interaction.response.is_done():
        await interaction.response.defer(thinking=True)
    first: Job | None = None
    for number, ask in enumerate(asks, start=1):
        group = first.id if first is not None else None
        try:
            job = await submit(bot, origin, dataclasses.replace(ask, group_id=group))
        except JobRejected as exc:
            if first is None:
                await reject(interaction, exc.user_message)
            else:
                text = f"Prompt {number} of {len(asks)} was not queued: {exc.user_message}"
                await interaction.followup.send(render.escape_user_text(text), ephemeral=True)
            return
        first = first or job
        # The first follow-up takes the place of the deferred "thinking" response (Discord's
        # rule), so every job, the first too, gets its message as a follow-up.
        text = f"⏳ Queued (prompt {number} of {len(asks)})."
        message = await interaction.followup.send(text, wait=True)
        await bot.jobs.attach_status_message(job.id, message.id)


async def start_from_reply(
    bot: ImagineBot, message: discord.Message, ask: Ask, hint: str | None
) -> None:
    origin = origin_from_message(message)
    try:
        job = await submit(bot, origin, ask)
    except JobRejected as exc:
        await message.reply(render.escape_user_text(exc.user_message), mention_author=False)
        return
    text = "⏳ Queued." + (f"\n-# {hint}" if hint else "")
    status = await message.reply(text, mention_author=False)
    await bot.jobs.attach_status_message(job.id, status.id)


def base_size(job: Job) -> tuple[int, int]:
    """The size ``job``'s pictures were generated at (an upscale's is a fraction of its own):
    what a variation, zoom or re-roll made from them is made at."""
    if job.kind == "upscale":
        return job.width // UPSCALE_FACTOR, job.height // UPSCALE_FACTOR
    return job.width, job.height


def ask_from_job(job: Job, **changes: object) -> Ask:
    """The same generation as ``job`` (same prompt, translation, size, settings), new seeds.

    A job made from a picture (a variation, upscale or zoom) stays one unless ``changes`` give
    another kind: re-rolling it runs the same tool on the same picture with new seeds.
    """
    kind = changes.get("kind", job.kind if job.derived else "reroll")
    again = job.derived and kind == job.kind
    ask = Ask(
        prompt=job.prompt,
        negative_prompt=job.negative_prompt,
        seed=secrets.randbelow(SEED_LIMIT),
        raw=job.raw,
        kind=str(kind),
        parent_id=job.parent_job_id if again else job.id,
        parent_index=job.parent_index if again else None,
        count=job.count if again or job.kind not in ("single", "upscale") else None,
        interpreted_prompt=job.interpreted_prompt or (job.prompt if job.raw else None),
        size=(job.width, job.height) if again else base_size(job),
        strength=job.strength if again else None,
        zoom=job.zoom if again else None,
        from_upload=job.from_upload and again,
        # A seamless texture's re-rolls and variations tile too; an upscale or a zoom of one
        # is a picture, not a tile (its blended tiles or new border would not wrap).
        tile=job.tile and kind not in ("upscale", "zoom"),
        style=job.style,
    )
    return dataclasses.replace(ask, **changes)  # type: ignore[arg-type]


async def ask_again(bot: ImagineBot, job: Job, **changes: object) -> Ask:
    """``ask_from_job`` for a re-roll or reply, which also reuses an image prompt's picture
    (same picture, size and strength), so ``--seed`` makes the same pixels again.

    Raises:
        JobRejected: the picture is no longer stored.
    """
    ask = ask_from_job(job, **changes)
    if not job.uploaded:
        return ask
    try:
        upload = await bot.jobs.load_source(job)
    except FileNotFoundError:
        raise JobRejected(t("images_purged", job.locale)) from None
    return dataclasses.replace(
        ask,
        upload=upload,
        from_upload=True,
        size=(job.width, job.height),
        strength=changes.get("strength", job.strength),  # type: ignore[arg-type]
    )


def ask_to_derive(job: Job, index: int, kind: str, **changes: object) -> Ask:
    """A new job made from ``job``'s picture ``index`` (a variation, upscale or zoom)."""
    ask = dataclasses.replace(
        ask_from_job(job),
        kind=kind,
        parent_id=job.id,
        parent_index=index,
        count=None,
        size=base_size(job),
        strength=None,
        zoom=None,
        from_upload=job.from_upload,
    )
    return dataclasses.replace(ask, **changes)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------- buttons
async def handle_button(
    bot: ImagineBot, interaction: discord.Interaction, action: str, job_id: int, index: int | None
) -> None:
    """Answer a click on one of a job's buttons (``imagine:<action>:<job>[:<index>]``)."""
    job = await bot.storage.get_job(job_id)
    if job is None or not await _button_belongs_to(bot, job, interaction):
        # A custom_id is only a claim: a button crafted onto another message (or a job id
        # guessed from elsewhere) is answered as if the job did not exist.
        await interaction.response.send_message(
            t("job_not_found", interaction.locale), ephemeral=True
        )
        return
    try:
        await _dispatch(bot, interaction, action, job, index)
    except Exception as exc:
        # Buttons bypass the command tree's error handler: answer here so no click hangs.
        message = explain(exc, interaction.locale, context=f"button {action} on job {job_id}")
        with contextlib.suppress(discord.HTTPException):
            await reject(interaction, message)


async def _button_belongs_to(bot: ImagineBot, job: Job, interaction: discord.Interaction) -> bool:
    """Whether the clicked message is the job's own (status or result) or its showcase post."""
    message = interaction.message
    if message is None:
        return False
    if message.id in (job.result_message_id, job.status_message_id):
        return True
    share = await bot.storage.share_by_message(message.id)
    return share is not None and share.job_id == job.id


async def _dispatch(
    bot: ImagineBot, interaction: discord.Interaction, action: str, job: Job, index: int | None
) -> None:
    if action == "reroll":
        try:
            ask = await ask_again(bot, job)
        except JobRejected as exc:
            await reject(interaction, exc.user_message)
            return
        await start_from_interaction(bot, interaction, ask)
    elif action in ("vary", "subtle"):
        strength = VARY_STRONG if action == "vary" else VARY_SUBTLE
        await _derive(bot, interaction, job, index or 1, "variation", strength=strength)
    elif action == "upscale":
        index = index or 1
        await _derive(
            bot,
            interaction,
            job,
            index,
            "upscale",
            count=1,
            seed=job.seeds[index - 1] if 0 < index <= len(job.seeds) else None,
            size=(job.width * UPSCALE_FACTOR, job.height * UPSCALE_FACTOR),
            strength=UPSCALE_STRENGTH,
        )
    elif action in ZOOMS:
        await _derive(bot, interaction, job, index or 1, "zoom", zoom=ZOOMS[action])
    elif action == "delete":
        await _delete(bot, interaction, job)
    elif action == "share":
        await _share(bot, interaction, job, index)
    elif action == "cancel":
        await _cancel(bot, interaction, job)
    elif action == "remix":
        await _open_remix(bot, interaction, job)
    elif action in ("prompt", "promptpic"):
        await _from_suggestion(bot, interaction, job, index or 1, picture=action == "promptpic")


async def _from_suggestion(
    bot: ImagineBot, interaction: discord.Interaction, job: Job, index: int, *, picture: bool
) -> None:
    """/imagine prompt ``index`` of a 'describe' job: the clicker's own job, as if they had
    typed it (their presets, queue turn, the blocklist); ``picture``: with the described
    picture as its image prompt. Both trace back to an upload, so the ordinary channel's rules
    apply to them even in an age-restricted channel, as to any image prompt.
    """
    locale = interaction.locale
    if job.kind != "describe" or not 1 <= index <= len(job.captions):
        await interaction.response.send_message(t("suggestion_gone", locale), ephemeral=True)
        return
    # From an upload: the ordinary channel's rules apply to it and to all made from it.
    ask = Ask(
        prompt=job.captions[index - 1],
        parent_id=job.id,
        typed=True,
        kind="imagine",
        from_upload=True,
    )
    if picture:
        try:
            upload = await bot.jobs.load_source(job)
        except FileNotFoundError:
            await interaction.response.send_message(t("picture_purged", locale), ephemeral=True)
            return
        ask = dataclasses.replace(
            ask, upload=upload, size=(job.width, job.height), strength=IMAGE_PROMPT_STRENGTH
        )
    await start_from_interaction(bot, interaction, ask)


def _image_available(job: Job, index: int) -> bool:
    """A finished job's image ``index`` exists and was not withheld by the safety filter."""
    return job.status == "done" and 1 <= index <= len(job.seeds) and index not in job.withheld


async def _derive(
    bot: ImagineBot,
    interaction: discord.Interaction,
    job: Job,
    index: int,
    kind: str,
    **changes: object,
) -> None:
    """Start a job of ``kind`` from ``job``'s picture ``index`` (V, S, U, Zoom Out).

    It goes through ``submit`` like /imagine: the clicker's queue turn and limits, and the
    rules of the channel; its picture is read from the stored files when it is released.
    """
    if not _image_available(job, index):
        await interaction.response.send_message(
            t("image_not_available", interaction.locale), ephemeral=True
        )
        return
    if not await bot.jobs.has_image(job, index):
        await interaction.response.send_message(
            t("images_purged", interaction.locale), ephemeral=True
        )
        return
    await start_from_interaction(bot, interaction, ask_to_derive(job, index, kind, **changes))


async def _delete(bot: ImagineBot, interaction: discord.Interaction, job: Job) -> None:
    perms = interaction.permissions
    if interaction.user.id != job.requester_id and not perms.manage_messages:
        await interaction.response.send_message(t("not_yours", interaction.locale), ephemeral=True)
        return
    await interaction.response.defer()
    if interaction.message is not None:
        await interaction.message.delete()
    if interaction.message is None or interaction.message.id == job.result_message_id:
        await bot.storage.set_result_message(job.id, None)
        # Deleted means gone: its stored files too (shared or not), so off the gallery.
        await bot.jobs.purge_images(job)
        await bot.gallery.images_purged([job.id])
    else:
        # A showcase post taken down (its MESSAGE_DELETE says the same; either is enough).
        await bot.gallery.post_deleted(interaction.message.id)


async def _cancel(bot: ImagineBot, interaction: discord.Interaction, job: Job) -> None:
    if interaction.user.id != job.requester_id:
        await interaction.response.send_message(t("not_yours", interaction.locale), ephemeral=True)
        return
    if await bot.jobs.cancel(job):
        await interaction.response.edit_message(
            content=f"✖️ {t('cancelled', interaction.locale)} "
            f"{render.escape_user_text(render.shorten(job.prompt, 200))}",
            view=None,
        )
    else:
        await interaction.response.send_message(
            "Too late to cancel: this job already started or finished.", ephemeral=True
        )


async def _share(
    bot: ImagineBot, interaction: discord.Interaction, job: Job, index: int | None
) -> None:
    locale = interaction.locale
    if interaction.guild_id is None or job.guild_id != interaction.guild_id:
        await interaction.response.send_message(t("share_in_servers", locale), ephemeral=True)
        return
    if interaction.user.id != job.requester_id and not interaction.permissions.manage_messages:
        await interaction.response.send_message(t("share_not_allowed", locale), ephemeral=True)
        return
    settings = await bot.storage.guild_settings(interaction.guild_id)
    if settings.showcase_channel_id is None:
        await interaction.response.send_message(t("showcase_not_set", locale), ephemeral=True)
        return
    showcase_channel = bot.get_channel(settings.showcase_channel_id)
    if job.nsfw_channel and not is_age_restricted(showcase_channel):
        await interaction.response.send_message(t("share_nsfw", locale), ephemeral=True)
        return
    image_index = index or 0
    indexes = (
        [image_index]
        if image_index
        else [i for i in range(1, len(job.seeds) + 1) if i not in job.withheld]
    )
    if not indexes or not all(_image_available(job, i) for i in indexes):
        await interaction.response.send_message(t("image_not_available", locale), ephemeral=True)
        return
    share = await bot.storage.add_share(
        job.id,
        image_index,
        guild_id=interaction.guild_id,
        showcase_channel_id=settings.showcase_channel_id,
        shared_by=interaction.user.id,
        shared_by_name=interaction.user.display_name,
        showcase_nsfw=is_age_restricted(showcase_channel),
    )
    if share is None:
        existing = await bot.storage.get_share(job.id, image_index)
        where = (
            render.message_link(
                interaction.guild_id, existing.showcase_channel_id, existing.showcase_message_id
            )
            if existing and existing.showcase_message_id
            else f"<#{settings.showcase_channel_id}>"
        )
        await interaction.response.send_message(
            t("already_shared", locale, link=where), ephemeral=True
        )
        return
    await interaction.response.defer(ephemeral=True, thinking=True)
    try:
        blobs = await bot.jobs.load_images(job, indexes)
    except FileNotFoundError:
        await bot.storage.remove_share(job.id, image_index)
        await interaction.followup.send(t("images_purged", locale), ephemeral=True)
        return
    try:
        channel = bot.get_partial_messageable(
            settings.showcase_channel_id, guild_id=interaction.guild_id
        )
        text = "⭐ " + render.result_text(job) + f"\nShared by <@{interaction.user.id}>"
        posted = await channel.send(
            content=text[: render.MESSAGE_LIMIT],
            # A flagged image stays a spoiler wherever it goes.
            files=render.image_files(blobs, [i in job.flagged for i in indexes]),
            view=render.showcase_view(job.id),
            allowed_mentions=discord.AllowedMentions.none(),
        )
    except discord.HTTPException as exc:
        await bot.storage.remove_share(job.id, image_index)
        log.warning("job %s: share failed: %s", job.id, exc)
        await interaction.followup.send("Could not post to the showcase channel.", ephemeral=True)
        return
    await bot.storage.set_share_message(job.id, image_index, posted.id)
    link = render.message_link(interaction.guild_id, settings.showcase_channel_id, posted.id)
    await interaction.followup.send(t("shared", locale, link=link), ephemeral=True)
    if settings.gallery_enabled and bot.gallery_server is not None:
        shown = [
            (i, data)
            for i, (_, data) in zip(indexes, blobs, strict=True)
            if i not in job.flagged  # never on the web: no thumbnail needed
        ]
        await bot.gallery.prepare(job.id, shown)


# --------------------------------------------------------------------------------- remix
async def _open_remix(bot: ImagineBot, interaction: discord.Interaction, job: Job) -> None:
    """Open the Remix form for a showcase post (or say where it can run instead)."""
    problem = await _remix_problem(bot, interaction, job)
    if problem is not None:
        await interaction.response.send_message(problem, ephemeral=True)
        return
    await interaction.response.send_modal(RemixModal(job, interaction.locale))


async def remix_submitted(
    bot: ImagineBot, interaction: discord.Interaction, job_id: int, form: RemixForm
) -> None:
    """Start the clicker's own job from a submitted Remix form.

    Their job, queue turn and limits, and the rules of the channel it runs in. "Same seed"
    with the prompt unchanged reproduces the original set (same prompt, translation, size).
    """
    locale = interaction.locale
    job = await bot.storage.get_job(job_id)
    if job is None:
        await interaction.response.send_message(t("job_not_found", locale), ephemeral=True)
        return
    problem = await _remix_problem(bot, interaction, job)
    if problem is not None:
        await interaction.response.send_message(problem, ephemeral=True)
        return
    if is_blank(form.prompt):
        await interaction.response.send_message(t("empty_prompt", locale), ephemeral=True)
        return
    prompt = form.prompt.strip()
    unchanged = prompt == job.prompt.strip()
    changes: dict[str, object] = {
        "kind": "remix",
        "prompt": prompt,
        "negative_prompt": form.negative_prompt.strip(),
    }
    if form.same_seed:
        changes["seed"] = job.seed
    if not unchanged:
        changes["interpreted_prompt"] = prompt if job.raw else None
    await start_from_interaction(bot, interaction, ask_from_job(job, **changes))


async def _remix_problem(bot: ImagineBot, interaction: discord.Interaction, job: Job) -> str | None:
    """Why a Remix cannot run where it was clicked (None: it can).

    It runs in that channel when /imagine may be used there or it is the showcase channel, and
    the bot may post images there; otherwise the answer says where to run it, with the
    ``/imagine`` line that makes the set.
    """
    if interaction.guild_id is None or job.guild_id != interaction.guild_id:
        return t("job_not_found", interaction.locale)
    settings = await bot.storage.guild_settings(interaction.guild_id)
    perms = interaction.app_permissions
    may_post = perms.send_messages and perms.attach_files
    if may_post and _may_run_in(settings, interaction.channel_id or 0, "remix"):
        return None
    locale = interaction.locale
    where = (
        ", ".join(f"<#{c}>" for c in settings.allowed_channel_ids)
        if settings.allowed_channel_ids
        else t("remix_anywhere", locale)
    )
    return t("remix_elsewhere", locale, where=where, command=render.imagine_line(job, job.seed))[
        : render.MESSAGE_LIMIT
    ]


# --------------------------------------------------------------------------------- replies
async def handle_reply(bot: ImagineBot, message: discord.Message) -> bool:
    """Regenerate when a user replies to one of the bot's results. True when handled."""
    ref = message.reference
    if ref is None or ref.message_id is None or message.author.bot:
        return False
    job = await bot.storage.job_by_message(ref.message_id)
    if job is None:
        return False
    if job.kind == "describe":  # it has prompts, not a prompt: its buttons pick one
        locale = str(message.guild.preferred_locale) if message.guild else None
        await message.reply(t("describe_reply", locale), mention_author=False)
        return True
    assert bot.user is not None
    mentioned = bot.user in message.mentions
    content = strip_bot_mention(message.content or "", bot.user.id)
    hint = None
    content_hidden = not bot.intents.message_content and not mentioned
    if not content.strip() and content_hidden and message.guild is not None:
        # Without the message-content intent Discord sends replies without their text unless
        # they ping the bot: all we know is "a reply". Re-roll and say how to change the prompt.
        hint = (
            "To give a new prompt, reply with the ping on (@mention) so the bot can read your text."
        )
    command = parse_reply(content)
    if command.bad_seed is not None:
        await message.reply(
            "`--seed` needs a whole number from 0 to 4294967295.", mention_author=False
        )
        return True
    if command.bad_strength is not None:
        await message.reply("`--strength` needs a number from 0.1 to 1.0.", mention_author=False)
        return True
    picture = first_picture(message)
    # A reply to a picture made from another picture (V, S, U, Zoom Out) runs the same tool on
    # the same picture again: with --seed it makes the very same pixels. A reply that brings a
    # picture of its own is an image prompt.
    changes: dict[str, object] = {} if job.derived and picture is None else {"kind": "reply"}
    if command.prompt is not None:
        changes.update(prompt=command.prompt, interpreted_prompt=None, raw=command.raw, typed=True)
    if command.seed is not None:
        changes["seed"] = command.seed
    if command.negative_prompt is not None:
        changes["negative_prompt"] = command.negative_prompt
    if command.aspect_ratio is not None and not job.derived and picture is None:
        changes.update(aspect_ratio=command.aspect_ratio, size=None)
    if command.strength is not None and (job.uploaded or picture is not None):
        changes["strength"] = command.strength
    if command.tile and job.kind not in ("upscale", "zoom"):
        changes["tile"] = True
    if command.style is not None:
        changes["style"] = command.style
    locale = str(message.guild.preferred_locale) if message.guild else None
    try:
        if picture is not None:
            fitted = await read_upload(
                picture, bot.settings.engine.resolution, command.aspect_ratio, locale
            )
            changes.update(
                upload=fitted.png,
                from_upload=True,
                size=(fitted.width, fitted.height),
                strength=changes.get("strength", IMAGE_PROMPT_STRENGTH),
                count=None,
            )
            ask = ask_from_job(job, **changes)
        else:
            ask = await ask_again(bot, job, **changes)
    except JobRejected as exc:
        await message.reply(render.escape_user_text(exc.user_message), mention_author=False)
        return True
    await start_from_reply(bot, message, ask, hint)
    return True
